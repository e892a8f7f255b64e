package recovery_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestE2ERedisAssert: the case of issue 12, with the distribution's
// redis-server under `assure run`, a rescue point on call(). DEBUG ASSERT
// fails an assertion: redis's crash path cancels its bio threads, resets
// its fault handlers to SIG_DFL and calls abort(). After the recovery redis
// serves the data it had, its signal dispositions are as before (SigCgt)
// and the threads brought back have their names again (bio_*, not
// redis-server).
func TestE2ERedisAssert(t *testing.T) {
	c, p, ev, sock := startRedis(t, func(redis string) string {
		return manifest{Version: 1, RescuePoints: []rescuePoint{{Binary: redis, Function: "call"}}}.JSON()
	})
	pid := redisPid(t, c, p)
	sigCgt, names := redisKernelState(t, pid)
	if !strings.Contains(strings.Join(names, " "), "bio_") {
		t.Fatalf("threads of redis before: %q, want bio_* threads among them", names)
	}

	// The rescue point is void: the command gets no reply. Recovery is
	// seen in the events.
	c.send("DEBUG", "ASSERT")
	waitEvent(t, ev, 10*time.Second, "recovered SIGABRT",
		func(e event) bool { return e.Type == "recovered" && e.Signal == "SIGABRT" }, p.describe)

	c2 := dialRedis(t, sock, p)
	if got := c2.do("GET", "k"); got != "$1 v" {
		t.Fatalf("GET after the recovery: %q%s", got, p.describe())
	}
	sigCgt2, names2 := redisKernelState(t, pid)
	if sigCgt2 != sigCgt {
		t.Errorf("SigCgt %s after the recovery, %s before: signal handlers not restored", sigCgt2, sigCgt)
	}
	if strings.Join(names2, " ") != strings.Join(names, " ") {
		t.Errorf("thread names %q after the recovery, %q before", names2, names)
	}
	c2.send("SHUTDOWN", "NOSAVE")
	if !p.waitExit(attExitTimeout) {
		t.Fatalf("redis under assure did not exit after SHUTDOWN%s", p.describe())
	}
	evs, _ := attachEvents(ev)
	for _, e := range evs {
		if e.Type == "error" || e.Type == "crash" {
			t.Errorf("%s event: %s%s", e.Type, e, p.describe())
		}
	}
}

// redisConn is a minimal RESP client: commands as arrays of bulk strings,
// replies read as one line ("+OK", "$1 v" for a bulk string, ":5").
type redisConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
	p *attProc
}

func dialRedis(t *testing.T, sock string, p *attProc) *redisConn {
	t.Helper()
	deadline := time.Now().Add(attAttachTimeout)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return &redisConn{t: t, c: c, r: bufio.NewReader(c), p: p}
		}
		if time.Now().After(deadline) || p.done() {
			t.Fatalf("connect to redis at %s: %v%s", sock, err, p.describe())
		}
		time.Sleep(10 * time.Millisecond) // polling for the socket, with a deadline
	}
}

func (r *redisConn) send(args ...string) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	r.c.SetDeadline(time.Now().Add(attReplyTimeout))
	if _, err := r.c.Write([]byte(b.String())); err != nil {
		r.t.Fatalf("send %q: %v%s", args, err, r.p.describe())
	}
}

func (r *redisConn) do(args ...string) string {
	r.t.Helper()
	r.send(args...)
	line, err := r.r.ReadString('\n')
	if err != nil {
		r.t.Fatalf("%q: %v%s", args, err, r.p.describe())
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		n, _ := strconv.Atoi(line[1:])
		buf := make([]byte, n+2)
		if _, err := ioReadFull(r.r, buf); err != nil {
			r.t.Fatalf("%q: %v", args, err)
		}
		return line[:1] + strconv.Itoa(n) + " " + string(buf[:n])
	}
	return line
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func redisPid(t *testing.T, c *redisConn, p *attProc) int {
	t.Helper()
	info := c.do("INFO", "server")
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err == nil {
				return pid
			}
		}
	}
	t.Fatalf("no process_id in INFO server: %q%s", info, p.describe())
	return 0
}

// redisKernelState returns the SigCgt mask of a process and the sorted
// names of its threads.
func redisKernelState(t *testing.T, pid int) (string, []string) {
	t.Helper()
	st, err := procStatus(pid, pid)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tid := range procTasks(t, pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid))
		if err == nil {
			names = append(names, strings.TrimSpace(string(b)))
		}
	}
	sort.Strings(names)
	return st["SigCgt"], names
}

// TestE2ERedisFirstFault: Debian's redis-server under `assure run` with a
// manifest that only heals, "firstFault": "return", its candidate call()
// (void). DEBUG SEGFAULT writes to a read-only page inside call(): the
// first time, call() returns from its frame without a rollback (redis's
// main thread holds its module GIL from start-up on, before it makes its
// threads: not a lock the candidate took, so the return is allowed); the
// second time, call() is a rescue point (learned) and the fault is
// rolled back. Redis serves its data throughout, with no crash.
func TestE2ERedisFirstFault(t *testing.T) {
	c, p, ev, sock := startRedis(t, func(redis string) string {
		return `{"version":1,"heal":{"firstFault":"return","candidates":[{"binary":"` + redis + `","function":"call"}]}}`
	})
	for i, kind := range []string{"return", "rollback"} {
		c.send("DEBUG", "SEGFAULT")
		waitEvent(t, ev, 10*time.Second, "recovered ("+kind+")", func(e event) bool {
			return e.Type == "recovered" && e.Recovery == kind
		}, p.describe)
		if kind == "return" {
			// A call that begins before the arming survives as the
			// first did: the next fault waits for it.
			waitEvent(t, ev, 10*time.Second, "learned", func(e event) bool { return e.Type == "learned" }, p.describe)
		}
		c = dialRedis(t, sock, p) // call() returned without a reply: a new connection
		if got := c.do("INCR", "n"); got != ":"+strconv.Itoa(i+1) {
			t.Fatalf("INCR after recovery %d: %q%s", i+1, got, p.describe())
		}
	}
	if got := c.do("GET", "k"); got != "$1 v" {
		t.Fatalf("GET: %q%s", got, p.describe())
	}
	c.send("SHUTDOWN", "NOSAVE")
	if !p.waitExit(attExitTimeout) {
		t.Fatalf("redis under assure did not exit after SHUTDOWN%s", p.describe())
	}
	evs, _ := attachEvents(ev)
	learned := 0
	for _, e := range evs {
		switch e.Type {
		case "error", "crash":
			t.Errorf("%s event: %s%s", e.Type, e, p.describe())
		case "learned":
			learned++
		}
	}
	if learned != 1 {
		t.Errorf("%d learned events, want 1%s", learned, p.describe())
	}
}

// startRedis starts Debian's redis-server under `assure run` with the
// manifest manifestOf gives for its path, on a unix socket, and sets k to
// v. It returns a connection, the assure process, its events file and
// redis's socket.
func startRedis(t *testing.T, manifestOf func(redis string) string) (*redisConn, *attProc, string, string) {
	t.Helper()
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (hack/install-deps.sh --redis)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	mf, ev := manifestFiles(t, manifestOf(redis))
	p := startProc(t, "assure", false, assureBin, "run", "--manifest", mf, "--events", ev, "--",
		redis, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
		"--dir", dir, "--enable-debug-command", "yes")
	c := dialRedis(t, sock, p)
	if got := c.do("SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET: %q%s", got, p.describe())
	}
	return c, p, ev, sock
}
