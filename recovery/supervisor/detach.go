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
	case p.isTrampoline(pc) && len(t.frames) > 0:
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
	s.cleanFast(p)
	if p.scratch != 0 && !p.sharedMM {
		s.unmapScratch(p)
	}
	for _, bp := range p.breakpoints {
		s.unplant(p, bp)
	}
	if p.tracker != nil {
		p.tracker.Close()
		p.tracker = nil
	}
	p.dropCkpts()
}

// unmapScratch removes the injected page. The munmap cannot run from the
// page it removes, so it runs from the thread's own code, briefly patched
// (every thread is held), as the page's own creation did.
func (s *Supervisor) unmapScratch(p *process) {
	th := anyThread(p)
	if th == nil || s.inScratch(p) {
		return
	}
	at := pcOf(th)
	orig, err := p.readMem(at, len(arch.SyscallInsn))
	if err != nil || p.writeMem(at, arch.SyscallInsn) != nil {
		s.logf("detach from %d: the code page stays mapped", p.pid)
		return
	}
	_, err = s.injectAt(th, at, unix.SYS_MUNMAP, p.scratch, scratchSize)
	p.writeMem(at, orig)
	if err == nil {
		p.scratch = 0
	} else {
		s.logf("detach from %d: unmap code page: %v", p.pid, err)
	}
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
