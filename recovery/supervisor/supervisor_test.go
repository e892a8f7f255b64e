package supervisor

import (
	"bytes"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/events"
)

// A panic of the supervisor's while it handles an event of a process (a
// state it did not foresee; here, no manifest at all) is reported with an
// error event and ends that process; the supervisor itself goes on.
func TestSafeDispatchEndsTheProcess(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	pid := cmd.Process.Pid
	var out bytes.Buffer
	s := New(Config{Events: events.NewSink(nil, &out)}) // no manifest: a fault handler dereferences nil
	p := &process{pid: pid, threads: make(map[int]*thread)}
	s.procs[pid] = p
	th := &thread{tid: pid, proc: p}
	p.threads[pid] = th
	s.threads[pid] = th

	ws := unix.WaitStatus(uint32(unix.SIGSEGV)<<8 | 0x7f) // a SIGSEGV signal-delivery stop
	s.safeDispatch(pid, ws)

	if !strings.Contains(out.String(), `"type":"error"`) || !strings.Contains(out.String(), "internal error") {
		t.Errorf("events %q, want an error event about an internal error", out.String())
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the process ended with %v, want SIGKILL", cmd.ProcessState)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the process was not ended")
	}
}
