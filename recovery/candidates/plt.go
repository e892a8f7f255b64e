package candidates

import "golang.org/x/arch/x86/x86asm"

// pltSections are the sections holding PLT stubs, with the size of one
// entry. The layouts (binutils ld, x86-64):
//
//	.plt      lazy:  jmp *GOT(f); push $i; jmp .plt[0]          16 bytes
//	          IBT:   endbr64; push $i; bnd jmp .plt[0]          (no GOT jump:
//	                 the calls go to .plt.sec)
//	.plt.sec  IBT:   endbr64; bnd jmp *GOT(f); nop              16 bytes
//	.plt.got  -z now or GLOB_DAT: jmp *GOT(f); xchg ax,ax       8 bytes (16 with IBT)
//	.iplt     static binaries' IFUNC stubs: jmp *GOT            16 bytes
//
// Rather than trusting one layout, every jmp [rip+disp] in these sections
// is decoded, and the GOT slot it reads is looked up in the relocations:
// that gives the name whatever the layout, and the stub's start is the
// jump's address rounded down to the entry size.
var pltSections = map[string]uint64{
	".plt":     16,
	".plt.sec": 16,
	".plt.got": 8,
	".iplt":    16,
}

// resolveStubs fills img.stubs from the PLT sections' GOT jumps.
func (img *image) resolveStubs() {
	if len(img.slots) == 0 {
		return
	}
	var buf []insn
	for i := range img.code {
		s := &img.code[i]
		if !s.plt {
			continue
		}
		ent := pltSections[s.name]
		if s.name == ".plt.got" && hasEndbr(s.data) {
			ent = 16
		}
		buf, _ = decodeRange(s.data, s.addr, buf)
		for k := range buf {
			img.addStub(&buf[k], s.addr, ent)
		}
	}
}

func (img *image) addStub(in *insn, secAddr, ent uint64) {
	if in.Op != x86asm.JMP {
		return
	}
	slot, ok := ripSlot(in)
	if !ok {
		return
	}
	name, ok := img.slots[slot]
	if !ok {
		return
	}
	start := secAddr + (in.addr-secAddr)/ent*ent
	if _, dup := img.stubs[start]; !dup {
		img.nstubs++
	}
	img.stubs[start] = name
	// Calls may also land on the jump itself (a stub without endbr64
	// whose entry size differs from the table above).
	img.stubs[in.addr] = name
}

// hasEndbr reports whether a stub section begins with endbr64, the mark
// of IBT's 16-byte entries.
func hasEndbr(b []byte) bool {
	return len(b) >= 4 && b[0] == endbr64[0] && b[1] == endbr64[1] && b[2] == endbr64[2] && b[3] == endbr64[3]
}
