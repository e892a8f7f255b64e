package discover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// instance is one run of the program under a supervisor of its own.
type instance struct {
	sup    *supervisor.Supervisor
	exited chan struct{}
	status int
	err    error
	evs    *eventLog
	log    *os.File
	// attached: to a running process (Config.Pid), which stop detaches
	// from rather than kills.
	attached bool
}

// start runs the program with manifest m (nil: no rescue point) and
// probes, its output appended to the log file at logPath.
func (d *run) start(m *manifest.Manifest, probes []supervisor.Probe) (*instance, error) {
	if m == nil {
		m = &manifest.Manifest{Version: manifest.Version, MaxRecoveries: 0}
	}
	log, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		log.Close()
		return nil, err
	}
	defer null.Close()
	in := &instance{exited: make(chan struct{}), evs: &eventLog{}, log: log}
	sink := events.NewSink(nil, in.evs)
	in.sup = supervisor.New(supervisor.Config{Manifest: m, Events: sink, Log: log, Probes: probes, NoFastPath: true,
		Stdio: []*os.File{null, log, log}, NewProcessGroup: true})
	in.attached = d.cfg.Pid != 0
	go func() {
		defer close(in.exited)
		if in.attached {
			in.status, in.err = -1, in.sup.Attach(d.cfg.Pid)
			return
		}
		in.status, in.err = in.sup.Run(d.cfg.Self, d.program, d.cfg.Args)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for in.sup.RootPid() == 0 {
		select {
		case <-in.exited:
			log.Close()
			return nil, fmt.Errorf("%s did not start: %v (status %d)", d.program, in.err, in.status)
		default:
		}
		if time.Now().After(deadline) {
			in.stop()
			return nil, fmt.Errorf("%s did not start within 10s", d.program)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	return in, nil
}

// alive reports whether the program still runs.
func (in *instance) alive() bool {
	select {
	case <-in.exited:
		return false
	default:
		return true
	}
}

// stop kills the program's process group (detaches from an attached
// process) and waits for the supervisor.
func (in *instance) stop() {
	if in.attached {
		in.sup.Stop()
		<-in.exited
		in.log.Close()
		return
	}
	if pid := in.sup.RootPid(); pid > 0 {
		unix.Kill(-pid, unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
	}
	select {
	case <-in.exited:
	case <-time.After(10 * time.Second):
		in.sup.Stop()
		<-in.exited
	}
	in.log.Close()
	reapExited()
}

// reapExited reaps the children of this process that have exited and that
// no one waits for any more: processes of a stopped instance whose tracer
// (the instance's supervisor) has returned. The workload runner lives on.
func reapExited() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// workload runs the user's workload once: nil when it exits 0.
func (d *run) workload(ctx context.Context) error {
	return d.workloadFor(ctx, d.cfg.WorkloadTimeout)
}

func (d *run) workloadFor(ctx context.Context, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.runner.run(d.cfg.Workload, timeout)
}

// stillServes checks, before a test in a running process, that it is
// there and the workload passes: earlier tests may have broken it.
func (d *run) stillServes(ctx context.Context) error {
	if unix.Kill(d.cfg.Pid, 0) != nil {
		return fmt.Errorf("process %d is gone", d.cfg.Pid)
	}
	if err := d.workload(ctx); err != nil {
		return fmt.Errorf("the workload no longer passes on process %d, unsupervised (%v): an earlier test left it broken", d.cfg.Pid, err)
	}
	return nil
}

// waitUp runs the workload until it passes, while the program runs:
// the program is up.
func (d *run) waitUp(ctx context.Context, in *instance) error {
	deadline := time.Now().Add(d.cfg.StartTimeout)
	var last error
	for left := time.Until(deadline); left > 0; left = time.Until(deadline) {
		if !in.alive() {
			return fmt.Errorf("the program exited (status %d) before the workload passed: %v", in.status, last)
		}
		if last = d.workloadFor(ctx, min(left, d.cfg.WorkloadTimeout)); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond): // the program is starting: retry the workload
		}
	}
	return fmt.Errorf("the workload did not pass within %v of the program's start; its last run: %v", d.cfg.StartTimeout, last)
}

// eventLog keeps the events a supervisor emitted (JSON lines).
type eventLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	list []events.Event
}

func (l *eventLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadBytes('\n')
		if err != nil {
			l.buf.Write(line) // a partial line: wait for the rest
			break
		}
		var e events.Event
		if json.Unmarshal(line, &e) == nil {
			l.list = append(l.list, e)
		}
	}
	return len(p), nil
}

// of returns the events of type typ.
func (l *eventLog) of(typ string) []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []events.Event
	for _, e := range l.list {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}
