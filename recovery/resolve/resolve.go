// Package resolve looks up paths an image names (a manifest file, a
// rescue point's binary) inside a root filesystem, as the kernel resolves
// them for a process whose root that is, without ever leaving it. The
// shim, the CLI and the supervisor all resolve through it, so one rule
// and one set of messages hold everywhere.
package resolve

import (
	"errors"
	"fmt"
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

// MaxPathLen is PATH_MAX.
const MaxPathLen = 4096

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
	// Host is set when the root is the host's "/" (assure run, attach):
	// a missing file is then not missing "in the image".
	Host bool
}

func (e *PathError) Error() string {
	var b strings.Builder
	b.WriteString(Printable(e.Path))
	// Only a lookup in the image that found nothing (not, say, a missing
	// root filesystem) is worded as missing from the image.
	if e.Err == unix.ENOENT || e.Err == fs.ErrNotExist {
		b.WriteString(" does not exist")
		if !e.Host {
			b.WriteString(" in the image")
		}
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

// Result is where a path leads inside the root.
type Result struct {
	// InRoot is the path of the final file inside the root: absolute,
	// clean, with no symlink left in it.
	InRoot string
	// Stat is the final file's status (symlinks followed).
	Stat unix.Stat_t
}

// walk resolves the absolute path p inside the directory root, as the
// kernel resolves it for a process whose root is that directory, following
// a final symlink too (as open and execve do). It refuses ".." above the
// root (see the comment at the top of this file). It never looks at
// anything outside root: every name is looked up relative to a directory
// descriptor reached from root by names alone, never through "..".
func walk(root int, p string) (Result, error) {
	fail := func(err error, detail string) (Result, error) {
		return Result{}, &PathError{Path: p, Err: err, Detail: detail}
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
				detail = joinDetail("at "+Printable(at(c.name)), detail)
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
				return fail(err, "at "+Printable(at(c.name)))
			}
			via := "symlink " + Printable(at(c.name)) + " -> " + Printable(target)
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
				return fail(err, "at "+Printable(at(c.name)))
			}
			fds = append(fds, fd)
			names = append(names, c.name)
		default:
			if !last {
				return fail(unix.ENOTDIR, Printable(at(c.name))+" is a "+KindOf(st))
			}
			return Result{InRoot: at(c.name), Stat: st}, nil
		}
	}
	// The path ends at a directory (possibly the root itself).
	var st unix.Stat_t
	if err := unix.Fstat(cur(), &st); err != nil {
		return fail(err, "")
	}
	return Result{InRoot: inRootPath(names), Stat: st}, nil
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
	buf := make([]byte, MaxPathLen)
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
func KindOf(st unix.Stat_t) string {
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

func IsRegular(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }

// Root is an open root filesystem.
type Root struct {
	path string
	f    *os.File // O_PATH directory
	host bool     // the host's own "/" (assure run, attach of a host process)
}

// OpenRoot opens the root filesystem at rootfs for lookups.
func OpenRoot(rootfs string) (*Root, error) {
	if rootfs == "" {
		return nil, errors.New("no root filesystem given")
	}
	f, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem: %w", err)
	}
	r := &Root{path: rootfs, f: f}
	var st, hs unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil && unix.Stat("/", &hs) == nil {
		r.host = st.Dev == hs.Dev && st.Ino == hs.Ino
	}
	return r, nil
}

// Close releases the root.
func (r *Root) Close() error { return r.f.Close() }

// Lookup resolves the absolute in-container path p (see the comment at the
// top of this file) and returns an O_PATH handle of the final file, opened
// by the kernel confined to the root, with its in-root path and status.
// Errors are *PathError values about p.
func (r *Root) Lookup(p string) (*os.File, Result, error) {
	h, res, err := r.lookup(p)
	var pe *PathError
	if r.host && errors.As(err, &pe) {
		pe.Host = true
	}
	return h, res, err
}

func (r *Root) lookup(p string) (*os.File, Result, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, Result{}, &PathError{Path: p, Err: errors.New("not an absolute path")}
	}
	if len(p) > MaxPathLen {
		return nil, Result{}, &PathError{Path: p, Err: unix.ENAMETOOLONG}
	}
	if strings.IndexByte(p, 0) >= 0 {
		return nil, Result{}, &PathError{Path: p, Err: errors.New("contains a NUL byte")}
	}
	res, err := walk(int(r.f.Fd()), p)
	runtime.KeepAlive(r.f)
	if err != nil {
		return nil, res, err
	}
	h, err := pathrs.OpenatInRoot(r.f, p)
	if err != nil {
		return nil, res, &PathError{Path: p, Err: Errno(err)}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		h.Close()
		return nil, res, &PathError{Path: p, Err: err}
	}
	if st.Dev != res.Stat.Dev || st.Ino != res.Stat.Ino {
		h.Close()
		return nil, res, &PathError{Path: p, Err: errors.New("changed while it was being looked up")}
	}
	res.Stat = st
	return h, res, nil
}

// Open looks p up and opens it for reading, which it does only once it
// knows p is a regular file: opening a FIFO could block, and opening a
// device could have side effects (a watchdog starts on open). The O_PATH
// handle is reopened through /proc/self/fd, so the file read is the one
// checked.
func (r *Root) Open(p string) (*os.File, Result, error) {
	h, res, err := r.Lookup(p)
	if err != nil {
		return nil, res, err
	}
	defer h.Close()
	if !IsRegular(res.Stat) {
		return nil, res, &PathError{Path: p, Err: fmt.Errorf("not a regular file (%s)", KindOf(res.Stat))}
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return nil, res, &PathError{Path: p, Err: Errno(err)}
	}
	return f, res, nil
}

// Errno digs the system error out of the *os.PathError chains that
// pathrs-lite returns (which name host paths and its own operations).
func Errno(err error) error {
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
	r, err := OpenRoot(rootfs)
	if err != nil {
		return "", st, &PathError{Path: binary, Err: err}
	}
	defer r.Close()
	h, res, err := r.Lookup(binary)
	if err != nil {
		return "", st, err
	}
	h.Close()
	if !IsRegular(res.Stat) {
		return "", st, &PathError{Path: binary, Err: fmt.Errorf("not a regular file (%s)", KindOf(res.Stat))}
	}
	return filepath.Join(rootfs, res.InRoot), res.Stat, nil
}

// Printable renders an untrusted path for a message: as is when it is
// short and all graphic, quoted otherwise, so that an image cannot forge
// lines in a log.
func Printable(s string) string {
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

// Clean checks p, an absolute path an image names, before any file is
// looked at: a ".." that climbs above "/" as written fails with
// ErrEscapesRoot and the message a lookup gives for it. A path with no
// ".." is returned cleaned ("/usr/./bin//x" is "/usr/bin/x"); one with a
// ".." is returned as written, for the lookup to resolve as the kernel
// does (the ".." of a symlinked directory is its target's parent, which
// lexical cleaning gets wrong).
func Clean(p string) (string, error) {
	depth, dotdot := 0, false
	for _, c := range splitPath(p, "") {
		switch c.name {
		case ".":
		case "..":
			if depth == 0 {
				return "", &PathError{Path: p, Err: ErrEscapesRoot, Detail: `".." above /`}
			}
			depth--
			dotdot = true
		default:
			depth++
		}
	}
	if dotdot {
		return p, nil
	}
	return filepath.Clean(p), nil
}
