package discover

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/elfsym"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// Config is what discovery runs.
type Config struct {
	Program string
	Args    []string
	// Pid, instead of Program, is a running process to discover in: it
	// is attached to for the probes and for each candidate's test (and
	// detached from after), never restarted. What a rejected candidate
	// breaks in it stays broken; triage stops when the workload no longer
	// passes, or the process is gone.
	Pid int
	// Workload is run with sh -c once the program is up, as often as the
	// steps need; it exits 0 when the program answered correctly.
	Workload string
	// Budget bounds the whole discovery; triage stops taking new
	// candidates when it is spent.
	Budget time.Duration
	// Self is the assure binary (the supervisor's exec helper).
	Self string
	// Log is the file the program's output is appended to.
	Log string
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
	// ProfileRuns is how many workload runs the probes count (default 3).
	ProfileRuns int
	// StartTimeout bounds the wait for the workload's first pass, and
	// WorkloadTimeout each run of it (defaults 30s and 60s).
	StartTimeout, WorkloadTimeout time.Duration
	// Nested keeps an accepted candidate even when an accepted inner one
	// covers its calls: it also recovers the faults in its own code, and
	// rescue points nest (by default only the innermost is kept).
	Nested bool
	// KeepMasked keeps accepted candidates whose faulting workload run
	// passed as well (see keep).
	KeepMasked bool
	// Libraries adds the candidates of the shared libraries the program
	// links (DT_NEEDED); off, only the program's own functions are
	// candidates.
	Libraries bool
}

// Result is what discovery found.
type Result struct {
	// Manifest holds the accepted rescue points that were kept; nil when
	// none was accepted.
	Manifest *manifest.Manifest
	// Files are the static reports of the files analysed.
	Files []*candidates.Report
	// Hot are the candidates the workload reached, hottest first, with
	// their triage verdicts.
	Hot     []*Verdict
	Elapsed time.Duration
	Log     string // the program's output
	// Stopped says why triage ended before the budget (--pid).
	Stopped string
}

// Verdict is what was learned about one hot candidate.
type Verdict struct {
	Candidate candidates.Candidate
	// CallsPerRun is the calls counted per workload run (a floor once the
	// probe's limit was reached: Saturated); Depth the mean stack depth.
	CallsPerRun float64
	Saturated   bool
	Depth       float64
	// Outer are the other hot candidates found on the stack at its calls.
	Outer []string
	// Triaged is false when the budget ran out first.
	Triaged  bool
	Accepted bool
	// Reason says why it was rejected, Evidence what the test showed, and
	// Dropped why an accepted candidate is not in the manifest.
	Reason, Evidence, Dropped string
	// Masked: the workload run during which the fault was made passed
	// as well: the error return did not reach the client, as when the
	// value is a normal result ("not found", "the end") rather than an
	// error. Worth a look before trusting the rescue point.
	Masked bool
	// Kept: in the manifest.
	Kept bool

	probe       int         // index in the probe list
	hits        int         // calls counted in all
	saturated   bool        // hits reached the probe's limit
	outerCounts map[int]int // by probe index: calls with that one on the stack
}

type run struct {
	cfg      Config
	program  string
	logPath  string
	files    []*candidates.Report
	syms     map[string]*elfsym.File
	cands    []candidates.Candidate // every candidate probed, by probe index
	deadline time.Time
	runner   *runner
	// readable maps a binary as the program names it to a path this
	// process reads it at (/proc/PID/exe for an attached process, which
	// may see another root).
	readable map[string]string
	stopped  string
}

// findProgram sets the program's path: as the process sees it for Pid.
func (d *run) findProgram() error {
	if d.cfg.Pid != 0 {
		if d.cfg.Libraries {
			return errors.New("--libraries does not work with --pid yet")
		}
		exe := fmt.Sprintf("/proc/%d/exe", d.cfg.Pid)
		path, err := os.Readlink(exe)
		if err != nil {
			return fmt.Errorf("process %d: %w", d.cfg.Pid, err)
		}
		d.program = path
		d.readable[path] = exe
		return nil
	}
	path, err := exec.LookPath(d.cfg.Program)
	if err != nil {
		return fmt.Errorf("program %s: %w", d.cfg.Program, err)
	}
	if d.program, err = filepath.Abs(path); err != nil {
		return err
	}
	return nil
}

// read returns the path binary is read at.
func (d *run) read(binary string) string {
	if p, ok := d.readable[binary]; ok {
		return p
	}
	return binary
}

func (d *run) progress(format string, args ...any) {
	if d.cfg.Progress != nil {
		fmt.Fprintf(d.cfg.Progress, "discover: "+format+"\n", args...)
	}
}

// Run discovers and tests the program's rescue points.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	if cfg.Workload == "" {
		return nil, errors.New("a workload is needed: the command that exercises the program and checks its answers")
	}
	defaults(&cfg)
	d := &run{cfg: cfg, logPath: cfg.Log, syms: map[string]*elfsym.File{},
		readable: map[string]string{}, deadline: start.Add(cfg.Budget)}
	if err := d.findProgram(); err != nil {
		return nil, err
	}
	if err := d.static(); err != nil {
		return nil, err
	}
	var err error
	if d.runner, err = startRunner(cfg.Self); err != nil {
		return nil, err
	}
	defer d.runner.close()
	hot, err := d.profile(ctx)
	if err != nil {
		return nil, err
	}
	d.triage(ctx, hot)
	res := &Result{Files: d.files, Hot: hot, Manifest: keep(hot, cfg.Nested, cfg.KeepMasked), Log: d.logPath, Stopped: d.stopped}
	res.Elapsed = time.Since(start)
	return res, nil
}

func defaults(cfg *Config) {
	if cfg.Budget <= 0 {
		cfg.Budget = 5 * time.Minute
	}
	if cfg.ProfileRuns <= 0 {
		cfg.ProfileRuns = 3
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.WorkloadTimeout <= 0 {
		cfg.WorkloadTimeout = 60 * time.Second
	}
	if cfg.Log == "" {
		cfg.Log = os.DevNull
	}
}

// static analyses the program and, with Libraries, the libraries it
// links (the program's calls into them count for their functions).
func (d *run) static() error {
	paths := []string{d.program}
	if d.cfg.Libraries {
		paths = append(paths, neededLibraries(d.program)...)
	}
	for _, p := range paths {
		rep, err := candidates.Find(d.read(p), candidates.Options{ExternalCallers: candidates.MergeImports(d.files...)})
		if err != nil {
			if p == d.program {
				return err
			}
			d.progress("%s: %v (skipped)", p, err)
			continue
		}
		sym, err := elfsym.Open(d.read(p))
		if err != nil {
			return err
		}
		rep.Binary = p
		for i := range rep.Candidates {
			rep.Candidates[i].Binary = p // as the program names it
		}
		d.files = append(d.files, rep)
		d.syms[p] = sym
		d.cands = append(d.cands, rep.Candidates...)
		d.progress("%s: %d functions, %d candidates (%v)", p, rep.Functions, len(rep.Candidates), rep.Stats.Elapsed.Round(time.Millisecond))
	}
	if len(d.cands) == 0 {
		return fmt.Errorf("no candidate in %s: no function's callers test its result", d.program)
	}
	return nil
}

// libraryDirs are where the dynamic loader of a Debian-like system finds
// libraries without a cache.
var libraryDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

// neededLibraries finds the program's DT_NEEDED libraries (not theirs:
// the program's own calls are where its requests go).
func neededLibraries(program string) []string {
	f, err := elf.Open(program)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, err := f.ImportedLibraries()
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		for _, dir := range libraryDirs {
			if p := filepath.Join(dir, n); regular(p) {
				if real, err := filepath.EvalSymlinks(p); err == nil {
					p = real
				}
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func regular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// sortHot orders hot candidates for triage, which the budget may cut
// short: confident ones first; then those whose error value is an error
// code (negative: -1, -errno) before 0 and positive ones, which are as
// often a normal result ("not found", "the end"); then the shallower (the
// request-level functions, which cover the most code, before the helpers
// they call); then the most called.
func sortHot(hot []*Verdict) {
	sort.SliceStable(hot, func(i, j int) bool {
		a, b := hot[i], hot[j]
		if a.Candidate.Confidence != b.Candidate.Confidence {
			return a.Candidate.Confidence > b.Candidate.Confidence
		}
		if na, nb := *a.Candidate.Return < 0, *b.Candidate.Return < 0; na != nb {
			return na
		}
		if a.Depth != b.Depth {
			return a.Depth < b.Depth
		}
		return a.CallsPerRun > b.CallsPerRun
	})
}

// probes returns the supervisor probes of every candidate.
func (d *run) probes() []supervisor.Probe {
	out := make([]supervisor.Probe, len(d.cands))
	for i, c := range d.cands {
		out[i] = supervisor.Probe{Binary: c.Binary, Address: c.Address}
	}
	return out
}
