package supervisor

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
)

// Rescue points can be added to a running supervisor and taken out again
// (assure arm / disarm): each process is held while its breakpoints or
// patches go in or out, as at a dlopen, and nothing else changes. A
// rescue point taken out stays in s.rps, marked disarmed, so that the
// indices the fast path's control block uses stay valid; armed again, it
// is the same entry.

type armRequest struct {
	m      *manifest.Manifest
	disarm bool
	done   chan error
	// until is how long a disarm waits for calls of its rescue points
	// that are in progress in some process (a prefork server's workers
	// are often inside one) to return.
	until time.Time
}

// disarmPatience bounds that wait, and disarmRetry is how often the
// processes are looked at again meanwhile.
const (
	disarmPatience = 2 * time.Second
	disarmRetry    = 5 * time.Millisecond
)

// inUseError is a disarm's error when a rescue point is in use.
type inUseError string

func (e inUseError) Error() string { return string(e) }

// Arm adds m's rescue points (its other fields are not used: the
// supervisor's signals and recovery limit stay) to every supervised
// process, and to those that come later. One already armed is left as
// it is. Safe to call from any goroutine; it returns once every process
// has them, or why some could not be armed.
func (s *Supervisor) Arm(m *manifest.Manifest) error { return s.armRequest(m, false) }

// Disarm takes m's rescue points out of every supervised process: every
// patched byte and breakpoint is restored. It fails, changing nothing in
// that process, while a call of one of them is in progress there (its
// rollback needs the entry), and for one that is not armed.
func (s *Supervisor) Disarm(m *manifest.Manifest) error { return s.armRequest(m, true) }

func (s *Supervisor) armRequest(m *manifest.Manifest, disarm bool) error {
	r := armRequest{m: m, disarm: disarm, done: make(chan error, 1), until: time.Now().Add(disarmPatience)}
	s.hooks.mu.Lock()
	s.hooks.arms = append(s.hooks.arms, r)
	s.hooks.mu.Unlock()
	s.hooks.asked.Store(true)
	s.wake()
	select {
	case err := <-r.done:
		return err
	case <-s.ended:
		return errors.New("the supervisor has stopped")
	}
}

// takeArms serves Arm and Disarm (on the tracer thread).
func (s *Supervisor) takeArms() {
	s.hooks.mu.Lock()
	arms := s.hooks.arms
	s.hooks.arms = nil
	s.hooks.mu.Unlock()
	for _, r := range arms {
		if !r.disarm {
			r.done <- s.armManifest(r.m, 0, false)
			continue
		}
		err := s.disarmManifest(r.m)
		if _, busy := err.(inUseError); busy && time.Now().Before(r.until) {
			s.retryArm(r)
			continue
		}
		r.done <- err
	}
}

// retryArm asks for r again a moment later; the tracer serves events
// meanwhile, and the calls in progress return.
func (s *Supervisor) retryArm(r armRequest) {
	time.AfterFunc(disarmRetry, func() {
		s.hooks.mu.Lock()
		s.hooks.arms = append(s.hooks.arms, r)
		s.hooks.mu.Unlock()
		s.hooks.asked.Store(true)
		s.wake()
	})
}

// findRP returns the entry of s.rps for rp (same binary and function or
// address), or nil.
func (s *Supervisor) findRP(rp manifest.RescuePoint) *rescuePoint {
	for _, r := range s.rps {
		if r.Binary == rp.Binary && r.Function == rp.Function && r.HasAddress == rp.HasAddress && r.Address == rp.Address {
			return r
		}
	}
	return nil
}

// armManifest arms m's rescue points; errors in process skip (one that
// is ending) are not reported, and with ending it is left alone.
func (s *Supervisor) armManifest(m *manifest.Manifest, skip int, ending bool) error {
	var added []*rescuePoint
	for _, rp := range m.RescuePoints {
		r := s.findRP(rp)
		switch {
		case r == nil:
			r = &rescuePoint{RescuePoint: rp}
			s.rps = append(s.rps, r)
		case r.disarmed:
			r.disarmed = false
			r.RescuePoint = rp // its return value or scope may be new
		default:
			continue // armed already
		}
		added = append(added, r)
	}
	var errs []error
	for _, p := range s.liveProcs() {
		if ending && p.pid == skip {
			continue
		}
		held := s.stopThreads([]*process{p}, false)
		if p.gone {
			continue // it ended meanwhile: nothing left to arm
		}
		restore := noFastWhileBusy(p)
		if err := s.resolve(p, false); err != nil && p.pid != skip && procAlive(p.pid) {
			errs = append(errs, fmt.Errorf("process %d: %w", p.pid, err))
		}
		restore()
		s.resumeThreads(held)
	}
	for _, r := range added {
		s.cfg.Events.Emit(events.Event{Type: events.Armed, RescuePoint: s.rpEvent(r)})
	}
	return errors.Join(errs...)
}

func (s *Supervisor) disarmManifest(m *manifest.Manifest) error {
	var rps []*rescuePoint
	for _, rp := range m.RescuePoints {
		r := s.findRP(rp)
		if r == nil || r.disarmed {
			return fmt.Errorf("rescue point %s is not armed", rp)
		}
		rps = append(rps, r)
	}
	var busy []string
	for _, p := range s.liveProcs() {
		held := s.stopThreads([]*process{p}, false)
		if p.gone {
			continue // it ended meanwhile (its fast path is released)
		}
		if why := s.inUse(p, rps); why != "" {
			busy = append(busy, why)
		} else {
			s.removeRescuePoints(p, rps)
		}
		s.resumeThreads(held)
	}
	if len(busy) > 0 {
		return inUseError(fmt.Sprintf("not disarmed in every process after %v: %s; disarm again once the call returned", disarmPatience, strings.Join(busy, "; ")))
	}
	for _, r := range rps {
		r.disarmed = true
		s.cfg.Events.Emit(events.Event{Type: events.Disarmed, RescuePoint: s.rpEvent(r)})
	}
	return nil
}

// inUse says which thread of p is inside one of rps (or inside any
// in-process window, whose rescue point is not told apart), or "".
func (s *Supervisor) inUse(p *process, rps []*rescuePoint) string {
	for _, t := range p.threads {
		for _, f := range t.frames {
			for _, r := range rps {
				if f.rp == r {
					return fmt.Sprintf("thread %d of process %d is in a call of %s", t.tid, p.pid, r)
				}
			}
		}
	}
	if fs := p.fast; fs != nil && fs.ctl.Frame().Active {
		return fmt.Sprintf("process %d is in a rescue point's window", p.pid)
	}
	return ""
}

// removeRescuePoints restores the entries of rps in p (every thread held).
func (s *Supervisor) removeRescuePoints(p *process, rps []*rescuePoint) {
	for _, r := range rps {
		addr, ok := p.resolved[r]
		delete(p.resolved, r)
		delete(p.resolvedIn, r)
		if !ok || addr == 0 {
			continue
		}
		if fs := p.fast; fs != nil && fs.sites[addr] != nil && fs.sites[addr].rp == r {
			site := fs.sites[addr]
			if err := s.threadsClear(p, addr, uint64(len(site.orig))); err != nil {
				s.logf("disarm %s in %d: %v; its entry stays patched, and unused", r, p.pid, err)
				continue
			}
			if err := p.writeMem(addr, site.orig); err == nil {
				fs.forgetSite(addr)
				s.metrics.Armed(r.site(), -1)
				p.retire(addr, site.orig)
			}
			continue
		}
		if bp := p.breakpoints[addr]; bp != nil && bp.kind == bpRescue && bp.rp == r {
			s.unplant(p, bp)
			p.retire(addr, bp.orig)
		}
	}
}

// retire notes the bytes the disarmed entry at addr displaced.
func (p *process) retire(addr uint64, orig []byte) {
	if p.retired == nil {
		p.retired = make(map[uint64][]byte)
	}
	p.retired[addr] = append([]byte(nil), orig...)
}

// liveProcs are the processes whose rescue points can change now.
func (s *Supervisor) liveProcs() []*process {
	var out []*process
	for _, p := range s.procs {
		if !p.gone && !p.preExec {
			out = append(out, p)
		}
	}
	return out
}

// noFastWhileBusy keeps resolve from setting a fast path up in p (which
// injects system calls) while a thread of p is held at an event not yet
// handled (a fork or clone in progress, a system call stop): an injected
// call there takes the place of the program's own (a fork then fails with
// ENOSYS). Those rescue points get breakpoint entries. The function
// returned puts p's fast-path eligibility back.
func noFastWhileBusy(p *process) func() {
	busy := false
	for _, t := range p.threads {
		busy = busy || t.queued
	}
	if !busy || p.fast != nil || p.noFast != nil {
		return func() {}
	}
	p.noFast = errors.New("armed while a thread was at an event")
	return func() { p.noFast = nil }
}
