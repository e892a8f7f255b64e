// Package patch plans and builds binary patches of function entries: the
// first instructions of a rescue point are replaced by a 5-byte `jmp rel32`
// into injected code, and the instructions it displaces are relocated to
// run there instead. Decoding uses golang.org/x/arch/x86/x86asm; the few
// encodings written here (jmp/jcc/call rel32, jmp through a literal) are
// the fixed forms the Intel manual gives, which no Go library emits.
package patch

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// JmpLen is the length of the jump written at a patched entry, and
// JmpOpcode its first byte (jmp rel32).
const (
	JmpLen    = 5
	JmpOpcode = 0xe9
)

// ErrNotPatchable explains why a function keeps a breakpoint entry.
var ErrNotPatchable = errors.New("entry cannot be patched")

// Displaced is the run of whole instructions at a function's entry that a
// patch overwrites.
type Displaced struct {
	Addr  uint64 // run-time address of the function's first instruction
	Code  []byte // the original bytes, whole instructions, >= JmpLen
	insts []x86asm.Inst
	offs  []int // offset of each instruction in Code
}

// Len is the number of bytes the patch covers.
func (d *Displaced) Len() int { return len(d.Code) }

// Plan decodes whole instructions from the start of a function until they
// cover JmpLen bytes. code holds the function's bytes from its entry; when
// the function's size is known (size > 0) code must hold all of it, and
// the whole function is scanned for branches into the displaced bytes: a
// function that jumps back into its first instructions cannot have them
// moved.
func Plan(addr uint64, code []byte, size int) (*Displaced, error) {
	d := &Displaced{Addr: addr}
	n := 0
	for n < JmpLen {
		if n >= len(code) || (size > 0 && n >= size) {
			return nil, fmt.Errorf("%w: the function is shorter than a jump (%d bytes)", ErrNotPatchable, n)
		}
		inst, err := decode(code[n:])
		if err != nil {
			return nil, fmt.Errorf("%w: undecodable instruction at +%#x: %v", ErrNotPatchable, n, err)
		}
		if err := movable(inst, code[n:n+inst.Len]); err != nil {
			return nil, fmt.Errorf("%w: %s at +%#x: %v", ErrNotPatchable, inst.Op, n, err)
		}
		d.insts = append(d.insts, inst)
		d.offs = append(d.offs, n)
		n += inst.Len
	}
	if size > 0 && n > size {
		return nil, fmt.Errorf("%w: the function is shorter than a jump (%d bytes)", ErrNotPatchable, size)
	}
	d.Code = append([]byte(nil), code[:n]...)
	if size > 0 && size <= len(code) {
		if err := d.checkBranchesInto(code[:size]); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// decode decodes one instruction. x86asm predates CET and reads endbr64
// (f3 0f 1e fa) as a prefix and a hint nop; it is a 4-byte no-op here.
func decode(code []byte) (x86asm.Inst, error) {
	if len(code) >= 4 && code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && (code[3] == 0xfa || code[3] == 0xfb) {
		return x86asm.Inst{Op: x86asm.NOP, Len: 4, Mode: 64}, nil
	}
	return x86asm.Decode(code, 64)
}

// movable refuses what cannot run elsewhere: a call (its return address
// would point into the patched bytes, and a thread returning there would
// land in the middle of the jump), returns and indirect jumps (the
// function would leave from the stub, fine, but a function this short
// is better left alone), and rel8-only branches (loop, jrcxz).
func movable(inst x86asm.Inst, raw []byte) error {
	switch inst.Op {
	case x86asm.CALL, x86asm.LCALL:
		return errors.New("a call among the first instructions")
	case x86asm.RET, x86asm.LRET, x86asm.IRET, x86asm.IRETD, x86asm.IRETQ:
		return errors.New("the function returns before the jump's end")
	case x86asm.JMP, x86asm.LJMP:
		if inst.PCRel == 0 {
			return errors.New("an indirect jump among the first instructions")
		}
	case x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return errors.New("a branch with only an 8-bit form")
	case x86asm.SYSCALL, x86asm.INT, x86asm.UD1, x86asm.UD2, x86asm.HLT:
		return errors.New("an instruction whose address matters")
	}
	if inst.PCRel != 0 && inst.PCRel != 1 && inst.PCRel != 4 {
		return fmt.Errorf("a %d-byte relative operand", inst.PCRel)
	}
	if len(raw) != inst.Len {
		return errors.New("truncated")
	}
	return nil
}

// checkBranchesInto decodes the whole function linearly and refuses the
// plan if a direct branch targets a byte inside the displaced run other
// than its first. Undecodable bytes (data in code, padding) end the scan:
// compilers place jump tables elsewhere, and indirect jumps cannot be
// checked by anyone.
func (d *Displaced) checkBranchesInto(fn []byte) error {
	lo, hi := d.Addr+1, d.Addr+uint64(len(d.Code))
	for off := 0; off < len(fn); {
		inst, err := decode(fn[off:])
		if err != nil {
			return nil
		}
		if t, ok := branchTarget(inst, fn[off:off+inst.Len], d.Addr+uint64(off)); ok && t >= lo && t < hi {
			return fmt.Errorf("%w: the instruction at +%#x jumps to +%#x, inside the bytes a jump would cover", ErrNotPatchable, off, t-d.Addr)
		}
		off += inst.Len
	}
	return nil
}

// branchTarget returns the target of a direct jump, conditional jump or
// call at pc.
func branchTarget(inst x86asm.Inst, raw []byte, pc uint64) (uint64, bool) {
	if inst.PCRel == 0 || !isBranch(inst.Op) {
		return 0, false
	}
	return pc + uint64(inst.Len) + uint64(relValue(inst, raw)), true
}

func isBranch(op x86asm.Op) bool {
	switch op {
	case x86asm.JMP, x86asm.CALL, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE,
		x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return true
	}
	_, ok := jccCode[op]
	return ok
}

func relValue(inst x86asm.Inst, raw []byte) int64 {
	b := raw[inst.PCRelOff : inst.PCRelOff+inst.PCRel]
	if inst.PCRel == 1 {
		return int64(int8(b[0]))
	}
	return int64(int32(binary.LittleEndian.Uint32(b)))
}

// jccCode maps conditional jumps to the low nibble of their opcode
// (0x70+cc for rel8, 0x0f 0x80+cc for rel32).
var jccCode = map[x86asm.Op]byte{
	x86asm.JO: 0x0, x86asm.JNO: 0x1, x86asm.JB: 0x2, x86asm.JAE: 0x3,
	x86asm.JE: 0x4, x86asm.JNE: 0x5, x86asm.JBE: 0x6, x86asm.JA: 0x7,
	x86asm.JS: 0x8, x86asm.JNS: 0x9, x86asm.JP: 0xa, x86asm.JNP: 0xb,
	x86asm.JL: 0xc, x86asm.JGE: 0xd, x86asm.JLE: 0xe, x86asm.JG: 0xf,
}

// Relocate returns the displaced instructions re-encoded to run at
// newAddr, followed by a jump to the first instruction after them at the
// original place. newAddr must lie within ±2 GiB of the function (and
// therefore of what its RIP-relative operands and near branches reach).
// Branches to outside the displaced run become rel32 forms; a branch to
// inside it is kept relative to the copy.
func (d *Displaced) Relocate(newAddr uint64) ([]byte, error) {
	// Each instruction's size in the copy: rel8 branches grow to rel32.
	size := make([]int, len(d.insts))
	newOff := make([]int, len(d.insts)+1)
	for i, inst := range d.insts {
		size[i] = inst.Len
		if inst.PCRel == 1 {
			size[i] = widenedLen(inst)
		}
		newOff[i+1] = newOff[i] + size[i]
	}
	var out []byte
	for i, inst := range d.insts {
		raw := d.Code[d.offs[i] : d.offs[i]+inst.Len]
		pc := d.Addr + uint64(d.offs[i])
		at := newAddr + uint64(newOff[i])
		b, err := d.relocateOne(inst, raw, pc, at, size[i], newAddr, newOff)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
	}
	back, err := JmpRel32(newAddr+uint64(len(out)), d.Addr+uint64(len(d.Code)))
	if err != nil {
		return nil, err
	}
	return append(out, back...), nil
}

func widenedLen(inst x86asm.Inst) int {
	if inst.Op == x86asm.JMP {
		return 5 // e9 rel32
	}
	return 6 // 0f 8x rel32
}

func (d *Displaced) relocateOne(inst x86asm.Inst, raw []byte, pc, at uint64, size int, newBase uint64, newOff []int) ([]byte, error) {
	if inst.PCRel == 0 {
		return append([]byte(nil), raw...), nil
	}
	target := pc + uint64(inst.Len) + uint64(relValue(inst, raw))
	if lo, hi := d.Addr, d.Addr+uint64(len(d.Code)); isBranch(inst.Op) && target >= lo && target < hi {
		// A branch within the displaced run follows the copy.
		for i := range d.insts {
			if d.Addr+uint64(d.offs[i]) == target {
				target = newBase + uint64(newOff[i])
				break
			}
		}
	}
	if inst.PCRel == 1 {
		if inst.Op == x86asm.JMP {
			return JmpRel32(at, target)
		}
		cc, ok := jccCode[inst.Op]
		if !ok {
			return nil, fmt.Errorf("%w: cannot widen %s", ErrNotPatchable, inst.Op)
		}
		rel, err := rel32(at+6, target)
		if err != nil {
			return nil, err
		}
		b := []byte{0x0f, 0x80 | cc, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[2:], uint32(rel))
		return b, nil
	}
	// A rel32 branch or a RIP-relative memory operand: same encoding, the
	// displacement measured from the copy's end.
	rel, err := rel32(at+uint64(size), target)
	if err != nil {
		return nil, err
	}
	b := append([]byte(nil), raw...)
	binary.LittleEndian.PutUint32(b[inst.PCRelOff:], uint32(rel))
	return b, nil
}

func rel32(from, to uint64) (int32, error) {
	d := int64(to - from)
	if d != int64(int32(d)) {
		return 0, fmt.Errorf("%w: %#x is more than 2 GiB from %#x", ErrNotPatchable, to, from)
	}
	return int32(d), nil
}

// JmpRel32 encodes `jmp rel32` at pc to target.
func JmpRel32(pc, target uint64) ([]byte, error) {
	rel, err := rel32(pc+JmpLen, target)
	if err != nil {
		return nil, err
	}
	b := []byte{JmpOpcode, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[1:], uint32(rel))
	return b, nil
}
