package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// README markers of the real-server section.
const (
	serversBegin = "<!-- bench-servers:begin -->"
	serversEnd   = "<!-- bench-servers:end -->"
)

// A serverBench is one real server from the distribution, measured
// natively and under assure with rescue points in different places.
type serverBench struct {
	name      string   // as the table names it
	workloads []string // the table's rows
	modes     []serverMode
	note      string // under the table (markdown); %d is the requests per run
	// start writes what the server needs into dir and returns its argv
	// and the address it will listen on ("unix:PATH", "tcp:HOST:PORT", or
	// "portfile:PATH" for a server that picks its port and writes
	// "port=N" into PATH).
	start func(dir string) (argv []string, addr string, err error)
	// binary, when set, names the rescue points' binary once start ran
	// (a program built by start).
	binary func() string
	// measure runs every workload against addr: requests per second each.
	measure func(ctx context.Context, addr string, requests int) ([]float64, error)
}

// A serverMode is one way a server runs: natively (rp nil) or under
// assure with one rescue point.
type serverMode struct {
	name string
	rp   map[string]any // a manifest entry
	env  []string
	// maxRecoveries, when set, is the manifest's (a benchmark with faults
	// needs more than the default's 100 per minute).
	maxRecoveries int
}

// serverBenches are the servers measured, each skipped with a line on
// stderr when not installed (hack/install-deps.sh --servers installs them).
func serverBenches() ([]*serverBench, []string) {
	var out []*serverBench
	var skipped []string
	for _, mk := range []func() (*serverBench, error){redisBench, memcachedBench(4), nginxBench, kvthreadsBench} {
		sb, err := mk()
		if err != nil {
			skipped = append(skipped, err.Error())
			continue
		}
		out = append(out, sb)
	}
	return out, skipped
}

// serverSection measures sb side by side, rounds times (the modes
// interleaved, their order reversed every other round), and returns its
// table.
func (b *bench) serverSection(ctx context.Context, sb *serverBench, rounds, requests int) (string, error) {
	rps := make([][][]float64, len(sb.workloads)) // workload, mode, samples
	for w := range rps {
		rps[w] = make([][]float64, len(sb.modes))
	}
	start := time.Now()
	for round := 0; round < rounds; round++ {
		for i := range sb.modes {
			m := i
			if round%2 == 1 {
				m = len(sb.modes) - 1 - i
			}
			res, err := b.serverRun(ctx, sb, sb.modes[m], requests)
			if err != nil {
				return "", fmt.Errorf("%s (%s): %w", sb.name, sb.modes[m].name, err)
			}
			for w, v := range res {
				rps[w][m] = append(rps[w][m], v)
			}
		}
		b.log("%s round %d/%d done", sb.name, round+1, rounds)
	}
	med := make([][]float64, len(sb.workloads))
	for w := range sb.workloads {
		for m := range sb.modes {
			med[w] = append(med[w], median(rps[w][m]))
		}
	}
	return serverMarkdown(sb, med, rounds, requests, time.Since(start)), nil
}

// serverRun starts sb once in mode m, runs its workloads against it, and
// stops it.
func (b *bench) serverRun(ctx context.Context, sb *serverBench, m serverMode, requests int) ([]float64, error) {
	dir, err := os.MkdirTemp(b.dir, "server-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	argv, addr, err := sb.start(dir)
	if err != nil {
		return nil, err
	}
	if m.rp != nil {
		rp := maps.Clone(m.rp)
		if rp["binary"] == nil && sb.binary != nil {
			rp["binary"] = sb.binary()
		}
		doc := map[string]any{"version": 1, "rescuePoints": []map[string]any{rp}}
		if m.maxRecoveries > 0 {
			doc["maxRecoveries"] = m.maxRecoveries
		}
		man, _ := json.Marshal(doc)
		mf := filepath.Join(dir, "manifest.json")
		if err := os.WriteFile(mf, man, 0o644); err != nil {
			return nil, err
		}
		argv = append([]string{b.cfg.assure, "run", "--manifest", mf, "--"}, argv...)
	}
	var logs strings.Builder
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if m.env != nil {
		cmd.Env = append(os.Environ(), m.env...)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	if addr, err = portFromFile(addr, 30*time.Second, done); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(logs.String(), 20))
	}
	if err := waitListening(addr, 30*time.Second, done); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(logs.String(), 20))
	}
	rctx, cancel := context.WithTimeout(ctx, b.cfg.runTimeout)
	defer cancel()
	res, err := sb.measure(rctx, addr, requests)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(logs.String(), 20))
	}
	return res, nil
}

// waitListening waits until addr ("unix:PATH", "tcp:HOST:PORT") accepts a
// connection, the process behind it ends (done, whose value is put back
// for the caller), or the deadline passes.
func waitListening(addr string, d time.Duration, done chan error) error {
	network, a, _ := strings.Cut(addr, ":")
	deadline := time.Now().Add(d)
	for {
		if c, err := net.Dial(network, a); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("the server ended before it listened on %s: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v", addr, d)
		}
	}
}

// portFromFile turns "portfile:PATH" into "tcp:127.0.0.1:N" once the
// server wrote "port=N" into PATH; other addresses are returned as they
// are.
func portFromFile(addr string, d time.Duration, done chan error) (string, error) {
	path, ok := strings.CutPrefix(addr, "portfile:")
	if !ok {
		return addr, nil
	}
	deadline := time.Now().Add(d)
	for {
		if data, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "port="); ok {
					return "tcp:127.0.0.1:" + v, nil
				}
			}
		}
		select {
		case err := <-done:
			done <- err
			return "", fmt.Errorf("the server ended before it wrote %s: %v", path, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no port in %s after %v", path, d)
		}
	}
}

// A loadRun is one run of a load generator: a table row.
type loadRun struct {
	name string
	args []string
}

func runNames(runs []loadRun) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.name
	}
	return out
}

// rate runs a load generator to its end and reads the requests per second
// from its output with parse.
func rate(ctx context.Context, bin string, args []string, parse func(string) (float64, error)) (float64, error) {
	name := filepath.Base(bin) + " " + strings.Join(args, " ")
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", name, err, tail(string(out), 5))
	}
	v, err := parse(string(out))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// freePort returns a TCP port on the loopback that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// realPath is a command's file as the kernel maps it (rescue points name
// the mapped file: redis-server, for one, is a link).
func realPath(cmd string) (string, error) {
	p, err := exec.LookPath(cmd)
	if err != nil {
		return "", fmt.Errorf("%s not installed (hack/install-deps.sh --servers installs it)", cmd)
	}
	return filepath.EvalSymlinks(p)
}

func serverMarkdown(sb *serverBench, med [][]float64, rounds, requests int, took time.Duration) string {
	var s strings.Builder
	fmt.Fprintf(&s, "| %s | %s req/s |", sb.name, sb.modes[0].name)
	for _, m := range sb.modes[1:] {
		fmt.Fprintf(&s, " %s req/s | ratio |", m.name)
	}
	s.WriteString("\n|---|---:|")
	for range sb.modes[1:] {
		s.WriteString("---:|---:|")
	}
	s.WriteString("\n")
	for w, name := range sb.workloads {
		r := med[w]
		fmt.Fprintf(&s, "| %s | %s |", name, num(r[0]))
		for m := 1; m < len(r); m++ {
			ratio := "—"
			if r[0] > 0 {
				ratio = num(r[m]/r[0]) + "×"
			}
			fmt.Fprintf(&s, " %s | %s |", num(r[m]), ratio)
		}
		s.WriteString("\n")
	}
	fmt.Fprintf(&s, "\n- "+sb.note+" Median of %d round%s, the modes interleaved; %v.\n", requests, rounds, plural(rounds), took.Round(time.Second))
	return s.String()
}

// serversSection measures the real servers and prints (and with -readme
// records) their tables.
func (b *bench) serversSection(ctx context.Context) error {
	benches, skipped := serverBenches()
	if b.cfg.serverNames != "" {
		want := strings.Split(b.cfg.serverNames, ",")
		benches = slices.DeleteFunc(benches, func(sb *serverBench) bool {
			return !slices.Contains(want, strings.Fields(sb.name)[0])
		})
	}
	for _, why := range skipped {
		b.log("skipped: %s", why)
	}
	if len(benches) == 0 {
		return errors.New("no server to measure: " + strings.Join(skipped, "; "))
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Measured %s by `go run ./hack/bench` on %s.\n", time.Now().UTC().Format("2006-01-02"), machine())
	for _, sb := range benches {
		t, err := b.serverSection(ctx, sb, b.cfg.servers, b.cfg.serverRequests)
		if err != nil {
			return err
		}
		md.WriteString("\n" + t)
	}
	fmt.Print(md.String())
	if b.cfg.readme {
		if err := rewriteSection(filepath.Join(b.cfg.root, "README.md"), serversBegin, serversEnd, md.String()); err != nil {
			return err
		}
		b.log("README.md updated (servers)")
	}
	return nil
}
