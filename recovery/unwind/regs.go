package unwind

import "golang.org/x/sys/unix"

// Reg is a register by its DWARF number on x86-64 (the System V ABI's
// numbering, which CFI uses): 0–15 the general registers in an order of
// their own, 16 the return address column (rip).
type Reg int

const (
	RAX Reg = iota
	RDX
	RCX
	RBX
	RSI
	RDI
	RBP
	RSP
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
	RIP

	// nregs is the number of columns tracked; rules for the others
	// (vector registers) are parsed and dropped, as nothing unwound
	// depends on them.
	nregs = 17
)

var regNames = [nregs]string{"rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip"}

func (r Reg) String() string {
	if r >= 0 && r < nregs {
		return regNames[r]
	}
	return "r?"
}

// callerSaved reports whether a call may clobber the register (System V
// ABI): its value in a caller is unknown unless CFI says where it was
// saved. rip is listed because its caller value is the return address,
// never the callee's rip.
func callerSaved(r Reg) bool {
	switch r {
	case RBX, RBP, RSP, R12, R13, R14, R15:
		return false
	}
	return true
}

// Regs are the registers of a thread. The unwinder needs Rip, Rsp and
// the callee-saved Rbp, Rbx and R12–R15; the caller-saved ones are used
// only where CFI computes a CFA from them (stack-realigning prologues use
// r10), which can only happen in the innermost frame or one interrupted
// by a signal. Fill them all when they are known: FromPtrace does.
type Regs struct {
	Rip, Rsp, Rbp, Rbx    uint64
	R12, R13, R14, R15    uint64
	Rax, Rcx, Rdx, Rsi    uint64
	Rdi, R8, R9, R10, R11 uint64
}

// FromPtrace converts the registers PTRACE_GETREGS returns.
func FromPtrace(r *unix.PtraceRegs) Regs {
	return Regs{
		Rip: r.Rip, Rsp: r.Rsp, Rbp: r.Rbp, Rbx: r.Rbx,
		R12: r.R12, R13: r.R13, R14: r.R14, R15: r.R15,
		Rax: r.Rax, Rcx: r.Rcx, Rdx: r.Rdx, Rsi: r.Rsi,
		Rdi: r.Rdi, R8: r.R8, R9: r.R9, R10: r.R10, R11: r.R11,
	}
}

// regset is the unwinder's register state: values by DWARF number and
// which of them are known.
type regset struct {
	v     [nregs]uint64
	known uint32
}

func (s *regset) get(r Reg) (uint64, bool) {
	if r < 0 || r >= nregs || s.known&(1<<r) == 0 {
		return 0, false
	}
	return s.v[r], true
}

func (s *regset) set(r Reg, v uint64) {
	s.v[r] = v
	s.known |= 1 << r
}

// allKnown is the mask of every tracked register.
const allKnown = 1<<nregs - 1

func fromRegs(r Regs) regset {
	s := regset{known: allKnown}
	s.v = [nregs]uint64{r.Rax, r.Rdx, r.Rcx, r.Rbx, r.Rsi, r.Rdi, r.Rbp, r.Rsp,
		r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15, r.Rip}
	return s
}

// regs converts back; unknown registers read as 0.
func (s *regset) regs() Regs {
	var v [nregs]uint64
	for i := range v {
		v[i], _ = s.get(Reg(i))
	}
	return Regs{
		Rax: v[RAX], Rdx: v[RDX], Rcx: v[RCX], Rbx: v[RBX], Rsi: v[RSI], Rdi: v[RDI],
		Rbp: v[RBP], Rsp: v[RSP], R8: v[R8], R9: v[R9], R10: v[R10], R11: v[R11],
		R12: v[R12], R13: v[R13], R14: v[R14], R15: v[R15], Rip: v[RIP],
	}
}
