package unwind

import (
	"encoding/binary"
	"fmt"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// fakeCFI is an unwind table given as FDEs.
type fakeCFI []elfsym.FDE

func (c fakeCFI) Lookup(v uint64) (elfsym.FDE, bool) {
	for _, f := range c {
		if v >= f.Start && v-f.Start < f.Size {
			return f, true
		}
	}
	return elfsym.FDE{}, false
}

// stdCIE is GCC's x86-64 CIE: CFA = rsp+8, return address at CFA-8.
var stdCIE = &elfsym.CIE{CodeAlign: 1, DataAlign: -8, ReturnReg: 16, Augmentation: "zR",
	Initial: []byte{0x0c, 0x07, 0x08, 0x90, 0x01}}

// rbpFrame is the program of a function with a frame pointer, from its
// first byte: CFA = rbp+16, rbp saved at CFA-16.
var rbpFrame = []byte{0x0c, 0x06, 0x10, 0x86, 0x02}

// fakeMem is memory made of regions.
type fakeMem map[uint64][]byte

func (m fakeMem) read(addr uint64, buf []byte) error {
	for base, b := range m {
		if addr >= base && addr-base <= uint64(len(b)) && uint64(len(buf)) <= uint64(len(b))-(addr-base) {
			copy(buf, b[addr-base:])
			return nil
		}
	}
	return fmt.Errorf("no memory at 0x%x", addr)
}

func (m fakeMem) put(addr, v uint64) {
	for base, b := range m {
		if addr >= base && addr-base+8 <= uint64(len(b)) {
			binary.LittleEndian.PutUint64(b[addr-base:], v)
			return
		}
	}
	panic(fmt.Sprintf("test bug: no region for 0x%x", addr))
}

// fakeModules is one module at bias 0 holding [start, end) with cfi.
func fakeModules(start, end uint64, cfi FDELookup) *Modules {
	ms := &Modules{}
	ms.Add(start, end, 0, &Module{Path: "/fake", CFI: cfi})
	return ms
}
