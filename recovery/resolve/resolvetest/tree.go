// Package resolvetest builds root filesystem trees for the tests of path
// resolution (recovery/resolve, oci).
package resolvetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FakeELF is enough of an ELF file for checks that read the magic.
var FakeELF = "\x7fELF\x02\x01\x01\x00" + strings.Repeat("\x00", 56)

// WriteFile writes a file at rel under root, making its directories.
func WriteFile(t *testing.T, root, rel, content string) string {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Mkdir makes the directory rel under root.
func Mkdir(t *testing.T, root, rel string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		t.Fatal(err)
	}
}

// Symlink makes rel under root a symlink to target.
func Symlink(t *testing.T, root, rel, target string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// Mkfifo makes rel under root a named pipe.
func Mkfifo(t *testing.T, root, rel string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Mkdev makes a character device like /dev/null, or skips the test when
// that is not allowed here.
func Mkdev(t *testing.T, root, rel string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node here: %v", err)
	}
}

// Inode returns the device and inode of p.
func Inode(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

// Outside makes a directory next to (not under) a root filesystem, with a
// file the image must never reach, and returns the file's host path.
func Outside(t *testing.T, content string) string {
	t.Helper()
	return WriteFile(t, t.TempDir(), "secret/Outside.json", content)
}

// Climb returns a relative Symlink target that, resolved naively on the
// host from dir, leads to the host path target.
func Climb(dir, target string) string {
	return strings.Repeat("../", strings.Count(dir, "/")+4) + strings.TrimPrefix(target, "/")
}
