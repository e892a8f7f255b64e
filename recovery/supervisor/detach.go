package supervisor

import (
	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// rewindTrap undoes a trap at one of our breakpoints or the trampoline
// that was not handled yet, so that the thread redoes the instruction
// once the breakpoint is gone. It reports whether the trap was ours.
func (s *Supervisor) rewindTrap(t *thread) bool {
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return false
	}
	p := t.proc
	pc := arch.TrapPC(&regs)
	switch {
	case p.breakpoints[pc] != nil:
		regs.Rip = pc
	case p.scratch != 0 && pc == p.scratch+trampolineOffset && len(t.frames) > 0:
		regs.Rip = t.frames[len(t.frames)-1].ret
		t.frames = t.frames[:len(t.frames)-1]
	default:
		return false
	}
	return ptrace.SetRegs(t.tid, &regs) == nil
}

// cleanProcess removes what supervision put into p.
func (s *Supervisor) cleanProcess(p *process) {
	for _, t := range p.threads {
		for _, f := range t.frames {
			if w, err := p.readWord(f.slot); err == nil && w == p.scratch+trampolineOffset {
				p.writeWord(f.slot, f.ret)
			}
		}
		t.frames = nil
	}
	for _, bp := range p.breakpoints {
		s.unplant(p, bp)
	}
	if p.scratch != 0 && !p.sharedMM {
		if th := anyThread(p); th != nil && !s.inScratch(p) {
			if _, err := s.inject(th, unix.SYS_MUNMAP, p.scratch, scratchSize); err == nil {
				p.scratch = 0
			}
		}
	}
	if p.tracker != nil {
		p.tracker.Close()
		p.tracker = nil
	}
	p.ckpts = nil
}

// inScratch reports whether any thread of p executes in the injected page.
func (s *Supervisor) inScratch(p *process) bool {
	for _, t := range p.threads {
		var regs arch.Regs
		if ptrace.GetRegs(t.tid, &regs) == nil && regs.Rip >= p.scratch && regs.Rip < p.scratch+scratchSize {
			return true
		}
	}
	return false
}
