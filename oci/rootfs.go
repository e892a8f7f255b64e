package oci

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/fileinfo"
	"github.com/assure-rt/assure/recovery/manifest"
)

// Paths inside the container.
//
// A path an image names (a manifest file, a rescue point's binary) means
// what it means to a process in the container: the container's root is
// "/", absolute symlinks are relative to it, and ".." at "/" stays at "/".
// Joining such a path onto the host path of the root filesystem and
// letting the host kernel follow it would be wrong (an absolute symlink
// would point into the host) and unsafe (an image could make the shim read
// any host file).
//
// So every lookup here is done twice, with different jobs:
//
//  1. walk resolves the path in user space, one component at a time, from
//     file descriptors that never leave the root (each step is an
//     openat(O_PATH|O_NOFOLLOW) of one name below the previous directory;
//     ".." pops back to the directory it came from; symlink targets are
//     read with readlinkat and spliced in, absolute ones restarting at the
//     root). Its job is to explain: it names the missing component, the
//     symlink that led there, the loop, and it detects escape attempts.
//  2. The file that is then used is opened by the kernel with openat2 and
//     RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS (pathrs-lite's OpenatInRoot,
//     from github.com/cyphar/filepath-securejoin, which retries the EAGAIN
//     that a concurrent rename can cause and emulates openat2 on kernels
//     without it). This is the guarantee of confinement: it does not depend
//     on walk being right. The two results must agree (same device and
//     inode), otherwise the image changed under us and the lookup fails.
//
// Escape attempts. The kernel, like securejoin, silently clamps a ".."
// that climbs above the root: inside the container "/etc/../../../x" is
// "/x". That is safe, but an image whose manifest path or symlink needs
// the clamp is either broken or trying to reach the host, and the issue
// asks for an error there. So walk refuses any ".." that would climb above
// the root, whether it is in the path itself or in a symlink's target,
// with ErrEscapesRoot. Absolute symlinks are not escapes: they are normal
// in images (/etc/alternatives, /lib64/ld-linux-x86-64.so.2) and are
// followed relative to the container's root, as the kernel does in the
// container. A symlink to "/etc/passwd" therefore reaches the image's own
// /etc/passwd, or "does not exist in the image", and never the host's.

// maxSymlinks is the kernel's limit on symbolic links followed in one path
// lookup (MAXSYMLINKS); past it, lookups fail with ELOOP.
const maxSymlinks = 40

// maxPathLen is PATH_MAX.
const maxPathLen = 4096

// ErrEscapesRoot is wrapped by errors about a path whose lookup climbs
// above the container's root with "..".
var ErrEscapesRoot = errors.New("escapes the container root filesystem")

// PathError is a problem with a path inside the container's root
// filesystem. Its message starts with the path as the image wrote it:
//
//	/usr/bin/server does not exist in the image (via symlink /usr/bin/server -> /opt/server/bin/server)
//	/etc/../../../etc/shadow: escapes the container root filesystem (".." above /)
//	/etc/assure.json: not a regular file (named pipe)
type PathError struct {
	// Path is the path inside the container, as given.
	Path string
	// Err is the reason: fs.ErrNotExist (as unix.ENOENT), ErrEscapesRoot,
	// unix.ENOTDIR, unix.ELOOP, or a plain error.
	Err error
	// Detail says where in the lookup the problem is, or is "".
	Detail string
}

func (e *PathError) Error() string {
	var b strings.Builder
	b.WriteString(printable(e.Path))
	// Only a lookup in the image that found nothing (not, say, a missing
	// root filesystem) is worded as missing from the image.
	if e.Err == unix.ENOENT || e.Err == fs.ErrNotExist {
		b.WriteString(" does not exist in the image")
	} else {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Detail != "" {
		b.WriteString(" (")
		b.WriteString(e.Detail)
		b.WriteString(")")
	}
	return b.String()
}

func (e *PathError) Unwrap() error { return e.Err }

// component is one name of a path being resolved.
type component struct {
	name string
	// via describes the symlink whose target this component comes from
	// ("symlink /a -> ../b"), or is "" for a component of the path itself.
	via string
}

// splitPath splits p into its components. A trailing slash becomes a
// final ".", which, like in the kernel, requires what precedes it to be a
// directory.
func splitPath(p, via string) []component {
	var out []component
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, component{name: s, via: via})
		}
	}
	if strings.HasSuffix(p, "/") && len(out) > 0 {
		out = append(out, component{name: ".", via: via})
	}
	return out
}

// walkResult is where a path leads inside the root.
type walkResult struct {
	// inRoot is the path of the final file inside the root: absolute,
	// clean, with no symlink left in it.
	inRoot string
	// st is the final file's status (symlinks followed).
	st unix.Stat_t
}

// walk resolves the absolute path p inside the directory root, as the
// kernel resolves it for a process whose root is that directory, following
// a final symlink too (as open and execve do). It refuses ".." above the
// root (see the comment at the top of this file). It never looks at
// anything outside root: every name is looked up relative to a directory
// descriptor reached from root by names alone, never through "..".
func walk(root int, p string) (walkResult, error) {
	fail := func(err error, detail string) (walkResult, error) {
		return walkResult{}, &PathError{Path: p, Err: err, Detail: detail}
	}
	var (
		names []string // the directories walked into, below root
		fds   []int    // their descriptors, fds[i] for names[:i+1]
	)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	cur := func() int {
		if len(fds) == 0 {
			return root
		}
		return fds[len(fds)-1]
	}
	at := func(name string) string {
		return inRootPath(append(names[:len(names):len(names)], name))
	}

	queue := splitPath(p, "")
	links := 0
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		last := len(queue) == 0
		switch c.name {
		case ".":
			continue // the current position is always a directory
		case "..":
			if len(names) == 0 {
				if c.via != "" {
					return fail(ErrEscapesRoot, c.via+` goes above /`)
				}
				return fail(ErrEscapesRoot, `".." above /`)
			}
			unix.Close(fds[len(fds)-1])
			fds = fds[:len(fds)-1]
			names = names[:len(names)-1]
			continue
		}

		var st unix.Stat_t
		if err := fstatatRetry(cur(), c.name, &st); err != nil {
			detail := ""
			if c.via != "" {
				detail = "via " + c.via
			}
			if !errors.Is(err, unix.ENOENT) {
				detail = joinDetail("at "+printable(at(c.name)), detail)
			}
			return fail(err, detail)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			links++
			if links > maxSymlinks {
				return fail(unix.ELOOP, fmt.Sprintf("more than %d symbolic links", maxSymlinks))
			}
			target, err := readlinkat(cur(), c.name)
			if err != nil {
				return fail(err, "at "+printable(at(c.name)))
			}
			via := "symlink " + printable(at(c.name)) + " -> " + printable(target)
			if target == "" {
				return fail(unix.ENOENT, "via "+via+", which is empty")
			}
			if strings.HasPrefix(target, "/") {
				// Relative to the container's root, as in the container.
				for _, fd := range fds {
					unix.Close(fd)
				}
				fds, names = nil, nil
			}
			queue = append(splitPath(target, via), queue...)
		case unix.S_IFDIR:
			fd, err := openatRetry(cur(), c.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
			if err != nil {
				// A directory replaced by something else just now.
				return fail(err, "at "+printable(at(c.name)))
			}
			fds = append(fds, fd)
			names = append(names, c.name)
		default:
			if !last {
				return fail(unix.ENOTDIR, printable(at(c.name))+" is a "+kindOf(st))
			}
			return walkResult{inRoot: at(c.name), st: st}, nil
		}
	}
	// The path ends at a directory (possibly the root itself).
	var st unix.Stat_t
	if err := unix.Fstat(cur(), &st); err != nil {
		return fail(err, "")
	}
	return walkResult{inRoot: inRootPath(names), st: st}, nil
}

func inRootPath(names []string) string {
	return "/" + strings.Join(names, "/")
}

func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + ", " + b
}

func fstatatRetry(dir int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dir, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

func openatRetry(dir int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dir, name, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func readlinkat(dir int, name string) (string, error) {
	buf := make([]byte, maxPathLen)
	for {
		n, err := unix.Readlinkat(dir, name, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n >= len(buf) {
			return "", unix.ENAMETOOLONG
		}
		return string(buf[:n]), nil
	}
}

// kindOf names the type of a file for messages, as fileinfo.Kind does.
func kindOf(st unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return fileinfo.Kind(fs.ModeDir)
	case unix.S_IFIFO:
		return fileinfo.Kind(fs.ModeNamedPipe)
	case unix.S_IFSOCK:
		return fileinfo.Kind(fs.ModeSocket)
	case unix.S_IFCHR, unix.S_IFBLK:
		return fileinfo.Kind(fs.ModeDevice)
	case unix.S_IFLNK:
		return fileinfo.Kind(fs.ModeSymlink)
	}
	return fileinfo.Kind(fs.ModeIrregular)
}

func isRegular(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }

// root is an open container root filesystem.
type root struct {
	path string
	f    *os.File // O_PATH directory
}

func openRoot(rootfs string) (*root, error) {
	if rootfs == "" {
		return nil, errors.New("no root filesystem given")
	}
	f, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem: %w", err)
	}
	return &root{path: rootfs, f: f}, nil
}

func (r *root) Close() error { return r.f.Close() }

// lookup resolves the absolute in-container path p (see the comment at the
// top of this file) and returns an O_PATH handle of the final file, opened
// by the kernel confined to the root, with its in-root path and status.
// Errors are *PathError values about p.
func (r *root) lookup(p string) (*os.File, walkResult, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, walkResult{}, &PathError{Path: p, Err: errors.New("not an absolute path")}
	}
	if len(p) > maxPathLen {
		return nil, walkResult{}, &PathError{Path: p, Err: unix.ENAMETOOLONG}
	}
	if strings.IndexByte(p, 0) >= 0 {
		return nil, walkResult{}, &PathError{Path: p, Err: errors.New("contains a NUL byte")}
	}
	res, err := walk(int(r.f.Fd()), p)
	runtime.KeepAlive(r.f)
	if err != nil {
		return nil, res, err
	}
	h, err := pathrs.OpenatInRoot(r.f, p)
	if err != nil {
		return nil, res, &PathError{Path: p, Err: errno(err)}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		h.Close()
		return nil, res, &PathError{Path: p, Err: err}
	}
	if st.Dev != res.st.Dev || st.Ino != res.st.Ino {
		h.Close()
		return nil, res, &PathError{Path: p, Err: errors.New("changed while it was being looked up")}
	}
	res.st = st
	return h, res, nil
}

// open looks p up and opens it for reading, which it does only once it
// knows p is a regular file: opening a FIFO could block, and opening a
// device could have side effects (a watchdog starts on open). The O_PATH
// handle is reopened through /proc/self/fd, so the file read is the one
// checked.
func (r *root) open(p string) (*os.File, walkResult, error) {
	h, res, err := r.lookup(p)
	if err != nil {
		return nil, res, err
	}
	defer h.Close()
	if !isRegular(res.st) {
		return nil, res, &PathError{Path: p, Err: fmt.Errorf("not a regular file (%s)", kindOf(res.st))}
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return nil, res, &PathError{Path: p, Err: errno(err)}
	}
	return f, res, nil
}

// errno digs the system error out of the *os.PathError chains that
// pathrs-lite returns (which name host paths and its own operations).
func errno(err error) error {
	var en unix.Errno
	if errors.As(err, &en) {
		return en
	}
	return err
}

// ResolveBinary resolves binary, an absolute path inside the container
// such as a manifest's "binary", in the root filesystem at rootfs exactly
// as the kernel would resolve it from inside the container (symlinks
// followed, absolute ones relative to the container's root), without ever
// leaving rootfs. It returns the host path of the final file and its
// status: the device and inode are what the supervisor matches against
// /proc/PID/maps of the container's processes (a manifest naming
// /usr/bin/redis-server matches the process running the file that symlink
// leads to). The final file must be a regular file.
//
// The host path is for messages and for opening the file later; the
// device and inode identify it. A ".." climbing above the root fails with
// ErrEscapesRoot (see above). Errors are *PathError values about binary.
func ResolveBinary(rootfs, binary string) (hostPath string, st unix.Stat_t, err error) {
	r, err := openRoot(rootfs)
	if err != nil {
		return "", st, &PathError{Path: binary, Err: err}
	}
	defer r.Close()
	h, res, err := r.lookup(binary)
	if err != nil {
		return "", st, err
	}
	h.Close()
	if !isRegular(res.st) {
		return "", st, &PathError{Path: binary, Err: fmt.Errorf("not a regular file (%s)", kindOf(res.st))}
	}
	return filepath.Join(rootfs, res.inRoot), res.st, nil
}

var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

// CheckBinaries checks that every rescue point of m whose binary is an
// absolute path names, in the root filesystem at rootfs, a regular ELF
// file (by its 4-byte magic), resolved as ResolveBinary does. Bare names
// ("libc.so.6") are not checked: they match libraries as they are mapped
// at run time. The error, a *manifest.Error, names the first rescue point
// at fault:
//
//	manifest: rescuePoints[2] (handle in /usr/bin/server): field "binary": /usr/bin/server does not exist in the image
//
// Its File is empty; callers add where the manifest came from (see
// Found.CheckBinaries).
func CheckBinaries(m *manifest.Manifest, rootfs string) error {
	var r *root
	checked := make(map[string]error)
	for i, rp := range m.RescuePoints {
		if !filepath.IsAbs(rp.Binary) {
			continue
		}
		err, done := checked[rp.Binary]
		if !done {
			if r == nil {
				var oerr error
				if r, oerr = openRoot(rootfs); oerr != nil {
					return manifest.EntryError("", i, rp, "binary", &PathError{Path: rp.Binary, Err: oerr})
				}
				defer r.Close()
			}
			err = r.checkELF(rp.Binary)
			checked[rp.Binary] = err
		}
		if err != nil {
			return manifest.EntryError("", i, rp, "binary", err)
		}
	}
	return nil
}

func (r *root) checkELF(p string) error {
	f, _, err := r.open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, len(elfMagic))
	n, err := io.ReadFull(f, magic)
	switch {
	case err == nil && string(magic) == string(elfMagic):
		return nil
	case err != nil && err != io.EOF && err != io.ErrUnexpectedEOF:
		return &PathError{Path: p, Err: fmt.Errorf("read: %w", errno(err))}
	case n >= 2 && magic[0] == '#' && magic[1] == '!':
		return &PathError{Path: p, Err: errors.New("is a script, not an ELF file: name the binary that runs the function")}
	case n < len(elfMagic):
		return &PathError{Path: p, Err: fmt.Errorf("not an ELF file (%d bytes long)", n)}
	}
	return &PathError{Path: p, Err: fmt.Errorf("not an ELF file (starts with %s)", strconv.Quote(string(magic)))}
}

// printable renders an untrusted path for a message: as is when it is
// short and all graphic, quoted otherwise, so that an image cannot forge
// lines in a log.
func printable(s string) string {
	const max = 256
	if len(s) > max {
		cut := max - 3
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
