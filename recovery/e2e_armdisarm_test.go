package recovery_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2EArmDisarm: a program started under `assure run --control SOCK`
// without rescue points gets one with `assure arm --control`, without a
// restart: a fault in it is then recovered; a manifest naming a function
// that does not exist is refused and arms nothing; `assure disarm` takes
// it out again (a second disarm says it is not armed), and the same
// fault then kills the program, as without assure. Events say armed and
// disarmed; the control socket goes when assure exits.
func TestE2EArmDisarm(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	dir := t.TempDir()
	sock, events := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "events.jsonl")
	good, bad := filepath.Join(dir, "good.json"), filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(simpleManifest("server", -1, "handle_request")), 0o644)
	os.WriteFile(bad, []byte(simpleManifest("server", -1, "no_such_function")), 0o644)
	p := startProc(t, "assure", true, assureBin, "run", "--control", sock, "--events", events, "--", bin("server"), "serve")
	s := &attServer{attProc: p, extra: func() string { return "" }}
	if l := s.readLine("start", s.extra); l != "ready" {
		t.Fatalf("server said %q, want ready%s", l, s.describe())
	}
	ctl := func(args ...string) (string, error) {
		out, err := exec.Command(assureBin, append(args[:1:1], append([]string{"--control", sock}, args[1:]...)...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := ctl("arm", bad); err == nil || !strings.Contains(out, "no_such_function") {
		t.Fatalf("arm of a missing function: %v\n%s", err, out)
	}
	if out, err := ctl("arm", good); err != nil {
		t.Fatalf("arm: %v\n%s", err, out)
	}
	s.want("BAD", "error")
	s.want("GOOD 2", "ok 1") // the faulty request was undone
	if out, err := ctl("disarm", good); err != nil {
		t.Fatalf("disarm: %v\n%s", err, out)
	}
	if out, err := ctl("disarm", good); err == nil || !strings.Contains(out, "is not armed") {
		t.Fatalf("second disarm: %v\n%s", err, out)
	}
	s.stdin.Write([]byte("BAD\n"))
	select {
	case <-p.exited:
	case <-time.After(attExitTimeout):
		t.Fatalf("the fault after disarm did not end the program%s", s.describe())
	}
	if st := p.ws.ExitStatus(); st != 128+int(syscall.SIGSEGV) {
		t.Errorf("assure exited %d, want %d (the program's SIGSEGV, as without assure)%s", st, 128+int(syscall.SIGSEGV), s.describe())
	}
	data, _ := os.ReadFile(events)
	var types []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		for _, typ := range []string{"armed", "recovered", "disarmed", "crash"} {
			if strings.Contains(l, `"type":"`+typ+`"`) {
				types = append(types, typ)
			}
		}
	}
	if got := strings.Join(types, " "); got != "armed recovered disarmed crash" {
		t.Errorf("events %q, want armed recovered disarmed crash\n%s", got, data)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("control socket left behind")
	}
}

// TestE2EArmDisarmAttached: the same through `assure attach --control`,
// to a server that was started without assure: armed, a fault recovered;
// disarmed, the fault ends it as it would unsupervised.
func TestE2EArmDisarmAttached(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	dir := t.TempDir()
	sock, good := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(simpleManifest("server", -1, "handle_request")), 0o644)
	s := startServer(t, 0)
	startProc(t, "assure", false, assureBin, "attach", "--control", sock, strconv.Itoa(s.pid()))
	waitUntil(t, attAttachTimeout, "the control socket", func() bool { _, err := os.Stat(sock); return err == nil })
	ctl := func(op string) (string, error) {
		out, err := exec.Command(assureBin, op, "--control", sock, good).CombinedOutput()
		return string(out), err
	}
	if out, err := ctl("arm"); err != nil {
		t.Fatalf("arm: %v\n%s", err, out)
	}
	s.want("BAD", "error")
	if out, err := ctl("disarm"); err != nil {
		t.Fatalf("disarm: %v\n%s", err, out)
	}
	s.stdin.Write([]byte("BAD\n"))
	select {
	case <-s.exited:
	case <-time.After(attExitTimeout):
		t.Fatalf("the fault after disarm did not end the server%s", s.describe())
	}
	if !s.ws.Signaled() || s.ws.Signal() != syscall.SIGSEGV {
		t.Errorf("server ended with %v, want SIGSEGV%s", s.ws, s.describe())
	}
}

// TestE2EArmDisarmWhileForking: rescue points armed and disarmed over and
// over in a program that forks children back to back, each calling the
// rescue point: a child forked just before an arm or a disarm, whose fork
// the supervisor learns of only after it, must hold exactly what its
// bookkeeping says (no breakpoint of a disarmed rescue point, which would
// kill it with SIGTRAP; the breakpoint of an armed one). Every child
// exits 0, and the program ends as it would without assure.
func TestE2EArmDisarmWhileForking(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	dir := t.TempDir()
	sock, events, m := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "events.jsonl"), filepath.Join(dir, "m.json")
	os.WriteFile(m, []byte(simpleManifest("forker", -1, "rp_work")), 0o644)
	p := startProc(t, "assure", true, assureBin, "run", "--control", sock, "--events", events, "--", bin("forker"))
	s := &attServer{attProc: p, extra: func() string { return "" }}
	if l := s.readLine("start", s.extra); l != "ready" {
		t.Fatalf("forker said %q, want ready%s", l, s.describe())
	}
	const cycles = 40
	for i := 0; i < cycles; i++ {
		for _, op := range []string{"arm", "disarm"} {
			// A disarm waits for the children's calls in progress.
			if out, err := exec.Command(assureBin, op, "--control", sock, m).CombinedOutput(); err != nil {
				t.Fatalf("%s %d: %v\n%s%s", op, i, err, out, s.describe())
			}
		}
	}
	s.stdin.Close()
	l := s.readLine("the end", s.extra)
	if !strings.HasPrefix(l, "children=") || !strings.Contains(l, " abnormal=0 ") {
		t.Fatalf("forker said %q, want every child to exit 0%s", l, s.describe())
	}
	if !p.waitExit(attExitTimeout) || p.ws.ExitStatus() != 0 {
		t.Fatalf("forker under assure did not exit 0%s", s.describe())
	}
	t.Logf("%s after %d arm/disarm cycles", l, cycles)
}
