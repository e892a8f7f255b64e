package candidates

import "golang.org/x/arch/x86/x86asm"

// A register family is the general-purpose register a name belongs to,
// whatever its width: AL, AX, EAX and RAX are all family famRAX. The
// analysis tracks values per family because a function returning int
// writes eax and one returning a pointer writes rax, and callers test
// al, eax or rax.
const (
	famRAX = 0
	famRCX = 1
	famRDX = 2
	famRSP = 4
	famRBP = 5
	famRSI = 6
	famRDI = 7
	famR8  = 8
	famR9  = 9
	noFam  = -1
)

// family returns the family of r, or noFam for anything but a
// general-purpose register. AH..BH are the high bytes of RAX..RBX.
func family(r x86asm.Reg) int {
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		return int(r - x86asm.AL)
	case r >= x86asm.AH && r <= x86asm.BH:
		return int(r - x86asm.AH)
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return int(r-x86asm.SPB) + famRSP
	case r >= x86asm.AX && r <= x86asm.R15W:
		return int(r - x86asm.AX)
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return int(r - x86asm.EAX)
	case r >= x86asm.RAX && r <= x86asm.R15:
		return int(r - x86asm.RAX)
	}
	return noFam
}

// regFamily returns the family of an argument that is a register.
func regFamily(a x86asm.Arg) int {
	r, ok := a.(x86asm.Reg)
	if !ok {
		return noFam
	}
	return family(r)
}

// width returns the size in bits of a general-purpose register.
func width(r x86asm.Reg) int {
	switch {
	case r >= x86asm.AL && r <= x86asm.R15B:
		return 8
	case r >= x86asm.AX && r <= x86asm.R15W:
		return 16
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return 32
	case r >= x86asm.RAX && r <= x86asm.R15:
		return 64
	}
	return 0
}

// isArgFamily reports the registers that carry arguments in the System V
// AMD64 calling convention.
func isArgFamily(f int) bool {
	switch f {
	case famRDI, famRSI, famRDX, famRCX, famR8, famR9:
		return true
	}
	return false
}

// readsOnly are the instructions whose first operand is a source, not a
// destination.
func readsOnly(op x86asm.Op) bool {
	switch op {
	case x86asm.CMP, x86asm.TEST, x86asm.PUSH, x86asm.BT,
		x86asm.CALL, x86asm.JMP, x86asm.RET, x86asm.NOP:
		return true
	}
	return isJcc(op)
}

// writes reports whether in may change register family fam, explicitly
// (its destination operand, both operands of xchg/xadd) or implicitly.
// It errs on the side of yes: a missed write would credit a caller with
// testing a result it had already overwritten.
func writes(in *insn, fam int) bool {
	if !readsOnly(in.Op) && regFamily(in.Args[0]) == fam {
		return true
	}
	switch in.Op {
	case x86asm.XCHG, x86asm.XADD:
		return regFamily(in.Args[1]) == fam
	case x86asm.CALL, x86asm.SYSCALL:
		return true // caller-saved registers; rax gets the result
	}
	return writesImplicit(in, fam)
}

// writesImplicit covers instructions that write rax, rdx or rcx without
// naming them.
func writesImplicit(in *insn, fam int) bool {
	switch in.Op {
	case x86asm.MUL, x86asm.DIV, x86asm.IDIV, x86asm.RDTSC, x86asm.CPUID, x86asm.XGETBV, x86asm.RDTSCP:
		return fam == famRAX || fam == famRDX || (fam == famRCX && in.Op != x86asm.MUL && in.Op != x86asm.DIV && in.Op != x86asm.IDIV)
	case x86asm.IMUL:
		return in.Args[1] == nil && (fam == famRAX || fam == famRDX)
	case x86asm.CDQE, x86asm.CWDE, x86asm.CBW, x86asm.CMPXCHG,
		x86asm.LODSB, x86asm.LODSW, x86asm.LODSD, x86asm.LODSQ:
		return fam == famRAX
	case x86asm.CDQ, x86asm.CQO, x86asm.CWD:
		return fam == famRDX
	case x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ,
		x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ:
		return fam == famRCX || fam == famRSI || fam == famRDI
	}
	return false
}
