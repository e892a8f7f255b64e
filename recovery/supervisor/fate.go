package supervisor

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// A fault signal assure does not recover goes on to the program as if no
// tracer were there. What the kernel then does depends on the signal's
// disposition and on whether the process is the init of its PID
// namespace (SIGNAL_UNKILLABLE: such an init gets no default action for
// a signal sent to it, but dies of a fault).

// fate is what the kernel does with a signal delivered to a thread.
type fate int

const (
	fateFatal   fate = iota // default action: the process ends (with a core dump)
	fateHandled             // the program's handler runs
	fateIgnored             // dropped: the thread runs on
)

// nsIdentity returns p's pid in its own PID namespace (what getpid()
// returns there, and the si_pid of the signals it sends itself) and
// whether p is that namespace's init.
func (p *process) nsIdentity() (int, bool) {
	if p.nsPid == 0 {
		p.nsPid = p.pid
		if st, err := procfs.ReadStatus(p.pid); err == nil && len(st.NSpid) > 0 {
			p.nsPid = st.NSpid[len(st.NSpid)-1]
		}
	}
	return p.nsPid, p.nsPid == 1
}

// selfSent reports whether a signal was sent by the process that receives
// it (abort, raise, assert, __stack_chk_fail, pthread_kill of its own
// thread). si_pid is the sender's pid as the receiver's namespace sees it,
// so it is compared with the receiver's pid there, not on the host.
func selfSent(p *process, si ptrace.Siginfo) bool {
	if !si.Sent() {
		return false
	}
	pid, _ := p.nsIdentity()
	return int(si.Pid) == pid
}

// fateOf tells what the kernel does with sig, raised as si describes, in
// thread t once the tracer lets it through.
func fateOf(t *thread, sig unix.Signal, si ptrace.Siginfo) fate {
	st, err := procfs.ReadStatus(t.tid)
	if err != nil {
		return fateFatal
	}
	bit := uint64(1) << (sig - 1)
	caught, blocked := st.SigCgt&bit != 0, st.SigBlk&bit != 0
	if si.FromKernel() {
		// force_sig_fault resets a blocked or ignored fault signal to
		// its default action.
		if caught && !blocked {
			return fateHandled
		}
		return fateFatal
	}
	switch _, init := t.proc.nsIdentity(); {
	case caught:
		return fateHandled
	case st.SigIgn&bit != 0, init:
		return fateIgnored
	}
	return fateFatal
}

// passOn delivers a fault signal assure does not recover, as the kernel
// would without a tracer; report says whether a crash event tells why.
func (s *Supervisor) passOn(t *thread, sig unix.Signal, si ptrace.Siginfo, why string, report bool) {
	var l *learned
	// What a crash taught is armed once the thread is on its way: arming
	// holds and resumes every thread, and must not resume this one
	// before its signal is set.
	defer func() { s.armLearned(l) }()
	switch fateOf(t, sig, si) {
	case fateIgnored:
		// Nothing ends and nothing runs: no crash to report.
		s.debugf("%s to %d: ignored by the kernel (%s)", manifest.SignalName(sig), t.tid, why)
	case fateHandled:
		if report {
			// The program's handler is what runs when assure does not
			// recover, as at a rescue point.
			var survived bool
			if l, survived = s.crashOrSurvive(t, sig, si, why+"; passed on to the program's handler", true); survived {
				t.deliver = 0
				s.resume(t)
				return
			}
		}
	case fateFatal:
		if report {
			var survived bool
			if l, survived = s.crashOrSurvive(t, sig, si, why, true); survived {
				t.deliver = 0
				s.resume(t)
				return
			}
			if l != nil {
				// Arming it would wait for it to end, while the learned
				// event is owed at once: a container's shim stops this
				// supervisor as soon as its task is gone.
				l.ending = true
			}
		}
		if _, init := t.proc.nsIdentity(); init && si.FromKernel() {
			s.refault(t, sig, si)
			return
		}
	}
	t.deliver = sig
	s.resume(t)
}

// refault ends a PID namespace's init by a fault, as without assure. For
// a traced task the kernel does not clear SIGNAL_UNKILLABLE when it forces
// a fault signal ("Don't clear SIGNAL_UNKILLABLE for traced tasks",
// kernel/signal.c force_sig_info_to_task), so the signal we would pass on
// is dropped and the instruction faults again, forever. Detached, the
// thread runs the faulting instruction again untraced and the kernel's
// own forced-signal path ends the process: same signal, status and core
// dump. The process's other threads stay traced until the kernel kills
// them; their exits end its record.
func (s *Supervisor) refault(t *thread, sig unix.Signal, si ptrace.Siginfo) {
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err == nil && rewindTrapLike(t.proc, sig, si, &regs) {
		ptrace.SetRegs(t.tid, &regs)
	}
	if err := ptrace.Detach(t.tid, 0); err != nil {
		s.logf("detach %d to let its fault end it: %v", t.tid, err)
	}
	p := t.proc
	s.removeThread(t)
	p.refaulted = true
	if len(p.threads) == 0 && p.pid != s.root {
		s.dropProcess(p)
	}
}

// rewindTrapLike sets a thread stopped by a trap-type signal (reported
// after the instruction: int3, a seccomp SECCOMP_RET_TRAP) back to the
// instruction, so that running again raises it again. A fault proper
// (page fault, divide error, ud2) is reported at the instruction already.
func rewindTrapLike(p *process, sig unix.Signal, si ptrace.Siginfo, regs *arch.Regs) bool {
	switch {
	case sig == unix.SIGTRAP && si.Code == ptrace.SIKernel:
		pc := arch.TrapPC(regs)
		b, err := p.readMem(pc, len(arch.Breakpoint))
		if err != nil || b[0] != arch.Breakpoint[0] {
			return false
		}
		regs.Rip = pc
		return true
	case sig == unix.SIGSYS && arch.InSyscall(regs):
		arch.RestartSyscall(regs)
		return true
	}
	return false
}

// describeSignal fills in how a signal came: the fault address for a
// fault that has one, the code, and the sender of a sent signal.
func describeSignal(e *events.Event, sig unix.Signal, si ptrace.Siginfo) {
	e.Signal = manifest.SignalName(sig)
	e.SignalCode = si.CodeName()
	if si.HasAddr() {
		e.FaultAddress = fmt.Sprintf("%#x", si.Addr)
	}
	if si.Sent() {
		e.SenderPid = int(si.Pid)
	}
}
