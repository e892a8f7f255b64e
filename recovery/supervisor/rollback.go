package supervisor

import (
	"errors"
	"fmt"
	"os"
	runtimedebug "runtime/debug"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// rollback is one process's rollback to one checkpoint in progress.
type rollback struct {
	s *Supervisor
	p *process
	c *procCheckpoint
	j *journal // of c, with those of newer checkpoints merged in
	// th is the thread injected calls run in; cands are the threads that
	// can take over when it cannot run them.
	th    *thread
	cands []*thread
	ch    *fdChannel
	// failed names what could not be restored; the rollback goes on.
	failed []string
	// renamed maps threads that exited since the checkpoint to the
	// threads brought back in their place.
	renamed map[int]int
}

func (r *rollback) failf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

// safeRollback is rollbackProcess, with a panic (a bug of ours on an
// unexpected process state) turned into a failed rollback.
func (s *Supervisor) safeRollback(p *process, id checkpoint.ID, faulting *thread) (pages, threads int, failed []string, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.logf("rollback of %d: panic: %v\n%s", p.pid, v, runtimedebug.Stack())
			err = fmt.Errorf("internal error: %v", v)
		}
	}()
	return s.rollbackProcess(p, id, faulting)
}

// rollbackProcess brings p back to checkpoint id: processes and threads
// made since are ended, the mapping layout, memory, the kernel state the
// journal recorded (signal dispositions, descriptors, offsets, ...) and
// every thread's registers, FP state and signal mask are restored. It
// returns the pages and threads restored and what of the kernel state
// could not be restored; an error means the rollback could not complete.
func (s *Supervisor) rollbackProcess(p *process, id checkpoint.ID, faulting *thread) (int, int, []string, error) {
	i := p.ckptIndex(id)
	if i < 0 || p.views == nil || p.tracker == nil {
		return 0, 0, nil, fmt.Errorf("rollback of %d: no checkpoint %d", p.pid, id)
	}
	c := p.ckpts[i]
	r := newRollback(s, p, c, mergeJournals(p.ckpts[i:]))
	defer r.done()
	pages, threads, err := r.run(faulting, func() (int, error) {
		st, err := p.tracker.Rollback(id, c.coordinated)
		return st.Pages, err
	})
	if err != nil {
		return pages, threads, nil, err
	}
	s.dropQueued(p)
	p.ckpts = p.ckpts[:i]
	return pages, threads, r.failed, nil
}

func newRollback(s *Supervisor, p *process, c *procCheckpoint, j *journal) *rollback {
	r := &rollback{s: s, p: p, c: c, j: j, renamed: make(map[int]int)}
	r.j.ensure()
	return r
}

// run carries the rollback out, memory restored by rollbackMemory once the
// layout is that of the checkpoint. It returns the pages and threads
// restored.
func (r *rollback) run(faulting *thread, rollbackMemory func() (int, error)) (int, int, error) {
	r.s.killNewProcesses(r.p, r.c.seq)
	if err := r.pickInjector(faulting); err != nil {
		return 0, 0, err
	}
	if err := r.endNewThreads(); err != nil {
		return 0, 0, err
	}
	if err := r.restoreLayout(); err != nil {
		return 0, 0, err
	}
	pages, err := rollbackMemory()
	if err != nil {
		return 0, 0, err
	}
	if err := r.resetContents(); err != nil {
		return pages, 0, err
	}
	r.restoreProcessState()
	r.closeNewFDs()
	r.closeChannel()
	threads, err := r.restoreThreads()
	return pages, threads, err
}

// mergeJournals folds the journals of cs (a checkpoint and those nested
// in it) into the first, and returns it.
func mergeJournals(cs []*procCheckpoint) *journal {
	if debug {
		var ids []string
		for _, c := range cs {
			ids = append(ids, fmt.Sprintf("%d(%d touched)", c.id, len(c.journal.touched)))
		}
		fmt.Fprintf(os.Stderr, "assure[debug]: merging journals %s\n", strings.Join(ids, " "))
	}
	for k := len(cs) - 1; k > 0; k-- {
		cs[k].journal.mergeInto(cs[k-1].journal)
	}
	return cs[0].journal
}

func (r *rollback) done() {
	r.closeChannel()
	r.j.release()
}

// pickInjector chooses the thread injected calls run in: one of the
// checkpoint's, the faulting thread first, preferring threads whose rseq
// area is mapped (the kernel writes it each time a thread returns to user
// mode: without it a thread cannot run at all).
func (r *rollback) pickInjector(faulting *thread) error {
	p := r.p
	maps, _ := p.views.maps.Maps()
	var ok, bad []*thread
	add := func(t *thread) {
		if t == nil || t.awaitInitial || r.c.threads[t.tid] == nil {
			return
		}
		for _, o := range append(ok, bad...) {
			if o == t {
				return
			}
		}
		if rs, err := ptrace.GetRseq(t.tid); err == nil && rs.Pointer != 0 {
			if _, mapped := covering(maps, rs.Pointer); !mapped {
				bad = append(bad, t)
				return
			}
		}
		ok = append(ok, t)
	}
	if faulting.proc == p {
		add(faulting)
	}
	tids := make([]int, 0, len(r.c.threads))
	for tid := range r.c.threads {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	for _, tid := range tids {
		add(p.threads[tid])
	}
	r.cands = append(ok, bad...)
	if len(r.cands) == 0 {
		return fmt.Errorf("rollback of %d: no thread of the checkpoint is left", p.pid)
	}
	r.th = r.cands[0]
	return nil
}

// inject runs a system call in the process, in r.th or, when that thread
// cannot run it, in the next candidate.
func (r *rollback) inject(nr uint64, args ...uint64) (uint64, error) {
	for {
		v, err := r.s.inject(r.th, nr, args...)
		if err == nil || !errors.Is(err, errCannotRun) && !errors.Is(err, errThreadGone) {
			return v, err
		}
		if !r.nextInjector() {
			return v, err
		}
		r.s.debugf("rollback of %d: injecting in %d now (%v)", r.p.pid, r.th.tid, err)
	}
}

func (r *rollback) nextInjector() bool {
	for len(r.cands) > 1 {
		r.cands = r.cands[1:]
		if t := r.p.threads[r.cands[0].tid]; t == r.cands[0] {
			r.th = t
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- layout

// restoreLayout makes the mapping layout that of the checkpoint: the
// program break is moved back; mappings removed or replaced since are
// mapped again, from their file for file and shared mappings (kept by the
// journal, or taken from another mapping of the same file); protections
// are put back; mappings created since are removed. Contents come after:
// the tracker's for memory that was writable, resetContents for the rest.
func (r *rollback) restoreLayout() error {
	p, c := r.p, r.c
	now, err := p.views.maps.Maps()
	if err != nil {
		return err
	}
	cur, err := r.inject(unix.SYS_BRK, 0)
	if err != nil {
		return fmt.Errorf("program break of %d: %w", p.pid, err)
	}
	if cur != c.brk {
		if got, err := r.inject(unix.SYS_BRK, c.brk); err != nil || got != c.brk {
			return fmt.Errorf("restore program break of %d to %#x (at %#x): %v", p.pid, c.brk, got, err)
		}
		if now, err = p.views.maps.Maps(); err != nil {
			return err
		}
	}
	p.brkKnown = false
	heap := span{p.views.startBrk, pageAlign(max(cur, c.brk))}
	changes := diffLayout(c.maps, now, p.ours(), heap)
	if debug {
		for _, d := range changes {
			r.s.debugf("rollback to %d: layout change %d %#x-%#x old %+v", c.id, d.kind, d.start, d.end, d.old)
		}
	}
	if err := r.remap(changes, now); err != nil {
		return err
	}
	for _, d := range changes {
		var err error
		switch d.kind {
		case layoutProt:
			_, err = r.inject(unix.SYS_MPROTECT, d.start, d.end-d.start, protOf(d.old))
		case layoutAdded:
			_, err = r.inject(unix.SYS_MUNMAP, d.start, d.end-d.start)
		}
		if err != nil {
			return fmt.Errorf("restore mappings of %d at %#x-%#x: %w", p.pid, d.start, d.end, err)
		}
	}
	if debug {
		after, _ := p.views.maps.Maps()
		for _, d := range diffLayout(c.maps, after, p.ours(), heap) {
			r.s.debugf("rollback to %d: LAYOUT STILL DIFFERS: %d %#x-%#x old %+v", c.id, d.kind, d.start, d.end, d.old)
		}
	}
	return nil
}

// remap maps again the parts of the checkpoint's layout that are gone or
// hold another object now.
func (r *rollback) remap(changes []layoutChange, now []procfs.Mapping) error {
	p := r.p
	// The files first, passed into the process in one go.
	var files []*os.File
	slot := make(map[fileKey]int)
	for _, d := range changes {
		if (d.kind != layoutRemoved && d.kind != layoutReplaced) || d.old.Inode == 0 {
			continue
		}
		k := fileKey{d.old.Major, d.old.Minor, d.old.Inode}
		if _, ok := slot[k]; ok {
			continue
		}
		f := r.j.files[k]
		if f == nil {
			// Not kept (removed by a call the journal does not see): any
			// other mapping of the same file will do.
			f = openSameFile(p.pid, now, k)
			if f == nil {
				return fmt.Errorf("rollback of %d: the file (device %d:%d, inode %d) mapped at %#x-%#x is gone", p.pid, k.major, k.minor, k.inode, d.start, d.end)
			}
			r.j.files[k] = f
		}
		slot[k] = len(files)
		files = append(files, f)
	}
	var fds []int
	if len(files) > 0 {
		var err error
		if fds, err = r.channel().pass(files); err != nil {
			return fmt.Errorf("rollback of %d: pass mapped files: %w", p.pid, err)
		}
		defer func() {
			for _, fd := range fds {
				r.inject(unix.SYS_CLOSE, uint64(fd))
			}
		}()
	}
	for _, d := range changes {
		if d.kind != layoutRemoved && d.kind != layoutReplaced {
			continue
		}
		o := d.old
		flags := uint64(unix.MAP_FIXED | unix.MAP_PRIVATE)
		if o.Shared() {
			flags = unix.MAP_FIXED | unix.MAP_SHARED
		}
		fd, off := ^uint64(0), uint64(0)
		if o.Inode != 0 {
			fd, off = uint64(fds[slot[fileKey{o.Major, o.Minor, o.Inode}]]), o.Offset+(d.start-o.Start)
		} else {
			flags |= unix.MAP_ANONYMOUS
		}
		if _, err := r.inject(unix.SYS_MMAP, d.start, d.end-d.start, protOf(o), flags, fd, off); err != nil {
			return fmt.Errorf("restore mapping of %d at %#x-%#x (%s): %w", p.pid, d.start, d.end, o.Perms, err)
		}
	}
	return nil
}

// openSameFile opens, through another mapping of it, a file mapped in pid.
func openSameFile(pid int, maps []procfs.Mapping, k fileKey) *os.File {
	for _, m := range maps {
		if m.Inode == k.inode && m.Major == k.major && m.Minor == k.minor {
			if f, err := openMapped(pid, m); err == nil {
				return f
			}
		}
	}
	return nil
}

// resetContents gives the pages of private mappings that were not
// writable at the checkpoint, in ranges a call touched since, their
// contents back: emptied (anonymous memory reads as zero again, a file
// mapping as the file), then the saved pages written back. The tracker
// restores writable memory; this is the rest.
func (r *rollback) resetContents() error {
	p := r.p
	for _, sp := range mergeSpans(r.j.touched) {
		for _, o := range r.c.maps {
			a, b := max(o.Start, sp.start), min(o.End, sp.end)
			if a >= b || o.Writable() || o.Shared() {
				continue
			}
			n := 0
			for pg := a; pg < b; pg += pageSize {
				if r.j.pages[pg] != nil {
					n++
				}
			}
			r.s.debugf("rollback: reset %#x-%#x, %d saved pages", a, b, n)
			if _, err := r.inject(unix.SYS_MADVISE, a, b-a, unix.MADV_DONTNEED); err != nil {
				r.failf("contents of %#x-%#x (madvise: %v)", a, b, err)
			}
			for pg := a; pg < b; pg += pageSize {
				if buf := r.j.pages[pg]; buf != nil {
					if err := p.writeMem(pg, buf); err != nil {
						return fmt.Errorf("restore page %#x of %d: %w", pg, p.pid, err)
					}
				}
			}
		}
	}
	return nil
}

// mergeSpans sorts spans and merges those that overlap or touch.
func mergeSpans(in []span) []span {
	if len(in) == 0 {
		return nil
	}
	s := append([]span(nil), in...)
	sort.Slice(s, func(i, j int) bool { return s[i].start < s[j].start })
	out := s[:1]
	for _, x := range s[1:] {
		if last := &out[len(out)-1]; x.start <= last.end {
			last.end = max(last.end, x.end)
		} else {
			out = append(out, x)
		}
	}
	return out
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
	layoutAdded    layoutKind = iota // mapped now, not at the checkpoint
	layoutRemoved                    // mapped at the checkpoint, not now
	layoutReplaced                   // another object (file, offset, sharing) now
	layoutProt                       // same object, other protection
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
	for _, o := range ours {
		cuts = append(cuts, o.start, o.end)
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
		case inOld && inNow && !sameObject(o, n, a):
			ch = layoutChange{kind: layoutReplaced, start: a, end: b, old: o}
		case inOld && inNow && o.Perms[:3] != n.Perms[:3]:
			ch = layoutChange{kind: layoutProt, start: a, end: b, old: o}
		default:
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].kind == ch.kind && out[k].end == a && out[k].old == ch.old {
			out[k].end = b
			continue
		}
		out = append(out, ch)
	}
	return out
}

// sameObject reports whether mappings o and n map the same thing at
// address a: the same file (or none) at the same offset, shared or not.
// Anonymous private memory cannot be told apart; the tracker and
// resetContents see to its contents.
func sameObject(o, n procfs.Mapping, a uint64) bool {
	if o.Shared() != n.Shared() || o.Inode != n.Inode || o.Major != n.Major || o.Minor != n.Minor {
		return false
	}
	return o.Inode == 0 || o.Offset+(a-o.Start) == n.Offset+(a-n.Start)
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

// ---------------------------------------------------------- kernel state

// restoreProcessState puts back what the journal recorded for the whole
// process: descriptors and the working directory, file offsets, signal
// dispositions, umask, resource limits and prctl attributes. What fails is
// reported, and the rollback goes on.
func (r *rollback) restoreProcessState() {
	p, j := r.p, r.j
	r.restoreFDs()
	for i := len(j.offsets) - 1; i >= 0; i-- {
		o := j.offsets[i]
		if _, err := unix.Seek(int(o.file.Fd()), o.off, unix.SEEK_SET); err != nil {
			r.failf("offset %d of %s (%v)", o.off, o.file.Name(), err)
		}
	}
	data := dataPage(p)
	for _, sig := range sortedKeys(j.sigactions) {
		err := p.writeMem(data, j.sigactions[sig])
		if err == nil {
			_, err = r.inject(unix.SYS_RT_SIGACTION, uint64(sig), data, 0, 8)
		}
		if err != nil {
			r.failf("disposition of %s (%v)", signalName(sig), err)
		}
	}
	if j.umask != nil {
		if _, err := r.inject(unix.SYS_UMASK, uint64(*j.umask)); err != nil {
			r.failf("umask %#o (%v)", *j.umask, err)
		}
	}
	for _, res := range sortedKeys(j.rlimits) {
		lim := j.rlimits[res]
		if err := unix.Prlimit(p.pid, res, &lim, nil); err != nil {
			r.failf("resource limit %d (%v)", res, err)
		}
	}
	for k, v := range j.prctls {
		if k.tid == 0 {
			if _, err := r.inject(unix.SYS_PRCTL, k.option, v, 0, 0, 0); err != nil {
				r.failf("prctl option %d (%v)", k.option, err)
			}
		}
	}
	for _, n := range j.notes {
		r.failf("%s: cannot be undone", n)
	}
	for _, l := range j.lost {
		r.failf("%s: not recorded", l)
	}
}

// restoreFDs puts every descriptor closed or replaced since the
// checkpoint back, referring to the open file description it referred to
// (the journal holds it), with its close-on-exec flag, and the working
// directory.
func (r *rollback) restoreFDs() {
	recs := r.j.finalFDs()
	files := make([]*os.File, 0, len(recs)+1)
	for _, rec := range recs {
		files = append(files, rec.file)
	}
	if r.j.cwd != nil {
		files = append(files, r.j.cwd)
	}
	if len(files) == 0 {
		return
	}
	got, err := r.channel().pass(files)
	if err != nil {
		var nums []string
		for _, rec := range recs {
			nums = append(nums, fmt.Sprint(rec.num))
		}
		if r.j.cwd != nil {
			nums = append(nums, "the working directory")
		}
		r.failf("descriptor %s (%v)", strings.Join(nums, ", "), err)
		return
	}
	if r.j.cwd != nil {
		cwd := got[len(got)-1]
		got = got[:len(got)-1]
		if _, err := r.inject(unix.SYS_FCHDIR, uint64(cwd)); err != nil {
			r.failf("working directory (%v)", err)
		}
		r.inject(unix.SYS_CLOSE, uint64(cwd))
	}
	// A descriptor received where another is to be restored moves away
	// first.
	target := make(map[int]bool, len(recs))
	for _, rec := range recs {
		target[rec.num] = true
	}
	for i, g := range got {
		if g != recs[i].num && target[g] {
			n, err := r.inject(unix.SYS_FCNTL, uint64(g), unix.F_DUPFD_CLOEXEC, uint64(r.ch.low))
			if err == nil {
				r.inject(unix.SYS_CLOSE, uint64(g))
				got[i] = int(n)
			}
		}
	}
	for i, rec := range recs {
		var err error
		if got[i] == rec.num {
			fl := uint64(0)
			if rec.cloexec {
				fl = unix.FD_CLOEXEC
			}
			_, err = r.inject(unix.SYS_FCNTL, uint64(rec.num), unix.F_SETFD, fl)
		} else {
			fl := uint64(0)
			if rec.cloexec {
				fl = unix.O_CLOEXEC
			}
			_, err = r.inject(unix.SYS_DUP3, uint64(got[i]), uint64(rec.num), fl)
			r.inject(unix.SYS_CLOSE, uint64(got[i]))
		}
		if err != nil {
			r.failf("descriptor %d (%v)", rec.num, err)
		}
	}
}

// closeNewFDs closes the descriptors opened since the checkpoint.
func (r *rollback) closeNewFDs() {
	now, err := r.p.views.fds.FDs()
	if err != nil {
		r.failf("descriptors opened since the checkpoint (%v)", err)
		return
	}
	skip := -1
	if r.ch != nil {
		skip = r.ch.in
	}
	for _, fd := range now {
		if !r.c.hasFD(fd) && fd != skip {
			if _, err := r.inject(unix.SYS_CLOSE, uint64(fd)); err != nil {
				r.failf("close descriptor %d opened since the checkpoint (%v)", fd, err)
			}
		}
	}
}

// ---------------------------------------------------------------- threads

// restoreThreads gives every thread of the checkpoint its state back,
// bringing back those that exited since, then the per-thread state the
// journal recorded. It returns the number of threads restored.
func (r *rollback) restoreThreads() (int, error) {
	p, c := r.p, r.c
	tids := make([]int, 0, len(c.threads))
	for tid := range c.threads {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	threads := 0
	for _, tid := range tids {
		ts := c.threads[tid]
		t := p.threads[tid]
		if t == nil {
			// It exited since the checkpoint; the memory says it runs.
			var err error
			if t, err = r.s.resurrect(p, r.th, tid, ts); err != nil {
				return threads, err
			}
			r.renamed[tid] = t.tid
		}
		if err := r.s.restoreRseq(t, ts.rseq); err != nil {
			return threads, err
		}
		// Fault signals (and traps) still pending from before the
		// rollback belong to the undone execution: they are swallowed
		// when they arrive. (An interrupt is reported before pending
		// signals are dequeued.) Real faults recur from the restored state.
		t.staleSigs = pendingFaults(t.tid)
		if err := restoreThread(t, ts); err != nil {
			return threads, err
		}
		threads++
	}
	for _, t := range p.threads {
		r.restoreThreadState(t)
	}
	return threads, nil
}

// restoreThreadState puts back the per-thread state the journal recorded
// for t: name, alternate signal stack, prctl attributes, and for a thread
// brought back in place of one that exited, that one's robust futex list
// and CPU affinity.
func (r *rollback) restoreThreadState(t *thread) {
	p, j := r.p, r.j
	data := dataPage(p)
	e := j.exited[t.tid]
	name, ok := j.names[t.tid]
	if !ok && e != nil {
		name, ok = e.name, e.name != ""
	}
	if ok {
		if cur, err := threadName(p.pid, t.tid); err != nil || cur != name {
			err := p.writeMem(data, append([]byte(name), 0))
			if err == nil {
				_, err = r.s.inject(t, unix.SYS_PRCTL, unix.PR_SET_NAME, data, 0, 0, 0)
			}
			if err != nil {
				r.failf("name %q of thread %d (%v)", name, t.tid, err)
			}
		}
	}
	alt, ok := j.altstacks[t.tid]
	if !ok && e != nil && e.altstack != nil {
		alt, ok = e.altstack, true
	}
	if ok {
		b := append([]byte(nil), alt...)
		// Only SS_DISABLE and SS_AUTODISARM may be set (SS_ONSTACK is
		// reported, not set).
		fl := le32(b[8:]) & (ssDisable | ssAutodisarm)
		b[8], b[9], b[10], b[11] = byte(fl), byte(fl>>8), byte(fl>>16), byte(fl>>24)
		err := p.writeMem(data, b)
		if err == nil {
			_, err = r.s.inject(t, unix.SYS_SIGALTSTACK, data, 0)
		}
		if err != nil {
			r.failf("alternate signal stack of thread %d (%v)", t.tid, err)
		}
	}
	for k, v := range j.prctls {
		if k.tid == t.tid {
			if _, err := r.s.inject(t, unix.SYS_PRCTL, k.option, v, 0, 0, 0); err != nil {
				r.failf("prctl option %d of thread %d (%v)", k.option, t.tid, err)
			}
		}
	}
	if e == nil {
		return
	}
	if e.robust[0] != 0 {
		if _, err := r.s.inject(t, unix.SYS_SET_ROBUST_LIST, e.robust[0], e.robust[1]); err != nil {
			r.failf("robust futex list of thread %d (%v)", t.tid, err)
		}
	}
	if len(e.affinity) == int(unsafe.Sizeof(unix.CPUSet{})) {
		set := *(*unix.CPUSet)(unsafe.Pointer(&e.affinity[0]))
		if err := unix.SchedSetaffinity(t.tid, &set); err != nil {
			r.failf("CPU affinity of thread %d (%v)", t.tid, err)
		}
	}
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
	for _, c := range p.heldStates() {
		if st, ok := c.threads[oldTid]; ok {
			delete(c.threads, oldTid)
			c.threads[newTid] = st
		}
		if c.journal != nil {
			c.journal.renameThread(oldTid, newTid)
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
	t.replay = nil
	t.park = nil // it is elsewhere now; released by the main loop
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
		if sig := e.ws.StopSignal(); ptrace.Event(e.ws) == 0 && !isFault(sig) && sig != unix.SIGSTOP && sig != ptrace.SyscallStop {
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
// exit(2): only that thread ends, as if it had never been started. (A
// signal would end the whole process.) A thread that cannot get back to
// user mode to make the call, because its rseq area is gone (it unmapped
// its own stack, say), is given a page there first; the layout restore
// removes that page again.
func (r *rollback) endNewThreads() error {
	p, c := r.p, r.c
	for _, t := range p.threads {
		if c.threads[t.tid] != nil || t.awaitInitial {
			continue
		}
		_, err := r.s.inject(t, unix.SYS_EXIT, 0)
		if errors.Is(err, errCannotRun) && r.shelter(t) {
			_, err = r.s.inject(t, unix.SYS_EXIT, 0)
		}
		if err != nil && !isGone(err) {
			return fmt.Errorf("end thread %d, created since the checkpoint: %w", t.tid, err)
		}
		r.s.removeThread(t)
	}
	return nil
}

// shelter maps a page where t's rseq area was, if nothing is mapped there.
func (r *rollback) shelter(t *thread) bool {
	rs, err := ptrace.GetRseq(t.tid)
	if err != nil || rs.Pointer == 0 {
		return false
	}
	page := rs.Pointer &^ (pageSize - 1)
	got, err := r.inject(unix.SYS_MMAP, page, pageSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	r.s.debugf("rollback of %d: page for the rseq area of %d at %#x: %#x %v", r.p.pid, t.tid, page, got, err)
	return err == nil && got == page
}

func sortedKeys[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

// sigaltstack flags (linux/signal.h).
const (
	ssDisable    = 2
	ssAutodisarm = 1 << 31
)
