package supervisor

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// procCheckpoint is what a checkpoint holds for one process besides page
// contents (the tracker's part).
type procCheckpoint struct {
	id checkpoint.ID
	// coordinated: taken for "container" scope, in every process at once.
	coordinated bool
	seq         uint64 // creation counter: later threads/processes are newer
	threads     map[int]*threadState
	maps        []procfs.Mapping
	fds         []int  // ascending
	brk         uint64 // the kernel's program break (mm->brk)
	// journal records the kernel state that system calls made since the
	// checkpoint change (fed by beforeSyscall).
	journal *journal
}

// hasFD reports whether descriptor fd was open at the checkpoint.
func (c *procCheckpoint) hasFD(fd int) bool {
	i := sort.SearchInts(c.fds, fd)
	return i < len(c.fds) && c.fds[i] == fd
}

type threadState struct {
	clearTid uint64
	// rseq is the thread's rseq registration: kernel state a rollback
	// must put back too (glibc registers it when a thread starts, and a
	// thread rolled back to before that registers again).
	rseq    ptrace.Rseq
	regs    arch.Regs
	xstate  []byte
	sigmask uint64
	frames  []frame
}

// scopeOf returns the processes a checkpoint of rp taken in p covers.
func (s *Supervisor) scopeOf(rp *rescuePoint, p *process) []*process {
	if rp.Scope != manifest.ScopeContainer {
		return []*process{p}
	}
	var out []*process
	for _, q := range s.procs {
		if !q.gone && !q.sharedMM && !q.preExec {
			out = append(out, q)
		}
	}
	return out
}

// enterRescue runs at the first instruction of a rescue point: checkpoint
// everything in scope, divert the return through the trampoline, then
// carry out the displaced instruction.
func (s *Supervisor) enterRescue(t *thread, bp *breakpoint, regs *arch.Regs) {
	p := t.proc
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		s.logf("rescue entry in %d: %v", t.tid, err)
		return
	}
	if p.sharedMM || p.preExec {
		s.stepOver(t, bp, regs)
		s.resume(t)
		return
	}
	if s.admit(t) {
		return // takes the breakpoint again when resumed
	}
	s.metrics.RescueCall(bp.rp.site())
	procs := s.stopThreads(s.scopeOf(bp.rp, p), bp.rp.Scope == manifest.ScopeContainer)
	start := time.Now()
	if s.stopReq.Load() {
		// Detaching: no checkpoint of half-stopped threads.
		s.stepOver(t, bp, regs)
		s.resumeThreads(procs)
		s.resume(t)
		return
	}
	if s.faultQueued(procs) {
		// A fault came in while the threads stopped: recover it first,
		// before the others run on what it broke. t takes the breakpoint
		// again afterwards (its registers point at it).
		s.resumeThreads(procs)
		s.resume(t)
		return
	}
	id, err := s.checkpoint(procs, t, bp)
	if err == nil {
		s.metrics.Checkpointed(bp.rp.site(), time.Since(start))
	}
	s.debugf("checkpoint %d at %#x in %d: %v", id, bp.addr, t.tid, err)
	if err == nil {
		err = s.divertReturn(t, bp.rp, id, regs)
	}
	if err != nil {
		if !isGone(err) {
			s.emitError(p.pid, fmt.Errorf("checkpoint at %s: %w", bp.rp, err))
		}
		if id != 0 {
			s.commit(id)
		}
	}
	s.stepOver(t, bp, regs)
	s.resumeThreads(procs)
	s.resume(t)
}

// faultQueued reports whether a thread of procs has a fault signal
// waiting in the queue.
func (s *Supervisor) faultQueued(procs []*process) bool {
	for _, e := range s.queue {
		t := s.threads[e.tid]
		if t == nil || !e.ws.Stopped() || ptrace.Event(e.ws) != 0 || !isFault(e.ws.StopSignal()) || e.ws.StopSignal() == unix.SIGTRAP {
			continue
		}
		for _, p := range procs {
			if t.proc == p {
				return true
			}
		}
	}
	return false
}

func isGone(err error) bool { return errors.Is(err, errThreadGone) }

// divertReturn replaces the return address with the trampoline so that
// the supervisor learns when the rescue point returns.
func (s *Supervisor) divertReturn(t *thread, rp *rescuePoint, id checkpoint.ID, regs *arch.Regs) error {
	p := t.proc
	ret, err := p.readWord(regs.Rsp)
	if err != nil {
		return err
	}
	if err := p.writeWord(regs.Rsp, p.scratch+trampolineOffset); err != nil {
		return err
	}
	t.frames = append(t.frames, frame{rp: rp, ckpt: id, slot: regs.Rsp, ret: ret})
	s.saveFrames(p)
	return nil
}

// checkpoint records every process in procs under one new ID. t is
// stopped at bp, with its registers already pointing at bp.
func (s *Supervisor) checkpoint(procs []*process, t *thread, bp *breakpoint) (checkpoint.ID, error) {
	s.nextID++
	id := s.nextID
	for _, p := range procs {
		th := t
		if p != t.proc {
			th = anyThread(p)
			if th == nil {
				continue
			}
		}
		if err := s.checkpointProcess(p, th, bp.addr, id, bp.rp.Scope == manifest.ScopeContainer); err != nil {
			for _, q := range procs {
				s.discard(q, id)
			}
			return 0, err
		}
	}
	return id, nil
}

func anyThread(p *process) *thread {
	if t := p.threads[p.pid]; t != nil && !t.awaitInitial {
		return t
	}
	for _, t := range p.threads {
		if !t.awaitInitial {
			return t
		}
	}
	return nil
}

func (s *Supervisor) checkpointProcess(p *process, th *thread, codeAt uint64, id checkpoint.ID, coordinated bool) error {
	if p.scratch == 0 {
		at := codeAt
		if th != nil && th.proc != p {
			at = 0
		}
		if at == 0 {
			return fmt.Errorf("process %d has no code page yet", p.pid)
		}
		if err := s.ensureScratch(th, at); err != nil {
			return err
		}
	}
	if err := s.ensureTracker(th); err != nil {
		return err
	}
	c := &procCheckpoint{id: id, coordinated: coordinated, seq: s.seq, threads: make(map[int]*threadState, len(p.threads)), journal: newJournal()}
	for _, t := range p.threads {
		st, err := captureThread(t)
		if err != nil {
			return err
		}
		if t.queued || trapPending(t, &st.regs) {
			untrap(p, &st.regs)
		}
		c.threads[t.tid] = st
	}
	if p.views == nil {
		v, err := openViews(p.pid)
		if err != nil {
			return err
		}
		p.views = v
	}
	var err error
	if c.maps, err = p.views.maps.Maps(); err != nil {
		return err
	}
	if c.fds, err = p.views.fds.FDs(); err != nil {
		return err
	}
	if c.brk, err = s.programBreak(p, th, c.maps); err != nil {
		return err
	}
	if _, err := p.tracker.Checkpoint(id, c.maps); err != nil {
		return err
	}
	s.noteShadow(p)
	p.ckpts = append(p.ckpts, c)
	return nil
}

// untrap rewinds a thread that stopped at one of our traps (a breakpoint
// or the trampoline) whose handling is still to come, so that the saved
// state re-executes the trap rather than resuming inside the displaced
// instruction.
func untrap(p *process, regs *arch.Regs) {
	if pc := arch.TrapPC(regs); p.ourTrap(pc) {
		regs.Rip = pc
	}
}

// trapPending reports whether a thread, with registers regs, stopped right
// after one of our traps with the SIGTRAP not yet delivered: an interrupt
// is reported before pending signals are dequeued.
func trapPending(t *thread, regs *arch.Regs) bool {
	if !t.proc.ourTrap(arch.TrapPC(regs)) {
		return false
	}
	st, err := procfs.ReadStatus(t.tid)
	return err == nil && st.SigPnd&(1<<(unix.SIGTRAP-1)) != 0
}

func captureThread(t *thread) (*threadState, error) {
	st := &threadState{frames: append([]frame(nil), t.frames...), clearTid: t.clearTid}
	if err := ptrace.GetRegs(t.tid, &st.regs); err != nil {
		return nil, fmt.Errorf("registers of %d: %w", t.tid, err)
	}
	buf := make([]byte, arch.XstateMax)
	x, err := ptrace.GetRegset(t.tid, arch.XstateNote, buf)
	if err != nil {
		return nil, fmt.Errorf("FP/vector registers of %d: %w", t.tid, err)
	}
	st.xstate = x
	if st.sigmask, err = ptrace.GetSigmask(t.tid); err != nil {
		return nil, fmt.Errorf("signal mask of %d: %w", t.tid, err)
	}
	st.rseq, _ = ptrace.GetRseq(t.tid)
	return st, nil
}

// programBreak returns the kernel's program break. No /proc file shows
// it (the [heap] mapping may end past it), so it is asked with an
// injected brk(0) — only when the heap mapping changed since the last
// time: the break moves with brk(2) and glibc moves it in whole pages.
func (s *Supervisor) programBreak(p *process, th *thread, maps []procfs.Mapping) (uint64, error) {
	end := heapMapEnd(maps, p.views.startBrk)
	if p.brkKnown && end == p.heapMapEnd {
		return p.brk, nil
	}
	b, err := s.inject(th, unix.SYS_BRK, 0)
	if err != nil {
		return 0, fmt.Errorf("program break of %d: %w", p.pid, err)
	}
	p.brk, p.heapMapEnd, p.brkKnown = b, end, true
	return b, nil
}

// heapMapEnd is the end of the heap: the run of adjacent anonymous
// mappings that starts at start_brk (0 when there is none).
func heapMapEnd(maps []procfs.Mapping, startBrk uint64) uint64 {
	var end uint64
	for _, m := range maps {
		switch {
		case m.Start == startBrk && m.Anonymous():
			end = m.End
		case end != 0 && m.Start == end && m.Anonymous():
			end = m.End
		}
	}
	return end
}

func (p *process) ckptIndex(id checkpoint.ID) int {
	for i, c := range p.ckpts {
		if c.id == id {
			return i
		}
	}
	return -1
}

// discard drops checkpoint id from p without rolling back. Its journal
// goes to the enclosing checkpoint, if any: what it recorded happened
// since that one too.
func (s *Supervisor) discard(p *process, id checkpoint.ID) {
	if i := p.ckptIndex(id); i >= 0 {
		c := p.ckpts[i]
		switch fs := p.fast; {
		case i > 0:
			c.journal.mergeInto(p.ckpts[i-1].journal)
		case fs != nil && fs.snap != nil:
			c.journal.mergeInto(fs.snap.journal)
		case fs != nil && fs.windowOpen():
			// Nested in the fast path's window before any system call of
			// it: the kernel state recorded at this entry is the window's.
			fs.adoptSnap(c)
		default:
			c.journal.release()
		}
		p.ckpts = append(p.ckpts[:i], p.ckpts[i+1:]...)
	}
	if p.tracker != nil {
		p.tracker.Commit(id)
	}
}

// dropCheckpoints discards every checkpoint of p: after a rollback that
// could not complete, none of them describes the process any more.
func (s *Supervisor) dropCheckpoints(p *process) {
	for len(p.ckpts) > 0 {
		s.discard(p, p.ckpts[len(p.ckpts)-1].id)
	}
}

// commit forgets checkpoint id everywhere: its rescue point returned.
func (s *Supervisor) commit(id checkpoint.ID) {
	s.debugf("commit %d", id)
	for _, p := range s.procs {
		s.discard(p, id)
	}
}

// onReturn runs when a rescue point returns into the trampoline.
func (s *Supervisor) onReturn(t *thread, regs *arch.Regs) {
	// After `ret`, rsp is one word above the slot of the return address.
	// Frames above the match were left by longjmp: they ended too.
	i := len(t.frames) - 1
	for i >= 0 && t.frames[i].slot+8 != regs.Rsp {
		i--
	}
	if i < 0 {
		s.emitError(t.proc.pid, fmt.Errorf("thread %d returned into the trampoline with no matching rescue point (stack %#x)", t.tid, regs.Rsp))
		t.deliver = unix.SIGSEGV
		s.resume(t)
		return
	}
	regs.Rip = t.frames[i].ret
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		s.logf("return of %d: %v", t.tid, err)
	}
	for _, f := range t.frames[i:] {
		if f.ckpt != 0 {
			s.commit(f.ckpt)
		}
	}
	t.frames = t.frames[:i]
	s.saveFrames(t.proc)
	s.promoteChild(t)
	s.resume(t)
}

// onFault decides whether a fault signal is recovered or passed on.
func (s *Supervisor) onFault(t *thread, sig unix.Signal) {
	p := t.proc
	si, _ := ptrace.GetSiginfo(t.tid)
	f := s.activeFrame(t)
	switch {
	case !s.cfg.Manifest.WantsSignal(sig):
		// A SIGTRAP the manifest does not name is the program's own
		// business (a debugger's breakpoint): passed on without a word.
		s.passOn(t, sig, si, "not a signal the manifest recovers", sig != unix.SIGTRAP)
	case !si.FromKernel() && !selfSent(p, si):
		s.passOn(t, sig, si, "sent by another process", true)
	case f == nil && s.fastFault(t, sig, si):
		return
	case f == nil:
		s.passOn(t, sig, si, "outside any rescue point", true)
	case !s.allow(f.rp):
		s.passOn(t, sig, si, fmt.Sprintf("maxRecoveries (%d per minute) reached for %s", s.cfg.Manifest.MaxRecoveries, f.rp), true)
	default:
		err := s.recover(t, sig, si, f)
		if err == nil {
			return
		}
		s.passOn(t, sig, si, "rollback failed: "+err.Error(), true)
	}
}

// activeFrame returns the innermost rescue-point call of t that has a
// checkpoint to roll back to.
func (s *Supervisor) activeFrame(t *thread) *frame {
	for i := len(t.frames) - 1; i >= 0; i-- {
		f := &t.frames[i]
		if f.ckpt != 0 && t.proc.ckptIndex(f.ckpt) >= 0 {
			return f
		}
	}
	return nil
}

// allow applies maxRecoveries: recoveries per rescue point per minute.
func (s *Supervisor) allow(rp *rescuePoint) bool {
	max := s.cfg.Manifest.MaxRecoveries
	now := time.Now()
	var kept []time.Time
	for _, ts := range s.limiter[rp] {
		if now.Sub(ts) < time.Minute {
			kept = append(kept, ts)
		}
	}
	if len(kept) >= max {
		s.limiter[rp] = kept
		return false
	}
	s.limiter[rp] = append(kept, now)
	return true
}

// recover rolls every process holding f's checkpoint back to it and makes
// the rescue point return its error value in t. When the rollback cannot
// complete, every checkpoint of those processes is dropped and t is left
// at its fault, with its siginfo, for the caller to deliver: the process
// goes on (or dies) as it would without assure.
func (s *Supervisor) recover(t *thread, sig unix.Signal, si ptrace.Siginfo, f *frame) error {
	start := time.Now()
	fr := *f
	var procs []*process
	for _, p := range s.procs {
		if p.ckptIndex(fr.ckpt) >= 0 {
			procs = append(procs, p)
		}
	}
	coordinated := false
	for _, p := range procs {
		coordinated = coordinated || p.ckpts[p.ckptIndex(fr.ckpt)].coordinated
	}
	// Processes forked meanwhile are stopped too; they are newer than the
	// checkpoint and end with the rollback (killNewProcesses).
	stopped := s.stopThreads(procs, coordinated)
	// Undone before the threads run again: options are set on stopped
	// threads only.
	unguard := s.guardRollback(stopped, t.proc.pid, fr.ckpt)
	fault, _ := ptrace.GetSiginfoRaw(t.tid)
	s.debugf("rollback to %d in %d processes", fr.ckpt, len(procs))
	var pages, threads int
	var failed []string
	var firstErr error
	if s.stopReq.Load() {
		firstErr = errors.New("the supervisor is stopping")
	}
	for _, p := range procs {
		if firstErr != nil {
			break
		}
		if p.gone {
			if p == t.proc {
				firstErr = fmt.Errorf("process %d is gone", p.pid)
			}
			continue
		}
		n, th, fl, err := s.safeRollback(p, fr.ckpt, t)
		pages += n
		threads += th
		failed = append(failed, fl...)
		firstErr = err
	}
	failpoint("mid-rollback")
	if firstErr == nil {
		firstErr = s.returnError(t, fr)
	}
	if firstErr != nil {
		unguard()
		for _, p := range procs {
			s.dropCheckpoints(p)
			s.saveFrames(p)
		}
		if fault != nil {
			ptrace.SetSiginfoRaw(t.tid, fault)
		}
		s.emitError(t.proc.pid, fmt.Errorf("rollback to %s failed; the fault is delivered: %w", fr.rp, firstErr))
		for _, p := range stopped {
			for _, o := range p.threads {
				if o != t {
					s.resume(o)
				}
			}
		}
		return firstErr
	}
	t.deliver = 0
	elapsed := time.Since(start)
	s.metrics.Recovered(fr.rp.site(), elapsed)
	e := events.Event{
		Type: events.Recovered, Pid: t.proc.pid, Tid: t.tid,
		RescuePoint: s.rpEvent(fr.rp), Return: fr.rp.Return, Recovery: events.RecoveryRollback,
		RecoveryMicros: max(1, elapsed.Microseconds()), PagesRestored: pages,
		ThreadsRolledBack: threads, ProcessesRolledBack: len(procs),
	}
	describeSignal(&e, sig, si)
	for _, p := range procs {
		s.saveFrames(p)
	}
	// The program no longer dies with the supervisor once the event
	// says it recovered (a watcher may act on the event at once).
	unguard()
	s.cfg.Events.Emit(e)
	if len(failed) > 0 {
		s.emitError(t.proc.pid, fmt.Errorf("rollback to %s did not restore: %s", fr.rp, strings.Join(failed, "; ")))
	}
	s.resumeThreads(stopped)
	return nil
}

// returnError makes t return from the rescue point: registers are those
// of the entry (just restored), the return address the real one.
func (s *Supervisor) returnError(t *thread, f frame) error {
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return err
	}
	arch.ReturnFromCall(&regs, f.ret, f.rp.Return)
	regs.Orig_rax = ^uint64(0)
	return ptrace.SetRegs(t.tid, &regs)
}

func (s *Supervisor) rpEvent(rp *rescuePoint) *events.RescuePoint {
	return &events.RescuePoint{Binary: rp.Binary, Function: rp.Function, Address: fmt.Sprintf("%#x", rp.vaddr)}
}
