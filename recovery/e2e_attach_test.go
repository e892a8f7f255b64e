package recovery_test

// End-to-end tests of `assure attach` and of the signal handling of
// `assure run`, with testdata/progs/server.c: a long-running server that
// answers request lines on stdin with reply lines on stdout.
//
// The tests talk to the server over pipes, request by request, each reply
// awaited with a deadline; the events file of `assure attach` is polled for
// a condition, with a deadline. Nothing waits a fixed time. Every process a
// test starts runs in its own process group, killed when the test ends.

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Deadlines of single steps. The whole file runs in about a second when
// nothing is wrong; these only bound how long a broken engine can hold CI.
const (
	attReplyTimeout  = 5 * time.Second  // one request and its reply
	attAttachTimeout = 10 * time.Second // assure attach up to its "attached" event
	attEventTimeout  = 5 * time.Second  // an event after what caused it
	attExitTimeout   = 5 * time.Second  // a process to exit once told to
)

// ------------------------------------------------------------ processes

// attProc is a process started by a test, in its own process group, with
// stdout (optionally) read line by line and stderr going to a file.
type attProc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  *os.File    // write end of the process's stdin; nil if none
	lines  chan string // stdout lines; closed at EOF
	errf   string      // stderr file
	exited chan struct{}
	ws     syscall.WaitStatus // valid once exited is closed
}

// startProc starts argv in its own process group. With pipes, stdin and
// stdout are pipes the test drives; otherwise stdin is /dev/null and
// stdout goes to the stderr file too.
func startProc(t *testing.T, name string, pipes bool, argv ...string) *attProc {
	t.Helper()
	p := &attProc{t: t, name: name, exited: make(chan struct{})}
	p.errf = filepath.Join(t.TempDir(), name+".stderr")
	errFile, err := os.Create(p.errf)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Dir = t.TempDir()
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = errFile
	var inR, outR, outW *os.File
	if pipes {
		if inR, p.stdin, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		if outR, outW, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		p.cmd.Stdin, p.cmd.Stdout = inR, outW
	} else {
		p.cmd.Stdout = errFile
	}
	err = p.cmd.Start()
	if inR != nil {
		inR.Close()
		outW.Close()
	}
	if err != nil {
		if p.stdin != nil {
			p.stdin.Close()
			outR.Close()
		}
		t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	pid := p.cmd.Process.Pid
	go func() {
		_ = p.cmd.Wait()
		if p.cmd.ProcessState != nil {
			p.ws = p.cmd.ProcessState.Sys().(syscall.WaitStatus)
		}
		close(p.exited)
	}()
	if pipes {
		p.lines = make(chan string, 64)
		go func() {
			defer close(p.lines)
			defer outR.Close()
			r := bufio.NewReader(outR)
			for {
				line, err := r.ReadString('\n')
				if line != "" {
					p.lines <- strings.TrimRight(line, "\n")
				}
				if err != nil {
					return
				}
			}
		}()
	}
	t.Cleanup(func() {
		// The whole group, whatever the test left running.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		if p.stdin != nil {
			p.stdin.Close()
		}
		select {
		case <-p.exited:
		case <-time.After(attExitTimeout):
			t.Errorf("%s (pid %d) did not die of SIGKILL within %v", name, pid, attExitTimeout)
		}
	})
	return p
}

func (p *attProc) pid() int { return p.cmd.Process.Pid }

func (p *attProc) stderr() string {
	b, _ := os.ReadFile(p.errf)
	return string(b)
}

func (p *attProc) done() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// status is the exit status, or 128+N for death by signal N.
func (p *attProc) status() int {
	if p.ws.Signaled() {
		return 128 + int(p.ws.Signal())
	}
	return p.ws.ExitStatus()
}

func (p *attProc) describe() string {
	state := "running"
	if p.done() {
		state = fmt.Sprintf("exited, status %d", p.status())
	}
	return fmt.Sprintf("\n--- %s (pid %d, %s): %s\n--- its stderr:\n%s",
		p.name, p.pid(), state, strings.Join(p.cmd.Args, " "), clip(p.stderr(), 6000))
}

// waitExit waits for the process to end; false at the deadline.
func (p *attProc) waitExit(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.exited:
		return true
	case <-timer.C:
		return false
	}
}

// rest returns the remaining stdout lines once the process has exited;
// the test fails if stdout does not end within the deadline (a process
// left behind holding it).
func (p *attProc) rest() []string {
	p.t.Helper()
	timer := time.NewTimer(attExitTimeout)
	defer timer.Stop()
	var out []string
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return out
			}
			out = append(out, line)
		case <-timer.C:
			p.t.Fatalf("stdout of %s still open %v after it exited (a process left holding it?); read so far %q%s",
				p.name, attExitTimeout, out, p.describe())
		}
	}
}

// readLine returns the next stdout line, failing the test at the deadline
// or when stdout ends; extra adds context to the failure message.
func (p *attProc) readLine(what string, extra func() string) string {
	p.t.Helper()
	timer := time.NewTimer(attReplyTimeout)
	defer timer.Stop()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.waitExit(attExitTimeout)
			p.t.Fatalf("%s: stdout of %s ended without a reply%s%s", what, p.name, p.describe(), extra())
		}
		return line
	case <-timer.C:
		p.t.Fatalf("%s: no reply from %s within %v%s%s", what, p.name, attReplyTimeout, p.describe(), extra())
	}
	return ""
}

// ------------------------------------------------------------- the server

// attServer is server.c in "serve" mode, driven over its pipes.
type attServer struct {
	*attProc
	extra func() string // more context for failures (the attached assure)
}

func startServer(t *testing.T, workers int) *attServer {
	t.Helper()
	p := startProc(t, "server", true, bin("server"), "serve", strconv.Itoa(workers))
	s := &attServer{attProc: p, extra: func() string { return "" }}
	if l := s.readLine("start", s.extra); l != "ready" {
		t.Fatalf("server said %q, want \"ready\"%s", l, s.describe())
	}
	return s
}

// request sends one request line and returns the reply line.
func (s *attServer) request(req string) string {
	s.t.Helper()
	if _, err := s.stdin.Write([]byte(req + "\n")); err != nil {
		s.t.Fatalf("request %q: %v%s%s", req, err, s.describe(), s.extra())
	}
	return s.readLine(fmt.Sprintf("request %q", req), s.extra)
}

// want sends a request and asserts the exact reply.
func (s *attServer) want(req, reply string) {
	s.t.Helper()
	if got := s.request(req); got != reply {
		s.t.Fatalf("request %q: reply %q, want %q%s%s", req, got, reply, s.describe(), s.extra())
	}
}

var statsLine = regexp.MustCompile(`^stats requests=(\d+) errors=(\d+) total=(\d+) fds=(\d+) maps=(\d+) threads=(\d+)$`)

type serverStats struct {
	requests, errors, total, fds, maps, threads int
}

// pagemapFDs counts the descriptors of pid open on its own pagemap (the
// fast path's; at most one).
func pagemapFDs(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == fmt.Sprintf("/proc/%d/pagemap", pid) {
			n++
		}
	}
	if n > 1 {
		t.Errorf("%d descriptors of %d on its pagemap, want at most 1", n, pid)
	}
	return n
}

func (s *attServer) stats() serverStats {
	s.t.Helper()
	l := s.request("STATS")
	g := statsLine.FindStringSubmatch(l)
	if g == nil {
		s.t.Fatalf("STATS: reply %q is not a stats line%s%s", l, s.describe(), s.extra())
	}
	n := make([]int, 6)
	for i := range n {
		n[i], _ = strconv.Atoi(g[i+1])
	}
	return serverStats{n[0], n[1], n[2], n[3], n[4], n[5]}
}

// ------------------------------------------------------------- assure attach

// attachEvents reads the complete lines of an events file written by a
// running assure (a line still being written is not looked at).
func attachEvents(path string) ([]event, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	var evs []event
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return evs, fmt.Errorf("events line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// waitEvent polls the events file until an event satisfies match, and
// returns it; the test fails at the deadline.
func waitEvent(t *testing.T, path string, d time.Duration, what string, match func(event) bool, info func() string) event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		evs, err := attachEvents(path)
		if err != nil {
			t.Fatalf("%s: %v%s", what, err, info())
		}
		for _, e := range evs {
			if match(e) {
				return e
			}
		}
		select {
		case <-ctx.Done():
			data, _ := os.ReadFile(path)
			t.Fatalf("%s: no such event within %v; events file:\n%s%s", what, d, data, info())
		case <-tick.C:
		}
	}
}

// startAttach starts `assure attach` on pid in the background.
func startAttach(t *testing.T, manifestJSON string, pid int) (p *attProc, eventsFile string) {
	t.Helper()
	if assureErr != nil {
		t.Fatalf("assure is not available: %v", assureErr)
	}
	mf, eventsFile := manifestFiles(t, manifestJSON)
	p = startProc(t, "assure", false, assureBin, "attach", "--manifest", mf, "--events", eventsFile, strconv.Itoa(pid))
	return p, eventsFile
}

// manifestFiles writes a manifest into a new directory and names the
// events file beside it.
func manifestFiles(t *testing.T, manifestJSON string) (manifestFile, eventsFile string) {
	t.Helper()
	dir := t.TempDir()
	manifestFile = filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(manifestFile, []byte(manifestJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return manifestFile, filepath.Join(dir, "events.jsonl")
}

// ------------------------------------------------------------------ /proc

// procStatus returns the fields of /proc/PID/task/TID/status.
func procStatus(pid, tid int) (map[string]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, nil
}

func procTasks(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatalf("tasks of %d: %v", pid, err)
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids
}

// wantTracer asserts that every thread of pid is traced by a thread of the
// process tracer (TracerPid names the tracing thread, and assure traces from
// one OS thread of its own), or by nobody when tracer is 0; and, when
// untraced, that no thread is stopped.
func wantTracer(t *testing.T, pid, tracer int, info func() string) {
	t.Helper()
	for _, tid := range procTasks(t, pid) {
		st, err := procStatus(pid, tid)
		if err != nil {
			t.Fatalf("status of %d/%d: %v%s", pid, tid, err, info())
		}
		tp := st["TracerPid"]
		switch {
		case tracer == 0 && tp != "0":
			t.Errorf("thread %d of %d: TracerPid %s, want 0 (not traced)%s", tid, pid, tp, info())
		case tracer != 0:
			n, err := strconv.Atoi(tp)
			if _, serr := os.Stat(fmt.Sprintf("/proc/%d/task/%s", tracer, tp)); err != nil || n == 0 || serr != nil {
				t.Errorf("thread %d of %d: TracerPid %s, want a thread of assure (pid %d)%s", tid, pid, tp, tracer, info())
			}
		}
		if tracer == 0 && (strings.HasPrefix(st["State"], "T") || strings.HasPrefix(st["State"], "t")) {
			t.Errorf("thread %d of %d is stopped (State %q) after detach%s", tid, pid, st["State"], info())
		}
	}
}

type mapping struct {
	start, end, offset uint64
	perms, path        string
}

func procMaps(t *testing.T, pid int) []mapping {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var ms []mapping
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		a, b, _ := strings.Cut(f[0], "-")
		var m mapping
		m.start, _ = strconv.ParseUint(a, 16, 64)
		m.end, _ = strconv.ParseUint(b, 16, 64)
		m.offset, _ = strconv.ParseUint(f[2], 16, 64)
		m.perms = f[1]
		if len(f) >= 6 {
			m.path = f[5]
		}
		ms = append(ms, m)
	}
	return ms
}

// funcCode locates a function of a PIE binary in the memory of a process
// running it: the code in the ELF file, and where it is loaded.
type funcCode struct {
	addr uint64 // run-time address
	file []byte // the bytes in the ELF file
}

func locateFunc(t *testing.T, pid int, binary, symbol string) funcCode {
	t.Helper()
	path := bin(binary)
	vaddr, err := strconv.ParseUint(strings.TrimPrefix(nmAddress(t, binary, symbol), "0x"), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_DYN {
		t.Fatalf("%s is not PIE (type %v)", binary, f.Type)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	size := uint64(0)
	for _, s := range syms {
		if s.Name == symbol && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			if s.Value != vaddr {
				t.Fatalf("%s: nm says %s is at %#x, .symtab says %#x", binary, symbol, vaddr, s.Value)
			}
			size = s.Size
		}
	}
	if size == 0 {
		t.Fatalf("%s: no size for %s in .symtab", binary, symbol)
	}
	// The file offset of the code, from the PT_LOAD segment holding it;
	// the load base from the lowest PT_LOAD and the mapping of file
	// offset 0.
	pageSize := uint64(os.Getpagesize())
	var fileOff uint64
	minVaddr, found := ^uint64(0), false
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_LOAD {
			continue
		}
		minVaddr = min(minVaddr, prog.Vaddr&^(pageSize-1))
		if vaddr >= prog.Vaddr && vaddr+size <= prog.Vaddr+prog.Filesz {
			if prog.Flags&elf.PF_X == 0 {
				t.Fatalf("%s: %s is in a segment that is not executable", binary, symbol)
			}
			fileOff, found = vaddr-prog.Vaddr+prog.Off, true
		}
	}
	if !found {
		t.Fatalf("%s: %s at %#x is in no PT_LOAD segment", binary, symbol, vaddr)
	}
	code := make([]byte, size)
	raw, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.ReadAt(code, int64(fileOff)); err != nil {
		t.Fatalf("%s: read %d bytes at file offset %#x: %v", binary, size, fileOff, err)
	}

	maps := procMaps(t, pid)
	var base uint64
	found = false
	for _, m := range maps {
		if m.path == path && m.offset == 0 {
			base, found = m.start-minVaddr, true
			break
		}
	}
	if !found {
		t.Fatalf("%s is not mapped at file offset 0 in process %d", path, pid)
	}
	addr := base + vaddr
	// Cross-check: the mapping holding that address maps that file offset
	// of the binary, executable.
	ok := false
	for _, m := range maps {
		if addr >= m.start && addr+size <= m.end {
			ok = m.path == path && m.offset+(addr-m.start) == fileOff && strings.Contains(m.perms, "x")
			if !ok {
				t.Fatalf("%s at %#x (base %#x): mapped by %+v, want %s at file offset %#x, executable", symbol, addr, base, m, path, fileOff)
			}
		}
	}
	if !ok {
		t.Fatalf("%s at %#x (base %#x): not inside one mapping of process %d", symbol, addr, base, pid)
	}
	return funcCode{addr: addr, file: code}
}

// readMem reads the memory of a process through /proc/PID/mem.
func readMem(t *testing.T, pid int, addr uint64, n int) []byte {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		t.Fatalf("read %d bytes at %#x of process %d: %v", n, addr, pid, err)
	}
	return b
}

// ------------------------------------------------------------------- tests

// TestE2EAttach: a server started natively, with requests already served,
// is supervised by `assure attach` from the outside, recovers a fault in its
// rescue point with its state kept, and after SIGTERM to assure is left
// exactly as it was: no tracer, no breakpoint, no extra fd or mapping, no
// stopped thread, and a fault in the rescue point kills it natively again.
//
//	single   requests handled on the main thread
//	workers  two worker threads run handle_request while the main thread
//	         waits in read()
//	unused   two workers; assure attaches and detaches without the rescue
//	         point ever being entered (breakpoint planted, never hit)
func TestE2EAttach(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int
		use     bool // send requests while attached
	}{{"single", 0, true}, {"workers", 2, true}, {"unused", 2, false}} {
		t.Run(tc.name, func(t *testing.T) { testAttach(t, tc.workers, tc.use) })
	}
}

func testAttach(t *testing.T, workers int, use bool) {
	srv := startServer(t, workers)
	pid := srv.pid()

	// Natively: a few requests, and the state and resources before attach.
	want := serverStats{threads: 1 + workers} // expected counters, as they go
	good := func(n int) {
		t.Helper()
		want.requests++
		want.total += n
		srv.want(fmt.Sprintf("GOOD %d", n), fmt.Sprintf("ok %d", want.requests))
	}
	for i := 1; i <= 3; i++ {
		good(i)
	}
	before := srv.stats()
	if again := srv.stats(); again != before {
		t.Fatalf("STATS not stable natively: %+v then %+v%s", before, again, srv.describe())
	}
	want.fds, want.maps = before.fds, before.maps
	if before != want {
		t.Fatalf("native stats %+v, want %+v%s", before, want, srv.describe())
	}
	code := locateFunc(t, pid, "server", "handle_request")
	if mem := readMem(t, pid, code.addr, len(code.file)); !bytes.Equal(mem, code.file) {
		t.Fatalf("handle_request differs from the ELF file before attach:\n mem  % x\n file % x", mem, code.file)
	}
	wantTracer(t, pid, 0, srv.describe)

	// Attach.
	as, eventsFile := startAttach(t, simpleManifest("server", -1, "handle_request"), pid)
	ctxInfo := func() string {
		data, _ := os.ReadFile(eventsFile)
		return as.describe() + "\n--- events file:\n" + string(data)
	}
	srv.extra = ctxInfo
	waitEvent(t, eventsFile, attAttachTimeout, "attached event",
		func(e event) bool { return e.Type == "attached" }, func() string { return srv.describe() + ctxInfo() })
	if as.done() {
		t.Fatalf("assure attach exited after its attached event%s", ctxInfo())
	}
	wantTracer(t, pid, as.pid(), ctxInfo)
	if mem := readMem(t, pid, code.addr, len(code.file)); bytes.Equal(mem, code.file) {
		t.Logf("note: while attached, handle_request is unchanged in memory (no software breakpoint in the function?)")
	} else {
		t.Logf("while attached, handle_request starts with % x (file: % x)", mem[:min(8, len(mem))], code.file[:min(8, len(code.file))])
	}

	nrec := 0
	if use {
		// A fault in the rescue point is recovered, the state is kept:
		// BAD's own changes are rolled back, errors counts it.
		srv.want("BAD", "error")
		want.errors++
		nrec++
		rec := waitEvent(t, eventsFile, attEventTimeout, "recovered event",
			func(e event) bool { return e.Type == "recovered" }, ctxInfo)
		if rec.Pid != pid {
			t.Errorf("recovered event: pid %d, want %d (the server)\n  %s", rec.Pid, pid, rec)
		}
		if workers > 0 && (rec.Tid == pid || rec.Tid <= 0) {
			t.Errorf("recovered event: tid %d, want a worker thread of %d (not the main thread)\n  %s", rec.Tid, pid, rec)
		}
		good(10)
		// A checkpoint shows no descriptor; the fast path keeps exactly
		// one, the process's own /proc/self/pagemap, at a high number.
		wantFDs := want.fds + pagemapFDs(t, pid)
		if during := srv.stats(); during != (serverStats{want.requests, want.errors, want.total, wantFDs, during.maps, want.threads}) {
			t.Errorf("stats while attached %+v, want %+v except maps (fds as before attach, plus the fast path's pagemap descriptor)%s",
				during, want, ctxInfo())
		}
	}

	// SIGTERM to assure alone: it detaches and exits 0.
	if err := syscall.Kill(as.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !as.waitExit(attExitTimeout) {
		t.Fatalf("assure attach did not exit within %v of SIGTERM (detach hung?); the server meanwhile:%s%s",
			attExitTimeout, procSnapshot(pid), ctxInfo())
	}
	if as.status() != 0 {
		t.Errorf("assure attach exited with status %d after SIGTERM, want 0%s", as.status(), ctxInfo())
	}
	evs, _, lines, err := readEvents(eventsFile)
	r := result{cmdline: strings.Join(as.cmd.Args, " "), underAs: true, Stderr: as.stderr(),
		Status: as.status(), Events: evs, Lines: lines, EventsErr: err}
	wantRecovered(t, r, recovered{n: nrec, signal: "SIGSEGV", function: "handle_request", binary: "server", ret: -1, single: workers == 0})
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Type)
		if (e.Type == "attached" || e.Type == "detached") && e.Pid != pid {
			t.Errorf("%s event: pid %d, want %d\n  %s", e.Type, e.Pid, pid, e)
		}
	}
	wantKinds := "attached detached"
	if use {
		wantKinds = "attached recovered detached"
	}
	if got := strings.Join(kinds, " "); got != wantKinds {
		t.Errorf("events %q, want %q%s", got, wantKinds, r)
	}

	// The server is left as it was before attach.
	wantTracer(t, pid, 0, func() string { return srv.describe() + ctxInfo() })
	if mem := readMem(t, pid, code.addr, len(code.file)); !bytes.Equal(mem, code.file) {
		t.Errorf("handle_request at %#x differs from the ELF file after detach (breakpoint left behind?):\n mem  % x\n file % x",
			code.addr, mem, code.file)
	}
	if after := srv.stats(); after != want {
		t.Errorf("stats after detach %+v, want %+v (fds, mappings and threads as before attach)%s", after, want, ctxInfo())
	}
	good(20)

	// Last: without supervision, BAD kills the server natively with SIGSEGV
	// (a breakpoint left behind would make it SIGTRAP).
	if _, err := srv.stdin.Write([]byte("BAD\n")); err != nil {
		t.Fatal(err)
	}
	if !srv.waitExit(attExitTimeout) {
		t.Fatalf("after detach, BAD did not crash the server within %v%s", attExitTimeout, srv.describe())
	}
	if srv.status() != 128+int(syscall.SIGSEGV) {
		t.Errorf("after detach, BAD: server status %d, want %d (SIGSEGV)%s", srv.status(), 128+int(syscall.SIGSEGV), srv.describe())
	}
	for _, l := range srv.rest() {
		t.Errorf("server replied %q to BAD after detach, want no reply (it crashes)", l)
	}
	if evs2, _ := attachEvents(eventsFile); len(evs2) != len(evs) {
		t.Errorf("events written after assure exited: %d events, was %d", len(evs2), len(evs))
	}
}

// procSnapshot describes the threads of a process for a failure message:
// state, tracer and /proc/PID/task/TID/syscall (number, args, sp, pc).
func procSnapshot(pid int) string {
	var b strings.Builder
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, _ := procStatus(pid, tid)
		sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
		fmt.Fprintf(&b, "\n  thread %d: State %q TracerPid %s syscall %q", tid, st["State"], st["TracerPid"], strings.TrimSpace(string(sc)))
	}
	if b.Len() == 0 {
		return "\n  (gone)"
	}
	return b.String()
}

// TestE2EAttachErrors: `assure attach` fails with exit status 1 and a
// message naming what is wrong, and leaves a live target untouched.
func TestE2EAttachErrors(t *testing.T) {
	if assureErr != nil {
		t.Fatalf("assure is not available: %v", assureErr)
	}
	good := simpleManifest("server", -1, "handle_request")
	attach := func(t *testing.T, manifestJSON, pid string) (int, string) {
		t.Helper()
		dir := t.TempDir()
		mf := filepath.Join(dir, "manifest.json")
		if err := os.WriteFile(mf, []byte(manifestJSON), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), attExitTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, assureBin, "attach", "--manifest", mf, "--events", filepath.Join(dir, "events.jsonl"), pid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("assure attach %s did not exit within %v:\n%s", pid, attExitTimeout, out.String())
		}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("assure attach %s: %v", pid, err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	}

	t.Run("no-such-pid", func(t *testing.T) {
		// PIDs are below pid_max: pid_max itself never exists.
		data, err := os.ReadFile("/proc/sys/kernel/pid_max")
		if err != nil {
			t.Fatal(err)
		}
		pid := strings.TrimSpace(string(data))
		if err := syscall.Kill(mustAtoi(t, pid), 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("kill(%s, 0) = %v, want ESRCH", pid, err)
		}
		status, out := attach(t, good, pid)
		if status != 1 || !strings.Contains(out, pid) {
			t.Errorf("assure attach %s (no such process): status %d, output:\n%s\nwant status 1 and a message naming %s", pid, status, out, pid)
		}
	})

	t.Run("not-a-pid", func(t *testing.T) {
		status, out := attach(t, good, "abc")
		if status == 0 || !strings.Contains(out, `"abc"`) {
			t.Errorf("assure attach abc: status %d, output:\n%s\nwant a failure naming \"abc\"", status, out)
		}
	})

	// Bad manifests, against a live server that must come out untouched.
	srv := startServer(t, 0)
	srv.want("GOOD 1", "ok 1")
	pid := strconv.Itoa(srv.pid())
	server := bin("server")
	for _, tc := range []struct {
		name, manifest, field string
	}{
		{"return-type", `{"version":1,"rescuePoints":[{"binary":"` + server + `","function":"handle_request","return":"minus one"}]}`, `"return"`},
		{"unknown-field", `{"version":1,"rescuePoints":[{"binary":"` + server + `","function":"handle_request","retrun":-1}]}`, `"retrun"`},
		{"unknown-signal", `{"version":1,"rescuePoints":[{"binary":"` + server + `","function":"handle_request","return":-1}],"signals":["SIGFOO"]}`, `"signals"`},
		{"version", `{"version":2,"rescuePoints":[{"binary":"` + server + `","function":"handle_request","return":-1}]}`, `"version"`},
		{"no-such-function", `{"version":1,"rescuePoints":[{"binary":"` + server + `","function":"no_such_function","return":-1}]}`, `"function"`},
	} {
		t.Run("manifest-"+tc.name, func(t *testing.T) {
			status, out := attach(t, tc.manifest, pid)
			if status != 1 || !strings.Contains(out, tc.field) {
				t.Errorf("assure attach with a bad manifest: status %d, output:\n%s\nwant status 1 and a message naming the field %s\nmanifest: %s",
					status, out, tc.field, tc.manifest)
			}
		})
	}
	wantTracer(t, srv.pid(), 0, srv.describe)
	srv.want("GOOD 2", "ok 2")
	srv.want("QUIT", "bye")
	if !srv.waitExit(attExitTimeout) || srv.status() != 0 {
		t.Errorf("server did not exit 0 on QUIT%s", srv.describe())
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestE2ERunForwardsSignals: a signal sent to the `assure run` process only
// (not its process group) reaches the program, which decides what it means:
// its handler runs and its exit status is assure's; without a handler the
// signal kills it and assure exits 128+N.
func TestE2ERunForwardsSignals(t *testing.T) {
	if assureErr != nil {
		t.Fatalf("assure is not available: %v", assureErr)
	}
	m := simpleManifest("server", -1, "handle_request")
	for _, tc := range []struct {
		name   string
		mode   string
		sig    syscall.Signal
		status int
		output string // "" for none
	}{
		{"handler-SIGTERM", "sigterm", syscall.SIGTERM, 5, "got SIGTERM"},
		{"default-SIGTERM", "wait", syscall.SIGTERM, 128 + int(syscall.SIGTERM), ""},
		{"default-SIGINT", "wait", syscall.SIGINT, 128 + int(syscall.SIGINT), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mf := filepath.Join(t.TempDir(), "manifest.json")
			if err := os.WriteFile(mf, []byte(m), 0o644); err != nil {
				t.Fatal(err)
			}
			as := startProc(t, "assure", true, assureBin, "run", "--manifest", mf, "--", bin("server"), tc.mode)
			if l := as.readLine("readiness", func() string { return "" }); l != "ready" {
				t.Fatalf("program said %q, want \"ready\"%s", l, as.describe())
			}
			// To assure only: the program is in the same process group.
			if err := syscall.Kill(as.pid(), tc.sig); err != nil {
				t.Fatal(err)
			}
			if !as.waitExit(attExitTimeout) {
				t.Fatalf("assure run did not exit within %v of %v%s", attExitTimeout, tc.sig, as.describe())
			}
			rest := as.rest()
			if as.ws.Signaled() {
				t.Errorf("assure run was killed by %v itself, want it to exit %d%s", as.ws.Signal(), tc.status, as.describe())
			} else if as.status() != tc.status {
				t.Errorf("assure run exited %d after %v, want %d%s", as.status(), tc.sig, tc.status, as.describe())
			}
			out := strings.Join(rest, "\n")
			if tc.output != "" && !strings.Contains(out, tc.output) {
				t.Errorf("program output after the signal %q, want it to contain %q%s", out, tc.output, as.describe())
			}
			if tc.output == "" && out != "" {
				t.Errorf("program output after the signal %q, want none%s", out, as.describe())
			}
			if live := liveInGroup(as.pid()); len(live) > 0 {
				t.Errorf("processes left after assure run exited: %v", live)
			}
		})
	}
}

// TestE2EDetachInsideRescuePoint: SIGTERM reaches `assure attach` while the
// server's only thread is inside its rescue point, blocked in read(), and
// so traced system call by system call (the journal). assure detaches at
// once, leaves no tracer, breakpoint, mapping or descriptor behind, and the
// call goes on natively: the read returns the next line, the rescue point
// returns, the server answers as before.
func TestE2EDetachInsideRescuePoint(t *testing.T) {
	s := startServer(t, 0)
	s.want("GOOD 5", "ok 1")
	before := s.stats()
	a, ev := startAttach(t, simpleManifest("server", -1, "handle_request"), s.pid())
	s.extra = a.describe
	waitEvent(t, ev, attAttachTimeout, "attached", func(e event) bool { return e.Type == "attached" }, a.describe)
	if got := s.request("HOLD"); got != "holding" {
		t.Fatalf("HOLD: reply %q, want \"holding\"%s", got, a.describe())
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !a.waitExit(attExitTimeout) {
		t.Fatalf("assure attach did not exit within %v of SIGTERM%s", attExitTimeout, a.describe())
	}
	if a.status() != 0 {
		t.Errorf("assure attach: exit status %d, want 0%s", a.status(), a.describe())
	}
	waitEvent(t, ev, attEventTimeout, "detached", func(e event) bool { return e.Type == "detached" }, a.describe)
	wantTracer(t, s.pid(), 0, a.describe)
	s.want("release", "ok 2")
	s.want("GOOD 7", "ok 3")
	after := s.stats()
	if after.fds != before.fds || after.maps != before.maps || after.threads != before.threads || after.total != 12 {
		t.Errorf("stats after detach %+v, before attach %+v (want the same fds, mappings and threads, total 12)%s", after, before, a.describe())
	}
}
