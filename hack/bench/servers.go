package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// README markers of the real-server section.
const (
	serversBegin = "<!-- bench-servers:begin -->"
	serversEnd   = "<!-- bench-servers:end -->"
)

// redisWorkloads are the redis-benchmark runs: 20 clients, without and
// with pipelining.
var redisWorkloads = []struct {
	name string
	args []string
}{
	{"SET, 20 clients", []string{"-t", "set", "-c", "20"}},
	{"GET, 20 clients", []string{"-t", "get", "-c", "20"}},
	{"SET, 20 clients, -P 16", []string{"-t", "set", "-c", "20", "-P", "16"}},
	{"GET, 20 clients, -P 16", []string{"-t", "get", "-c", "20", "-P", "16"}},
}

// redisModes are the ways redis runs: natively; under assure with a
// rescue point on call (every command); under assure with a rescue point
// that no request reaches (the cost of supervision alone).
var redisModes = []struct {
	name     string
	function string // "": native
}{
	{"native", ""},
	{"rescue point on call", "call"},
	{"rescue point off the request path", "debugCommand"},
}

type serverRow struct {
	workload string
	rps      []float64 // median per mode
}

// redisSection measures Debian's redis-server natively and under assure,
// side by side, rounds times (the modes interleaved, their order reversed
// every other round), with redis-benchmark over a unix socket.
func (b *bench) redisSection(ctx context.Context, rounds, requests int) (string, error) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not installed (hack/install-deps.sh installs it)")
	}
	client, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return "", errors.New("redis-benchmark not installed")
	}
	// Rescue points name the file mapped: redis-server is a link.
	real, err := filepath.EvalSymlinks(server)
	if err != nil {
		return "", err
	}
	rps := make([][][]float64, len(redisWorkloads)) // workload, mode, samples
	for w := range rps {
		rps[w] = make([][]float64, len(redisModes))
	}
	start := time.Now()
	for round := 0; round < rounds; round++ {
		for i := range redisModes {
			m := i
			if round%2 == 1 {
				m = len(redisModes) - 1 - i
			}
			res, err := b.redisRun(ctx, server, real, client, redisModes[m].function, requests)
			if err != nil {
				return "", fmt.Errorf("redis (%s): %w", redisModes[m].name, err)
			}
			for w, v := range res {
				rps[w][m] = append(rps[w][m], v)
			}
		}
		b.log("redis round %d/%d done", round+1, rounds)
	}
	var rows []serverRow
	for w, wl := range redisWorkloads {
		r := serverRow{workload: wl.name}
		for m := range redisModes {
			r.rps = append(r.rps, median(rps[w][m]))
		}
		rows = append(rows, r)
	}
	return redisMarkdown(rows, rounds, requests, real, time.Since(start)), nil
}

// redisRun starts one redis-server (under assure with a rescue point on
// function, unless it is empty) and runs every workload against it.
func (b *bench) redisRun(ctx context.Context, server, real, client, function string, requests int) ([]float64, error) {
	dir, err := os.MkdirTemp(b.dir, "redis-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "redis.sock")
	argv := []string{server, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir}
	if function != "" {
		man, _ := json.Marshal(map[string]any{"version": 1,
			"rescuePoints": []map[string]any{{"binary": real, "function": function}}})
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
	if err := waitSocket(sock, 30*time.Second, done); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(logs.String(), 20))
	}
	var out []float64
	for _, wl := range redisWorkloads {
		n := requests
		if strings.Contains(strings.Join(wl.args, " "), "-P") {
			n *= 4
		}
		args := append([]string{"-s", sock, "-n", strconv.Itoa(n), "-q"}, wl.args...)
		rctx, cancel := context.WithTimeout(ctx, b.cfg.runTimeout)
		res, err := exec.CommandContext(rctx, client, args...).Output()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(args, " "), err, tail(logs.String(), 20))
		}
		v, err := parseRedisBenchmark(string(res))
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark %s: %w", strings.Join(args, " "), err)
		}
		out = append(out, v)
	}
	return out, nil
}

// waitSocket waits until a unix socket accepts a connection, the process
// behind it ends (done), or the deadline passes.
func waitSocket(path string, d time.Duration, done <-chan error) error {
	deadline := time.Now().Add(d)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("the server ended before it listened on %s: %v", path, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v", path, d)
		}
	}
}

var rpsLine = regexp.MustCompile(`(?m)^\s*[A-Z]+: ([0-9.]+) requests per second`)

// parseRedisBenchmark reads the figure of `redis-benchmark -q` (the last
// of its progress lines, which it separates with carriage returns).
func parseRedisBenchmark(out string) (float64, error) {
	out = strings.ReplaceAll(out, "\r", "\n")
	m := rpsLine.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return 0, fmt.Errorf("no requests-per-second figure in %q", tail(out, 3))
	}
	return strconv.ParseFloat(m[len(m)-1][1], 64)
}

func redisMarkdown(rows []serverRow, rounds, requests int, binary string, took time.Duration) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Measured %s by `go run ./hack/bench` on %s.\n\n", time.Now().UTC().Format("2006-01-02"), machine())
	s.WriteString("| redis-benchmark | native req/s |")
	for _, m := range redisModes[1:] {
		fmt.Fprintf(&s, " %s req/s | ratio |", m.name)
	}
	s.WriteString("\n|---|---:|")
	for range redisModes[1:] {
		s.WriteString("---:|---:|")
	}
	s.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s | %s |", r.workload, num(r.rps[0]))
		for m := 1; m < len(r.rps); m++ {
			ratio := "—"
			if r.rps[0] > 0 {
				ratio = num(r.rps[m]/r.rps[0]) + "×"
			}
			fmt.Fprintf(&s, " %s | %s |", num(r.rps[m]), ratio)
		}
		s.WriteString("\n")
	}
	fmt.Fprintf(&s, "\n- `%s` (Debian), `--save \"\" --appendonly no`, over a unix socket; `redis-benchmark -q -n %d` (×4 with `-P 16`) per workload; median of %d round%s, the three modes interleaved. A rescue point on `call` (void: a recovered command gets no reply) covers every command; `debugCommand` is one no request of the benchmark reaches. Whole run: %v.\n",
		binary, requests, rounds, plural(rounds), took.Round(time.Second))
	return s.String()
}
