package oci

import (
	rt "github.com/assure-rt/assure/recovery/resolve/resolvetest"

	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func testSpec(t *testing.T) *specs.Spec {
	s := spec(t, dockerLikeProfile)
	s.Process = &specs.Process{Args: []string{"/usr/bin/redis-server", "--port", "6379"}, Cwd: "/"}
	s.Root = &specs.Root{Path: "rootfs"}
	s.Annotations = map[string]string{LabelManifestFile: "/etc/assure.json"}
	return s
}

func TestWriteSpecRoundTrip(t *testing.T) {
	bundle := t.TempDir()
	// Whatever the umask, the file is 0644.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	// An existing config.json with another mode is replaced.
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion": "0.0.1"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	s := testSpec(t)
	if err := WriteSpec(bundle, s); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o644 {
		t.Errorf("mode = %v, want -rw-r--r--", st.Mode())
	}
	got, err := SpecFromBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("read back:\n%s\nwant:\n%s", marshal(t, got), marshal(t, s))
	}

	// The change AllowInjectedSyscalls makes survives the trip.
	AllowInjectedSyscalls(got)
	if err := WriteSpec(bundle, got); err != nil {
		t.Fatal(err)
	}
	again, err := SpecFromBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if added := AllowInjectedSyscalls(again); added != nil {
		t.Errorf("the spec written does not allow %q", added)
	}

	// No temporary file is left behind.
	entries, err := os.ReadDir(bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "config.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("bundle holds %q, want only config.json", names)
	}
}

func TestWriteSpecErrors(t *testing.T) {
	if err := WriteSpec(t.TempDir(), nil); err == nil {
		t.Error("no error for a nil spec")
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if err := WriteSpec(missing, testSpec(t)); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing bundle: %v", err)
	}

	// A failed rename (config.json is a non-empty directory) leaves the
	// bundle as it was, with no temporary file.
	bundle := t.TempDir()
	rt.WriteFile(t, bundle, "config.json/x", "")
	if err := WriteSpec(bundle, testSpec(t)); err == nil {
		t.Error("no error when config.json cannot be replaced")
	}
	entries, _ := os.ReadDir(bundle)
	if len(entries) != 1 {
		t.Errorf("bundle holds %d entries after a failed write", len(entries))
	}
}

func TestSpecFromBundleErrors(t *testing.T) {
	_, err := SpecFromBundle(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("missing bundle: %v", err)
	}
	bundle := t.TempDir()
	rt.WriteFile(t, bundle, "config.json", `{"ociVersion": "1.1.0", "process": [`)
	_, err = SpecFromBundle(bundle)
	if err == nil || !strings.Contains(err.Error(), "parse runtime spec "+filepath.Join(bundle, "config.json")) {
		t.Errorf("bad JSON: %v", err)
	}
}
