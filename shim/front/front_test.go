package front

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestStartFlags(t *testing.T) {
	cmd := func(flags ...string) []string {
		return append(append([]string{"containerd-shim-assure-v1"}, flags...), "start")
	}
	c, err := parseCommand(cmd("-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
		"-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug"))
	if err != nil || c.ns != "k8s.io" || c.address != "/run/containerd/containerd.sock" || c.id != "abc" || !c.debug {
		t.Fatalf("parseCommand: %+v %v", c, err)
	}
	for _, args := range [][]string{
		{"-namespace", "n", "-address", "/a"},                    // no id
		{"-namespace", "n", "-address", "rel.sock", "-id", "x"},  // not a path
		{"-namespace", "n", "-address", "/a", "-id", "x", "-zz"}, // unknown flag
	} {
		if _, err := parseCommand(cmd(args...)); err == nil {
			t.Errorf("parseCommand(%q): no error", args)
		}
	}
}

// TestDelegateKeeps: what the bundle alone shows keeps the container in
// assure's daemon, before containerd is asked anything (the address is bogus:
// asking would fail the other way).
func TestDelegateKeeps(t *testing.T) {
	for _, tc := range []struct{ name, spec, reason string }{
		{"cri", `{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.container-type":"container"}}`, "CRI"},
		{"annotation", `{"ociVersion":"1.0.2","annotations":{"dev.assure.manifest":"{}"}}`, "annotations declare"},
		{"no spec", "", "runtime spec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.spec != "" {
				if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.spec), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			path, reason, _ := startTarget(dir, command{ns: "default", address: "/nonexistent/containerd.sock", id: "c1"})
			if path != "" || !strings.Contains(reason, tc.reason) {
				t.Errorf("startTarget = %q, %q; want kept, reason with %q", path, reason, tc.reason)
			}
		})
	}
}

// TestInfo: -info answers containerd 2.x with a RuntimeInfo naming the
// runtime, decoded here with containerd's own generated type.
func TestInfo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "shim")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/assure-rt/assure/cmd/containerd-shim-assure-v1").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-info").Output()
	if err != nil {
		t.Fatalf("-info: %v", err)
	}
	var info apitypes.RuntimeInfo
	if err := proto.Unmarshal(out, &info); err != nil {
		t.Fatalf("-info answer: %v", err)
	}
	if info.Name != RuntimeName || info.Version.GetVersion() != Version {
		t.Errorf("-info = %v", &info)
	}
}

// TestNoDaemon: without assure-shim next to the binary or on PATH, a
// command for the daemon fails naming what is missing (and runs nothing).
func TestNoDaemon(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := daemonBinary(); err == nil || !strings.Contains(err.Error(), Daemon) {
		t.Fatalf("daemonBinary = %v, want an error naming %s", err, Daemon)
	}
	if path, reason := runcShim(); path != "" || !strings.Contains(reason, RuncShim) {
		t.Errorf("runcShim = %q, %q: want none, naming %s", path, reason, RuncShim)
	}
	if rc := Main([]string{"containerd-shim-assure-v1", "-namespace", "n", "-id", "x", "bogus"}); rc != 1 {
		t.Errorf("Main = %d, want 1", rc)
	}
}

// TestSocketAddress: the daemon's socket is where containerd's shim
// library, which assure-shim serves it with, puts it.
func TestSocketAddress(t *testing.T) {
	for _, tc := range [][3]string{
		{"/run/containerd/containerd.sock", "default", "c1"},
		{"/tmp/x/containerd.sock", "k8s.io", strings.Repeat("a", 64)},
	} {
		ctx := namespaces.WithNamespace(context.Background(), tc[1])
		want, err := shim.SocketAddress(ctx, tc[0], tc[2])
		if err != nil {
			t.Fatal(err)
		}
		if got := socketAddress(tc[0], tc[1], tc[2]); got != want {
			t.Errorf("socketAddress(%q) = %s, the library says %s", tc, got, want)
		}
	}
}

// TestShimCgroup: the one runtime option the front leaves to the
// library's start is found in the Any containerd sends.
func TestShimCgroup(t *testing.T) {
	msg := func(o *options.Options) []byte {
		v, err := proto.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(&anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: v})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := shimCgroup(msg(&options.Options{ShimCgroup: "/shim", BinaryName: "runc"})); got != "/shim" {
		t.Errorf("shimCgroup = %q, want /shim", got)
	}
	for _, b := range [][]byte{nil, msg(&options.Options{BinaryName: "runc"}), []byte{0xff}} {
		if got := shimCgroup(b); got != "" {
			t.Errorf("shimCgroup(%x) = %q, want none", b, got)
		}
	}
}

// TestRestoreStdin: the runtime options read before falling back to the
// library's start are its stdin again.
func TestRestoreStdin(t *testing.T) {
	saved, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { unix.Dup3(saved, 0, 0); unix.Close(saved) }()
	if err := restoreStdin([]byte("options")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := unix.Read(0, buf)
	if err != nil || string(buf[:n]) != "options" {
		t.Fatalf("stdin reads %q, %v", buf[:n], err)
	}
}

// TestDeleteResponse: what the front's deletion prints is containerd's
// DeleteResponse.
func TestDeleteResponse(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	var resp taskAPI.DeleteResponse
	if err := proto.Unmarshal(deleteResponse(4242, 137, at), &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Pid != 4242 || resp.ExitStatus != 137 || !resp.ExitedAt.AsTime().Equal(at) {
		t.Errorf("DeleteResponse = %v", &resp)
	}
}

func TestOptionsRoot(t *testing.T) {
	dir := t.TempDir()
	if root, err := optionsRoot(dir); err != nil || root != runcRoot {
		t.Errorf("no options.json: %q, %v", root, err)
	}
	os.WriteFile(filepath.Join(dir, "options.json"), []byte(`{"binary_name":"runc","root":"/run/x"}`), 0o600)
	if root, err := optionsRoot(dir); err != nil || root != "/run/x" {
		t.Errorf("options.json with a root: %q, %v", root, err)
	}
	os.WriteFile(filepath.Join(dir, "options.json"), []byte(`{`), 0o600)
	if _, err := optionsRoot(dir); err == nil {
		t.Error("a malformed options.json: no error")
	}
}

// TestSettled: a task with runc state, an exit record or a runc root
// that cannot be read is left to runc's shim.
func TestSettled(t *testing.T) {
	root := t.TempDir()
	bundle := filepath.Join(t.TempDir(), "c1")
	os.Mkdir(bundle, 0o700)
	os.WriteFile(filepath.Join(bundle, "options.json"), []byte(`{"root":"`+root+`"}`), 0o600)
	if !settled(bundle, "ns", "c1") {
		t.Fatal("a task with nothing left is not settled")
	}
	os.MkdirAll(filepath.Join(root, "ns", "c1"), 0o700)
	if settled(bundle, "ns", "c1") {
		t.Error("a task runc keeps state for is settled")
	}
	os.RemoveAll(filepath.Join(root, "ns"))
	os.WriteFile(filepath.Join(bundle, "exit.json"), []byte(`{}`), 0o600)
	if settled(bundle, "ns", "c1") {
		t.Error("a task with an exit record is settled")
	}
	os.Remove(filepath.Join(bundle, "exit.json"))
	os.WriteFile(filepath.Join(bundle, "options.json"), []byte(`{`), 0o600)
	if settled(bundle, "ns", "c1") {
		t.Error("a task whose options do not read is settled")
	}
}
