package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
// this shim, before containerd is asked anything (the address is bogus:
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

func TestHandoffRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, ok := readHandoff(dir); ok || hasHandoff(dir) {
		t.Fatal("a hand-over in an empty bundle")
	}
	want := &containerInfo{Labels: map[string]string{"dev.assure.manifest": `{"version":1}`, "a": "b"},
		Image: "x:1", Digest: "sha256:1", Learned: map[string]string{"dev.assure.learned.1": "{}"}}
	writeHandoff(dir, want)
	got, ok := readHandoff(dir)
	if !ok || len(got.Labels) != 2 || got.Labels["a"] != "b" || got.Labels["dev.assure.manifest"] != want.Labels["dev.assure.manifest"] ||
		got.Image != "x:1" || got.Digest != "sha256:1" || got.Learned["dev.assure.learned.1"] != "{}" {
		t.Fatalf("readHandoff = %+v, %v", got, ok)
	}
	os.WriteFile(filepath.Join(dir, handoffFile), []byte("not json"), 0o600)
	if _, ok := readHandoff(dir); ok {
		t.Error("a malformed hand-over was read")
	}
}
