package candidates

import "golang.org/x/arch/x86/x86asm"

// loc is where the traced return value lives while the trace walks
// back: a register family, or a stack slot. The value of eax at a ret
// is often copied from a callee-saved register (mov eax, r12d) set long
// before, or, at -O0, loaded from the local the function returns.
type loc struct {
	fam  int
	slot x86asm.Mem
	mem  bool
}

func (l loc) bit() uint32 {
	if l.mem {
		return 1 << 16
	}
	return 1 << uint(l.fam)
}

// maxCallees bounds the callees remembered per function.
const maxCallees = 8

// tracer follows one ret back through the blocks reaching it.
type tracer struct {
	fn     *funcCode
	sum    *ReturnSummary
	budget int
	paths  int
}

// traceReturn adds the values eax/rax may hold at the ret insns[i] to sum.
func (fn *funcCode) traceReturn(i int, sum *ReturnSummary) {
	fn.gen++
	if fn.gen == 0 { // wrapped: old marks would look current
		clear(fn.mark)
		fn.gen = 1
	}
	t := tracer{fn: fn, sum: sum, budget: maxTraceInsns}
	sum.Rets++
	t.walk(i, 0, loc{fam: famRAX})
}

// visit marks instruction cur as reached tracking l; false if it was.
func (fn *funcCode) visit(cur int, l loc) bool {
	if fn.mark[cur] != fn.gen {
		fn.mark[cur], fn.marked[cur] = fn.gen, 0
	}
	if fn.marked[cur]&l.bit() != 0 {
		return false
	}
	fn.marked[cur] |= l.bit()
	return true
}

// walk finds the value of l on entry to insns[cur], scanning back.
// At a jump target it also follows every jump reaching it; it goes on
// through the fall-through edge unless the previous instruction ends
// the flow.
func (t *tracer) walk(cur, depth int, l loc) {
	fn := t.fn
	for {
		if !fn.visit(cur, l) {
			return // this path was already counted
		}
		if preds := fn.jumpsTo[fn.insns[cur].addr]; len(preds) > 0 {
			if depth >= maxTraceDepth || t.paths >= maxTracePaths {
				t.add(valUnknown, 0)
				return
			}
			for _, p := range preds {
				t.walk(int(p), depth+1, l)
			}
			if cur == 0 || endsFlow(fn.insns[cur-1].Op) {
				return
			}
		}
		if cur == 0 {
			t.add(valUnset, 0)
			return
		}
		if t.budget--; t.budget <= 0 {
			t.add(valUnknown, 0)
			return
		}
		cur--
		var done bool
		if l, done = t.settle(cur, l, depth); done {
			return
		}
	}
}

// settle looks at insns[i] for the value of l after it: it records the
// value and returns true when i decides it, or returns where the value
// was before i (l itself, or the source of a copy).
func (t *tracer) settle(i int, l loc, depth int) (loc, bool) {
	in := &t.fn.insns[i]
	switch {
	case endsFlow(in.Op):
		// Reached only by an indirect jump (a switch table) or not at all.
		t.add(valUnknown, 0)
		return l, true
	case in.Op == x86asm.CALL:
		return t.settleCall(in, l)
	case l.mem:
		return t.settleSlot(in, l)
	case isCmov(in.Op) && regFamily(in.Args[0]) == l.fam:
		// Either the moved value or the old one: trace the source as
		// a path of its own, and go on with the old value (mov edx,0;
		// cmovne rax,rdx is how gcc returns NULL after a search).
		if f := regFamily(in.Args[1]); f != noFam && depth < maxTraceDepth {
			t.walk(i, depth+1, loc{fam: f})
		} else {
			t.add(valComputed, 0)
		}
		return l, false
	case !writes(in, l.fam):
		return l, false
	}
	if from, ok := copySource(in); ok {
		return from, false
	}
	t.settleWrite(i, l.fam)
	return l, true
}

// settleCall: rax is the callee's result; a callee-saved register or a
// stack slot survives the call; any other register is clobbered.
func (t *tracer) settleCall(in *insn, l loc) (loc, bool) {
	switch {
	case l.mem || calleeSaved(l.fam):
		return l, false
	case l.fam == famRAX:
		t.add(valCallee, 0)
		t.fn.noteCallee(in)
	default:
		t.add(valUnknown, 0)
	}
	return l, true
}

// settleSlot handles a traced stack slot: a store to it decides it or
// moves the trace to the stored register.
func (t *tracer) settleSlot(in *insn, l loc) (loc, bool) {
	m, ok := in.Args[0].(x86asm.Mem)
	if !ok || m != l.slot || readsOnly(in.Op) {
		if writes(in, famRBP) || writes(in, famRSP) && l.slot.Base == x86asm.RSP {
			t.add(valUnknown, 0) // the frame moved under the slot
			return l, true
		}
		return l, false
	}
	if in.Op == x86asm.MOV {
		switch src := in.Args[1].(type) {
		case x86asm.Imm:
			t.add(valConst, normImm(int64(src), in.MemBytes*8))
			return l, true
		case x86asm.Reg:
			if f := family(src); f != famRSP && f != noFam {
				return loc{fam: f}, false
			}
		}
	}
	t.add(valComputed, 0)
	return l, true
}

// settleWrite records the value an instruction writing family fam sets.
func (t *tracer) settleWrite(i int, fam int) {
	in := &t.fn.insns[i]
	if v, ok := constWrite(in, fam); ok {
		t.add(valConst, v)
		return
	}
	if lo, hi, ok := t.fn.flagValue(i, fam); ok {
		t.add(valConst, lo)
		t.add(valConst, hi)
		return
	}
	if isArith(in.Op) {
		t.sum.Arith++
	}
	t.add(valComputed, 0)
}

// copySource returns the location a register copy reads: mov eax, r12d
// or mov eax, [rbp-4]. Only same-or-wider sources: a copy of a byte
// register is a boolean, not the value traced.
func copySource(in *insn) (loc, bool) {
	if in.Op != x86asm.MOV && in.Op != x86asm.MOVSXD {
		return loc{}, false
	}
	switch src := in.Args[1].(type) {
	case x86asm.Reg:
		if f := family(src); f != noFam && f != famRSP && width(src) >= 32 {
			return loc{fam: f}, true
		}
	case x86asm.Mem:
		if isStackSlot(src) && in.MemBytes >= 4 {
			return loc{slot: src, mem: true}, true
		}
	}
	return loc{}, false
}

// flagValue recognises a return value made from a condition:
// setcc al (0 or 1), movzx eax,al after it (0 or 1), neg of that (0 or
// -1, nginx's "return (rc == NGX_ERROR) ? NGX_ERROR : NGX_OK") and sbb
// eax,eax (0 or -1).
func (fn *funcCode) flagValue(i int, fam int) (lo, hi int64, ok bool) {
	in := &fn.insns[i]
	switch {
	case isSetcc(in.Op):
		return 0, 1, regFamily(in.Args[0]) == fam
	case in.Op == x86asm.SBB && in.Args[0] == in.Args[1]:
		return -1, 0, true
	case in.Op == x86asm.MOVZX && i > 0:
		src := regFamily(in.Args[1])
		prev := &fn.insns[i-1]
		return 0, 1, isSetcc(prev.Op) && regFamily(prev.Args[0]) == src
	case in.Op == x86asm.NEG && i > 0:
		if l, h, ok := fn.flagValue(i-1, fam); ok && l == 0 && h == 1 {
			return -1, 0, true
		}
	}
	return 0, 0, false
}

func (fn *funcCode) noteCallee(in *insn) {
	if fn.callee == nil || len(fn.callees) >= maxCallees {
		return
	}
	if j := fn.callee(in); j >= 0 {
		fn.callees = append(fn.callees, int32(j))
	}
}

// calleeSaved reports the registers a call preserves (System V AMD64).
func calleeSaved(f int) bool {
	switch f {
	case 3, famRBP, 12, 13, 14, 15: // rbx, rbp, r12-r15
		return true
	}
	return false
}

// isArith reports instructions that compute a number rather than an
// address: a return value made by them (a difference, a count, a byte)
// is a result in its own right, and 0 among such values is no sign of an
// error (strcmp). add, imul and lea are left out: they also compute
// addresses (return base + i*size).
func isArith(op x86asm.Op) bool {
	switch op {
	case x86asm.SUB, x86asm.SBB, x86asm.DIV, x86asm.IDIV, x86asm.SHL, x86asm.SHR,
		x86asm.SAR, x86asm.NEG, x86asm.NOT, x86asm.INC, x86asm.DEC, x86asm.POPCNT,
		x86asm.MOVZX, x86asm.MOVSX:
		return true
	}
	return false
}

func (t *tracer) add(k valKind, v int64) {
	t.paths++
	s := t.sum
	s.Paths++
	switch k {
	case valConst:
		s.addConst(v)
	case valComputed:
		s.Computed++
	case valCallee:
		s.Callee++
	case valUnset:
		s.Unset++
	default:
		s.Unknown++
	}
}

type valKind uint8

const (
	valConst valKind = iota
	valComputed
	valCallee
	valUnset
	valUnknown
)

// constWrite returns the constant a write to family fam sets: mov of an
// immediate, xor/sub of the register with itself (0), or of -1 (-1), and
// of 0 (0). A 32-bit write is read as a signed int, the C return type
// such code almost always has: mov eax,0xffffffff is -1.
func constWrite(in *insn, fam int) (int64, bool) {
	r, ok := in.Args[0].(x86asm.Reg)
	if !ok || family(r) != fam {
		return 0, false
	}
	w := width(r)
	if w < 32 {
		return 0, false // a partial write keeps the upper bits
	}
	imm, isImm := in.Args[1].(x86asm.Imm)
	switch in.Op {
	case x86asm.MOV:
		return normImm(int64(imm), w), isImm
	case x86asm.XOR, x86asm.SUB:
		return 0, in.Args[1] == in.Args[0]
	case x86asm.OR:
		return -1, isImm && normImm(int64(imm), w) == -1
	case x86asm.AND:
		return 0, isImm && imm == 0
	}
	return 0, false
}
