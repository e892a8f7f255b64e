// Package supervisor is the recovery engine: it traces every thread and
// process of a program, plants breakpoints at rescue points, checkpoints
// at their entry and, when a fault hits before they return, rolls the
// program back and makes the function return its error value.
//
// All ptrace requests run on one goroutine locked to its OS thread (the
// kernel ties tracees to the tracer thread). Everything below runs on it;
// only Stop may be called from elsewhere.
package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	runtimedebug "runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// Config configures a Supervisor.
type Config struct {
	Manifest *manifest.Manifest
	Events   *events.Sink
	// Probes are functions whose calls are counted (ProbeStats).
	Probes []Probe
	// Stdio, when set, are the program's standard input, output and
	// error for Run (else the supervisor's); NewProcessGroup puts the
	// program in a process group of its own, led by it.
	Stdio           []*os.File
	NewProcessGroup bool
	// OnLearn is called (on the tracer thread) with each rescue point a
	// crash taught (manifest "heal"), once it is armed.
	OnLearn func(manifest.RescuePoint)
	// NoFastPath keeps every rescue point's entry a breakpoint, as
	// ASSURE_FASTPATH=0 does (discovery: probes may sit on the functions
	// the fast path hooks).
	NoFastPath bool
	// Log receives diagnostic lines (not events); nil discards them.
	Log io.Writer
}

// Supervisor supervises one program: a process tree started with Run or
// attached to with Attach.
type Supervisor struct {
	cfg      Config
	procs    map[int]*process // by tgid
	threads  map[int]*thread  // by tid
	orphans  map[int]unix.WaitStatus
	queue    []waitEvent
	seq      uint64 // creation order of threads and processes
	nextID   checkpoint.ID
	root     int // pid whose exit status is reported
	rootWS   unix.WaitStatus
	rootDone bool
	// attached: the root was attached to, not started (Attach).
	attached bool
	stopReq  atomic.Bool
	rootPid  atomic.Int64
	stopping bool
	limiter  map[*rescuePoint][]time.Time
	// serving: Serve mode (processes arrive with Adopt).
	serving  bool
	serveCfg ServeConfig
	adopts   chan adoptRequest
	stopCh   chan struct{}
	// idle: Serve's loop sleeps on its channels, not in wait4 (wake).
	idle    atomic.Bool
	rps     []*rescuePoint
	metrics *Metrics
	logged  map[string]bool // logOnce keys
	// parked are the threads held at the gate; parkTimer wakes the main
	// loop to apply parkPatience (parkTimerFired: it did).
	parked         map[*thread]bool
	parkTimer      *time.Timer
	parkTimerFired atomic.Bool
	hooks          hooks
	// derived caches the healing candidates of static analysis, by
	// module (learn.go).
	derived map[string]map[uint64]candidates.Candidate
	// ended is closed when the event loop returns (endOnce).
	ended   chan struct{}
	endOnce sync.Once
}

type waitEvent struct {
	tid int
	ws  unix.WaitStatus
}

// New returns a supervisor for the manifest in cfg.
func New(cfg Config) *Supervisor {
	return &Supervisor{
		cfg:     cfg,
		procs:   make(map[int]*process),
		threads: make(map[int]*thread),
		orphans: make(map[int]unix.WaitStatus),
		limiter: make(map[*rescuePoint][]time.Time),
		adopts:  make(chan adoptRequest, 16),
		stopCh:  make(chan struct{}, 1),
		metrics: newMetrics(),
		parked:  make(map[*thread]bool),
		ended:   make(chan struct{}),
	}
}

// markEnded tells waiters that the event loop returned.
func (s *Supervisor) markEnded() { s.endOnce.Do(func() { close(s.ended) }) }

func (s *Supervisor) logf(format string, args ...any) {
	if s.cfg.Log != nil {
		fmt.Fprintf(s.cfg.Log, "assure: "+format+"\n", args...)
	}
}

// debugf traces the supervisor's decisions when ASSURE_DEBUG is set.
func (s *Supervisor) debugf(format string, args ...any) {
	if debug {
		fmt.Fprintf(os.Stderr, "assure[debug]: "+format+"\n", args...)
	}
}

var debug = os.Getenv("ASSURE_DEBUG") != ""

func (s *Supervisor) emitError(pid int, err error) {
	s.cfg.Events.Emit(events.Event{Type: events.Error, Pid: pid, Message: err.Error()})
}

// Stop asks the supervisor to detach: breakpoints are removed and the
// program keeps running. Safe to call from any goroutine.
func (s *Supervisor) Stop() {
	if s.stopReq.Swap(true) {
		return
	}
	s.wake()
}

// WakeArg is the hidden first argument of the child Stop starts; main
// exits at once when it sees it.
const WakeArg = "__assure_wake"

// loop handles tracee events until every tracee is gone or a stop was
// requested and done.
func (s *Supervisor) loop() error {
	defer s.markEnded()
	for len(s.threads) > 0 || len(s.procs) > 0 {
		if s.stopReq.Load() && !s.stopping {
			s.stopping = true
			return s.detachAll()
		}
		s.takeHooks()
		s.debugf("next: queue %d", len(s.queue))
		tid, ws, err := s.next()
		s.debugf("event %d %#x", tid, uint32(ws))
		if err != nil {
			if errors.Is(err, unix.ECHILD) {
				return nil
			}
			return fmt.Errorf("wait: %w", err)
		}
		s.safeDispatch(tid, ws)
		s.afterEvent()
	}
	return nil
}

// safeDispatch is dispatch, with a panic (a bug of ours on a state of a
// process we did not foresee) reported and that process ended: the
// supervisor goes on with the others.
func (s *Supervisor) safeDispatch(tid int, ws unix.WaitStatus) {
	defer func() {
		if v := recover(); v != nil {
			s.abandon(tid, v)
		}
	}()
	s.dispatch(tid, ws)
}

// abandon kills the process of thread tid after an internal error: its
// breakpoints, diverted returns and checkpoints can no longer be trusted,
// and a half-supervised process is worse than one that ended.
func (s *Supervisor) abandon(tid int, v any) {
	s.logf("internal error on an event of %d: %v\n%s", tid, v, runtimedebug.Stack())
	p := s.procs[tid]
	if t := s.threads[tid]; t != nil {
		p = t.proc
	}
	if p == nil {
		return
	}
	s.emitError(p.pid, fmt.Errorf("internal error: %v; the process is killed", v))
	unix.Kill(p.pid, unix.SIGKILL)
}

// next returns the next deferred event, or waits for one.
func (s *Supervisor) next() (int, unix.WaitStatus, error) {
	if len(s.queue) > 0 {
		e := s.queue[0]
		s.queue = s.queue[1:]
		return e.tid, e.ws, nil
	}
	return ptrace.Wait(-1, 0)
}

// lockThread pins the calling goroutine to its OS thread for good: a
// tracer thread must never run anything else, and must not be reused.
func lockThread() { runtime.LockOSThread() }

// ExitStatus converts a wait status into a shell-style exit code.
func ExitStatus(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}
