package locks

import (
	"fmt"
	"sort"
	"time"
	"unsafe"

	"github.com/assure-rt/assure/recovery/procfs"
)

// Kinds of Held.
const (
	KindMutex  = "mutex"  // pthread_mutex_t
	KindRWLock = "rwlock" // pthread_rwlock_t, locked for writing
	KindIOLock = "stdio"  // _IO_lock_t or glibc's internal recursive lock
)

// Held is a lock the thread holds.
type Held struct {
	Addr uint64 // address of the lock in the process
	Kind string // KindMutex, KindRWLock or KindIOLock
}

// DefaultMaxBytes is the budget of a scan when Options.MaxBytes is 0.
const DefaultMaxBytes = 512 << 20

// Options tune HeldBy.
type Options struct {
	// MaxBytes bounds what a scan reads from the process, memory and
	// page map together; past it HeldBy fails with ErrBudget. 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// FSBase, if not 0, is the thread's fs base, i.e. its struct pthread
	// (from PTRACE_GETREGS), and HeldBy then also reports the stdio and
	// glibc-internal recursive locks the thread owns.
	FSBase uint64
	// NoPagemap makes the scan read every page, even those never touched:
	// slower, and it maps the zero page into them, so that later scans
	// read them too. For measurements, and kernels without
	// /proc/PID/pagemap.
	NoPagemap bool
	// Exclude are address ranges not to scan: a caller's own mappings in
	// the process (assure's shadow holds copies of the program's memory,
	// locks among them, and is large).
	Exclude []Range
	// Stats, if not nil, receives what the scan did.
	Stats *Stats
}

// Range is the address range [Start, End).
type Range struct{ Start, End uint64 }

// Stats describe one scan.
type Stats struct {
	Mappings     int   // mappings scanned
	Bytes        int64 // memory read
	PagemapBytes int64 // page map read
	Untouched    int64 // bytes of never-touched pages, not read
	Unreadable   int64 // bytes that could not be read
	Pagemap      bool  // whether the page map was used
	Elapsed      time.Duration
}

func (st Stats) String() string {
	return fmt.Sprintf("%d mappings, read %.1f MiB + %.1f KiB pagemap, skipped %.1f MiB untouched, %d B unreadable, in %v",
		st.Mappings, float64(st.Bytes)/(1<<20), float64(st.PagemapBytes)/(1<<10),
		float64(st.Untouched)/(1<<20), st.Unreadable, st.Elapsed.Round(time.Microsecond))
}

// HeldBy scans the writable memory of process pid (a host pid) for glibc
// locks held by its thread nsTid, the thread's id as the process sees it
// (in the process's own pid namespace: that is what glibc stores). The
// process should be stopped. Locks are returned by address.
func HeldBy(pid, nsTid int, opts Options) ([]Held, error) {
	start := time.Now()
	var st Stats
	defer func() {
		st.Elapsed = time.Since(start)
		if opts.Stats != nil {
			*opts.Stats = st
		}
	}()
	if pid <= 0 || nsTid <= 0 || nsTid > futexTIDMask {
		return nil, fmt.Errorf("locks of thread %d of %d: bad id", nsTid, pid)
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	maps, err := procfs.Maps(pid)
	if err != nil {
		return nil, fmt.Errorf("locks of thread %d of %d: %w", nsTid, pid, err)
	}
	tids, err := procfs.Tasks(pid)
	if err != nil {
		return nil, fmt.Errorf("locks of thread %d of %d: %w", nsTid, pid, err)
	}
	mem := newMemory(pid, opts, &st)
	defer mem.Close()
	s := &scanner{
		mem:    mem,
		thread: thread{tid: uint32(nsTid), threads: uint32(len(tids))},
		self:   opts.FSBase,
		stats:  &st,
	}
	for _, seg := range segments(excluded(maps, opts.Exclude)) {
		st.Mappings += len(seg.maps)
		if err := s.segment(seg); err != nil {
			return s.found, fmt.Errorf("scan %#x-%#x of %d: %w", seg.start, seg.end, pid, err)
		}
	}
	sort.Slice(s.found, func(i, j int) bool { return s.found[i].Addr < s.found[j].Addr })
	return s.found, nil
}

// scanner looks for one thread's locks.
type scanner struct {
	mem    *memory
	thread thread
	self   uint64 // fs base; 0: no stdio locks
	stats  *Stats
	found  []Held
	// ioLocks are the _IO_lock_t look-alikes of the segment being
	// scanned, checked for where they are once it is done.
	ioLocks []uint64

	// Unreadable pages in a row, and where reading resumes once there
	// were deadPages of them (see deadPages).
	fails     int
	lastBad   uint64
	deadUntil uint64
}

func alignDown(a, n uint64) uint64 { return a &^ (n - 1) }

// segment scans seg, one page map span at a time.
func (s *scanner) segment(seg segment) error {
	for a := seg.start; a < seg.end; {
		b := min(alignDown(a, pagemapSpan)+pagemapSpan, seg.end)
		if err := s.span(seg, a, b); err != nil {
			return err
		}
		a = b
	}
	return s.placeIOLocks(seg)
}

// placeIOLocks keeps the _IO_lock_t look-alikes that are where glibc puts
// such locks: in libc's data, or right after a FILE that points at them.
// Programs keep pthread_self() beside small integers for their own needs
// (Python's sqlite3 connections keep it after two int flags of 1), which
// the bytes alone cannot tell from a held lock.
func (s *scanner) placeIOLocks(seg segment) error {
	for _, addr := range s.ioLocks {
		ok := seg.inLibc(addr)
		if !ok {
			before, err := s.mem.readBefore(addr, fileMaxBefore, seg.start)
			if err != nil {
				return err
			}
			ok = fileBefore(before, addr)
		}
		if ok {
			s.found = append(s.found, Held{Addr: addr, Kind: KindIOLock})
		}
	}
	s.ioLocks = s.ioLocks[:0]
	return nil
}

// span scans the touched pages of [a, b), in runs that do not cross a
// multiple of chunkSize.
func (s *scanner) span(seg segment, a, b uint64) error {
	touched, err := s.mem.touched(a, b)
	if err != nil {
		return err
	}
	page := func(i int) uint64 { return a + uint64(i)*pageSize }
	for i := 0; i < len(touched); {
		if !touched[i] {
			s.stats.Untouched += pageSize
			i++
			continue
		}
		j := i + 1
		for j < len(touched) && touched[j] && page(j)%chunkSize != 0 {
			j++
		}
		// Reading past the run into an untouched anonymous page would
		// fault it in (as the zero page), and pagemap would call it
		// touched from then on; its bytes are known to be zeros.
		zeros := j < len(touched) && !touched[j] && seg.anonymous(page(j))
		if err := s.run(seg, page(i), page(j), zeros); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// run scans structs that start in [rs, re), reading a little past re so
// that they are whole (or, with zeros, taking the bytes past re as zeros),
// and stepping over pages it cannot read.
func (s *scanner) run(seg segment, rs, re uint64, zeros bool) error {
	for rs < re {
		if rs < s.deadUntil {
			skip := min(re, s.deadUntil) - rs
			s.stats.Unreadable += int64(skip)
			rs += skip
			continue
		}
		want := int(min(re+overlap, seg.end) - rs)
		if zeros {
			want = int(re - rs)
		}
		data, err := s.mem.read(rs, want)
		if err != nil {
			return err
		}
		if zeros && len(data) == want {
			data = s.mem.zeroPad(data, overlap)
		}
		s.match(rs, data, re)
		bad := alignDown(rs+uint64(len(data)), pageSize)
		if len(data) == want || bad >= re {
			return nil // all read, or only the overlap was not
		}
		s.unreadable(seg, bad)
		rs = bad + pageSize
	}
	return nil
}

func (s *scanner) unreadable(seg segment, page uint64) {
	s.stats.Unreadable += pageSize
	if page == s.lastBad+pageSize {
		s.fails++
	} else {
		s.fails = 1
	}
	s.lastBad = page
	if s.fails >= deadPages {
		s.deadUntil = seg.mappingEnd(page)
	}
}

// noSelf stands for "no fs base" in match's loop: not 0, which is the
// commonest word in memory, but a value hardly ever there (not a user
// address); hit checks s.self itself.
const noSelf = 0x8000_0000_0000_0001

// match checks each aligned word of data, read from base, for the owner;
// structs must start below end. The loop only compares: this is where a
// scan spends its time, and viewing data as words (it is memory.buf, from
// make, so 8-aligned; x86-64 is little-endian like the layouts) makes it
// 2.5 times faster than decoding each word.
func (s *scanner) match(base uint64, data []byte, end uint64) {
	limit := int(min(end-base, uint64(len(data))))
	tid, self := s.thread.tid, s.self
	if self == 0 {
		self = noSelf
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(data))), len(data)/8)
	for i, w := range words {
		if uint32(w)&futexTIDMask == tid || w == self {
			s.hit(base, data, i*8, w, limit)
		}
	}
}

// hit looks at the structs around the word w at data[p:] that could be
// locks of the thread.
func (s *scanner) hit(base uint64, data []byte, p int, w uint64, limit int) {
	if lo := uint32(w); lo == s.thread.tid {
		s.try(base, data, p-mutexOwnerOff, limit, KindMutex)
		s.try(base, data, p-rwlockOwnerOff, limit, KindRWLock)
	}
	// A robust mutex whose previous owner died names its new owner only
	// in __lock until it is made consistent.
	if uint32(w)&futexTIDMask == s.thread.tid && p+12 <= len(data) && le32(data[p+8:]) == ownerInconsistent {
		s.try(base, data, p-mutexLockOff, limit, KindMutex)
	}
	if s.self != 0 && w == s.self {
		s.try(base, data, p-ioLockOwnerOff, limit, KindIOLock)
	}
}

// try records the lock of the kind at data[at:] if the thread holds it.
func (s *scanner) try(base uint64, data []byte, at, limit int, kind string) {
	if at < 0 || at >= limit {
		return
	}
	b := data[at:]
	var ok bool
	switch kind {
	case KindMutex:
		ok = mutexHeldBy(b, s.thread)
	case KindRWLock:
		ok = rwlockWriteHeldBy(b, s.thread)
	case KindIOLock:
		if ioLockHeldBy(b, s.self) {
			s.ioLocks = append(s.ioLocks, base+uint64(at))
		}
	}
	if ok {
		s.found = append(s.found, Held{Addr: base + uint64(at), Kind: kind})
	}
}

// excluded returns maps without the mappings that overlap a range of ex.
func excluded(maps []procfs.Mapping, ex []Range) []procfs.Mapping {
	if len(ex) == 0 {
		return maps
	}
	out := make([]procfs.Mapping, 0, len(maps))
next:
	for _, m := range maps {
		for _, r := range ex {
			if m.Start < r.End && r.Start < m.End {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}
