// Command bench measures what an armed rescue point costs under assure.
//
//	go run ./hack/bench [-calls N] [-mem 4,256] [-rounds 5] [-capture 3] [-native-only] [-readme]
//	go run ./hack/bench -start-only [-start-rounds 20] [-readme]
//	go run ./hack/bench -servers-only [-servers 3] [-readme]
//
// It compiles rpbench.c (embedded) with gcc -O2 into a temporary directory
// and, for each amount of touched heap memory, measures side by side in one
// run:
//
//   - the per-call cost of the rescue point rp_call, natively, under
//     `assure run` with rp_call declared (return -1) on the fast path and
//     with the fast path off (ASSURE_FASTPATH=0: the breakpoint path),
//     timed inside the program with CLOCK_MONOTONIC, and the floor: the
//     native program doing before each call, by itself, what the kernel
//     does for an in-process checkpoint (PAGEMAP_SCAN with write-protect
//     through its own userfaultfd, and the copy of the written pages);
//   - the recovery time: the same program with every K-th call dereferencing
//     NULL, under assure; recoveryMicros is read from the --events file;
//   - the cost of the journal (capture.go): at the first heap size, rescue
//     points that make system calls the journal does not record, calls it
//     records, and a program with idle threads, under assure with the
//     journal off (ASSURE_JOURNAL=off) and on, side by side.
//
// Native and assure runs are interleaved over several rounds (the order
// alternating each round) and medians are reported, since the machine is
// shared and noisy. The result is a Markdown table on stdout; with -readme
// it also replaces the text between <!-- bench:begin --> and
// <!-- bench:end --> in README.md.
//
// Then (or alone, with -start-only) it measures the start overhead of the
// assure runtime against io.containerd.runc.v2 (start.go), recorded
// between <!-- bench-start:begin --> and <!-- bench-start:end -->; and
// (or alone, with -servers-only) Debian's redis-server natively and under
// assure (servers.go), between <!-- bench-servers:begin --> and
// <!-- bench-servers:end -->.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/assure-rt/assure/recovery/patch"
)

//go:embed rpbench.c
var rpbenchSource []byte

const (
	beginMarker = "<!-- bench:begin -->"
	endMarker   = "<!-- bench:end -->"
	// Bounds on the adaptive number of calls per timed run.
	minCalls = 100
	maxCalls = 50_000_000
)

type config struct {
	calls      int
	mems       []int
	rounds     int
	faults     int
	faultEvery int
	budget     time.Duration
	runTimeout time.Duration
	nativeOnly bool
	capture    int // rounds of the journal measurement; 0: none
	readme     bool
	assure     string
	// serverNames filters the real servers (empty: all).
	serverNames string
	root        string
	keep        bool
	verbose     bool
	// startRounds: pairs of container starts per image (0: none);
	// startOnly: only those.
	startRounds int
	startOnly   bool
	// servers: rounds of the real-server measurement (0: none);
	// serversOnly: only that; serverRequests per redis-benchmark run.
	servers        int
	serversOnly    bool
	serverRequests int
}

func main() {
	log := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }
	cfg, err := parseFlags()
	if err != nil {
		log("%v", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log("error: %v", err)
		stop()
		os.Exit(1)
	}
}

func parseFlags() (*config, error) {
	cfg := &config{}
	var mem string
	flag.IntVar(&cfg.calls, "calls", 0, "rescue-point calls per timed run (0: chosen to fit -budget)")
	flag.StringVar(&mem, "mem", "4,256", "comma-separated MiB of heap the program touches before the loop")
	flag.IntVar(&cfg.rounds, "rounds", 5, "interleaved native/assure rounds (medians are reported)")
	flag.IntVar(&cfg.faults, "faults", 20, "recoveries per recovery run")
	flag.IntVar(&cfg.faultEvery, "fault-every", 10, "in a recovery run, every K-th call faults")
	flag.DurationVar(&cfg.budget, "budget", 4*time.Minute, "time budget for the whole run (adaptive -calls; rounds past it are skipped)")
	flag.DurationVar(&cfg.runTimeout, "run-timeout", 3*time.Minute, "limit for one run of the program")
	flag.BoolVar(&cfg.nativeOnly, "native-only", false, "measure only the native runs (no bin/assure needed)")
	flag.IntVar(&cfg.capture, "capture", 3, "rounds of the journal's cost (rescue points that make system calls, idle threads; journal off and on); 0 to skip")
	flag.BoolVar(&cfg.readme, "readme", false, "also rewrite the benchmark section of README.md")
	flag.StringVar(&cfg.assure, "assure", "", "path of the assure binary (default: bin/assure in the module root)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (program, manifests, events)")
	flag.BoolVar(&cfg.verbose, "v", false, "log every run")
	flag.IntVar(&cfg.startRounds, "start-rounds", 20, "container starts per runtime and image for the start overhead (0: skip it)")
	flag.BoolVar(&cfg.startOnly, "start-only", false, "measure only the start overhead of the container runtime")
	flag.IntVar(&cfg.servers, "servers", 3, "rounds of the real-server measurement (redis, memcached, nginx natively and under assure; 0: skip it)")
	flag.BoolVar(&cfg.serversOnly, "servers-only", false, "measure only the real servers")
	flag.IntVar(&cfg.serverRequests, "server-requests", 10000, "requests per load-generator run (×4 when pipelined)")
	flag.StringVar(&cfg.serverNames, "server", "", "comma-separated servers to measure, by the first word of their table's name (redis-benchmark, memcached, nginx, kvthreads); default all")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./hack/bench [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", flag.Args())
	}
	for _, f := range strings.Split(mem, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 64<<10 {
			return nil, fmt.Errorf("-mem: %q is not a number of MiB (0..65536)", f)
		}
		cfg.mems = append(cfg.mems, n)
	}
	switch {
	case len(cfg.mems) == 0:
		return nil, errors.New("-mem: no sizes")
	case cfg.calls < 0 || cfg.calls > math.MaxInt32:
		return nil, errors.New("-calls: out of range")
	case cfg.rounds < 1:
		return nil, errors.New("-rounds: at least 1")
	case cfg.faults < 1 || cfg.faultEvery < 1:
		return nil, errors.New("-faults and -fault-every: at least 1")
	case int64(cfg.faults)*int64(cfg.faultEvery) > math.MaxInt32:
		return nil, errors.New("-faults × -fault-every: too large")
	case cfg.readme && cfg.nativeOnly:
		return nil, errors.New("-readme needs the assure figures: drop -native-only")
	case cfg.startOnly && (cfg.nativeOnly || cfg.startRounds < 1):
		return nil, errors.New("-start-only needs -start-rounds ≥ 1 and the assure runtime")
	case cfg.serversOnly && (cfg.nativeOnly || cfg.servers < 1 || cfg.startOnly):
		return nil, errors.New("-servers-only needs -servers ≥ 1 and assure, without -start-only")
	case cfg.serverRequests < 1000:
		return nil, errors.New("-server-requests: at least 1000")
	}
	return cfg, nil
}

// result is what one run of rpbench printed.
type result struct {
	nsPerCall float64
	calls     int
	errors    int
	wall      time.Duration
	recovery  []float64 // recoveryMicros of each "recovered" event
	// firstMax: the longest of the calls before the timed loop, µs;
	// shadow: the MiB assure's shadow holds (-1: none).
	firstMax, shadow float64
}

type bench struct {
	cfg  *config
	dir  string
	prog string
	log  func(string, ...any)
}

func run(ctx context.Context, cfg *config, log func(string, ...any)) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cfg.root = root
	if !cfg.nativeOnly {
		if cfg.assure == "" {
			cfg.assure = filepath.Join(root, "bin", "assure")
		}
		if abs, err := filepath.Abs(cfg.assure); err == nil {
			cfg.assure = abs
		}
		if fi, err := os.Stat(cfg.assure); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("assure binary %s not found or not executable: run `make build` first (or use -native-only)", cfg.assure)
		}
	}
	if cfg.readme {
		if _, _, err := splitReadme(filepath.Join(root, "README.md")); err != nil {
			return err
		}
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return errors.New("gcc not found: run hack/install-deps.sh")
	}

	dir, err := os.MkdirTemp("", "assure-bench-")
	if err != nil {
		return err
	}
	if cfg.keep {
		log("keeping %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{cfg: cfg, dir: dir, log: log}
	src := filepath.Join(dir, "rpbench.c")
	if err := os.WriteFile(src, rpbenchSource, 0o644); err != nil {
		return err
	}
	b.prog = filepath.Join(dir, "rpbench")
	// The program waits for the fast path's flag that says the shadow is
	// ready (assure's control block, mapped in the process).
	defs := []string{fmt.Sprintf("-DASSURE_CTL_FLAGS=%d", patch.FlagsOffset), fmt.Sprintf("-DASSURE_FLAG_READY=%d", patch.FlagReady)}
	if out, err := exec.CommandContext(ctx, gcc, append(append([]string{"-O2", "-pthread"}, defs...), "-o", b.prog, src)...).CombinedOutput(); err != nil {
		return fmt.Errorf("gcc -O2 -pthread rpbench.c: %v\n%s", err, out)
	}
	if cfg.startOnly {
		return b.startSection(ctx)
	}
	if cfg.serversOnly {
		return b.serversSection(ctx)
	}
	if !cfg.nativeOnly {
		if err := b.writeManifests(); err != nil {
			return err
		}
	}
	start := time.Now()

	// Calls per timed run: fixed, or chosen so that the timed loops of all
	// rounds use at most a third of the budget, and at most 1 s per run.
	nNative, nAssure, nFloor, nSlow := cfg.calls, cfg.calls, cfg.calls, cfg.calls
	if cfg.calls == 0 {
		runs := cfg.rounds * len(cfg.mems) * 4
		target := min(time.Second, cfg.budget/3/time.Duration(runs))
		target = max(target, 10*time.Millisecond)
		r, err := b.runNative(ctx, cfg.mems[0], 2_000_000, 0, plain)
		if err != nil {
			return fmt.Errorf("calibration (native): %w", err)
		}
		nNative = callsFor(target, r.nsPerCall)
		if r, err = b.runNative(ctx, cfg.mems[0], 2000, 0, floor); err != nil {
			return fmt.Errorf("calibration (floor): %w", err)
		}
		nFloor = callsFor(target, r.nsPerCall)
		if !cfg.nativeOnly {
			r, err := b.runAssure(ctx, cfg.mems[0], 2000, 0, plain)
			if err != nil {
				return fmt.Errorf("calibration (under assure): %w", err)
			}
			nAssure = callsFor(target, r.nsPerCall)
			if r, err = b.runAssure(ctx, cfg.mems[0], 200, 0, slow); err != nil {
				return fmt.Errorf("calibration (under assure, slow path): %w", err)
			}
			nSlow = callsFor(target, r.nsPerCall)
		}
		log("calls per timed run: native %d, floor %d, assure %d, slow path %d (target %v per run)",
			nNative, nFloor, nAssure, nSlow, target.Round(time.Millisecond))
	}

	type acc struct {
		native, floor, assure, slow, recovery []float64
		firstMax, shadow                      []float64 // of the fast-path runs
	}
	accs := make([]acc, len(cfg.mems))
	rounds := 0
	var roundTime time.Duration
	for round := 0; round < cfg.rounds; round++ {
		if round > 0 && time.Since(start)+roundTime > cfg.budget {
			log("time budget %v reached: stopping after %d rounds", cfg.budget, round)
			break
		}
		t0 := time.Now()
		for i, mem := range cfg.mems {
			// native, floor, fast path, slow path; backwards every other
			// round.
			for pass := 0; pass < 4; pass++ {
				k := pass
				if round%2 == 1 {
					k = 3 - pass
				}
				var r *result
				var err error
				switch {
				case k == 0:
					r, err = b.runNative(ctx, mem, nNative, 0, plain)
				case k == 1:
					r, err = b.runNative(ctx, mem, nFloor, 0, floor)
				case cfg.nativeOnly:
					continue
				case k == 2:
					r, err = b.runAssure(ctx, mem, nAssure, 0, plain)
				default:
					r, err = b.runAssure(ctx, mem, nSlow, 0, slow)
				}
				if err != nil {
					return err
				}
				dst := []*[]float64{&accs[i].native, &accs[i].floor, &accs[i].assure, &accs[i].slow}[k]
				*dst = append(*dst, r.nsPerCall)
				if k == 2 {
					accs[i].firstMax = append(accs[i].firstMax, r.firstMax)
					accs[i].shadow = append(accs[i].shadow, r.shadow)
				}
			}
			if !cfg.nativeOnly {
				r, err := b.runAssure(ctx, mem, cfg.faults*cfg.faultEvery, cfg.faultEvery, plain)
				if err != nil {
					return err
				}
				accs[i].recovery = append(accs[i].recovery, r.recovery...)
			}
		}
		rounds++
		roundTime = time.Since(t0)
		log("round %d/%d done in %v", round+1, cfg.rounds, roundTime.Round(time.Millisecond))
	}

	var rows []row
	for i, mem := range cfg.mems {
		rw := row{mem: mem, native: median(accs[i].native), floor: median(accs[i].floor), assure: math.NaN(),
			slow: math.NaN(), recMedian: math.NaN(), recP90: math.NaN(), firstMax: math.NaN(), shadow: math.NaN()}
		if !cfg.nativeOnly {
			rw.assure = median(accs[i].assure)
			rw.slow = median(accs[i].slow)
			rw.recMedian = median(accs[i].recovery)
			rw.recP90 = percentile(accs[i].recovery, 0.90)
			rw.recN = len(accs[i].recovery)
			rw.firstMax = percentile(accs[i].firstMax, 1)
			rw.shadow = median(accs[i].shadow)
		}
		rows = append(rows, rw)
	}
	var capture string
	if !cfg.nativeOnly && cfg.capture > 0 {
		crows, err := b.capture(ctx, cfg.mems[0], cfg.capture, 300*time.Millisecond)
		if err != nil {
			return err
		}
		capture = captureMarkdown(crows, cfg.mems[0], cfg.capture)
	}
	md := b.markdown(rows, rounds, [4]int{nNative, nFloor, nAssure, nSlow}, time.Since(start)) + capture
	fmt.Print(md)
	if cfg.readme {
		if err := rewriteReadme(filepath.Join(cfg.root, "README.md"), md); err != nil {
			return err
		}
		log("README.md updated")
	}
	if cfg.startRounds > 0 && !cfg.nativeOnly {
		fmt.Println()
		if err := b.startSection(ctx); err != nil {
			return err
		}
	}
	if cfg.servers > 0 && !cfg.nativeOnly {
		fmt.Println()
		return b.serversSection(ctx)
	}
	return nil
}

// startSection measures the start overhead and prints (and with -readme
// records) its table.
func (b *bench) startSection(ctx context.Context) error {
	md, err := b.startOverhead(ctx)
	if err != nil {
		return err
	}
	fmt.Print(md)
	if b.cfg.readme {
		if err := rewriteSection(filepath.Join(b.cfg.root, "README.md"), startBegin, startEnd, md); err != nil {
			return err
		}
		b.log("README.md updated (start overhead)")
	}
	return nil
}

func callsFor(target time.Duration, nsPerCall float64) int {
	if nsPerCall <= 0 || math.IsNaN(nsPerCall) {
		return maxCalls
	}
	n := float64(target.Nanoseconds()) / nsPerCall
	return int(math.Max(minCalls, math.Min(maxCalls, n)))
}

func (b *bench) writeManifests() error {
	for _, m := range []struct {
		name string
		max  int
	}{
		{"calls.json", 0},
		{"faults.json", max(100, 2*b.cfg.faults)},
	} {
		man := map[string]any{
			"version": 1,
			"rescuePoints": []map[string]any{
				{"binary": b.prog, "function": "rp_call", "return": -1},
			},
		}
		if m.max > 0 {
			man["maxRecoveries"] = m.max
		}
		data, err := json.MarshalIndent(man, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(b.dir, m.name), append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) runNative(ctx context.Context, mem, calls, faultEvery int, l load) (*result, error) {
	args := progArgs(mem, calls, faultEvery, l)
	r, _, err := b.exec(ctx, nil, b.prog, args...)
	if err != nil {
		return nil, fmt.Errorf("native run (%d MiB, %d calls): %w", mem, calls, err)
	}
	if r.errors != 0 {
		return nil, fmt.Errorf("native run (%d MiB): rp_call failed %d times, expected 0", mem, r.errors)
	}
	b.logRun("native", mem, r)
	return r, nil
}

func (b *bench) runAssure(ctx context.Context, mem, calls, faultEvery int, l load) (*result, error) {
	manifest := filepath.Join(b.dir, "calls.json")
	what := "rescue-point calls"
	if faultEvery > 0 {
		manifest = filepath.Join(b.dir, "faults.json")
		what = "recoveries"
	}
	events := filepath.Join(b.dir, "events.jsonl")
	_ = os.Remove(events)
	args := append([]string{"run", "--manifest", manifest, "--events", events, "--", b.prog},
		progArgs(mem, calls, faultEvery, l)...)
	var env []string
	if l.journalOff {
		env = append(env, "ASSURE_JOURNAL=off")
	}
	if l.slowPath {
		env = append(env, "ASSURE_FASTPATH=0")
	}
	r, stderr, err := b.exec(ctx, env, b.cfg.assure, args...)
	if err != nil {
		return nil, fmt.Errorf("assure run (%s, %d MiB, %d calls) failed: %w\ncommand: %s %s\n%s",
			what, mem, calls, err, b.cfg.assure, strings.Join(args, " "), "stderr: "+tail(stderr, 20))
	}
	wantErrors := 0
	if faultEvery > 0 {
		wantErrors = calls / faultEvery
	}
	if r.errors != wantErrors {
		return nil, fmt.Errorf("assure run (%s, %d MiB): rp_call returned -1 %d times, expected %d\n%s",
			what, mem, r.errors, wantErrors, "stderr: "+tail(stderr, 20))
	}
	if faultEvery > 0 {
		rec, err := readRecoveries(events)
		if err != nil {
			return nil, fmt.Errorf("assure run (%s, %d MiB): %w", what, mem, err)
		}
		if len(rec) != wantErrors {
			return nil, fmt.Errorf("assure run (%s, %d MiB): %d \"recovered\" events in %s, expected %d",
				what, mem, len(rec), events, wantErrors)
		}
		r.recovery = rec
	}
	b.logRun("assure/"+what, mem, r)
	return r, nil
}

func (b *bench) logRun(what string, mem int, r *result) {
	if !b.cfg.verbose {
		return
	}
	extra := ""
	if len(r.recovery) > 0 {
		extra = fmt.Sprintf(" recovery median %.0f µs", median(r.recovery))
	}
	b.log("%-22s %4d MiB: %d calls, %.4g µs/call, wall %v%s",
		what, mem, r.calls, r.nsPerCall/1000, r.wall.Round(time.Millisecond), extra)
}

func progArgs(mem, calls, faultEvery int, l load) []string {
	a := []string{strconv.Itoa(mem), strconv.Itoa(calls)}
	if faultEvery > 0 || l != plain {
		a = append(a, strconv.Itoa(faultEvery))
	}
	if l != plain {
		a = append(a, l.body, strconv.Itoa(l.idle))
	}
	return a
}

// exec runs a command in its own process group with a time limit and parses
// the program's result line from its stdout.
func (b *bench) exec(ctx context.Context, env []string, name string, args ...string) (*result, string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v", b.cfg.runTimeout)
		} else if ee, ok := err.(*exec.ExitError); ok {
			err = describeExit(ee)
		}
		return nil, stderr.String(), fmt.Errorf("%w\nstdout: %s", err, tail(stdout.String(), 5))
	}
	r, err := parseResult(stdout.String())
	if err != nil {
		return nil, stderr.String(), fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, tail(stdout.String(), 5), tail(stderr.String(), 20))
	}
	r.wall = wall
	return r, stderr.String(), nil
}

func describeExit(ee *exec.ExitError) error {
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
		if ws.Signaled() {
			return fmt.Errorf("killed by %v", ws.Signal())
		}
		code := ws.ExitStatus()
		if code > 128 && code < 128+65 {
			return fmt.Errorf("exit status %d (the program was killed by %v)", code, syscall.Signal(code-128))
		}
		return fmt.Errorf("exit status %d", code)
	}
	return ee
}

func parseResult(out string) (*result, error) {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "ns_per_call=") {
			continue
		}
		r := &result{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			var err error
			switch k {
			case "ns_per_call":
				r.nsPerCall, err = strconv.ParseFloat(v, 64)
			case "calls":
				r.calls, err = strconv.Atoi(v)
			case "errors":
				r.errors, err = strconv.Atoi(v)
			case "first_max_us":
				r.firstMax, err = strconv.ParseFloat(v, 64)
			case "shadow_mib":
				r.shadow, err = strconv.ParseFloat(v, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("bad result line %q: %v", line, err)
			}
		}
		return r, nil
	}
	return nil, errors.New("the program printed no ns_per_call= line")
}

// readRecoveries returns recoveryMicros of every "recovered" event.
func readRecoveries(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("events file: %w", err)
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev struct {
			Type           string   `json:"type"`
			RecoveryMicros *float64 `json:"recoveryMicros"`
			Message        string   `json:"message"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n, err)
		}
		switch ev.Type {
		case "recovered":
			if ev.RecoveryMicros == nil {
				return nil, fmt.Errorf("%s:%d: recovered event without recoveryMicros", path, n)
			}
			out = append(out, *ev.RecoveryMicros)
		case "crash", "error":
			return nil, fmt.Errorf("%s:%d: %s event: %s", path, n, ev.Type, line)
		}
	}
	return out, sc.Err()
}

type row struct {
	mem                         int
	native, floor, assure, slow float64 // ns per call (medians)
	recMedian, recP90           float64 // µs
	recN                        int
	firstMax, shadow            float64 // µs (the longest), MiB
}

func (b *bench) markdown(rows []row, rounds int, n [4]int, took time.Duration) string {
	nNative, nFloor, nAssure, nSlow := n[0], n[1], n[2], n[3]
	cfg := b.cfg
	var s strings.Builder
	fmt.Fprintf(&s, "Measured %s by `go run ./hack/bench` on %s.\n\n",
		time.Now().UTC().Format("2006-01-02"), machine())
	fmt.Fprintf(&s, "| touched heap | native µs/call | floor µs/call | assure µs/call | assure ÷ floor | slow path µs/call | recovery median µs | recovery p90 µs | longest first call µs | shadow MiB |\n")
	fmt.Fprintf(&s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		ratio := "—"
		if !math.IsNaN(r.assure) && r.floor > 0 {
			ratio = fmt.Sprintf("%s×", num(r.assure/r.floor))
		}
		fmt.Fprintf(&s, "| %d MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.mem,
			num(r.native/1000), num(r.floor/1000), num(r.assure/1000), ratio, num(r.slow/1000), num(r.recMedian), num(r.recP90), num(r.firstMax), num(r.shadow))
	}
	s.WriteString("\n")
	calls := count(nNative) + " calls natively, " + count(nFloor) + " for the floor"
	if !cfg.nativeOnly {
		calls += ", " + count(nAssure) + " under `assure run` and " + count(nSlow) + " with its fast path off"
	}
	fmt.Fprintf(&s, "- Per call: `rp_call` (a rescue point declared with `\"return\": -1`; it writes two bytes to a global and returns 0) called in a timed loop, %s, timed inside the program with `CLOCK_MONOTONIC`; median of %d round%s, the four kinds of run interleaved.\n",
		calls, rounds, plural(rounds))
	s.WriteString("- Floor: the program alone does before each call what the kernel does for assure's in-process checkpoint: a `PAGEMAP_SCAN` of `/proc/self/pagemap` that write-protects again the pages written since (through a userfaultfd of its own registered on its writable private mappings) and the copy of those pages into a shadow. *assure* is the fast path (binary-patched entry, checkpoint inside the process); *slow path* is `ASSURE_FASTPATH=0` (breakpoint entry: two ptrace stops and a checkpoint by the supervisor).\n")
	if !cfg.nativeOnly {
		fmt.Fprintf(&s, "- Recovery: every %s call dereferences NULL; `recoveryMicros` of the `recovered` events (%d per run, %d per size).\n",
			ordinal(cfg.faultEvery), cfg.faults, rows[0].recN)
	} else {
		s.WriteString("- Native runs only (`-native-only`).\n")
	}
	if !cfg.nativeOnly {
		s.WriteString("- First calls: after touching its heap the program times 1000 calls one by one before the timed loop; the longest of them on the fast path (over all rounds) is how long the process is held when that memory is first taken into the shadow (the timed loop then waits until the fast path says its shadow is ready). Shadow: what assure's shadow holds at the end (its memfd's allocated pages), median.\n")
	}
	fmt.Fprintf(&s, "- The program is compiled with `gcc -O2` and touches the given heap (one write per page) before the loop. Whole run: %v.\n",
		took.Round(time.Second))
	return s.String()
}

func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case v >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%d M", n/1_000_000)
	default:
		return strconv.Itoa(n)
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func ordinal(n int) string {
	suf := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suf = "st"
	case n%10 == 2:
		suf = "nd"
	case n%10 == 3:
		suf = "rd"
	}
	return fmt.Sprintf("%d%s", n, suf)
}

// machine describes the host in one line: CPU, count, kernel, Go.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.Join(strings.Fields(v), " ")
				break
			}
		}
	}
	kernel := "?"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%d × %s, Linux %s, %s", runtime.NumCPU(), cpu, kernel, runtime.Version())
}

func median(v []float64) float64 { return percentile(v, 0.5) }

// percentile by nearest rank; for 0.5 the usual median.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if p == 0.5 {
		n := len(s)
		if n%2 == 1 {
			return s[n/2]
		}
		return (s[n/2-1] + s[n/2]) / 2
	}
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func tail(s string, lines int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "(empty)"
	}
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append([]string{"..."}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			bytes.Contains(data, []byte("module github.com/assure-rt/assure")) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("not inside the assure module (no go.mod above %s): run from the repository", dir)
		}
	}
}

// splitReadme returns README.md's text before and after the bench section.
func splitReadme(path string) (before, after string, err error) {
	return splitSection(path, beginMarker, endMarker)
}

// splitSection returns a file's text before and after the section between
// the markers.
func splitSection(path, begin, end string) (before, after string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	text := string(data)
	i := strings.Index(text, begin)
	j := strings.Index(text, end)
	if i < 0 || j < 0 || j < i {
		return "", "", fmt.Errorf("%s: no %s ... %s section", path, begin, end)
	}
	return text[:i+len(begin)], text[j:], nil
}

func rewriteReadme(path, md string) error {
	return rewriteSection(path, beginMarker, endMarker, md)
}

func rewriteSection(path, begin, end, md string) error {
	before, after, err := splitSection(path, begin, end)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(before+"\n"+md+after), fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
