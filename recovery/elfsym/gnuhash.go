package elfsym

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
)

// The dynamic loader finds an exported symbol through the .gnu.hash
// table without reading the others; NewSymbols does the same for a
// stripped file, whose only names are those of .dynsym: opening Debian's
// libc to look up the handful of functions the fast path hooks then reads
// some 130 KiB and parses nothing, where reading every symbol took 2-7 ms.
// Written by hand: debug/elf reads the tables but does not search them.

// dynIndex is a .gnu.hash table with the .dynsym, .dynstr and
// .gnu.version sections it indexes, read whole.
type dynIndex struct {
	nbuckets, symoffset uint32
	buckets, chain      []uint32
	dynsym, dynstr      []byte
	versym              []byte // nil when the file has no versions
}

// maxDynTables bounds each table read for a dynIndex.
const maxDynTables = 64 << 20

// loadDynIndex reads the tables of a 64-bit file, or returns nil when it
// has no usable .gnu.hash (the caller then reads every symbol).
func loadDynIndex(ef *elf.File, r io.ReaderAt, size int64) (*dynIndex, error) {
	if ef.Class != elf.ELFCLASS64 || ef.ByteOrder != binary.LittleEndian {
		return nil, nil
	}
	hash, sym := ef.SectionByType(elf.SHT_GNU_HASH), ef.SectionByType(elf.SHT_DYNSYM)
	if hash == nil || sym == nil || int(sym.Link) <= 0 || int(sym.Link) >= len(ef.Sections) {
		return nil, nil
	}
	read := func(s *elf.Section) ([]byte, error) {
		if s.Type == elf.SHT_NOBITS || s.Flags&elf.SHF_COMPRESSED != 0 || s.FileSize > maxDynTables {
			return nil, fmt.Errorf("section %s: not a plain table of at most %d bytes", s.Name, maxDynTables)
		}
		if err := checkExtent(s.Offset, s.FileSize, size); err != nil {
			return nil, fmt.Errorf("section %s: %w", s.Name, err)
		}
		return readAt(r, s.Offset, s.FileSize)
	}
	d := &dynIndex{}
	h, err := read(hash)
	if err != nil {
		return nil, err
	}
	if d.dynsym, err = read(sym); err != nil {
		return nil, err
	}
	if d.dynstr, err = read(ef.Sections[sym.Link]); err != nil {
		return nil, err
	}
	if v := ef.SectionByType(elf.SHT_GNU_VERSYM); v != nil {
		if d.versym, err = read(v); err != nil {
			return nil, err
		}
	}
	if err := d.parseHash(h); err != nil {
		return nil, fmt.Errorf("section %s: %w", hash.Name, err)
	}
	return d, nil
}

// parseHash reads the header, buckets and chain of a .gnu.hash table
// (nbuckets, symoffset, bloom size, bloom shift; the bloom filter, which
// only saves time on misses, is skipped).
func (d *dynIndex) parseHash(h []byte) error {
	le := binary.LittleEndian
	if len(h) < 16 {
		return fmt.Errorf("%d bytes, shorter than its header", len(h))
	}
	d.nbuckets, d.symoffset = le.Uint32(h), le.Uint32(h[4:])
	bloom := uint64(le.Uint32(h[8:]))
	at := 16 + 8*bloom
	if d.nbuckets == 0 || at+4*uint64(d.nbuckets) > uint64(len(h)) {
		return fmt.Errorf("%d buckets and a bloom filter of %d words do not fit in %d bytes", d.nbuckets, bloom, len(h))
	}
	words := func(b []byte) []uint32 {
		out := make([]uint32, len(b)/4)
		for i := range out {
			out[i] = le.Uint32(b[4*i:])
		}
		return out
	}
	end := at + 4*uint64(d.nbuckets)
	d.buckets, d.chain = words(h[at:end]), words(h[end:])
	return nil
}

func gnuHash(name string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(name); i++ {
		h = h*33 + uint32(name[i])
	}
	return h
}

// lookup returns the .dynsym entry named name, as a plain name means in
// NewFile's Lookup: the default version; a function of a hidden version
// only (kept for old binaries) is none, another symbol of one is itself.
// The table holds the defined symbols only, from symoffset on; the
// imports before them are searched one by one.
func (d *dynIndex) lookup(name string) (elf.Symbol, bool) {
	h := gnuHash(name)
	i := d.buckets[h%d.nbuckets]
	var other elf.Symbol
	hasOther := false
	for ; i >= d.symoffset && uint64(i-d.symoffset) < uint64(len(d.chain)); i++ {
		h2 := d.chain[i-d.symoffset]
		if h|1 == h2|1 {
			s, ok := d.symbol(i)
			switch typ := elf.ST_TYPE(s.Info); {
			case !ok || s.Name != name:
			case !d.hidden(i):
				return s, true
			case typ != elf.STT_FUNC && typ != elf.STT_GNU_IFUNC:
				other, hasOther = s, true
			}
		}
		if h2&1 != 0 {
			break // the end of the bucket's chain
		}
	}
	if hasOther {
		return other, true
	}
	for i := uint32(1); i < d.symoffset; i++ {
		if s, ok := d.symbol(i); ok && s.Name == name && s.Section == elf.SHN_UNDEF {
			return s, true
		}
	}
	return elf.Symbol{}, false
}

// symbol decodes .dynsym entry i.
func (d *dynIndex) symbol(i uint32) (elf.Symbol, bool) {
	if uint64(i+1)*elf.Sym64Size > uint64(len(d.dynsym)) {
		return elf.Symbol{}, false
	}
	le := binary.LittleEndian
	e := d.dynsym[uint64(i)*elf.Sym64Size:]
	return elf.Symbol{Name: d.nameAt(le.Uint32(e)), Info: e[4], Other: e[5], Section: elf.SectionIndex(le.Uint16(e[6:])),
		Value: le.Uint64(e[8:]), Size: le.Uint64(e[16:])}, true
}

// hidden reports whether entry i is a non-default version ("name@VER").
func (d *dynIndex) hidden(i uint32) bool {
	return uint64(2*i+2) <= uint64(len(d.versym)) && binary.LittleEndian.Uint16(d.versym[2*i:])&0x8000 != 0
}

// nameAt is the NUL-terminated string at off in .dynstr ("" past its end).
func (d *dynIndex) nameAt(off uint32) string {
	if uint64(off) >= uint64(len(d.dynstr)) {
		return ""
	}
	b := d.dynstr[off:]
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return ""
}

// lookupFunc is Lookup for a file opened with NewSymbols through its
// .gnu.hash table: the same answers for an exported function, the same
// kinds of error otherwise.
func (f *File) lookupFunc(name string) (Func, error) {
	s, ok := f.dyn.lookup(name)
	switch typ := elf.ST_TYPE(s.Info); {
	case !ok:
		return Func{}, lookupErr(ErrNotFound, "no function %q in %s (stripped? use \"address\")", name, f.name)
	case s.Section == elf.SHN_UNDEF:
		return Func{}, lookupErr(ErrUndefined, "function %q is imported, not defined, in %s", name, f.name)
	case typ == elf.STT_GNU_IFUNC:
		return Func{}, lookupErr(ErrIndirect, "%q in %s is an indirect function (STT_GNU_IFUNC) whose address is its resolver, not its implementation; name the implementation or use \"address\"",
			name, f.name)
	case typ != elf.STT_FUNC || s.Value == 0:
		return Func{}, lookupErr(ErrNotFunction, "%q in %s is not a function (symbol type %v)", name, f.name, typ)
	}
	return Func{Name: name, Addr: s.Value, Size: s.Size, Source: SourceDynsym}, nil
}
