package candidates

import "sort"

// CallerEvidence counts what the call sites of one function do with its
// result, decoded from the few instructions after each call. A site is
// counted in exactly one of the outcome fields (Zero ... Ignored).
type CallerEvidence struct {
	Sites int // direct call sites (call rel32, or call [GOT] for imports)
	// ViaPLT is how many of Sites reach the function through this
	// file's own PLT or GOT (a library calling its exported function).
	ViaPLT int
	// External is how many of Sites are in other files
	// (Options.ExternalCallers).
	External int

	// Checked outcomes: the result is tested and a conditional jump
	// follows.
	Zero  int           // zero / nonzero (test r,r or cmp r,0; je/jne)
	Sign  int           // negative / not (js/jns, jl/jge vs 0, ja vs -4096)
	Equal map[int64]int // equal / not to a nonzero constant (cmp r,c; je/jne)
	Order int           // ordered compare with another constant
	Var   int           // compared with a register or memory, not a constant
	Mask  int           // some bits tested (test r,imm)
	// Weak classifies, the same way, the sites that test the result
	// and then use setcc or cmovcc rather than a branch; nil when none.
	// They are counted in Sites but in none of the fields above.
	Weak *CallerEvidence
	Wide int // of the checked ones, tested as a 64-bit register
	Tail int // tail jumps to the function (jmp f), not in Sites
	Prop int // result returned at once to the caller's caller
	Gone int // result overwritten, passed on or stored unchecked
}

// Checked is the number of sites that branch on the result.
func (e *CallerEvidence) Checked() int {
	if e == nil {
		return 0
	}
	n := e.Zero + e.Sign + e.Order + e.Var + e.Mask
	for _, c := range e.Equal {
		n += c
	}
	return n
}

// EqualTotal is the number of sites comparing with a nonzero constant.
func (e *CallerEvidence) EqualTotal() int {
	n := 0
	for _, c := range e.Equal {
		n += c
	}
	return n
}

// Add merges o into e, as when the callers in several files of one
// program are pooled. o's sites count as External in e only when
// external is true.
func (e *CallerEvidence) Add(o *CallerEvidence, external bool) {
	if o == nil {
		return
	}
	e.Sites += o.Sites
	e.ViaPLT += o.ViaPLT
	e.External += o.External
	if external {
		e.External += o.Sites - o.External
	}
	e.Zero += o.Zero
	e.Sign += o.Sign
	e.Order += o.Order
	e.Var += o.Var
	e.Mask += o.Mask
	if o.Weak != nil {
		if e.Weak == nil {
			e.Weak = &CallerEvidence{}
		}
		e.Weak.Add(o.Weak, external)
	}
	e.Wide += o.Wide
	e.Tail += o.Tail
	e.Prop += o.Prop
	e.Gone += o.Gone
	for c, n := range o.Equal {
		e.addEqual(c, n)
	}
}

func (e *CallerEvidence) addEqual(c int64, n int) {
	if e.Equal == nil {
		e.Equal = make(map[int64]int)
	}
	e.Equal[c] += n
}

// WeakChecked is the number of sites that test the result for a setcc
// or cmovcc.
func (e *CallerEvidence) WeakChecked() int {
	if e == nil {
		return 0
	}
	return e.Weak.Checked()
}

// record counts one call site's outcome.
func (e *CallerEvidence) record(u use) {
	if u.weak {
		if e.Weak == nil {
			e.Weak = &CallerEvidence{}
		}
		u.weak = false
		e.Weak.record(u)
		e.Sites++
		return
	}
	e.Sites++
	switch u.kind {
	case useZero:
		e.Zero++
	case useSign:
		e.Sign++
	case useEqual:
		e.addEqual(u.imm, 1)
	case useOrder:
		e.Order++
	case useVar:
		e.Var++
	case useMask:
		e.Mask++
	case useProp:
		e.Prop++
	default:
		e.Gone++
	}
	if u.wide && u.kind.checked() {
		e.Wide++
	}
}

// MergeImports pools the Imports of several reports (the main program
// and the libraries it loads), for Options.ExternalCallers.
func MergeImports(reports ...*Report) map[string]*CallerEvidence {
	out := make(map[string]*CallerEvidence)
	for _, r := range reports {
		if r == nil {
			continue
		}
		for name, ev := range r.Imports {
			dst := out[name]
			if dst == nil {
				dst = &CallerEvidence{}
				out[name] = dst
			}
			dst.Add(ev, false)
		}
	}
	return out
}

// ReturnSummary counts the values a function's return paths leave in
// eax/rax. A return path is one way of reaching a ret: the block that
// ends in it, or each block that jumps to a shared epilogue.
type ReturnSummary struct {
	Rets     int // ret instructions
	Paths    int // return paths traced
	Const    []ConstCount
	Computed int // set by a non-constant instruction (load, arithmetic)
	Arith    int // of Computed, by arithmetic (a count, a difference)
	Callee   int // the result of a call, or a tail jump: passed through
	Unset    int // nothing writes eax between the entry and the ret
	Unknown  int // the trace gave up (indirect jump, limit reached)
	// ViaCallee are the constants returned by the functions of this
	// file whose result the Callee paths pass on (a wrapper returning
	// its helper's value), a few levels deep.
	ViaCallee []ConstCount
}

// ConstCount is a constant and the number of return paths returning it.
type ConstCount struct {
	Value int64
	Paths int
}

// count returns the number of paths returning v (see constants).
func (s *ReturnSummary) count(v int64) int { return countOf(s.constants(), v) }

func countOf(cs []ConstCount, v int64) int {
	for _, c := range cs {
		if c.Value == v {
			return c.Paths
		}
	}
	return 0
}

func (s *ReturnSummary) addConst(v int64) { s.Const = addCount(s.Const, v, 1) }

func addCount(cs []ConstCount, v int64, n int) []ConstCount {
	for i := range cs {
		if cs[i].Value == v {
			cs[i].Paths += n
			return cs
		}
	}
	return append(cs, ConstCount{Value: v, Paths: n})
}

// constants are the constants inference uses: the function's own, or,
// for a wrapper that returns none itself, its callees'. Its own win
// because they are what it returns; a callee's -1 may be translated
// (malloc's helpers return -1 where malloc returns NULL).
func (s *ReturnSummary) constants() []ConstCount {
	if len(s.Const) > 0 {
		return s.Const
	}
	return s.ViaCallee
}

// constPaths is the number of paths returning any constant, directly
// or through a callee.
func (s *ReturnSummary) constPaths() int {
	n := 0
	for _, c := range s.constants() {
		n += c.Paths
	}
	return n
}

// sortCounts orders constants most frequent first, then by value, so
// that reports are deterministic.
func sortCounts(cs []ConstCount) {
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.Paths != b.Paths {
			return a.Paths > b.Paths
		}
		return a.Value < b.Value
	})
}
