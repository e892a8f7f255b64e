package recovery_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
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
	a := startAttached(t, "mid-rollback")
	a.gate.Write([]byte{1}) // the program faults inside the rescue point now
	waitUntil(t, 20*time.Second, "the supervisor to reach the middle of the rollback", func() bool {
		return strings.Contains(a.supErr.String(), "failpoint mid-rollback reached")
	})
	a.sup.Process.Signal(syscall.SIGKILL)
	a.sup.Wait()

	select {
	case err := <-a.done:
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
	next := exec.Command(assureBin, "run", "--manifest", a.manifest, "--events", a.events, "--", "/bin/true")
	if b, err := next.CombinedOutput(); err != nil {
		t.Fatalf("next supervisor: %v\n%s", err, b)
	}
	evs, _, lines, err := readEvents(a.events)
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
	if _, err := os.Stat(a.events + ".inflight"); err == nil {
		t.Error("the journal note is still there after the next supervisor read it")
	}
}

// TestE2ESupervisorKilledAfterRollback: once a rollback is done, the
// program no longer dies with its supervisor (assure attach): killed after
// a recovery, the supervisor leaves the program running on, and it
// finishes normally.
func TestE2ESupervisorKilledAfterRollback(t *testing.T) {
	a := startAttached(t, "")
	a.gate.Write([]byte{1})
	waitUntil(t, 20*time.Second, "the recovery", func() bool { return strings.Contains(a.supErr.String(), "assure: recovered") })
	a.sup.Process.Signal(syscall.SIGKILL)
	a.sup.Wait()
	a.gate.Write([]byte{1}) // let the program end
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatalf("program: %v, want exit 0 (it must not die with its supervisor after the rollback)", err)
		}
		if want := "rc=-1\nfaults=0\ndone\n"; a.rest() != want {
			t.Errorf("program printed %q, want %q", a.rest(), want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the program did not end")
	}
}

// attached is a faults program (segv inrp gate) under `assure attach`.
type attached struct {
	gate             io.WriteCloser
	sup              *exec.Cmd
	supErr           *lockedBuf
	done             chan error // the program's end
	out              *lockedBuf // the program's stdout after its pid line
	manifest, events string
}

func (a *attached) rest() string { return a.out.String() }

// startAttached starts the program and attaches a supervisor to it, with
// the failpoint named (or none); it returns once the supervisor attached.
func startAttached(t *testing.T, failpoint string) *attached {
	t.Helper()
	if assureErr != nil {
		t.Fatal(assureErr)
	}
	work := t.TempDir()
	a := &attached{events: filepath.Join(work, "events.jsonl"), manifest: filepath.Join(work, "manifest.json"),
		supErr: &lockedBuf{}, out: &lockedBuf{}, done: make(chan error, 1)}
	if err := os.WriteFile(a.manifest, []byte(faultsManifest(0)), 0o644); err != nil {
		t.Fatal(err)
	}
	prog := exec.Command(bin("faults"), "segv", "inrp", "gate")
	a.gate, _ = prog.StdinPipe()
	out, _ := prog.StdoutPipe()
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Process.Kill() })
	rd := bufio.NewReader(out)
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "pid=") {
		t.Fatalf("program: %q, %v", line, err)
	}
	go func() {
		io.Copy(a.out, rd)
		a.done <- prog.Wait()
	}()
	a.sup = exec.Command(assureBin, "attach", "--manifest", a.manifest, "--events", a.events, strings.TrimSpace(strings.TrimPrefix(line, "pid=")))
	if failpoint != "" {
		a.sup.Env = append(os.Environ(), "ASSURE_FAILPOINT="+failpoint)
	}
	a.sup.Stderr = a.supErr
	if err := a.sup.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.sup.Process.Kill(); a.sup.Wait() })
	waitUntil(t, 20*time.Second, "the supervisor to attach", func() bool { return strings.Contains(a.supErr.String(), "attached pid") })
	return a
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
