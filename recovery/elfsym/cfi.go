package elfsym

import (
	"debug/elf"
	"fmt"
	"io"
	"sort"
	"time"
)

// This file indexes .eh_frame for an unwinder: for an address, the FDE
// that covers it with its CIE's parameters and both instruction streams,
// left uninterpreted (recovery/unwind runs them). It reuses the entry
// parser of ehframe.go, so the same bounds hold: every read is checked
// against the data, loops are bounded by it, and parsing by MaxParseTime.

// CIE is what an unwinder needs of a Common Information Entry. The
// Initial slice aliases the table: read it, do not modify it.
type CIE struct {
	CodeAlign    uint64 // code_alignment_factor: scales DW_CFA_advance_loc
	DataAlign    int64  // data_alignment_factor: scales DW_CFA_offset
	ReturnReg    uint64 // the column holding the return address (16 on x86-64)
	Augmentation string
	// Signal is the 'S' augmentation: the FDEs describe signal
	// trampolines, whose return address is not after a call.
	Signal  bool
	Initial []byte // initial instructions, run before every FDE's
}

// FDE is the unwind entry covering an address. The CIE and Instructions
// alias the table: read them, do not modify them.
type FDE struct {
	Start, Size  uint64 // ELF virtual addresses [Start, Start+Size)
	CIE          *CIE
	Instructions []byte
}

// CFI holds the call frame information (.eh_frame) of an ELF file,
// sorted by address for binary search. After NewCFI returns it only
// consults memory, and is safe for concurrent use.
type CFI struct {
	name       string
	data       []byte // .eh_frame: the instruction slices point into it
	cies       []CIE
	fdes       []cfiFDE // sorted by start, one per start
	incomplete error
}

// cfiFDE is an index entry: 32 bytes per FDE (libc has about 3,000).
type cfiFDE struct {
	start, size uint64
	cie         int32    // index in CFI.cies
	instr       [2]int32 // [start, end) in CFI.data (maxEHFrame fits)
}

// OpenCFI reads the call frame information of the ELF file at path.
// Like Open, it accepts only regular files.
func OpenCFI(path string) (*CFI, error) {
	var c *CFI
	err := readRegular(path, func(r io.ReaderAt, size int64) (err error) {
		c, err = NewCFI(r, size, path)
		return err
	})
	return c, err
}

// NewCFI reads the call frame information of an ELF file of size bytes
// from r; name is used in errors. A file without .eh_frame gives an
// empty table. A table damaged part way keeps the entries before the
// damage, and Incomplete says why the rest is missing. It never panics
// on malformed input and does not keep r.
func NewCFI(r io.ReaderAt, size int64, name string) (c *CFI, err error) {
	err = parseELF(r, size, name, func(ef *elf.File, sr *io.SectionReader) error {
		// The segments are needed to find .eh_frame without section
		// headers and to resolve indirect pointers; nothing else of File
		// is.
		f := &File{name: name, typ: ef.Type, deadline: time.Now().Add(MaxParseTime)}
		if err := f.loadProgs(ef, sr, size); err != nil {
			return err
		}
		eh, err := f.findEHFrame(ef, sr, size)
		if err != nil {
			return err
		}
		c = &CFI{name: name}
		if eh != nil {
			c.index(eh)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// index walks every entry of eh, as parseEHFrame does, keeping where each
// FDE's instructions are.
func (c *CFI) index(eh *ehFrame) {
	cies := make(map[int]*cie)
	cieIndex := make(map[*cie]int32)
	c.fdes = make([]cfiFDE, 0, min(eh.countFDEs(), MaxSymbols))
	end, err := c.walk(eh, cies, cieIndex)
	if err != nil && !(eh.lenient && len(c.fdes) > 0) {
		c.incomplete = fmt.Errorf(".eh_frame: %w", err)
	}
	c.data = eh.data[:end:end]
	if end < len(eh.data)/2 {
		// A table found through .eh_frame_hdr was read to the end of its
		// segment: keep only what was parsed.
		c.data = append([]byte(nil), c.data...)
	}
	for info, i := range cieIndex {
		from, to := info.initial[0], info.initial[1]
		c.cies[i].Initial = c.data[from:to:to]
	}
	eh.data, eh.deref = nil, nil
	c.sortFDEs()
}

// walk indexes the entries up to the terminator, the end of the data or
// the first malformed entry, and returns how far it got.
func (c *CFI) walk(eh *ehFrame, cies map[int]*cie, cieIndex map[*cie]int32) (int, error) {
	off := 0
	for n := 0; off < len(eh.data); n++ {
		if n%4096 == 0 && !eh.deadline.IsZero() && time.Now().After(eh.deadline) {
			return off, errTooSlow
		}
		e, err := eh.entryAt(off)
		if err != nil {
			return off, fmt.Errorf("entry at offset 0x%x: %w", off, err)
		}
		if e.terminator {
			return off + 4, nil
		}
		if e.id != 0 {
			if err := c.addFDE(eh, e, cies, cieIndex); err != nil {
				return off, fmt.Errorf("FDE at offset 0x%x: %w", off, err)
			}
		}
		off = e.end
	}
	return off, nil
}

// addFDE indexes one FDE. FDEs parseFDE would skip (an unusable CIE, an
// empty range) are skipped here too.
func (c *CFI) addFDE(eh *ehFrame, e entry, cies map[int]*cie, cieIndex map[*cie]int32) error {
	d, info, rest, ok, err := eh.decodeFDE(e, cies)
	if err != nil || !ok || d.start+d.size < d.start {
		return err // a range past the address space is as unusable
	}
	if len(c.fdes) == MaxSymbols {
		return fmt.Errorf("more than %d FDEs", MaxSymbols)
	}
	cur := &cursor{data: eh.data[:e.end], off: rest}
	if info.hasZ {
		// The FDE's augmentation data (an LSDA pointer) is of no use to
		// an unwinder; its length lets it be skipped.
		cur.skip(int(min(cur.uleb(), uint64(len(eh.data)))))
		if cur.err != nil {
			return fmt.Errorf("augmentation data: %w", cur.err)
		}
	}
	ci, seen := cieIndex[info]
	if !seen {
		ci = int32(len(c.cies))
		cieIndex[info] = ci
		// Initial is set by index once the data is final.
		c.cies = append(c.cies, CIE{
			CodeAlign: info.codeAlign, DataAlign: info.dataAlign, ReturnReg: info.raReg,
			Augmentation: info.aug, Signal: info.signal,
		})
	}
	c.fdes = append(c.fdes, cfiFDE{start: d.start, size: d.size, cie: ci, instr: [2]int32{int32(cur.off), int32(e.end)}})
	return nil
}

// sortFDEs orders the index by start, the widest entry first where
// several share a start, and keeps one per start.
func (c *CFI) sortFDEs() {
	fs := c.fdes
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].start != fs[j].start {
			return fs[i].start < fs[j].start
		}
		return fs[i].size > fs[j].size
	})
	out := fs[:0]
	for i, d := range fs {
		if i > 0 && d.start == fs[i-1].start {
			continue
		}
		out = append(out, d)
	}
	c.fdes = out
}

// Name returns the name given to NewCFI or OpenCFI.
func (c *CFI) Name() string { return c.name }

// Len returns the number of FDEs indexed.
func (c *CFI) Len() int { return len(c.fdes) }

// Incomplete reports why the table holds only part of the file's FDEs
// (it was damaged part way), or nil.
func (c *CFI) Incomplete() error { return c.incomplete }

// lookBack bounds how many earlier FDEs Lookup tries when the nearest
// start below an address does not cover it: FDEs do not nest in compiler
// output, but hand-written assembly may overlap them.
const lookBack = 8

// Lookup returns the FDE covering the ELF virtual address vaddr.
func (c *CFI) Lookup(vaddr uint64) (FDE, bool) {
	fs := c.fdes
	i := sort.Search(len(fs), func(i int) bool { return fs[i].start > vaddr }) - 1
	for j := i; j >= 0 && j > i-lookBack; j-- {
		if vaddr-fs[j].start < fs[j].size {
			return c.fde(fs[j]), true
		}
	}
	return FDE{}, false
}

func (c *CFI) fde(d cfiFDE) FDE {
	from, to := d.instr[0], d.instr[1]
	return FDE{Start: d.start, Size: d.size, CIE: &c.cies[d.cie], Instructions: c.data[from:to:to]}
}
