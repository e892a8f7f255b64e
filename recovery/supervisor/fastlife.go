package supervisor

import (
	"bytes"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// arm makes rp, resolved at addr in p, a live rescue point: a patched
// entry where it can be, else a breakpoint.
func (s *Supervisor) arm(p *process, rp *rescuePoint, addr uint64, mods []procfs.Mapping) error {
	if p.fast != nil && s.recognizeSite(p, rp, addr) {
		return nil
	}
	if d := s.patchPlan(p, rp, addr, mods); d != nil {
		if p.fast == nil {
			if err := s.setupFast(anyThread(p)); err != nil {
				p.noFast = err
				s.logOnce("fast-"+fmt.Sprint(p.pid), "process %d: rescue points keep breakpoint entries: %v", p.pid, err)
			}
		}
		if p.fast != nil {
			err := s.patchEntry(p, rp, s.rpIndex(rp), d)
			if err == nil {
				return nil
			}
			s.logOnce("patch-"+rp.String(), "%s: breakpoint entry: %v", rp, err)
		}
	}
	return s.plant(p, addr, bpRescue, rp)
}

// patchPlan returns how rp's entry would be patched in p, or nil when it
// keeps a breakpoint (logged once per rescue point).
func (s *Supervisor) patchPlan(p *process, rp *rescuePoint, addr uint64, mods []procfs.Mapping) *patch.Displaced {
	if rp.Scope == manifest.ScopeContainer {
		// Its checkpoint covers every process of the container at once,
		// which only the supervisor can take.
		s.logOnce("scope-"+rp.String(), "%s: breakpoint entry: container scope checkpoints every process through the supervisor", rp)
		return nil
	}
	if p.atExecStop || p.fast == nil && !s.fastEligible(p) {
		s.debugf("%s in %d: breakpoint (exec stop %v, fast %v, eligible %v)", rp, p.pid, p.atExecStop, p.fast != nil, s.fastEligible(p))
		return nil
	}
	for _, t := range p.threads {
		if t.running {
			s.debugf("%s in %d: breakpoint (thread %d runs)", rp, p.pid, t.tid)
			return nil // patching needs every thread held
		}
	}
	f, err := p.modules.open(p.pid, mods[0])
	if err != nil {
		return nil
	}
	d, err := s.planPatch(p, rp, addr, f)
	if err != nil {
		s.logOnce("plan-"+rp.String(), "%s: breakpoint entry: %v", rp, err)
		return nil
	}
	return d
}

// logOnce logs a line once per key.
func (s *Supervisor) logOnce(key, format string, args ...any) {
	if s.logged == nil {
		s.logged = make(map[string]bool)
	}
	if s.logged[key] {
		return
	}
	s.logged[key] = true
	s.logf(format, args...)
}

// fastFault handles a fault of t inside an in-process checkpoint window;
// it reports false when t has none.
func (s *Supervisor) fastFault(t *thread, sig unix.Signal, si ptrace.Siginfo) bool {
	rp, f, ok := s.fastFrameOf(t)
	if !ok {
		return false
	}
	if !s.allow(rp) {
		s.passOn(t, sig, si, fmt.Sprintf("maxRecoveries (%d per minute) reached for %s", s.cfg.Manifest.MaxRecoveries, rp), true)
		return true
	}
	if err := s.recoverFast(t, sig, si, rp, f); err != nil {
		s.passOn(t, sig, si, "rollback failed: "+err.Error(), true)
	}
	return true
}

// firstStop runs when a new task's first stop arrives, before anything
// else is done with it.
func (s *Supervisor) firstStop(t *thread) {
	if t.tid == t.proc.pid && t.proc.parent != 0 {
		s.syncInherited(t.proc)
	}
	if t.proc.forkedFrom != nil && t.tid == t.proc.pid {
		s.unfastChild(t)
	}
}

// syncInherited makes a forked child's memory hold the breakpoints its
// bookkeeping (inherit) says it has. The kernel copied the parent's
// memory at the fork; the supervisor learns of the fork later, and may
// have planted breakpoints in the parent in between (a rescue point armed
// or learned meanwhile), which the copy lacks, or taken entries out (a
// disarm), which the copy still has.
func (s *Supervisor) syncInherited(p *process) {
	for addr, orig := range p.retired {
		if p.breakpoints[addr] != nil || p.forkedFrom != nil && p.forkedFrom.sites[addr] != nil {
			continue // armed again since
		}
		b, err := p.readMem(addr, len(orig))
		if err != nil || bytes.Equal(b, orig) || b[0] != arch.Breakpoint[0] && b[0] != patch.JmpOpcode {
			continue
		}
		if err := p.writeMem(addr, orig); err != nil {
			s.logf("child %d: restore the disarmed entry at %#x: %v", p.pid, addr, err)
		} else {
			s.debugf("child %d: the entry at %#x, disarmed after the fork, restored", p.pid, addr)
		}
	}
	for addr, bp := range p.breakpoints {
		b, err := p.readMem(addr, 1)
		if err != nil || b[0] == arch.Breakpoint[0] {
			continue
		}
		if b[0] != bp.orig[0] {
			s.logf("child %d: %#x holds neither its breakpoint nor the bytes it displaced: left alone", p.pid, addr)
			delete(p.breakpoints, addr)
			continue
		}
		if err := p.writeMem(addr, arch.Breakpoint); err != nil {
			s.logf("child %d: plant the breakpoint at %#x: %v", p.pid, addr, err)
		}
	}
}

// unfastChild undoes, in a child forked from a process with a fast path,
// what it inherited of it: the child's memory is its own, but the control
// block and the shadow are shared with the parent and the pagemap
// descriptor reads the parent. Its entries get breakpoints (the child
// takes checkpoints through the supervisor), the shared mappings and the
// descriptor go. t is the child's first thread, held.
func (s *Supervisor) unfastChild(t *thread) {
	p := t.proc
	fs := p.forkedFrom
	p.forkedFrom = nil
	for _, site := range fs.sites {
		if err := p.writeMem(site.addr, site.orig); err != nil {
			s.logf("child %d: restore the entry of %s: %v", p.pid, site.rp, err)
			continue
		}
		s.plant(p, site.addr, bpRescue, site.rp)
	}
	for addr, orig := range fs.hooks {
		p.writeMem(addr, orig)
	}
	s.inject(t, unix.SYS_MUNMAP, fs.ctlAddr, patch.CtlSize)
	s.inject(t, unix.SYS_MUNMAP, fs.shadowRs, checkpoint.ShadowSize+2*pageSize)
	s.inject(t, unix.SYS_CLOSE, uint64(fs.pmfd))
	// The SIGSYS action is the parent's fast path's (a program with a
	// handler of its own has none), and a fork inside a window may have
	// left dispatch on.
	s.inject(t, unix.SYS_PRCTL, prSetSyscallUserDispatch, prSysDispatchOff, 0, 0, 0)
	if at := p.scratch + 512; p.writeMem(at, make([]byte, 32)) == nil {
		s.inject(t, unix.SYS_RT_SIGACTION, uint64(unix.SIGSYS), at, 0, 8)
	}
	p.noFast = fmt.Errorf("forked from %d", p.parent)
	p.promote = true
}

// promoteChild gives a child forked from a process with a fast path one
// of its own, when it returns from its first rescue point through the
// supervisor with nothing left to roll back: the workers of a prefork
// server, where the requests are, then checkpoint inside the process as
// their parent did. Not at the fork, so that a child which soon execs
// (a shell's) pays nothing for it. t is the child's thread, held.
func (s *Supervisor) promoteChild(t *thread) {
	p := t.proc
	if !p.promote || len(p.threads) != 1 || len(t.frames) != 0 || len(p.ckpts) != 0 || p.sharedMM {
		return
	}
	p.promote = false
	p.noFast = nil
	if p.tracker != nil {
		// The supervisor's engine gives way to the fast path's: its
		// userfaultfd goes, and with it its registrations.
		p.tracker.Close()
		p.tracker = nil
	}
	p.noTrack = nil
	s.upgradeBreakpoints(p)
	if p.fast != nil {
		s.debugf("child %d: fast path of its own", p.pid)
	}
}

// cleanFast removes the fast path from p before a detach (threads held):
// the entries get their bytes back, a frame in progress its real return
// address, and the process its SIGSYS action and syscall user dispatch
// off. The code page and near pages stay if a thread executes in them.
func (s *Supervisor) cleanFast(p *process) {
	fs := p.fast
	if fs == nil {
		return
	}
	if f := fs.ctl.Frame(); f.Active {
		if w, err := p.readWord(f.Slot); err == nil && w == fs.code.Trampoline {
			p.writeWord(f.Slot, f.Ret)
		}
		fs.ctl.EndFrame()
	}
	fs.ctl.SetFlags(0, patch.FlagFast|patch.FlagReady)
	s.unpatchAll(p)
	th := anyThread(p)
	if th == nil {
		return
	}
	for _, t := range p.threads {
		if !t.awaitInitial {
			s.inject(t, unix.SYS_PRCTL, prSetSyscallUserDispatch, prSysDispatchOff, 0, 0, 0)
		}
	}
	s.defaultSigsys(th)
	s.inject(th, unix.SYS_CLOSE, uint64(fs.pmfd))
	s.inject(th, unix.SYS_MUNMAP, fs.shadowRs, checkpoint.ShadowSize+2*pageSize)
	s.inject(th, unix.SYS_MUNMAP, fs.ctlAddr, patch.CtlSize)
	for _, np := range fs.near {
		if np.size == patch.NearSize && !s.executesIn(p, np.addr, patch.NearSize) {
			s.inject(th, unix.SYS_MUNMAP, np.addr, patch.NearSize)
		}
	}
}

// executesIn reports whether a thread of p has its pc in [addr, addr+n).
func (s *Supervisor) executesIn(p *process, addr, n uint64) bool {
	for _, t := range p.threads {
		var regs arch.Regs
		if ptrace.GetRegs(t.tid, &regs) == nil && regs.Rip >= addr && regs.Rip < addr+n {
			return true
		}
	}
	return false
}

// releaseFast drops the supervisor's side of p's fast path (the process
// is gone, exec'd, or detached). The engine is p.tracker, closed with it.
func (s *Supervisor) releaseFast(p *process) {
	fs := p.fast
	if fs == nil || fs.ctlMap == nil {
		return
	}
	<-fs.ready // the background copy uses the engine
	fs.dropSnap()
	s.metrics.DropSource(fs)
	for _, site := range fs.sites {
		s.metrics.Armed(site.rp.site(), -1)
	}
	// fs.sites stays: a child forked before this process ended, whose
	// first stop comes after, restores its entries from it (unfastChild).
	s.debugf("fast path of %d: flags %#x broken %v", p.pid, fs.ctl.Flags(), fs.broken)
	if c := fs.ctl.Counters(); c.Calls+c.Unprotected+c.Slow > 0 {
		s.logf("process %d: fast path: %d checkpoints, %d pages copied, %d unprotected, %d through the supervisor, %d commits, %d longjmps",
			p.pid, c.Calls, c.Pages, c.Unprotected, c.Slow, c.Commits, c.Longjmps)
	}
	unwatchAlive(fs)
	unmapCtl(fs.ctlMap)
	fs.ctlMap = nil
}

// The supervisor's liveness word in each control block is a robust futex
// held by the tracer thread: when that thread dies, however it dies, the
// kernel marks the word FUTEX_OWNER_DIED, and the injected code stops
// taking checkpoints no one could roll back. The list entries live in the
// private page before each block (mapCtl), out of the program's reach.
//
// struct robust_list_head { next; futex_offset; list_op_pending }.
type robustHead struct {
	next    unsafe.Pointer
	offset  int64
	pending unsafe.Pointer
}

var (
	robustMu      sync.Mutex
	robust        = new(robustHead)
	robustTracer  int
	robustEntries []*fastState
)

// entryOffset is where the entry lies in our mapping of a block: the last
// word of the private page; the word it names is the liveness word.
const entryOffset = pageSize - 8

func entryOf(fs *fastState) unsafe.Pointer { return unsafe.Pointer(&fs.ctlMap[entryOffset]) }

// relink writes the kernel's view of the list: head, entries, head.
func relink() {
	next := unsafe.Pointer(robust)
	for i := len(robustEntries) - 1; i >= 0; i-- {
		*(*unsafe.Pointer)(entryOf(robustEntries[i])) = next
		next = entryOf(robustEntries[i])
	}
	robust.next = next
}

// watchAlive puts fs's liveness word on the tracer thread's robust list
// (the calling thread) and marks it held.
func watchAlive(fs *fastState) error {
	robustMu.Lock()
	defer robustMu.Unlock()
	tid := unix.Gettid()
	if robustTracer != tid {
		robust.offset = int64(pageSize + patch.AliveOffset - entryOffset)
		robustEntries = nil
		relink()
		_, _, errno := unix.Syscall(unix.SYS_SET_ROBUST_LIST, uintptr(unsafe.Pointer(robust)), unsafe.Sizeof(*robust), 0)
		if errno != 0 {
			return fmt.Errorf("set_robust_list: %w", errno)
		}
		robustTracer = tid
	}
	robustEntries = append(robustEntries, fs)
	relink()
	fs.ctl.SetAlive(tid)
	return nil
}

func unwatchAlive(fs *fastState) {
	robustMu.Lock()
	defer robustMu.Unlock()
	for i, e := range robustEntries {
		if e == fs {
			robustEntries = append(robustEntries[:i], robustEntries[i+1:]...)
			break
		}
	}
	relink()
}

// ours lists the mappings the supervisor made in p: a rollback leaves
// them alone.
func (p *process) ours() []span {
	var out []span
	if p.scratch != 0 {
		out = append(out, span{p.scratch, p.scratch + scratchSize})
	}
	if fs := p.fast; fs != nil {
		out = append(out, span{fs.ctlAddr, fs.ctlAddr + patch.CtlSize},
			span{fs.shadowRs, fs.shadowRs + checkpoint.ShadowSize + 2*pageSize})
		for _, np := range fs.near {
			out = append(out, span{np.addr, np.addr + patch.NearSize})
		}
	}
	return out
}

// upgradeBreakpoints patches the entries that got breakpoints when no
// system call could be injected (at the exec stop). Every thread is held.
func (s *Supervisor) upgradeBreakpoints(p *process) {
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return
	}
	for addr, bp := range p.breakpoints {
		if bp.kind != bpRescue {
			continue
		}
		mods := findModule(p.pid, maps, bp.rp.Binary)
		if len(mods) == 0 {
			continue
		}
		if err := s.unplant(p, bp); err != nil {
			continue
		}
		if err := s.arm(p, bp.rp, addr, mods); err != nil {
			s.emitError(p.pid, err)
		}
	}
}

// afterLoad follows a dlopen or dlclose (the loader's breakpoint): the
// new modules' layout functions are hooked, and the next checkpoint first
// tracks the memory they brought.
func (s *Supervisor) afterLoad(p *process) {
	fs := p.fast
	if fs == nil {
		return
	}
	for _, t := range p.threads {
		if t.running {
			fs.ctl.SetFlags(patch.FlagLayout, 0)
			return // hooks need every thread held: the next look adds them
		}
	}
	s.hookLayout(p)
	fs.ctl.SetFlags(patch.FlagLayout, 0)
}

// forgetSite drops the patch at addr, whose module was unmapped (its
// stub stays unused in its page).
func (fs *fastState) forgetSite(addr uint64) {
	if site := fs.sites[addr]; site != nil {
		delete(fs.traps, site.trap)
		delete(fs.sites, addr)
		if fs.oldTraps == nil {
			fs.oldTraps = make(map[uint64]bool)
		}
		fs.oldTraps[site.trap] = true
	}
}

// forgetUnmappedHooks drops the layout hooks of modules that are gone,
// so that one loaded again (maybe at the same place) is hooked again.
func (fs *fastState) forgetUnmappedHooks(maps []procfs.Mapping) {
	for addr := range fs.hooks {
		if m, ok := covering(maps, addr); !ok || !m.Executable() || m.Inode == 0 {
			delete(fs.hooks, addr)
		}
	}
	live := map[string]bool{}
	for _, m := range maps {
		if m.Executable() && m.Inode != 0 {
			live[moduleKey(m)] = true
		}
	}
	for k := range fs.hooked {
		if !live[k] {
			delete(fs.hooked, k)
		}
	}
}
