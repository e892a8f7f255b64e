package recovery_test

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestE2ESupervisorKilledMidRollback: a supervisor (assure attach, whose
// tracees would outlive it) is killed in the middle of a rollback (the
// failpoint holds it there). The program must not run on half rolled
// back: the kernel kills it (PTRACE_O_EXITKILL for the rollback's
// duration), and the next supervisor on the same events file says so.
func TestE2ESupervisorKilledMidRollback(t *testing.T) {
	if assureErr != nil {
		t.Fatal(assureErr)
	}
	work := t.TempDir()
	eventsFile := filepath.Join(work, "events.jsonl")
	mf := filepath.Join(work, "manifest.json")
	if err := os.WriteFile(mf, []byte(faultsManifest(0)), 0o644); err != nil {
		t.Fatal(err)
	}

	prog := exec.Command(bin("faults"), "segv", "inrp", "gate")
	gate, _ := prog.StdinPipe()
	out, _ := prog.StdoutPipe()
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	defer prog.Process.Kill()
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pid=") {
		t.Fatalf("program: %q, %v", line, err)
	}

	sup := exec.Command(assureBin, "attach", "--manifest", mf, "--events", eventsFile, strings.TrimSpace(strings.TrimPrefix(line, "pid=")))
	sup.Env = append(os.Environ(), "ASSURE_FAILPOINT=mid-rollback")
	var supErr lockedBuf
	sup.Stderr = &supErr
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	defer sup.Process.Kill()
	waitUntil(t, 20*time.Second, "the supervisor to attach", func() bool { return strings.Contains(supErr.String(), "attached pid") })
	gate.Write([]byte{1}) // the program faults inside the rescue point now
	waitUntil(t, 20*time.Second, "the supervisor to reach the middle of the rollback", func() bool {
		return strings.Contains(supErr.String(), "failpoint mid-rollback reached")
	})
	sup.Process.Signal(syscall.SIGKILL)
	sup.Wait()

	done := make(chan error, 1)
	go func() { rest, _ := rd.ReadString(0); _ = rest; done <- prog.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("program ended with %v, want death by SIGKILL", err)
		}
		ws := ee.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("program ended with %v, want death by SIGKILL (never run on half rolled back)", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the program lives on after its supervisor died mid-rollback")
	}

	// The next supervisor on the same events file says what happened.
	next := exec.Command(assureBin, "run", "--manifest", mf, "--events", eventsFile, "--", "/bin/true")
	if b, err := next.CombinedOutput(); err != nil {
		t.Fatalf("next supervisor: %v\n%s", err, b)
	}
	evs, _, lines, err := readEvents(eventsFile)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		found = found || e.Type == "error" && strings.Contains(e.Message, "died in the middle of a rollback of pid")
	}
	if !found {
		t.Errorf("no event saying the supervisor died mid-rollback:\n%s", strings.Join(lines, "\n"))
	}
	if _, err := os.Stat(eventsFile + ".inflight"); err == nil {
		t.Error("the journal note is still there after the next supervisor read it")
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitUntil polls cond until it holds, failing the test at the deadline.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}
