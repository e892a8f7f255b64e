package candidates

import "golang.org/x/arch/x86/x86asm"

// locations is the set of places holding a call's result: register
// families and stack slots. Unoptimised code spills the result to a slot
// ([rbp-4]) and compares the slot; optimised code copies it to a
// callee-saved register before testing it. A handful of places is
// plenty; more are dropped (which can only lose evidence, not invent
// it).
type locations struct {
	regs  uint16 // bit per family
	slots [4]x86asm.Mem
	n     int
}

func (l *locations) addReg(f int) {
	if f >= 0 && f < 16 {
		l.regs |= 1 << f
	}
}

func (l *locations) delReg(f int) {
	if f >= 0 && f < 16 {
		l.regs &^= 1 << f
	}
}

func (l *locations) hasFamily(f int) bool { return f >= 0 && f < 16 && l.regs&(1<<f) != 0 }

func (l *locations) empty() bool { return l.regs == 0 && l.n == 0 }

// has reports whether operand a is one of the locations.
func (l *locations) has(a x86asm.Arg) bool {
	switch a := a.(type) {
	case x86asm.Reg:
		return l.hasFamily(family(a))
	case x86asm.Mem:
		return l.slot(a) >= 0
	}
	return false
}

func (l *locations) slot(m x86asm.Mem) int {
	for i := 0; i < l.n; i++ {
		if l.slots[i] == m {
			return i
		}
	}
	return -1
}

func (l *locations) addSlot(m x86asm.Mem) {
	if l.slot(m) >= 0 || l.n == len(l.slots) {
		return
	}
	l.slots[l.n] = m
	l.n++
}

func (l *locations) delSlot(m x86asm.Mem) {
	if i := l.slot(m); i >= 0 {
		l.n--
		l.slots[i] = l.slots[l.n]
	}
}

// isStackSlot reports a frame or stack-pointer relative operand without
// an index: where compilers spill locals.
func isStackSlot(m x86asm.Mem) bool {
	return (m.Base == x86asm.RBP || m.Base == x86asm.RSP) && m.Index == 0 && m.Segment == 0
}

// isCopy reports the instructions that copy a value unchanged (or
// widened) from their second operand to their first.
func isCopy(op x86asm.Op) bool {
	switch op {
	case x86asm.MOV, x86asm.MOVSXD, x86asm.MOVSX, x86asm.MOVZX:
		return true
	}
	return false
}

// step updates the locations for one instruction: a copy from a
// location adds its destination; any other write to a location removes
// it.
func (l *locations) step(in *insn) {
	if in.Op == x86asm.CDQE || in.Op == x86asm.CWDE {
		return // widens eax in place: still the result
	}
	dst := in.Args[0]
	if isCopy(in.Op) && l.has(in.Args[1]) {
		switch d := dst.(type) {
		case x86asm.Reg:
			l.addReg(family(d))
		case x86asm.Mem:
			if isStackSlot(d) {
				l.addSlot(d)
			}
		}
		return
	}
	if m, ok := dst.(x86asm.Mem); ok && !readsOnly(in.Op) {
		l.delSlot(m)
	}
	for f := 0; f < 16; f++ {
		if l.hasFamily(f) && writes(in, f) {
			l.delReg(f)
		}
	}
	// A write to rsp or rbp moves every slot relative to it.
	if writes(in, famRSP) || writes(in, famRBP) {
		l.n = 0
	}
}
