package checkpoint

import (
	"fmt"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

// Dirty is the dirty-tracking engine: a userfaultfd created inside the
// tracee with asynchronous write-protect over its writable mappings, and
// PAGEMAP_SCAN to collect (and re-protect, atomically) the pages written
// since the previous scan. A shadow copy holds the contents of every
// tracked page as of the newest checkpoint; a checkpoint copies in only
// the pages written since the last scan, a rollback copies back only the
// pages written since the checkpoint. Nothing runs in the tracee and
// nothing is visible to it: no child, no signal, no fd.
//
// Nested checkpoints keep an undo log: when checkpoint k overwrites
// shadow pages, their previous contents (those of checkpoint k-1) go into
// k's log, so that rolling back or committing k can bring the shadow back
// to k-1.
type Dirty struct {
	pid     int
	uffd    int
	pagemap int
	mem     *os.File
	maps    *procfs.MapsQuerier
	scan    scanner

	// shadow maps a page address to its contents at the newest
	// checkpoint. An anonymous private page missing here was never
	// populated: its contents are zero.
	shadow map[uint64][]byte
	// levels are the active checkpoints, oldest first.
	levels []*level
	// stale holds pages known to differ from the shadow that the
	// write-protect bits no longer report (after an undo log is applied).
	stale map[uint64]struct{}
	// always lists ranges whose every page is copied at each checkpoint
	// and rollback: shared mappings (other processes write them without
	// touching our page tables) and mappings that cannot be registered.
	always []span
	// writable are the writable mappings at the newest checkpoint (what
	// gets write-protect armed); mapped are all mappings. A page armed
	// while writable stays tracked after an mprotect to read-only.
	writable []procfs.Mapping
	mapped   []procfs.Mapping
	// undo is the log of the checkpoint being taken, while shadow pages
	// are dropped or replaced (nil at depth 0: nothing to undo to).
	undo map[uint64][]byte
	// excluded are ranges of the supervisor's own, never tracked.
	excluded []span
}

type span struct{ start, end uint64 }

var debugRegister = os.Getenv("ASSURE_DEBUG") != ""

type level struct {
	id ID
	// undo holds, for pages this checkpoint overwrote in the shadow, the
	// contents they had at the previous checkpoint (nil: zero page).
	undo map[uint64][]byte
	// ownShared are the shared pages in undo that this process wrote
	// (the rest were copied because shared memory is copied whole).
	ownShared map[uint64]bool
}

// NewDirty takes ownership of uffd, a userfaultfd of process pid (made in
// the tracee with UffdFlags and copied out with pidfd_getfd).
func NewDirty(pid, uffd int) (*Dirty, error) {
	if err := enableAsyncWP(uffd); err != nil {
		unix.Close(uffd)
		return nil, err
	}
	pm, err := unix.Open(fmt.Sprintf("/proc/%d/pagemap", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(uffd)
		return nil, fmt.Errorf("open pagemap of %d: %w", pid, err)
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		unix.Close(uffd)
		unix.Close(pm)
		return nil, fmt.Errorf("open memory of %d: %w", pid, err)
	}
	mq, err := procfs.NewMapsQuerier(pid)
	if err != nil {
		unix.Close(uffd)
		unix.Close(pm)
		mem.Close()
		return nil, fmt.Errorf("open maps of %d: %w", pid, err)
	}
	return &Dirty{
		pid: pid, uffd: uffd, pagemap: pm, mem: mem, maps: mq,
		scan:   scanner{fd: pm},
		shadow: make(map[uint64][]byte),
		stale:  make(map[uint64]struct{}),
	}, nil
}

// Close implements Tracker. Closing the userfaultfd unregisters every
// range; the kernel drops the write-protect state with it.
func (d *Dirty) Close() error {
	d.mem.Close()
	d.maps.Close()
	unix.Close(d.pagemap)
	return unix.Close(d.uffd)
}

// Active implements Tracker.
func (d *Dirty) Active(id ID) bool { return d.index(id) >= 0 }

func (d *Dirty) index(id ID) int {
	for i, l := range d.levels {
		if l.id == id {
			return i
		}
	}
	return -1
}

// Checkpoint implements Tracker.
func (d *Dirty) Checkpoint(id ID, maps []procfs.Mapping) (Stats, error) {
	d.undo = nil
	if len(d.levels) > 0 {
		d.undo = make(map[uint64][]byte)
	}
	defer func() { d.undo = nil }()
	if err := d.sync(maps); err != nil {
		return Stats{}, err
	}
	own, err := d.collect()
	if err != nil {
		return Stats{}, err
	}
	var ownShared map[uint64]bool
	for _, p := range own {
		d.logUndo(p)
		if d.undo != nil && d.isShared(p) {
			if ownShared == nil {
				ownShared = make(map[uint64]bool)
			}
			ownShared[p] = true
		}
	}
	// Shared mappings are copied whole: other processes write them
	// without this process's page tables seeing it. ownShared tells which
	// of them this process wrote, so that a rollback of this process alone
	// never undoes another process's writes.
	// With an undo log holding the old buffers, fill new ones. Pages of a
	// file mapping past the end of the file cannot be read (the program
	// gets SIGBUS there too) and are left out.
	if err := d.readInto(own, d.undo != nil, true); err != nil {
		return Stats{}, err
	}
	extra := d.sharedOnly(own)
	for _, p := range extra {
		d.logUndo(p)
	}
	// Shared file pages past the end of the file cannot be read (the
	// program gets SIGBUS there too): they are left out.
	if err := d.readInto(extra, d.undo != nil, true); err != nil {
		return Stats{}, err
	}
	pages := append(own, extra...)
	clear(d.stale)
	d.levels = append(d.levels, &level{id: id, undo: d.undo, ownShared: ownShared})
	return Stats{Pages: len(pages)}, nil
}

// logUndo records the shadow contents of page p in the log of the
// checkpoint being taken, once, before they are replaced or dropped.
func (d *Dirty) logUndo(p uint64) {
	if d.undo == nil {
		return
	}
	if _, ok := d.undo[p]; !ok {
		d.undo[p] = d.shadow[p]
	}
}

// forget drops the shadow of page p (logged first when nested).
func (d *Dirty) forget(p uint64) {
	d.logUndo(p)
	delete(d.shadow, p)
}

// sharedOnly returns the pages of the always-copied ranges not in own.
func (d *Dirty) sharedOnly(own []uint64) []uint64 {
	if len(d.always) == 0 {
		return nil
	}
	set := make(map[uint64]struct{}, len(own))
	for _, p := range own {
		set[p] = struct{}{}
	}
	var out []uint64
	for _, sp := range d.always {
		for p := sp.start; p < sp.end; p += PageSize {
			if _, ok := set[p]; !ok && d.isMapped(p) {
				out = append(out, p)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// collect returns the sorted pages this process changed since the shadow
// was taken: those written since the last scan, and the stale ones.
func (d *Dirty) collect() ([]uint64, error) {
	set := make(map[uint64]struct{}, len(d.stale)+16)
	for p := range d.stale {
		set[p] = struct{}{}
	}
	err := d.scan.written(func(start, end uint64) {
		for p := start; p < end; p += PageSize {
			set[p] = struct{}{}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("scan written pages of %d: %w", d.pid, err)
	}
	out := make([]uint64, 0, len(set))
	for p := range set {
		if d.isMapped(p) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func (d *Dirty) isMapped(p uint64) bool {
	i := sort.Search(len(d.mapped), func(i int) bool { return d.mapped[i].End > p })
	return i < len(d.mapped) && d.mapped[i].Start <= p
}

// sync arms write-protect on writable mappings that are not armed yet
// (mapped since the previous checkpoint) and records them in the shadow.
func (d *Dirty) sync(maps []procfs.Mapping) error {
	old := d.mapped
	d.restrictTo(maps)
	changed := !sameLayout(old, d.mapped)
	writable := d.writable
	fresh, err := d.unarmed(writable)
	if err != nil {
		return err
	}
	d.always = d.always[:0]
	for _, m := range writable {
		if m.Shared() {
			d.always = append(d.always, span{m.Start, m.End})
		}
		if !overlaps(fresh, m.Start, m.End) {
			continue
		}
		if err := d.arm(m); err != nil {
			return err
		}
	}
	if changed {
		d.prune()
	}
	return nil
}

// arm registers one new mapping for write-protect. Its present pages then
// read as written and the next scan copies them; pages of anonymous
// memory never touched are zero and need no copy. File-backed and shared
// pages have contents before they are touched, so those are copied whole.
func (d *Dirty) arm(m procfs.Mapping) error {
	for p := m.Start; p < m.End; p += PageSize {
		d.forget(p)
	}
	if err := registerWP(d.uffd, m.Start, m.End); err != nil {
		// Not registrable (device memory, some special mappings): copy it
		// whole at every checkpoint instead.
		if debugRegister {
			fmt.Fprintf(os.Stderr, "register %#x-%#x %s: %v\n", m.Start, m.End, m.Perms, err)
		}
		if !m.Shared() {
			d.always = append(d.always, span{m.Start, m.End})
		}
		return nil
	}
	if !m.Anonymous() || m.Shared() {
		pages := make([]uint64, 0, m.Size()/PageSize)
		for p := m.Start; p < m.End; p += PageSize {
			pages = append(pages, p)
		}
		// Pages past the end of a mapped file cannot be read (SIGBUS
		// for the program too): they are left out.
		return d.readPagesLenient(pages)
	}
	return nil
}

// unarmed returns the parts of the given mappings where write-protect is
// not armed, scanning adjacent mappings together.
func (d *Dirty) unarmed(ms []procfs.Mapping) ([]span, error) {
	var fresh []span
	add := func(start, end uint64) { fresh = append(fresh, span{start, end}) }
	for i := 0; i < len(ms); {
		j := i + 1
		for j < len(ms) && ms[j].Start == ms[j-1].End {
			j++
		}
		if err := d.scan.unprotectable(ms[i].Start, ms[j-1].End, add); err != nil {
			return nil, fmt.Errorf("scan unarmed mappings of %d: %w", d.pid, err)
		}
		i = j
	}
	return fresh, nil
}

// prune drops shadow pages that are no longer mapped.
func (d *Dirty) prune() {
	for p := range d.shadow {
		if !d.isMapped(p) {
			d.forget(p)
		}
	}
}

// Rollback implements Tracker.
func (d *Dirty) Rollback(id ID, coordinated bool) (Stats, error) {
	j := d.index(id)
	if j < 0 {
		return Stats{}, fmt.Errorf("rollback of %d: checkpoint %d is not active", d.pid, id)
	}
	maps, err := d.maps.Maps()
	if err != nil {
		return Stats{}, fmt.Errorf("rollback of %d: %w", d.pid, err)
	}
	d.restrictTo(maps)
	dirty, err := d.collect()
	if err != nil {
		return Stats{}, err
	}
	remapped, err := d.rearm()
	if err != nil {
		return Stats{}, err
	}
	// The contents at checkpoint j: the shadow holds the newest
	// checkpoint; the undo logs of the newer ones, applied newest first,
	// take it back to j.
	want := make(map[uint64][]byte, len(dirty))
	for _, p := range append(dirty, remapped...) {
		want[p] = d.shadow[p]
	}
	for _, s := range d.always {
		for p := s.start; p < s.end; p += PageSize {
			if _, ok := want[p]; !ok && d.isMapped(p) && (coordinated || !d.isShared(p)) {
				want[p] = d.shadow[p]
			}
		}
	}
	// Shared pages another process wrote between the checkpoints are that
	// process's business unless everyone rolls back.
	mine := func(p uint64) bool {
		if coordinated || !d.isShared(p) {
			return true
		}
		if _, ok := want[p]; ok {
			return true
		}
		for k := len(d.levels) - 1; k > j; k-- {
			if d.levels[k].ownShared[p] {
				return true
			}
		}
		return false
	}
	for k := len(d.levels) - 1; k > j; k-- {
		for p, c := range d.levels[k].undo {
			if mine(p) {
				want[p] = c
			}
			d.shadow[p] = c
		}
	}
	if err := d.writePages(want); err != nil {
		return Stats{}, err
	}
	clear(d.stale)
	d.levels = d.levels[:j+1]
	d.pop(j)
	// Our own writes marked those pages written; they now equal the
	// shadow (or are listed stale), so clear the marks.
	if err := d.scan.written(func(uint64, uint64) {}); err != nil {
		return Stats{}, err
	}
	return Stats{Pages: len(want)}, nil
}

// rearm finds writable memory that is not write-protected at a rollback:
// mappings the supervisor has just mapped again (the rescue point
// unmapped them, or shrank the heap). It arms them and returns their
// pages, whose contents all come from the shadow.
func (d *Dirty) rearm() ([]uint64, error) {
	fresh, err := d.unarmed(d.writable)
	if err != nil {
		return nil, err
	}
	var pages []uint64
	for _, m := range d.writable {
		if !overlaps(fresh, m.Start, m.End) {
			continue
		}
		if err := registerWP(d.uffd, m.Start, m.End); err != nil {
			continue // copied whole at each rollback (d.always)
		}
		for p := m.Start; p < m.End; p += PageSize {
			pages = append(pages, p)
		}
	}
	return pages, nil
}

func (d *Dirty) isWritable(p uint64) bool {
	i := sort.Search(len(d.writable), func(i int) bool { return d.writable[i].End > p })
	return i < len(d.writable) && d.writable[i].Start <= p
}

func (d *Dirty) isShared(p uint64) bool {
	i := sort.Search(len(d.writable), func(i int) bool { return d.writable[i].End > p })
	return i < len(d.writable) && d.writable[i].Start <= p && d.writable[i].Shared()
}

// restrictTo forgets writable mappings that are gone (the caller unmapped
// what the rescue point mapped) so that no write goes to unmapped memory.
func (d *Dirty) restrictTo(maps []procfs.Mapping) {
	var w, all []procfs.Mapping
	for _, m := range maps {
		if m.End > addressSpaceEnd || overlaps(d.excluded, m.Start, m.End) {
			continue
		}
		all = append(all, m)
		if m.Writable() {
			w = append(w, m)
		}
	}
	d.writable, d.mapped = w, all
}

// Exclude implements Tracker.
func (d *Dirty) Exclude(start, end uint64) {
	d.excluded = append(d.excluded, span{start, end})
}

// Discarded implements Tracker. Only pages the shadow holds contents for
// can have lost any: the others were never populated (zero) when the
// shadow was taken, and are zero again once discarded. Shared pages are
// all in the shadow.
func (d *Dirty) Discarded(start, end uint64) {
	start &^= PageSize - 1
	if (end-start)/PageSize > uint64(len(d.shadow)) {
		for p := range d.shadow {
			if p >= start && p < end {
				d.stale[p] = struct{}{}
			}
		}
		return
	}
	for p := start; p < end; p += PageSize {
		if _, ok := d.shadow[p]; ok {
			d.stale[p] = struct{}{}
		}
	}
}

// Commit implements Tracker.
func (d *Dirty) Commit(id ID) {
	j := d.index(id)
	if j < 0 {
		return
	}
	if j < len(d.levels)-1 {
		// A newer checkpoint stays: its undo log must now lead to the
		// checkpoint before j. Pages j logged carry the older contents.
		next := d.levels[j+1]
		if j == 0 {
			next.undo, next.ownShared = nil, nil
		} else {
			for p, c := range d.levels[j].undo {
				next.undo[p] = c
			}
			for p := range d.levels[j].ownShared {
				if next.ownShared == nil {
					next.ownShared = make(map[uint64]bool)
				}
				next.ownShared[p] = true
			}
		}
		d.levels = append(d.levels[:j], d.levels[j+1:]...)
		return
	}
	d.pop(j)
}

// pop removes the newest checkpoint j, bringing the shadow back to the
// one before it.
func (d *Dirty) pop(j int) {
	l := d.levels[j]
	d.levels = d.levels[:j]
	for p, c := range l.undo {
		if c == nil {
			delete(d.shadow, p)
		} else {
			d.shadow[p] = c
		}
		d.stale[p] = struct{}{}
	}
}
