package supervisor

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// The gate keeps a rollback from losing other threads' work. A rollback
// returns every thread of the checkpoint's scope to the checkpoint; what
// a thread did in memory since is simply done again, but what it did
// outside the process (a request read from a socket, a reply sent, a
// child reaped, a file written) cannot be taken back, and would be lost
// or made twice. So while a checkpoint is active, a thread that does not
// own it (has no frame of it: another thread's rescue point, or another
// process's in "container" scope) is held at the entry of every system
// call with an effect outside the process, before the call runs, until
// the checkpoint ends: at the commit it goes on, at a rollback it is
// rolled back with the others and never made the call. Threads run under
// PTRACE_SYSCALL during checkpoints anyway (the journal), so holding one
// costs a stop only when such a call comes.
//
// A held ("parked") thread is rewound to its syscall instruction, the
// number back in rax and orig_rax -1, and kept in an interrupt stop: a
// state that checkpoints and rollbacks take like any other, and in which
// resuming it makes the call afresh (through the gate again).
//
// A rescue point can wait for a parked thread (a lock the parked thread
// holds, a pipe it would write to): after parkPatience the parked thread
// goes ahead, and the checkpoints it passed note it, so that a rollback to
// one of them says exactly what it could not take back (an error event).

// gateOn turns the gate off with ASSURE_GATE=off, for measurements side
// by side (a rollback then loses what other threads did outside).
var gateOn = os.Getenv("ASSURE_GATE") != "off"

// parkPatience is how long a thread waits for other threads' checkpoints
// to end before it goes ahead. ASSURE_PARK_PATIENCE (a Go duration)
// overrides it, for tests.
var parkPatience = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("ASSURE_PARK_PATIENCE")); err == nil && d > 0 {
		return d
	}
	return 100 * time.Millisecond
}()

// park is the state of a thread held at the gate.
type park struct {
	nr    uint64 // the system call it was about to make
	entry bool   // held at a rescue point's entry instead (admit)
	since time.Time
}

// admit decides, at the entry of a rescue point in thread t (held at the
// entry, its registers set to run the entry again), whether t may take a
// checkpoint now. Checkpoints of different threads do not nest: a thread
// entering a rescue point while another thread's checkpoint is active
// waits for it to end. Were it let in, the older window's thread would be
// held at its next call with an outside effect until the newer window
// ends — and it may hold the lock the newer one waits for (a rescue point
// that takes a table's mutex, then logs). Like any other held thread, it
// is let in after parkPatience (nested then). It reports true when t must
// stay where it is; resuming t makes it enter again.
func (s *Supervisor) admit(t *thread) bool {
	if !gateOn || t.admitNext || s.mayProceed(t) {
		if t.admitNext && debug {
			s.debugf("admit %d after %v", t.tid, time.Since(t.park.since))
		}
		t.admitNext = false
		s.unpark(t)
		return false
	}
	if t.park == nil {
		t.park = &park{entry: true, since: time.Now()}
	}
	s.debugf("hold %d at a rescue point entry", t.tid)
	s.parked[t] = true
	s.armParkTimer()
	return true
}

// gate decides, at the entry stop of thread t's system call (regs), while
// t's process has an active checkpoint, whether t may make it now. If
// not, t is rewound to make it again later: it reports true, and the
// caller lets it run to its parking stop (reinterrupt).
func (s *Supervisor) gate(t *thread, regs *arch.Regs) bool {
	if !gateOn || !s.outside(t, regs) || s.mayProceed(t) {
		return false
	}
	nr := regs.Orig_rax
	regs.Rax = nr
	regs.Rip -= 2 // the syscall instruction
	regs.Orig_rax = ^uint64(0)
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		return false
	}
	s.debugf("park %d at %s", t.tid, syscallName(nr))
	if t.park == nil {
		t.park = &park{nr: nr, since: time.Now()}
	} else {
		t.park.nr = nr // released but gated again: its patience goes on
	}
	s.parked[t] = true
	s.metrics.Parked()
	s.armParkTimer()
	return true
}

// mayProceed reports whether t may make a call with effects outside its
// process: t owns every active checkpoint of its process, or was let past
// the ones it does not own.
func (s *Supervisor) mayProceed(t *thread) bool {
	if h := t.heldFor; h != nil {
		for _, id := range h.ids {
			if !h.proc.gone && h.proc.ckptIndex(id) >= 0 {
				return false // (a parent gone takes its checkpoints along)
			}
		}
		t.heldFor = nil
	}
	for _, c := range t.proc.ckpts {
		if !t.owns(c.id) && !t.passes[c.id] {
			return false
		}
	}
	return true
}

// heldFor is what holds a new process made by a thread that did not own
// every active checkpoint of its process: those checkpoints.
type heldFor struct {
	proc *process
	ids  []checkpoint.ID
}

// holdChild keeps the first thread c of a process that t forked from
// running while t's process has checkpoints t does not own. The fork is
// not held at its call: glibc's fork takes the allocator's and stdio's
// locks before the call, which the rescue point's thread may need. The
// child is held at its first stop instead, before it runs an instruction:
// at the commit it starts; at a rollback it is killed with the other
// processes made since the checkpoint (never having run), and t forks
// again.
func (s *Supervisor) holdChild(c, t *thread) {
	if !gateOn {
		return
	}
	var ids []checkpoint.ID
	for _, ck := range t.proc.ckpts {
		if !t.owns(ck.id) && !t.passes[ck.id] {
			ids = append(ids, ck.id)
		}
	}
	if len(ids) == 0 {
		return
	}
	c.heldFor = &heldFor{proc: t.proc, ids: ids}
	c.park = &park{nr: unix.SYS_CLONE, since: time.Now()}
	s.parked[c] = true
	s.metrics.Parked()
	s.armParkTimer()
	s.debugf("hold new process %d of %d", c.tid, t.tid)
}

// inheritWindows gives a thread t makes the checkpoints t owns (or was
// let past): made inside t's rescue point, it does t's work, which a
// rollback undoes (the thread is ended), and may do what t may.
func inheritWindows(c, t *thread) {
	for _, ck := range t.proc.ckpts {
		if t.owns(ck.id) || t.passes[ck.id] {
			if c.passes == nil {
				c.passes = make(map[checkpoint.ID]bool)
			}
			c.passes[ck.id] = true
		}
	}
}

// owns reports whether checkpoint id was taken at a rescue-point entry of
// t that has not returned.
func (t *thread) owns(id checkpoint.ID) bool {
	for _, f := range t.frames {
		if f.ckpt == id {
			return true
		}
	}
	return false
}

// holdParked reports whether resume must leave t where it is: parked and
// still not allowed to go on. A parked thread allowed to go on forgets its
// park and makes its call again.
func (s *Supervisor) holdParked(t *thread) bool {
	if t.park == nil {
		return false
	}
	if t.proc.gone || s.stopping || s.mayProceed(t) {
		s.unpark(t)
		return false
	}
	return true
}

func (s *Supervisor) unpark(t *thread) {
	if t.park != nil {
		s.debugf("unpark %d (%s, %v)", t.tid, syscallName(t.park.nr), time.Since(t.park.since))
	}
	t.park = nil
	delete(s.parked, t)
	if len(s.parked) == 0 && s.parkTimer != nil && s.parkTimer.Stop() {
		s.parkTimer = nil
	}
}

// afterEvent runs after each event of the main loop: parked threads that
// may go on now are resumed.
func (s *Supervisor) afterEvent() {
	if s.parkTimerFired.Swap(false) {
		s.parkTimer = nil
	}
	if len(s.parked) > 0 {
		s.releaseParked()
	}
}

// releaseParked resumes the parked threads that may go on now, and lets
// those that waited longer than parkPatience past the checkpoints holding
// them. It runs after every event while threads are parked.
func (s *Supervisor) releaseParked() {
	for t := range s.parked {
		if s.threads[t.tid] != t || t.park == nil {
			delete(s.parked, t)
			continue
		}
		if t.running || t.queued {
			continue // on its way to its stop, or an event to handle first
		}
		if !s.mayProceed(t) && time.Since(t.park.since) >= parkPatience {
			if t.park.entry {
				s.logf("thread %d of process %d waited %v at a rescue point's entry for another thread's: let in",
					t.tid, t.proc.pid, time.Since(t.park.since).Round(time.Millisecond))
				t.admitNext = true
				s.unpark(t)
			} else {
				s.letPast(t)
			}
		}
		s.resume(t)
	}
	if len(s.parked) > 0 {
		s.armParkTimer()
	}
}

// letPast lets t make its calls despite the checkpoints it does not own,
// which note what a rollback to them can no longer take back.
func (s *Supervisor) letPast(t *thread) {
	if h := t.heldFor; h != nil {
		for _, id := range h.ids {
			if i := h.proc.ckptIndex(id); i >= 0 {
				j := h.proc.ckpts[i].journal
				j.ensure()
				j.note(fmt.Sprintf("process %d, forked by process %d, started after waiting %v for a rescue point",
					t.proc.pid, h.proc.pid, time.Since(t.park.since).Round(time.Millisecond)))
			}
		}
		t.heldFor = nil
	}
	if t.passes == nil {
		t.passes = make(map[checkpoint.ID]bool)
	}
	t.forgetPasses()
	for _, c := range t.proc.ckpts {
		if t.owns(c.id) || t.passes[c.id] {
			continue
		}
		t.passes[c.id] = true
		c.journal.ensure()
		c.journal.note(fmt.Sprintf("thread %d of process %d went ahead with %s (and its later calls) after waiting %v for another thread's rescue point",
			t.tid, t.proc.pid, syscallName(t.park.nr), time.Since(t.park.since).Round(time.Millisecond)))
	}
	s.metrics.WentAhead()
	s.logf("thread %d of process %d waited %v at %s for another thread's rescue point: let go; a rollback of it will not take that call back",
		t.tid, t.proc.pid, time.Since(t.park.since).Round(time.Millisecond), syscallName(t.park.nr))
}

// armParkTimer makes sure the main loop wakes up to apply parkPatience
// even when no tracee reports anything (the rescue point's thread waits
// for the parked one).
func (s *Supervisor) armParkTimer() {
	if s.parkTimer != nil {
		return
	}
	s.parkTimer = time.AfterFunc(parkPatience, func() {
		s.parkTimerFired.Store(true)
		s.wake()
	})
}

// forgetPasses drops the passes of checkpoints that ended.
func (t *thread) forgetPasses() {
	for id := range t.passes {
		if t.proc.ckptIndex(id) < 0 {
			delete(t.passes, id)
		}
	}
}

// outside reports whether the system call at regs has an effect outside
// t's process that a rollback could not take back, or consumes something
// it could not give back.
func (s *Supervisor) outside(t *thread, regs *arch.Regs) bool {
	a := arch.SyscallArgs(regs)
	nr := regs.Orig_rax
	switch nr {
	case unix.SYS_OPEN:
		return a[1]&(unix.O_CREAT|unix.O_TRUNC) != 0
	case unix.SYS_OPENAT:
		return a[2]&(unix.O_CREAT|unix.O_TRUNC) != 0
	case unix.SYS_KILL:
		return int(int32(a[0])) != t.proc.pid
	case unix.SYS_TGKILL, unix.SYS_RT_TGSIGQUEUEINFO:
		return int(int32(a[0])) != t.proc.pid
	case unix.SYS_TKILL:
		return !isTaskOf(t.proc.pid, int(int32(a[0])))
	case unix.SYS_WAIT4:
		return true
	case unix.SYS_WAITID:
		return a[3]&unix.WNOWAIT == 0
	}
	return outsideCalls[nr]
}

// outsideCalls are the system calls that always have an effect outside
// the process (or consume input): reads and writes of descriptors (a
// regular file's offset is journaled, but what a socket or pipe delivers
// is gone once read), socket traffic, epoll waits (edge-triggered and
// one-shot events are consumed), file system changes, IPC.
var outsideCalls = func() map[uint64]bool {
	m := map[uint64]bool{}
	for _, nr := range []uint64{
		unix.SYS_READ, unix.SYS_READV, unix.SYS_PREADV2,
		unix.SYS_WRITE, unix.SYS_WRITEV, unix.SYS_PWRITE64, unix.SYS_PWRITEV, unix.SYS_PWRITEV2,
		unix.SYS_SENDFILE, unix.SYS_SPLICE, unix.SYS_TEE, unix.SYS_VMSPLICE, unix.SYS_COPY_FILE_RANGE,
		unix.SYS_RECVFROM, unix.SYS_RECVMSG, unix.SYS_RECVMMSG,
		unix.SYS_SENDTO, unix.SYS_SENDMSG, unix.SYS_SENDMMSG,
		unix.SYS_ACCEPT, unix.SYS_ACCEPT4, unix.SYS_CONNECT, unix.SYS_SHUTDOWN, unix.SYS_BIND, unix.SYS_LISTEN,
		unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2,
		unix.SYS_CREAT, unix.SYS_UNLINK, unix.SYS_UNLINKAT, unix.SYS_RENAME, unix.SYS_RENAMEAT, unix.SYS_RENAMEAT2,
		unix.SYS_MKDIR, unix.SYS_MKDIRAT, unix.SYS_RMDIR, unix.SYS_LINK, unix.SYS_LINKAT,
		unix.SYS_SYMLINK, unix.SYS_SYMLINKAT, unix.SYS_MKNOD, unix.SYS_MKNODAT,
		unix.SYS_TRUNCATE, unix.SYS_FTRUNCATE, unix.SYS_FALLOCATE,
		unix.SYS_CHMOD, unix.SYS_FCHMOD, unix.SYS_FCHMODAT, unix.SYS_CHOWN, unix.SYS_FCHOWN,
		unix.SYS_LCHOWN, unix.SYS_FCHOWNAT, unix.SYS_UTIMENSAT,
		unix.SYS_SETXATTR, unix.SYS_LSETXATTR, unix.SYS_FSETXATTR,
		unix.SYS_REMOVEXATTR, unix.SYS_LREMOVEXATTR, unix.SYS_FREMOVEXATTR,
		unix.SYS_MSGSND, unix.SYS_MSGRCV, unix.SYS_SEMOP, unix.SYS_SEMTIMEDOP,
		unix.SYS_MQ_TIMEDSEND, unix.SYS_MQ_TIMEDRECEIVE,
		unix.SYS_IO_SUBMIT, unix.SYS_IO_URING_ENTER, unix.SYS_PROCESS_VM_WRITEV,
	} {
		m[nr] = true
	}
	return m
}()

// syscallName names the system calls the gate holds, for logs and events.
func syscallName(nr uint64) string {
	if n, ok := gateNames[nr]; ok {
		return n
	}
	return fmt.Sprintf("system call %d", nr)
}

var gateNames = map[uint64]string{
	unix.SYS_READ: "read", unix.SYS_READV: "readv", unix.SYS_PREADV2: "preadv2",
	unix.SYS_WRITE: "write", unix.SYS_WRITEV: "writev", unix.SYS_PWRITE64: "pwrite64",
	unix.SYS_PWRITEV: "pwritev", unix.SYS_PWRITEV2: "pwritev2", unix.SYS_SENDFILE: "sendfile",
	unix.SYS_SPLICE: "splice", unix.SYS_RECVFROM: "recvfrom", unix.SYS_RECVMSG: "recvmsg",
	unix.SYS_RECVMMSG: "recvmmsg", unix.SYS_SENDTO: "sendto", unix.SYS_SENDMSG: "sendmsg",
	unix.SYS_SENDMMSG: "sendmmsg", unix.SYS_ACCEPT: "accept", unix.SYS_ACCEPT4: "accept4",
	unix.SYS_CONNECT: "connect", unix.SYS_SHUTDOWN: "shutdown",
	unix.SYS_EPOLL_WAIT: "epoll_wait", unix.SYS_EPOLL_PWAIT: "epoll_pwait", unix.SYS_EPOLL_PWAIT2: "epoll_pwait2",
	unix.SYS_CLONE: "clone", unix.SYS_CLONE3: "clone3", unix.SYS_FORK: "fork", unix.SYS_VFORK: "vfork",
	unix.SYS_WAIT4: "wait4", unix.SYS_WAITID: "waitid", unix.SYS_KILL: "kill", unix.SYS_TGKILL: "tgkill",
	unix.SYS_OPENAT: "openat", unix.SYS_OPEN: "open", unix.SYS_UNLINK: "unlink", unix.SYS_RENAME: "rename",
	unix.SYS_FTRUNCATE: "ftruncate",
}
