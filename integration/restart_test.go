package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// server drives recovery/testdata/progs/server.c in a container: one
// request line in, one reply line out.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	done chan struct{} // closed when ctr run has returned
}

func startServerContainer(t *testing.T, id string) *server {
	t.Helper()
	return startServerImage(t, "assure.test/server:1", id)
}

// startServerImage runs /app/server of image img as container id.
func startServerImage(t *testing.T, img, id string) *server {
	t.Helper()
	cmd := exec.Command(env.ctr, "--address", env.address, "--namespace", namespace,
		"run", "--rm", "--runtime", runtime, img, id, "/app/server", "serve", "0")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, in: in, out: bufio.NewReader(outPipe), done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			ctr(t, "tasks", "kill", "-s", "SIGKILL", id)
			<-s.done
		}
		noTask(t, id)
	})
	if l := s.line("start"); l != "ready" {
		t.Fatalf("server said %q, want ready", l)
	}
	return s
}

// exited waits for the container's end (ctr run returns), with a
// deadline, and returns its exit status.
func (s *server) exited(what string) int {
	s.t.Helper()
	select {
	case <-s.done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(60 * time.Second):
		s.t.Fatalf("%s: the container did not end within 60s", what)
		return 0
	}
}

// line reads one reply line, with a deadline.
func (s *server) line(what string) string {
	s.t.Helper()
	ch := make(chan string, 1)
	go func() {
		l, _ := s.out.ReadString('\n')
		ch <- strings.TrimSpace(l)
	}()
	select {
	case l := <-ch:
		return l
	case <-time.After(30 * time.Second):
		s.t.Fatalf("%s: no reply within 30s", what)
		return ""
	}
}

func (s *server) want(req, reply string) {
	s.t.Helper()
	if _, err := s.in.Write([]byte(req + "\n")); err != nil {
		s.t.Fatalf("request %q: %v", req, err)
	}
	if got := s.line("request " + req); got != reply {
		s.t.Fatalf("request %q: reply %q, want %q", req, got, reply)
	}
}

func isTaskOf(pid, tid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", pid, tid))
	return err == nil
}

// supervisorOf finds the pid of the container's supervisor process.
func supervisorOf(t *testing.T, id string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Only this run's: its sockets live under our containerd's dir.
		if c := cmdline(pid); strings.Contains(c, " supervise ") && strings.Contains(c, "--container "+id+" ") && strings.Contains(c, env.dir) {
			return pid
		}
	}
	return 0
}

// TestSupervisorRestart: when a container's supervisor is killed, the
// shim starts a new one that re-attaches; the task keeps running, with
// its state, and faults are recovered again.
func TestSupervisorRestart(t *testing.T) {
	const id = "restart"
	evs := subscribeEvents(t)
	s := startServerContainer(t, id)
	s.want("GOOD 1", "ok 1")
	s.want("BAD", "error")
	old := supervisorOf(t, id)
	if old == 0 {
		t.Fatal("no supervisor process for the container")
	}
	pids := taskPids(t, id)
	if len(pids) == 0 {
		t.Fatal("no task pids")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a new supervisor tracing the server", func() bool {
		n := supervisorOf(t, id)
		tr := tracer(pids[0]) // a thread of the new supervisor
		return n != 0 && n != old && tr != 0 && isTaskOf(n, tr)
	})
	s.want("GOOD 2", "ok 2")
	s.want("BAD", "error")
	s.want("GOOD 3", "ok 3")
	// Each recovery reaches containerd once: the shim goes on forwarding
	// from where it was, not from the start of the events file.
	waitFor(t, 30*time.Second, "two /assure/recovered events", func() bool {
		return evs.count(namespace+" /assure/recovered", id) >= 2
	})
	if n := evs.count(namespace+" /assure/recovered", id); n != 2 {
		t.Errorf("%d /assure/recovered events, want 2", n)
	}
	data, _ := os.ReadFile(filepath.Join(env.dir, "containerd.log"))
	if n := strings.Count(string(data), "assure: container "+id+": recovered SIGSEGV"); n != 2 {
		t.Errorf("containerd's log has %d recoveries of %s, want 2", n, id)
	}
}

// TestSupervisorRestartInsideRescuePoint: the supervisor dies while the
// server's thread is inside a rescue point (its return address diverted
// to the trampoline). The new supervisor finds the frame table the old one
// kept in the injected page, and the call returns to its caller.
func TestSupervisorRestartInsideRescuePoint(t *testing.T) {
	const id = "restart-inside"
	s := startServerContainer(t, id)
	s.want("GOOD 1", "ok 1")
	s.want("HOLD", "holding") // now inside handle_request
	old := supervisorOf(t, id)
	pids := taskPids(t, id)
	if old == 0 || len(pids) == 0 {
		t.Fatal("no supervisor or no task pid")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a new supervisor tracing the server", func() bool {
		n := supervisorOf(t, id)
		tr := tracer(pids[0])
		return n != 0 && n != old && tr != 0 && isTaskOf(n, tr)
	})
	s.want("release", "ok 2") // handle_request returns through the trampoline
	s.want("BAD", "error")
	s.want("GOOD 3", "ok 3")
}

// TestSupervisorKilledUnderLoad: the supervisor is killed five times while
// the server answers a request every millisecond. The container never
// dies with it and no request is lost: every request is answered, in
// order, by the same task (the fast path's patched entries need no
// supervisor while the shim starts a new one), and after each restart a
// fault is recovered again.
func TestSupervisorKilledUnderLoad(t *testing.T) {
	const id = "restart-load"
	s := startServerContainer(t, id)
	n, total := 0, 0
	good := func() {
		t.Helper()
		n++
		total += n % 7
		s.want(fmt.Sprintf("GOOD %d", n%7), fmt.Sprintf("ok %d", n))
	}
	good()
	pids := taskPids(t, id)
	if len(pids) == 0 {
		t.Fatal("no task pids")
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for kill := 1; kill <= 5; kill++ {
		old := supervisorOf(t, id)
		if old == 0 {
			t.Fatalf("kill %d: no supervisor for the container", kill)
		}
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; ; i++ {
			<-tick.C
			good() // meanwhile, with no supervisor or a new one
			if i%20 != 19 {
				continue
			}
			tr := tracer(pids[0])
			if nw := supervisorOf(t, id); nw != 0 && nw != old && tr != 0 && isTaskOf(nw, tr) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: no new supervisor tracing the server within 30 s (%d requests answered)", kill, n)
			}
		}
		for i := 0; i < 100; i++ {
			<-tick.C
			good()
		}
		s.want("BAD", "error")
	}
	if now := taskPids(t, id); len(now) == 0 || now[0] != pids[0] {
		t.Fatalf("task pids %v after the kills, want %d still there", now, pids[0])
	}
	// The sum the server kept is exact: no GOOD lost or applied twice, and
	// each recovered BAD undone.
	if _, err := s.in.Write([]byte("STATS\n")); err != nil {
		t.Fatal(err)
	}
	stats := s.line("STATS")
	want := fmt.Sprintf("stats requests=%d errors=5 total=%d ", n, total)
	if !strings.HasPrefix(stats, want) {
		t.Fatalf("after the kills: %q, want it to start with %q", stats, want)
	}
	t.Logf("%d requests answered across 5 supervisor kills", n)
}
