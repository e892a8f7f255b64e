package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// redisWorkloads are the redis-benchmark runs: 20 clients, without and
// with pipelining.
var redisWorkloads = []loadRun{
	{"SET, 20 clients", []string{"-t", "set", "-c", "20"}},
	{"GET, 20 clients", []string{"-t", "get", "-c", "20"}},
	{"SET, 20 clients, -P 16", []string{"-t", "set", "-c", "20", "-P", "16"}},
	{"GET, 20 clients, -P 16", []string{"-t", "get", "-c", "20", "-P", "16"}},
}

// redisBench is Debian's redis-server over a unix socket: natively, with
// a rescue point on call (every command), and with one no request of the
// benchmark reaches (the cost of supervision alone).
func redisBench() (*serverBench, error) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not installed (hack/install-deps.sh --servers installs it)")
	}
	client, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark not installed")
	}
	real, err := filepath.EvalSymlinks(server)
	if err != nil {
		return nil, err
	}
	sb := &serverBench{
		name: "redis-benchmark",
		modes: []serverMode{{name: "native"},
			{name: "rescue point on call", rp: map[string]any{"binary": real, "function": "call"}},
			{name: "same, ASSURE_FASTPATH_MT=1", rp: map[string]any{"binary": real, "function": "call"}, env: []string{"ASSURE_FASTPATH_MT=1"}},
			{name: "rescue point off the request path", rp: map[string]any{"binary": real, "function": "debugCommand"}}},
		note: "Debian's redis-server (`" + server + "`), `--save \"\" --appendonly no`, over a unix socket; `redis-benchmark -q -n %d` (×4 with `-P 16`) per workload. A rescue point on `call` (void: a recovered command gets no reply) covers every command; `debugCommand` is one no request of the benchmark reaches. redis has 5 threads: its rescue points take the slow path unless the experimental in-process mode for one thread of several is on (`ASSURE_FASTPATH_MT=1`).",
		start: func(dir string) ([]string, string, error) {
			sock := filepath.Join(dir, "redis.sock")
			return []string{server, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir}, "unix:" + sock, nil
		},
		measure: func(ctx context.Context, addr string, requests int) ([]float64, error) {
			var out []float64
			for _, wl := range redisWorkloads {
				n := requests
				if strings.Contains(strings.Join(wl.args, " "), "-P") {
					n *= 4
				}
				args := append([]string{"-s", strings.TrimPrefix(addr, "unix:"), "-n", strconv.Itoa(n), "-q"}, wl.args...)
				v, err := rate(ctx, client, args, parseRedisBenchmark)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		},
	}
	sb.workloads = runNames(redisWorkloads)
	return sb, nil
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
