package supervisor

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
	"github.com/assure-rt/assure/recovery/unwind"
)

// maxFrames bounds a crash stack.
const maxFrames = 32

// crash reports a fault that is delivered to the program.
// It returns what the crash taught (manifest "heal"), to be armed once
// the fault is on its way (armLearned).
func (s *Supervisor) crash(t *thread, sig unix.Signal, si ptrace.Siginfo, why string) *learned {
	l, _ := s.crashOrSurvive(t, sig, si, why, false)
	return l
}

// crashOrSurvive is crash, except that with survive (a fault the kernel
// would end the process for) a candidate on the stack may make the thread
// survive the fault instead (manifest heal.firstFault "return"): then
// there is no crash event but a recovered one, and it reports true.
func (s *Supervisor) crashOrSurvive(t *thread, sig unix.Signal, si ptrace.Siginfo, why string, survive bool) (*learned, bool) {
	var rp *rescuePoint
	if f := s.activeFrame(t); f != nil {
		rp = f.rp
	} else if frp, _, ok := s.fastFrameOf(t); ok {
		rp = frp
	}
	s.metrics.Crashed(rp.site())
	e := events.Event{Type: events.Crash, Pid: t.proc.pid, Tid: t.tid, Message: why}
	describeSignal(&e, sig, si)
	if s.cfg.Events.Wants(events.Crash) {
		// Symbolizing reads the stack and the maps: not for an event
		// the rate limit drops anyway.
		e.Stack = s.stack(t)
	}
	var l *learned
	if rp == nil {
		l = s.learn(t, e)
	}
	if survive && l != nil {
		if why, ok := s.survive(t, l, sig, si); ok {
			return l, true
		} else if why != "" {
			e.Message += "; not survived without a rollback: " + why
			l.e.Message = "first fault not survived: " + why
		}
	}
	s.cfg.Events.Emit(e)
	return l, false
}

// stack symbolizes the faulting thread's stack, walked with the unwind
// tables (recovery/unwind: .eh_frame CFI), which give every frame and no
// false one. Where they cannot (code without unwind information, a stack
// the program smashed) it falls back to scanning the stack for return
// addresses (words that point just past a call instruction), as crash
// reporters do.
func (s *Supervisor) stack(t *thread) []string {
	p := t.proc
	var regs arch.Regs
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return nil
	}
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return nil
	}
	mem := unwind.ProcessMem(p.pid)
	mods := unwind.LoadModules(maps, unwind.MapFilesOpener(p.pid), mem, s.hooks.cache)
	frames, err := unwind.Unwind(unwind.FromPtrace(&regs), mem, mods, unwind.Options{MaxDepth: maxFrames})
	if err != nil && len(frames) < 2 {
		return s.scannedStack(p, maps, &regs)
	}
	out := make([]string, 0, len(frames))
	for _, f := range frames {
		out = append(out, s.symbolize(p, maps, f.PC, f.Return))
	}
	return out
}

// scannedStack is the instruction pointer, then the return addresses
// found by scanning the stack.
func (s *Supervisor) scannedStack(p *process, maps []procfs.Mapping, regs *arch.Regs) []string {
	out := []string{s.symbolize(p, maps, regs.Rip, false)}
	raw, err := p.readMem(regs.Rsp, 16*1024)
	if err != nil {
		raw, _ = p.readMem(regs.Rsp, 512)
	}
	isCall := func(addr uint64) bool {
		m, ok := covering(maps, addr)
		if !ok || !m.Executable() || addr-m.Start < 7 {
			return false
		}
		code, err := p.readMem(addr-7, 7)
		return err == nil && arch.IsCallBefore(code)
	}
	for _, ra := range arch.CallerFrames(raw, isCall, maxFrames-1) {
		out = append(out, s.symbolize(p, maps, ra, true))
	}
	return out
}

// symbolize renders "function+0xoff (binary)". For a return address the
// call instruction (ra-1) is looked up: the call may be a function's last
// instruction.
func (s *Supervisor) symbolize(p *process, maps []procfs.Mapping, addr uint64, isReturn bool) string {
	m, ok := covering(maps, addr)
	if !ok || m.Inode == 0 {
		return fmt.Sprintf("%#x", addr)
	}
	f, err := p.modules.open(p.pid, m)
	if err != nil {
		return fmt.Sprintf("%#x (%s)", addr, m.Path)
	}
	vaddr, ok := f.VaddrOfOffset(addr - m.Start + m.Offset)
	if !ok {
		return fmt.Sprintf("%#x (%s)", addr, m.Path)
	}
	look := vaddr
	if isReturn {
		look--
	}
	name, off, ok := f.Symbolize(look)
	if !ok {
		return fmt.Sprintf("%#x (%s)", vaddr, m.Path)
	}
	if isReturn {
		off++
	}
	return fmt.Sprintf("%s+%#x (%s)", name, off, m.Path)
}
