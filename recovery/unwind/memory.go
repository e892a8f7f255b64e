package unwind

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// ReadMem fills buf with the target's memory at addr, or fails.
type ReadMem func(addr uint64, buf []byte) error

// ProcessMem reads another process's memory with process_vm_readv (the
// caller needs ptrace access to it, as its tracer has). A short read is
// an error.
func ProcessMem(pid int) ReadMem {
	return func(addr uint64, buf []byte) error {
		if len(buf) == 0 {
			return nil
		}
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(len(buf))
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
		n, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err != nil {
			return fmt.Errorf("read %d bytes at 0x%x of process %d: %w", len(buf), addr, pid, err)
		}
		if n != len(buf) {
			return fmt.Errorf("read %d bytes at 0x%x of process %d: only %d readable", len(buf), addr, pid, n)
		}
		return nil
	}
}

// Page cache sizes. A walk of a few dozen frames touches two or three
// stack pages; through process_vm_readv each read is a system call, so
// whole pages are read once per walk. The thread is stopped: its memory
// does not change during the walk.
const (
	pageSize   = 4096
	cachePages = 4
)

// memory is the reader of one walk, with its page cache.
type memory struct {
	rd    ReadMem
	pages [cachePages]struct {
		addr  uint64
		valid bool
		data  *[pageSize]byte // kept across walks (walkers are pooled)
	}
	next    int // slot replaced next
	scratch [8]byte
}

// read returns the little-endian value of size (<= 8) bytes at addr.
func (m *memory) read(addr uint64, size int) (uint64, error) {
	b := m.scratch[:size]
	if err := m.bytes(addr, b); err != nil {
		return 0, err
	}
	var full [8]byte
	copy(full[:], b)
	return binary.LittleEndian.Uint64(full[:]), nil
}

func (m *memory) word(addr uint64) (uint64, error) { return m.read(addr, 8) }

// bytes fills b from the cache, reading the page on a miss. A read that
// crosses a page, or whose page cannot be read whole, goes to the reader
// as it is.
func (m *memory) bytes(addr uint64, b []byte) error {
	base := addr &^ (pageSize - 1)
	if addr+uint64(len(b)) < addr || addr+uint64(len(b)) > base+pageSize {
		return m.direct(addr, b)
	}
	for i := range m.pages {
		if p := &m.pages[i]; p.valid && p.addr == base {
			copy(b, p.data[addr-base:])
			return nil
		}
	}
	p := &m.pages[m.next]
	if p.data == nil {
		p.data = new([pageSize]byte)
	}
	p.valid = false
	if err := m.rd(base, p.data[:]); err != nil {
		return m.direct(addr, b)
	}
	p.addr, p.valid = base, true
	m.next = (m.next + 1) % cachePages
	copy(b, p.data[addr-base:])
	return nil
}

// reset empties the cache and sets the reader, for a new walk.
func (m *memory) reset(rd ReadMem) {
	m.rd = rd
	for i := range m.pages {
		m.pages[i].valid = false
	}
}

func (m *memory) direct(addr uint64, b []byte) error {
	if err := m.rd(addr, b); err != nil {
		return fmt.Errorf("read memory at 0x%x: %w", addr, err)
	}
	return nil
}
