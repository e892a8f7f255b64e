package elfsym

import (
	"debug/elf"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// symbol is one named entry of .symtab or .dynsym.
type symbol struct {
	name  string // as stored: may carry "@VER" or "@@VER"
	base  string // name without the version suffix
	value uint64
	size  uint64
	typ   elf.SymType
	bind  elf.SymBind
	shndx elf.SectionIndex
	src   Source
	index uint32 // position in its table
	// hidden marks a .dynsym entry for a non-default version of its name
	// (nm -D prints "name@VER" rather than "name@@VER"): an old ABI kept
	// for binaries linked against it, not what the name means today.
	hidden bool
}

func (s *symbol) defined() bool { return s.shndx != elf.SHN_UNDEF }

func (s *symbol) isFunc() bool { return s.typ == elf.STT_FUNC || s.typ == elf.STT_GNU_IFUNC }

// loadSymbols reads .symtab and .dynsym. debug/elf's Symbols methods would
// do, but they materialise every symbol with its version strings before
// any limit can be applied; reading the entries here keeps only what is
// needed and lets the count be checked against MaxSymbols first.
func (f *File) loadSymbols(ef *elf.File, r io.ReaderAt, size int64) error {
	budget := MaxSymbols
	for _, t := range []struct {
		typ elf.SectionType
		src Source
	}{{elf.SHT_SYMTAB, SourceSymtab}, {elf.SHT_DYNSYM, SourceDynsym}} {
		sec := ef.SectionByType(t.typ)
		if sec == nil {
			continue
		}
		syms, err := readSymtab(ef, sec, r, size, t.src, &budget)
		if err != nil {
			return fmt.Errorf("section %s: %w", sectionName(sec), err)
		}
		if t.typ == elf.SHT_DYNSYM {
			if err := markHidden(ef, sec, r, size, syms); err != nil {
				return err
			}
		}
		f.syms = append(f.syms, syms...)
	}
	return nil
}

func sectionName(s *elf.Section) string {
	if s.Name == "" {
		return fmt.Sprintf("of type %v", s.Type)
	}
	return s.Name
}

func readSymtab(ef *elf.File, sec *elf.Section, r io.ReaderAt, size int64, src Source, budget *int) ([]symbol, error) {
	entSize := uint64(elf.Sym64Size)
	if ef.Class == elf.ELFCLASS32 {
		entSize = elf.Sym32Size
	}
	if sec.Entsize != 0 && sec.Entsize != entSize {
		return nil, fmt.Errorf("entry size %d, want %d", sec.Entsize, entSize)
	}
	if sec.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("compressed symbol table")
	}
	if err := checkExtent(sec.Offset, sec.FileSize, size); err != nil {
		return nil, err
	}
	n := sec.FileSize / entSize
	if n > uint64(*budget) {
		return nil, fmt.Errorf("%d symbols, more than the limit of %d", n, MaxSymbols)
	}
	*budget -= int(n)

	if int(sec.Link) <= 0 || int(sec.Link) >= len(ef.Sections) {
		return nil, fmt.Errorf("invalid string table index %d", sec.Link)
	}
	strSec := ef.Sections[sec.Link]
	if strSec.Type != elf.SHT_STRTAB || strSec.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("linked section %d is not an uncompressed string table", sec.Link)
	}
	if err := checkExtent(strSec.Offset, strSec.FileSize, size); err != nil {
		return nil, fmt.Errorf("string table: %w", err)
	}
	if strSec.FileSize > maxStringTable {
		return nil, fmt.Errorf("string table of %d bytes exceeds the limit of %d", strSec.FileSize, maxStringTable)
	}
	data, err := readAt(r, sec.Offset, n*entSize)
	if err != nil {
		return nil, err
	}
	strData, err := readAt(r, strSec.Offset, strSec.FileSize)
	if err != nil {
		return nil, fmt.Errorf("string table: %w", err)
	}
	// One string for the whole table; names are substrings of it.
	strtab := string(strData)

	var (
		syms     []symbol
		nameOffs []uint32
	)
	for i := uint64(1); i < n; i++ { // entry 0 is the reserved null symbol
		s, nameOff, ok := decodeSym(ef, data[i*entSize:(i+1)*entSize], len(strtab))
		if !ok {
			continue
		}
		s.src = src
		s.index = uint32(i)
		syms = append(syms, s)
		nameOffs = append(nameOffs, nameOff)
	}
	return nameSymbols(syms, nameOffs, strtab), nil
}

// maxSymbolName bounds the length of a symbol name. Longer names are
// dropped: a manifest cannot name them (its limit is 1024 bytes), and
// without the bound a hostile table of many long overlapping names would
// make every comparison and hash of names expensive.
const maxSymbolName = 4096

// nameSymbols sets each symbol's name, the NUL-terminated string at its
// offset in strtab, and drops those without one. Finding each end with a
// scan from its offset would cost O(symbols × table size) on a hostile
// table with no NULs; visiting the offsets in increasing order lets every
// byte of the table be scanned at most once.
func nameSymbols(syms []symbol, nameOffs []uint32, strtab string) []symbol {
	order := make([]int, len(syms))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return nameOffs[order[a]] < nameOffs[order[b]] })
	nul := -1 // position of the first NUL at or after the current offset, or len(strtab) if none
	for _, i := range order {
		off := int(nameOffs[i])
		if nul < off {
			if j := strings.IndexByte(strtab[off:], 0); j >= 0 {
				nul = off + j
			} else {
				nul = len(strtab)
			}
		}
		if nul < len(strtab) && nul-off <= maxSymbolName {
			syms[i].name = strtab[off:nul]
			syms[i].base, _, _ = strings.Cut(syms[i].name, "@")
		}
	}
	// Drop unnamed (empty or unterminated) symbols, keeping table order.
	out := syms[:0]
	for _, s := range syms {
		if s.name != "" {
			out = append(out, s)
		}
	}
	return out
}

// versymHidden is the bit of a .gnu.version entry that marks a
// non-default version.
const versymHidden = 0x8000

// markHidden reads .gnu.version, which holds one 16-bit version index per
// .dynsym entry, and marks the symbols bound to a non-default version.
// Without it, libc's memcpy@GLIBC_2.2.5 and memcpy@@GLIBC_2.14 would both
// answer to "memcpy".
func markHidden(ef *elf.File, dynsym *elf.Section, r io.ReaderAt, size int64, syms []symbol) error {
	sec := ef.SectionByType(elf.SHT_GNU_VERSYM)
	if sec == nil || len(syms) == 0 {
		return nil
	}
	if sec.Flags&elf.SHF_COMPRESSED != 0 {
		return fmt.Errorf("section %s: compressed", sectionName(sec))
	}
	if err := checkExtent(sec.Offset, sec.FileSize, size); err != nil {
		return fmt.Errorf("section %s: %w", sectionName(sec), err)
	}
	entSize := uint64(elf.Sym64Size)
	if ef.Class == elf.ELFCLASS32 {
		entSize = elf.Sym32Size
	}
	n := min(sec.FileSize/2, dynsym.FileSize/entSize)
	data, err := readAt(r, sec.Offset, n*2)
	if err != nil {
		return fmt.Errorf("section %s: %w", sectionName(sec), err)
	}
	for i := range syms {
		if idx := uint64(syms[i].index); idx < n {
			syms[i].hidden = ef.ByteOrder.Uint16(data[idx*2:])&versymHidden != 0
		}
	}
	return nil
}

// decodeSym decodes one symbol entry, returning it with the offset of its
// name. Section and file symbols, and symbols without a name in the
// string table, are dropped: they can neither be looked up nor name a
// function.
func decodeSym(ef *elf.File, b []byte, strtabLen int) (symbol, uint32, bool) {
	bo := ef.ByteOrder
	var (
		s       symbol
		nameOff uint32
		info    byte
	)
	if ef.Class == elf.ELFCLASS32 {
		nameOff = bo.Uint32(b[0:])
		s.value = uint64(bo.Uint32(b[4:]))
		s.size = uint64(bo.Uint32(b[8:]))
		info = b[12]
		s.shndx = elf.SectionIndex(bo.Uint16(b[14:]))
	} else {
		nameOff = bo.Uint32(b[0:])
		info = b[4]
		s.shndx = elf.SectionIndex(bo.Uint16(b[6:]))
		s.value = bo.Uint64(b[8:])
		s.size = bo.Uint64(b[16:])
	}
	s.typ = elf.ST_TYPE(info)
	s.bind = elf.ST_BIND(info)
	if s.typ == elf.STT_SECTION || s.typ == elf.STT_FILE || nameOff == 0 || int64(nameOff) >= int64(strtabLen) {
		return s, 0, false
	}
	return s, nameOff, true
}

func readAt(r io.ReaderAt, off, n uint64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := r.ReadAt(b, int64(off)); err != nil {
		return nil, fmt.Errorf("read %d bytes at 0x%x: %w", n, off, err)
	}
	return b, nil
}

// symbolFuncs derives the function list from the symbol tables: defined
// STT_FUNC/STT_GNU_IFUNC symbols with a nonzero address, one per address.
func symbolFuncs(syms []symbol) []Func {
	var cand []*symbol
	for i := range syms {
		s := &syms[i]
		if s.isFunc() && s.defined() && s.value != 0 {
			cand = append(cand, s)
		}
	}
	// Sort by address only, then pick each address's best name in one
	// pass: comparing names inside the sort would cost a name comparison
	// per step on hostile tables with many aliases.
	sort.Slice(cand, func(i, j int) bool { return cand[i].value < cand[j].value })
	var out []Func
	for i := 0; i < len(cand); {
		best, size := cand[i], uint64(0)
		j := i
		for ; j < len(cand) && cand[j].value == best.value; j++ {
			if better(cand[j], best) {
				best = cand[j]
			}
			size = max(size, cand[j].size)
		}
		if best.size != 0 {
			size = best.size
		}
		out = append(out, Func{Name: best.base, Addr: best.value, Size: size, Source: best.src})
		i = j
	}
	return out
}

// better orders aliases at one address by how good a name they make:
// .symtab first (it is the superset, with local names), then global over
// weak over local binding (the public name: malloc, not __libc_malloc),
// then fewer leading underscores, then shorter, then alphabetical, so the
// choice is deterministic.
func better(a, b *symbol) bool {
	if a.src != b.src {
		return a.src == SourceSymtab
	}
	if ra, rb := bindRank(a.bind), bindRank(b.bind); ra != rb {
		return ra < rb
	}
	ua := len(a.base) - len(strings.TrimLeft(a.base, "_"))
	ub := len(b.base) - len(strings.TrimLeft(b.base, "_"))
	if ua != ub {
		return ua < ub
	}
	if len(a.base) != len(b.base) {
		return len(a.base) < len(b.base)
	}
	return a.base < b.base
}

func bindRank(b elf.SymBind) int {
	switch b {
	case elf.STB_GLOBAL:
		return 0
	case elf.STB_WEAK:
		return 1
	default:
		return 2
	}
}

// Lookup finds the function called name in .symtab or .dynsym. A plain
// name also matches the default version of a versioned symbol
// ("name@@VER"); a name with "@" must match a .symtab entry exactly.
//
// The errors say what is wrong and what to do, and wrap ErrNotFound,
// ErrNotFunction, ErrUndefined (the function is imported from another
// module: name that module instead), ErrAmbiguous (several local
// functions share the name) or ErrIndirect (an IFUNC's symbol value is its
// resolver, which runs once at load time, not the implementation).
func (f *File) Lookup(name string) (Func, error) {
	matches := f.matching(name)
	if len(matches) == 0 {
		return Func{}, lookupErr(ErrNotFound, "no function %q in %s (stripped? use \"address\")", name, f.name)
	}
	var (
		funcs    []*symbol
		other    *symbol // a defined symbol of another type
		imported bool
	)
	for _, s := range matches {
		switch {
		case !s.defined():
			imported = true
		case !s.isFunc():
			if other == nil {
				other = s
			}
		case s.value != 0:
			funcs = append(funcs, s)
		}
	}
	switch {
	case len(funcs) > 0:
	case other != nil:
		return Func{}, lookupErr(ErrNotFunction, "%q in %s is not a function (symbol type %v)", name, f.name, other.typ)
	case imported:
		return Func{}, lookupErr(ErrUndefined, "function %q is imported, not defined, in %s", name, f.name)
	default:
		return Func{}, lookupErr(ErrNotFound, "no function %q in %s (stripped? use \"address\")", name, f.name)
	}
	if err := ambiguity(name, f.name, funcs); err != nil {
		return Func{}, err
	}
	// All remaining candidates are aliases at one address.
	best := funcs[0]
	size := best.size
	for _, s := range funcs[1:] {
		if better(s, best) {
			best = s
		}
		size = max(size, s.size)
	}
	if best.size != 0 {
		size = best.size
	}
	if best.typ == elf.STT_GNU_IFUNC {
		return Func{}, lookupErr(ErrIndirect, "%q in %s is an indirect function (STT_GNU_IFUNC) whose address is its resolver, not its implementation; name the implementation or use \"address\"",
			name, f.name)
	}
	return Func{Name: best.base, Addr: best.value, Size: size, Source: best.src}, nil
}

// maxListed bounds the addresses an ambiguity error lists, so that a file
// with millions of same-named symbols cannot produce a huge message.
const maxListed = 4

// ambiguity returns an error if funcs are at more than one address:
// typically static functions of the same name in different source files.
func ambiguity(name, file string, funcs []*symbol) error {
	var addrs []uint64 // distinct, at most maxListed+1
	for _, s := range funcs {
		if len(addrs) > maxListed {
			break
		}
		if !slices.Contains(addrs, s.value) {
			addrs = append(addrs, s.value)
		}
	}
	if len(addrs) < 2 {
		return nil
	}
	slices.Sort(addrs)
	count := fmt.Sprint(len(addrs))
	if len(addrs) > maxListed {
		addrs, count = addrs[:maxListed], fmt.Sprintf("more than %d", maxListed)
	}
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = fmt.Sprintf("0x%x", a)
	}
	return lookupErr(ErrAmbiguous, "%s functions named %q in %s (at %s); use \"address\"",
		count, name, file, strings.Join(list, ", "))
}

// matching returns the symbols name refers to (see Lookup).
func (f *File) matching(name string) []*symbol {
	base, _, versioned := strings.Cut(name, "@")
	f.indexOnce.Do(f.buildIndex)
	var out []*symbol
	for _, i := range f.index[base] {
		s := &f.syms[i]
		switch {
		case versioned:
			if s.name != name {
				continue
			}
		case !s.defined():
			// An import, even of an older version ("puts@GLIBC_2.2.5"), is
			// still an import of name.
		case s.hidden:
			continue
		case s.name == base:
		case strings.HasPrefix(s.name[len(base):], "@@"):
			// The default version, which is what a plain reference binds to.
		default:
			continue
		}
		out = append(out, s)
	}
	return out
}

// buildIndex maps base names to symbols, on the first Lookup: listing
// the functions of a file (the common case) does not need it. A map keeps
// the cost linear in the total length of the names, which sorting them
// would not be for hostile tables.
func (f *File) buildIndex() {
	f.index = make(map[string][]int32)
	for i := range f.syms {
		f.index[f.syms[i].base] = append(f.index[f.syms[i].base], int32(i))
	}
}

// lookupError is a Lookup failure: a complete message for the user, and
// one of the Err* values for errors.Is.
type lookupError struct {
	msg  string
	kind error
}

func (e *lookupError) Error() string { return e.msg }
func (e *lookupError) Unwrap() error { return e.kind }

func lookupErr(kind error, format string, args ...any) error {
	return &lookupError{msg: fmt.Sprintf(format, args...), kind: kind}
}
