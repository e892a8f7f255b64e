package candidates

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// image is the part of an ELF file the analysis reads beyond what elfsym
// keeps: the bytes of the executable sections, and what each PLT stub
// and GOT slot resolves to.
type image struct {
	code  []codeSection     // sorted by address
	slots map[uint64]string // GOT slot → imported symbol
	stubs map[uint64]string // PLT stub entry → imported symbol
	// nstubs counts the distinct stub entries resolved.
	nstubs int
	// entry is where the kernel starts the program (e_entry of an
	// executable), or 0 for a library, whose e_entry is not run.
	entry uint64
}

// codeSection is an executable section's bytes.
type codeSection struct {
	name string
	addr uint64
	data []byte
	plt  bool // .plt, .plt.sec, .plt.got, .iplt
}

func (s *codeSection) end() uint64 { return s.addr + uint64(len(s.data)) }

// Limits on what is read from a file, far above real programs (Chrome's
// .text is about 200 MiB), so that a hostile header cannot make the
// analysis allocate without bound.
const (
	maxTableBytes = 64 << 20 // .dynsym, .dynstr, one relocation section
	relaSize      = 24       // sizeof(Elf64_Rela)
)

var errNotX8664 = errors.New("not an x86-64 ELF file")

// loadImage reads the code and the import tables of the ELF file in r.
// debug/elf still panics on some malformed inputs: that becomes an error.
func loadImage(r io.ReaderAt, size int64, maxCode int64) (img *image, err error) {
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, fmt.Errorf("malformed ELF file (parser panic: %v)", p)
		}
	}()
	sr := io.NewSectionReader(r, 0, size)
	ef, err := elf.NewFile(sr)
	if err != nil {
		return nil, fmt.Errorf("malformed ELF file: %w", err)
	}
	if ef.Class != elf.ELFCLASS64 || ef.Machine != elf.EM_X86_64 {
		return nil, errNotX8664
	}
	img = &image{slots: make(map[uint64]string), stubs: make(map[uint64]string)}
	if ef.Type == elf.ET_EXEC || hasInterp(ef) {
		img.entry = ef.Entry
	}
	if err := img.readCode(ef, size, maxCode); err != nil {
		return nil, err
	}
	// The import tables only add evidence: a damaged one loses the
	// calls through the PLT, not the analysis.
	img.readSlots(ef, size)
	img.resolveStubs()
	return img, nil
}

// readCode reads every executable section that has bytes in the file.
func (img *image) readCode(ef *elf.File, size, maxCode int64) error {
	var total int64
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_EXECINSTR == 0 || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		if !inFile(s.Offset, s.Size, size) || s.Addr+s.Size < s.Addr {
			continue // truncated file: its functions become unreadable
		}
		total += int64(s.Size)
		if total > maxCode {
			return fmt.Errorf("executable sections exceed %d bytes", maxCode)
		}
		data := make([]byte, s.Size)
		if _, err := s.ReadAt(data, 0); err != nil {
			return fmt.Errorf("reading %s: %w", s.Name, err)
		}
		_, plt := pltSections[s.Name]
		img.code = append(img.code, codeSection{name: s.Name, addr: s.Addr, data: data, plt: plt})
	}
	sort.Slice(img.code, func(i, j int) bool { return img.code[i].addr < img.code[j].addr })
	return nil
}

// inFile reports whether [off, off+n) lies inside a file of size bytes.
func inFile(off, n uint64, size int64) bool {
	return off <= uint64(size) && n <= uint64(size)-off
}

// section returns the code section containing vaddr, or nil.
func (img *image) section(vaddr uint64) *codeSection {
	i := sort.Search(len(img.code), func(i int) bool { return img.code[i].end() > vaddr })
	if i < len(img.code) && vaddr >= img.code[i].addr {
		return &img.code[i]
	}
	return nil
}

// readSlots maps GOT slots to the symbols the dynamic loader stores
// there: R_X86_64_JUMP_SLOT (.rela.plt, lazy or not) and
// R_X86_64_GLOB_DAT (.rela.dyn: -fno-plt calls and .plt.got stubs).
func (img *image) readSlots(ef *elf.File, size int64) {
	names := dynNames(ef, size)
	if names == nil {
		return
	}
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_RELA || s.Size > maxTableBytes || !inFile(s.Offset, s.Size, size) {
			continue
		}
		if int(s.Link) >= len(ef.Sections) || ef.Sections[s.Link].Type != elf.SHT_DYNSYM {
			continue
		}
		data := make([]byte, s.Size)
		if _, err := s.ReadAt(data, 0); err != nil {
			continue
		}
		img.addRelocs(data, names)
	}
}

func (img *image) addRelocs(data []byte, names []string) {
	for off := 0; off+relaSize <= len(data); off += relaSize {
		slot := binary.LittleEndian.Uint64(data[off:])
		info := binary.LittleEndian.Uint64(data[off+8:])
		typ, sym := elf.R_X86_64(info&0xffffffff), info>>32
		if typ != elf.R_X86_64_JMP_SLOT && typ != elf.R_X86_64_GLOB_DAT {
			continue
		}
		// Symbol 0 is the null symbol; DynamicSymbols omits it.
		if sym == 0 || sym > uint64(len(names)) || names[sym-1] == "" {
			continue
		}
		img.slots[slot] = names[sym-1]
	}
}

// dynNames returns the names of .dynsym in order, or nil when it is
// missing or too big.
func dynNames(ef *elf.File, size int64) []string {
	for _, name := range []string{".dynsym", ".dynstr"} {
		s := ef.Section(name)
		if s == nil || s.Size > maxTableBytes || !inFile(s.Offset, s.Size, size) {
			return nil
		}
	}
	syms, err := ef.DynamicSymbols()
	if err != nil {
		return nil
	}
	names := make([]string, len(syms))
	for i, s := range syms {
		names[i] = s.Name
	}
	return names
}

// hasInterp reports a PT_INTERP segment: a PIE executable (or a library
// that can also run, like libc.so.6) rather than a plain library.
func hasInterp(ef *elf.File) bool {
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
