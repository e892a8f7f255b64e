package elfsym

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// This file reads function starts out of .eh_frame, the unwind table that
// survives strip(1). The standard library has no reader for it (debug/dwarf
// covers .debug_info and line tables, not call frame information) and the
// third-party ones come with whole debuggers attached, so this is a small
// hand-written parser of the format in the LSB Core specification, section
// "Exception Frames", which extends DWARF call frame information:
//
//	entry  = length(4) [extended length(8) if length == 0xffffffff] body
//	CIE    = id(4) == 0, version(1), augmentation string, [addr/seg size
//	         (version 4)], code align(uleb), data align(sleb), return
//	         register, [augmentation data (if the string starts with "z")]
//	FDE    = CIE pointer(4) != 0 (backwards from this field), pc_begin,
//	         pc_range, ...
//
// The encoding of pc_begin is given by the 'R' augmentation of the CIE.
// Here only function starts and sizes are extracted; cfi.go indexes the
// same entries for the unwinder (recovery/unwind), which interprets their
// instructions. Every loop is bounded by the data it walks.

// DWARF exception header pointer encodings (DW_EH_PE_*).
const (
	pePtr     = 0x00 // absptr: address-sized
	peULEB128 = 0x01
	peUdata2  = 0x02
	peUdata4  = 0x03
	peUdata8  = 0x04
	peSigned  = 0x08 // address-sized, signed
	peSLEB128 = 0x09
	peSdata2  = 0x0a
	peSdata4  = 0x0b
	peSdata8  = 0x0c

	pePCRel   = 0x10
	peTextRel = 0x20
	peDataRel = 0x30
	peFuncRel = 0x40
	peAligned = 0x50

	peIndirect = 0x80
	peOmit     = 0xff
)

// shtX86_64Unwind is the section type x86-64 toolchains may give .eh_frame.
const shtX86_64Unwind = elf.SectionType(0x70000001)

// ptGNUEHFrame is the PT_GNU_EH_FRAME program header (.eh_frame_hdr).
const ptGNUEHFrame = elf.ProgType(0x6474e550)

var errTruncated = errors.New("truncated")

// ehFrame is the input of parseEHFrame.
type ehFrame struct {
	data     []byte
	addr     uint64 // virtual address of data[0]
	order    binary.ByteOrder
	ptrSize  int // 4 or 8
	textBase uint64
	dataBase uint64
	hasText  bool
	hasData  bool
	// deref reads an address-sized value at vaddr, for DW_EH_PE_indirect.
	deref func(vaddr uint64) (uint64, bool)
	// lenient makes parsing stop quietly at the first malformed entry
	// (after at least one FDE), for data whose end is not known exactly.
	lenient bool
	// deadline, when set, ends parsing (MaxParseTime).
	deadline time.Time
}

// fde is the part of an FDE that matters here.
type fde struct {
	start, size uint64
}

// loadEHFrame returns the functions described by the file's unwind table,
// sorted and deduplicated, restricted to executable segments when the
// file has any.
func (f *File) loadEHFrame(ef *elf.File, r io.ReaderAt, size int64) ([]fentry, error) {
	eh, err := f.findEHFrame(ef, r, size)
	if err != nil || eh == nil {
		return nil, err
	}
	fdes, perr := parseEHFrame(eh)
	eh.data = nil // parsed: let it go before the functions are built
	if perr != nil {
		perr = fmt.Errorf(".eh_frame: %w", perr)
	}
	sort.Slice(fdes, func(i, j int) bool {
		if fdes[i].start != fdes[j].start {
			return fdes[i].start < fdes[j].start
		}
		return fdes[i].size > fdes[j].size
	})
	out := make([]fentry, 0, len(fdes))
	for i, d := range fdes {
		if i > 0 && d.start == fdes[i-1].start {
			continue
		}
		if len(f.loads) > 0 && !f.IsExecAddr(d.start) {
			continue
		}
		out = append(out, fentry{addr: d.start, size: d.size, sym: -1})
	}
	return out, perr
}

// findEHFrame locates .eh_frame by its section header or, in a file
// without section headers, through PT_GNU_EH_FRAME.
func (f *File) findEHFrame(ef *elf.File, r io.ReaderAt, size int64) (*ehFrame, error) {
	eh := &ehFrame{order: ef.ByteOrder, ptrSize: 8, deadline: f.deadline}
	if ef.Class == elf.ELFCLASS32 {
		eh.ptrSize = 4
	}
	eh.deref = func(vaddr uint64) (uint64, bool) { return f.readPtr(r, eh, vaddr) }
	if s := ef.Section(".text"); s != nil {
		eh.textBase, eh.hasText = s.Addr, true
	}
	if s := ef.Section(".got"); s != nil {
		eh.dataBase, eh.hasData = s.Addr, true
	}

	sec := ef.Section(".eh_frame")
	if sec != nil && sec.Type != elf.SHT_NOBITS && sec.Flags&elf.SHF_COMPRESSED == 0 &&
		(sec.Type == elf.SHT_PROGBITS || sec.Type == shtX86_64Unwind) {
		if err := checkExtent(sec.Offset, sec.FileSize, size); err != nil {
			return nil, fmt.Errorf(".eh_frame: %w", err)
		}
		if sec.FileSize > maxEHFrame {
			return nil, fmt.Errorf(".eh_frame: %d bytes exceeds the limit of %d", sec.FileSize, maxEHFrame)
		}
		data, err := readAt(r, sec.Offset, sec.FileSize)
		if err != nil {
			return nil, fmt.Errorf(".eh_frame: %w", err)
		}
		eh.data, eh.addr = data, sec.Addr
		return eh, nil
	}
	if len(ef.Sections) > 0 {
		return nil, nil // sections but no unwind table: nothing to find
	}
	return f.ehFrameFromHdr(ef, r, size, eh)
}

// ehFrameFromHdr finds .eh_frame through .eh_frame_hdr, whose second field
// points to it. Its size is not recorded anywhere, so the rest of the
// containing segment is read and parsed leniently up to the terminator.
func (f *File) ehFrameFromHdr(ef *elf.File, r io.ReaderAt, size int64, eh *ehFrame) (*ehFrame, error) {
	var hdr *elf.Prog
	for _, p := range ef.Progs {
		if p.Type == ptGNUEHFrame {
			hdr = p
			break
		}
	}
	if hdr == nil || hdr.Filesz < 4 {
		return nil, nil
	}
	// version, 3 encodings, then eh_frame_ptr (at most 8 bytes).
	n := min(hdr.Filesz, 4+8)
	if err := checkExtent(hdr.Off, n, size); err != nil {
		return nil, fmt.Errorf(".eh_frame_hdr: %w", err)
	}
	b, err := readAt(r, hdr.Off, n)
	if err != nil {
		return nil, fmt.Errorf(".eh_frame_hdr: %w", err)
	}
	if b[0] != 1 {
		return nil, fmt.Errorf(".eh_frame_hdr: unsupported version %d", b[0])
	}
	// In .eh_frame_hdr, datarel is relative to the header itself.
	hd := *eh
	hd.data, hd.addr = b, hdr.Vaddr
	hd.dataBase, hd.hasData = hdr.Vaddr, true
	c := &cursor{data: b, off: 4}
	ptr, err := hd.readEncoded(c, b[1])
	if err != nil {
		return nil, fmt.Errorf(".eh_frame_hdr: eh_frame_ptr: %w", err)
	}
	for _, s := range f.loads {
		if ptr >= s.vaddr && ptr-s.vaddr < s.filesz {
			n := s.filesz - (ptr - s.vaddr)
			if n > maxEHFrame {
				n = maxEHFrame
			}
			data, err := readAt(r, s.off+(ptr-s.vaddr), n)
			if err != nil {
				return nil, fmt.Errorf(".eh_frame: %w", err)
			}
			eh.data, eh.addr, eh.lenient = data, ptr, true
			return eh, nil
		}
	}
	return nil, fmt.Errorf(".eh_frame_hdr: eh_frame_ptr 0x%x is not in a PT_LOAD segment", ptr)
}

// readPtr reads an address-sized word at vaddr from the file. Values
// the dynamic loader relocates (the usual reason for an indirect pointer in
// a PIE) read as their link-time contents, often 0, and are then skipped.
func (f *File) readPtr(r io.ReaderAt, eh *ehFrame, vaddr uint64) (uint64, bool) {
	off, err := f.FileOffset(vaddr)
	if err != nil {
		return 0, false
	}
	b := make([]byte, eh.ptrSize)
	if _, err := r.ReadAt(b, int64(off)); err != nil {
		return 0, false
	}
	if eh.ptrSize == 4 {
		return uint64(eh.order.Uint32(b)), true
	}
	return eh.order.Uint64(b), true
}

// cie is what an FDE needs from its CIE. Only the CFI index (cfi.go)
// reads the fields after err.
type cie struct {
	fdeEnc byte
	err    error // non-nil: the CIE cannot be used (unknown augmentation)

	codeAlign uint64
	dataAlign int64
	raReg     uint64
	hasZ      bool // FDEs carry augmentation data (a 'z' augmentation)
	signal    bool // 'S': the FDEs describe signal trampolines
	aug       string
	// initial is [start, end) of the initial instructions in eh.data.
	initial [2]int
}

// parseEHFrame walks every entry of eh.data and returns the FDEs' ranges.
// Structural damage (an entry running past the data, a CIE pointer
// outside it) is an error, returned with the FDEs found before it; a CIE
// with an augmentation this parser does not know only makes its FDEs be
// skipped, as a future toolchain may add some.
func parseEHFrame(eh *ehFrame) ([]fde, error) {
	out := make([]fde, 0, min(eh.countFDEs(), MaxSymbols))
	cies := make(map[int]*cie)
	for off, n := 0, 0; off < len(eh.data); n++ {
		if n%4096 == 0 && !eh.deadline.IsZero() && time.Now().After(eh.deadline) {
			return out, errTooSlow
		}
		e, err := eh.entryAt(off)
		if err != nil {
			return eh.stop(out, fmt.Errorf("entry at offset 0x%x: %w", off, err))
		}
		if e.terminator {
			break
		}
		if e.id != 0 {
			d, ok, err := eh.parseFDE(e, cies)
			if err != nil {
				return eh.stop(out, fmt.Errorf("FDE at offset 0x%x: %w", off, err))
			}
			if ok {
				if len(out) == MaxSymbols {
					return out, fmt.Errorf("more than %d FDEs", MaxSymbols)
				}
				out = append(out, d)
			}
		}
		off = e.end
	}
	return out, nil
}

// countFDEs counts the entries that look like FDEs, up to the first
// malformed one, so that the FDEs are allocated once, at their size.
func (eh *ehFrame) countFDEs() int {
	n := 0
	for off := 0; off < len(eh.data); {
		e, err := eh.entryAt(off)
		if err != nil || e.terminator {
			break
		}
		if e.id != 0 {
			n++
		}
		off = e.end
	}
	return n
}

// stop ends parsing at a malformed entry: an error, or in lenient mode the
// FDEs found so far.
func (eh *ehFrame) stop(out []fde, err error) ([]fde, error) {
	if eh.lenient && len(out) > 0 {
		return out, nil
	}
	return out, err
}

// entry is the framing of one CIE or FDE.
type entry struct {
	start      int // offset of the length field
	idOff      int // offset of the CIE id / CIE pointer field
	body       int // offset just past that field
	end        int // offset just past the entry
	id         uint32
	terminator bool // zero length: end of the table
}

func (eh *ehFrame) entryAt(off int) (entry, error) {
	c := &cursor{data: eh.data, off: off}
	e := entry{start: off}
	length := uint64(c.u32(eh.order))
	if c.err != nil {
		return e, c.err
	}
	if length == 0 {
		e.terminator = true
		return e, nil
	}
	if length == 0xffffffff {
		length = c.u64(eh.order)
		if c.err != nil {
			return e, c.err
		}
	}
	if length < 4 || length > uint64(len(eh.data)-c.off) {
		return e, fmt.Errorf("length 0x%x exceeds the remaining 0x%x bytes", length, len(eh.data)-c.off)
	}
	e.end = c.off + int(length)
	e.idOff = c.off
	// In .eh_frame the CIE id and CIE pointer are 4 bytes even in the
	// 64-bit format (unlike .debug_frame).
	e.id = c.u32(eh.order)
	e.body = c.off
	return e, c.err
}

// cieAt parses (once) the CIE that starts at off.
func (eh *ehFrame) cieAt(off int, cies map[int]*cie) (*cie, error) {
	if c, ok := cies[off]; ok {
		return c, nil
	}
	e, err := eh.entryAt(off)
	if err != nil {
		return nil, fmt.Errorf("CIE at offset 0x%x: %w", off, err)
	}
	if e.terminator || e.id != 0 {
		return nil, fmt.Errorf("offset 0x%x does not hold a CIE", off)
	}
	c := eh.parseCIE(e)
	cies[off] = c
	return c, nil
}

func (eh *ehFrame) parseCIE(e entry) *cie {
	c := &cursor{data: eh.data[:e.end], off: e.body}
	info := &cie{fdeEnc: pePtr}
	version := c.u8()
	if c.err == nil && version != 1 && version != 3 && version != 4 {
		info.err = fmt.Errorf("unsupported CIE version %d", version)
		return info
	}
	// Real augmentation strings are a few letters ("zPLR"); the bound
	// keeps a hostile FDE pointing at arbitrary "CIEs" from making each
	// one a long scan.
	aug := c.cstring(maxAugmentation)
	if c.err != nil {
		info.err = fmt.Errorf("augmentation string: %w", c.err)
		return info
	}
	if version == 4 {
		c.u8() // address_size
		c.u8() // segment_selector_size
	}
	if len(aug) >= 2 && aug[:2] == "eh" {
		// Pre-"z" GCC: an EH data pointer follows the augmentation string.
		c.skip(eh.ptrSize)
		aug = aug[2:]
	}
	info.aug = aug
	info.codeAlign = c.uleb()
	info.dataAlign = c.sleb()
	if version == 1 {
		info.raReg = uint64(c.u8())
	} else {
		info.raReg = c.uleb()
	}
	if c.err != nil {
		info.err = c.err
		return info
	}
	if aug == "" {
		info.initial = [2]int{c.off, e.end}
		return info
	}
	if aug[0] != 'z' {
		info.err = fmt.Errorf("unsupported augmentation %q", aug)
		return info
	}
	augLen := c.uleb()
	if c.err != nil || augLen > uint64(len(c.data)-c.off) {
		info.err = errors.New("augmentation data runs past the CIE")
		return info
	}
	ac := &cursor{data: c.data[:c.off+int(augLen)], off: c.off}
	info.hasZ = true
	info.initial = [2]int{c.off + int(augLen), e.end}
	for i := 1; i < len(aug); i++ {
		switch aug[i] {
		case 'R':
			info.fdeEnc = ac.u8()
		case 'P':
			enc := ac.u8()
			// Skip the personality routine pointer; only its size matters.
			eh.align(ac, enc)
			if _, err := eh.readEncodedRaw(ac, enc); err != nil && ac.err == nil {
				ac.err = err
			}
		case 'L':
			ac.u8() // LSDA encoding, used by FDE augmentation data
		case 'S':
			info.signal = true
		case 'B', 'G':
			// AArch64 BTI and MTE markers: no data.
		default:
			// The 'z' length lets the data be skipped, but 'R' may come
			// after this letter: only trust an encoding already seen.
			if !hasR(aug[1:i]) {
				info.err = fmt.Errorf("unsupported augmentation %q", aug)
			}
			return info
		}
		if ac.err != nil {
			info.err = fmt.Errorf("augmentation %q: %w", aug, ac.err)
			return info
		}
	}
	return info
}

func hasR(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 'R' {
			return true
		}
	}
	return false
}

// parseFDE decodes an FDE's pc_begin and pc_range. ok is false for an FDE
// that is valid but describes nothing usable (an unusable CIE, a zero
// start or range, an indirect pointer that cannot be read).
func (eh *ehFrame) parseFDE(e entry, cies map[int]*cie) (d fde, ok bool, err error) {
	d, _, _, ok, err = eh.decodeFDE(e, cies)
	return d, ok, err
}

// decodeFDE is parseFDE that also returns the FDE's CIE and the offset
// just past pc_range (where the augmentation data, then the
// instructions, start), for the CFI index.
func (eh *ehFrame) decodeFDE(e entry, cies map[int]*cie) (d fde, info *cie, rest int, ok bool, err error) {
	ptr := int(e.id)
	if ptr < 0 || ptr > e.idOff {
		return d, nil, 0, false, fmt.Errorf("CIE pointer 0x%x points before the data", e.id)
	}
	info, err = eh.cieAt(e.idOff-ptr, cies)
	if err != nil {
		return d, nil, 0, false, err
	}
	if info.err != nil {
		return d, nil, 0, false, nil
	}
	c := &cursor{data: eh.data[:e.end], off: e.body}
	start, err := eh.readEncoded(c, info.fdeEnc)
	if errors.Is(err, errUnresolved) {
		return d, nil, 0, false, nil
	}
	if err != nil {
		return d, nil, 0, false, fmt.Errorf("pc_begin: %w", err)
	}
	// pc_range has the format of pc_begin but is never relocated.
	size, err := eh.readEncodedRaw(c, info.fdeEnc&0x0f)
	if err != nil {
		return d, nil, 0, false, fmt.Errorf("pc_range: %w", err)
	}
	if start == 0 || size == 0 {
		return d, nil, 0, false, nil
	}
	return fde{start: start, size: size}, info, c.off, true, nil
}

var errUnresolved = errors.New("pointer cannot be resolved statically")

// readEncoded reads a pointer with encoding enc at c, applying its
// relative base and indirection.
func (eh *ehFrame) readEncoded(c *cursor, enc byte) (uint64, error) {
	if enc == peOmit {
		return 0, errors.New("pointer is omitted (DW_EH_PE_omit)")
	}
	eh.align(c, enc)
	fieldAddr := eh.addr + uint64(c.off)
	v, err := eh.readEncodedRaw(c, enc&0x0f)
	if err != nil {
		return 0, err
	}
	switch enc & 0x70 {
	case 0, peAligned:
	case pePCRel:
		v += fieldAddr
	case peTextRel:
		if !eh.hasText {
			return 0, errors.New("DW_EH_PE_textrel without a .text section")
		}
		v += eh.textBase
	case peDataRel:
		if !eh.hasData {
			return 0, errors.New("DW_EH_PE_datarel without a data base (.got)")
		}
		v += eh.dataBase
	case peFuncRel:
		return 0, errors.New("DW_EH_PE_funcrel is meaningless here")
	default:
		return 0, fmt.Errorf("unknown pointer application 0x%x", enc&0x70)
	}
	if eh.ptrSize == 4 {
		v &= 0xffffffff
	}
	if enc&peIndirect != 0 {
		p, ok := eh.deref(v)
		if !ok {
			return 0, errUnresolved
		}
		v = p
	}
	return v, nil
}

// align skips the padding before a DW_EH_PE_aligned value, which starts
// at the next address-size boundary.
func (eh *ehFrame) align(c *cursor, enc byte) {
	if enc&0x70 == peAligned {
		at := eh.addr + uint64(c.off)
		c.skip(int((uint64(eh.ptrSize) - at%uint64(eh.ptrSize)) % uint64(eh.ptrSize)))
	}
}

// readEncodedRaw reads a value in the format part (low 4 bits) of an
// encoding, without any relative base.
func (eh *ehFrame) readEncodedRaw(c *cursor, enc byte) (uint64, error) {
	var v uint64
	switch enc & 0x0f {
	case pePtr:
		if eh.ptrSize == 4 {
			v = uint64(c.u32(eh.order))
		} else {
			v = c.u64(eh.order)
		}
	case peSigned:
		if eh.ptrSize == 4 {
			v = uint64(int64(int32(c.u32(eh.order))))
		} else {
			v = c.u64(eh.order)
		}
	case peULEB128:
		v = c.uleb()
	case peUdata2:
		v = uint64(c.u16(eh.order))
	case peUdata4:
		v = uint64(c.u32(eh.order))
	case peUdata8, peSdata8:
		v = c.u64(eh.order)
	case peSLEB128:
		v = uint64(c.sleb())
	case peSdata2:
		v = uint64(int64(int16(c.u16(eh.order))))
	case peSdata4:
		v = uint64(int64(int32(c.u32(eh.order))))
	default:
		return 0, fmt.Errorf("unknown pointer format 0x%x", enc&0x0f)
	}
	return v, c.err
}

// cursor reads little pieces of a byte slice. The first error sticks and
// every later read returns zero, so callers check once after a sequence.
type cursor struct {
	data []byte
	off  int
	err  error
}

func (c *cursor) take(n int) []byte {
	if c.err != nil {
		return nil
	}
	if n < 0 || n > len(c.data)-c.off {
		c.err = errTruncated
		return nil
	}
	b := c.data[c.off : c.off+n]
	c.off += n
	return b
}

func (c *cursor) skip(n int) { c.take(n) }

func (c *cursor) u8() byte {
	if b := c.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (c *cursor) u16(bo binary.ByteOrder) uint16 {
	if b := c.take(2); b != nil {
		return bo.Uint16(b)
	}
	return 0
}

func (c *cursor) u32(bo binary.ByteOrder) uint32 {
	if b := c.take(4); b != nil {
		return bo.Uint32(b)
	}
	return 0
}

func (c *cursor) u64(bo binary.ByteOrder) uint64 {
	if b := c.take(8); b != nil {
		return bo.Uint64(b)
	}
	return 0
}

// maxAugmentation bounds the length of a CIE augmentation string.
const maxAugmentation = 32

// cstring reads a NUL-terminated string of at most max bytes; the NUL
// must be inside the data.
func (c *cursor) cstring(max int) string {
	if c.err != nil {
		return ""
	}
	for i := c.off; i < len(c.data) && i-c.off <= max; i++ {
		if c.data[i] == 0 {
			s := string(c.data[c.off:i])
			c.off = i + 1
			return s
		}
	}
	if len(c.data)-c.off > max {
		c.err = fmt.Errorf("string longer than %d bytes", max)
	} else {
		c.err = errTruncated
	}
	return ""
}

// LEB128 values longer than 10 bytes cannot fit in 64 bits.
const maxLEB128 = 10

var errLEB128 = errors.New("LEB128 value does not fit in 64 bits")

func (c *cursor) uleb() uint64 {
	var v uint64
	for i := 0; ; i++ {
		if i == maxLEB128 {
			c.fail(errLEB128)
			return 0
		}
		b := c.u8()
		if c.err != nil {
			return 0
		}
		if i == maxLEB128-1 && b&0x7e != 0 {
			c.fail(errLEB128)
			return 0
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return v
		}
	}
}

func (c *cursor) sleb() int64 {
	var v int64
	for i := 0; ; i++ {
		if i == maxLEB128 {
			c.fail(errLEB128)
			return 0
		}
		b := c.u8()
		if c.err != nil {
			return 0
		}
		v |= int64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if shift := 7 * (i + 1); shift < 64 && b&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

func (c *cursor) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}
