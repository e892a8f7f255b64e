package shim

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

// execWatch is the seccomp listener of a supervised container (see
// oci.NotifyExecs): runc connects to it for the init and for each
// process started with exec, and hands over the notification fd of the
// process's filter. Every execve and execveat of the container then waits
// here: a process the supervisor does not trace yet (one runc exec just
// started) is handed to it first, so that supervision starts at the new
// program's first instruction; then the call goes on unchanged.
//
// Written by hand: no library serves seccomp notifications in Go without
// cgo (libseccomp-golang needs it).
type execWatch struct {
	path  string
	l     *net.UnixListener
	adopt func(pid int) // hand a process to the supervisor; it may block
	// traced reports whether pid is already supervised.
	traced func(pid int) bool
	mu     sync.Mutex
	closed bool
}

// seccompNotif and seccompNotifResp are struct seccomp_notif and struct
// seccomp_notif_resp of <linux/seccomp.h>.
type seccompNotif struct {
	id    uint64
	pid   uint32
	flags uint32
	data  [64]byte // struct seccomp_data
}

type seccompNotifResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

func newExecWatch(path string, adopt func(int), traced func(int) bool) (*execWatch, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("seccomp listener: %w", err)
	}
	os.Chmod(path, 0o600)
	w := &execWatch{path: path, l: l, adopt: adopt, traced: traced}
	go w.accept()
	return w, nil
}

func (w *execWatch) accept() {
	for {
		c, err := w.l.AcceptUnix()
		if err != nil {
			return
		}
		w.receive(c)
	}
}

// receive takes the notification fds runc sends (with the container's
// state as the message, which is not needed).
func (w *execWatch) receive(c *net.UnixConn) {
	defer c.Close()
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4*4))
	_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			w.mu.Lock()
			closed := w.closed
			w.mu.Unlock()
			if closed {
				unix.Close(fd)
				continue
			}
			go w.serve(fd)
		}
	}
}

// serve answers the notifications of one filter until no process uses it
// any more, or the watch is closed.
func (w *execWatch) serve(fd int) {
	defer unix.Close(fd)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return // every process of the filter is gone
		}
		var n seccompNotif
		if err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&n)); err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOENT) {
				continue // the caller was interrupted meanwhile
			}
			return
		}
		if st, err := procfs.ReadStatus(int(n.pid)); err == nil && !w.traced(st.Tgid) {
			w.adopt(st.Tgid)
		}
		resp := seccompNotifResp{id: n.id, flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
		// ENOENT: the caller was interrupted (by the adoption itself: the
		// call restarts and comes back, traced this time).
		ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp))
	}
}

// close stops listening. The filters' fds close as their processes end
// (closing one with processes still using it would make their exec calls
// fail with ENOSYS).
func (w *execWatch) close() {
	w.l.Close()
	os.Remove(w.path)
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}
