package elfsym

import (
	"debug/elf"
	"fmt"
)

// A rescue point works by diverting the return of a call: at the
// function's first instruction the word at the top of the stack is the
// caller's return address. Places where that is not so, or where no
// caller checks an error, are refused: diverting there corrupts the
// process.

// region is an address range a rescue point may not be in.
type region struct {
	start, end uint64
	what       string // "the PLT stubs (.plt.sec)"
	why        string
}

// Why each kind of place is refused.
const (
	whyEntry = "the kernel jumps there with no return address on the stack"
	whyInit  = "the dynamic loader runs it before or after the program, and no caller checks an error"
	whyPLT   = "a stub that jumps to the real function; name that function instead"
	whyInner = "the top of the stack is not a return address there"
)

// unsafeSections are the executable sections no rescue point may be in.
var unsafeSections = map[string]string{
	".init":    "_init (.init)",
	".fini":    "_fini (.fini)",
	".plt":     "the PLT stubs (.plt)",
	".plt.got": "the PLT stubs (.plt.got)",
	".plt.sec": "the PLT stubs (.plt.sec)",
	".iplt":    "the PLT stubs (.iplt)",
}

// unsafeNames are functions refused by name wherever they are.
var unsafeNames = map[string]string{
	"_start": whyEntry,
	"_init":  whyInit,
	"_fini":  whyInit,
}

// loadUnsafe records the entry point and the sections of ef no rescue
// point may be in.
func (f *File) loadUnsafe(ef *elf.File) {
	if ef.Type == elf.ET_EXEC || f.interp != "" {
		f.entry = ef.Entry // a shared library's e_entry is not run
	}
	for _, s := range ef.Sections {
		what, ok := unsafeSections[s.Name]
		if !ok || s.Flags&elf.SHF_EXECINSTR == 0 || s.Addr+s.Size < s.Addr {
			continue
		}
		why := whyPLT
		if s.Name == ".init" || s.Name == ".fini" {
			why = whyInit
		}
		f.unsafe = append(f.unsafe, region{start: s.Addr, end: s.Addr + s.Size, what: what, why: why})
	}
}

// CheckRescuePoint reports why a rescue point cannot be at vaddr: not in
// executable code, the program's entry point, _init or _fini, a PLT
// stub, or not at the start of a function.
func (f *File) CheckRescuePoint(vaddr uint64) error {
	if !f.IsExecAddr(vaddr) {
		return fmt.Errorf("0x%x is not in an executable segment of %s", vaddr, f.name)
	}
	if f.entry != 0 && vaddr == f.entry {
		return fmt.Errorf("0x%x is the entry point of %s (_start): %s", vaddr, f.name, whyEntry)
	}
	for _, r := range f.unsafe {
		if vaddr >= r.start && vaddr < r.end {
			return fmt.Errorf("0x%x is in %s of %s: %s", vaddr, r.what, f.name, r.why)
		}
	}
	name, off, ok := f.Symbolize(vaddr)
	if !ok {
		return nil
	}
	if off != 0 {
		return fmt.Errorf("0x%x is 0x%x bytes into %s, not at a function start: %s", vaddr, off, name, whyInner)
	}
	if why, bad := unsafeNames[name]; bad {
		return fmt.Errorf("0x%x is %s in %s: %s", vaddr, name, f.name, why)
	}
	return nil
}
