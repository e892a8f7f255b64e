package oci

import (
	rt "github.com/assure-rt/assure/recovery/resolve/resolvetest"

	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/assure-rt/assure/recovery/manifest"
)

func TestCheckBinaries(t *testing.T) {
	root := t.TempDir()
	rt.WriteFile(t, root, "usr/bin/ok", rt.FakeELF)
	rt.Symlink(t, root, "usr/bin/via-link", "ok")
	rt.WriteFile(t, root, "usr/bin/script", "#!/bin/sh\nexec /usr/bin/ok\n")
	rt.WriteFile(t, root, "usr/bin/text", "hello world\n")
	rt.WriteFile(t, root, "usr/bin/short", "\x7fE")
	rt.WriteFile(t, root, "usr/bin/empty", "")
	rt.Mkdir(t, root, "usr/bin/dir")
	rt.Mkfifo(t, root, "usr/bin/fifo")
	rt.Symlink(t, root, "usr/bin/escape", "../../../../../usr/bin/ok")

	entry := func(binary string) string {
		return fmt.Sprintf(`{"binary": %q, "function": "handle"}`, binary)
	}
	parse := func(entries ...string) *manifest.Manifest {
		t.Helper()
		m, err := manifest.Parse([]byte(`{"version": 1, "rescuePoints": [` + strings.Join(entries, ",") + `]}`))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	good := parse(
		`{"binary": "libc.so.6", "function": "f"}`, // bare names are not checked
		entry("/usr/bin/ok"),
		`{"binary": "/usr/bin/ok", "address": "0x1000"}`,
		entry("/usr/bin/via-link"),
	)
	if err := CheckBinaries(good, root); err != nil {
		t.Fatalf("CheckBinaries: %v", err)
	}

	missing := parse(
		`{"binary": "libc.so.6", "function": "f"}`,
		`{"binary": "/usr/bin/ok", "function": "g"}`,
		entry("/usr/bin/server"),
		`{"binary": "/usr/bin/server", "function": "other"}`,
	)
	err := CheckBinaries(missing, root)
	want := `manifest: rescuePoints[2] (handle in /usr/bin/server): field "binary": /usr/bin/server does not exist in the image`
	if err == nil || err.Error() != want {
		t.Fatalf("err:\n got %v\nwant %s", err, want)
	}
	var me *manifest.Error
	if !errors.As(err, &me) || me.Index != 2 || len(me.Fields) != 1 || me.Fields[0] != "binary" {
		t.Errorf("err is %#v, want a *manifest.Error about rescuePoints[2].binary", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err %v is not fs.ErrNotExist", err)
	}

	for bin, msg := range map[string]string{
		"/usr/bin/script": "/usr/bin/script: is a script, not an ELF file: name the binary that runs the function",
		"/usr/bin/text":   `/usr/bin/text: not an ELF file (starts with "hell")`,
		"/usr/bin/short":  "/usr/bin/short: not an ELF file (2 bytes long)",
		"/usr/bin/empty":  "/usr/bin/empty: not an ELF file (0 bytes long)",
		"/usr/bin/dir":    "/usr/bin/dir: not a regular file (directory)",
		"/usr/bin/fifo":   "/usr/bin/fifo: not a regular file (named pipe)",
		"/usr/bin/escape": "/usr/bin/escape: escapes the container root filesystem (symlink /usr/bin/escape -> ../../../../../usr/bin/ok goes above /)",
	} {
		err := CheckBinaries(parse(entry("/usr/bin/ok"), entry(bin)), root)
		want := `manifest: rescuePoints[1] (handle in ` + bin + `): field "binary": ` + msg
		if err == nil || err.Error() != want {
			t.Errorf("%s:\n got %v\nwant %s", bin, err, want)
		}
	}

	err = CheckBinaries(good, filepath.Join(root, "nope"))
	if err == nil || !strings.Contains(err.Error(), `rescuePoints[1] (handle in /usr/bin/ok): field "binary": /usr/bin/ok: open root filesystem`) {
		t.Errorf("missing rootfs: %v", err)
	}
	// Only bare names: the root filesystem is not even opened.
	if err := CheckBinaries(parse(`{"binary": "libc.so.6", "function": "f"}`), filepath.Join(root, "nope")); err != nil {
		t.Errorf("bare names only: %v", err)
	}
}
