package supervisor

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/procfs"
)

// A supervisor that dies leaves the fast path in place: the patched
// entries, the injected code and the control block keep working without
// it (the liveness word says no one is there: calls run unprotected). The
// next supervisor takes all of it over instead of patching on top: the
// control block and the shadow through /proc/PID/map_files, the entries
// and layout hooks recognised by their jumps into our pages (their
// original bytes come from the mapped files). The write-protect state died
// with the old supervisor's userfaultfd, so the shadow is filled again
// (entries run unprotected until then), and a frame that was open at the
// death cannot be rolled back to: a fault in it is passed on.

// takeOverFast adopts the fast path an earlier supervisor left in p, if
// any. Every thread is held.
func (s *Supervisor) takeOverFast(p *process, maps []procfs.Mapping) {
	var ctlM, shM *procfs.Mapping
	for i := range maps {
		m := &maps[i]
		switch {
		case strings.HasPrefix(m.Path, "/memfd:assure-ctl") && m.Size() == patch.CtlSize:
			ctlM = m
		case strings.HasPrefix(m.Path, "/memfd:assure-shadow") && m.Size() == checkpoint.ShadowSize:
			shM = m
		}
	}
	if ctlM == nil || shM == nil {
		return
	}
	if err := s.takeOver(p, maps, *ctlM, *shM); err != nil {
		s.emitError(p.pid, fmt.Errorf("take over the fast path of %d: %w; its patched entries run unprotected", p.pid, err))
	}
}

func (s *Supervisor) takeOver(p *process, maps []procfs.Mapping, ctlM, shM procfs.Mapping) error {
	r, err := loadRoutines()
	if err != nil {
		return err
	}
	th := anyThread(p)
	if th == nil {
		return fmt.Errorf("no thread")
	}
	ctlFd, err := mappedFD(p.pid, ctlM)
	if err != nil {
		return err
	}
	ctlMap, err := mapCtl(ctlFd)
	unix.Close(ctlFd)
	if err != nil {
		return err
	}
	ctl := patch.NewCtl(ctlMap[pageSize:])
	h := ctl.Header()
	if !ctl.Valid() || h.CodeBase == 0 || h.Shadow != shM.Start {
		unmapCtl(ctlMap)
		return fmt.Errorf("the control block at %#x is not one this supervisor knows", ctlM.Start)
	}
	code, _, err := patch.BuildCode(r, h.CodeBase, ctlM.Start)
	if err != nil {
		unmapCtl(ctlMap)
		return err
	}
	fs := &fastState{ctl: ctl, ctlMap: ctlMap, ctlAddr: ctlM.Start, shadow: shM.Start, shadowRs: shM.Start - pageSize,
		pmfd: h.Pmfd, pkey: -1, code: code, sites: map[uint64]*patchSite{}, traps: map[uint64]*patchSite{},
		hooks: map[uint64][]byte{}, hooked: map[string]bool{}, ready: make(chan struct{})}
	if h.PkeyMask != 0 {
		fs.pkey = bits.TrailingZeros32(h.PkeyMask) / 2
	}
	if f := ctl.Frame(); f.Active {
		fs.orphanGen = f.Generation
	}
	// The stub areas: full, new stubs go to new pages.
	fs.near = append(fs.near, &nearPage{addr: code.Base + patch.EntryStubsAt, size: patch.CodeSize - patch.EntryStubsAt,
		used: patch.CodeSize - patch.EntryStubsAt})
	for _, m := range maps {
		if m.Size() == patch.NearSize && m.Inode == 0 && m.Perms == "r-xp" {
			if lit, err := p.readMem(m.Start, 16); err == nil && le64(lit) == ctlM.Start && le64(lit[8:]) == code.Enter {
				fs.near = append(fs.near, &nearPage{addr: m.Start, size: patch.NearSize, used: patch.NearSize})
			}
		}
	}
	if p.scratch == 0 {
		p.scratch = code.Base
	}
	shFd, err := mappedFD(p.pid, shM)
	if err != nil {
		unmapCtl(ctlMap)
		return err
	}
	uffd, err := s.makeUffd(th)
	if err != nil {
		unix.Close(shFd)
		unmapCtl(ctlMap)
		return err
	}
	if fs.mirror, err = checkpoint.NewMirror(p.pid, uffd, shFd); err != nil {
		unmapCtl(ctlMap)
		return err
	}
	fs.mirror.Exclude(fs.shadowRs, fs.shadowRs+checkpoint.ShadowSize+2*pageSize)
	fs.mirror.Exclude(fs.ctlAddr, fs.ctlAddr+patch.CtlSize)
	if err := watchAlive(fs); err != nil {
		fs.mirror.Close()
		unmapCtl(ctlMap)
		return err
	}
	ctl.SetFlags(0, patch.FlagReady|patch.FlagBroken|patch.FlagStale)
	p.fast, p.tracker = fs, fs.mirror
	s.addFastMetrics(fs)
	s.recognizeHooks(p, maps)
	if len(p.threads) > 1 {
		s.fastToSlow(p)
	}
	s.startInit(p)
	s.logf("process %d: took over the fast path of an earlier supervisor (control block at %#x)", p.pid, ctlM.Start)
	return nil
}

// mappedFD opens the file mapped at m in pid as a descriptor of ours.
func mappedFD(pid int, m procfs.Mapping) (int, error) {
	f, err := openMapped(pid, m)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	return unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
}

// ownPage reports whether addr lies in one of the fast path's code pages.
func (fs *fastState) ownPage(addr uint64) bool {
	if addr >= fs.code.Base && addr < fs.code.Base+patch.CodeSize {
		return true
	}
	for _, np := range fs.near {
		if addr >= np.addr && addr < np.addr+np.size {
			return true
		}
	}
	return false
}

// jumpTarget returns where the jump patched at addr goes, when addr holds
// a jump into one of our pages.
func (s *Supervisor) jumpTarget(p *process, addr uint64) (uint64, bool) {
	b, err := p.readMem(addr, patch.JmpLen)
	if err != nil || b[0] != patch.JmpOpcode {
		return 0, false
	}
	target := addr + patch.JmpLen + uint64(int64(int32(binary.LittleEndian.Uint32(b[1:]))))
	return target, p.fast.ownPage(target)
}

// recognizeSite takes over the patched entry of rp at addr, if an
// earlier supervisor left one. It reports whether it did.
func (s *Supervisor) recognizeSite(p *process, rp *rescuePoint, addr uint64) bool {
	fs := p.fast
	if fs.sites[addr] != nil {
		return true
	}
	stub, ok := s.jumpTarget(p, addr)
	if !ok {
		return false
	}
	orig, err := s.originalEntry(p, addr, rp)
	if err != nil {
		s.logf("process %d: the entry of %s was patched by an earlier supervisor: %v", p.pid, rp, err)
		return true // left as it is: it keeps working
	}
	idx, _ := p.readMem(stub+patch.EntryIndexAt, 4)
	k := s.rpIndex(rp)
	if len(idx) == 4 && int(binary.LittleEndian.Uint32(idx)) != k {
		s.logf("process %d: the patched entry of %s has rescue point index %d, not %d", p.pid, rp, binary.LittleEndian.Uint32(idx), k)
	}
	site := &patchSite{rp: rp, k: k, addr: addr, orig: orig, stub: stub, trap: stub + patch.EntryTrap, back: stub + patch.EntryTrap + 1}
	fs.sites[addr], fs.traps[site.trap] = site, site
	fs.ctl.SetRescue(k, site.back, site.trap)
	s.metrics.Armed(rp.site(), 1)
	return true
}

// originalEntry returns the bytes a patch at addr replaced, from the
// mapped file: the whole instructions that cover a jump.
func (s *Supervisor) originalEntry(p *process, addr uint64, rp *rescuePoint) ([]byte, error) {
	code, err := fileBytes(p.pid, addr, 64)
	if err != nil {
		return nil, err
	}
	d, err := patch.Plan(addr, code, 0)
	if err != nil {
		return nil, err
	}
	return d.Code, nil
}

// recognizeHooks takes over the layout hooks an earlier supervisor left.
func (s *Supervisor) recognizeHooks(p *process, maps []procfs.Mapping) {
	fs := p.fast
	eachLayoutFunc(p, maps, func(_ procfs.Mapping, _ string, addr, _ uint64) {
		if _, ok := s.jumpTarget(p, addr); !ok {
			return
		}
		if orig, err := s.originalEntry(p, addr, nil); err == nil {
			fs.hooks[addr] = orig
		}
	})
}
