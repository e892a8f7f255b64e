package supervisor

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
	"github.com/assure-rt/assure/recovery/unwind"
)

// Probes and injections serve `assure discover`: a probe counts the calls
// of a function (a rescue-point candidate) and which other probed
// functions were on the stack at each call, so that discovery learns what
// a request reaches and how the candidates nest; an injection makes a
// thread fault inside an armed rescue point, to test whether the program
// survives its error return. Both are breakpoints of their own kinds,
// resolved like rescue points in every process and at every exec and
// dlopen; neither changes anything the program sees but time.

// Probe is a function whose calls are counted.
type Probe struct {
	Binary  string // as a manifest names it
	Address uint64 // the function's ELF virtual address
	// MaxHits removes the probe's breakpoint from a process once this
	// many calls were counted (0: DefaultProbeHits): what is learned
	// comes from the first calls, and later ones then cost nothing.
	MaxHits int
}

// DefaultProbeHits is a probe's MaxHits when none is given.
const DefaultProbeHits = 200

// maxProbeDepth bounds the stack walked at a probe's hit.
const maxProbeDepth = 64

// ProbeStat is what a probe learned.
type ProbeStat struct {
	Hits int
	// Outer counts, by probe index, the hits during which that probe's
	// function was on the stack: it calls this one, directly or not.
	Outer map[int]int
	// Depth is the sum over the hits of the frames on the stack (the
	// walk stops at maxProbeDepth, or where the unwind tables end).
	Depth int
}

// hook is a probe's or an injection's state, shared by all processes.
type hook struct {
	idx     int
	maxHits int
	size    uint64 // the probed function's
	stat    ProbeStat
	// inject is set for an injection: the next thread that reaches the
	// address faults there, once.
	inject bool
	fired  bool
}

// hooks are the supervisor's probes and injections, guarded by mu:
// Stats and Inject are called from other goroutines than the tracer's.
type hooks struct {
	mu      sync.Mutex
	probes  []*rescuePoint
	injects []*rescuePoint
	pending []*rescuePoint  // injections not yet planted (tracer thread)
	resets  []chan struct{} // ResetProbes calls waiting for the tracer
	arms    []armRequest    // Arm and Disarm calls waiting (arm.go)
	// asked is set once something was appended above: the tracer looks
	// under mu only then, not at every event.
	asked atomic.Bool
	cache *unwind.Cache
}

func (s *Supervisor) prepareProbes() {
	s.hooks.cache = unwind.NewCache()
	for i, pr := range s.cfg.Probes {
		max := pr.MaxHits
		if max <= 0 {
			max = DefaultProbeHits
		}
		s.hooks.probes = append(s.hooks.probes, &rescuePoint{
			RescuePoint: manifest.RescuePoint{Binary: pr.Binary, Address: pr.Address, HasAddress: true},
			hook:        &hook{idx: i, maxHits: max, stat: ProbeStat{Outer: map[int]int{}}},
		})
	}
}

// ProbeStats returns what each probe of Config.Probes learned so far, in
// their order. Safe to call from any goroutine.
func (s *Supervisor) ProbeStats() []ProbeStat {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	out := make([]ProbeStat, len(s.hooks.probes))
	for i, rp := range s.hooks.probes {
		st := rp.hook.stat
		st.Outer = make(map[int]int, len(rp.hook.stat.Outer))
		for k, v := range rp.hook.stat.Outer {
			st.Outer[k] = v
		}
		out[i] = st
	}
	return out
}

// ResetProbes zeroes every probe's counts and puts back the breakpoints
// of those that reached their limit: what is counted from then on is what
// comes after (a workload, not the program's start-up). Safe to call from
// any goroutine; it returns once the tracer has done it, or false when
// the supervisor's loop has ended.
func (s *Supervisor) ResetProbes() bool {
	done := make(chan struct{})
	s.hooks.mu.Lock()
	s.hooks.resets = append(s.hooks.resets, done)
	s.hooks.mu.Unlock()
	s.hooks.asked.Store(true)
	s.wake()
	select {
	case <-done:
		return true
	case <-s.ended:
		return false
	}
}

// takeResets serves ResetProbes (on the tracer thread).
func (s *Supervisor) takeResets() {
	s.hooks.mu.Lock()
	resets := s.hooks.resets
	s.hooks.resets = nil
	if len(resets) > 0 {
		for _, rp := range s.hooks.probes {
			rp.hook.stat = ProbeStat{Outer: map[int]int{}}
		}
	}
	s.hooks.mu.Unlock()
	if len(resets) == 0 {
		return
	}
	for _, p := range s.procs {
		for _, rp := range s.hooks.probes {
			if addr, ok := p.resolved[rp]; ok && addr != 0 && p.breakpoints[addr] == nil {
				delete(p.resolved, rp) // its breakpoint went at its limit
				delete(p.resolvedIn, rp)
			}
		}
		if err := s.resolveHooks(p, s.hooks.probes); err != nil {
			s.logf("process %d: %v", p.pid, err)
		}
	}
	for _, done := range resets {
		close(done)
	}
}

// Injection is a place inside an armed rescue point where a thread is
// made to fault.
type Injection struct {
	Binary  string // as a manifest names it
	Address uint64 // ELF virtual address of an instruction
}

// Inject arms an injection: the next thread of any supervised process
// that reaches it faults there (SIGSEGV, as from a call through a null
// pointer), once. Safe to call from any goroutine; it returns once the
// tracer has taken the request, before any thread reached the place.
func (s *Supervisor) Inject(in Injection) {
	rp := &rescuePoint{RescuePoint: manifest.RescuePoint{Binary: in.Binary, Address: in.Address, HasAddress: true},
		hook: &hook{inject: true}}
	s.hooks.mu.Lock()
	s.hooks.injects = append(s.hooks.injects, rp)
	s.hooks.pending = append(s.hooks.pending, rp)
	s.hooks.mu.Unlock()
	s.hooks.asked.Store(true)
	s.wake()
}

// InjectionsFired reports how many armed injections made a thread fault.
func (s *Supervisor) InjectionsFired() int {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	n := 0
	for _, rp := range s.hooks.injects {
		if rp.hook.fired {
			n++
		}
	}
	return n
}

// takeHooks serves what other goroutines asked of the probes and
// injections (on the tracer thread).
func (s *Supervisor) takeHooks() {
	if !s.hooks.asked.Swap(false) {
		return
	}
	s.takeArms()
	s.takeResets()
	s.takeInjections()
}

// takeInjections plants the injections armed since the last look in
// every process.
func (s *Supervisor) takeInjections() {
	s.hooks.mu.Lock()
	pending := s.hooks.pending
	s.hooks.pending = nil
	s.hooks.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	for _, p := range s.procs {
		if err := s.resolveHooks(p, pending); err != nil {
			s.logf("process %d: %v", p.pid, err)
		}
	}
}

// allHooks is every probe and injection, for resolve.
func (s *Supervisor) allHooks() []*rescuePoint {
	s.hooks.mu.Lock()
	defer s.hooks.mu.Unlock()
	return append(append([]*rescuePoint(nil), s.hooks.probes...), s.hooks.injects...)
}

// resolveHooks plants the breakpoints of hooks in p that are not there
// yet. Unlike a rescue point's, an injection's address is inside a
// function, and a probe that cannot be resolved is only logged: neither
// is the program's business.
func (s *Supervisor) resolveHooks(p *process, hs []*rescuePoint) error {
	if p.preExec || len(hs) == 0 {
		return nil
	}
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return err
	}
	var errs []error
	for _, rp := range hs {
		if _, ok := p.resolved[rp]; ok || rp.hook.inject && rp.hook.fired {
			continue
		}
		mods := findModule(p.pid, maps, rp.Binary)
		if len(mods) == 0 {
			continue
		}
		f, err := p.modules.open(p.pid, mods[0])
		if err != nil {
			errs = append(errs, fmt.Errorf("probe %s: %w", rp, err))
			continue
		}
		if !f.IsExecAddr(rp.Address) {
			p.resolved[rp] = 0
			errs = append(errs, fmt.Errorf("probe %s: not in an executable segment", rp))
			continue
		}
		addr, err := runtimeAddr(f, mods, rp.Address)
		if err != nil {
			p.resolved[rp] = 0
			errs = append(errs, fmt.Errorf("probe %s: %w", rp, err))
			continue
		}
		if old := p.breakpoints[addr]; old != nil {
			// A rescue point or the loader's breakpoint is there already:
			// one breakpoint cannot be both.
			p.resolved[rp] = 0
			continue
		}
		kind := bpProbe
		if rp.hook.inject {
			kind = bpInject
		}
		if err := s.plant(p, addr, kind, rp); err != nil {
			errs = append(errs, fmt.Errorf("probe %s: %w", rp, err))
			continue
		}
		p.resolved[rp] = addr
		p.resolvedIn[rp] = moduleKey(mods[0])
		if fn, ok := f.FunctionAt(rp.Address); ok && fn.Addr == rp.Address {
			rp.hook.size = fn.Size
		}
	}
	p.unwindMods = nil // the maps changed, or may have
	return errors.Join(errs...)
}

// probeRanges lists where the probed functions lie in p, sorted.
func probeRanges(p *process) []probeRange {
	var out []probeRange
	for rp, addr := range p.resolved {
		if h := rp.hook; h != nil && !h.inject && addr != 0 && h.size > 0 {
			out = append(out, probeRange{lo: addr, hi: addr + h.size, idx: h.idx})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lo < out[j].lo })
	return out
}

// probeRange is where a probed function lies in a process.
type probeRange struct {
	lo, hi uint64
	idx    int
}

// onHook handles a probe's or an injection's breakpoint; regs has rip at
// the breakpoint.
func (s *Supervisor) onHook(t *thread, bp *breakpoint, regs *arch.Regs) {
	h := bp.rp.hook
	if h.inject {
		s.onInject(t, bp, regs)
		return
	}
	outer, depth := s.probeStack(t, regs)
	s.hooks.mu.Lock()
	h.stat.Hits++
	h.stat.Depth += depth
	for _, i := range outer {
		if i != h.idx {
			h.stat.Outer[i]++
		}
	}
	done := h.stat.Hits >= h.maxHits
	s.hooks.mu.Unlock()
	if done {
		if err := s.unplant(t.proc, bp); err == nil {
			ptrace.SetRegs(t.tid, regs) // rip at the original instruction
			s.resume(t)
			return
		}
	}
	s.stepOver(t, bp, regs)
	s.resume(t)
}

// probeStack walks t's stack from a probe's entry and returns the probed
// functions found on it (callers' frames) and its depth.
func (s *Supervisor) probeStack(t *thread, regs *arch.Regs) ([]int, int) {
	p := t.proc
	if p.unwindMods == nil {
		maps, err := procfs.Maps(p.pid)
		if err != nil {
			return nil, 0
		}
		p.unwindMods = unwind.LoadModules(maps, unwind.MapFilesOpener(p.pid), unwind.ProcessMem(p.pid), s.hooks.cache)
		p.probeRanges = probeRanges(p)
	}
	frames, _ := unwind.Unwind(unwind.FromPtrace(regs), unwind.ProcessMem(p.pid), p.unwindMods, unwind.Options{MaxDepth: maxProbeDepth})
	var outer []int
	for _, f := range frames[min(1, len(frames)):] {
		pc := f.PC
		if f.Return {
			pc-- // inside the call
		}
		// The ranges are functions, which do not overlap: the first
		// that starts above pc follows the only one that may hold it.
		i := sort.Search(len(p.probeRanges), func(i int) bool { return p.probeRanges[i].lo > pc })
		if i > 0 && pc < p.probeRanges[i-1].hi {
			outer = append(outer, p.probeRanges[i-1].idx)
		}
	}
	return outer, len(frames)
}

// onInject makes t fault at an injection's place, the first time one is
// reached: its rip goes to 0, so that the next instruction fetch faults
// (SEGV_MAPERR at 0), which the fault path handles like any other. The
// rescue point's rollback then restores every register.
func (s *Supervisor) onInject(t *thread, bp *breakpoint, regs *arch.Regs) {
	h := bp.rp.hook
	s.hooks.mu.Lock()
	fire := !h.fired
	h.fired = true
	s.hooks.mu.Unlock()
	s.unplant(t.proc, bp)
	if fire {
		s.logf("process %d: thread %d made to fault at %#x (injection at %s)", t.proc.pid, t.tid, bp.addr, bp.rp)
		regs.Rip = 0
	}
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		t.deliver = unix.SIGSEGV
	}
	s.resume(t)
}
