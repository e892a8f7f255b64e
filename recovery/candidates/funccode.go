package candidates

import "golang.org/x/arch/x86/x86asm"

// funcCode is one decoded function.
type funcCode struct {
	start, end uint64
	insns      []insn
	// jumpsTo maps the address of every direct jump target inside the
	// function to the indices of the jumps reaching it: the block
	// boundaries that the backward trace of a return value must cross.
	jumpsTo map[uint64][]int32
	// mark, marked and gen record which instructions the current
	// return trace has visited, and tracking which locations (a bit per
	// register family, bit 16 for a stack slot), so that loops and
	// diamonds are walked once.
	mark   []uint32
	marked []uint32
	gen    uint32
	// callee returns the index of the function a call or jump
	// targets, or -1.
	callee func(in *insn) int
	// callees collects the functions whose result the traced return
	// paths pass through (bounded by maxCallees).
	callees []int32
}

// Bounds on tracing one ret back to the writes of eax: how many blocks
// deep (a shared epilogue reached by jumps from blocks that themselves
// are jump targets), how many instructions in all, and how many paths.
// Compilers set the return value within a block or two of the ret; the
// bounds stop pathological control flow from costing more.
const (
	maxTraceDepth = 4
	maxTraceInsns = 512
	maxTracePaths = 64
)

// index records the jump targets of fn.insns.
func (fn *funcCode) index() {
	clear(fn.jumpsTo)
	for i := range fn.insns {
		in := &fn.insns[i]
		if in.Op != x86asm.JMP && !isJcc(in.Op) {
			continue
		}
		if t, ok := relTarget(in); ok && t >= fn.start && t < fn.end {
			fn.jumpsTo[t] = append(fn.jumpsTo[t], int32(i))
		}
	}
	if cap(fn.mark) < len(fn.insns) {
		fn.mark = make([]uint32, len(fn.insns))
		fn.marked = make([]uint32, len(fn.insns))
		fn.gen = 0
	}
	fn.mark, fn.marked = fn.mark[:len(fn.insns)], fn.marked[:len(fn.insns)]
	fn.callees = fn.callees[:0]
}
