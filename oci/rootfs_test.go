package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/manifest"
)

// fakeELF is enough of an ELF file for CheckBinaries, which reads the magic.
var fakeELF = "\x7fELF\x02\x01\x01\x00" + strings.Repeat("\x00", 56)

func writeFile(t *testing.T, root, rel, content string) string {
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

func mkdir(t *testing.T, root, rel string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, rel), 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, root, rel, target string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func mkfifo(t *testing.T, root, rel string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mkdev makes a character device like /dev/null, or skips the test when
// that is not allowed here.
func mkdev(t *testing.T, root, rel string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Skipf("cannot make a device node here: %v", err)
	}
}

func inode(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev, st.Ino
}

// outside makes a directory next to (not under) a root filesystem, with a
// file the image must never reach, and returns the file's host path.
func outside(t *testing.T, content string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "secret/outside.json", content)
}

// climb returns a relative symlink target that, resolved naively on the
// host from dir, leads to the host path target.
func climb(dir, target string) string {
	return strings.Repeat("../", strings.Count(dir, "/")+4) + strings.TrimPrefix(target, "/")
}

func TestResolveBinary(t *testing.T) {
	root := t.TempDir()
	host := outside(t, fakeELF)

	writeFile(t, root, "usr/bin/server", fakeELF)
	writeFile(t, root, "usr/bin/redis-check-rdb", fakeELF)
	symlink(t, root, "usr/bin/redis-server", "redis-check-rdb")
	writeFile(t, root, "usr/bin/vim.basic", fakeELF)
	symlink(t, root, "etc/alternatives/vi", "/usr/bin/vim.basic")
	symlink(t, root, "usr/bin/vi", "/etc/alternatives/vi")
	writeFile(t, root, "usr/lib64/ld-linux-x86-64.so.2", fakeELF)
	symlink(t, root, "lib64", "usr/lib64")
	// ".." after a symlink to a directory is the target's parent, not the
	// symlink's: /opt/link/../file is /srv/deep/file.
	writeFile(t, root, "srv/deep/file", fakeELF)
	mkdir(t, root, "srv/deep/dir")
	writeFile(t, root, "opt/file", "the wrong file")
	symlink(t, root, "opt/link", "/srv/deep/dir")
	// A chain of 40 links is the most the kernel follows.
	writeFile(t, root, "chain/target", fakeELF)
	symlink(t, root, "chain/l0", "target")
	for i := 1; i < 41; i++ {
		symlink(t, root, fmt.Sprintf("chain/l%d", i), fmt.Sprintf("l%d", i-1))
	}
	symlink(t, root, "loop/a", "b")
	symlink(t, root, "loop/b", "/loop/a")
	// An absolute symlink to a host file leads to that path in the image,
	// which does not exist there.
	symlink(t, root, "usr/bin/host", host)
	symlink(t, root, "usr/bin/escape", climb("usr/bin", host))
	symlink(t, root, "usr/bin/dotdot-at-root", "/../usr/bin/server")
	symlink(t, root, "usr/bin/dangling", "/opt/server/bin/server")
	symlink(t, root, "usr/bin/empty-dir", "/usr/share")
	mkdir(t, root, "usr/share")
	mkfifo(t, root, "usr/bin/fifo")

	ok := []struct{ path, want string }{
		{"/usr/bin/server", "usr/bin/server"},
		{"/usr/bin/redis-server", "usr/bin/redis-check-rdb"},
		{"/usr/bin/vi", "usr/bin/vim.basic"},
		{"/lib64/ld-linux-x86-64.so.2", "usr/lib64/ld-linux-x86-64.so.2"},
		{"/opt/link/../file", "srv/deep/file"},
		{"/usr/bin/../bin/./server", "usr/bin/server"},
		{"//usr//bin/server", "usr/bin/server"},
		{"/chain/l39", "chain/target"}, // 40 links
	}
	for _, c := range ok {
		t.Run(c.path, func(t *testing.T) {
			hostPath, st, err := ResolveBinary(root, c.path)
			if err != nil {
				t.Fatalf("ResolveBinary(%q): %v", c.path, err)
			}
			want := filepath.Join(root, c.want)
			if hostPath != want {
				t.Errorf("host path = %s, want %s", hostPath, want)
			}
			dev, ino := inode(t, want)
			if st.Dev != dev || st.Ino != ino {
				t.Errorf("stat = dev %d ino %d, want dev %d ino %d", st.Dev, st.Ino, dev, ino)
			}
		})
	}

	bad := []struct {
		path string
		is   error
		msg  string
	}{
		{"/usr/bin/nope", fs.ErrNotExist, "/usr/bin/nope does not exist in the image"},
		{"/nope/bin/server", fs.ErrNotExist, "/nope/bin/server does not exist in the image"},
		{"/usr/bin/dangling", fs.ErrNotExist,
			"/usr/bin/dangling does not exist in the image (via symlink /usr/bin/dangling -> /opt/server/bin/server)"},
		{"/usr/bin/host", fs.ErrNotExist, "/usr/bin/host does not exist in the image (via symlink /usr/bin/host -> " + host + ")"},
		{"/usr/bin/escape", ErrEscapesRoot,
			"/usr/bin/escape: escapes the container root filesystem (symlink /usr/bin/escape -> " + climb("usr/bin", host) + " goes above /)"},
		{"/usr/bin/dotdot-at-root", ErrEscapesRoot,
			"/usr/bin/dotdot-at-root: escapes the container root filesystem (symlink /usr/bin/dotdot-at-root -> /../usr/bin/server goes above /)"},
		{"/../usr/bin/server", ErrEscapesRoot, `/../usr/bin/server: escapes the container root filesystem (".." above /)`},
		{"/usr/../../usr/bin/server", ErrEscapesRoot, `/usr/../../usr/bin/server: escapes the container root filesystem (".." above /)`},
		{"/chain/l40", unix.ELOOP, "/chain/l40: too many levels of symbolic links (more than 40 symbolic links)"},
		{"/loop/a", unix.ELOOP, "/loop/a: too many levels of symbolic links (more than 40 symbolic links)"},
		{"/usr/bin/server/x", unix.ENOTDIR, "/usr/bin/server/x: not a directory (/usr/bin/server is a regular file)"},
		{"/usr/bin/server/", unix.ENOTDIR, "/usr/bin/server/: not a directory (/usr/bin/server is a regular file)"},
		{"/usr/bin/redis-server/..", unix.ENOTDIR, "/usr/bin/redis-server/..: not a directory (/usr/bin/redis-check-rdb is a regular file)"},
		{"/usr/bin", nil, "/usr/bin: not a regular file (directory)"},
		{"/usr/bin/empty-dir", nil, "/usr/bin/empty-dir: not a regular file (directory)"},
		{"/", nil, "/: not a regular file (directory)"},
		{"/usr/bin/fifo", nil, "/usr/bin/fifo: not a regular file (named pipe)"},
		{"usr/bin/server", nil, "usr/bin/server: not an absolute path"},
		{"libc.so.6", nil, "libc.so.6: not an absolute path"},
		{"/usr/bin/\x00x", nil, `"/usr/bin/\x00x": contains a NUL byte`},
	}
	for _, c := range bad {
		t.Run(c.path, func(t *testing.T) {
			hostPath, _, err := ResolveBinary(root, c.path)
			if err == nil {
				t.Fatalf("ResolveBinary(%q) = %s, want an error", c.path, hostPath)
			}
			if err.Error() != c.msg {
				t.Errorf("error:\n got %s\nwant %s", err, c.msg)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %v is not %v", err, c.is)
			}
			var pe *PathError
			if !errors.As(err, &pe) || pe.Path != c.path {
				t.Errorf("error %#v is not a *PathError about %q", err, c.path)
			}
		})
	}
}

func TestResolveBinaryDevice(t *testing.T) {
	root := t.TempDir()
	mkdev(t, root, "dev/watchdog")
	_, _, err := ResolveBinary(root, "/dev/watchdog")
	if err == nil || err.Error() != "/dev/watchdog: not a regular file (device)" {
		t.Fatalf("err = %v", err)
	}
}

func TestResolveBinaryNoRoot(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "rootfs")
	_, _, err := ResolveBinary(missing, "/usr/bin/server")
	if err == nil || !strings.Contains(err.Error(), "open root filesystem") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := ResolveBinary("", "/usr/bin/server"); err == nil {
		t.Fatal("no error for an empty rootfs")
	}
}

// The root filesystem may itself be reached through a symlink on the host
// (a trusted path): lookups are relative to the directory it names.
func TestResolveBinaryRootThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	writeFile(t, real, "bin/app", fakeELF)
	link := filepath.Join(dir, "rootfs")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	hostPath, _, err := ResolveBinary(link, "/bin/app")
	if err != nil || hostPath != filepath.Join(link, "bin/app") {
		t.Fatalf("ResolveBinary = %q, %v", hostPath, err)
	}
}

// While the image changes under the lookup (a directory swapped with a
// symlink that climbs out, over and over), a lookup either fails or finds
// the file inside; it never reaches the file outside.
func TestLookupRace(t *testing.T) {
	root := t.TempDir()
	host := outside(t, fakeELF)
	hostDev, hostIno := inode(t, host)
	writeFile(t, root, "d/sub/app", fakeELF)
	inDev, inIno := inode(t, filepath.Join(root, "d/sub/app"))
	symlink(t, root, "d/evil", climb("d", filepath.Dir(host)))
	sub, evil, tmp := filepath.Join(root, "d/sub"), filepath.Join(root, "d/evil"), filepath.Join(root, "d/tmp")

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Swap d/sub and d/evil through d/tmp.
			os.Rename(sub, tmp)
			os.Rename(evil, sub)
			os.Rename(sub, evil)
			os.Rename(tmp, sub)
		}
	}()
	defer func() { close(stop); <-done }()

	var found, failed int
	for i := 0; i < 2000; i++ {
		_, st, err := ResolveBinary(root, "/d/sub/outside.json")
		if err == nil {
			t.Fatalf("resolved the host file's name to dev %d ino %d", st.Dev, st.Ino)
		}
		_, st, err = ResolveBinary(root, "/d/sub/app")
		if err != nil {
			failed++
			continue
		}
		found++
		if st.Dev == hostDev && st.Ino == hostIno {
			t.Fatal("reached the file outside the root filesystem")
		}
		if st.Dev != inDev || st.Ino != inIno {
			t.Fatalf("reached an unexpected file: dev %d ino %d", st.Dev, st.Ino)
		}
	}
	t.Logf("%d found, %d failed while the image changed", found, failed)
}

func TestCheckBinaries(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "usr/bin/ok", fakeELF)
	symlink(t, root, "usr/bin/via-link", "ok")
	writeFile(t, root, "usr/bin/script", "#!/bin/sh\nexec /usr/bin/ok\n")
	writeFile(t, root, "usr/bin/text", "hello world\n")
	writeFile(t, root, "usr/bin/short", "\x7fE")
	writeFile(t, root, "usr/bin/empty", "")
	mkdir(t, root, "usr/bin/dir")
	mkfifo(t, root, "usr/bin/fifo")
	symlink(t, root, "usr/bin/escape", "../../../../../usr/bin/ok")

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

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/server":        "/usr/bin/server",
		"/usr/bin/ünïcode":       "/usr/bin/ünïcode",
		"/a\nfake log line":      `"/a\nfake log line"`,
		"/bad\xffutf8":           `"/bad\xffutf8"`,
		strings.Repeat("a", 300): strings.Repeat("a", 253) + "...",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	// A symlink target with a newline cannot forge a log line.
	root := t.TempDir()
	symlink(t, root, "bin/app", "/x\nassure: recovered everything")
	_, _, err := ResolveBinary(root, "/bin/app")
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %q", err)
	}
}

func TestResolveBinaryOddFiles(t *testing.T) {
	root := t.TempDir()
	long := strings.Repeat("n", 300)
	mkdir(t, root, "usr")
	_, _, err := ResolveBinary(root, "/usr/"+long)
	want := printable("/usr/"+long) + ": file name too long (at " + printable("/usr/"+long) + ")"
	if err == nil || err.Error() != want || !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("long name:\n got %v\nwant %s", err, want)
	}

	sock := filepath.Join(root, "s")
	if len(sock) >= 100 {
		t.Skip("temporary directory too deep for a socket path")
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Skipf("cannot make a socket: %v", err)
	}
	defer l.Close()
	_, _, err = ResolveBinary(root, "/s")
	if err == nil || err.Error() != "/s: not a regular file (socket)" {
		t.Errorf("socket: %v", err)
	}
}
