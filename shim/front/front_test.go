package front

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apitypes "github.com/containerd/containerd/api/types"
	"google.golang.org/protobuf/proto"
)

func TestStartFlags(t *testing.T) {
	ns, addr, id, err := startFlags([]string{"-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
		"-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug"})
	if err != nil || ns != "k8s.io" || addr != "/run/containerd/containerd.sock" || id != "abc" {
		t.Fatalf("startFlags: %q %q %q %v", ns, addr, id, err)
	}
	for _, args := range [][]string{
		{"-namespace", "n", "-address", "/a"},                    // no id
		{"-namespace", "n", "-address", "rel.sock", "-id", "x"},  // not a path
		{"-namespace", "n", "-address", "/a", "-id", "x", "-zz"}, // unknown flag
	} {
		if _, _, _, err := startFlags(args); err == nil {
			t.Errorf("startFlags(%q): no error", args)
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
			path, reason := delegateTarget(dir, "default", "/nonexistent/containerd.sock", "c1")
			if path != "" || !strings.Contains(reason, tc.reason) {
				t.Errorf("delegateTarget = %q, %q; want kept, reason with %q", path, reason, tc.reason)
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
