package supervisor

import (
	"fmt"
	"os"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
	"github.com/assure-rt/assure/recovery/unwind"
)

// Learning from a crash (manifest "heal"): a fault outside every rescue
// point arms the innermost function on the faulting thread's stack (walked
// with the unwind tables) that is a healing candidate, in every process,
// before the fault is delivered. The crash itself is not survived; the
// next occurrence is, in this supervisor's processes, and everywhere its
// owner keeps what was learned (assure run --learn FILE).

// learned is a rescue point a crash taught, and its event.
type learned struct {
	rp manifest.RescuePoint
	e  events.Event
	// frames is the faulting thread's stack, whose frame at is the
	// candidate's (survive returns from it).
	frames []unwind.Frame
	at     int
	// armed: the candidate is a rescue point already (another process
	// or thread taught it a moment ago, and this call began before it
	// was armed): nothing to arm or report, but a first fault to survive.
	armed bool
	// ending: the fault ends the faulting process (its signal goes on to
	// the default action): nothing to arm there.
	ending bool
}

// learn finds the candidate of t's stack, if there is one; e is the crash
// event, with the stack and the signal.
func (s *Supervisor) learn(t *thread, e events.Event) *learned {
	heal := s.cfg.Manifest.Heal
	p := t.proc
	if heal == nil || e.SenderPid != 0 && e.SenderPid != p.nsPid && e.SenderPid != p.pid {
		return nil // no healing, or a signal another process sent
	}
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return nil
	}
	frames := s.unwindFrames(t, maps)
	for i, f := range frames {
		pc := f.PC
		if f.Return {
			pc--
		}
		rp, vaddr, ok := s.candidateAt(p, maps, heal, pc)
		if !ok {
			continue
		}
		armed := false
		if r := s.findRP(rp); r != nil && !r.disarmed {
			armed = true // the fault was outside its window
		}
		return &learned{rp: rp, frames: frames, at: i, armed: armed, e: events.Event{Type: events.Learned, Pid: p.pid, Tid: t.tid, Signal: e.Signal,
			SignalCode: e.SignalCode, FaultAddress: e.FaultAddress, Stack: e.Stack, RescuePoint: rpEventOf(rp, vaddr)}}
	}
	return nil
}

// armLearned arms what a crash taught in every process (and later ones).
// The processes that end with the crash do not matter: the rescue point
// is the supervisor's from now on, and its owner's (OnLearn).
func (s *Supervisor) armLearned(l *learned) {
	if l == nil || l.armed {
		return
	}
	if err := s.armManifest(&manifest.Manifest{RescuePoints: []manifest.RescuePoint{l.rp}}, l.e.Pid, l.ending); err != nil {
		l.e.Message = "armed; in some processes not: " + err.Error()
	}
	if s.cfg.OnLearn != nil {
		s.cfg.OnLearn(l.rp)
	}
	s.cfg.Events.Emit(l.e)
}

func rpEventOf(rp manifest.RescuePoint, vaddr uint64) *events.RescuePoint {
	return &events.RescuePoint{Binary: rp.Binary, Function: rp.Function, Address: fmt.Sprintf("%#x", vaddr)}
}

// unwindFrames walks t's stack with the unwind tables.
func (s *Supervisor) unwindFrames(t *thread, maps []procfs.Mapping) []unwind.Frame {
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return nil
	}
	mem := unwind.ProcessMem(t.proc.pid)
	mods := unwind.LoadModules(maps, unwind.MapFilesOpener(t.proc.pid), mem, s.hooks.cache)
	frames, _ := unwind.Unwind(unwind.FromPtrace(&regs), mem, mods, unwind.Options{MaxDepth: maxFrames})
	return frames
}

// candidateAt returns the healing candidate whose function holds pc in p.
// It returns the function's ELF address too.
func (s *Supervisor) candidateAt(p *process, maps []procfs.Mapping, heal *manifest.Heal, pc uint64) (manifest.RescuePoint, uint64, bool) {
	m, ok := covering(maps, pc)
	if !ok || !m.Executable() || m.Inode == 0 {
		return manifest.RescuePoint{}, 0, false
	}
	f, err := p.modules.open(p.pid, m)
	if err != nil {
		return manifest.RescuePoint{}, 0, false
	}
	vaddr, ok := f.VaddrOfOffset(pc - m.Start + m.Offset)
	if !ok {
		return manifest.RescuePoint{}, 0, false
	}
	fn, ok := f.FunctionContaining(vaddr)
	if !ok {
		return manifest.RescuePoint{}, 0, false
	}
	if heal.Candidates == nil {
		rp, ok := s.derivedCandidate(p, m, fn.Addr)
		return rp, fn.Addr, ok
	}
	for _, c := range heal.Candidates {
		if !sameModule(findModule(p.pid, maps, c.Binary), m) {
			continue
		}
		at := c.Address
		if !c.HasAddress {
			sym, err := f.Lookup(c.Function)
			if err != nil {
				continue
			}
			at = sym.Addr
		}
		if at == fn.Addr {
			return c, fn.Addr, true
		}
	}
	return manifest.RescuePoint{}, 0, false
}

func sameModule(mods []procfs.Mapping, m procfs.Mapping) bool {
	for _, o := range mods {
		if moduleKey(o) == moduleKey(m) {
			return true
		}
	}
	return false
}

// derivedCandidate finds the function at vaddr among the candidates of
// static analysis (recovery/candidates) of the file mapped at m, analysed
// once per file.
func (s *Supervisor) derivedCandidate(p *process, m procfs.Mapping, vaddr uint64) (manifest.RescuePoint, bool) {
	key := moduleKey(m)
	if s.derived == nil {
		s.derived = map[string]map[uint64]candidates.Candidate{}
	}
	byAddr, ok := s.derived[key]
	if !ok {
		byAddr = map[uint64]candidates.Candidate{}
		if fh, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", p.pid, m.Start, m.End)); err == nil {
			if fi, err := fh.Stat(); err == nil {
				if sym, err := p.modules.open(p.pid, m); err == nil {
					if rep, err := candidates.Analyze(sym, fh, fi.Size(), candidates.Options{}); err == nil {
						for _, c := range rep.Candidates {
							byAddr[c.Address] = c
						}
					}
				}
			}
			fh.Close()
		}
		s.derived[key] = byAddr
	}
	c, ok := byAddr[vaddr]
	if !ok {
		return manifest.RescuePoint{}, false
	}
	rp := manifest.RescuePoint{Binary: m.Path, Function: c.Function, Return: c.Return, Scope: manifest.ScopeProcess}
	if c.Function == "" {
		rp.Address, rp.HasAddress = c.Address, true
	}
	return rp, true
}
