package supervisor

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fdChannel passes open files from the supervisor into a process being
// rolled back: a datagram socket pair made in the process, one end taken
// out with pidfd_getfd, the files sent over it (SCM_RIGHTS) and received
// there by an injected recvmsg. The process gets the very open file
// descriptions the supervisor holds (same offset, flags, socket). Nothing
// else puts a descriptor into another process.
type fdChannel struct {
	r   *rollback
	low int // the process's end of the socket stays at or above this number
	in  int // the process's end, -1 once closed
	out *os.File
}

// maxRights bounds the descriptors sent in one message (the kernel's
// SCM_MAX_FD is 253).
const maxRights = 200

// channel returns the rollback's channel, opening it at the first use.
func (r *rollback) channel() *fdChannel {
	if r.ch == nil {
		low := 0
		for _, rec := range r.j.fds {
			low = max(low, rec.num+1)
		}
		r.ch = &fdChannel{r: r, low: low, in: -1}
	}
	return r.ch
}

func (r *rollback) closeChannel() {
	if r.ch == nil {
		return
	}
	if r.ch.in >= 0 {
		r.inject(unix.SYS_CLOSE, uint64(r.ch.in))
		r.ch.in = -1
	}
	if r.ch.out != nil {
		r.ch.out.Close()
		r.ch.out = nil
	}
	r.ch = nil
}

func (ch *fdChannel) open() error {
	if ch.out != nil {
		return nil
	}
	r := ch.r
	p := r.p
	data := dataPage(p)
	if _, err := r.inject(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0, data); err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	b, err := p.readMem(data, 8)
	if err != nil {
		return err
	}
	in, peer := int(int32(le32(b))), int(int32(le32(b[4:])))
	out, err := p.views.takeFD(peer)
	r.inject(unix.SYS_CLOSE, uint64(peer))
	if err != nil {
		r.inject(unix.SYS_CLOSE, uint64(in))
		return fmt.Errorf("take socket: %w", err)
	}
	// Out of the way of the descriptor numbers to restore.
	if in < ch.low {
		if n, err := r.inject(unix.SYS_FCNTL, uint64(in), unix.F_DUPFD_CLOEXEC, uint64(ch.low)); err == nil {
			r.inject(unix.SYS_CLOSE, uint64(in))
			in = int(n)
		}
	}
	ch.in, ch.out = in, out
	return nil
}

// pass installs files in the process and returns their descriptor
// numbers there (close-on-exec; lowest free numbers).
func (ch *fdChannel) pass(files []*os.File) ([]int, error) {
	if err := ch.open(); err != nil {
		return nil, err
	}
	var out []int
	for len(files) > 0 {
		n := min(len(files), maxRights)
		got, err := ch.passBatch(files[:n])
		out = append(out, got...)
		if err != nil {
			for _, fd := range out {
				ch.r.inject(unix.SYS_CLOSE, uint64(fd))
			}
			return nil, err
		}
		files = files[n:]
	}
	return out, nil
}

// Layout of the data page during a recvmsg: struct msghdr, the iovec,
// the one byte of payload, the control buffer.
const (
	msgIovOff     = 64
	msgByteOff    = 128
	msgControlOff = 256
)

func (ch *fdChannel) passBatch(files []*os.File) ([]int, error) {
	r := ch.r
	p := r.p
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if err := unix.Sendmsg(int(ch.out.Fd()), []byte{0}, unix.UnixRights(fds...), nil, 0); err != nil {
		return nil, fmt.Errorf("sendmsg: %w", err)
	}
	data := dataPage(p)
	ctlLen := unix.CmsgSpace(4 * len(files))
	le := binary.LittleEndian
	hdr := make([]byte, msgControlOff)
	le.PutUint64(hdr[16:], data+msgIovOff) // msg_iov
	le.PutUint64(hdr[24:], 1)              // msg_iovlen
	le.PutUint64(hdr[32:], data+msgControlOff)
	le.PutUint64(hdr[40:], uint64(ctlLen))
	le.PutUint64(hdr[msgIovOff:], data+msgByteOff)
	le.PutUint64(hdr[msgIovOff+8:], 1)
	if err := p.writeMem(data, hdr); err != nil {
		return nil, err
	}
	if _, err := r.inject(unix.SYS_RECVMSG, uint64(ch.in), data, unix.MSG_CMSG_CLOEXEC); err != nil {
		return nil, fmt.Errorf("recvmsg: %w", err)
	}
	b, err := p.readMem(data, msgControlOff+ctlLen)
	if err != nil {
		return nil, err
	}
	n := int(le.Uint64(b[40:]))
	msgs, err := unix.ParseSocketControlMessage(b[msgControlOff : msgControlOff+min(n, ctlLen)])
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("recvmsg: no descriptors received (%v)", err)
	}
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil {
		return nil, err
	}
	if len(got) != len(files) || le.Uint32(b[48:])&unix.MSG_CTRUNC != 0 {
		for _, fd := range got {
			r.inject(unix.SYS_CLOSE, uint64(fd))
		}
		return nil, fmt.Errorf("recvmsg: %d of %d descriptors received (descriptor limit?)", len(got), len(files))
	}
	return got, nil
}
