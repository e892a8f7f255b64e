package candidates

import "golang.org/x/arch/x86/x86asm"

// useKind is what a call site does with the result.
type useKind uint8

const (
	useGone  useKind = iota // overwritten, passed on, or out of sight
	useZero                 // branch on zero / nonzero
	useSign                 // branch on negative / not
	useEqual                // branch on == a nonzero constant (imm)
	useOrder                // branch on an ordered compare with a constant
	useVar                  // branch on a compare with a non-constant
	useMask                 // branch on some bits (test r, imm)
	useProp                 // returned at once (ret, tail jump)
)

func (k useKind) checked() bool { return k >= useZero && k <= useMask }

// use is the outcome for one call site.
type use struct {
	kind useKind
	imm  int64 // for useEqual
	wide bool  // tested as a 64-bit register
	// weak: the test feeds a setcc or cmovcc, not a branch (return
	// f() == -1 ? -2 : 1). The kind is what the branch would have
	// been; it is weaker evidence of an error path.
	weak bool
}

// maxUseScan bounds how far after a call the result is followed. The
// test of a result is almost always within a few instructions (at -O0:
// spill to a stack slot, reload, compare; at -O2: a move to a callee-saved
// register and a test); further away, something else is being tested.
const maxUseScan = 12

// pending is a test or compare of the result waiting for its branch.
type pending struct {
	cmp  bool  // cmp with an immediate (else test r,r)
	imm  int64 // cmp's immediate
	mask bool  // test r, imm
	vs   bool  // cmp with a non-constant
	wide bool
}

// classifyUse follows the result of the call insns[i] through the next
// instructions of fn. It tracks where the result lives (rax, registers
// it is copied to, stack slots it is spilled to) and stops at the first
// test or compare of one of them followed by a conditional branch, or
// when every copy is overwritten, or at another call, a return, a jump
// out of fn, or maxUseScan instructions.
func classifyUse(fn *funcCode, i int) use {
	var locs locations
	locs.addReg(famRAX)
	var p *pending
	jumps := 0
	for k, n := i+1, 0; k < len(fn.insns) && n < maxUseScan; k, n = k+1, n+1 {
		in := &fn.insns[k]
		if p != nil {
			if u, done := resolve(p, in); done {
				return u
			}
			continue
		}
		switch {
		case in.Op == x86asm.CALL:
			return use{kind: useGone}
		case in.Op == x86asm.RET:
			return propagated(&locs)
		case in.Op == x86asm.JMP:
			next, ok := followJump(fn, in, &jumps)
			if !ok {
				return jumpOut(fn, in, &locs)
			}
			k, n = next-1, n-1 // the loop's increment lands on the target
			continue
		case in.Op == x86asm.TEST || in.Op == x86asm.CMP:
			p = testOf(in, &locs)
			continue
		}
		locs.step(in)
		if locs.empty() {
			return use{kind: useGone}
		}
	}
	return use{kind: useGone}
}

// resolve looks at the instruction after a test of the result: a branch
// settles the outcome; moves may come between; anything else means the
// flags serve some other purpose.
func resolve(p *pending, in *insn) (use, bool) {
	switch {
	case isJcc(in.Op):
		return branchUse(p, in.Op), true
	case isFlagUse(in.Op):
		u := branchUse(p, jccOf(in.Op))
		u.weak = true
		return u, true
	case keepsFlags(in.Op):
		return use{}, false
	}
	return use{kind: useGone}, true
}

// testOf returns the pending test when in tests or compares a location of
// the result, or nil.
func testOf(in *insn, locs *locations) *pending {
	a0, a1 := in.Args[0], in.Args[1]
	if !locs.has(a0) {
		if locs.has(a1) {
			return &pending{vs: true}
		}
		return nil
	}
	p := &pending{wide: argWidth(in, a0) == 64}
	imm, isImm := a1.(x86asm.Imm)
	switch {
	case in.Op == x86asm.TEST && isImm:
		p.mask = true
	case in.Op == x86asm.TEST:
		if !locs.has(a1) {
			p.vs = true // test eax, ebx: bits of another value
		}
	case isImm:
		p.cmp, p.imm = true, normImm(int64(imm), argWidth(in, a0))
	default:
		p.vs = true
	}
	return p
}

// branchUse classifies a test followed by the conditional jump op.
func branchUse(p *pending, op x86asm.Op) use {
	u := use{wide: p.wide}
	eq := op == x86asm.JE || op == x86asm.JNE
	signed := op == x86asm.JS || op == x86asm.JNS || op == x86asm.JL || op == x86asm.JGE ||
		op == x86asm.JLE || op == x86asm.JG
	unsignedGT := op == x86asm.JA || op == x86asm.JBE || op == x86asm.JAE || op == x86asm.JB
	switch {
	case p.mask:
		u.kind = useMask
	case p.vs:
		u.kind = useVar
	case !p.cmp || p.imm == 0:
		// test r,r or cmp r,0: je/jne split zero from nonzero, the
		// signed jumps split negative from not; ja/jbe against 0 is
		// again nonzero.
		u.kind = useZero
		if signed {
			u.kind = useSign
		}
	case eq:
		u.kind, u.imm = useEqual, p.imm
	case p.imm == -1 && (op == x86asm.JLE || op == x86asm.JG):
		u.kind = useSign // r <= -1 is r < 0
	case p.imm < 0 && p.imm >= -4096 && unsignedGT:
		u.kind = useSign // cmp rax,-4096; ja: the kernel's -errno range
	default:
		u.kind = useOrder
	}
	return u
}

// followJump returns the index of a direct jump's target when it stays
// inside fn, at most twice per call site (a compiler may jump to the
// shared test of a result, but a loop must not be followed forever).
func followJump(fn *funcCode, in *insn, jumps *int) (int, bool) {
	t, ok := relTarget(in)
	if !ok || *jumps >= 2 || t < fn.start || t >= fn.end {
		return 0, false
	}
	k := indexOf(fn.insns, t)
	if k < 0 {
		return 0, false
	}
	*jumps++
	return k, true
}

// jumpOut classifies a jump out of fn right after the call: a tail jump
// with the result still in rax hands it to the caller's caller.
func jumpOut(fn *funcCode, in *insn, locs *locations) use {
	if _, ok := relTarget(in); ok {
		return propagated(locs)
	}
	return use{kind: useGone}
}

func propagated(locs *locations) use {
	if locs.hasFamily(famRAX) {
		return use{kind: useProp}
	}
	return use{kind: useGone}
}

// normImm sign-extends a compare's immediate to the operand width, so
// that cmp eax,0xffffffff reads as -1 like cmp rax,-1.
func normImm(v int64, bits int) int64 {
	switch bits {
	case 8:
		return int64(int8(v))
	case 16:
		return int64(int16(v))
	case 32:
		return int64(int32(v))
	}
	return v
}

// argWidth is the width of operand a of in: a register's own, or the
// memory operand's size.
func argWidth(in *insn, a x86asm.Arg) int {
	if r, ok := a.(x86asm.Reg); ok {
		return width(r)
	}
	return in.MemBytes * 8
}
