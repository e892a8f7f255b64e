package patch

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The code region assure maps into a process (r-x, CodeSize bytes):
//
//	0      syscall; int3        where the supervisor runs injected calls
//	16     int3                 the supervisor's return trampoline
//	1024   frame table          (the supervisor's; see supervisor/frames.go)
//	4096   routines             stubEnter, stubReturn, stubSigsys, stubRestorer
//	8192   thunks, literals     per-process: the trampoline and SIGSYS thunks
//	8448   entry stubs          of rescue points within ±2 GiB of the region
//
// Syscall user dispatch always allows system calls made from the region.
// Rescue points farther away get their entry stubs in a near page of their
// own (NearSize bytes: literals, then stubs).
const (
	CodeSize      = 16 << 10
	RoutinesAt    = 4096
	ThunksAt      = 8192
	EntryStubsAt  = 8448
	NearSize      = 4096
	nearLiterals  = 16 // ctl address, stubEnter address
	EntryStubSize = 128
)

// Code is the layout of one process's code region at Base.
type Code struct {
	Base                            uint64
	Enter, Return, Sigsys, Restorer uint64 // routine addresses
	Trampoline, SigsysThunk         uint64 // thunks
	litCtl, litEnter                uint64
}

// BuildCode lays out the routines and thunks for a code region at base
// and a control block at ctl. It returns the bytes to write at
// base+RoutinesAt (up to base+EntryStubsAt).
func BuildCode(r *Routines, base, ctl uint64) (*Code, []byte, error) {
	c := &Code{Base: base}
	buf := make([]byte, EntryStubsAt-RoutinesAt)
	for i := range buf {
		buf[i] = 0xcc
	}
	off := 0
	place := func(code []byte) (uint64, error) {
		off = (off + 15) &^ 15
		if off+len(code) > ThunksAt-RoutinesAt {
			return 0, errors.New("the injected routines do not fit their page")
		}
		copy(buf[off:], code)
		a := base + RoutinesAt + uint64(off)
		off += len(code)
		return a, nil
	}
	var err error
	for _, x := range []struct {
		dst  *uint64
		code []byte
	}{{&c.Enter, r.Enter}, {&c.Return, r.Return}, {&c.Sigsys, r.Sigsys}, {&c.Restorer, r.Restorer}} {
		if *x.dst, err = place(x.code); err != nil {
			return nil, nil, err
		}
	}
	// Literals, then the two thunks.
	t := ThunksAt - RoutinesAt
	lit := func(v uint64) uint64 {
		binary.LittleEndian.PutUint64(buf[t:], v)
		a := base + RoutinesAt + uint64(t)
		t += 8
		return a
	}
	c.litCtl = lit(ctl)
	litReturn := lit(c.Return)
	litSigsys := lit(c.Sigsys)
	c.litEnter = lit(c.Enter)
	c.Trampoline = base + RoutinesAt + uint64(t)
	th := Thunk(c.Trampoline, c.litCtl, litReturn)
	t += copy(buf[t:], th)
	c.SigsysThunk = base + RoutinesAt + uint64(t)
	copy(buf[t:], Thunk(c.SigsysThunk, c.litCtl, litSigsys))
	return c, buf, nil
}

// Near reports whether a function at addr can have its entry stub in the
// code region (both ends of every jump within ±2 GiB).
func (c *Code) Near(addr uint64) bool {
	return Within2G(addr, c.Base) && Within2G(addr, c.Base+CodeSize)
}

// Within2G reports whether code at a and a page at b reach each other
// with rel32 jumps, with room for the page's CodeSize bytes.
func Within2G(a, b uint64) bool {
	d := int64(a - b)
	return d > -(1<<31)+CodeSize && d < (1<<31)-CodeSize
}

// NearPage returns the literals that start a near page at page for the
// process's control block and stubEnter: entry stubs there use them.
func (c *Code) NearPage(page, ctl uint64) (lits []byte, litCtl, litEnter uint64) {
	lits = make([]byte, nearLiterals)
	binary.LittleEndian.PutUint64(lits[0:], ctl)
	binary.LittleEndian.PutUint64(lits[8:], c.Enter)
	return lits, page, page + 8
}

// RegionLiterals returns the literals entry stubs in the code region use.
func (c *Code) RegionLiterals() (litCtl, litEnter uint64) { return c.litCtl, c.litEnter }

// EntryStub builds rescue point k's entry stub at addr:
//
//	push $k; push [ctl]; jmp [stubEnter]   the fast path
//	int3                                    trap: the supervisor's entry
//	relocated first instructions; jmp back  back
//
// It returns the stub's bytes and the addresses of trap and back.
func EntryStub(addr uint64, k int, litCtl, litEnter uint64, d *Displaced) ([]byte, uint64, uint64, error) {
	if k < 0 || k >= MaxRescue {
		return nil, 0, 0, fmt.Errorf("rescue point index %d out of range", k)
	}
	var b []byte
	b = append(b, 0x68, 0, 0, 0, 0) // push imm32
	binary.LittleEndian.PutUint32(b[1:], uint32(k))
	push, err := PushRIP(addr+uint64(len(b)), litCtl)
	if err != nil {
		return nil, 0, 0, err
	}
	b = append(b, push...)
	jmp, err := JmpRIP(addr+uint64(len(b)), litEnter)
	if err != nil {
		return nil, 0, 0, err
	}
	b = append(b, jmp...)
	trap := addr + uint64(len(b)) // EntryTrap
	b = append(b, 0xcc)
	back := addr + uint64(len(b))
	moved, err := d.Relocate(back)
	if err != nil {
		return nil, 0, 0, err
	}
	b = append(b, moved...)
	if len(b) > EntryStubSize {
		return nil, 0, 0, fmt.Errorf("%w: entry stub of %d bytes", ErrNotPatchable, len(b))
	}
	return b, trap, back, nil
}

// Thunk is `push [litCtl]; jmp [litTarget]` at addr.
func Thunk(addr, litCtl, litTarget uint64) []byte {
	push, _ := PushRIP(addr, litCtl)
	jmp, _ := JmpRIP(addr+6, litTarget)
	return append(push, jmp...)
}

// PushRIP encodes `push qword [rip+disp]` at pc reading lit.
func PushRIP(pc, lit uint64) ([]byte, error) { return ripForm(0x35, pc, lit) }

// JmpRIP encodes `jmp qword [rip+disp]` at pc reading lit.
func JmpRIP(pc, lit uint64) ([]byte, error) { return ripForm(0x25, pc, lit) }

func ripForm(modrm byte, pc, lit uint64) ([]byte, error) {
	rel, err := rel32(pc+6, lit)
	if err != nil {
		return nil, err
	}
	b := []byte{0xff, modrm, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[2:], uint32(rel))
	return b, nil
}

// HookStub builds the stub of a function that changes the memory layout
// (mmap, mprotect, mremap, brk...) at addr: it flags the control block
// (FlagLayout: the next checkpoint first lets the supervisor track what
// was mapped), then runs the relocated first instructions and jumps back.
//
//	push rax; mov rax, [litCtl]; lock or dword [rax+flags], FlagLayout; pop rax
func HookStub(addr, litCtl uint64, d *Displaced) ([]byte, error) {
	b := []byte{0x50, 0x48, 0x8b, 0x05, 0, 0, 0, 0}
	rel, err := rel32(addr+uint64(len(b)), litCtl)
	if err != nil {
		return nil, err
	}
	binary.LittleEndian.PutUint32(b[4:], uint32(rel))
	b = append(b, 0xf0, 0x83, 0x48, ctlFlags, FlagLayout, 0x58)
	moved, err := d.Relocate(addr + uint64(len(b)))
	if err != nil {
		return nil, err
	}
	b = append(b, moved...)
	if len(b) > EntryStubSize {
		return nil, fmt.Errorf("%w: hook stub of %d bytes", ErrNotPatchable, len(b))
	}
	return b, nil
}
