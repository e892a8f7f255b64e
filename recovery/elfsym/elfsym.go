// Package elfsym reads the function symbols of an ELF file, to resolve
// rescue points to addresses and to symbolize stacks.
//
// The files come from container images and are untrusted. Everything is
// read and checked when the file is opened: section and segment extents
// must lie inside the file, symbol counts and section sizes are capped,
// parsing is bounded in time (MaxParseTime), and a panic inside debug/elf
// (which it still has for some malformed inputs) is turned into an error.
// After NewFile returns, the methods only consult memory.
//
// The cost is a small multiple of what is kept (about 80 bytes per named
// function, 24 per unnamed one): symbol tables and their names are
// streamed through small windows, only defined functions are kept whole,
// and .eh_frame (read whole, up to maxEHFrame) is dropped once parsed.
// Measured on a generated 43 MiB file with 600,000 functions: peak 119
// MiB, 67 MiB kept (before: 372 MiB); its stripped form, 11 MiB: 40 MiB
// peak, 13 MiB kept (before: 157 MiB).
package elfsym

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/fileinfo"
)

// Source says where a function came from.
type Source string

const (
	SourceSymtab  Source = "symtab"   // .symtab, the full (strippable) symbol table
	SourceDynsym  Source = "dynsym"   // .dynsym, the exported/imported symbols
	SourceEHFrame Source = "eh_frame" // an unwind table entry, no name
)

// Func is a function of the file.
type Func struct {
	Name   string // without "@VERSION"; "" for SourceEHFrame
	Addr   uint64 // ELF virtual address (add the load bias for run time)
	Size   uint64 // 0 when unknown
	Source Source
}

// Limits on what NewFile will read. They are far above what real programs
// need (the largest binaries have a few million symbols) and bound the
// memory a hostile file can make the supervisor allocate.
const (
	MaxSymbols      = 4 << 20   // symbols, .symtab and .dynsym together
	maxStringTable  = 512 << 20 // bytes of one string table
	maxEHFrame      = 256 << 20 // bytes of .eh_frame
	maxInterp       = 4096      // PATH_MAX
	maxLoadSegments = 1024
	// MaxParseTime bounds the time NewFile spends on one file: every
	// loop is linear in capped sizes, so only a very slow machine or
	// reader reaches it.
	MaxParseTime = 30 * time.Second
)

// errTooSlow is returned (wrapped) when parsing passes MaxParseTime.
var errTooSlow = fmt.Errorf("parsing took longer than %v", MaxParseTime)

// ErrNotELF is returned (wrapped) by Open and NewFile for a file without
// the ELF magic number.
var ErrNotELF = errors.New("not an ELF file")

// Errors returned (wrapped) by Lookup, for errors.Is.
var (
	ErrNotFound    = errors.New("function not found")
	ErrNotFunction = errors.New("symbol is not a function")
	ErrUndefined   = errors.New("function is imported, not defined")
	ErrAmbiguous   = errors.New("several functions have this name")
	ErrIndirect    = errors.New("function is an indirect function (STT_GNU_IFUNC)")
)

// File holds the function symbols and load segments of an ELF file. Its
// methods are safe for concurrent use.
type File struct {
	name   string
	typ    elf.Type
	interp string
	loads  []segment
	funcs  []fentry   // sorted by address, one per address
	syms   []symbol   // named functions of both tables, in table order
	others []otherSym // the other named symbols, by hash
	// entry is the program's entry point (0 for a library) and unsafe
	// the code no rescue point may be in (rescue.go).
	entry  uint64
	unsafe []region
	// incomplete is why the unwind table gave only part of the functions.
	incomplete error
	// deadline ends parsing (MaxParseTime).
	deadline time.Time
	// namedOnly: the unwind table was left out (NewSymbols); dyn, when
	// set, answers Lookup instead of syms, which are not read.
	namedOnly bool
	dyn       *dynIndex

	indexOnce sync.Once
	index     []indexEntry // syms by the hash of their base names
}

// segment is a PT_LOAD program header.
type segment struct {
	vaddr, memsz uint64
	off, filesz  uint64
	exec         bool
}

// Open reads the ELF file at path. Only regular files are accepted, so
// that a FIFO or device in an image cannot block or flood the reader.
func Open(path string) (*File, error) {
	var f *File
	err := readRegular(path, func(r io.ReaderAt, size int64) (err error) {
		f, err = NewFile(r, size, path)
		return err
	})
	return f, err
}

// readRegular opens path, refusing anything but a regular file (opened
// non-blocking, so that a FIFO cannot block), and hands it to read, which
// must read all it needs: the descriptor is closed after.
func readRegular(path string, read func(r io.ReaderAt, size int64) error) error {
	fd, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%s)", path, fileinfo.Kind(st.Mode()))
	}
	return read(fd, st.Size())
}

// NewFile reads an ELF file of size bytes from r. name is used in errors.
// It never panics on malformed input and does not keep r.
func NewFile(r io.ReaderAt, size int64, name string) (f *File, err error) {
	return newFile(r, size, name, false)
}

// NewSymbols is NewFile for a caller that only looks functions up by
// name (Lookup): a stripped file (no .symtab) with a .gnu.hash table is
// searched through that table (gnuhash.go), its unwind table and its
// other symbols never read; Funcs and the lookups by address then know no
// function. Reading them all is what opening a stripped library costs
// (2-7 ms for Debian's libc). Another file is read as NewFile reads it,
// but for the unwind table.
func NewSymbols(r io.ReaderAt, size int64, name string) (*File, error) {
	return newFile(r, size, name, true)
}

func newFile(r io.ReaderAt, size int64, name string, namedOnly bool) (f *File, err error) {
	err = parseELF(r, size, name, func(ef *elf.File, sr *io.SectionReader) error {
		f = &File{name: name, typ: ef.Type, deadline: time.Now().Add(MaxParseTime), namedOnly: namedOnly}
		return f.load(ef, sr, size)
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// parseELF opens the ELF file of size bytes in r for use: every read
// bounded by the real size (debug/elf would otherwise read past EOF of a
// ReaderAt that allows it), the headers prechecked, and a panic of
// debug/elf (hardened against many but not all malformed inputs) or of
// use turned into an error: none may take the supervisor down.
func parseELF(r io.ReaderAt, size int64, name string, use func(ef *elf.File, sr *io.SectionReader) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%s: malformed ELF file (parser panic: %v)", name, p)
		}
	}()
	if size < 0 {
		return fmt.Errorf("%s: negative size %d", name, size)
	}
	sr := io.NewSectionReader(r, 0, size)
	if err := precheck(sr, size); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	ef, err := elf.NewFile(sr)
	if err != nil {
		return fmt.Errorf("%s: malformed ELF file: %w", name, err)
	}
	if err := use(ef, sr); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (f *File) load(ef *elf.File, r io.ReaderAt, size int64) error {
	switch ef.Type {
	case elf.ET_EXEC, elf.ET_DYN:
	default:
		return fmt.Errorf("unsupported ELF type %v (want an executable or shared object)", ef.Type)
	}
	if err := f.loadProgs(ef, r, size); err != nil {
		return err
	}
	f.loadUnsafe(ef)
	if f.namedOnly && ef.SectionByType(elf.SHT_SYMTAB) == nil {
		dyn, err := loadDynIndex(ef, r, size)
		if err != nil {
			return err
		}
		if f.dyn = dyn; dyn != nil {
			return nil
		}
	}
	if err := f.loadSymbols(ef, r, size); err != nil {
		return err
	}
	funcs := symbolFuncs(f.syms)
	if !f.hasSymtabFunc() && !f.namedOnly {
		// Stripped: fall back on the unwind tables, which every x86-64
		// object carries for exceptions and backtraces. .dynsym alone is
		// not enough: a stripped executable often exports a handful of
		// functions (ls exports 6) and a stripped library only its API,
		// and every other function would be invisible.
		// A damaged table still gives the functions before the damage:
		// those are returned, and Incomplete says why the rest is not.
		fdes, err := f.loadEHFrame(ef, r, size)
		f.incomplete = err
		funcs = mergeFuncs(funcs, fdes)
	}
	f.funcs = funcs
	return nil
}

// hasSymtabFunc reports whether .symtab defines a function.
func (f *File) hasSymtabFunc() bool {
	for i := range f.syms {
		if !f.syms[i].dyn {
			return true
		}
	}
	return false
}

// mergeFuncs adds the unwind entries that start where no named function
// does. Both lists are sorted by address; so is the result.
func mergeFuncs(named, fdes []fentry) []fentry {
	switch {
	case len(fdes) == 0:
		return named
	case len(named) == 0:
		return fdes
	}
	out := make([]fentry, 0, len(named)+len(fdes))
	i, j := 0, 0
	for i < len(named) || j < len(fdes) {
		switch {
		case j == len(fdes) || i < len(named) && named[i].addr < fdes[j].addr:
			out = append(out, named[i])
			i++
		case i == len(named) || fdes[j].addr < named[i].addr:
			out = append(out, fdes[j])
			j++
		default: // same address: the name wins, the FDE may know the size
			fn := named[i]
			if fn.size == 0 {
				fn.size = fdes[j].size
			}
			out = append(out, fn)
			i++
			j++
		}
	}
	return out
}

// precheck refuses what debug/elf would otherwise spend unbounded memory
// on. A compressed section-name table is decompressed by elf.NewFile to
// whatever size its header claims (zlib expands ~1000:1), and no real
// toolchain compresses it.
func precheck(r io.ReaderAt, size int64) error {
	var ident [elf.EI_NIDENT]byte
	if _, err := r.ReadAt(ident[:4], 0); err != nil || string(ident[:4]) != elf.ELFMAG {
		return ErrNotELF
	}
	if _, err := r.ReadAt(ident[:], 0); err != nil {
		return errors.New("truncated ELF header")
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if elf.Data(ident[elf.EI_DATA]) == elf.ELFDATA2MSB {
		bo = binary.BigEndian
	}
	var (
		shoff, shentsize, shstr uint64
		flagsAt, linkAt         uint64 // offsets of sh_flags and sh_link in a section header
		flagsLen                int
	)
	switch elf.Class(ident[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
		var h [64]byte
		if _, err := r.ReadAt(h[:], 0); err != nil {
			return errors.New("truncated ELF header")
		}
		shoff, shentsize, shstr = bo.Uint64(h[40:]), uint64(bo.Uint16(h[58:])), uint64(bo.Uint16(h[62:]))
		flagsAt, linkAt, flagsLen = 8, 40, 8
	case elf.ELFCLASS32:
		var h [52]byte
		if _, err := r.ReadAt(h[:], 0); err != nil {
			return errors.New("truncated ELF header")
		}
		shoff, shentsize, shstr = uint64(bo.Uint32(h[32:])), uint64(bo.Uint16(h[46:])), uint64(bo.Uint16(h[50:]))
		flagsAt, linkAt, flagsLen = 8, 24, 4
	default:
		return nil // debug/elf reports the bad class
	}
	if shoff == 0 || shstr == 0 || shentsize < linkAt+4 || shoff > uint64(size) {
		return nil // no table, or one debug/elf rejects
	}
	if shstr == uint64(elf.SHN_XINDEX) {
		// The real index is in sh_link of section 0.
		var l [4]byte
		if _, err := r.ReadAt(l[:], int64(shoff+linkAt)); err != nil {
			return nil
		}
		shstr = uint64(bo.Uint32(l[:]))
	}
	at := shoff + shstr*shentsize + flagsAt
	if shstr > uint64(size) || at < shoff || at+uint64(flagsLen) > uint64(size) {
		return nil // out of bounds: debug/elf reports it
	}
	b := make([]byte, flagsLen)
	if _, err := r.ReadAt(b, int64(at)); err != nil {
		return nil
	}
	var flags uint64
	if flagsLen == 8 {
		flags = bo.Uint64(b)
	} else {
		flags = uint64(bo.Uint32(b))
	}
	if elf.SectionFlag(flags)&elf.SHF_COMPRESSED != 0 {
		return errors.New("malformed ELF file: compressed section name table")
	}
	return nil
}

func (f *File) loadProgs(ef *elf.File, r io.ReaderAt, size int64) error {
	for i, p := range ef.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			if len(f.loads) == maxLoadSegments {
				return fmt.Errorf("more than %d PT_LOAD segments", maxLoadSegments)
			}
			if p.Vaddr+p.Memsz < p.Vaddr || p.Filesz > p.Memsz {
				return fmt.Errorf("program header %d: invalid PT_LOAD extent (vaddr 0x%x, filesz 0x%x, memsz 0x%x)", i, p.Vaddr, p.Filesz, p.Memsz)
			}
			if err := checkExtent(p.Off, p.Filesz, size); err != nil {
				return fmt.Errorf("program header %d (PT_LOAD): %w", i, err)
			}
			f.loads = append(f.loads, segment{
				vaddr: p.Vaddr, memsz: p.Memsz, off: p.Off, filesz: p.Filesz,
				exec: p.Flags&elf.PF_X != 0,
			})
		case elf.PT_INTERP:
			if f.interp != "" {
				continue
			}
			interp, err := readInterp(p, r, size)
			if err != nil {
				return fmt.Errorf("program header %d (PT_INTERP): %w", i, err)
			}
			f.interp = interp
		}
	}
	return nil
}

func readInterp(p *elf.Prog, r io.ReaderAt, size int64) (string, error) {
	if p.Filesz > maxInterp {
		return "", fmt.Errorf("interpreter path of %d bytes is longer than %d", p.Filesz, maxInterp)
	}
	if err := checkExtent(p.Off, p.Filesz, size); err != nil {
		return "", err
	}
	b := make([]byte, p.Filesz)
	if _, err := r.ReadAt(b, int64(p.Off)); err != nil {
		return "", fmt.Errorf("read interpreter path: %w", err)
	}
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b), nil
}

// checkExtent verifies that [off, off+n) lies inside a file of size bytes.
func checkExtent(off, n uint64, size int64) error {
	if off > uint64(size) || n > uint64(size)-off {
		return fmt.Errorf("extent [0x%x, +0x%x) lies outside the file (size 0x%x)", off, n, size)
	}
	return nil
}

// Close releases the file. NewFile reads everything up front and keeps no
// descriptor, so this does nothing today; it is here so that callers need
// not change if that stops being true.
func (f *File) Close() error { return nil }

// Incomplete reports why Funcs lacks functions the file may have: the
// unwind table of a stripped file was damaged part way (the functions
// before the damage are there), or nil.
func (f *File) Incomplete() error { return f.incomplete }

// Name returns the name given to Open or NewFile.
func (f *File) Name() string { return f.name }

// PIE reports whether the file is position independent (ET_DYN): a PIE
// executable or a shared library, whose addresses are relative to a load
// bias chosen at run time.
func (f *File) PIE() bool { return f.typ == elf.ET_DYN }

// Interp returns the program interpreter (PT_INTERP), or "".
func (f *File) Interp() string { return f.interp }

// Funcs returns the functions of the file sorted by address, one per
// address. They come from .symtab and .dynsym (STT_FUNC and STT_GNU_IFUNC
// with a nonzero address; where several names share an address, a .symtab
// name and a global binding win). If .symtab defines no function (the file
// is stripped), the .eh_frame unwind entries are added for every start
// .dynsym does not name: they give start and size but no name.
func (f *File) Funcs() []Func {
	out := make([]Func, len(f.funcs))
	for i, e := range f.funcs {
		out[i] = f.fn(e)
	}
	return out
}

// fn is the Func of an entry of f.funcs.
func (f *File) fn(e fentry) Func {
	if e.sym < 0 {
		return Func{Addr: e.addr, Size: e.size, Source: SourceEHFrame}
	}
	s := &f.syms[e.sym]
	return Func{Name: s.base(), Addr: e.addr, Size: e.size, Source: s.source()}
}

// FileOffset converts a virtual address into an offset in the file,
// through the PT_LOAD segment whose file-backed part contains it.
func (f *File) FileOffset(vaddr uint64) (uint64, error) {
	for _, s := range f.loads {
		if vaddr >= s.vaddr && vaddr-s.vaddr < s.filesz {
			return s.off + (vaddr - s.vaddr), nil
		}
	}
	return 0, fmt.Errorf("address 0x%x is not in the file-backed part of any PT_LOAD segment of %s", vaddr, f.name)
}

// IsExecAddr reports whether vaddr lies inside an executable PT_LOAD
// segment.
func (f *File) IsExecAddr(vaddr uint64) bool {
	_, ok := f.execSegment(vaddr)
	return ok
}

func (f *File) execSegment(vaddr uint64) (segment, bool) {
	for _, s := range f.loads {
		if s.exec && vaddr >= s.vaddr && vaddr-s.vaddr < s.memsz {
			return s, true
		}
	}
	return segment{}, false
}

// Symbolize finds the function containing vaddr: the nearest function
// start at or below vaddr, provided vaddr is within its size or, for a
// function of unknown size, before the next function and in the same
// executable segment. Functions without a name (from .eh_frame) are named
// by their start address ("0x1139"), as manifests name them.
func (f *File) Symbolize(vaddr uint64) (name string, off uint64, ok bool) {
	fn, ok := f.FunctionContaining(vaddr)
	if !ok {
		return "", 0, false
	}
	return funcName(fn), vaddr - fn.Addr, true
}

// FunctionContaining returns the function vaddr is in: the nearest one
// starting at or below it, when vaddr is within its size (or, for one of
// unknown size, within its executable segment).
func (f *File) FunctionContaining(vaddr uint64) (Func, bool) {
	fs := f.funcs
	i := sort.Search(len(fs), func(i int) bool { return fs[i].addr > vaddr }) - 1
	if i < 0 {
		return Func{}, false
	}
	fn := fs[i]
	switch {
	case fn.size == 0:
		if len(f.loads) > 0 {
			seg, ok := f.execSegment(fn.addr)
			if !ok || vaddr-seg.vaddr >= seg.memsz {
				return Func{}, false
			}
		}
	case vaddr-fn.addr >= fn.size:
		// Past the nearest function: vaddr may still be inside an
		// enclosing one (assembly with nested symbols); look back a little.
		found := false
		for j := i - 1; j >= 0 && j >= i-8; j-- {
			if fs[j].size > 0 && vaddr-fs[j].addr < fs[j].size {
				fn, found = fs[j], true
				break
			}
		}
		if !found {
			return Func{}, false
		}
	}
	return f.fn(fn), true
}

func funcName(fn Func) string {
	if fn.Name == "" {
		return fmt.Sprintf("0x%x", fn.Addr)
	}
	return fn.Name
}

// FunctionAt returns the function that starts exactly at vaddr.
func (f *File) FunctionAt(vaddr uint64) (Func, bool) {
	i := sort.Search(len(f.funcs), func(i int) bool { return f.funcs[i].addr >= vaddr })
	if i < len(f.funcs) && f.funcs[i].addr == vaddr {
		return f.fn(f.funcs[i]), true
	}
	return Func{}, false
}
