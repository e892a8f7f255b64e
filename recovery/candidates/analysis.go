package candidates

import (
	"sort"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// analysis is the state of one Analyze call.
type analysis struct {
	sym   *elfsym.File
	img   *image
	opts  Options
	funcs []elfsym.Func
	// Per function, by index in funcs.
	ev     []*CallerEvidence // what its callers do; nil: no callers
	rets   []ReturnSummary
	reason []Reason // set when ruled out before inference
	// callees are, per function, the functions whose result its
	// return paths pass on (nil for most).
	callees [][]int32
	// byName finds named functions, for calls through the file's own
	// PLT and for ExternalCallers.
	byName  map[string]int
	imports map[string]*CallerEvidence
	stats   Stats
	note    string // why the result may be incomplete
}

func newAnalysis(sym *elfsym.File, img *image, opts Options) *analysis {
	funcs := sym.Funcs()
	a := &analysis{
		sym: sym, img: img, opts: opts, funcs: funcs,
		ev:      make([]*CallerEvidence, len(funcs)),
		rets:    make([]ReturnSummary, len(funcs)),
		reason:  make([]Reason, len(funcs)),
		callees: make([][]int32, len(funcs)),
		byName:  make(map[string]int),
		imports: make(map[string]*CallerEvidence),
	}
	for i, f := range funcs {
		if f.Name != "" {
			a.byName[f.Name] = i
		}
	}
	a.stats.PLTStubs = img.nstubs
	if err := sym.Incomplete(); err != nil {
		a.note = err.Error()
	}
	return a
}

// funcIndex returns the index of the function starting at addr, or -1.
func (a *analysis) funcIndex(addr uint64) int {
	i := sort.Search(len(a.funcs), func(i int) bool { return a.funcs[i].Addr >= addr })
	if i < len(a.funcs) && a.funcs[i].Addr == addr {
		return i
	}
	return -1
}

// run decodes every function, recording its return values and, for each
// call it makes, what it does with the result.
func (a *analysis) run(deadline time.Time) {
	fn := &funcCode{jumpsTo: make(map[uint64][]int32), callee: a.target}
	for i := range a.funcs {
		if i%64 == 0 && time.Now().After(deadline) {
			a.stopAt(i)
			break
		}
		code, reason := a.extent(i)
		if reason != "" {
			a.reason[i] = reason
			continue
		}
		a.scan(i, code, fn)
		if a.reason[i] == "" && uint64(len(code)) < a.opts.MinSize {
			a.reason[i] = ReasonTooShort // decoded all the same: its calls count
		}
	}
	a.addExternal()
	a.inheritReturns()
}

// stopAt marks the functions from i on as not examined.
func (a *analysis) stopAt(i int) {
	for j := i; j < len(a.funcs); j++ {
		a.reason[j] = ReasonNotExamined
	}
	a.note = joinNote(a.note, "time limit reached after "+itoa(i)+" functions")
}

// extent returns the bytes of function i, or why it is not decoded: it
// runs from its start to its size, the next function's start or the end
// of its section, whichever comes first.
func (a *analysis) extent(i int) ([]byte, Reason) {
	f := a.funcs[i]
	s := a.img.section(f.Addr)
	switch {
	case s == nil:
		return nil, ReasonUnreadable
	case s.plt:
		return nil, ReasonPLT
	}
	end := s.end()
	hasNext := i+1 < len(a.funcs) && a.funcs[i+1].Addr < end
	if hasNext {
		end = a.funcs[i+1].Addr
	}
	if fe := f.Addr + f.Size; f.Size > 0 && fe > f.Addr {
		if fe > end && hasNext {
			a.stats.Overlaps++ // the next start wins: it was declared too
		}
		end = min(end, fe)
	}
	return s.data[f.Addr-s.addr : end-s.addr], ""
}

// scan decodes function i and records its calls and returns. A panic in
// the decoder (x86asm on bytes it did not expect) costs only this
// function.
func (a *analysis) scan(i int, code []byte, fn *funcCode) {
	defer func() {
		if p := recover(); p != nil {
			a.reason[i] = ReasonUndecodable
		}
	}()
	f := a.funcs[i]
	var bad int
	fn.insns, bad = decodeRange(code, f.Addr, fn.insns)
	fn.start, fn.end = f.Addr, f.Addr+uint64(len(code))
	a.stats.Instructions += len(fn.insns)
	a.stats.BadBytes += bad
	if bad*4 > len(code) {
		a.reason[i] = ReasonUndecodable
		return
	}
	fn.index()
	for k := range fn.insns {
		switch in := &fn.insns[k]; in.Op {
		case x86asm.CALL:
			a.call(fn, k)
		case x86asm.RET:
			fn.traceReturn(k, &a.rets[i])
		case x86asm.JMP:
			a.jump(fn, k, i)
		}
	}
	sortCounts(a.rets[i].Const)
	if len(fn.callees) > 0 {
		a.callees[i] = append([]int32(nil), fn.callees...)
	}
}

// target returns the index of the function a direct call or jump lands
// on, or -1.
func (a *analysis) target(in *insn) int {
	t, ok := relTarget(in)
	if !ok {
		return -1
	}
	return a.funcIndex(t)
}

// call records the call site fn.insns[k].
func (a *analysis) call(fn *funcCode, k int) {
	in := &fn.insns[k]
	if t, ok := relTarget(in); ok {
		a.stats.Calls++
		a.callTo(t, fn, k)
		return
	}
	// call [rip+GOT]: -fno-plt, or a binary linked with -z now and
	// relaxed calls.
	if slot, ok := ripSlot(in); ok {
		if name, ok := a.img.slots[slot]; ok {
			a.stats.CallsToImports++
			a.importCall(name, classifyUse(fn, k))
		}
	}
}

func (a *analysis) callTo(t uint64, fn *funcCode, k int) {
	if name, ok := a.img.stubs[t]; ok {
		a.stats.CallsToImports++
		a.importCall(name, classifyUse(fn, k))
		return
	}
	if s := a.img.section(t); s != nil && !s.plt {
		if j := a.funcIndex(t); j >= 0 {
			a.stats.CallsToStarts++
			a.evidence(j).record(classifyUse(fn, k))
			return
		}
	}
	a.stats.CallsElsewhere++
}

// importCall records a call through the PLT or GOT. When this file
// defines the name (a library calling its own exported function, which
// goes through its PLT so that it can be interposed), the call is also
// evidence for that function here.
func (a *analysis) importCall(name string, u use) {
	ev := a.imports[name]
	if ev == nil {
		ev = &CallerEvidence{}
		a.imports[name] = ev
	}
	ev.record(u)
	if j, ok := a.byName[name]; ok {
		e := a.evidence(j)
		e.record(u)
		e.ViaPLT++
	}
}

// jump records a jump out of the function: a tail call, whose return
// path hands the callee's value back.
func (a *analysis) jump(fn *funcCode, k, self int) {
	t, ok := relTarget(&fn.insns[k])
	if !ok || (t >= fn.start && t < fn.end) {
		return
	}
	j := a.funcIndex(t)
	if j < 0 || j == self {
		return
	}
	a.evidence(j).Tail++
	a.rets[self].Paths++
	a.rets[self].Callee++
	if len(fn.callees) < maxCallees {
		fn.callees = append(fn.callees, int32(j))
	}
}

func (a *analysis) evidence(j int) *CallerEvidence {
	if a.ev[j] == nil {
		a.ev[j] = &CallerEvidence{}
	}
	return a.ev[j]
}

// addExternal credits the callers in other files (Options.ExternalCallers).
func (a *analysis) addExternal() {
	for name, ev := range a.opts.ExternalCallers {
		if j, ok := a.byName[name]; ok && ev != nil {
			a.evidence(j).Add(ev, true)
		}
	}
}
