package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// nginxBench is Debian's nginx (a master and one worker, the worker forked
// after the rescue points were armed) serving a small static file to ab
// over the loopback: natively, with a rescue point on
// ngx_http_process_request (the whole request: reading the file and
// sending it are system calls inside the rescue point) and with one on
// ngx_http_parse_request_line (the parser, no system call inside).
func nginxBench() (*serverBench, error) {
	server, err := realPath("nginx")
	if err != nil {
		return nil, err
	}
	ab, err := exec.LookPath("ab")
	if err != nil {
		return nil, fmt.Errorf("ab not installed (apache2-utils; hack/install-deps.sh --servers installs it)")
	}
	workloads := []loadRun{
		{"GET 612 B, 20 clients, keep-alive", []string{"-k", "-c", "20"}},
		{"GET 612 B, 20 clients, a connection per request", []string{"-c", "20"}},
	}
	sb := &serverBench{
		name: "ab → nginx",
		modes: []serverMode{{name: "native"},
			{name: "rescue point on ngx_http_process_request", rp: map[string]any{"binary": server, "function": "ngx_http_process_request"}},
			{name: "rescue point on ngx_http_parse_request_line", rp: map[string]any{"binary": server, "function": "ngx_http_parse_request_line", "return": -1}}},
		note: "Debian's nginx (`" + server + "`: a master and one worker process, access log off) serving a 612-byte file over the loopback; `ab -n %d` per workload. The worker is forked after the rescue points were armed: its first request goes through the supervisor, which then gives it a fast path of its own. `ngx_http_process_request` (void) covers the whole request, so the request's system calls (open, fstat, writev, close) run inside the rescue point and each stops for the journal; `ngx_http_parse_request_line` (an error return makes nginx answer 400) is the parser alone.",
		start: func(dir string) ([]string, string, error) {
			port, err := freePort()
			if err != nil {
				return nil, "", err
			}
			www := filepath.Join(dir, "www")
			if err := os.MkdirAll(www, 0o755); err != nil {
				return nil, "", err
			}
			if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(strings.Repeat("x", 611)+"\n"), 0o644); err != nil {
				return nil, "", err
			}
			conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server { listen 127.0.0.1:%[2]d; root %[3]s; }
}
`, dir, port, www)
			cf := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
				return nil, "", err
			}
			return []string{server, "-p", dir, "-c", cf}, fmt.Sprintf("tcp:127.0.0.1:%d", port), nil
		},
		measure: func(ctx context.Context, addr string, requests int) ([]float64, error) {
			url := "http://" + strings.TrimPrefix(addr, "tcp:") + "/index.html"
			var out []float64
			for _, wl := range workloads {
				args := append([]string{"-q", "-n", strconv.Itoa(requests)}, append(wl.args, url)...)
				v, err := rate(ctx, ab, args, func(out string) (float64, error) { return parseAB(out, requests) })
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		},
	}
	sb.workloads = runNames(workloads)
	return sb, nil
}

var (
	abRate     = regexp.MustCompile(`(?m)^Requests per second:\s+([0-9.]+)`)
	abComplete = regexp.MustCompile(`(?m)^Complete requests:\s+([0-9]+)`)
	abFailed   = regexp.MustCompile(`(?m)^Failed requests:\s+([0-9]+)`)
	abNon2xx   = regexp.MustCompile(`(?m)^Non-2xx responses:\s+([0-9]+)`)
)

// parseAB reads ab's rate, after checking that every request was answered
// with a 2xx.
func parseAB(out string, requests int) (float64, error) {
	m := abRate.FindStringSubmatch(out)
	c := abComplete.FindStringSubmatch(out)
	f := abFailed.FindStringSubmatch(out)
	if m == nil || c == nil || f == nil {
		return 0, fmt.Errorf("no rate in %q", tail(out, 5))
	}
	if c[1] != strconv.Itoa(requests) || f[1] != "0" || abNon2xx.MatchString(out) {
		return 0, fmt.Errorf("%s of %d requests complete, %s failed: %q", c[1], requests, f[1], tail(out, 8))
	}
	return strconv.ParseFloat(m[1], 64)
}
