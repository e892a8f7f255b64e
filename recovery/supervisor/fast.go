package supervisor

// The fast path: rescue points whose entry can be patched get a `jmp`
// into injected code (recovery/patch) that takes the checkpoint inside
// the process, with no ptrace stop; the supervisor comes in only on a
// fault, on the first system call of a checkpoint window (to learn the
// kernel state a rollback must restore), and on rare events. A rescue
// point whose entry cannot be patched keeps its breakpoint.
//
// Per process, set up once: a control block (memfd, mapped here and in
// the process), a shadow (memfd mapped in both, the checkpoint engine's
// mirror of the tracked memory), a /proc/self/pagemap descriptor in the
// process for its own scans, syscall user dispatch on its thread with a
// SIGSYS handler that needs no supervisor, and a protection key over the
// shadow where the CPU has them.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/elfsym"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// fastState is the fast path of one process.
type fastState struct {
	ctl      *patch.Ctl
	ctlMap   []byte // our mapping of the control block (one private page before it)
	ctlAddr  uint64 // its address in the process
	shadow   uint64 // the shadow's address in the process
	shadowRs uint64 // the reservation around it (guard pages)
	pmfd     int    // the process's pagemap descriptor
	pkey     int    // -1 without protection keys
	code     *patch.Code
	mirror   *checkpoint.Mirror
	near     []*nearPage
	sites    map[uint64]*patchSite // by function address
	hooks    map[uint64][]byte     // layout hooks: function address -> bytes replaced
	hooked   map[string]bool       // modules whose layout functions are hooked
	traps    map[uint64]*patchSite // by the address of their int3
	// oldTraps are the traps of sites disarmed since: a thread that took
	// one before the disarm, its stop not yet handled, goes on unprotected.
	oldTraps map[uint64]bool
	ready    chan struct{} // closed when the shadow is initialised
	// copying is set while memory found between two calls is copied
	// into the shadow in the background (syncShadow): ready's channel.
	copying chan struct{}
	// extGen is the generation of the in-process frame the engine knows
	// of (see frameID), extID its checkpoint ID.
	extGen uint64
	extID  checkpoint.ID
	// snap is the kernel state at the first system call of the active
	// in-process window, taken then (before the call ran it was the
	// state at the window's entry); snapGen names that window.
	snap    *procCheckpoint
	snapGen uint64
	// snapAll: snap holds every thread's state (none had run in the
	// window when it was taken), so the window rolls back like a
	// checkpoint of the supervisor's, whatever the others do afterwards.
	snapAll bool
	broken  error
	// orphanGen names a frame open when an earlier supervisor died: its
	// checkpoint died with it.
	orphanGen uint64
}

// patchSite is one patched entry.
type patchSite struct {
	rp         *rescuePoint
	k          int    // index of the rescue point
	addr       uint64 // the function's first instruction
	orig       []byte // the bytes the jump replaced
	stub       uint64
	trap, back uint64
}

// nearPage is room for entry stubs: a page of their own near far
// modules, or the code region's stub area.
type nearPage struct {
	addr, size, used uint64
	litCtl, litEnter uint64
}

// take returns room for one stub, or false.
func (np *nearPage) take(addr uint64) (uint64, bool) {
	if np.used+patch.EntryStubSize > np.size || !patch.Within2G(addr, np.addr) || !patch.Within2G(addr, np.addr+np.size) {
		return 0, false
	}
	at := np.addr + np.used
	np.used += patch.EntryStubSize
	return at, true
}

var (
	routinesOnce sync.Once
	routines     *patch.Routines
	routinesErr  error
)

func loadRoutines() (*patch.Routines, error) {
	routinesOnce.Do(func() { routines, routinesErr = patch.LoadRoutines() })
	return routines, routinesErr
}

// fastOff turns the fast path off for every process: ASSURE_FASTPATH=0.
var fastOff = os.Getenv("ASSURE_FASTPATH") == "0"

// planPatches decides, for the rescue points resolved in p (rp -> run-time
// address), which entries get a jump: the others get breakpoints. It
// returns the sites to patch.
func (s *Supervisor) planPatch(p *process, rp *rescuePoint, addr uint64, f *elfsym.File) (*patch.Displaced, error) {
	size := 0
	if fn, err := f.Lookup(rp.Function); rp.Function != "" && err == nil {
		size = int(fn.Size)
	} else if fn, ok := f.FunctionAt(rp.vaddr); ok {
		size = int(fn.Size)
	}
	n := size
	if n == 0 || n > 64<<10 {
		n = 64
	}
	code, err := p.readMem(addr, n)
	if err != nil {
		return nil, err
	}
	if size > len(code) {
		size = 0
	}
	return patch.Plan(addr, code, size)
}

// fastEligible reports whether p can use the fast path now.
func (s *Supervisor) fastEligible(p *process) bool {
	return !fastOff && !s.cfg.NoFastPath && !p.sharedMM && !p.preExec && len(p.threads) == 1 && p.noFast == nil
}

// setupFast maps the fast path into p; t is a held thread of p.
func (s *Supervisor) setupFast(t *thread) (err error) {
	p := t.proc
	if p.fast != nil {
		return nil
	}
	r, err := loadRoutines()
	if err != nil {
		return err
	}
	if err := s.ensureScratch(t, pcOf(t)); err != nil {
		return err
	}
	st, err := procfs.ReadStatus(p.pid)
	if err != nil {
		return err
	}
	if st.SigCgt&(1<<(unix.SIGSYS-1)) != 0 {
		return errors.New("the program handles SIGSYS itself")
	}
	fs := &fastState{pkey: -1, sites: map[uint64]*patchSite{}, traps: map[uint64]*patchSite{}, ready: make(chan struct{}), pmfd: -1,
		hooks: map[uint64][]byte{}, hooked: map[string]bool{}}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	call := func(nr uint64, args ...uint64) (uint64, error) { return s.inject(t, nr, args...) }

	// Names and paths for the calls go in the code page's free space.
	strs := p.scratch + 512
	if err := p.writeMem(strs, []byte("assure-ctl\x00assure-shadow\x00/proc/self/pagemap\x00")); err != nil {
		return err
	}
	ctlFd, err := call(unix.SYS_MEMFD_CREATE, strs, unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd_create in %d: %w", p.pid, err)
	}
	defer call(unix.SYS_CLOSE, ctlFd)
	shFd, err := call(unix.SYS_MEMFD_CREATE, strs+11, unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd_create in %d: %w", p.pid, err)
	}
	defer call(unix.SYS_CLOSE, shFd)
	if _, err := call(unix.SYS_FTRUNCATE, ctlFd, patch.CtlSize); err != nil {
		return fmt.Errorf("size the control block of %d: %w", p.pid, err)
	}
	if _, err := call(unix.SYS_FTRUNCATE, shFd, checkpoint.ShadowSize); err != nil {
		return fmt.Errorf("size the shadow of %d: %w", p.pid, err)
	}
	fs.ctlAddr, err = call(unix.SYS_MMAP, 0, patch.CtlSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED, ctlFd, 0)
	if err != nil {
		return fmt.Errorf("map the control block in %d: %w", p.pid, err)
	}
	undo = append(undo, func() { call(unix.SYS_MUNMAP, fs.ctlAddr, patch.CtlSize) })
	// The shadow between guard pages, at an address the program has no
	// pointer to.
	fs.shadowRs, err = call(unix.SYS_MMAP, 0, checkpoint.ShadowSize+2*pageSize, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("reserve the shadow in %d: %w", p.pid, err)
	}
	undo = append(undo, func() { call(unix.SYS_MUNMAP, fs.shadowRs, checkpoint.ShadowSize+2*pageSize) })
	fs.shadow, err = call(unix.SYS_MMAP, fs.shadowRs+pageSize, checkpoint.ShadowSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_FIXED|unix.MAP_NORESERVE, shFd, 0)
	if err != nil {
		return fmt.Errorf("map the shadow in %d: %w", p.pid, err)
	}
	// Not in core dumps: the shadow is a terabyte of address space.
	call(unix.SYS_MADVISE, fs.shadowRs, checkpoint.ShadowSize+2*pageSize, unix.MADV_DONTDUMP)
	call(unix.SYS_MADVISE, fs.ctlAddr, patch.CtlSize, unix.MADV_DONTDUMP)
	pm, err := call(unix.SYS_OPENAT, uint64(unixAtFdcwd), strs+25, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open /proc/self/pagemap in %d: %w", p.pid, err)
	}
	// A high descriptor, out of the way of the program's own.
	if hi, err := call(unix.SYS_FCNTL, pm, unix.F_DUPFD_CLOEXEC, uint64(highFD(p.pid))); err == nil {
		call(unix.SYS_CLOSE, pm)
		pm = hi
	}
	fs.pmfd = int(pm)
	undo = append(undo, func() { call(unix.SYS_CLOSE, uint64(fs.pmfd)) })

	own, err := takeFDs(p.pid, int(ctlFd), int(shFd))
	if err != nil {
		return err
	}
	ownCtl, ownShadow := own[0], own[1]
	fs.ctlMap, err = mapCtl(ownCtl)
	unix.Close(ownCtl)
	if err != nil {
		unix.Close(ownShadow)
		return err
	}
	undo = append(undo, func() { unmapCtl(fs.ctlMap) })
	fs.ctl = patch.NewCtl(fs.ctlMap[pageSize:])

	uffd, err := s.makeUffd(t)
	if err != nil {
		unix.Close(ownShadow)
		return err
	}
	if fs.mirror, err = checkpoint.NewMirror(p.pid, uffd, ownShadow); err != nil {
		return err
	}
	fs.mirror.Exclude(fs.shadowRs, fs.shadowRs+checkpoint.ShadowSize+2*pageSize)
	fs.mirror.Exclude(fs.ctlAddr, fs.ctlAddr+patch.CtlSize)
	undo = append(undo, func() { fs.mirror.Close() })

	mask := uint32(0)
	if cpuHasPKU() && os.Getenv("ASSURE_NOPKEY") == "" {
		if key, err := call(unix.SYS_PKEY_ALLOC, 0, pkeyDisableAccess); err == nil {
			if _, err := call(unix.SYS_PKEY_MPROTECT, fs.shadow, checkpoint.ShadowSize, unix.PROT_READ|unix.PROT_WRITE, key); err == nil {
				fs.pkey = int(key)
				mask = 3 << (2 * key)
			}
		}
	}
	code, blob, err := patch.BuildCode(r, p.scratch, fs.ctlAddr)
	if err != nil {
		return err
	}
	if err := p.writeMem(p.scratch+patch.RoutinesAt, blob); err != nil {
		return err
	}
	fs.code = code
	fs.ctl.Init(patch.Header{Pmfd: fs.pmfd, Shadow: fs.shadow, Trampoline: code.Trampoline, PkeyMask: mask,
		CodeBase: p.scratch, CodeLen: patch.CodeSize}, fs.ctlAddr+patch.VecOffset)
	if fs.pkey >= 0 {
		fs.ctl.SetFlags(patch.FlagPkey, 0)
	}

	// Syscall user dispatch, which the injected code turns on for each
	// window, makes the window's system calls stop for us (SIGSYS). The
	// handler only runs when there is no supervisor any more.
	sa := make([]byte, 32)
	putLE64(sa[0:], code.SigsysThunk)
	putLE64(sa[8:], saSiginfo|saRestorer|saNodefer|saRestart)
	putLE64(sa[16:], code.Restorer)
	saAddr := fs.ctlAddr + patch.ScratchOffset
	copy(fs.ctl.Bytes()[patch.ScratchOffset:], sa)
	if _, err := call(unix.SYS_RT_SIGACTION, uint64(unix.SIGSYS), saAddr, 0, 8); err != nil {
		return fmt.Errorf("install the SIGSYS handler in %d: %w", p.pid, err)
	}
	undo = append(undo, func() { s.defaultSigsys(t) })
	// Check once that syscall user dispatch works here.
	if _, err := call(unix.SYS_PRCTL, prSetSyscallUserDispatch, prSysDispatchOn, p.scratch, patch.CodeSize,
		fs.ctlAddr+patch.SelectorOffset); err != nil {
		return fmt.Errorf("syscall user dispatch in %d: %w", p.pid, err)
	}
	if _, err := call(unix.SYS_PRCTL, prSetSyscallUserDispatch, prSysDispatchOff, 0, 0, 0); err != nil {
		return fmt.Errorf("syscall user dispatch in %d: %w", p.pid, err)
	}
	if err := watchAlive(fs); err != nil {
		return err
	}
	fs.ctl.SetStackLo(stackStart(p.pid, t))
	p.fast = fs
	p.tracker = fs.mirror
	s.addFastMetrics(fs)
	s.hookLayout(p)
	s.startInit(p)
	return nil
}

// addFastMetrics makes the calls the injected code counts part of the
// supervisor's metrics.
func (s *Supervisor) addFastMetrics(fs *fastState) {
	rps := s.rps
	s.metrics.AddSource(fs, func() SourceCounts {
		out := SourceCounts{Calls: map[Site]uint64{}, InProcess: map[Site]uint64{}, ShadowBytes: fs.mirror.FileBytes()}
		for k, rp := range rps {
			if n := fs.ctl.RescueCalls(k); n > 0 {
				out.Calls[rp.site()] += n
			}
			if n := fs.ctl.RescueCheckpoints(k); n > 0 {
				out.InProcess[rp.site()] += n
			}
		}
		return out
	})
}

// layoutFuncs are the functions through which programs map memory, or
// make mapped memory writable. Their entries are hooked: a call flags
// the control block, and the next checkpoint first lets the supervisor
// track the new memory. (Memory mapped with raw system calls, bypassing
// them, is tracked from the supervisor's next look: the next checkpoint
// the supervisor takes, fault or exec of a library.)
var layoutFuncs = []string{"mmap", "mmap64", "__mmap", "mprotect", "__mprotect", "mremap", "__mremap",
	"brk", "__brk", "sbrk", "__sbrk", "shmat", "pkey_mprotect"}

// hookLayout hooks the layout functions of every module mapped in p not
// hooked yet. Every thread is held.
func (s *Supervisor) hookLayout(p *process) {
	fs := p.fast
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return
	}
	eachLayoutFunc(p, maps, func(m procfs.Mapping, name string, addr, size uint64) {
		if fs.sites[addr] != nil {
			return
		}
		if err := s.hookEntry(p, addr, int(size)); err != nil {
			s.logOnce("hook-"+m.Path+name, "process %d: %s in %s: %v; memory it maps is tracked from the supervisor's next look", p.pid, name, m.Path, err)
		}
	})
}

// eachLayoutFunc calls fn with the run-time address (and size) of each
// layout function of the executable modules in maps that are not hooked
// yet, and marks them hooked; addresses with a hook already are skipped.
func eachLayoutFunc(p *process, maps []procfs.Mapping, fn func(m procfs.Mapping, name string, addr, size uint64)) {
	fs := p.fast
	for _, m := range maps {
		if !m.Executable() || m.Inode == 0 || fs.hooked[moduleKey(m)] {
			continue
		}
		fs.hooked[moduleKey(m)] = true
		f, err := p.modules.symbols(p.pid, m)
		if err != nil {
			continue
		}
		mods := findModule(p.pid, maps, m.Path)
		for _, name := range layoutFuncs {
			sym, err := f.Lookup(name)
			if err != nil {
				continue
			}
			addr, err := runtimeAddr(f, mods, sym.Addr)
			if err != nil || fs.hooks[addr] != nil {
				continue
			}
			fn(m, name, addr, sym.Size)
		}
	}
}

func (s *Supervisor) hookEntry(p *process, addr uint64, size int) error {
	n := size
	if n <= 0 || n > 4096 {
		n = 64
	}
	code, err := p.readMem(addr, n)
	if err != nil {
		return err
	}
	if size > len(code) {
		size = 0
	}
	d, err := patch.Plan(addr, code, size)
	if err != nil {
		return err
	}
	if err := s.threadsClear(p, addr, uint64(d.Len())); err != nil {
		return err
	}
	at, litCtl, _, err := s.stubSlot(p, addr)
	if err != nil {
		return err
	}
	stub, err := patch.HookStub(at, litCtl, d)
	if err != nil {
		return err
	}
	jmp, err := patch.JmpRel32(addr, at)
	if err != nil {
		return err
	}
	if err := p.writeMem(at, stub); err != nil {
		return err
	}
	if err := p.writeMem(addr, jmp); err != nil {
		return err
	}
	p.fast.hooks[addr] = d.Code
	return nil
}

// startInit copies the process's memory into the shadow: at once when
// there is little of it (a process that just started), else in the
// background, so that no process is frozen for long; entries run
// unprotected until it is done.
func (s *Supervisor) startInit(p *process) {
	fs := p.fast
	fs.ctl.SetFlags(patch.FlagFast, 0)
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		fs.broken = err
		close(fs.ready)
		return
	}
	run := func() {
		defer close(fs.ready)
		if err := fs.mirror.Init(maps); err != nil {
			fs.broken = err
			return
		}
		if !fs.writeRanges() {
			fs.broken = errors.New("too many tracked ranges for the injected code")
			return
		}
		fs.ctl.SetFlags(patch.FlagReady, 0)
	}
	if st, err := procfs.ReadStatus(p.pid); err == nil && st.RssAnon < syncInitBytes {
		run()
		return
	}
	go run()
}

// syncInitBytes: below this much anonymous memory the first copy is made
// with the process held (a page costs some 4–8 µs the first time: the
// shadow's page is allocated, cleared and charged to the cgroup); above,
// in the background, the calls unprotected until it is done.
const syncInitBytes = 8 << 20

// syncCopyPages: up to this many pages of memory found between two calls
// are copied with the process held; more in the background (syncShadow).
const syncCopyPages = 512

// writeRanges copies the engine's tracked ranges into the control block.
func (fs *fastState) writeRanges() bool {
	rs, _ := fs.mirror.Ranges()
	out := make([]patch.Range, len(rs))
	for i, r := range rs {
		out[i] = patch.Range{Start: r.Start, End: r.End, Off: r.Off, Shared: r.Shared}
	}
	return fs.ctl.SetRanges(out)
}

// isReady reports whether the shadow is initialised.
func (fs *fastState) isReady() bool {
	select {
	case <-fs.ready:
		return fs.broken == nil
	default:
		return false
	}
}

const (
	unixAtFdcwd              = 0xffffffffffffff9c // AT_FDCWD as an unsigned argument
	pkeyDisableAccess        = 1
	saSiginfo                = 0x4
	saRestorer               = 0x04000000
	saNodefer                = 0x40000000
	saRestart                = 0x10000000
	prSetSyscallUserDispatch = 59
	prSysDispatchOff         = 0
	prSysDispatchOn          = 1
)

func pcOf(t *thread) uint64 {
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil {
		return 0
	}
	return regs.Rip
}

// highFD is a descriptor number near the top of the process's limit.
func highFD(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "Max open files") {
				var soft int
				if _, err := fmt.Sscan(strings.Fields(line)[3], &soft); err == nil && soft > 64 {
					return soft - 16
				}
			}
		}
	}
	return 1000
}

// takeFDs copies descriptors of pid into the supervisor.
func takeFDs(pid int, fds ...int) ([]int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	var out []int
	for _, fd := range fds {
		own, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			for _, o := range out {
				unix.Close(o)
			}
			return nil, fmt.Errorf("take descriptor %d of %d: %w", fd, pid, err)
		}
		out = append(out, own)
	}
	return out, nil
}

// mapCtl maps a control block with one private page before it, where the
// robust list entry that names its liveness word lives out of the
// program's reach.
func mapCtl(fd int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, pageSize+patch.CtlSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	addr := uintptr(unsafe.Pointer(&b[pageSize]))
	_, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, patch.CtlSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_FIXED, uintptr(fd), 0)
	if errno != 0 {
		unix.Munmap(b)
		return nil, fmt.Errorf("map the control block: %w", errno)
	}
	return b, nil
}

func unmapCtl(b []byte) { unix.Munmap(b) }

func cpuHasPKU() bool {
	pkuOnce.Do(func() {
		data, err := os.ReadFile("/proc/cpuinfo")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "flags") {
				fields := strings.Fields(line)
				has := func(f string) bool {
					for _, x := range fields {
						if x == f {
							return true
						}
					}
					return false
				}
				pku = has("pku") && has("ospke")
				return
			}
		}
	})
	return pku
}

var (
	pkuOnce sync.Once
	pku     bool
)

// stackStart is the start of the mapping that holds t's stack pointer.
func stackStart(pid int, t *thread) uint64 {
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil {
		return 0
	}
	maps, err := procfs.Maps(pid)
	if err != nil {
		return 0
	}
	if m, ok := covering(maps, regs.Rsp); ok {
		return m.Start
	}
	return 0
}

// defaultSigsys puts back SIGSYS's default action (the program had no
// handler of its own).
func (s *Supervisor) defaultSigsys(t *thread) {
	fs := t.proc.fast
	if fs == nil || t.proc.scratch == 0 {
		return
	}
	for i := 0; i < 32; i++ {
		fs.ctl.Bytes()[patch.ScratchOffset+i] = 0
	}
	s.inject(t, unix.SYS_RT_SIGACTION, uint64(unix.SIGSYS), fs.ctlAddr+patch.ScratchOffset, 0, 8)
}

// patchEntry writes the jump at site's function entry and its stub. Every
// thread of p is held; none runs inside the bytes changed (at exec and at
// the program entry nothing has run there yet; otherwise checked).
func (s *Supervisor) patchEntry(p *process, rp *rescuePoint, k int, d *patch.Displaced) error {
	fs := p.fast
	if other, ok := fs.sites[d.Addr]; ok {
		other.rp = rp
		return nil
	}
	if err := s.threadsClear(p, d.Addr, uint64(d.Len())); err != nil {
		return err
	}
	stubAt, litCtl, litEnter, err := s.stubSlot(p, d.Addr)
	if err != nil {
		return err
	}
	stub, trap, back, err := patch.EntryStub(stubAt, k, litCtl, litEnter, d)
	if err != nil {
		return err
	}
	jmp, err := patch.JmpRel32(d.Addr, stubAt)
	if err != nil {
		return err
	}
	if err := p.writeMem(stubAt, stub); err != nil {
		return err
	}
	fs.ctl.SetRescue(k, back, trap)
	if err := p.writeMem(d.Addr, jmp); err != nil {
		return err
	}
	s.debugf("patch %s at %#x: stub at %#x", rp, d.Addr, stubAt)
	site := &patchSite{rp: rp, k: k, addr: d.Addr, orig: d.Code, stub: stubAt, trap: trap, back: back}
	fs.sites[d.Addr] = site
	fs.traps[trap] = site
	s.metrics.Armed(rp.site(), 1)
	return nil
}

// threadsClear checks that no thread of p executes inside the bytes a
// patch changes, nor returns or resumes into them (a word on its stack
// pointing inside: a signal frame, a return address).
func (s *Supervisor) threadsClear(p *process, addr, n uint64) error {
	inside := func(a uint64) bool { return a > addr && a < addr+n }
	for _, t := range p.threads {
		var regs arch.Regs
		if ptrace.GetRegs(t.tid, &regs) != nil {
			continue
		}
		if inside(regs.Rip) {
			return fmt.Errorf("thread %d executes inside %#x-%#x", t.tid, addr, addr+n)
		}
		stack, err := p.readMem(regs.Rsp, 64<<10)
		if err != nil {
			stack, _ = p.readMem(regs.Rsp, 4096)
		}
		for i := 0; i+8 <= len(stack); i += 8 {
			if inside(le64(stack[i:])) {
				return fmt.Errorf("thread %d would return into %#x-%#x", t.tid, addr, addr+n)
			}
		}
	}
	return nil
}

// stubSlot returns where the next entry stub for a function at addr goes
// (within ±2 GiB of it) and the literals it uses.
func (s *Supervisor) stubSlot(p *process, addr uint64) (uint64, uint64, uint64, error) {
	fs := p.fast
	if len(fs.near) == 0 {
		// The code region's own stub area comes first.
		litCtl, litEnter := fs.code.RegionLiterals()
		fs.near = append(fs.near, &nearPage{addr: fs.code.Base + patch.EntryStubsAt, size: patch.CodeSize - patch.EntryStubsAt,
			litCtl: litCtl, litEnter: litEnter})
	}
	for _, np := range fs.near {
		if at, ok := np.take(addr); ok {
			return at, np.litCtl, np.litEnter, nil
		}
	}
	np, err := s.mapNearPage(p, addr)
	if err != nil {
		return 0, 0, 0, err
	}
	at, _ := np.take(addr)
	return at, np.litCtl, np.litEnter, nil
}

// mapNearPage maps a page for entry stubs in a free gap within ±2 GiB of
// addr (nearest first).
func (s *Supervisor) mapNearPage(p *process, addr uint64) (*nearPage, error) {
	maps, err := procfs.Maps(p.pid)
	if err != nil {
		return nil, err
	}
	th := anyThread(p)
	if th == nil {
		return nil, errors.New("no thread to map a page")
	}
	for _, hint := range nearGaps(maps, addr) {
		a, err := s.inject(th, unix.SYS_MMAP, hint, patch.NearSize, unix.PROT_READ|unix.PROT_EXEC,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
		if err != nil {
			continue
		}
		lits, litCtl, litEnter := p.fast.code.NearPage(a, p.fast.ctlAddr)
		fill := bytes.Repeat([]byte{0xcc}, patch.NearSize)
		copy(fill, lits)
		if err := p.writeMem(a, fill); err != nil {
			return nil, err
		}
		np := &nearPage{addr: a, size: patch.NearSize, used: 16, litCtl: litCtl, litEnter: litEnter}
		p.fast.near = append(p.fast.near, np)
		return np, nil
	}
	return nil, fmt.Errorf("no free page within 2 GiB of %#x in %d", addr, p.pid)
}

// nearGaps lists candidate page addresses in the gaps between mappings,
// nearest to addr first.
func nearGaps(maps []procfs.Mapping, addr uint64) []uint64 {
	var out []uint64
	const low = 1 << 20
	prevEnd := uint64(low)
	add := func(a uint64) {
		if patch.Within2G(addr, a) && a >= low && a+patch.NearSize <= 1<<47 {
			out = append(out, a)
		}
	}
	for _, m := range maps {
		if m.Start >= prevEnd+2*patch.NearSize {
			add(m.Start - patch.NearSize) // just below the mapping
			add(prevEnd + patch.NearSize) // just above the previous one, a page apart
		}
		prevEnd = max(prevEnd, m.End)
	}
	sort.Slice(out, func(i, j int) bool { return absDiff(out[i], addr) < absDiff(out[j], addr) })
	if len(out) > 16 {
		out = out[:16]
	}
	return out
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

// unpatchAll restores every patched entry (threads held).
func (s *Supervisor) unpatchAll(p *process) {
	fs := p.fast
	if fs == nil {
		return
	}
	for _, site := range fs.sites {
		if err := p.writeMem(site.addr, site.orig); err != nil {
			s.logf("restore the entry of %s in %d: %v", site.rp, p.pid, err)
		}
		s.metrics.Armed(site.rp.site(), -1)
	}
	for addr, orig := range fs.hooks {
		if err := p.writeMem(addr, orig); err != nil {
			s.logf("restore the function at %#x in %d: %v", addr, p.pid, err)
		}
	}
	fs.sites = map[uint64]*patchSite{}
	fs.traps = map[uint64]*patchSite{}
	fs.hooks = map[uint64][]byte{}
}
