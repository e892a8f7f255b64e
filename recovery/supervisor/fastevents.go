package supervisor

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// siSysUserDispatch is the si_code of the SIGSYS syscall user dispatch
// raises.
const siSysUserDispatch = 2

// onFastTrap handles a SIGTRAP at one of the fast path's own traps; it
// reports false for anything else.
func (s *Supervisor) onFastTrap(t *thread, pc uint64, regs *arch.Regs) bool {
	fs := t.proc.fast
	if fs == nil {
		return false
	}
	if site := fs.traps[pc]; site != nil {
		s.enterPatched(t, site, regs)
		return true
	}
	if fs.code != nil && pc >= fs.code.Return && pc < fs.code.Return+64 {
		s.emitError(t.proc.pid, fmt.Errorf("thread %d returned through the fast path's trampoline with no frame active", t.tid))
		t.deliver = unix.SIGSEGV
		s.resume(t)
		return true
	}
	return false
}

// isFastTrap reports whether pc is one of the fast path's traps.
func (p *process) isFastTrap(pc uint64) bool {
	fs := p.fast
	return fs != nil && fs.traps[pc] != nil
}

// enterPatched is the supervisor's entry of a patched rescue point (the
// injected code sent it here: fast path off, nested call, a shadow to
// rebuild). As enterRescue, then the thread continues at the relocated
// first instructions.
func (s *Supervisor) enterPatched(t *thread, site *patchSite, regs *arch.Regs) {
	p := t.proc
	fs := p.fast
	s.debugf("patched entry of %s in %d: flags %#x ready %v ext %d active %v", site.rp, t.tid, fs.ctl.Flags(), fs.isReady(), fs.extID, fs.ctl.Frame().Active)
	s.waitCopy(p)
	s.syncFastFrame(p)
	const resync = patch.FlagBroken | patch.FlagStale | patch.FlagLayout
	if fl := fs.ctl.Flags(); fl&resync != 0 && fs.isReady() && fs.extID == 0 && !fs.ctl.Frame().Active {
		if fl&patch.FlagBroken != 0 {
			s.rebuildShadow(p)
		} else {
			s.retrackRanges(p)
		}
		// The injected code takes this entry again (and counts it again).
		if fs.ctl.Flags()&resync == 0 {
			fs.ctl.UncountCall(site.k)
			regs.Rip = site.stub
			if err := ptrace.SetRegs(t.tid, regs); err == nil {
				s.resume(t)
				return
			}
		}
	}
	regs.Rip = site.addr
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		s.logf("rescue entry in %d: %v", t.tid, err)
		return
	}
	if !fs.isReady() {
		// The shadow is still being filled: the call runs unprotected.
		s.continueAt(t, regs, site.back)
		return
	}
	if fs.ctl.Flags()&patch.FlagMT != 0 && fs.ctl.Flags()&patch.FlagFast != 0 && fs.ctl.Owner() != 0 && regs.Fs_base != fs.ctl.Owner() {
		// A second thread takes checkpoints: every thread of the process
		// is checkpointed at once from now on, by the supervisor.
		s.logOnce(fmt.Sprintf("mt-%d", p.pid), "process %d: more than one thread enters rescue points: checkpoints go through the supervisor", p.pid)
		s.fastToSlow(p)
	}
	s.syncFastFrame(p)
	if s.admit(t) {
		return // at the patched entry again when resumed
	}
	procs := s.stopThreads(s.scopeOf(site.rp, p), site.rp.Scope == manifest.ScopeContainer)
	start := time.Now()
	id, err := s.checkpoint(procs, t, &breakpoint{addr: site.addr, kind: bpRescue, rp: site.rp})
	if err == nil {
		s.metrics.Checkpointed(site.rp.site(), time.Since(start))
		err = s.divertReturn(t, site.rp, id, regs)
	}
	if err != nil {
		if !isGone(err) && err != checkpoint.ErrNotReady {
			s.emitError(p.pid, fmt.Errorf("checkpoint at %s: %w", site.rp, err))
		}
		if id != 0 {
			s.commit(id)
		}
	}
	s.continueAt(t, regs, site.back)
	s.resumeThreads(procs)
}

func (s *Supervisor) continueAt(t *thread, regs *arch.Regs, pc uint64) {
	regs.Rip = pc
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		s.logf("continue %d at %#x: %v", t.tid, pc, err)
	}
	s.resume(t)
}

// syncFastFrame tells the checkpoint engine about the in-process frame:
// taken (an external checkpoint of its own ID) or ended since.
func (s *Supervisor) syncFastFrame(p *process) {
	fs := p.fast
	if fs == nil || !fs.isReady() {
		return
	}
	f := fs.ctl.Frame()
	if fs.extID != 0 && (!f.Active || f.Generation != fs.extGen) {
		fs.mirror.SetExternal(fs.extID, false)
		fs.extID = 0
	}
	if f.Active && fs.extID == 0 {
		s.nextID++
		fs.extID, fs.extGen = s.nextID, f.Generation
		fs.mirror.SetExternal(fs.extID, true)
	}
	if fs.snap != nil && (!f.Active || fs.snapGen != f.Generation) {
		fs.dropSnap()
	}
}

// windowOpen reports whether a thread is inside a patched rescue point.
func (fs *fastState) windowOpen() bool { return fs.isReady() && fs.ctl.Frame().Active }

// adoptSnap makes c the recorded kernel state of the open window.
func (fs *fastState) adoptSnap(c *procCheckpoint) {
	fs.snap, fs.snapGen = c, fs.ctl.Frame().Generation
}

// dropSnap forgets the recorded kernel state and what its journal holds.
func (fs *fastState) dropSnap() {
	if fs.snap != nil {
		fs.snap.journal.release()
		fs.snap = nil
	}
}

// onWindowSyscall handles the SIGSYS of the first system call in an
// in-process checkpoint window: the kernel state (mappings, descriptors,
// program break, threads) is as it was at the window's entry; it is
// recorded for the rollback, and from now on the process's system calls
// stop at their entry for the journal (as in a checkpoint of the
// supervisor's) until the window ends. The call then runs again.
func (s *Supervisor) onWindowSyscall(t *thread) {
	p := t.proc
	fs := p.fast
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		s.resume(t)
		return
	}
	fs.ctl.SetSelector(false)
	s.syncFastFrame(p)
	var stopped []*process
	if f := fs.ctl.Frame(); f.Active && fs.snap == nil {
		all := true
		if len(p.threads) > 1 {
			// The others are stopped before anything wakes them: if none
			// ran in the window so far, their state now is theirs at its
			// entry, and the window becomes a checkpoint of all threads.
			stopped = s.stopThreads([]*process{p}, false)
			_, ran := s.othersRan(p, t, nil)
			all = !ran
		}
		snap, err := s.kernelState(p, t, all)
		if err != nil {
			s.emitError(p.pid, fmt.Errorf("record the state of %d for its rescue point: %w", p.pid, err))
		} else {
			fs.snap, fs.snapGen, fs.snapAll = snap, f.Generation, all
		}
	}
	// Run the call again, natively: the dispatch left its number in rax.
	regs.Rip -= uint64(len(arch.SyscallInsn) - 1)
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		s.logf("system call of %d: %v", t.tid, err)
	}
	t.deliver = 0
	s.resumeThreads(stopped)
	s.resume(t)
}

// kernelState records what a rollback restores besides memory and the
// faulting thread's registers: mappings, descriptors, the program break,
// the threads and processes that exist (later ones are ended). With all,
// every thread's registers are taken (all are stopped); else only th's:
// a rollback then happens only if the others did not run, and takes
// their registers as they are then (captureIdle).
func (s *Supervisor) kernelState(p *process, th *thread, all bool) (*procCheckpoint, error) {
	if p.views == nil {
		v, err := openViews(p.pid)
		if err != nil {
			return nil, err
		}
		p.views = v
	}
	c := &procCheckpoint{seq: s.seq, threads: make(map[int]*threadState, len(p.threads)), journal: newJournal()}
	for _, t := range p.threads {
		c.threads[t.tid] = nil
		if t == th || all {
			st, err := captureThread(t)
			if err != nil {
				return nil, err
			}
			c.threads[t.tid] = st
		}
	}
	var err error
	if c.maps, err = p.views.maps.Maps(); err != nil {
		return nil, err
	}
	if c.fds, err = p.views.fds.FDs(); err != nil {
		return nil, err
	}
	if c.brk, err = s.programBreak(p, th, c.maps); err != nil {
		return nil, err
	}
	return c, nil
}

// fastFrameOf returns the rescue point of the in-process frame active in
// t, if any.
func (s *Supervisor) fastFrameOf(t *thread) (*rescuePoint, patch.Frame, bool) {
	fs := t.proc.fast
	if fs == nil {
		return nil, patch.Frame{}, false
	}
	f := fs.ctl.Frame()
	if !f.Active || f.RP < 0 || f.RP >= len(s.rps) || fs.orphanGen != 0 && f.Generation == fs.orphanGen {
		return nil, f, false
	}
	// The frame belongs to the thread whose stack holds its slot (with
	// other threads: the owner).
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil || regs.Rsp > f.Slot {
		return nil, f, false
	}
	if fs.ctl.Flags()&patch.FlagMT != 0 && regs.Fs_base != fs.ctl.Owner() {
		return nil, f, false
	}
	return s.rps[f.RP], f, true
}

// recoverFast rolls t back to the in-process checkpoint and makes the
// rescue point return its error value.
func (s *Supervisor) recoverFast(t *thread, sig unix.Signal, si ptrace.Siginfo, rp *rescuePoint, f patch.Frame) error {
	start := time.Now()
	p := t.proc
	fs := p.fast
	if !fs.isReady() {
		return fmt.Errorf("the shadow of %d is not ready", p.pid)
	}
	stopped := s.stopThreads([]*process{p}, false)
	s.syncFastFrame(p)
	if fs.extID == 0 {
		s.resumeThreads(stopped)
		return fmt.Errorf("no checkpoint for the frame of %s", rp)
	}
	if fs.snap != nil && fs.snapAll {
		// Every thread's state at the window's entry is known.
	} else if why, ran := s.othersRan(p, t, fs.snap); ran {
		s.resumeThreads(stopped)
		return fmt.Errorf("%s during the rescue point's window: rolling back its memory could undo that work", why)
	}
	unguard := s.guardRollback(stopped, p.pid, fs.extID)
	fault, _ := ptrace.GetSiginfoRaw(t.tid) // injected calls in t overwrite it
	pages, threads := 0, 1
	var failed []string
	changed := false
	err := func() error {
		rollbackMemory := func() (int, error) {
			st, err := fs.mirror.Rollback(fs.extID, false)
			return st.Pages, err
		}
		if c := fs.snap; c != nil {
			// System calls ran in the window: their kernel state too.
			if err := captureIdle(p, c); err != nil {
				return err
			}
			r := newRollback(s, p, c, c.journal)
			defer r.done()
			changed = true
			var err error
			if pages, threads, err = r.run(t, rollbackMemory); err != nil {
				return err
			}
			failed = r.failed
		} else {
			changed = true
			var err error
			if pages, err = rollbackMemory(); err != nil {
				return err
			}
		}
		failpoint("mid-rollback")
		return s.returnFromFrame(t, rp, f)
	}()
	if err != nil && changed {
		// Half done: the window's checkpoint no longer describes the
		// process. The fault is delivered, as without assure.
		fs.mirror.SetExternal(fs.extID, false)
		fs.extID = 0
		fs.dropSnap()
		fs.ctl.EndFrame()
		if fault != nil {
			ptrace.SetSiginfoRaw(t.tid, fault)
		}
		s.emitError(p.pid, fmt.Errorf("rollback to %s failed; the fault is delivered: %w", rp, err))
	}
	if err != nil {
		unguard()
		s.resumeThreads(stopped)
		return err
	}
	if len(failed) > 0 {
		s.emitError(p.pid, fmt.Errorf("rollback to %s did not restore: %s", rp, strings.Join(failed, "; ")))
	}
	fs.mirror.SetExternal(fs.extID, false)
	fs.extID = 0
	fs.dropSnap()
	fs.ctl.EndFrame()
	t.staleSigs = pendingFaults(t.tid)
	t.deliver = 0
	s.dropQueued(p)
	elapsed := time.Since(start)
	s.metrics.Recovered(rp.site(), elapsed)
	e := events.Event{
		Type: events.Recovered, Pid: p.pid, Tid: t.tid,
		RescuePoint: s.rpEvent(rp), Return: rp.Return, Recovery: events.RecoveryRollback,
		RecoveryMicros: max(1, elapsed.Microseconds()), PagesRestored: pages,
		ThreadsRolledBack: threads, ProcessesRolledBack: 1,
	}
	describeSignal(&e, sig, si)
	unguard() // before the event: see recover
	s.cfg.Events.Emit(e)
	s.resumeThreads(stopped)
	return nil
}

// captureIdle completes the thread states of c with those of the threads
// that did not run since (stopped now): as they are.
func captureIdle(p *process, c *procCheckpoint) error {
	for tid, st := range c.threads {
		if st != nil {
			continue
		}
		t := p.threads[tid]
		if t == nil {
			return fmt.Errorf("thread %d ended during the rescue point's window", tid)
		}
		st, err := captureThread(t)
		if err != nil {
			return err
		}
		c.threads[tid] = st
	}
	return nil
}

// returnFromFrame makes t return from the rescue point of frame f: every
// general register as at the entry (gcc's interprocedural register
// allocation lets a caller keep values in registers its callee does not
// touch, not only in callee-saved ones), the floating-point controls, the
// stack pointer, the return address, and the error value.
func (s *Supervisor) returnFromFrame(t *thread, rp *rescuePoint, f patch.Frame) error {
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return err
	}
	regs.Rbx, regs.Rbp, regs.R12, regs.R13, regs.R14, regs.R15 = f.Rbx, f.Rbp, f.R12, f.R13, f.R14, f.R15
	sc := f.Scratch
	regs.Rax, regs.Rcx, regs.Rdx, regs.Rsi, regs.Rdi = sc[0], sc[1], sc[2], sc[3], sc[4]
	regs.R8, regs.R9, regs.R10, regs.R11 = sc[5], sc[6], sc[7], sc[8]
	regs.Rsp = f.Slot
	arch.ReturnFromCall(&regs, f.Ret, rp.Return)
	regs.Orig_rax = ^uint64(0)
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return err
	}
	return setFPControl(t.tid, f.Fcw, f.Mxcsr)
}

// setFPControl sets the x87 control word and MXCSR of a thread (the
// caller's floating-point environment that a call must preserve).
func setFPControl(tid int, fcw uint16, mxcsr uint32) error {
	var fp ptrace.FPRegs
	if err := ptrace.GetFPRegs(tid, &fp); err != nil {
		return fmt.Errorf("floating-point registers of %d: %w", tid, err)
	}
	fp[0], fp[1] = byte(fcw), byte(fcw>>8)
	putLE32(fp[24:], mxcsr)
	if err := ptrace.SetFPRegs(tid, &fp); err != nil {
		return fmt.Errorf("floating-point registers of %d: %w", tid, err)
	}
	return nil
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// rebuildShadow copies the whole tracked memory into the shadow again
// after the injected code's scan failed (the pages it protected were not
// copied). Every thread is held.
func (s *Supervisor) rebuildShadow(p *process) {
	fs := p.fast
	maps, err := procfs.Maps(p.pid)
	if err == nil {
		err = fs.mirror.Rebuild(maps)
	}
	if err != nil {
		s.emitError(p.pid, fmt.Errorf("rebuild the shadow of %d: %w; its rescue points run unprotected", p.pid, err))
		fs.ctl.SetFlags(0, patch.FlagFast|patch.FlagReady)
		return
	}
	fs.writeRanges()
	fs.ctl.SetFlags(0, patch.FlagBroken)
}

// retrackRanges gives shadow space to mappings that grew (the injected
// code found written pages outside every range): the engine tracks them
// and copies what they hold; the injected code gets the new ranges.
func (s *Supervisor) retrackRanges(p *process) {
	fs := p.fast
	maps, err := procfs.Maps(p.pid)
	if err == nil {
		err = s.syncShadow(p, maps)
	}
	if err == nil && !fs.writeRanges() {
		err = fmt.Errorf("more than %d tracked ranges", patch.MaxRanges)
	}
	if err != nil {
		s.emitError(p.pid, fmt.Errorf("track the memory of %d: %w; its rescue points go through the supervisor", p.pid, err))
		s.fastToSlow(p)
		return
	}
	fs.ctl.SetFlags(0, patch.FlagStale|patch.FlagLayout)
	if fs.copying != nil {
		// Entries trap (to waitCopy) rather than run unprotected.
		fs.ctl.SetFlags(patch.FlagLayout, 0)
	}
}

// syncShadow tracks what p mapped or grew since the last look. A single-
// threaded process whose calls take checkpoints in the process is not held
// while a large block of it is copied into the shadow: it runs on, and is
// held only if it calls a rescue point before the copy is done, until it
// is (waitCopy: the call is protected, as when the copy was made at once).
// The others' checkpoints go through the supervisor, which copies what
// it finds at once. (p is held: no call starts meanwhile.)
func (s *Supervisor) syncShadow(p *process, maps []procfs.Mapping) error {
	fs := p.fast
	if fl := fs.ctl.Flags(); fl&patch.FlagFast == 0 || fl&patch.FlagMT != 0 || len(p.threads) > 1 {
		return fs.mirror.Sync(maps)
	}
	ready := make(chan struct{})
	fs.ctl.SetFlags(0, patch.FlagReady)
	fs.ready = ready
	later, err := fs.mirror.SyncLater(maps, syncCopyPages, func(err error) {
		if err != nil {
			fs.ctl.SetFlags(patch.FlagBroken, 0) // the next entry rebuilds the shadow
		}
		fs.ctl.SetFlags(patch.FlagReady, 0)
		close(ready)
	})
	if !later {
		fs.ctl.SetFlags(patch.FlagReady, 0)
		close(ready)
		return err
	}
	fs.copying = ready
	s.debugf("process %d: new memory copied into the shadow in the background", p.pid)
	return err
}

// waitCopy holds a call that came while syncShadow's copy runs until it
// is done; FlagLayout then sends the call through the resync again (a
// look that finds nothing new) and on to its checkpoint.
func (s *Supervisor) waitCopy(p *process) {
	fs := p.fast
	if fs.copying == nil {
		return
	}
	<-fs.copying
	fs.copying = nil
	s.debugf("process %d: a call waited for the background copy", p.pid)
}

// fastToMT keeps the in-process checkpoints of p, which has more than
// one thread now, for one thread (the first to take one): a rollback
// then undoes that thread's work, and is made only when no other thread
// ran meanwhile (othersRan). Without a way for the injected code to tell
// threads apart (FSGSBASE), the checkpoints go through the supervisor.
func (s *Supervisor) fastToMT(p *process) {
	fs := p.fast
	if fs == nil || fs.ctl.Flags()&patch.FlagMT != 0 {
		return
	}
	if !fastMT || !hasFSGSBase(p.pid) {
		s.fastToSlow(p)
		return
	}
	fs.ctl.SetFlags(patch.FlagMT, 0)
}

// fastMT keeps in-process checkpoints for one thread of a multi-threaded
// process (ASSURE_FASTPATH_MT=1, experimental). Off by default: a fault in
// that thread's window after other threads ran is not recovered
// (othersRan) — 9 runs of 15 of TestE2EMultiThreaded lost one. Without it
// a multi-threaded process takes the slow path, whose checkpoints stop
// every thread.
var fastMT = os.Getenv("ASSURE_FASTPATH_MT") == "1"

// hasFSGSBase reports whether pid may use rdfsbase (AT_HWCAP2).
func hasFSGSBase(pid int) bool {
	auxv, err := procfs.Auxv(pid)
	return err == nil && auxv[atHwcap2]&hwcap2FSGSBase != 0
}

const (
	atHwcap2       = 26
	hwcap2FSGSBase = 1 << 1
)

// othersRan reports whether a thread of p other than t may have changed
// memory since t's in-process checkpoint (all held): its stack written,
// or a system call of its completed (other than the clone that made t). A rollback of t's pages could then
// undo that thread's work. Threads that snap (when not nil) does not know
// were made since, and do not count.
func (s *Supervisor) othersRan(p *process, t *thread, snap *procCheckpoint) (string, bool) {
	if len(p.threads) < 2 {
		return "", false
	}
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return err.Error(), true
	}
	for _, u := range p.threads {
		if u == t || u.awaitInitial {
			continue
		}
		if snap != nil {
			if _, old := snap.threads[u.tid]; !old {
				continue // made in the window: ended by the rollback
			}
		}
		var regs arch.Regs
		if err := ptrace.GetRegs(u.tid, &regs); err != nil {
			continue // gone
		}
		if arch.InSyscall(&regs) && !arch.Restarting(&regs) && !madeBy(&regs, t) {
			return fmt.Sprintf("thread %d completed a system call", u.tid), true
		}
		m, ok := covering(maps, regs.Rsp)
		if !ok {
			return fmt.Sprintf("thread %d has no stack", u.tid), true
		}
		written, known := p.fast.mirror.WrittenIn(m.Start, m.End)
		if !known {
			return fmt.Sprintf("the stack of thread %d is not tracked", u.tid), true
		}
		if written {
			return fmt.Sprintf("thread %d ran", u.tid), true
		}
	}
	return "", false
}

// madeBy reports whether regs are those of a thread held on its way back
// from the clone that made t: it has run no code of the program since t
// began, so not in t's window either (t and the parent are in one PID
// namespace: they are threads of one process). (Registers of a thread stopped in
// user mode show no system call: the interrupt's kernel entry clears
// orig_rax.)
func madeBy(regs *arch.Regs, t *thread) bool {
	switch regs.Orig_rax {
	case unix.SYS_CLONE, unix.SYS_CLONE3:
	default:
		return false
	}
	// clone returns the tid as the parent's PID namespace sees it.
	st, err := procfs.ReadStatus(t.tid)
	return err == nil && len(st.NSpid) > 0 && int(int64(regs.Rax)) == st.NSpid[len(st.NSpid)-1]
}

// fastToSlow turns the in-process checkpoints of p off: its entries stop
// for the supervisor, which checkpoints every thread at once (p has more
// than one thread now).
func (s *Supervisor) fastToSlow(p *process) {
	if fs := p.fast; fs != nil && fs.ctl.Flags()&patch.FlagFast != 0 {
		fs.ctl.SetFlags(0, patch.FlagFast)
		s.debugf("process %d has threads: fast path off", p.pid)
	}
}
