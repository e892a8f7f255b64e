package recovery_test

// End-to-end tests of `assure run`: real C programs (testdata/progs) with
// real bug classes, each shown crashing natively and surviving under assure
// with its state exactly right afterwards.
//
// TestMain compiles the programs with gcc (-O2 -g -pthread, PIE as the
// toolchain defaults to) and builds cmd/assure once into a temporary
// directory. The whole suite is skipped (exit 0) when not running as root or
// without gcc/binutils. If cmd/assure does not build, the native halves of
// the tests still run and every assure half fails saying why.
//
// Each program prints its final state as key=value lines on stdout; the
// tests compare exact values, exit statuses (128+N for death by signal N, as
// a shell reports it) and the JSON events of `--events FILE`.
//
// Environment:
//   ASSURE_E2E_TIMEOUT  deadline of one program run (default 60s)
//   ASSURE_E2E_KEEP=1   keep the build directory (its path is printed)
//   ASSURE_E2E_BIN      use this assure binary instead of building cmd/assure

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/patch"
)

var (
	// binDir holds the compiled programs, libparse.so and assure.
	binDir string
	// assureBin is the built assure binary; empty when assureErr is set.
	assureBin string
	assureErr error
	// runTimeout bounds every single program run.
	runTimeout = 60 * time.Second
	// assureHangs counts assure runs that hit runTimeout; past
	// maxAssureHangs further assure runs fail at once, so that a hanging
	// engine cannot hold CI for 60 s per test.
	assureHangs    atomic.Int32
	maxAssureHangs = int32(3)
)

// Signals by the names the events use.
var signalNames = map[syscall.Signal]string{
	syscall.SIGSEGV: "SIGSEGV",
	syscall.SIGBUS:  "SIGBUS",
	syscall.SIGFPE:  "SIGFPE",
	syscall.SIGILL:  "SIGILL",
	syscall.SIGABRT: "SIGABRT",
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipping all tests: they need root (ptrace, userfaultfd, /proc/PID/pagemap)")
		return 0
	}
	for _, tool := range []string{"gcc", "nm", "strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("e2e: skipping all tests: %s not found (install gcc and binutils)\n", tool)
			return 0
		}
	}
	if d := os.Getenv("ASSURE_E2E_TIMEOUT"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: bad ASSURE_E2E_TIMEOUT %q: %v\n", d, err)
			return 2
		}
		runTimeout = v
	}
	// Crashing natively is part of the tests: no core files, unless a
	// program raises its own soft limit (the hard one stays).
	var core syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_CORE, &core) == nil {
		core.Cur = 0
		_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &core)
	}

	dir, err := os.MkdirTemp("", "assure-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 2
	}
	// Rescue points name binaries by absolute path as the process sees it.
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 2
	}
	binDir = dir
	if os.Getenv("ASSURE_E2E_KEEP") != "" {
		fmt.Println("e2e: build directory", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // in parallel with the C programs
		defer wg.Done()
		if b := os.Getenv("ASSURE_E2E_BIN"); b != "" {
			assureBin, assureErr = filepath.Abs(b)
			return
		}
		assureBin, assureErr = buildAssure(dir)
	}()
	cerr := buildPrograms(dir)
	wg.Wait()
	if cerr != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the test programs failed:", cerr)
		return 1
	}
	if assureErr != nil {
		fmt.Fprintf(os.Stderr, "e2e: WARNING: cmd/assure did not build; every assure run will fail:\n%v\n", assureErr)
	}
	if testing.Verbose() {
		fmt.Printf("e2e: built programs and assure in %v\n", time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("go.mod not found above the test directory")
		}
		d = parent
	}
}

func buildAssure(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "assure")
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/assure")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/assure: %v\n%s", err, b)
	}
	return out, nil
}

// Compile flags like a real server build; PIE is the toolchain's default.
// The programs that wait for the fast path get the place of its flags in
// the control block, and the flag that says the shadow is ready.
var baseCFlags = []string{"-O2", "-g", "-pthread", "-Wall",
	fmt.Sprintf("-DASSURE_CTL_FLAGS=%d", patch.FlagsOffset), fmt.Sprintf("-DASSURE_FLAG_READY=%d", patch.FlagReady)}

// The stack-smash program must really smash: stack protector on, fortified
// string functions off (they would catch the overflow before it happens).
var smashCFlags = []string{"-fstack-protector-strong", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0"}

type cBuild struct {
	out   string
	src   string
	flags []string // after the base flags
	libs  []string // after the source
}

// buildPrograms compiles every .c file of testdata/progs. Files with special
// needs are listed here; any other .c file becomes a program of its own name.
func buildPrograms(dir string) error {
	progs, err := filepath.Abs(filepath.Join("testdata", "progs"))
	if err != nil {
		return err
	}
	srcs, err := filepath.Glob(filepath.Join(progs, "*.c"))
	if err != nil || len(srcs) == 0 {
		return fmt.Errorf("no C sources in %s (%v)", progs, err)
	}
	special := map[string][]cBuild{
		"bugs.c": {
			{out: "bugs", flags: smashCFlags},
			{out: "bugs-nopie", flags: append([]string{"-no-pie"}, smashCFlags...)},
		},
		"stress.c":     {{out: "stress", flags: smashCFlags}},
		"libparse.c":   {{out: "libparse.so", flags: []string{"-shared", "-fPIC"}}},
		"useparse.c":   nil, // second phase: needs libparse.so
		"dlparse.c":    {{out: "dlparse", libs: []string{"-ldl"}}},
		"memchr_bug.c": {{out: "memchr_bug.so", flags: []string{"-shared", "-fPIC"}, libs: []string{"-ldl"}}},
	}
	var first []cBuild
	for _, src := range srcs {
		base := filepath.Base(src)
		builds, ok := special[base]
		if !ok {
			builds = []cBuild{{out: strings.TrimSuffix(base, ".c")}}
		}
		for _, b := range builds {
			b.src = src
			first = append(first, b)
		}
	}
	if err := compileAll(dir, progs, first); err != nil {
		return err
	}
	second := []cBuild{{
		out:  "useparse",
		src:  filepath.Join(progs, "useparse.c"),
		libs: []string{"-L" + dir, "-Wl,-rpath," + dir, "-lparse"},
	}}
	if err := compileAll(dir, progs, second); err != nil {
		return err
	}
	// A stripped copy, used with an "address" rescue point.
	data, err := os.ReadFile(filepath.Join(dir, "bugs"))
	if err != nil {
		return err
	}
	stripped := filepath.Join(dir, "bugs-stripped")
	if err := os.WriteFile(stripped, data, 0o755); err != nil {
		return err
	}
	if b, err := exec.Command("strip", stripped).CombinedOutput(); err != nil {
		return fmt.Errorf("strip: %v\n%s", err, b)
	}
	return nil
}

func compileAll(dir, incl string, builds []cBuild) error {
	sem := make(chan struct{}, runtime.NumCPU())
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			args := append([]string{}, baseCFlags...)
			args = append(args, b.flags...)
			args = append(args, "-I", incl, "-o", filepath.Join(dir, b.out), b.src)
			args = append(args, b.libs...)
			args = append(args, "-lm")
			if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// bin returns the absolute path of a built program.
func bin(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(binDir, name)
}

// nmAddress returns the address of a symbol of a binary as nm prints it,
// written as "0x...".
func nmAddress(t *testing.T, binary, symbol string) string {
	t.Helper()
	out, err := exec.Command("nm", bin(binary)).Output()
	if err != nil {
		t.Fatalf("nm %s: %v", binary, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == symbol && (f[1] == "T" || f[1] == "t") {
			v, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				t.Fatalf("nm %s: bad address in %q", binary, line)
			}
			return fmt.Sprintf("%#x", v)
		}
	}
	t.Fatalf("nm %s: no text symbol %s", binary, symbol)
	return ""
}

// elfInfo reports whether a binary is position independent and has .symtab.
func elfInfo(t *testing.T, binary string) (pie, symtab bool) {
	t.Helper()
	f, err := elf.Open(bin(binary))
	if err != nil {
		t.Fatalf("%s: %v", binary, err)
	}
	defer f.Close()
	return f.Type == elf.ET_DYN, f.Section(".symtab") != nil
}

// ---------------------------------------------------------------- manifests

type rescuePoint struct {
	Binary   string `json:"binary"`
	Function string `json:"function,omitempty"`
	Address  string `json:"address,omitempty"`
	Return   *int64 `json:"return,omitempty"`
	Scope    string `json:"scope,omitempty"`
}

type manifest struct {
	Version       int           `json:"version"`
	RescuePoints  []rescuePoint `json:"rescuePoints"`
	Signals       []string      `json:"signals,omitempty"`
	MaxRecoveries int           `json:"maxRecoveries,omitempty"`
}

func (m manifest) JSON() string {
	if m.Version == 0 {
		m.Version = 1
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b)
}

// fn is a rescue point by function name in a built program (absolute path)
// or, for a bare name like "libparse.so", in the module of that base name.
func fn(binary, function string, ret int64) rescuePoint {
	b := binary
	if !strings.HasSuffix(binary, ".so") {
		b = bin(binary)
	}
	return rescuePoint{Binary: b, Function: function, Return: &ret}
}

// simpleManifest has one rescue point per function, all returning ret.
func simpleManifest(binary string, ret int64, functions ...string) string {
	m := manifest{Version: 1}
	for _, f := range functions {
		m.RescuePoints = append(m.RescuePoints, fn(binary, f, ret))
	}
	return m.JSON()
}

// ------------------------------------------------------------------- events

// event mirrors the JSON lines of `assure run --events FILE`
// (recovery/CONTRACT.md).
type event struct {
	Time         string `json:"time"`
	Type         string `json:"type"`
	Pid          int    `json:"pid"`
	Tid          int    `json:"tid"`
	Signal       string `json:"signal"`
	FaultAddress string `json:"faultAddress"`
	RescuePoint  *struct {
		Binary   string `json:"binary"`
		Function string `json:"function"`
		Address  string `json:"address"`
	} `json:"rescuePoint"`
	Return              *int64   `json:"return"`
	Recovery            string   `json:"recovery"`
	RecoveryMicros      float64  `json:"recoveryMicros"`
	PagesRestored       int64    `json:"pagesRestored"`
	ThreadsRolledBack   int64    `json:"threadsRolledBack"`
	ProcessesRolledBack int64    `json:"processesRolledBack"`
	Stack               []string `json:"stack"`
	Message             string   `json:"message"`
	SignalCode          string   `json:"signalCode"`
	SenderPid           int      `json:"senderPid"`
	Count               int      `json:"count"`
}

func (e event) String() string {
	b, _ := json.Marshal(e)
	return string(b)
}

// -------------------------------------------------------------------- runs

type result struct {
	cmdline   string
	underAs   bool
	timedOut  bool
	Stdout    string
	Stderr    string
	Status    int // exit status, or 128+N for death by signal N
	Events    []event
	Raw       []map[string]any
	Lines     []string // the events file, line by line
	EventsErr error    // the events file was missing or malformed
	Took      time.Duration
	Dir       string // the run's working directory (core files land here)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n/2] + fmt.Sprintf("\n... [%d bytes cut] ...\n", len(s)-n) + s[len(s)-n/2:]
}

// String describes a run for failure messages.
func (r result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n--- run: %s", r.cmdline)
	if r.timedOut {
		fmt.Fprintf(&b, "\n--- killed at the deadline after %v", r.Took.Round(time.Millisecond))
	} else {
		fmt.Fprintf(&b, "\n--- exit status %d after %v", r.Status, r.Took.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "\n--- stdout:\n%s\n--- stderr:\n%s", clip(r.Stdout, 3000), clip(r.Stderr, 3000))
	if r.underAs {
		if r.EventsErr != nil {
			fmt.Fprintf(&b, "\n--- events: %v", r.EventsErr)
		} else {
			fmt.Fprintf(&b, "\n--- events (%d):", len(r.Events))
			for i, line := range r.Lines {
				if i == 20 {
					fmt.Fprintf(&b, "\n  ... %d more", len(r.Lines)-i)
					break
				}
				fmt.Fprintf(&b, "\n  %s", line)
			}
		}
	}
	return b.String()
}

type runSpec struct {
	manifest string // JSON; empty: run natively
	prog     string
	args     []string
	stdin    []byte
	env      []string // added to the environment of the run
	runArgs  []string // more options of assure run (before "--")
}

func runNative(t *testing.T, prog string, args ...string) result {
	t.Helper()
	return run(t, runSpec{prog: prog, args: args})
}

func runAssure(t *testing.T, manifestJSON, prog string, args ...string) result {
	t.Helper()
	return run(t, runSpec{manifest: manifestJSON, prog: prog, args: args})
}

func run(t *testing.T, s runSpec) result {
	t.Helper()
	work := t.TempDir()
	path := bin(s.prog)
	argv := append([]string{path}, s.args...)
	var eventsFile string
	if s.manifest != "" {
		if assureErr != nil {
			t.Fatalf("assure is not available, cannot run %s under it: %v", s.prog, assureErr)
		}
		if n := assureHangs.Load(); n >= maxAssureHangs {
			t.Fatalf("not running %s under assure: %d earlier assure runs hung past %v", s.prog, n, runTimeout)
		}
		mf := filepath.Join(work, "manifest.json")
		if err := os.WriteFile(mf, []byte(s.manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		eventsFile = filepath.Join(work, "events.jsonl")
		argv = append(append(append([]string{assureBin, "run", "--manifest", mf, "--events", eventsFile}, s.runArgs...), "--"), argv...)
	}
	res := result{cmdline: strings.Join(argv, " "), underAs: s.manifest != "", Dir: work}

	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = work
	if s.env != nil {
		cmd.Env = append(os.Environ(), s.env...)
	}
	if s.stdin != nil {
		cmd.Stdin = bytes.NewReader(s.stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Own process group: on a deadline the whole group (assure, the
	// program, its children) is killed, not just the first process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	err := cmd.Run()
	res.Took = time.Since(start)
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	if cmd.Process != nil {
		// Whatever is left in the group (a program child that outlived
		// the run) is killed by its group id.
		if live := liveInGroup(cmd.Process.Pid); len(live) > 0 {
			t.Logf("processes of the run still alive after it ended: %v; killing process group %d", live, cmd.Process.Pid)
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() == context.DeadlineExceeded {
		res.timedOut = true
		if res.underAs {
			assureHangs.Add(1)
			res.Events, res.Raw, res.Lines, res.EventsErr = readEvents(eventsFile)
		}
		t.Fatalf("did not finish within %v (hang?); killed.%s", runTimeout, res)
	}
	if cmd.ProcessState == nil {
		t.Fatalf("could not run: %v%s", err, res)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		res.Status = 128 + int(ws.Signal())
	case ws.Exited():
		res.Status = ws.ExitStatus()
	default:
		t.Fatalf("unexpected wait status %#x%s", ws, res)
	}
	if res.underAs {
		res.Events, res.Raw, res.Lines, res.EventsErr = readEvents(eventsFile)
	}
	return res
}

// liveInGroup lists the processes of a process group that are not zombies.
func liveInGroup(pgid int) []string {
	var live []string
	eachProc(func(pid int, comm string, f []string) {
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			live = append(live, strconv.Itoa(pid)+" "+comm+" "+f[0])
		}
	})
	return live
}

// eachProc calls fn for every process in /proc with the start of its
// stat line up to the command's closing parenthesis ("12 (name)") and the
// fields after it (state ppid pgrp ...).
func eachProc(fn func(pid int, comm string, fields []string)) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			fn(pid, s[:i+1], strings.Fields(s[i+1:]))
		}
	}
}

func readEvents(path string) ([]event, []map[string]any, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("events file: %v", err)
	}
	var evs []event
	var raw []map[string]any
	var lines []string
	for i, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		lines = append(lines, line)
		var e event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return evs, raw, lines, fmt.Errorf("events line %d %q: %v", i+1, line, err)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(line), &m)
		if _, err := time.Parse(time.RFC3339, e.Time); err != nil {
			return evs, raw, lines, fmt.Errorf("events line %d: time %q is not RFC 3339", i+1, e.Time)
		}
		evs = append(evs, e)
		raw = append(raw, m)
	}
	return evs, raw, lines, nil
}

// ofType returns the events of one type.
func (r result) ofType(typ string) []event {
	var out []event
	for _, e := range r.Events {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// ------------------------------------------------------------- assertions

var kvLine = regexp.MustCompile(`^([A-Za-z0-9_.]+)=(.*)$`)

// kv parses the key=value lines of a program's stdout.
func (r result) kv() map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if g := kvLine.FindStringSubmatch(line); g != nil {
			m[g[1]] = g[2]
		}
	}
	return m
}

func wantStatus(t *testing.T, r result, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("exit status %d, want %d%s", r.Status, want, r)
	}
}

func wantSignalDeath(t *testing.T, r result, sig syscall.Signal) {
	t.Helper()
	if r.Status != 128+int(sig) {
		t.Fatalf("exit status %d, want %d (killed by %v)%s", r.Status, 128+int(sig), sig, r)
	}
}

// wantKV asserts exact values of some keys of the program's output.
func wantKV(t *testing.T, r result, want map[string]string) {
	t.Helper()
	got := r.kv()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []string
	for _, k := range keys {
		if v, ok := got[k]; !ok {
			bad = append(bad, fmt.Sprintf("%s missing (want %q)", k, want[k]))
		} else if v != want[k] {
			bad = append(bad, fmt.Sprintf("%s=%s, want %s", k, v, want[k]))
		}
	}
	if len(bad) > 0 {
		t.Errorf("program state not as expected:\n  %s%s", strings.Join(bad, "\n  "), r)
	}
}

// wantSameKV asserts that the keys of ref (all, except those in skip) have
// the same values in r.
func wantSameKV(t *testing.T, r, ref result, skip ...string) {
	t.Helper()
	want := ref.kv()
	for _, k := range skip {
		delete(want, k)
	}
	if len(want) == 0 {
		t.Fatalf("reference run printed no state%s", ref)
	}
	wantKV(t, r, want)
}

// recovered describes the recovered events a run must have produced.
type recovered struct {
	n int // exactly this many
	// atLeast accepts more than n: with process scope a rollback returns
	// every thread to the checkpoint, so other threads redo their work
	// since, bad requests included, and fault again.
	atLeast  bool
	signal   string // "SIGSEGV", ...; "*" for any
	function string // rescuePoint.function; "" to not check
	binary   string // base name of rescuePoint.binary; "" to not check
	ret      int64
	// single-threaded, single-process, process scope: exactly one thread and
	// one process rolled back, pid == tid.
	single bool
}

// wantRecovered asserts the events of a run that survived: exactly w.n
// "recovered" events as described, no "crash" and no "error" events, and one
// "assure: recovered" line on stderr per recovery.
func wantRecovered(t *testing.T, r result, w recovered) []event {
	t.Helper()
	if r.EventsErr != nil {
		t.Fatalf("%v%s", r.EventsErr, r)
	}
	rec := r.ofType("recovered")
	if len(rec) != w.n && !(w.atLeast && len(rec) > w.n) {
		t.Fatalf("%d recovered events, want %d%s", len(rec), w.n, r)
	}
	if c := r.ofType("crash"); len(c) > 0 {
		t.Errorf("%d crash events, want none%s", len(c), r)
	}
	if c := r.ofType("error"); len(c) > 0 {
		t.Errorf("%d error events, want none (a rescue point did not resolve?)%s", len(c), r)
	}
	for i, e := range rec {
		var bad []string
		if e.Signal != w.signal && (w.signal != "*" || e.Signal == "") {
			bad = append(bad, fmt.Sprintf("signal %q, want %q", e.Signal, w.signal))
		}
		if e.RescuePoint == nil {
			bad = append(bad, "no rescuePoint")
		} else {
			if w.function != "" && e.RescuePoint.Function != w.function {
				bad = append(bad, fmt.Sprintf("rescuePoint.function %q, want %q", e.RescuePoint.Function, w.function))
			}
			if w.binary != "" && filepath.Base(e.RescuePoint.Binary) != w.binary {
				bad = append(bad, fmt.Sprintf("rescuePoint.binary %q, want .../%s", e.RescuePoint.Binary, w.binary))
			}
		}
		if e.Return == nil {
			bad = append(bad, "no return")
		} else if *e.Return != w.ret {
			bad = append(bad, fmt.Sprintf("return %d, want %d", *e.Return, w.ret))
		}
		if !(e.RecoveryMicros > 0) {
			bad = append(bad, fmt.Sprintf("recoveryMicros %v, want > 0", e.RecoveryMicros))
		}
		if e.Pid <= 0 || e.Tid <= 0 {
			bad = append(bad, fmt.Sprintf("pid %d tid %d", e.Pid, e.Tid))
		}
		if w.single {
			if e.Pid != e.Tid {
				bad = append(bad, fmt.Sprintf("pid %d != tid %d in a single-threaded program", e.Pid, e.Tid))
			}
			if e.ThreadsRolledBack != 1 || e.ProcessesRolledBack != 1 {
				bad = append(bad, fmt.Sprintf("threadsRolledBack %d processesRolledBack %d, want 1 and 1",
					e.ThreadsRolledBack, e.ProcessesRolledBack))
			}
		}
		if len(bad) > 0 {
			t.Errorf("recovered event %d: %s\n  %s%s", i, strings.Join(bad, "; "), e, r)
		}
	}
	if n := countLines(r.Stderr, "assure: recovered "); n != len(rec) {
		t.Errorf("%d 'assure: recovered' lines on stderr, want %d (one per event)%s", n, len(rec), r)
	}
	return rec
}

func countLines(s, prefix string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}
