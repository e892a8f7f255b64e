package supervisor

import (
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/locks"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
	"github.com/assure-rt/assure/recovery/unwind"
)

// Surviving the first fault (manifest heal.firstFault "return"): a fault
// outside every rescue point, with a healing candidate on the faulting
// thread's stack, makes the candidate return its error value from its
// frame. There was no checkpoint at its entry, so nothing is rolled back:
// the registers its caller may rely on (rsp, rip and the callee-saved
// ones) come from the unwind tables, the result register gets the error
// value, and memory stays as the fault left it. That is only safe where
// what the candidate did before the fault is harmless to keep; the one
// harm that would surely follow, a lock the thread took and will never
// release, is looked for (recovery/locks) and refuses the return, unless
// the thread held it already at its latest clone or fork outside every
// candidate (noteLockBase). The
// candidate is armed as a rescue point in any case (learned), so from
// the next call on its faults are rolled back properly.

// survive makes l's candidate return from its frame on thread t, stopped
// at the delivery of fault sig, and emits the recovered event. It returns
// why not when it cannot ("" when the manifest does not ask for it).
func (s *Supervisor) survive(t *thread, l *learned, sig unix.Signal, si ptrace.Siginfo) (string, bool) {
	if !s.survives() || !s.cfg.Manifest.WantsSignal(sig) || s.cfg.Manifest.MaxRecoveries == 0 {
		return "", false
	}
	start := time.Now()
	caller, why := callerFrame(l.frames, l.at)
	if why != "" {
		return why, false
	}
	if why := s.heldLocks(t); why != "" {
		return why, false
	}
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return fmt.Sprintf("registers: %v", err), false
	}
	returnTo(&regs, caller, l.rp.Return)
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return fmt.Sprintf("set registers: %v", err), false
	}
	elapsed := time.Since(start)
	e := events.Event{Type: events.Recovered, Pid: t.proc.pid, Tid: t.tid, RescuePoint: l.e.RescuePoint,
		Return: l.rp.Return, Recovery: events.RecoveryReturn, RecoveryMicros: max(1, elapsed.Microseconds()),
		Stack: l.e.Stack, Message: "what it did before the fault stays"}
	describeSignal(&e, sig, si)
	s.cfg.Events.Emit(e)
	return "", true
}

// callerFrame returns the frame the candidate at frames[at] returns to,
// or why returning there is not safe.
func callerFrame(frames []unwind.Frame, at int) (*unwind.Frame, string) {
	if at+1 >= len(frames) {
		return nil, "the candidate's caller is not known (the stack walk stopped)"
	}
	for _, f := range frames[:at+2] {
		switch {
		case f.Signal:
			return nil, "a signal handler runs between the candidate and the fault"
		case f.Guessed:
			return nil, "the stack walk guessed a frame (no unwind information)"
		}
	}
	caller := &frames[at+1]
	if !caller.Known(unwind.RIP) || !caller.Known(unwind.RSP) {
		return nil, "the unwind tables do not give the caller's rip and rsp"
	}
	return caller, ""
}

// returnTo sets regs as they are just after the candidate returned to
// caller with ret (nil: void): the callee-saved registers the unwind
// tables recovered, the others as they were at the fault (the ABI lets a
// function clobber them).
func returnTo(regs *arch.Regs, caller *unwind.Frame, ret *int64) {
	c := caller.Regs
	regs.Rip, regs.Rsp = c.Rip, c.Rsp
	for _, r := range []struct {
		reg unwind.Reg
		dst *uint64
		src uint64
	}{
		{unwind.RBX, &regs.Rbx, c.Rbx}, {unwind.RBP, &regs.Rbp, c.Rbp},
		{unwind.R12, &regs.R12, c.R12}, {unwind.R13, &regs.R13, c.R13},
		{unwind.R14, &regs.R14, c.R14}, {unwind.R15, &regs.R15, c.R15},
	} {
		if caller.Known(r.reg) {
			*r.dst = r.src
		}
	}
	if ret != nil {
		regs.Rax = uint64(*ret)
	}
	// Not in a system call: nothing for the kernel to restart.
	regs.Orig_rax = ^uint64(0)
}

// survives: the manifest asks first faults to be survived.
func (s *Supervisor) survives() bool {
	heal := s.cfg.Manifest.Heal
	return heal != nil && heal.FirstFault == manifest.FirstFaultReturn
}

// heldLocks says which lock t holds that it did not hold at its latest
// clone or fork outside every candidate, "" for none: the candidate would
// return with it held, and the next thread to want it would wait
// forever. A lock held at such a point is one the thread holds across
// its work (redis's module GIL, taken at start-up, before the threads are
// made, and never released): the candidate's caller holds it too.
func (s *Supervisor) heldLocks(t *thread) string {
	held, err := heldBy(t)
	if err != nil {
		return fmt.Sprintf("the locks it holds cannot be known: %v", err)
	}
	for _, h := range held {
		if !slices.Contains(t.lockBase, h) {
			return fmt.Sprintf("the thread holds a %s lock at %#x", h.Kind, h.Addr)
		}
	}
	return ""
}

// maxLockSamples bounds the scans noteLockBase makes per thread: a
// scan costs milliseconds, and a server that starts a thread per
// connection clones all the time.
const maxLockSamples = 4

// noteLockBase notes the locks t holds now, stopped at a clone or fork,
// when no candidate is on its stack: the base heldLocks allows.
func (s *Supervisor) noteLockBase(t *thread) {
	if !s.survives() || t.lockSamples >= maxLockSamples {
		return
	}
	t.lockSamples++
	maps, err := procfs.Maps(t.proc.pid)
	if err != nil {
		return
	}
	for _, f := range s.unwindFrames(t, maps) {
		pc := f.PC
		if f.Return {
			pc--
		}
		if _, _, ok := s.candidateAt(t.proc, maps, s.cfg.Manifest.Heal, pc); ok {
			return // inside a candidate: what it holds may be its own
		}
	}
	if held, err := heldBy(t); err == nil {
		t.lockBase = held
	}
}

// heldBy lists the glibc locks t holds (recovery/locks), t stopped.
func heldBy(t *thread) ([]locks.Held, error) {
	nsTid := t.tid
	if st, err := procfs.ReadStatus(t.tid); err == nil && len(st.NSpid) > 0 {
		nsTid = st.NSpid[len(st.NSpid)-1]
	}
	var regs arch.Regs
	opts := locks.Options{Exclude: ownMappings(t.proc)}
	if err := ptrace.GetRegs(t.tid, &regs); err == nil {
		opts.FSBase = regs.Fs_base
	}
	return locks.HeldBy(t.proc.pid, nsTid, opts)
}

// ownMappings are the supervisor's mappings in p (the fast path's control
// block and shadow, its own or the one a forked child still has of its
// parent's): the shadow holds copies of the program's memory, locks
// among them.
func ownMappings(p *process) []locks.Range {
	var out []locks.Range
	for _, fs := range []*fastState{p.fast, p.forkedFrom} {
		if fs == nil {
			continue
		}
		out = append(out, locks.Range{Start: fs.ctlAddr, End: fs.ctlAddr + patch.CtlSize},
			locks.Range{Start: fs.shadowRs, End: fs.shadowRs + checkpoint.ShadowSize + 2*pageSize})
	}
	return out
}
