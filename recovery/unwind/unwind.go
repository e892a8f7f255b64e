package unwind

import (
	"errors"
	"fmt"
	"sync"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// DefaultMaxDepth is the depth limit when Options.MaxDepth is 0.
const DefaultMaxDepth = 256

// Options tune a walk.
type Options struct {
	MaxDepth int // frames at most; 0: DefaultMaxDepth
	// FramePointers lets the walk go on through code without unwind
	// information by following the rbp chain, which is only right for
	// code built with frame pointers: frames found so are Guessed.
	FramePointers bool
}

// Why a walk stopped before the outermost frame (wrapped, for errors.Is).
// A walk that reaches the outermost frame (whose CFI leaves the return
// address undefined, as _start's and clone's do) or a zero return
// address returns no error.
var (
	ErrNoModule = errors.New("address is in no loaded module")
	ErrNoCFI    = errors.New("no unwind information")
	ErrCFA      = errors.New("caller's CFA not above its callee's (corrupt stack or loop)")
	ErrDepth    = errors.New("stack deeper than the limit")
)

// Frame is one frame of a walk, innermost first.
type Frame struct {
	// PC is the frame's run-time code address: for the innermost frame
	// and one a signal interrupted, the instruction it was executing;
	// for the others the return address, just after the call (Return).
	PC     uint64
	Return bool
	CFA    uint64 // canonical frame address: the caller's rsp after return
	Module string // path of the file holding PC; "" if none
	Vaddr  uint64 // PC as an ELF address of Module
	// Function is the name of the function holding PC ("" if unknown,
	// as in a stripped file); FuncStart is its ELF address (0 if
	// unknown) and Offset is Vaddr-FuncStart.
	Function  string
	FuncStart uint64
	Offset    uint64
	// Signal marks the sigreturn trampoline (__restore_rt): the next
	// frame is the code the signal interrupted.
	Signal bool
	// Guessed marks a frame found by following the frame-pointer chain
	// (Options.FramePointers), or one found from such a frame.
	Guessed bool
	// Regs are the registers in this frame as far as they are known
	// (Known): all in the innermost frame and after a signal frame;
	// rip, rsp and the callee-saved ones the CFI recovered elsewhere.
	Regs  Regs
	known uint32
}

// Known reports whether r's value in Regs was recovered.
func (f *Frame) Known(r Reg) bool { return r >= 0 && r < nregs && f.known&(1<<r) != 0 }

// Unwind walks the stack of a stopped thread whose registers are regs,
// reading its memory with mem. It returns the frames found, innermost
// first, and, when it stopped before the outermost frame, why (a frame
// without unwind information, a read error, a CFA that did not increase,
// the depth limit, malformed or unsupported CFI). The frames are valid
// either way: the last one is where the walk stopped.
func Unwind(regs Regs, mem ReadMem, mods *Modules, opt Options) ([]Frame, error) {
	w := walkers.Get().(*walker)
	defer func() {
		w.mods, w.mem.rd = nil, nil // a pooled walker must not keep them alive
		walkers.Put(w)
	}()
	w.mods, w.opt = mods, opt
	w.mem.reset(mem)
	if w.opt.MaxDepth <= 0 {
		w.opt.MaxDepth = DefaultMaxDepth
	}
	return w.walk(fromRegs(regs))
}

// walkers are reused: a walker's interpreter rows and cached pages are a
// few KiB that every walk would otherwise allocate.
var walkers = sync.Pool{New: func() any { return new(walker) }}

type walker struct {
	mods *Modules
	opt  Options
	mem  memory
	in   interp
	// frames is reused from walk to walk.
	frames []Frame
	// Buffers for reads through ReadMem, here because a slice passed to
	// a function value escapes to the heap.
	gregs [len(gregOrder) * 8]byte
	code  [16]byte // holds the trampoline's code
}

// stepKind is how a frame's caller was found.
type stepKind int

const (
	stepCFI     stepKind = iota
	stepSignal           // through the ucontext of a signal frame
	stepGuessed          // through the frame-pointer chain
	stepEnd              // no caller: the outermost frame
)

// walk collects the frames in the walker's buffer; the caller gets an
// exact-size copy, so that a walk allocates once.
func (w *walker) walk(cur regset) ([]Frame, error) {
	frames, err := w.collect(cur)
	w.frames = frames[:0]
	return append([]Frame(nil), frames...), err
}

func (w *walker) collect(cur regset) ([]Frame, error) {
	frames := w.frames[:0]
	exact, guessed := true, false
	for {
		pc := cur.v[RIP]
		if pc == 0 {
			return frames, nil // some outermost frames return to 0
		}
		if len(frames) == w.opt.MaxDepth {
			return frames, fmt.Errorf("%w (%d frames)", ErrDepth, w.opt.MaxDepth)
		}
		f := Frame{PC: pc, Return: !exact, Guessed: guessed, Regs: cur.regs(), known: cur.known}
		next, kind, err := w.step(&f, &cur, exact)
		frames = append(frames, f)
		if err != nil {
			return frames, err
		}
		if kind == stepEnd {
			return frames, nil
		}
		// A signal handler may run on another stack (sigaltstack): the
		// interrupted frame's rsp can be anywhere.
		if kind != stepSignal && next.v[RSP] <= cur.v[RSP] {
			return frames, fmt.Errorf("%w: frame %d at 0x%x has CFA 0x%x, rsp 0x%x", ErrCFA, len(frames)-1, pc, next.v[RSP], cur.v[RSP])
		}
		exact = kind == stepSignal
		guessed = guessed || kind == stepGuessed
		cur = next
	}
}

// step finds the caller of the frame f, whose registers are cur.
func (w *walker) step(f *Frame, cur *regset, exact bool) (regset, stepKind, error) {
	pc := cur.v[RIP]
	// A return address is just past the call, which may be the last
	// instruction of its function (a call to a noreturn function): the
	// call itself, at pc-1, says which function and row apply.
	lookup := pc
	if !exact {
		lookup--
	}
	r, inModule := w.mods.find(lookup)
	var fde elfsym.FDE
	haveFDE := false
	if inModule {
		f.Module, f.Vaddr = r.mod.Path, pc-r.bias
		symbolize(f, r.mod, lookup-r.bias)
		fde, haveFDE = lookupFDE(r.mod, lookup-r.bias)
	}
	if w.atTrampoline(pc, exact, r, fde, haveFDE) {
		f.Signal = true
		return w.sigreturn(f, cur)
	}
	switch {
	case !inModule:
		return w.guess(f, cur, fmt.Errorf("%w: 0x%x", ErrNoModule, pc))
	case !haveFDE:
		return w.guess(f, cur, fmt.Errorf("%w for 0x%x (%s+0x%x)", ErrNoCFI, pc, r.mod.Path, f.Vaddr))
	}
	next, kind, err := w.cfiStep(f, cur, fde, lookup-r.bias)
	if err != nil {
		err = fmt.Errorf("frame at 0x%x (%s+0x%x): %w", pc, r.mod.Path, f.Vaddr, err)
	}
	return next, kind, err
}
