package supervisor

import (
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"
)

// A journal is the undo log of one checkpoint in one process: the kernel
// state that neither the memory snapshot nor the registers hold, as it
// was before the system calls made since the checkpoint changed it. Each
// entry is recorded just before the call that changes it runs (see
// beforeSyscall), never at the checkpoint itself, so that taking a
// checkpoint costs nothing here. A rollback puts every recorded value
// back; a commit drops the journal, or, for a nested checkpoint, hands its
// entries to the enclosing one, whose own (older) entries win.
//
// Values are kept per key (signal, thread, descriptor number, ...): the
// first record of a key is the value at the checkpoint, later ones are
// not taken. Descriptors and offsets are lists replayed newest first, so
// that the oldest record of each wins there too.
type journal struct {
	sigactions map[int][]byte // kernel struct sigaction, by signal
	altstacks  map[int][]byte // stack_t, by thread
	names      map[int]string // comm, by thread
	prctls     map[prctlKey]uint64
	rlimits    map[int]unix.Rlimit
	umask      *uint32
	cwd        *os.File // O_PATH descriptor of the working directory
	exited     map[int]*exitedThread

	fds     []fdRecord
	fdSeen  map[int]bool // descriptor numbers recorded (dedupe)
	offsets []offsetRecord
	offSeen map[int]bool // descriptor numbers examined for their offset

	// files are the files of mappings changed since the checkpoint, kept
	// open to map them again, by device and inode.
	files map[fileKey]*os.File
	// pages are the contents of pages of private mappings that were not
	// writable (so the dirty tracker has no copy of them), saved before a
	// call unmapped, replaced, re-protected or discarded them.
	pages map[uint64][]byte
	// touched are the ranges such calls covered: their pages that were
	// not writable at the checkpoint are reset to the saved contents (or
	// to nothing) at a rollback.
	touched []span

	// notes name changes that cannot be undone; lost, changes that
	// could not be recorded. A rollback reports both.
	notes []string
	lost  []string
	// released: merged into another journal, or dropped.
	released bool
}

type prctlKey struct {
	option uint64
	tid    int // 0 for an attribute of the whole process
}

type fileKey struct {
	major, minor uint32
	inode        uint64
}

// fdRecord is a descriptor as it was before a call closed or replaced
// it: the same open file description, taken with pidfd_getfd.
type fdRecord struct {
	num     int
	file    *os.File
	cloexec bool
}

// offsetRecord is the offset an open file description had.
type offsetRecord struct {
	file *os.File
	off  int64
}

// exitedThread is what a thread that exits while a checkpoint is active
// takes with it besides memory and registers (those are in the
// checkpoint): what a rollback gives the thread that replaces it.
type exitedThread struct {
	name     string
	altstack []byte
	robust   [2]uint64 // get_robust_list: head, length
	affinity []byte    // sched_getaffinity mask
}

// newJournal returns an empty journal. Nothing is allocated until the
// first record: a checkpoint whose window makes no state-changing call
// costs nothing here.
func newJournal() *journal { return &journal{} }

// ensure allocates the journal's tables, at its first record.
func (j *journal) ensure() {
	if j.fdSeen != nil || j.released {
		return
	}
	j.sigactions = make(map[int][]byte)
	j.altstacks = make(map[int][]byte)
	j.names = make(map[int]string)
	j.prctls = make(map[prctlKey]uint64)
	j.rlimits = make(map[int]unix.Rlimit)
	j.exited = make(map[int]*exitedThread)
	j.fdSeen = make(map[int]bool)
	j.offSeen = make(map[int]bool)
	j.files = make(map[fileKey]*os.File)
	j.pages = make(map[uint64][]byte)
}

// release closes what the journal holds open.
func (j *journal) release() {
	if j == nil {
		return
	}
	for _, r := range j.fds {
		r.file.Close()
	}
	for _, r := range j.offsets {
		r.file.Close()
	}
	for _, f := range j.files {
		f.Close()
	}
	if j.cwd != nil {
		j.cwd.Close()
	}
	*j = journal{released: true}
}

// mergeInto hands j's entries to parent, the journal of the enclosing
// checkpoint, when j's checkpoint commits (or is rolled through): where
// both recorded a key, parent's older value stays.
func (j *journal) mergeInto(parent *journal) {
	if parent.released || j.fdSeen == nil {
		j.release() // nothing to keep, or nothing recorded
		return
	}
	parent.ensure()
	mergeMap(parent.sigactions, j.sigactions)
	mergeMap(parent.altstacks, j.altstacks)
	mergeMap(parent.names, j.names)
	mergeMap(parent.prctls, j.prctls)
	mergeMap(parent.rlimits, j.rlimits)
	mergeMap(parent.exited, j.exited)
	mergeMap(parent.pages, j.pages)
	if parent.umask == nil {
		parent.umask = j.umask
	}
	if parent.cwd == nil {
		parent.cwd, j.cwd = j.cwd, nil
	}
	for _, r := range j.fds {
		if parent.fdSeen[r.num] {
			r.file.Close()
			continue
		}
		parent.fdSeen[r.num] = true
		parent.fds = append(parent.fds, r)
	}
	// Offsets are not deduplicated by number: the same number may have
	// named another file description in the enclosing checkpoint's time.
	parent.offsets = append(parent.offsets, j.offsets...)
	for k, f := range j.files {
		if parent.files[k] == nil {
			parent.files[k] = f
		} else {
			f.Close()
		}
	}
	parent.touched = append(parent.touched, j.touched...)
	parent.notes = append(parent.notes, j.notes...)
	parent.lost = append(parent.lost, j.lost...)
	if j.cwd != nil {
		j.cwd.Close()
	}
	*j = journal{released: true}
}

func mergeMap[K comparable, V any](dst, src map[K]V) {
	for k, v := range src {
		if _, ok := dst[k]; !ok {
			dst[k] = v
		}
	}
}

// note records a change that no rollback can undo (once per kind).
func (j *journal) note(what string) {
	for _, n := range j.notes {
		if n == what {
			return
		}
	}
	j.notes = append(j.notes, what)
}

func (j *journal) losef(format string, args ...any) {
	j.lost = append(j.lost, fmt.Sprintf(format, args...))
}

// renameThread moves per-thread entries of a thread that a rollback
// replaced with a new one (resurrect) to the new thread's id.
func (j *journal) renameThread(oldTid, newTid int) {
	renameKey(j.altstacks, oldTid, newTid)
	renameKey(j.names, oldTid, newTid)
	renameKey(j.exited, oldTid, newTid)
	for k, v := range j.prctls {
		if k.tid == oldTid {
			delete(j.prctls, k)
			j.prctls[prctlKey{k.option, newTid}] = v
		}
	}
}

func renameKey[V any](m map[int]V, from, to int) {
	if v, ok := m[from]; ok {
		delete(m, from)
		m[to] = v
	}
}

// finalFDs returns, per descriptor number, the record that holds its
// state at the checkpoint: the oldest one.
func (j *journal) finalFDs() []fdRecord {
	byNum := make(map[int]fdRecord, len(j.fds))
	for i := len(j.fds) - 1; i >= 0; i-- {
		byNum[j.fds[i].num] = j.fds[i]
	}
	out := make([]fdRecord, 0, len(byNum))
	for _, r := range byNum {
		out = append(out, r)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].num < out[b].num })
	return out
}

// journalOf returns the journal that entries about p go to: that of its
// newest checkpoint (nil without one).
func journalOf(p *process) *journal {
	if c := newestCkpt(p); c != nil {
		return c.journal
	}
	return nil
}

// heldStates lists the checkpoints of p whose kernel state the supervisor
// holds: its own and the fast path's recorded window state.
func (p *process) heldStates() []*procCheckpoint {
	if p.fast != nil && p.fast.snap != nil {
		return append([]*procCheckpoint{p.fast.snap}, p.ckpts...)
	}
	return p.ckpts
}

// newestCkpt returns p's newest checkpoint whose kernel state the
// supervisor holds: the newest of its own, else the kernel state recorded
// at the first system call of the fast path's open window (nil: none).
func newestCkpt(p *process) *procCheckpoint {
	if len(p.ckpts) > 0 {
		return p.ckpts[len(p.ckpts)-1]
	}
	if p.fast != nil {
		return p.fast.snap
	}
	return nil
}

// inCheckpoint reports whether thread tid existed at one of p's active
// checkpoints.
func inCheckpoint(p *process, tid int) bool {
	for _, c := range p.heldStates() {
		if _, ok := c.threads[tid]; ok { // nil: a state taken at a rollback
			return true
		}
	}
	return false
}
