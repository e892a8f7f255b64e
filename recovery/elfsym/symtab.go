package elfsym

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// symbol is one named function entry of .symtab or .dynsym: what Lookup
// and Funcs need of it, and nothing more (a large binary has millions).
type symbol struct {
	name  string // as stored: may carry "@VER" or "@@VER"
	value uint64
	size  uint64
	index uint32 // position in its table
	shndx uint16 // elf.SectionIndex (extended indices stay as SHN_XINDEX)
	typ   uint8  // elf.SymType
	bind  uint8  // elf.SymBind
	dyn   bool   // from .dynsym, else .symtab
	// hidden marks a .dynsym entry for a non-default version of its name
	// (nm -D prints "name@VER" rather than "name@@VER"): an old ABI kept
	// for binaries linked against it, not what the name means today.
	hidden bool
}

func (s *symbol) source() Source {
	if s.dyn {
		return SourceDynsym
	}
	return SourceSymtab
}

// base is the name without its version suffix.
func (s *symbol) base() string {
	b, _, _ := strings.Cut(s.name, "@")
	return b
}

// otherSym is a named symbol that is not a defined function (an import,
// an object): kept only as the hash of its base name, so that Lookup can
// say why a name is not a function without holding every name.
type otherSym struct {
	hash    uint64
	typ     uint8 // elf.SymType
	defined bool
}

func (s *symbol) defined() bool { return elf.SectionIndex(s.shndx) != elf.SHN_UNDEF }

func (s *symbol) isFunc() bool {
	return elf.SymType(s.typ) == elf.STT_FUNC || elf.SymType(s.typ) == elf.STT_GNU_IFUNC
}

// keep reports whether a symbol is kept whole: a defined function.
func (s *symbol) keep() bool { return s.isFunc() && s.defined() && s.value != 0 }

// loadSymbols reads .symtab and .dynsym. debug/elf's Symbols methods would
// do, but they materialise every symbol with its version strings before
// any limit can be applied. Here the tables are streamed: entries and
// names are read through small windows, only defined functions are kept
// whole, and the cost stays a small multiple of what is kept.
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
		syms, others, err := readSymtab(ef, sec, r, size, t.src, &budget, f.deadline)
		if err != nil {
			return fmt.Errorf("section %s: %w", sectionName(sec), err)
		}
		if t.typ == elf.SHT_DYNSYM {
			if err := markHidden(ef, sec, r, size, syms); err != nil {
				return err
			}
		}
		f.syms = append(f.syms, syms...)
		f.others = append(f.others, others...)
	}
	slices.SortFunc(f.others, func(a, b otherSym) int { return cmpU64(a.hash, b.hash) })
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sectionName(s *elf.Section) string {
	if s.Name == "" {
		return fmt.Sprintf("of type %v", s.Type)
	}
	return s.Name
}

// symChunk is how many entries of a symbol table are read at once.
const symChunk = 4096

// pendingName is a symbol waiting for its name: the offset in the string
// table, and where the name goes (kept[i], or others[i] when other).
type pendingName struct {
	off   uint32
	i     int32
	other bool
}

func readSymtab(ef *elf.File, sec *elf.Section, r io.ReaderAt, size int64, src Source, budget *int, deadline time.Time) ([]symbol, []otherSym, error) {
	entSize := uint64(elf.Sym64Size)
	if ef.Class == elf.ELFCLASS32 {
		entSize = elf.Sym32Size
	}
	if sec.Entsize != 0 && sec.Entsize != entSize {
		return nil, nil, fmt.Errorf("entry size %d, want %d", sec.Entsize, entSize)
	}
	if sec.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, nil, fmt.Errorf("compressed symbol table")
	}
	if err := checkExtent(sec.Offset, sec.FileSize, size); err != nil {
		return nil, nil, err
	}
	n := sec.FileSize / entSize
	if n > uint64(*budget) {
		return nil, nil, fmt.Errorf("%d symbols, more than the limit of %d", n, MaxSymbols)
	}
	*budget -= int(n)

	if int(sec.Link) <= 0 || int(sec.Link) >= len(ef.Sections) {
		return nil, nil, fmt.Errorf("invalid string table index %d", sec.Link)
	}
	strSec := ef.Sections[sec.Link]
	if strSec.Type != elf.SHT_STRTAB || strSec.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, nil, fmt.Errorf("linked section %d is not an uncompressed string table", sec.Link)
	}
	if err := checkExtent(strSec.Offset, strSec.FileSize, size); err != nil {
		return nil, nil, fmt.Errorf("string table: %w", err)
	}
	if strSec.FileSize > maxStringTable {
		return nil, nil, fmt.Errorf("string table of %d bytes exceeds the limit of %d", strSec.FileSize, maxStringTable)
	}

	// Two passes over the table: the first counts, so that the second
	// fills slices of their final size. Grown by append instead, they
	// left up to as much garbage again as they hold at the peak.
	buf := make([]byte, symChunk*entSize)
	each := func(fn func(s symbol, nameOff uint32)) error {
		for first := uint64(1); first < n; first += symChunk { // entry 0 is the reserved null symbol
			count := min(symChunk, n-first)
			chunk := buf[:count*entSize]
			if _, err := r.ReadAt(chunk, int64(sec.Offset+first*entSize)); err != nil {
				return fmt.Errorf("read %d bytes at 0x%x: %w", len(chunk), sec.Offset+first*entSize, err)
			}
			for j := uint64(0); j < count; j++ {
				s, nameOff, ok := decodeSym(ef, chunk[j*entSize:(j+1)*entSize], strSec.FileSize)
				if !ok {
					continue
				}
				s.dyn = src == SourceDynsym
				s.index = uint32(first + j)
				fn(s, nameOff)
			}
		}
		return nil
	}
	keptFunc := func(s *symbol) bool { return s.isFunc() && s.defined() && s.value != 0 }
	var nKept, nOthers int
	if err := each(func(s symbol, _ uint32) {
		if keptFunc(&s) {
			nKept++
		} else {
			nOthers++
		}
	}); err != nil {
		return nil, nil, err
	}
	kept := make([]symbol, 0, nKept)
	others := make([]otherSym, 0, nOthers)
	pending := make([]pendingName, 0, nKept+nOthers)
	if err := each(func(s symbol, nameOff uint32) {
		if keptFunc(&s) && len(kept) < nKept {
			pending = append(pending, pendingName{off: nameOff, i: int32(len(kept))})
			kept = append(kept, s)
		} else if !keptFunc(&s) && len(others) < nOthers {
			pending = append(pending, pendingName{off: nameOff, i: int32(len(others)), other: true})
			others = append(others, otherSym{typ: s.typ, defined: s.defined()})
		}
	}); err != nil {
		return nil, nil, err
	}
	st := &strtabReader{r: r, off: strSec.Offset, size: strSec.FileSize}
	if err := st.name(pending, kept, others); err != nil {
		return nil, nil, fmt.Errorf("string table: %w", err)
	}
	// Drop unnamed (empty or unterminated) entries, keeping table order.
	out := kept[:0]
	for _, s := range kept {
		if s.name != "" {
			out = append(out, s)
		}
	}
	outOthers := others[:0]
	for _, o := range others {
		if o.hash != 0 {
			outOthers = append(outOthers, o)
		}
	}
	return slices.Clip(out), slices.Clip(outOthers), nil
}

// maxSymbolName bounds the length of a symbol name. Longer names are
// dropped: a manifest cannot name them (its limit is 1024 bytes), and
// without the bound a hostile table of many long overlapping names would
// make every comparison and hash of names expensive.
const maxSymbolName = 4096

// strtabWindow is how much of a string table is read at once.
const strtabWindow = 1 << 20

// strtabReader reads names out of a string table through a window.
type strtabReader struct {
	r         io.ReaderAt
	off, size uint64 // of the table in the file
	win       []byte
	winAt     uint64 // table offset of win[0]
}

// bytes returns the table's bytes [from, to), which must span at most
// strtabWindow bytes.
func (st *strtabReader) bytes(from, to uint64) ([]byte, error) {
	if from >= st.winAt && to <= st.winAt+uint64(len(st.win)) && st.win != nil {
		return st.win[from-st.winAt : to-st.winAt], nil
	}
	n := min(strtabWindow, st.size-from)
	if st.win == nil {
		st.win = make([]byte, min(strtabWindow, st.size))
	}
	st.win = st.win[:n]
	if _, err := st.r.ReadAt(st.win, int64(st.off+from)); err != nil {
		return nil, fmt.Errorf("read %d bytes at 0x%x: %w", n, st.off+from, err)
	}
	st.winAt = from
	return st.win[:to-from], nil
}

// name sets the name of every pending symbol: the NUL-terminated string
// at its offset, at most maxSymbolName bytes (others get the hash of the
// base name). Finding each end with a scan from its offset would cost
// O(symbols × name limit) on a hostile table with no NULs; visiting the
// offsets in increasing order and remembering the next NUL lets every byte
// of the table be scanned at most once.
func (st *strtabReader) name(pending []pendingName, kept []symbol, others []otherSym) error {
	slices.SortFunc(pending, func(a, b pendingName) int { return cmpU64(uint64(a.off), uint64(b.off)) })
	var names nameArena
	defer names.flush()
	var (
		nul     uint64 // position of the first NUL at or after scanned, when found
		found   bool
		scanned uint64 // [.., scanned) is known: no NUL in it past nul
	)
	for _, p := range pending {
		off := uint64(p.off)
		if !found || nul < off {
			// Look for the next NUL from max(off, scanned) up to the
			// name limit past off.
			from := max(off, scanned)
			end := min(off+maxSymbolName+1, st.size)
			found = false
			if from < end {
				b, err := st.bytes(from, end)
				if err != nil {
					return err
				}
				if j := bytes.IndexByte(b, 0); j >= 0 {
					nul, found = from+uint64(j), true
				}
				scanned = max(scanned, end)
				if found {
					scanned = nul
				}
			}
			if !found {
				continue // unterminated within the limit: no name
			}
		}
		if nul == off || nul-off > maxSymbolName {
			continue
		}
		b, err := st.bytes(off, nul)
		if err != nil {
			return err
		}
		if p.other {
			base, _, _ := bytes.Cut(b, []byte("@"))
			others[p.i].hash = nameHash(string(base))
		} else {
			names.add(&kept[p.i].name, b)
		}
	}
	return nil
}

// nameArena copies names into shared strings of nameChunk bytes: one
// allocation per chunk rather than per name, each name taking its length
// and no more.
type nameArena struct {
	buf  []byte
	dsts []arenaName
}

type arenaName struct {
	dst        *string
	start, end int
}

const nameChunk = 64 << 10

func (a *nameArena) add(dst *string, b []byte) {
	if len(a.buf)+len(b) > nameChunk {
		a.flush()
	}
	if a.buf == nil {
		a.buf = make([]byte, 0, nameChunk)
	}
	a.dsts = append(a.dsts, arenaName{dst, len(a.buf), len(a.buf) + len(b)})
	a.buf = append(a.buf, b...)
}

// flush turns the chunk into a string and points the names into it.
func (a *nameArena) flush() {
	s := string(a.buf)
	for _, d := range a.dsts {
		*d.dst = s[d.start:d.end]
	}
	a.buf, a.dsts = a.buf[:0], a.dsts[:0]
}

// nameHash hashes a base name for otherSym (FNV-1a, never 0).
func nameHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h | 1
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
func decodeSym(ef *elf.File, b []byte, strtabLen uint64) (symbol, uint32, bool) {
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
		s.shndx = bo.Uint16(b[14:])
	} else {
		nameOff = bo.Uint32(b[0:])
		info = b[4]
		s.shndx = bo.Uint16(b[6:])
		s.value = bo.Uint64(b[8:])
		s.size = bo.Uint64(b[16:])
	}
	s.typ = uint8(elf.ST_TYPE(info))
	s.bind = uint8(elf.ST_BIND(info))
	if typ := elf.SymType(s.typ); typ == elf.STT_SECTION || typ == elf.STT_FILE || nameOff == 0 || uint64(nameOff) >= strtabLen {
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

// fentry is one function of File.funcs: 24 bytes where a Func takes 48,
// the name being that of syms[sym] (sym < 0: an unnamed .eh_frame entry).
type fentry struct {
	addr, size uint64
	sym        int32
}

// symbolFuncs derives the function list from the symbol tables: defined
// STT_FUNC/STT_GNU_IFUNC symbols with a nonzero address, one per address.
func symbolFuncs(syms []symbol) []fentry {
	cand := make([]int32, len(syms)) // every kept symbol is a function
	for i := range cand {
		cand[i] = int32(i)
	}
	// Sort by address only, then pick each address's best name in one
	// pass: comparing names inside the sort would cost a name comparison
	// per step on hostile tables with many aliases.
	slices.SortFunc(cand, func(a, b int32) int { return cmpU64(syms[a].value, syms[b].value) })
	n := 0
	for i := range cand {
		if i == 0 || syms[cand[i]].value != syms[cand[i-1]].value {
			n++
		}
	}
	out := make([]fentry, 0, n)
	for i := 0; i < len(cand); {
		best, size := cand[i], uint64(0)
		j := i
		for ; j < len(cand) && syms[cand[j]].value == syms[best].value; j++ {
			if better(&syms[cand[j]], &syms[best]) {
				best = cand[j]
			}
			size = max(size, syms[cand[j]].size)
		}
		if syms[best].size != 0 {
			size = syms[best].size
		}
		out = append(out, fentry{addr: syms[best].value, size: size, sym: best})
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
	if a.dyn != b.dyn {
		return !a.dyn
	}
	if ra, rb := bindRank(elf.SymBind(a.bind)), bindRank(elf.SymBind(b.bind)); ra != rb {
		return ra < rb
	}
	ab, bb := a.base(), b.base()
	ua := len(ab) - len(strings.TrimLeft(ab, "_"))
	ub := len(bb) - len(strings.TrimLeft(bb, "_"))
	if ua != ub {
		return ua < ub
	}
	if len(ab) != len(bb) {
		return len(ab) < len(bb)
	}
	return ab < bb
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
	if f.dyn != nil {
		return f.lookupFunc(name)
	}
	funcs := f.matching(name)
	other, imported := f.otherNamed(name)
	switch {
	case len(funcs) > 0:
	case other != nil:
		return Func{}, lookupErr(ErrNotFunction, "%q in %s is not a function (symbol type %v)", name, f.name, elf.SymType(other.typ))
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
	if elf.SymType(best.typ) == elf.STT_GNU_IFUNC {
		return Func{}, lookupErr(ErrIndirect, "%q in %s is an indirect function (STT_GNU_IFUNC) whose address is its resolver, not its implementation; name the implementation or use \"address\"",
			name, f.name)
	}
	return Func{Name: best.base(), Addr: best.value, Size: size, Source: best.source()}, nil
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

// matching returns the functions name refers to (see Lookup).
func (f *File) matching(name string) []*symbol {
	base, _, versioned := strings.Cut(name, "@")
	f.indexOnce.Do(f.buildIndex)
	h := nameHash(base)
	i, _ := slices.BinarySearchFunc(f.index, h, func(e indexEntry, h uint64) int { return cmpU64(e.hash, h) })
	var out []*symbol
	for ; i < len(f.index) && f.index[i].hash == h; i++ {
		s := &f.syms[f.index[i].sym]
		switch {
		case s.base() != base:
			continue // another name with the same hash
		case versioned:
			if s.name != name {
				continue
			}
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

// otherNamed reports a symbol named name that is not a function (the
// first found), and whether an import has that name: what Lookup says
// when no function matches. Only the hash of the base name is kept for
// these, so a versioned name matches on its base.
func (f *File) otherNamed(name string) (other *otherSym, imported bool) {
	base, _, _ := strings.Cut(name, "@")
	h := nameHash(base)
	i, _ := slices.BinarySearchFunc(f.others, h, func(o otherSym, h uint64) int { return cmpU64(o.hash, h) })
	for ; i < len(f.others) && f.others[i].hash == h; i++ {
		o := &f.others[i]
		switch {
		case !o.defined:
			imported = true
		case elf.SymType(o.typ) != elf.STT_FUNC && elf.SymType(o.typ) != elf.STT_GNU_IFUNC && other == nil:
			other = o
		}
	}
	return other, imported
}

// indexEntry maps the hash of a function's base name to the function.
type indexEntry struct {
	hash uint64
	sym  int32
}

// buildIndex sorts the functions by the hash of their base names, on the
// first Lookup: listing the functions of a file (the common case) does not
// need it. Hashing keeps the cost linear in the total length of the names,
// which sorting the names would not be for hostile tables, and the index
// costs 16 bytes a function.
func (f *File) buildIndex() {
	f.index = make([]indexEntry, len(f.syms))
	for i := range f.syms {
		f.index[i] = indexEntry{hash: nameHash(f.syms[i].base()), sym: int32(i)}
	}
	slices.SortFunc(f.index, func(a, b indexEntry) int { return cmpU64(a.hash, b.hash) })
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
