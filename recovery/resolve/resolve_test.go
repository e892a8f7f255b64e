package resolve

import (
	rt "github.com/assure-rt/assure/recovery/resolve/resolvetest"

	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestResolveBinary(t *testing.T) {
	root := t.TempDir()
	host := rt.Outside(t, rt.FakeELF)

	rt.WriteFile(t, root, "usr/bin/server", rt.FakeELF)
	rt.WriteFile(t, root, "usr/bin/redis-check-rdb", rt.FakeELF)
	rt.Symlink(t, root, "usr/bin/redis-server", "redis-check-rdb")
	rt.WriteFile(t, root, "usr/bin/vim.basic", rt.FakeELF)
	rt.Symlink(t, root, "etc/alternatives/vi", "/usr/bin/vim.basic")
	rt.Symlink(t, root, "usr/bin/vi", "/etc/alternatives/vi")
	rt.WriteFile(t, root, "usr/lib64/ld-linux-x86-64.so.2", rt.FakeELF)
	rt.Symlink(t, root, "lib64", "usr/lib64")
	// ".." after a symlink to a directory is the target's parent, not the
	// symlink's: /opt/link/../file is /srv/deep/file.
	rt.WriteFile(t, root, "srv/deep/file", rt.FakeELF)
	rt.Mkdir(t, root, "srv/deep/dir")
	rt.WriteFile(t, root, "opt/file", "the wrong file")
	rt.Symlink(t, root, "opt/link", "/srv/deep/dir")
	// A chain of 40 links is the most the kernel follows.
	rt.WriteFile(t, root, "chain/target", rt.FakeELF)
	rt.Symlink(t, root, "chain/l0", "target")
	for i := 1; i < 41; i++ {
		rt.Symlink(t, root, fmt.Sprintf("chain/l%d", i), fmt.Sprintf("l%d", i-1))
	}
	rt.Symlink(t, root, "loop/a", "b")
	rt.Symlink(t, root, "loop/b", "/loop/a")
	// An absolute symlink to a host file leads to that path in the image,
	// which does not exist there.
	rt.Symlink(t, root, "usr/bin/host", host)
	rt.Symlink(t, root, "usr/bin/escape", rt.Climb("usr/bin", host))
	rt.Symlink(t, root, "usr/bin/dotdot-at-root", "/../usr/bin/server")
	rt.Symlink(t, root, "usr/bin/dangling", "/opt/server/bin/server")
	rt.Symlink(t, root, "usr/bin/empty-dir", "/usr/share")
	rt.Mkdir(t, root, "usr/share")
	rt.Mkfifo(t, root, "usr/bin/fifo")

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
			dev, ino := rt.Inode(t, want)
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
			"/usr/bin/escape: escapes the container root filesystem (symlink /usr/bin/escape -> " + rt.Climb("usr/bin", host) + " goes above /)"},
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
	rt.Mkdev(t, root, "dev/watchdog")
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
	rt.WriteFile(t, real, "bin/app", rt.FakeELF)
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
	host := rt.Outside(t, rt.FakeELF)
	hostDev, hostIno := rt.Inode(t, host)
	rt.WriteFile(t, root, "d/sub/app", rt.FakeELF)
	inDev, inIno := rt.Inode(t, filepath.Join(root, "d/sub/app"))
	rt.Symlink(t, root, "d/evil", rt.Climb("d", filepath.Dir(host)))
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

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/bin/server":        "/usr/bin/server",
		"/usr/bin/ünïcode":       "/usr/bin/ünïcode",
		"/a\nfake log line":      `"/a\nfake log line"`,
		"/bad\xffutf8":           `"/bad\xffutf8"`,
		strings.Repeat("a", 300): strings.Repeat("a", 253) + "...",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
	// A symlink target with a newline cannot forge a log line.
	root := t.TempDir()
	rt.Symlink(t, root, "bin/app", "/x\nassure: recovered everything")
	_, _, err := ResolveBinary(root, "/bin/app")
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %q", err)
	}
}

func TestResolveBinaryOddFiles(t *testing.T) {
	root := t.TempDir()
	long := strings.Repeat("n", 300)
	rt.Mkdir(t, root, "usr")
	_, _, err := ResolveBinary(root, "/usr/"+long)
	want := Printable("/usr/"+long) + ": file name too long (at " + Printable("/usr/"+long) + ")"
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
