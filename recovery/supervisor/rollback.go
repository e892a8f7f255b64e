package supervisor

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// rollbackProcess brings p back to checkpoint id: processes and threads
// made since are ended, the mapping layout, descriptors, memory and every
// thread's registers, FP state and signal mask are restored. It returns
// the pages and threads restored.
func (s *Supervisor) rollbackProcess(p *process, id checkpoint.ID, faulting *thread) (int, int, error) {
	i := p.ckptIndex(id)
	c := p.ckpts[i]
	s.killNewProcesses(p, c.seq)
	s.endNewThreads(p, c)
	th := faulting
	if th.proc != p || c.threads[th.tid] == nil {
		th = nil
		for tid := range c.threads {
			if t := p.threads[tid]; t != nil && !t.awaitInitial {
				th = t
				break
			}
		}
	}
	if th == nil {
		return 0, 0, fmt.Errorf("rollback of %d: no thread of the checkpoint is left", p.pid)
	}
	if err := s.restoreLayout(p, th, c); err != nil {
		return 0, 0, err
	}
	if err := s.closeNewFDs(p, th, c); err != nil {
		return 0, 0, err
	}
	st, err := p.tracker.Rollback(id, c.coordinated)
	if err != nil {
		return 0, 0, err
	}
	threads := 0
	for tid, ts := range c.threads {
		t := p.threads[tid]
		if t == nil {
			// It exited since the checkpoint; the memory says it runs.
			if t, err = s.resurrect(p, th, tid, ts); err != nil {
				return st.Pages, threads, err
			}
		}
		if err := s.restoreRseq(t, ts.rseq); err != nil {
			return st.Pages, threads, err
		}
		// Fault signals (and traps) still pending from before the
		// rollback belong to the undone execution: they are swallowed
		// when they arrive. (An interrupt is reported before pending
		// signals are dequeued.) Real faults recur from the restored state.
		t.staleSigs = pendingFaults(t.tid)
		if err := restoreThread(t, ts); err != nil {
			return st.Pages, threads, err
		}
		threads++
	}
	s.dropQueued(p)
	p.ckpts = p.ckpts[:i]
	return st.Pages, threads, nil
}

// resurrect brings back a thread that existed at the checkpoint and has
// exited since: a new thread is cloned from th and given the old one's
// state. The kernel stores the new tid where the threading library keeps
// the old one (CLONE_PARENT_SETTID) and clears it at exit
// (CLONE_CHILD_CLEARTID), so joins and signals reach the new thread.
// Checkpoints that knew the old tid learn the new one.
func (s *Supervisor) resurrect(p *process, th *thread, oldTid int, ts *threadState) (*thread, error) {
	const flags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
		unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
	tidAddr := ts.clearTid
	fl := uint64(flags)
	if tidAddr == 0 {
		fl &^= unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
	}
	res, err := s.inject(th, unix.SYS_CLONE, fl, ts.regs.Rsp, tidAddr, tidAddr, 0)
	if err != nil {
		return nil, fmt.Errorf("bring back thread %d of %d: %w", oldTid, p.pid, err)
	}
	newTid := int(res)
	t := s.threads[newTid]
	if t == nil {
		t = s.addThread(p, newTid)
	}
	t.clearTid = tidAddr
	// Its first stop (auto-attach) must arrive before it can be set up.
	if st, ok := s.orphans[newTid]; ok && st.Stopped() {
		delete(s.orphans, newTid)
	} else if _, err := s.waitStop(t); err != nil {
		return nil, fmt.Errorf("bring back thread %d of %d: %w", oldTid, p.pid, err)
	}
	t.awaitInitial = false
	t.running = false
	t.born = 0
	for _, c := range p.ckpts {
		if st, ok := c.threads[oldTid]; ok {
			delete(c.threads, oldTid)
			c.threads[newTid] = st
		}
	}
	s.debugf("thread %d of %d brought back as %d", oldTid, p.pid, newTid)
	return t, nil
}

// pendingFaults returns the fault signals pending for a thread, as a
// mask of 1<<(sig-1).
func pendingFaults(tid int) uint64 {
	st, err := procfs.ReadStatus(tid)
	if err != nil {
		return 0
	}
	var mask uint64
	for _, sig := range []unix.Signal{unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT, unix.SIGTRAP, unix.SIGSYS} {
		if st.SigPnd&(1<<(sig-1)) != 0 {
			mask |= 1 << (sig - 1)
		}
	}
	return mask
}

// rseqUnregister is RSEQ_FLAG_UNREGISTER.
const rseqUnregister = 1

// restoreRseq makes a thread's rseq registration what it was at the
// checkpoint, with rseq(2) run in the thread itself.
func (s *Supervisor) restoreRseq(t *thread, want ptrace.Rseq) error {
	cur, err := ptrace.GetRseq(t.tid)
	if err != nil || cur.Pointer == want.Pointer && cur.Signature == want.Signature {
		return nil // nothing to do, or a kernel without the request
	}
	if cur.Pointer != 0 {
		if _, err := s.inject(t, unix.SYS_RSEQ, cur.Pointer, uint64(cur.Size), rseqUnregister, uint64(cur.Signature)); err != nil {
			return fmt.Errorf("restore rseq of %d: %w", t.tid, err)
		}
	}
	if want.Pointer != 0 {
		if _, err := s.inject(t, unix.SYS_RSEQ, want.Pointer, uint64(want.Size), 0, uint64(want.Signature)); err != nil {
			return fmt.Errorf("restore rseq of %d: %w", t.tid, err)
		}
	}
	return nil
}

func restoreThread(t *thread, ts *threadState) error {
	regs := ts.regs
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return fmt.Errorf("restore registers of %d: %w", t.tid, err)
	}
	if err := ptrace.SetRegset(t.tid, arch.XstateNote, ts.xstate); err != nil {
		return fmt.Errorf("restore FP/vector registers of %d: %w", t.tid, err)
	}
	if err := ptrace.SetSigmask(t.tid, ts.sigmask); err != nil {
		return fmt.Errorf("restore signal mask of %d: %w", t.tid, err)
	}
	t.frames = append([]frame(nil), ts.frames...)
	t.deliver = 0
	return nil
}

// dropQueued discards the queued stops of p's threads: they came from
// execution the rollback undid (a trap is re-executed from the restored
// state, a fault recurs if it still would). Signals from outside are
// not lost: they are delivered at the next resume.
func (s *Supervisor) dropQueued(p *process) {
	kept := s.queue[:0]
	for _, e := range s.queue {
		t := s.threads[e.tid]
		if t == nil || t.proc != p || !e.ws.Stopped() {
			kept = append(kept, e)
			continue
		}
		t.queued = false
		if sig := e.ws.StopSignal(); ptrace.Event(e.ws) == 0 && !isFault(sig) && sig != unix.SIGSTOP {
			t.deliver = sig
		}
	}
	s.queue = kept
}

// killNewProcesses ends processes p made after the checkpoint (and their
// descendants) and waits until they are gone.
func (s *Supervisor) killNewProcesses(p *process, seq uint64) {
	var victims []*process
	for _, q := range s.procs {
		if q.born > seq && s.descendsFrom(q, p) {
			victims = append(victims, q)
		}
	}
	for _, q := range victims {
		if q.parent == p.pid {
			p.expectChld[q.pid] = true
		}
		unix.Kill(q.pid, unix.SIGKILL)
	}
	for _, q := range victims {
		for !q.gone {
			tid, ws, err := ptrace.Wait(-1, 0)
			if err != nil {
				s.dropProcess(q)
				break
			}
			if t := s.threads[tid]; t != nil && t.proc == q || tid == q.pid {
				if ws.Exited() || ws.Signaled() {
					s.onExit(tid, ws)
				}
				continue
			}
			if s.threads[tid] == nil && ws.Stopped() && ptrace.Event(ws) == ptrace.EventStop {
				s.orphans[tid] = ws
				continue
			}
			s.defer_(tid, ws)
		}
	}
}

func (s *Supervisor) descendsFrom(q, p *process) bool {
	for n := 0; q != nil && n < 64; n++ {
		if q.parent == p.pid {
			return true
		}
		q = s.procs[q.parent]
	}
	return false
}

// endNewThreads makes each thread created since the checkpoint call
// exit(2): only that thread ends, as if it had never been started.
func (s *Supervisor) endNewThreads(p *process, c *procCheckpoint) {
	for _, t := range p.threads {
		if c.threads[t.tid] != nil || t.awaitInitial {
			continue
		}
		if _, err := s.inject(t, unix.SYS_EXIT, 0); err != nil && err != errThreadGone {
			// Injection failed: make sure it cannot run on.
			unix.Tgkill(p.pid, t.tid, unix.SIGKILL)
		}
		s.removeThread(t)
	}
}

// closeNewFDs closes the descriptors opened since the checkpoint.
func (s *Supervisor) closeNewFDs(p *process, th *thread, c *procCheckpoint) error {
	now, err := p.views.fds.FDs()
	if err != nil {
		return err
	}
	old := make(map[int]bool, len(c.fds))
	for _, fd := range c.fds {
		old[fd] = true
	}
	for _, fd := range now {
		if !old[fd] {
			if _, err := s.inject(th, unix.SYS_CLOSE, uint64(fd)); err != nil {
				return fmt.Errorf("close fd %d in %d: %w", fd, p.pid, err)
			}
		}
	}
	return nil
}

// restoreLayout undoes mapping changes: new mappings are unmapped, the
// program break is moved back, protections are reset, and anonymous
// writable mappings removed since are mapped again (the tracker refills
// them from the shadow).
func (s *Supervisor) restoreLayout(p *process, th *thread, c *procCheckpoint) error {
	now, err := p.views.maps.Maps()
	if err != nil {
		return err
	}
	cur, err := s.inject(th, unix.SYS_BRK, 0)
	if err != nil {
		return fmt.Errorf("program break of %d: %w", p.pid, err)
	}
	if cur != c.brk {
		if got, err := s.inject(th, unix.SYS_BRK, c.brk); err != nil || got != c.brk {
			return fmt.Errorf("restore program break of %d to %#x (at %#x): %v", p.pid, c.brk, got, err)
		}
		if now, err = p.views.maps.Maps(); err != nil {
			return err
		}
	}
	p.brkKnown = false
	heap := span{p.views.startBrk, pageAlign(max(cur, c.brk))}
	for _, d := range diffLayout(c.maps, now, p.ours(), heap) {
		var err error
		switch d.kind {
		case layoutAdded:
			_, err = s.inject(th, unix.SYS_MUNMAP, d.start, d.end-d.start)
		case layoutProt:
			_, err = s.inject(th, unix.SYS_MPROTECT, d.start, d.end-d.start, protOf(d.old))
		case layoutRemoved:
			if !d.old.Writable() {
				s.logf("rollback of %d: cannot restore unmapped %s at %#x", p.pid, d.old.Path, d.start)
				continue
			}
			flags := uint64(unix.MAP_FIXED | unix.MAP_ANONYMOUS | unix.MAP_PRIVATE)
			if d.old.Shared() {
				flags = unix.MAP_FIXED | unix.MAP_ANONYMOUS | unix.MAP_SHARED
			}
			_, err = s.inject(th, unix.SYS_MMAP, d.start, d.end-d.start, protOf(d.old), flags, ^uint64(0), 0)
		}
		if err != nil {
			return fmt.Errorf("restore mappings of %d at %#x-%#x: %w", p.pid, d.start, d.end, err)
		}
	}
	return nil
}

func protOf(m procfs.Mapping) uint64 {
	var prot uint64
	if m.Readable() {
		prot |= unix.PROT_READ
	}
	if m.Writable() {
		prot |= unix.PROT_WRITE
	}
	if m.Executable() {
		prot |= unix.PROT_EXEC
	}
	return prot
}

type layoutKind int

const (
	layoutAdded layoutKind = iota
	layoutRemoved
	layoutProt
)

type layoutChange struct {
	kind       layoutKind
	start, end uint64
	old        procfs.Mapping
}

type span struct{ start, end uint64 }

func pageAlign(a uint64) uint64 { return (a + 4095) &^ 4095 }

// diffLayout compares two address-space layouts segment by segment and
// returns the changes that take now back to old. The heap (moved with
// brk) and the supervisor's own mappings (ours) are left alone.
func diffLayout(old, now []procfs.Mapping, ours []span, heap span) []layoutChange {
	var cuts []uint64
	for _, m := range old {
		cuts = append(cuts, m.Start, m.End)
	}
	for _, m := range now {
		cuts = append(cuts, m.Start, m.End)
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })
	var out []layoutChange
	for i := 0; i+1 < len(cuts); i++ {
		a, b := cuts[i], cuts[i+1]
		if a == b || a >= 1<<47 || overlapsAny(ours, a, b) || (a >= heap.start && a < heap.end) {
			continue
		}
		o, inOld := covering(old, a)
		n, inNow := covering(now, a)
		var ch layoutChange
		switch {
		case inNow && !inOld:
			ch = layoutChange{kind: layoutAdded, start: a, end: b}
		case inOld && !inNow:
			ch = layoutChange{kind: layoutRemoved, start: a, end: b, old: o}
		case inOld && inNow && o.Perms[:3] != n.Perms[:3]:
			ch = layoutChange{kind: layoutProt, start: a, end: b, old: o}
		default:
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].kind == ch.kind && out[k].end == a && out[k].old.Perms == ch.old.Perms {
			out[k].end = b
			continue
		}
		out = append(out, ch)
	}
	return out
}

func overlapsAny(spans []span, a, b uint64) bool {
	for _, s := range spans {
		if a < s.end && b > s.start {
			return true
		}
	}
	return false
}

func covering(maps []procfs.Mapping, addr uint64) (procfs.Mapping, bool) {
	i := sort.Search(len(maps), func(i int) bool { return maps[i].End > addr })
	if i < len(maps) && maps[i].Start <= addr {
		return maps[i], true
	}
	return procfs.Mapping{}, false
}
