package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/elfsym"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
	"github.com/assure-rt/assure/recovery/resolve"
)

// moduleCache keeps the ELF files of mapped modules, opened through
// /proc/PID/map_files so that the file read is exactly the one mapped,
// whatever the process's mount namespace or a later rename.
type moduleCache struct {
	files map[string]*elfsym.File // by "dev:inode"
	// named are files read for their named symbols only (symbols).
	named map[string]*elfsym.File
}

func newModuleCache() *moduleCache {
	return &moduleCache{files: make(map[string]*elfsym.File), named: make(map[string]*elfsym.File)}
}

func moduleKey(m procfs.Mapping) string {
	return fmt.Sprintf("%d:%d:%d", m.Major, m.Minor, m.Inode)
}

func (c *moduleCache) open(pid int, m procfs.Mapping) (*elfsym.File, error) {
	return cachedModule(c.files, pid, m, elfsym.NewFile)
}

// symbols is open for a caller that only looks symbols up by name (the
// layout hooks, in every module at every start): a stripped library's
// unwind table is not parsed (elfsym.NewSymbols).
func (c *moduleCache) symbols(pid int, m procfs.Mapping) (*elfsym.File, error) {
	if f := c.files[moduleKey(m)]; f != nil {
		return f, nil
	}
	return cachedModule(c.named, pid, m, elfsym.NewSymbols)
}

// cachedModule returns the file of m in cache, read with parse the first
// time (a file that does not parse is remembered as nil).
func cachedModule(cache map[string]*elfsym.File, pid int, m procfs.Mapping, parse func(r io.ReaderAt, size int64, name string) (*elfsym.File, error)) (*elfsym.File, error) {
	key := moduleKey(m)
	if f, ok := cache[key]; ok {
		if f == nil {
			return nil, fmt.Errorf("%s: not a readable ELF file", m.Path)
		}
		return f, nil
	}
	f, read, err := readModule(pid, m, parse)
	if read {
		cache[key] = f
	}
	return f, err
}

// readModule reads the ELF file mapped at m with parse; read says
// whether it got as far as parsing (an error then is the file's own).
func readModule(pid int, m procfs.Mapping, parse func(r io.ReaderAt, size int64, name string) (*elfsym.File, error)) (f *elfsym.File, read bool, err error) {
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
	fh, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("open %s: %w", m.Path, err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, false, err
	}
	f, err = parse(fh, st.Size(), m.Path)
	return f, true, err
}

// findModule returns the mappings of the module a manifest names: an
// absolute path as the process sees it (symlinks resolved in the
// process's root, matched by device and inode), or a bare file name
// matched against the base names of mapped files.
func findModule(pid int, maps []procfs.Mapping, binary string) []procfs.Mapping {
	var dev uint64
	var ino uint64
	if filepath.IsAbs(binary) {
		// Resolved inside the process's root by the rule of every
		// manifest path (recovery/resolve), as the kernel resolves it
		// there.
		if _, st, err := resolve.ResolveBinary(fmt.Sprintf("/proc/%d/root", pid), binary); err == nil {
			dev, ino = st.Dev, st.Ino
		}
	}
	var out []procfs.Mapping
	for _, m := range maps {
		if m.Inode == 0 || m.Path == "" {
			continue
		}
		var match bool
		if filepath.IsAbs(binary) {
			match = m.Path == binary || (ino != 0 && m.Inode == ino &&
				m.Major == unix.Major(dev) && m.Minor == unix.Minor(dev))
		} else {
			match = filepath.Base(m.Path) == binary
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// runtimeAddr turns an ELF virtual address into the address it has in
// the process, through the file offset and the mapping that covers it.
func runtimeAddr(f *elfsym.File, mods []procfs.Mapping, vaddr uint64) (uint64, error) {
	off, err := f.FileOffset(vaddr)
	if err != nil {
		return 0, err
	}
	for _, m := range mods {
		if m.Executable() && off >= m.Offset && off < m.Offset+m.Size() {
			return m.Start + off - m.Offset, nil
		}
	}
	return 0, fmt.Errorf("address %#x of %s is not in an executable mapping", vaddr, f.Name())
}

// resolve plants breakpoints for rescue points whose module is mapped in
// p now, and (right after exec) the breakpoints that tell when more
// modules arrive: the program entry and the dynamic loader's
// _dl_debug_state, which it calls around every dlopen and dlclose.
func (s *Supervisor) resolve(p *process, atExec bool) error {
	if p.preExec {
		return nil
	}
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return err
	}
	forgetUnmapped(p, maps)
	var errs []error
	for _, rp := range s.rps {
		if _, ok := p.resolved[rp]; ok || rp.disarmed {
			continue
		}
		mods := findModule(p.pid, maps, rp.Binary)
		if len(mods) == 0 {
			continue
		}
		addr, err := s.resolveOne(p, rp, mods)
		if err != nil {
			p.resolved[rp] = 0 // do not retry; reported once
			errs = append(errs, err)
			continue
		}
		p.resolved[rp] = addr
		p.resolvedIn[rp] = moduleKey(mods[0])
		if err := s.arm(p, rp, addr, mods); err != nil {
			errs = append(errs, err)
		}
	}
	if atExec {
		s.planLoaderHooks(p, maps)
	}
	if err := s.resolveHooks(p, s.allHooks()); err != nil {
		s.logf("process %d: %v", p.pid, err)
	}
	return errors.Join(errs...)
}

// forgetUnmapped drops the rescue points whose module was unmapped
// (dlclose): their breakpoints went with the memory, and a new dlopen of
// the module must resolve and plant them again, wherever it lands.
func forgetUnmapped(p *process, maps []procfs.Mapping) {
	for rp, addr := range p.resolved {
		if addr == 0 {
			continue // failed to resolve: reported once, not retried
		}
		if m, ok := covering(maps, addr); ok && m.Executable() && m.Inode != 0 && moduleKey(m) == p.resolvedIn[rp] {
			continue
		}
		delete(p.resolved, rp)
		delete(p.resolvedIn, rp)
		if bp := p.breakpoints[addr]; bp != nil && bp.rp == rp {
			delete(p.breakpoints, addr)
		}
		if fs := p.fast; fs != nil {
			fs.forgetSite(addr)
		}
	}
	if fs := p.fast; fs != nil {
		fs.forgetUnmappedHooks(maps)
	}
}

func (s *Supervisor) resolveOne(p *process, rp *rescuePoint, mods []procfs.Mapping) (uint64, error) {
	f, err := p.modules.open(p.pid, mods[0])
	if err != nil {
		return 0, fmt.Errorf("rescue point %s: %w", rp, err)
	}
	vaddr := rp.Address
	if !rp.HasAddress {
		fn, err := f.Lookup(rp.Function)
		if err != nil {
			return 0, fmt.Errorf("rescue point %s: %w", rp, err)
		}
		vaddr = fn.Addr
	}
	if err := f.CheckRescuePoint(vaddr); err != nil {
		return 0, fmt.Errorf("rescue point %s: %w", rp, err)
	}
	rp.vaddr = vaddr
	addr, err := runtimeAddr(f, mods, vaddr)
	if err != nil {
		return 0, fmt.Errorf("rescue point %s: %w", rp, err)
	}
	return addr, nil
}

// planLoaderHooks plants the entry and loader breakpoints of a freshly
// exec'd dynamically linked program.
func (s *Supervisor) planLoaderHooks(p *process, maps []procfs.Mapping) {
	auxv, err := procfs.Auxv(p.pid)
	if err != nil {
		return
	}
	if entry := auxv[procfs.AT_ENTRY]; entry != 0 && !p.entryDone {
		if err := s.plant(p, entry, bpEntry, nil); err != nil {
			s.logf("entry breakpoint in %d: %v", p.pid, err)
		}
	}
	base := auxv[atBase] // load address of the dynamic loader
	for _, m := range maps {
		if m.Start != base || base == 0 || m.Inode == 0 {
			continue
		}
		f, err := p.modules.open(p.pid, m)
		if err != nil {
			return
		}
		fn, err := f.Lookup("_dl_debug_state")
		if err != nil {
			return
		}
		mods := findModule(p.pid, maps, m.Path)
		if addr, err := runtimeAddr(f, mods, fn.Addr); err == nil {
			s.plant(p, addr, bpLoader, nil)
		}
		return
	}
}

const atBase = 7 // AT_BASE: where the dynamic loader is mapped

// plant writes a breakpoint, keeping the instruction bytes it displaces.
func (s *Supervisor) plant(p *process, addr uint64, kind bpKind, rp *rescuePoint) error {
	if bp, ok := p.breakpoints[addr]; ok {
		if kind == bpRescue {
			if bp.kind != bpRescue {
				s.metrics.Armed(rp.site(), 1)
			}
			bp.kind, bp.rp = kind, rp
		}
		return nil
	}
	orig, err := p.readMem(addr, arch.MaxInsnLen)
	if err != nil {
		if orig, err = p.readMem(addr, 1); err != nil {
			return err
		}
	}
	if orig[0] == arch.Breakpoint[0] {
		// A breakpoint left by a supervisor that died: the original
		// bytes are the file's.
		if file, err := fileBytes(p.pid, addr, len(orig)); err == nil && file[0] != arch.Breakpoint[0] {
			s.logf("process %d: breakpoint at %#x left by an earlier supervisor; original bytes from the file", p.pid, addr)
			orig = file
		}
	}
	if err := p.writeMem(addr, arch.Breakpoint); err != nil {
		return err
	}
	p.breakpoints[addr] = &breakpoint{addr: addr, kind: kind, rp: rp, orig: orig}
	if kind == bpRescue {
		s.metrics.Armed(rp.site(), 1)
	}
	return nil
}

// fileBytes reads n bytes of the file mapped at addr in pid, through
// /proc/PID/map_files (the very file mapped, whatever its name now).
func fileBytes(pid int, addr uint64, n int) ([]byte, error) {
	maps, err := procfs.Maps(pid)
	if err != nil {
		return nil, err
	}
	m, ok := covering(maps, addr)
	if !ok || m.Inode == 0 {
		return nil, fmt.Errorf("%#x is not in a file mapping", addr)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr-m.Start+m.Offset)); err != nil {
		return nil, err
	}
	return b, nil
}

// unplant restores the displaced byte.
func (s *Supervisor) unplant(p *process, bp *breakpoint) error {
	delete(p.breakpoints, bp.addr)
	if bp.kind == bpRescue {
		s.metrics.Armed(bp.rp.site(), -1)
	}
	return p.writeMem(bp.addr, bp.orig[:len(arch.Breakpoint)])
}

// onEntry runs at the program's first instruction: the libraries it
// links are mapped now.
func (s *Supervisor) onEntry(t *thread, bp *breakpoint, regs *arch.Regs) {
	p := t.proc
	p.entryDone = true
	if err := s.unplant(p, bp); err != nil {
		s.logf("entry of %d: %v", p.pid, err)
	}
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		s.logf("entry of %d: %v", p.pid, err)
	}
	if err := s.resolve(p, false); err != nil {
		s.emitError(p.pid, err)
	}
	s.upgradeBreakpoints(p)
	// The entry may itself be a rescue point.
	if nb := p.breakpoints[bp.addr]; nb != nil && nb.kind == bpRescue {
		s.enterRescue(t, nb, regs)
		return
	}
	s.resume(t)
}

// stepOver carries out the instruction a breakpoint displaced, leaving t
// stopped after it: emulated when possible, else single-stepped with the
// original byte back in place (every other thread of the process is held
// meanwhile so that none runs past the missing breakpoint).
func (s *Supervisor) stepOver(t *thread, bp *breakpoint, regs *arch.Regs) {
	p := t.proc
	ok, err := arch.Emulate(bp.orig, regs, p.writeMem)
	if err == nil && ok {
		if err := ptrace.SetRegs(t.tid, regs); err == nil {
			return
		}
	}
	s.debugf("single-step %d at %#x", t.tid, bp.addr)
	others := s.heldAll(p)
	defer s.resumeOthers(others)
	if err := ptrace.SetRegs(t.tid, regs); err != nil {
		return
	}
	if err := p.writeMem(bp.addr, bp.orig[:1]); err != nil {
		return
	}
	defer p.writeMem(bp.addr, arch.Breakpoint)
	for {
		if err := ptrace.SingleStep(t.tid); err != nil {
			return
		}
		ws, err := s.waitStop(t)
		s.debugf("single-step %d: %#x %v", t.tid, uint32(ws), err)
		if err != nil {
			return
		}
		if ptrace.Event(ws) == ptrace.EventStop {
			continue // a pending interrupt; step again
		}
		if ws.StopSignal() != unix.SIGTRAP {
			// The displaced instruction faulted or a signal came in:
			// handle it in the main loop once the breakpoint is back.
			s.defer_(t.tid, ws)
			return
		}
		return
	}
}

// heldAll stops the running threads of p and returns those it stopped.
func (s *Supervisor) heldAll(p *process) []*thread {
	var running []*thread
	for _, t := range p.threads {
		if t.running {
			running = append(running, t)
		}
	}
	if len(running) == 0 {
		return nil
	}
	s.stopThreads([]*process{p}, false)
	return running
}

func (s *Supervisor) resumeOthers(ts []*thread) {
	for _, t := range ts {
		s.resume(t)
	}
}
