package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

// Mirror is the dirty-tracking engine: a userfaultfd created inside the
// tracee with asynchronous write-protect over its writable mappings, and
// PAGEMAP_SCAN to collect (and re-protect, atomically) the pages written
// since the previous scan.
//
// The shadow is a memfd laid out as a mirror of the tracked ranges: each
// range has its own span of the file, page for page. It holds, for every
// tracked page, its contents as of the last resetting scan (the outermost
// checkpoint); pages written since are flagged written by the kernel. The
// file is sparse, so it holds only what was ever copied: populated pages,
// not the mapped size. Because the same file can be mapped inside the
// tracee, the injected code takes outermost checkpoints itself with the
// same layout (see Ranges and Outer).
//
// Nested checkpoints never reset the written flags: they record, in a log
// of their own, the contents of the pages written since the outermost
// scan. The contents of page P at checkpoint k are then log_k[P] when P is
// there, else the shadow's (P was not written between the outermost scan
// and k). Commit drops a log; nothing has to be merged.
type Mirror struct {
	pid     int
	uffd    int
	pagemap int
	mem     *os.File
	maps    *procfs.MapsQuerier
	scan    scanner

	shadowFd int
	shadow   []byte // the supervisor's mapping of the whole shadow file
	alloc    spanAlloc

	initOnce sync.Once
	ready    chan struct{} // closed when Init is done
	initEr   error

	// ranges are the tracked address ranges, sorted, with their offset in
	// the shadow; retired ones are no longer mapped but still referenced
	// by an active checkpoint.
	ranges  []Range
	retired []Range
	gen     uint64 // bumped whenever ranges change
	// clock counts syncs: ranges are born and die at a tick, levels are
	// taken at one; the ranges of level L are those alive at L's tick.
	clock  uint64
	levels []*mlevel
	// exclude are mappings never tracked: the supervisor's own in the
	// process (the shadow itself, the control block).
	exclude []span
	// discarded are ranges whose contents the process dropped while a
	// checkpoint was active (Discarded), restored at its rollback.
	discarded []span

	// deferCopy makes sync collect in pending the spans it would copy
	// (SyncLater); bg is open while a background copy of them runs, and
	// bgErr is how it ended.
	deferCopy bool
	pending   []laterSpan
	bg        chan struct{}
	bgErr     error
}

// Range is a tracked address range and where its pages live in the shadow.
type Range struct {
	Start, End uint64
	Off        uint64 // offset of Start in the shadow file
	Cap        uint64 // shadow space reserved from Off (End may grow)
	// Shared ranges are written by other processes without this process's
	// page tables knowing: they are copied whole at every checkpoint.
	Shared bool
	// born and died are the clock ticks of the sync that tracked the
	// range and of the one that retired it (0: alive).
	born, died uint64
}

// aliveAt reports whether r was tracked at clock tick c.
func (r Range) aliveAt(c uint64) bool { return r.born <= c && (r.died == 0 || r.died > c) }

func (r Range) contains(p uint64) bool { return p >= r.Start && p < r.End }

type mlevel struct {
	id    ID
	clock uint64 // the tick it was taken at
	// external levels were taken by the code injected into the process
	// (an outermost checkpoint); the engine holds nothing for them.
	external bool
	// log holds, for nested levels, the contents at this level of the
	// pages written since the outermost scan (and of shared ranges).
	log map[uint64][]byte
}

// ShadowSize is the virtual size of the shadow file: address space only,
// the file is sparse.
const ShadowSize = 1 << 40

// ErrNotReady is returned by Checkpoint while the first copy of the
// process's memory is still running in the background.
var ErrNotReady = errors.New("the first copy of the process's memory is not done yet")

// NewMirror takes ownership of uffd (a userfaultfd of process pid made in
// the tracee with UffdFlags) and shadowFd (a memfd, empty, to become the
// shadow; it may also be mapped in the tracee).
func NewMirror(pid, uffd, shadowFd int) (*Mirror, error) {
	m := &Mirror{pid: pid, uffd: uffd, shadowFd: shadowFd, pagemap: -1, ready: make(chan struct{}), bg: closedChan()}
	if err := m.open(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Mirror) open() error {
	if err := enableAsyncWP(m.uffd); err != nil {
		return err
	}
	var err error
	if m.pagemap, err = unix.Open(fmt.Sprintf("/proc/%d/pagemap", m.pid), unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("open pagemap of %d: %w", m.pid, err)
	}
	m.scan = scanner{fd: m.pagemap}
	if m.mem, err = os.OpenFile(fmt.Sprintf("/proc/%d/mem", m.pid), os.O_RDWR, 0); err != nil {
		return fmt.Errorf("open memory of %d: %w", m.pid, err)
	}
	if m.maps, err = procfs.NewMapsQuerier(m.pid); err != nil {
		return fmt.Errorf("open maps of %d: %w", m.pid, err)
	}
	if err := unix.Ftruncate(m.shadowFd, ShadowSize); err != nil {
		return fmt.Errorf("size the shadow of %d: %w", m.pid, err)
	}
	b, err := unix.Mmap(m.shadowFd, 0, ShadowSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("map the shadow of %d: %w", m.pid, err)
	}
	m.shadow = b
	m.alloc = spanAlloc{size: ShadowSize}
	return nil
}

// Close implements Tracker. Closing the userfaultfd unregisters every
// range; the kernel drops the write-protect state with it.
func (m *Mirror) Close() error {
	<-m.bg
	if m.shadow != nil {
		unix.Munmap(m.shadow)
		m.shadow = nil
	}
	if m.mem != nil {
		m.mem.Close()
	}
	if m.maps != nil {
		m.maps.Close()
	}
	if m.pagemap >= 0 {
		unix.Close(m.pagemap)
	}
	unix.Close(m.shadowFd)
	return unix.Close(m.uffd)
}

// Init arms write-protect over the process's writable mappings and copies
// what they hold into the shadow. It may run on another goroutine while
// the process runs: a page written meanwhile is flagged and copied again
// by the next outermost checkpoint. A Checkpoint made meanwhile waits for
// it briefly, then fails with ErrNotReady; without Init, the first
// Checkpoint does it (and stops the process for as long as the copy takes).
// Nothing else may be called until Init returns.
func (m *Mirror) Init(maps []procfs.Mapping) error {
	m.initOnce.Do(func() {
		m.initEr = m.init(maps)
		close(m.ready)
	})
	return m.initEr
}

func (m *Mirror) init(maps []procfs.Mapping) error {
	if err := m.sync(maps); err != nil {
		return err
	}
	_, err := m.outerScan()
	return err
}

// Rebuild copies every populated tracked page into the shadow again, for
// when the shadow can no longer be trusted (a scan protected pages it did
// not copy). No checkpoint may be active; the process is stopped.
func (m *Mirror) Rebuild(maps []procfs.Mapping) error {
	<-m.bg
	if err := m.sync(maps); err != nil {
		return err
	}
	// Reset the flags first: a page written after this is flagged again.
	if err := m.scan.written(func(uint64, uint64) {}); err != nil {
		return fmt.Errorf("scan written pages of %d: %w", m.pid, err)
	}
	for _, r := range m.ranges {
		m.clearShadow(r.Start, r.End)
	}
	var pages []uint64
	for _, r := range m.ranges {
		err := m.scan.populated(r.Start, r.End, func(s, e uint64) {
			for p := s; p < e; p += PageSize {
				pages = append(pages, p)
			}
		})
		if err != nil {
			return fmt.Errorf("scan populated pages of %d: %w", m.pid, err)
		}
	}
	if err := m.copyIn(m.withShared(pages)); err != nil {
		return err
	}
	m.bgErr = nil // what a failed background copy missed is copied now
	return nil
}

// WrittenIn reports whether a tracked page of [start, end) was written
// since the last resetting scan, and false for memory not tracked at all
// (known reports whether it is).
func (m *Mirror) WrittenIn(start, end uint64) (written, known bool) {
	<-m.bg
	if !m.tracked(start) {
		return false, false
	}
	err := m.scan.scan(start, end, 0, 0, pageIsWritten, pageIsWritten, func(uint64, uint64) { written = true })
	return written, err == nil
}

// Sync tracks what was mapped or grew since the last look (no checkpoint
// may be active; the process is stopped).
func (m *Mirror) Sync(maps []procfs.Mapping) error {
	<-m.bg
	return m.sync(maps)
}

// SyncLater is Sync for a process that runs on (no checkpoint may be
// active, else it is Sync): when the memory newly tracked holds more than
// limit pages, it is write-protected and copied into the shadow in the
// background, as Init does, so that a large block mapped and filled
// between two checkpoints does not hold the process for the time its copy
// takes (some 4-8 µs a page the first time). It reports whether it went
// to the background; done is then called from there when the copy is
// over. Until then every call (Checkpoint too) waits for it.
func (m *Mirror) SyncLater(maps []procfs.Mapping, limit int, done func(error)) (bool, error) {
	<-m.bg
	if len(m.levels) > 0 {
		return false, m.sync(maps)
	}
	m.deferCopy, m.pending = true, nil
	err := m.sync(maps)
	work := m.laterWork()
	m.deferCopy, m.pending = false, nil
	if err != nil {
		return false, err
	}
	if n, err := m.laterPages(work, limit); err != nil || n <= limit {
		if err != nil {
			return false, err
		}
		return false, m.copyLater(work)
	}
	m.bg, m.bgErr = make(chan struct{}), nil
	go func() {
		err := m.copyLater(work)
		m.bgErr = err
		close(m.bg)
		done(err)
	}()
	return true, nil
}

// laterSpan is memory whose copy SyncLater put off: fresh (just
// registered: nothing of it is protected yet) or a part of an armed
// mapping that grew.
type laterSpan struct {
	span
	fresh bool
}

// laterWork merges the spans sync put off: a part of a grown mapping
// that is fresh too is handled as fresh.
func (m *Mirror) laterWork() []laterSpan {
	var fresh, grown []span
	for _, ls := range m.pending {
		if ls.fresh {
			fresh = append(fresh, ls.span)
		} else {
			grown = append(grown, ls.span)
		}
	}
	fresh = mergeSpans(fresh)
	var out []laterSpan
	for _, f := range fresh {
		out = append(out, laterSpan{f, true})
	}
	for _, g := range mergeSpans(grown) {
		for _, part := range subtract(g, fresh) {
			out = append(out, laterSpan{part, false})
		}
	}
	return out
}

// laterPages counts the populated pages of work, up to a bit more than
// limit: counting walks the page tables, which for a large block takes
// as long as its size.
func (m *Mirror) laterPages(work []laterSpan, limit int) (int, error) {
	n := 0
	for _, ls := range work {
		if n > limit || ls.end-ls.start > uint64(64*limit)*PageSize {
			return n + int((ls.end-ls.start)/PageSize), nil
		}
		if err := m.scan.populated(ls.start, ls.end, func(s, e uint64) { n += int((e - s) / PageSize) }); err != nil {
			return 0, fmt.Errorf("scan populated pages of %d: %w", m.pid, err)
		}
	}
	return n, nil
}

// copyLater copies the memory of work into the shadow, protecting first
// the pages flagged written: a page the process writes after the
// protection is flagged again, and copied again by the next outermost
// scan. It may run while the process runs. In fresh memory only the
// pages written (all that hold data) are protected and copied, and then
// the holes are protected: the kernel reports a protected hole as a
// swapped page, which would be copied as zeros. A grown part is copied
// as Sync does: all it holds (the injected code's scan may have protected
// some of it already).
func (m *Mirror) copyLater(work []laterSpan) error {
	const populated = pageIsPresent | pageIsSwapped
	for _, ls := range work {
		var pages []uint64
		add := func(s, e uint64) {
			for p := s; p < e; p += PageSize {
				pages = append(pages, p)
			}
		}
		protected := add
		if !ls.fresh {
			protected = func(uint64, uint64) {} // all it holds is copied below
		}
		for _, kind := range []uint64{pageIsPresent, pageIsSwapped} {
			if err := m.scan.scan(ls.start, ls.end, pmScanWPMatching, 0, pageIsWritten|kind, pageIsWritten, protected); err != nil {
				return fmt.Errorf("protect new memory of %d: %w", m.pid, err)
			}
		}
		if !ls.fresh {
			if err := m.scan.populated(ls.start, ls.end, add); err != nil {
				return fmt.Errorf("scan populated pages of %d: %w", m.pid, err)
			}
		}
		sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
		if err := m.copyIn(pages); err != nil {
			return err
		}
		if ls.fresh {
			if err := m.scan.scan(ls.start, ls.end, pmScanWPMatching, populated, populated|pageIsWritten, pageIsWritten, func(uint64, uint64) {}); err != nil {
				return fmt.Errorf("protect the untouched pages of new memory of %d: %w", m.pid, err)
			}
		}
	}
	return nil
}

// mergeSpans sorts spans and merges those that overlap or touch.
func mergeSpans(spans []span) []span {
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	var out []span
	for _, sp := range spans {
		if k := len(out) - 1; k >= 0 && sp.start <= out[k].end {
			out[k].end = max(out[k].end, sp.end)
			continue
		}
		out = append(out, sp)
	}
	return out
}

// subtract returns the parts of g that no span of sorted covers.
func subtract(g span, sorted []span) []span {
	var out []span
	a := g.start
	for _, c := range sorted {
		if c.end <= a || c.start >= g.end {
			continue
		}
		if c.start > a {
			out = append(out, span{a, c.start})
		}
		a = max(a, c.end)
	}
	if a < g.end {
		out = append(out, span{a, g.end})
	}
	return out
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// ShadowBytes is the memory the shadow holds (the file's allocated pages)
// and the logs of nested levels.
// FileBytes is the memory the shadow file holds; unlike ShadowBytes it
// is safe to call from any goroutine.
func (m *Mirror) FileBytes() int64 {
	var st unix.Stat_t
	if unix.Fstat(m.shadowFd, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

func (m *Mirror) ShadowBytes() int64 {
	var st unix.Stat_t
	n := int64(0)
	if unix.Fstat(m.shadowFd, &st) == nil {
		n = st.Blocks * 512
	}
	for _, l := range m.levels {
		n += int64(len(l.log)) * PageSize
	}
	return n
}

// Exclude keeps [start, end) out of tracking (call before Init).
func (m *Mirror) Exclude(start, end uint64) { m.exclude = append(m.exclude, span{start, end}) }

// Ready reports whether Init finished (and its error).
func (m *Mirror) Ready() (bool, error) {
	select {
	case <-m.ready:
		return true, m.initEr
	default:
		return false, nil
	}
}

// initWait is how long Checkpoint waits for a background Init.
const initWait = 5 * time.Millisecond

func (m *Mirror) waitReady(maps []procfs.Mapping) error {
	m.initOnce.Do(func() {
		m.initEr = m.init(maps)
		close(m.ready)
	})
	// Not a select with the timer alone: with both ready (the thread
	// preempted past initWait) it could pick the timer long after Init.
	if done, _ := m.Ready(); !done {
		select {
		case <-m.ready:
		case <-time.After(initWait):
			return ErrNotReady
		}
	}
	if m.initEr != nil {
		return m.initEr
	}
	<-m.bg // a checkpoint waits for SyncLater's copy: it protects the call
	return m.bgErr
}

// Active implements Tracker.
func (m *Mirror) Active(id ID) bool { return m.index(id) >= 0 }

func (m *Mirror) index(id ID) int {
	for i, l := range m.levels {
		if l.id == id {
			return i
		}
	}
	return -1
}

// Ranges returns the tracked ranges and a generation number that changes
// whenever they do (the injected code's copy of them must follow).
func (m *Mirror) Ranges() ([]Range, uint64) { return m.ranges, m.gen }

// SetExternal records that the code injected into the process holds (or
// no longer holds) outermost checkpoint id: it took it with the layout of
// Ranges, in the same shadow.
func (m *Mirror) SetExternal(id ID, active bool) {
	i := m.index(id)
	switch {
	case active && i < 0:
		m.levels = append([]*mlevel{{id: id, clock: m.clock, external: true}}, m.levels...)
	case !active && i >= 0:
		m.levels = append(m.levels[:i], m.levels[i+1:]...)
	}
}

// Checkpoint implements Tracker.
func (m *Mirror) Checkpoint(id ID, maps []procfs.Mapping) (Stats, error) {
	if err := m.waitReady(maps); err != nil {
		return Stats{}, err
	}
	if err := m.sync(maps); err != nil {
		return Stats{}, err
	}
	if len(m.levels) == 0 {
		n, err := m.outerScan()
		if err != nil {
			return Stats{}, err
		}
		m.levels = append(m.levels, &mlevel{id: id, clock: m.clock})
		return Stats{Pages: n}, nil
	}
	l, err := m.innerLevel(id)
	if err != nil {
		return Stats{}, err
	}
	m.levels = append(m.levels, l)
	return Stats{Pages: len(l.log)}, nil
}

// outerScan collects the pages written since the last resetting scan,
// protects them again, and copies them into the shadow; shared ranges are
// copied whole. It returns the pages copied.
func (m *Mirror) outerScan() (int, error) {
	var pages []uint64
	err := m.scan.written(func(start, end uint64) {
		for p := start; p < end; p += PageSize {
			if m.tracked(p) {
				pages = append(pages, p)
			}
		}
	})
	if err != nil {
		return 0, fmt.Errorf("scan written pages of %d: %w", m.pid, err)
	}
	pages = m.withShared(pages)
	if err := m.copyIn(pages); err != nil {
		return 0, err
	}
	return len(pages), nil
}

// innerLevel records the contents of the pages written since the
// outermost scan, without resetting the flags.
func (m *Mirror) innerLevel(id ID) (*mlevel, error) {
	written, err := m.peekWritten()
	if err != nil {
		return nil, err
	}
	pages := m.withShared(written)
	l := &mlevel{id: id, clock: m.clock, log: make(map[uint64][]byte, len(pages))}
	bufs := make([][]byte, len(pages))
	slab := make([]byte, len(pages)*PageSize)
	for i := range pages {
		bufs[i] = slab[i*PageSize : (i+1)*PageSize : (i+1)*PageSize]
	}
	failed, err := m.transfer(pages, bufs, false, true)
	if err != nil {
		return nil, err
	}
	for i, p := range pages {
		if !failed[p] {
			l.log[p] = bufs[i]
		}
	}
	return l, nil
}

// peekWritten returns the tracked pages written since the last resetting
// scan, leaving the flags as they are. Only mappings armed for
// write-protect are walked (pageIsWPAllowed in the mask): the kernel
// reports every page of the others as written, and walking them (the
// shadow's own mapping, as large as the tracked memory, among them) made
// a rollback of a 256 MiB process cost 2 ms more than the pages it
// restores.
func (m *Mirror) peekWritten() ([]uint64, error) {
	var pages []uint64
	err := m.scan.scan(0, addressSpaceEnd, 0, 0, pageIsWritten|pageIsWPAllowed, pageIsWritten, func(start, end uint64) {
		for p := start; p < end; p += PageSize {
			if m.tracked(p) {
				pages = append(pages, p)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("scan written pages of %d: %w", m.pid, err)
	}
	return pages, nil
}

// withShared adds the pages of shared ranges to a sorted page list.
func (m *Mirror) withShared(pages []uint64) []uint64 {
	set := make(map[uint64]bool, len(pages))
	for _, p := range pages {
		set[p] = true
	}
	for _, r := range m.ranges {
		if !r.Shared {
			continue
		}
		for p := r.Start; p < r.End; p += PageSize {
			if !set[p] {
				set[p] = true
				pages = append(pages, p)
			}
		}
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
	return pages
}

// Rollback implements Tracker.
func (m *Mirror) Rollback(id ID, coordinated bool) (Stats, error) {
	<-m.bg
	j := m.index(id)
	if j < 0 {
		return Stats{}, fmt.Errorf("rollback of %d: checkpoint %d is not active", m.pid, id)
	}
	maps, err := m.maps.Maps()
	if err != nil {
		return Stats{}, fmt.Errorf("rollback of %d: %w", m.pid, err)
	}
	m.reconcile(m.levels[j].clock)
	refill, err := m.rearm(maps)
	if err != nil {
		return Stats{}, err
	}
	written, err := m.peekWritten()
	if err != nil {
		return Stats{}, err
	}
	lv := m.levels[j]
	if lv.log == nil {
		lv = nil // the outermost level: its contents are the shadow's
	}
	want := m.restoreSet(lv, written, append(refill, m.discardedPages()...), coordinated)
	if err := m.writeBack(want, maps); err != nil {
		return Stats{}, err
	}
	m.levels = m.levels[:j]
	if lv == nil {
		// Back at the outermost scan: our own writes flagged the pages
		// they restored, which now equal the shadow. Clear the flags.
		// (After a nested level, whose older levels were committed, the
		// pages it restored from its log differ from the shadow: they
		// stay flagged for the next outermost checkpoint to copy.)
		if err := m.scan.written(func(uint64, uint64) {}); err != nil {
			return Stats{}, err
		}
	}
	if len(m.levels) == 0 {
		m.dropRetired()
		m.discarded = nil
	}
	return Stats{Pages: len(want)}, nil
}

// restoreSet returns the contents each page must get back to be as at
// level j (lv is its nested level, nil for the outermost): the pages
// written since the outermost scan, the ranges mapped again (refill), and
// the shared ranges (whole when every process sharing them rolls back;
// else only the pages this process wrote).
func (m *Mirror) restoreSet(lv *mlevel, written, refill []uint64, coordinated bool) map[uint64][]byte {
	want := make(map[uint64][]byte, len(written)+len(refill))
	contents := func(p uint64) []byte {
		if lv != nil {
			if b, ok := lv.log[p]; ok {
				return b
			}
		}
		return m.shadowPage(p)
	}
	// Shared pages: those this process wrote since the outermost scan.
	// (Another process's writes to them after a nested level cannot be
	// told from ours at page granularity; "container" scope, which rolls
	// every process back, restores shared memory whole.)
	for _, p := range written {
		want[p] = contents(p)
	}
	for _, p := range refill {
		want[p] = contents(p)
	}
	if coordinated {
		for _, r := range m.ranges {
			if r.Shared {
				for p := r.Start; p < r.End; p += PageSize {
					want[p] = contents(p)
				}
			}
		}
	}
	return want
}

// Commit implements Tracker.
func (m *Mirror) Commit(id ID) {
	<-m.bg
	j := m.index(id)
	if j < 0 {
		return
	}
	m.levels = append(m.levels[:j], m.levels[j+1:]...)
	if len(m.levels) == 0 {
		m.dropRetired()
		m.discarded = nil
	}
}

// Discarded implements Tracker. Anonymous pages need nothing: a page the
// kernel zapped reads as written at the next scan. A private file page
// that was written before the checkpoint, though, falls back to the
// file's contents unflagged (the kernel leaves a write-protect marker),
// and a shared page dropped with MADV_REMOVE is not this process's to
// flag: both are restored from the shadow at a rollback.
func (m *Mirror) Discarded(start, end uint64) {
	if len(m.levels) == 0 {
		return
	}
	m.discarded = append(m.discarded, span{start &^ (PageSize - 1), end})
}

// discardedPages returns the pages of the discarded ranges that the shadow
// holds contents for. Those it does not hold were not populated at the
// checkpoint: zero, or the file's contents, which is what the process
// finds there again after the discard.
func (m *Mirror) discardedPages() []uint64 {
	var pages []uint64
	for _, d := range m.discarded {
		for _, r := range m.ranges {
			a, b := max(r.Start, d.start), min(r.End, d.end)
			if a >= b {
				continue
			}
			base := int64(r.Off) - int64(r.Start)
			for off := int64(a) + base; off < int64(b)+base; {
				data, err := unix.Seek(m.shadowFd, off, unix.SEEK_DATA)
				if err != nil || data >= int64(b)+base {
					break // ENXIO: no data past off
				}
				hole, err := unix.Seek(m.shadowFd, data, unix.SEEK_HOLE)
				if err != nil {
					break
				}
				hole = min(hole, int64(b)+base)
				for o := data &^ (PageSize - 1); o < hole; o += PageSize {
					pages = append(pages, uint64(o-base))
				}
				off = hole
			}
		}
	}
	return pages
}

func (m *Mirror) isShared(p uint64) bool {
	r, ok := m.rangeOf(p)
	return ok && r.Shared
}

// tracked reports whether page p lies in a tracked range.
func (m *Mirror) tracked(p uint64) bool {
	_, ok := m.rangeOf(p)
	return ok
}

func (m *Mirror) rangeOf(p uint64) (Range, bool) {
	i := sort.Search(len(m.ranges), func(i int) bool { return m.ranges[i].End > p })
	if i < len(m.ranges) && m.ranges[i].Start <= p {
		return m.ranges[i], true
	}
	return Range{}, false
}

// shadowPage returns the shadow's contents of page p (a view into the
// shared mapping).
func (m *Mirror) shadowPage(p uint64) []byte {
	r, ok := m.rangeOf(p)
	if !ok {
		return zeroPage
	}
	off := r.Off + (p - r.Start)
	return m.shadow[off : off+PageSize : off+PageSize]
}

// copyIn copies pages (sorted) from the process into the shadow. Pages
// past the end of a mapped file cannot be read (the program would get
// SIGBUS there too): they are left as they are.
func (m *Mirror) copyIn(pages []uint64) error {
	bufs := make([][]byte, len(pages))
	for i, p := range pages {
		bufs[i] = m.shadowPage(p)
	}
	_, err := m.transfer(pages, bufs, false, true)
	return err
}

// writeBack writes the given contents into the process, skipping pages
// not mapped writable in maps (the layout rolled back to): such a page
// cannot have changed since the checkpoint but through a call that the
// supervisor's journal undoes (mprotect, munmap), and /proc/PID/mem would
// write over read-only memory.
func (m *Mirror) writeBack(want map[uint64][]byte, maps []procfs.Mapping) error {
	pages := make([]uint64, 0, len(want))
	for p := range want {
		if writableIn(maps, p) {
			pages = append(pages, p)
		}
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] })
	bufs := make([][]byte, len(pages))
	for i, p := range pages {
		bufs[i] = want[p]
	}
	_, err := m.transfer(pages, bufs, true, true)
	return err
}

// sync tracks the writable mappings not tracked yet (mapped since the
// previous checkpoint): registered for write-protect and given shadow
// space. A range stays tracked while it is mapped, writable or not (the
// registration survives mprotect, and the page may become writable
// again); ranges that are gone are retired while a checkpoint may still
// need their contents, dropped otherwise.
func (m *Mirror) sync(maps []procfs.Mapping) error {
	m.clock++
	var keep []Range
	for _, r := range m.ranges {
		if overlapsMapped(maps, r.Start, r.End) {
			keep = append(keep, r)
		} else if len(m.levels) > 0 {
			r.died = m.clock
			m.retired = append(m.retired, r)
		} else {
			m.release(r)
		}
	}
	changed := len(keep) != len(m.ranges)
	m.ranges = keep
	prevEnd := uint64(0)
	for _, mp := range maps {
		below := prevEnd
		prevEnd = mp.End
		if !mp.Writable() || mp.End > addressSpaceEnd || overlaps(m.exclude, mp.Start, mp.End) {
			continue
		}
		added, err := m.track(mp, below)
		if err != nil {
			return err
		}
		changed = changed || added
	}
	if changed {
		sort.Slice(m.ranges, func(i, j int) bool { return m.ranges[i].Start < m.ranges[j].Start })
		m.gen++
	}
	return nil
}

func writableIn(maps []procfs.Mapping, p uint64) bool {
	i := sort.Search(len(maps), func(i int) bool { return maps[i].End > p })
	return i < len(maps) && maps[i].Start <= p && maps[i].Writable()
}

// overlapsMapped reports whether any mapping overlaps [start, end).
func overlapsMapped(maps []procfs.Mapping, start, end uint64) bool {
	i := sort.Search(len(maps), func(i int) bool { return maps[i].End > start })
	return i < len(maps) && maps[i].Start < end
}

// track starts tracking the parts of writable mapping mp where
// write-protect is not armed (mapped since the last look, possibly where
// an older mapping was: munmap, then mmap at the same place) and gives
// shadow space to the parts no range covers (new mappings, and mappings
// that grew: brk, mremap, the stack). A part that cannot be registered
// (special mappings) is left untracked; its contents are not restored by
// a rollback.
func (m *Mirror) track(mp procfs.Mapping, below uint64) (bool, error) {
	var fresh, failed []span
	if err := m.scan.unprotectable(mp.Start, mp.End, func(s, e uint64) { fresh = append(fresh, span{s, e}) }); err != nil {
		return false, fmt.Errorf("scan unarmed mappings of %d: %w", m.pid, err)
	}
	for _, f := range fresh {
		if err := registerWP(m.uffd, f.start, f.end); err != nil {
			if debugRegister {
				fmt.Fprintf(os.Stderr, "register %#x-%#x %s: %v\n", f.start, f.end, mp.Perms, err)
			}
			failed = append(failed, f)
			continue
		}
		// Where a range already is, the shadow holds an older mapping's
		// contents: an active checkpoint may still need them (its
		// rollback brings the old contents back); otherwise they go.
		if len(m.levels) == 0 {
			m.clearShadow(f.start, f.end)
		}
	}
	added := false
	for _, g := range m.gaps(mp.Start, mp.End) {
		if overlaps(failed, g.start, g.end) {
			continue
		}
		if err := m.cover(g, mp, below); err != nil {
			return added, err
		}
		added = true
		// The injected code's scan may have reset the written flags of
		// pages it found outside every range (a mapping that grew): what
		// they hold now is copied.
		switch {
		case m.deferCopy && mp.Anonymous() && !mp.Shared():
			m.pending = append(m.pending, laterSpan{g, false})
		case len(m.levels) == 0:
			if err := m.copyPopulated(g.start, g.end); err != nil {
				return added, err
			}
		}
	}
	// File-backed and shared pages have contents before they are touched:
	// freshly armed ones are copied whole (with no checkpoint active; else
	// the next nested level's log takes them).
	if len(m.levels) == 0 && (!mp.Anonymous() || mp.Shared()) {
		for _, f := range fresh {
			if overlaps(failed, f.start, f.end) {
				continue
			}
			var pages []uint64
			for p := f.start; p < f.end; p += PageSize {
				pages = append(pages, p)
			}
			if err := m.copyIn(pages); err != nil {
				return added, err
			}
		}
	}
	// In newly armed memory the pages never touched count as written until
	// a scan protects them: the next outermost scan would copy each into
	// the shadow as zeros (a large reservation costing its whole size, and
	// the time to copy it). Protect those holes now; the pages that hold
	// data stay flagged, for that scan to copy.
	if len(m.levels) == 0 {
		const populated = pageIsPresent | pageIsSwapped
		for _, f := range fresh {
			if overlaps(failed, f.start, f.end) {
				continue
			}
			if m.deferCopy && mp.Anonymous() && !mp.Shared() {
				// Protected and copied by SyncLater instead.
				m.pending = append(m.pending, laterSpan{f, true})
				continue
			}
			if err := m.scan.scan(f.start, f.end, pmScanWPMatching, populated, populated|pageIsWritten, pageIsWritten, func(uint64, uint64) {}); err != nil {
				return added, fmt.Errorf("protect the untouched pages of new memory of %d: %w", m.pid, err)
			}
		}
	}
	return added, nil
}

// cover gives shadow space to g, a part of mapping mp no range covers
// (below is where the previous mapping ends):
// the range it extends when that range has room, else a range of its own
// (with room to grow: the shadow is sparse, only address space is spent).
func (m *Mirror) cover(g span, mp procfs.Mapping, below uint64) error {
	for i := range m.ranges {
		r := &m.ranges[i]
		if r.End == g.start && g.end-r.Start <= r.Cap && r.Shared == mp.Shared() {
			r.End = g.end
			return nil
		}
	}
	r := Range{Start: g.start, End: g.end, Shared: mp.Shared(), born: m.clock}
	if mp.Path == "[stack]" {
		// It grows down: the range covers what it may grow to, down to
		// the mapping below.
		r.Start = max(mp.End-stackReserve, below, PageSize)
		for _, o := range m.ranges {
			if o.End <= g.start {
				r.Start = max(r.Start, o.End)
			}
		}
	}
	// Shadow space of its own, even where a retired range was: that one
	// keeps its contents for the checkpoints it is alive in.
	r.Cap = roundUp(max(2*(r.End-r.Start), minRangeCap))
	if mp.Path == "[heap]" {
		r.Cap = max(r.Cap, heapCap)
	}
	off, ok := m.alloc.take(r.Cap)
	if !ok {
		return fmt.Errorf("track %#x-%#x of %d: the shadow is full", r.Start, r.End, m.pid)
	}
	r.Off = off
	m.ranges = append(m.ranges, r)
	sort.Slice(m.ranges, func(i, j int) bool { return m.ranges[i].Start < m.ranges[j].Start })
	return nil
}

const (
	// minRangeCap is the least shadow space a range gets (room to grow
	// before it needs a second range); the heap, which brk grows, more.
	minRangeCap = 64 << 20
	heapCap     = 16 << 30
	// stackReserve covers the growth of the main thread's stack.
	stackReserve = 64 << 20
)

func roundUp(n uint64) uint64 { return (n + PageSize - 1) &^ (PageSize - 1) }

// copyPopulated copies the populated pages of [start, end) into the
// shadow.
func (m *Mirror) copyPopulated(start, end uint64) error {
	var pages []uint64
	err := m.scan.populated(start, end, func(s, e uint64) {
		for p := s; p < e; p += PageSize {
			pages = append(pages, p)
		}
	})
	if err != nil {
		return fmt.Errorf("scan populated pages of %d: %w", m.pid, err)
	}
	return m.copyIn(pages)
}

// clearShadow zeroes the shadow of the tracked pages in [start, end).
func (m *Mirror) clearShadow(start, end uint64) {
	for _, r := range m.ranges {
		a, b := max(r.Start, start), min(r.End, end)
		if a < b {
			unix.Fallocate(m.shadowFd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(r.Off+a-r.Start), int64(b-a))
		}
	}
}

// rearm finds writable memory that is not write-protected at a rollback:
// mappings the supervisor has just mapped again (the rescue point
// unmapped them, or shrank the heap). It tracks them again and returns
// their pages, whose contents all come from the shadow (or a log).
func (m *Mirror) rearm(maps []procfs.Mapping) ([]uint64, error) {
	var pages []uint64
	for _, mp := range maps {
		if !mp.Writable() || mp.End > addressSpaceEnd || overlaps(m.exclude, mp.Start, mp.End) {
			continue
		}
		var fresh []span
		if err := m.scan.unprotectable(mp.Start, mp.End, func(s, e uint64) { fresh = append(fresh, span{s, e}) }); err != nil {
			return nil, fmt.Errorf("scan unarmed mappings of %d: %w", m.pid, err)
		}
		for _, f := range fresh {
			if err := registerWP(m.uffd, f.start, f.end); err != nil {
				continue
			}
			for p := f.start; p < f.end; p += PageSize {
				if m.tracked(p) { // else memory the checkpoint never had
					pages = append(pages, p)
				}
			}
		}
	}
	return pages, nil
}

// gaps returns the parts of [start, end) that no range covers.
func (m *Mirror) gaps(start, end uint64) []span {
	var out []span
	a := start
	for _, r := range m.ranges {
		if r.End <= a || r.Start >= end {
			continue
		}
		if r.Start > a {
			out = append(out, span{a, r.Start})
		}
		a = max(a, r.End)
	}
	if a < end {
		out = append(out, span{a, end})
	}
	return out
}

// reconcile makes the tracked ranges those alive at tick c, for a
// rollback to a level taken then: ranges born since are dropped (no
// remaining level, all older, knew them), ranges retired since are tracked
// again (the layout rolled back to maps them).
func (m *Mirror) reconcile(c uint64) {
	var live []Range
	changed := false
	for _, r := range m.ranges {
		if r.born > c {
			m.release(r)
			changed = true
			continue
		}
		live = append(live, r)
	}
	kept := m.retired[:0]
	for _, r := range m.retired {
		if r.aliveAt(c) {
			r.died = 0
			live = append(live, r)
			changed = true
			continue
		}
		kept = append(kept, r)
	}
	m.retired = kept
	if changed {
		sort.Slice(live, func(i, j int) bool { return live[i].Start < live[j].Start })
		m.ranges = live
		m.gen++
	}
}

func (m *Mirror) dropRetired() {
	for _, r := range m.retired {
		m.release(r)
	}
	m.retired = nil
}

// release frees a range's shadow pages.
func (m *Mirror) release(r Range) {
	unix.Fallocate(m.shadowFd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(r.Off), int64(r.Cap))
	m.alloc.give(r.Off, r.Cap)
}

// transfer moves whole pages between the tracee and bufs in batches with
// process_vm_readv/writev, one remote iovec per run of adjacent pages.
// Pages those calls cannot reach go through /proc/PID/mem, which the
// kernel lets a tracer write regardless. With lenient, pages that still
// fail are returned instead of an error.
func (m *Mirror) transfer(pages []uint64, bufs [][]byte, write, lenient bool) (map[uint64]bool, error) {
	return transferPages(m.pid, m.mem, pages, bufs, write, lenient)
}

// spanAlloc hands out page-aligned spans of the shadow file, first fit.
type spanAlloc struct {
	size uint64
	next uint64
	free []span // returned spans, sorted
}

func (a *spanAlloc) take(n uint64) (uint64, bool) {
	n = (n + PageSize - 1) &^ (PageSize - 1)
	for i, f := range a.free {
		if f.end-f.start >= n {
			off := f.start
			if f.end-f.start == n {
				a.free = append(a.free[:i], a.free[i+1:]...)
			} else {
				a.free[i].start += n
			}
			return off, true
		}
	}
	if a.next+n > a.size {
		return 0, false
	}
	off := a.next
	a.next += n
	return off, true
}

func (a *spanAlloc) give(off, n uint64) {
	n = (n + PageSize - 1) &^ (PageSize - 1)
	a.free = append(a.free, span{off, off + n})
	sort.Slice(a.free, func(i, j int) bool { return a.free[i].start < a.free[j].start })
	merged := a.free[:0]
	for _, f := range a.free {
		if k := len(merged) - 1; k >= 0 && merged[k].end == f.start {
			merged[k].end = f.end
			continue
		}
		merged = append(merged, f)
	}
	a.free = merged
}
