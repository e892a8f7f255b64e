package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// adoptRequest hands a process to a serving supervisor.
type adoptRequest struct {
	pid      int
	launcher bool
	done     chan error
}

// ServeConfig limits what a serving supervisor may adopt.
type ServeConfig struct {
	// Cgroup, when set, is the cgroup path (as in /proc/PID/cgroup, e.g.
	// "/default/redis", on cgroup v2 or any v1 hierarchy) every adopted
	// process must be in: a pid recycled outside the container is refused.
	Cgroup string
}

// Serve supervises the processes handed to it with Adopt, and everything
// they start, until Stop: the supervisor of a container, whose tasks
// arrive one by one (init, then execs). Unlike Run and Attach it does not
// end when no process is left. Call it on its own goroutine; it locks
// that goroutine to its OS thread for good.
func (s *Supervisor) Serve(cfg ServeConfig) error {
	defer s.markEnded()
	s.prepare()
	lockThread()
	s.serving = true
	s.serveCfg = cfg
	s.root = -1
	for {
		if s.stopReq.Load() && !s.stopping {
			s.stopping = true
			s.failAdoptions(errors.New("supervisor stopping"))
			return s.detachAll()
		}
		s.takeAdoptions()
		s.takeHooks()
		if len(s.threads) == 0 && len(s.procs) == 0 && len(s.queue) == 0 {
			// Nothing to wait for: sleep until a request comes.
			s.idle.Store(true)
			select {
			case r := <-s.adopts:
				s.idle.Store(false)
				s.adoptOne(r)
			case <-s.stopCh:
				s.idle.Store(false)
			}
			continue
		}
		tid, ws, err := s.next()
		if err != nil {
			if errors.Is(err, unix.ECHILD) {
				// Nothing left to wait for: whatever we believed
				// supervised is gone.
				for _, p := range s.procs {
					s.dropProcess(p)
				}
				s.threads = make(map[int]*thread)
				continue
			}
			return fmt.Errorf("wait: %w", err)
		}
		s.safeDispatch(tid, ws)
		s.afterEvent()
	}
}

// Adopt hands a running process to a serving supervisor and returns once
// every thread of it is seized — before the process executes another
// instruction of its program if launcher is set (it has not exec'd its
// program yet, like runc init waiting on its exec fifo; rescue points are
// resolved at the exec). Safe to call from any goroutine.
func (s *Supervisor) Adopt(pid int, launcher bool) error {
	r := adoptRequest{pid: pid, launcher: launcher, done: make(chan error, 1)}
	s.adopts <- r
	s.wake()
	return <-r.done
}

// takeAdoptions serves the pending requests (on the tracer thread).
func (s *Supervisor) takeAdoptions() {
	for {
		select {
		case r := <-s.adopts:
			s.adoptOne(r)
		default:
			return
		}
	}
}

func (s *Supervisor) failAdoptions(err error) {
	for {
		select {
		case r := <-s.adopts:
			r.done <- err
		default:
			return
		}
	}
}

func (s *Supervisor) adoptOne(r adoptRequest) {
	err := s.adoptChecked(r)
	if err != nil {
		s.emitError(r.pid, fmt.Errorf("adopt: %w", err))
	} else {
		s.cfg.Events.Emit(events.Event{Type: events.Attached, Pid: r.pid})
	}
	r.done <- err
}

func (s *Supervisor) adoptChecked(r adoptRequest) error {
	if s.procs[r.pid] != nil {
		return nil // already supervised (a child of an adopted process)
	}
	if err := s.checkCgroup(r.pid); err != nil {
		return err
	}
	if err := s.adopt(r.pid, ptrace.Options, r.launcher); err != nil {
		return fmt.Errorf("seize %d: %w", r.pid, err)
	}
	if r.launcher {
		return nil // resolved at its exec
	}
	p := s.procs[r.pid]
	procs := []*process{p}
	s.stopThreads(procs, false)
	s.adoptLeftovers(p)
	err := s.resolve(p, true)
	p.entryDone = true
	s.resumeThreads(procs)
	return err
}

// checkCgroup refuses a pid outside the expected cgroup.
func (s *Supervisor) checkCgroup(pid int) error {
	want := s.serveCfg.Cgroup
	if want == "" {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	// "0::/path" on cgroup v2, "N:controllers:/path" per v1 hierarchy.
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if parts := strings.SplitN(line, ":", 3); len(parts) == 3 && parts[2] == want {
			return nil
		}
	}
	return fmt.Errorf("process %d is not in cgroup %s (%s): refused", pid, want, strings.TrimSpace(string(data)))
}

// wake gets the tracer thread out of wait4: a child of ours that exits at
// once makes wait4(-1) return. (A signal to a tracee would wake it too,
// but could outlive a detach.) Without tracees the loop sleeps on
// channels instead, which the caller has already written: no child is
// needed then (the first adoption of a container's init, on the path of
// its start). The caller queued its request before calling wake, and the
// loop reads every queue after it leaves the channels, so a request seen
// as idle here is never missed.
func (s *Supervisor) wake() {
	select {
	case s.stopCh <- struct{}{}:
	default:
	}
	if s.idle.Load() {
		return
	}
	bin := wakeBinary()
	if bin == "" {
		return
	}
	if pid, err := syscall.ForkExec(bin, []string{bin, WakeArg}, &syscall.ProcAttr{}); err == nil {
		s.debugf("wake-up child %d", pid)
	}
}

// wakeBinary is what the wake-up child runs: the system's true(1) when
// there is one, since wait4 returns only once the child has exited and
// this binary spends milliseconds in the Go runtime's start-up before it
// can (a container's start waits for the wake-up that its init's
// hand-over makes); else this binary, whose main exits at WakeArg.
var wakeBinary = sync.OnceValue(func() string {
	for _, p := range []string{"/usr/bin/true", "/bin/true"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	self, err := os.Executable()
	if err != nil {
		return ""
	}
	return self
})
