package locks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

const (
	pageSize = 4096
	// chunkSize bounds one process_vm_readv. Reads are split at absolute
	// multiples of it, so where a struct straddles a split is predictable
	// (the tests put one there).
	chunkSize = 1 << 20
	// pagemapSpan is how much address space one read of pagemap covers.
	pagemapSpan = 64 << 20
	// overlap is read past the end of each run of pages, so a struct that
	// starts in the run is seen whole.
	overlap = maxSize
	// deadPages consecutive unreadable pages make the rest of their
	// mapping count as unreadable: process_vm_readv fails on whole device
	// mappings (VM_IO, VM_PFNMAP) and on file mappings past the end of the
	// file, and trying page by page would cost a syscall per page.
	deadPages = 16
)

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
)

// segment is a run of adjacent scanned mappings. A struct may straddle two
// of them (a library's .data and its .bss), so they are read as one.
type segment struct {
	start, end uint64
	maps       []procfs.Mapping
}

// skipped are the kernel's mappings: they hold no lock, and some cannot
// be read.
var skipped = map[string]bool{"[vvar]": true, "[vvar_vclock]": true, "[vsyscall]": true, "[vdso]": true}

// segments picks the readable, writable mappings and joins adjacent ones.
func segments(maps []procfs.Mapping) []segment {
	var out []segment
	for _, m := range maps {
		if !m.Readable() || !m.Writable() || skipped[m.Path] || m.End <= m.Start {
			continue
		}
		if n := len(out); n > 0 && out[n-1].end == m.Start {
			out[n-1].end = m.End
			out[n-1].maps = append(out[n-1].maps, m)
			continue
		}
		out = append(out, segment{start: m.Start, end: m.End, maps: []procfs.Mapping{m}})
	}
	return out
}

// mappingEnd returns the end of the mapping of seg that holds addr.
func (seg segment) mappingEnd(addr uint64) uint64 {
	for _, m := range seg.maps {
		if m.Contains(addr) {
			return m.End
		}
	}
	return seg.end
}

// inLibc reports whether addr is in libc's writable data or in the
// anonymous mapping right after it (its .bss), where glibc keeps the
// locks of stdin, stdout, stderr and its own recursive locks.
func (seg segment) inLibc(addr uint64) bool {
	for i, m := range seg.maps {
		if m.Contains(addr) {
			return isLibc(m) || (i > 0 && m.Anonymous() && m.Path == "" && isLibc(seg.maps[i-1]))
		}
	}
	return false
}

func isLibc(m procfs.Mapping) bool {
	base := filepath.Base(m.Path)
	return strings.HasPrefix(base, "libc.so") || (strings.HasPrefix(base, "libc-") && strings.HasSuffix(base, ".so"))
}

// anonymous reports whether addr is in a private mapping that no file
// backs, where a page never touched reads as zeros.
func (seg segment) anonymous(addr uint64) bool {
	for _, m := range seg.maps {
		if m.Contains(addr) {
			return m.Anonymous() && !m.Shared()
		}
	}
	return false
}

// memory reads another process's memory and counts what it reads against
// a budget.
type memory struct {
	pid     int
	pagemap *os.File // nil: every page is read
	budget  int64
	stats   *Stats
	buf     []byte
	pm      []byte
}

func newMemory(pid int, opts Options, stats *Stats) *memory {
	m := &memory{
		pid:    pid,
		budget: opts.MaxBytes,
		stats:  stats,
		buf:    make([]byte, chunkSize+overlap),
	}
	if !opts.NoPagemap {
		// Without pagemap the scan is still right, only slower.
		if f, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err == nil {
			m.pagemap = f
			m.pm = make([]byte, pagemapSpan/pageSize*8)
			stats.Pagemap = true
		}
	}
	return m
}

func (m *memory) Close() error {
	if m.pagemap == nil {
		return nil
	}
	return m.pagemap.Close()
}

// ErrBudget is returned (wrapped) when a scan would read more than
// Options.MaxBytes.
var ErrBudget = errors.New("scan budget exceeded")

func (m *memory) spend(n int64) error {
	if m.stats.Bytes+m.stats.PagemapBytes+n > m.budget {
		return fmt.Errorf("%w: %d bytes", ErrBudget, m.budget)
	}
	return nil
}

// touched reports, page by page, which pages of [start, end) were ever
// written or at least faulted in: present or swapped. end-start is at most
// pagemapSpan.
func (m *memory) touched(start, end uint64) ([]bool, error) {
	n := int((end - start) / pageSize)
	out := make([]bool, n)
	if m.pagemap == nil {
		for i := range out {
			out[i] = true
		}
		return out, nil
	}
	if err := m.spend(int64(n * 8)); err != nil {
		return nil, err
	}
	buf := m.pm[:n*8]
	got, err := m.pagemap.ReadAt(buf, int64(start/pageSize*8))
	m.stats.PagemapBytes += int64(got)
	if got < len(buf) {
		return nil, fmt.Errorf("pagemap of %d at %#x: %d of %d bytes: %w", m.pid, start, got, len(buf), err)
	}
	for i := range out {
		out[i] = le64(buf[i*8:])&(pmPresent|pmSwapped) != 0
	}
	return out, nil
}

// zeroPad extends data, the start of m.buf, by n zero bytes.
func (m *memory) zeroPad(data []byte, n int) []byte {
	out := m.buf[:len(data)+n]
	clear(out[len(data):])
	return out
}

// readBefore reads up to n bytes that end at addr, not below floor, into
// a buffer of their own (m.buf holds the data being matched). It returns
// nil if a page there cannot be read.
func (m *memory) readBefore(addr uint64, n int, floor uint64) ([]byte, error) {
	start := floor
	if addr-floor > uint64(n) {
		start = addr - uint64(n)
	}
	buf := make([]byte, addr-start)
	if len(buf) == 0 {
		return nil, nil
	}
	if err := m.spend(int64(len(buf))); err != nil {
		return nil, err
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(start), Len: len(buf)}}
	got, err := unix.ProcessVMReadv(m.pid, local, remote, 0)
	switch {
	case err == unix.EFAULT || err == unix.EIO:
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read %d bytes at %#x of %d: %w", len(buf), start, m.pid, err)
	}
	m.stats.Bytes += int64(got)
	if got < len(buf) {
		return nil, nil
	}
	return buf, nil
}

// read copies memory at addr into the start of m.buf, up to n bytes, and
// returns what it got: fewer bytes, maybe none, if it met a page it cannot
// read.
func (m *memory) read(addr uint64, n int) ([]byte, error) {
	if err := m.spend(int64(n)); err != nil {
		return nil, err
	}
	local := []unix.Iovec{{Base: &m.buf[0]}}
	local[0].SetLen(n)
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: n}}
	for {
		got, err := unix.ProcessVMReadv(m.pid, local, remote, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EFAULT || err == unix.EIO:
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("read %d bytes at %#x of %d: %w", n, addr, m.pid, err)
		}
		m.stats.Bytes += int64(got)
		return m.buf[:got], nil
	}
}
