package supervisor

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// dispatch handles one wait status from the main loop.
func (s *Supervisor) dispatch(tid int, ws unix.WaitStatus) {
	t := s.threads[tid]
	if t != nil {
		t.queued = false
		t.running = false
	}
	if ws.Exited() || ws.Signaled() {
		s.onExit(tid, ws)
		return
	}
	if !ws.Stopped() {
		return
	}
	if t == nil {
		s.onUnknownStop(tid, ws)
		return
	}
	sig := ws.StopSignal()
	switch ev := ptrace.Event(ws); ev {
	case ptrace.EventStop:
		switch {
		case t.awaitInitial:
			t.awaitInitial = false
			s.firstStop(t)
		case isStopSignal(sig) && !t.interrupting:
			t.groupStop = true // job control: stay stopped, keep tracing
		default:
			t.interrupting = false
			t.groupStop = false
		}
		s.resume(t)
	case ptrace.EventClone, ptrace.EventFork, ptrace.EventVfork:
		s.noteLockBase(t)
		for _, c := range s.onClone(t, ev) {
			if !c.awaitInitial {
				s.resume(c)
			}
		}
		s.resume(t)
	case ptrace.EventExec:
		s.onExec(t)
	case 0:
		if sig == ptrace.SyscallStop {
			s.onSyscallStop(t)
			return
		}
		s.onSignal(t, sig)
	default:
		s.resume(t)
	}
}

// onSignal handles a signal-delivery-stop.
func (s *Supervisor) onSignal(t *thread, sig unix.Signal) {
	t.groupStop = false
	if bit := uint64(1) << (sig - 1); t.staleSigs&bit != 0 {
		// From execution a rollback undid: swallowed, unless it is one
		// of our own traps (the thread may have re-trapped since).
		t.staleSigs &^= bit
		if sig != unix.SIGTRAP || !s.ourTrap(t) {
			s.resume(t)
			return
		}
	}
	switch {
	case sig == unix.SIGTRAP && s.onTrap(t):
		return
	case sig == unix.SIGSYS && t.proc.fast != nil && isDispatch(t):
		s.onWindowSyscall(t)
		return
	case sig == unix.SIGCHLD && s.swallowChld(t):
		s.resume(t)
		return
	case isFault(sig):
		s.onFault(t, sig)
		return
	}
	s.noteDelivery(t, sig)
	t.deliver = sig
	s.resume(t)
}

// isDispatch reports whether t stopped for a SIGSYS of syscall user
// dispatch (a system call in an in-process checkpoint window).
func isDispatch(t *thread) bool {
	si, err := ptrace.GetSiginfo(t.tid)
	return err == nil && si.Code == siSysUserDispatch
}

func isFault(sig unix.Signal) bool {
	switch sig {
	case unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT, unix.SIGTRAP, unix.SIGSYS:
		return true
	}
	return false
}

// ourTrap reports whether t stopped at one of our breakpoints or the
// trampoline.
func (s *Supervisor) ourTrap(t *thread) bool {
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil {
		return false
	}
	p := t.proc
	pc := arch.TrapPC(&regs)
	return p.ourTrap(pc)
}

// swallowChld drops the SIGCHLD of a child that a rollback killed: the
// rolled-back parent never made that child.
func (s *Supervisor) swallowChld(t *thread) bool {
	si, err := ptrace.GetSiginfo(t.tid)
	if err != nil {
		return false
	}
	// si_pid is the child's pid in the parent's PID namespace.
	for pid := range t.proc.expectChld {
		if int(si.Pid) == pid || nsPidOf(pid) == int(si.Pid) {
			delete(t.proc.expectChld, pid)
			return true
		}
	}
	return false
}

// onExit handles the end of a thread or process.
func (s *Supervisor) onExit(tid int, ws unix.WaitStatus) {
	if tid == s.root {
		s.rootWS = ws
		s.rootDone = true
	}
	delete(s.orphans, tid)
	t := s.threads[tid]
	if t == nil {
		if p := s.procs[tid]; p != nil {
			s.dropProcess(p)
		}
		return
	}
	p := t.proc
	s.removeThread(t)
	// The leader's exit is reported once the whole group is gone.
	// A leader let go to die of a fault is no longer reported to us
	// (unless we are its parent).
	if tid == p.pid || len(p.threads) == 0 && (!procAlive(p.pid) || p.refaulted && p.pid != s.root) {
		s.dropProcess(p)
	}
}

func procAlive(pid int) bool { return unix.Kill(pid, 0) == nil }

// nsPidOf returns the pid of a process (a zombie too) in its own PID
// namespace, or 0.
func nsPidOf(pid int) int {
	st, err := procfs.ReadStatus(pid)
	if err != nil || len(st.NSpid) == 0 {
		return 0
	}
	return st.NSpid[len(st.NSpid)-1]
}

// onUnknownStop handles a stop of a thread not yet known: the first stop
// of a new task, which can arrive before its creator's clone event.
func (s *Supervisor) onUnknownStop(tid int, ws unix.WaitStatus) {
	st, err := procfs.ReadStatus(tid)
	if err == nil {
		if p := s.procs[st.Tgid]; p != nil && st.Tgid != tid {
			t := s.addThread(p, tid)
			// Before the thread runs: its creator is still in the kernel,
			// on its way to the clone event stop, and the injected code
			// must not take a checkpoint of one thread for a process
			// that has two.
			s.fastToMT(p)
			s.dispatch(t.tid, ws)
			return
		}
	}
	s.orphans[tid] = ws
}

// onClone registers what a clone, fork or vfork made. The new task
// starts in a ptrace-stop of its own, which may already have arrived.
func (s *Supervisor) onClone(t *thread, ev int) []*thread {
	msg, err := ptrace.EventMsg(t.tid)
	if err != nil {
		return nil
	}
	child := int(msg)
	if c := s.threads[child]; c != nil {
		// Its first stop came first (onUnknownStop): only the address of
		// its tid is still to learn.
		if c.clearTid == 0 && c.proc == t.proc {
			c.clearTid = cloneChildTid(t)
		}
		if c.proc == t.proc {
			inheritWindows(c, t)
		}
		return nil
	}
	p := t.proc
	var c *thread
	if ev == ptrace.EventClone && isTaskOf(p.pid, child) {
		c = s.addThread(p, child)
		c.clearTid = cloneChildTid(t)
		inheritWindows(c, t)
		s.fastToMT(p)
	} else {
		np, err := s.newProcess(child, p.pid)
		if err != nil {
			s.logf("new process %d: %v", child, err)
			return nil
		}
		s.inherit(np, p, ev == ptrace.EventVfork)
		c = s.addThread(np, child)
		c.frames = inheritedFrames(t.frames)
		if ev != ptrace.EventVfork {
			s.holdChild(c, t) // (a vfork parent waits in the kernel for its child)
		}
	}
	if _, ok := s.orphans[child]; ok {
		// Its first stop came before this event.
		delete(s.orphans, child)
		s.firstStop(c)
	} else {
		c.awaitInitial = true
	}
	return []*thread{c}
}

// cloneChildTid reads the CLONE_CHILD_CLEARTID address from the clone
// call a thread is stopped in (clone3's struct clone_args, or clone's
// fourth argument), so that a rollback can bring the thread back.
func cloneChildTid(t *thread) uint64 {
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil {
		return 0
	}
	switch regs.Orig_rax {
	case unix.SYS_CLONE3:
		if flags, err := t.proc.readWord(regs.Rdi); err != nil || flags&unix.CLONE_CHILD_CLEARTID == 0 {
			return 0
		}
		a, _ := t.proc.readWord(regs.Rdi + 16)
		return a
	case unix.SYS_CLONE:
		if regs.Rdi&unix.CLONE_CHILD_CLEARTID != 0 {
			return regs.R10
		}
	}
	return 0
}

// isTaskOf reports whether tid is a thread of process pid. (A clone
// without CLONE_THREAD is a new process and reports the same event.)
func isTaskOf(pid, tid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", pid, tid))
	return err == nil
}

// inherit gives a forked process what its parent's memory held: the
// breakpoints, the injected page, the forking thread's active rescue
// points (without checkpoints: the child never had one).
func (s *Supervisor) inherit(np, p *process, vfork bool) {
	np.sharedMM = vfork || p.sharedMM
	np.preExec = p.preExec
	np.entryDone = p.entryDone
	np.scratch = p.scratch
	np.modules = p.modules
	if p.fast != nil && !np.sharedMM {
		np.forkedFrom = p.fast
	}
	for a, bp := range p.breakpoints {
		np.breakpoints[a] = bp
	}
	for a, orig := range p.retired {
		np.retire(a, orig)
	}
	for rp, a := range p.resolved {
		np.resolved[rp] = a
		np.resolvedIn[rp] = p.resolvedIn[rp]
	}
}

func inheritedFrames(fs []frame) []frame {
	out := make([]frame, len(fs))
	for i, f := range fs {
		f.ckpt = 0
		out[i] = f
	}
	return out
}

// onExec resets a process whose image was replaced. The kernel reports
// the exec with the leader's tid; the thread that called execve took it
// over and every other thread is gone.
func (s *Supervisor) onExec(t *thread) {
	p := t.proc
	for _, o := range p.threads {
		delete(s.threads, o.tid)
	}
	p.threads = make(map[int]*thread)
	if p.tracker != nil {
		p.tracker.Close()
		p.tracker = nil
	}
	p.noTrack = nil
	p.views.close()
	p.views = nil
	p.dropCkpts()
	p.breakpoints = make(map[uint64]*breakpoint)
	p.retired = nil
	p.resolved = make(map[*rescuePoint]uint64)
	p.resolvedIn = make(map[*rescuePoint]string)
	p.modules = newModuleCache()
	p.probeRanges, p.unwindMods = nil, nil
	p.scratch = 0
	p.sharedMM = false
	p.preExec = false
	p.entryDone = false
	p.brkKnown = false
	s.releaseFast(p)
	p.fast, p.noFast, p.forkedFrom = nil, nil, nil
	p.mem.Close()
	if mem, err := openMem(p.pid); err == nil {
		p.mem = mem
	} else {
		s.logf("exec of %d: %v", p.pid, err)
	}
	nt := s.addThread(p, p.pid)
	// No system call can be injected at an exec stop (the kernel sets
	// rax when execve returns): entries get breakpoints now, patches at
	// the program entry.
	p.atExecStop = true
	if err := s.resolve(p, true); err != nil {
		s.emitError(p.pid, err)
	}
	p.atExecStop = false
	s.resume(nt)
}

// onTrap handles SIGTRAP; it reports false when the trap is not ours and
// must reach the program.
func (s *Supervisor) onTrap(t *thread) bool {
	si, err := ptrace.GetSiginfo(t.tid)
	if err != nil || si.Code != ptrace.SIKernel {
		s.debugf("trap of %d: code %d err %v", t.tid, si.Code, err)
		return false
	}
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return false
	}
	p := t.proc
	pc := arch.TrapPC(&regs)
	if s.onFastTrap(t, pc, &regs) {
		return true
	}
	if bp := p.breakpoints[pc]; bp != nil {
		regs.Rip = pc
		switch bp.kind {
		case bpRescue:
			s.enterRescue(t, bp, &regs)
		case bpEntry:
			s.onEntry(t, bp, &regs)
		case bpProbe, bpInject:
			s.onHook(t, bp, &regs)
		case bpLoader:
			if err := s.resolve(p, false); err != nil {
				s.emitError(p.pid, err)
			}
			s.afterLoad(p)
			s.stepOver(t, bp, &regs)
			s.resume(t)
		}
		return true
	}
	if p.isTrampoline(pc) {
		s.onReturn(t, &regs)
		return true
	}

	if s.staleTrap(t, pc, &regs) {
		return true
	}
	s.debugf("trap of %d at %#x is not ours (code page %#x, %d frames)", t.tid, pc, p.scratch, len(t.frames))
	return false
}

// staleTrap handles the trap of an entry disarmed after the thread took
// it (its stop was queued while the disarm held every thread): the thread
// runs the call unprotected, as if it had come a moment later — at the
// instruction the breakpoint displaced, or past a patched entry's trap.
func (s *Supervisor) staleTrap(t *thread, pc uint64, regs *arch.Regs) bool {
	p := t.proc
	if fs := p.fast; fs != nil && fs.oldTraps[pc] {
		s.debugf("trap of %d at the disarmed entry stub %#x: runs on", t.tid, pc)
		s.resume(t) // rip is past the int3: the relocated entry
		return true
	}
	orig, ok := p.retired[pc]
	if !ok {
		return false
	}
	if b, err := p.readMem(pc, 1); err != nil || b[0] != orig[0] {
		return false // an int3 of the program's own is there now
	}
	regs.Rip = pc
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		return false
	}
	s.debugf("trap of %d at the disarmed entry %#x: runs on", t.tid, pc)
	s.resume(t)
	return true
}
