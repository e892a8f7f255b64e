package candidates

import (
	"bytes"
	"sort"

	"golang.org/x/arch/x86/x86asm"
)

// insn is a decoded instruction and its address.
type insn struct {
	addr uint64
	x86asm.Inst
}

func (in *insn) next() uint64 { return in.addr + uint64(in.Len) }

// endbr64 and endbr32 are the CET landing pads compilers put at function
// entries (-fcf-protection, the default on Ubuntu and Fedora). x86asm
// does not know them and would decode a lone REP prefix, throwing the
// rest of the function out of step.
var (
	endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}
	endbr32 = []byte{0xf3, 0x0f, 0x1e, 0xfb}
)

// decodeRange decodes code (at vaddr base) linearly into buf, reusing
// its storage. Bytes that do not decode are skipped one at a time and
// counted: a linear sweep resynchronises within a few instructions, and
// one bad byte must not lose the whole function.
func decodeRange(code []byte, base uint64, buf []insn) (out []insn, bad int) {
	out = buf[:0]
	for off := 0; off < len(code); {
		rest := code[off:]
		if bytes.HasPrefix(rest, endbr64) || bytes.HasPrefix(rest, endbr32) {
			out = append(out, insn{addr: base + uint64(off), Inst: x86asm.Inst{Op: x86asm.NOP, Len: 4, Mode: 64}})
			off += 4
			continue
		}
		inst, err := x86asm.Decode(rest, 64)
		if err != nil || inst.Op == 0 || inst.Len <= 0 || inst.Len > len(rest) {
			bad++
			off++
			continue
		}
		out = append(out, insn{addr: base + uint64(off), Inst: inst})
		off += inst.Len
	}
	return out, bad
}

// indexOf returns the index of the instruction starting at addr, or -1
// (the address is inside an instruction, or outside the range).
func indexOf(insns []insn, addr uint64) int {
	i := sort.Search(len(insns), func(i int) bool { return insns[i].addr >= addr })
	if i < len(insns) && insns[i].addr == addr {
		return i
	}
	return -1
}

// relTarget returns the target of a direct (rel8/rel32) jump or call.
func relTarget(in *insn) (uint64, bool) {
	rel, ok := in.Args[0].(x86asm.Rel)
	if !ok {
		return 0, false
	}
	return in.next() + uint64(int64(rel)), true
}

// ripSlot returns the address a [rip+disp] operand designates, as in
// call [rip+GOT] and the PLT's jmp [rip+GOT].
func ripSlot(in *insn) (uint64, bool) {
	m, ok := in.Args[0].(x86asm.Mem)
	if !ok || m.Base != x86asm.RIP || m.Index != 0 {
		return 0, false
	}
	return in.next() + uint64(m.Disp), true
}

func isJcc(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE,
		x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JS, x86asm.JNS,
		x86asm.JO, x86asm.JNO, x86asm.JP, x86asm.JNP:
		return true
	}
	return false
}

// isFlagUse reports setcc and cmovcc: a test whose outcome becomes a
// value rather than a branch (weaker evidence of error handling).
func isFlagUse(op x86asm.Op) bool { return isSetcc(op) || isCmov(op) }

func isSetcc(op x86asm.Op) bool {
	switch op {
	case x86asm.SETA, x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETNE,
		x86asm.SETG, x86asm.SETGE, x86asm.SETL, x86asm.SETLE, x86asm.SETS, x86asm.SETNS,
		x86asm.SETO, x86asm.SETNO, x86asm.SETP, x86asm.SETNP:
		return true
	}
	return false
}

func isCmov(op x86asm.Op) bool {
	switch op {
	case x86asm.CMOVA, x86asm.CMOVAE, x86asm.CMOVB, x86asm.CMOVBE, x86asm.CMOVE, x86asm.CMOVNE,
		x86asm.CMOVG, x86asm.CMOVGE, x86asm.CMOVL, x86asm.CMOVLE, x86asm.CMOVS, x86asm.CMOVNS:
		return true
	}
	return false
}

// endsFlow reports instructions after which execution does not fall
// through to the next one.
func endsFlow(op x86asm.Op) bool {
	switch op {
	case x86asm.JMP, x86asm.RET, x86asm.UD2, x86asm.HLT, x86asm.INT:
		return true
	}
	return false
}

// keepsFlags reports the instructions compilers schedule between a test
// and its branch: moves, loads and stack operations, none of which
// change the flags.
func keepsFlags(op x86asm.Op) bool {
	switch op {
	case x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD, x86asm.LEA,
		x86asm.NOP, x86asm.PUSH, x86asm.POP, x86asm.MOVQ, x86asm.MOVD,
		x86asm.MOVAPS, x86asm.MOVUPS, x86asm.MOVDQA, x86asm.MOVDQU, x86asm.MOVSD_XMM, x86asm.MOVSS:
		return true
	}
	return false
}

// jccOf returns the conditional jump testing the same condition as a
// setcc or cmovcc.
func jccOf(op x86asm.Op) x86asm.Op {
	switch op {
	case x86asm.SETA, x86asm.CMOVA:
		return x86asm.JA
	case x86asm.SETAE, x86asm.CMOVAE:
		return x86asm.JAE
	case x86asm.SETB, x86asm.CMOVB:
		return x86asm.JB
	case x86asm.SETBE, x86asm.CMOVBE:
		return x86asm.JBE
	case x86asm.SETE, x86asm.CMOVE:
		return x86asm.JE
	case x86asm.SETNE, x86asm.CMOVNE:
		return x86asm.JNE
	case x86asm.SETG, x86asm.CMOVG:
		return x86asm.JG
	case x86asm.SETGE, x86asm.CMOVGE:
		return x86asm.JGE
	case x86asm.SETL, x86asm.CMOVL:
		return x86asm.JL
	case x86asm.SETLE, x86asm.CMOVLE:
		return x86asm.JLE
	case x86asm.SETS, x86asm.CMOVS:
		return x86asm.JS
	case x86asm.SETNS, x86asm.CMOVNS:
		return x86asm.JNS
	}
	return x86asm.JO // overflow, parity: no meaning for a result
}
