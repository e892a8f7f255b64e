package elfsym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// This file builds small ELF64 little-endian files by hand, so that the
// package can be tested (and fuzzed) without a C toolchain and with
// precisely the malformations a test wants.

type testSection struct {
	name    string
	typ     elf.SectionType
	flags   elf.SectionFlag
	addr    uint64
	data    []byte
	link    uint32 // index into the sections given to buildELF (0 = none)
	entsize uint64
}

type testProg struct {
	typ   elf.ProgType
	flags elf.ProgFlag
	// sections names the (contiguous) sections the segment covers.
	sections []string
	// memExtra is added to memsz beyond the file-backed part.
	memExtra uint64
}

type builtELF struct {
	data []byte
	// off maps section names to file offsets.
	off map[string]uint64
	// shoff is the offset of the section header table.
	shoff uint64
}

// buildELF lays out: ELF header, program headers, section contents in
// order (16-byte aligned), .shstrtab, section headers. Section indices
// are 1-based positions in secs (index 0 is the null section). With
// noSections the section header table is left out.
func buildELF(typ elf.Type, secs []testSection, progs []testProg, noSections bool) builtELF {
	le := binary.LittleEndian
	const ehsize, phentsize, shentsize = 64, 56, 64
	var shstr bytes.Buffer
	shstr.WriteByte(0)
	nameOff := make([]uint32, len(secs)+2)
	for i, s := range secs {
		nameOff[i+1] = uint32(shstr.Len())
		shstr.WriteString(s.name)
		shstr.WriteByte(0)
	}
	nameOff[len(secs)+1] = uint32(shstr.Len())
	shstr.WriteString(".shstrtab")
	shstr.WriteByte(0)

	out := make([]byte, ehsize+phentsize*len(progs))
	align := func() {
		for len(out)%16 != 0 {
			out = append(out, 0)
		}
	}
	align()
	b := builtELF{off: map[string]uint64{}}
	offs := make([]uint64, len(secs))
	for i, s := range secs {
		align()
		offs[i] = uint64(len(out))
		b.off[s.name] = offs[i]
		if s.typ != elf.SHT_NOBITS {
			out = append(out, s.data...)
		}
	}
	align()
	shstrOff := uint64(len(out))
	out = append(out, shstr.Bytes()...)
	align()
	shoff := uint64(len(out))
	b.shoff = shoff

	// Section headers.
	sh := make([]byte, shentsize) // null section
	out = append(out, sh...)
	put := func(name uint32, typ elf.SectionType, flags elf.SectionFlag, addr, off, size uint64, link uint32, entsize uint64) {
		h := make([]byte, shentsize)
		le.PutUint32(h[0:], name)
		le.PutUint32(h[4:], uint32(typ))
		le.PutUint64(h[8:], uint64(flags))
		le.PutUint64(h[16:], addr)
		le.PutUint64(h[24:], off)
		le.PutUint64(h[32:], size)
		le.PutUint32(h[40:], link)
		le.PutUint64(h[48:], 1)
		le.PutUint64(h[56:], entsize)
		out = append(out, h...)
	}
	for i, s := range secs {
		put(nameOff[i+1], s.typ, s.flags, s.addr, offs[i], uint64(len(s.data)), s.link, s.entsize)
	}
	put(nameOff[len(secs)+1], elf.SHT_STRTAB, 0, 0, shstrOff, uint64(shstr.Len()), 0, 0)

	// ELF header.
	copy(out, elf.ELFMAG)
	out[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	out[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	out[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(out[16:], uint16(typ))
	le.PutUint16(out[18:], uint16(elf.EM_X86_64))
	le.PutUint32(out[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(out[32:], ehsize) // phoff
	if !noSections {
		le.PutUint64(out[40:], shoff)
	}
	le.PutUint16(out[52:], ehsize)
	le.PutUint16(out[54:], phentsize)
	le.PutUint16(out[56:], uint16(len(progs)))
	le.PutUint16(out[58:], shentsize)
	if !noSections {
		le.PutUint16(out[60:], uint16(len(secs)+2))
		le.PutUint16(out[62:], uint16(len(secs)+1))
	}

	// Program headers.
	for i, p := range progs {
		h := out[ehsize+i*phentsize:]
		var first, last int = -1, -1
		for j, s := range secs {
			for _, n := range p.sections {
				if s.name == n {
					if first < 0 {
						first = j
					}
					last = j
				}
			}
		}
		le.PutUint32(h[0:], uint32(p.typ))
		le.PutUint32(h[4:], uint32(p.flags))
		if first >= 0 {
			off := offs[first]
			filesz := offs[last] + uint64(len(secs[last].data)) - off
			le.PutUint64(h[8:], off)
			le.PutUint64(h[16:], secs[first].addr)
			le.PutUint64(h[24:], secs[first].addr)
			le.PutUint64(h[32:], filesz)
			le.PutUint64(h[40:], filesz+p.memExtra)
		}
		le.PutUint64(h[48:], 0x1000)
	}
	b.data = out
	return b
}

type testSym struct {
	name  string
	value uint64
	size  uint64
	typ   elf.SymType
	bind  elf.SymBind
	shndx elf.SectionIndex
}

// symtab encodes symbols (after the null entry) and their string table.
func symtab(syms []testSym) (tab, str []byte) {
	le := binary.LittleEndian
	var sb bytes.Buffer
	sb.WriteByte(0)
	tab = make([]byte, elf.Sym64Size)
	for _, s := range syms {
		e := make([]byte, elf.Sym64Size)
		le.PutUint32(e[0:], uint32(sb.Len()))
		sb.WriteString(s.name)
		sb.WriteByte(0)
		e[4] = elf.ST_INFO(s.bind, s.typ)
		le.PutUint16(e[6:], uint16(s.shndx))
		le.PutUint64(e[8:], s.value)
		le.PutUint64(e[16:], s.size)
		tab = append(tab, e...)
	}
	return tab, sb.Bytes()
}

// ehBuilder writes .eh_frame contents at a known virtual address.
type ehBuilder struct {
	addr uint64
	b    []byte
}

func (e *ehBuilder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }

// cie appends a version 1 CIE and returns its offset. augData is written
// after a uleb128 length when aug starts with "z".
func (e *ehBuilder) cie(aug string, augData []byte) int {
	return e.cieV(1, aug, augData)
}

func (e *ehBuilder) cieV(version byte, aug string, augData []byte) int {
	var body []byte
	body = binary.LittleEndian.AppendUint32(body, 0) // CIE id
	body = append(body, version)
	body = append(body, aug...)
	body = append(body, 0)
	if version == 4 {
		body = append(body, 8, 0)
	}
	body = append(body, 1)    // code align
	body = append(body, 0x78) // data align -8
	body = append(body, 16)   // return address register
	if len(aug) > 0 && aug[0] == 'z' {
		body = append(body, byte(len(augData)))
		body = append(body, augData...)
	}
	body = append(body, 0x0c, 0x07, 0x08) // DW_CFA_def_cfa rsp+8
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	off := len(e.b)
	e.u32(uint32(len(body)))
	e.b = append(e.b, body...)
	return off
}

// fde appends an FDE for the CIE at cieOff. body builds the bytes after
// the CIE pointer given the virtual address they will be at.
func (e *ehBuilder) fde(cieOff int, body func(fieldAddr uint64) []byte) int {
	off := len(e.b)
	ptrOff := off + 4
	rest := body(e.addr + uint64(ptrOff+4))
	for (len(rest)+4)%4 != 0 {
		rest = append(rest, 0)
	}
	e.u32(uint32(4 + len(rest)))
	e.u32(uint32(ptrOff - cieOff))
	e.b = append(e.b, rest...)
	return off
}

func (e *ehBuilder) terminate() { e.u32(0) }

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// sampleELF is a small PIE-like ET_DYN file with a text section holding
// three functions, a symbol table naming two of them, an .eh_frame for
// all three and a data section with one object.
type sampleOpts struct {
	noSymtab   bool
	noSections bool
}

const (
	sampleText = 0x1000
	sampleData = 0x3000
)

func sampleELF(o sampleOpts) builtELF {
	text := bytes.Repeat([]byte{0xcc}, 0x100)
	copy(text[0x00:], []byte{0x55, 0x48, 0x89, 0xe5}) // f1
	copy(text[0x40:], []byte{0x31, 0xc0, 0xc3})       // f2
	copy(text[0x80:], []byte{0x90, 0xc3})             // f3 (unnamed)
	eh := &ehBuilder{addr: 0x2000}
	c := eh.cie("zR", []byte{0x1b})
	for _, f := range []struct{ start, size uint64 }{{sampleText, 0x30}, {sampleText + 0x40, 0x10}, {sampleText + 0x80, 0x8}} {
		eh.fde(c, func(at uint64) []byte {
			b := le32(uint32(f.start - at))
			b = append(b, le32(uint32(f.size))...)
			return append(b, 0) // augmentation data length
		})
	}
	eh.terminate()
	// .eh_frame_hdr: version, eh_frame_ptr enc (sdata4|pcrel), fde_count
	// enc, table enc, eh_frame_ptr.
	hdr := []byte{1, 0x1b, 0xff, 0xff}
	hdrAt := uint64(0x2800 + 4) // address of eh_frame_ptr
	hdr = append(hdr, le32(uint32(0x2000-hdrAt))...)

	secs := []testSection{
		{name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: sampleText, data: text},
		{name: ".eh_frame", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, addr: 0x2000, data: eh.b},
		{name: ".eh_frame_hdr", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, addr: 0x2800, data: hdr},
		{name: ".data", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_WRITE, addr: sampleData, data: make([]byte, 16)},
	}
	if !o.noSymtab {
		tab, str := symtab([]testSym{
			{name: "f1", value: sampleText, size: 0x30, typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: 1},
			{name: "f2", value: sampleText + 0x40, size: 0x10, typ: elf.STT_FUNC, bind: elf.STB_LOCAL, shndx: 1},
			{name: "obj", value: sampleData, size: 8, typ: elf.STT_OBJECT, bind: elf.STB_GLOBAL, shndx: 4},
			{name: "imp", typ: elf.STT_FUNC, bind: elf.STB_GLOBAL, shndx: elf.SHN_UNDEF},
		})
		secs = append(secs,
			testSection{name: ".symtab", typ: elf.SHT_SYMTAB, data: tab, link: 6, entsize: elf.Sym64Size},
			testSection{name: ".strtab", typ: elf.SHT_STRTAB, data: str})
	}
	progs := []testProg{
		{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_X, sections: []string{".text"}},
		{typ: elf.PT_LOAD, flags: elf.PF_R, sections: []string{".eh_frame"}},
		{typ: elf.PT_LOAD, flags: elf.PF_R, sections: []string{".eh_frame_hdr"}},
		{typ: elf.PT_LOAD, flags: elf.PF_R | elf.PF_W, sections: []string{".data"}, memExtra: 0x100},
		{typ: ptGNUEHFrame, flags: elf.PF_R, sections: []string{".eh_frame_hdr"}},
	}
	return buildELF(elf.ET_DYN, secs, progs, o.noSections)
}
