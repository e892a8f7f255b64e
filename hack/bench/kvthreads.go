package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// kvConns are the client connections of the threaded key-value server's
// benchmark (one server thread each); kvBadEvery puts one BAD request
// among kvBadEvery requests.
const (
	kvConns    = 4
	kvBadEvery = 50
)

// kvthreadsBench is the e2e suite's threaded key-value server
// (recovery/testdata/progs/kvthreads.c, one thread per connection, a
// table under one mutex) with a rescue point on handle_request, its
// per-request function: natively and under assure, with and without
// faulting requests (issue 7: nothing another thread did is lost).
// Natively, KV_VALIDATE=1 makes a BAD request do the same work and be
// rejected instead of faulting.
func kvthreadsBench() (*serverBench, error) {
	if _, err := exec.LookPath("gcc"); err != nil {
		return nil, fmt.Errorf("kvthreads: gcc not installed")
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	src := filepath.Join(root, "recovery", "testdata", "progs")
	var binPath string
	return &serverBench{
		name:      "kvthreads (one thread per connection)",
		workloads: []string{"INCR, 4 connections", "INCR, 4 connections, 1 request in 50 faulting"},
		modes: []serverMode{
			{name: "native", env: []string{"KV_VALIDATE=1"}},
			{name: "rescue point on handle_request", rp: map[string]any{"function": "handle_request", "return": -1}, maxRecoveries: 1 << 20},
		},
		note: "The e2e suite's threaded key-value server (`recovery/testdata/progs/kvthreads.c perconn`: a thread per connection, one table under one mutex, the rescue point on its per-request function), over the loopback; a Go client with 4 connections, each sending its share of %d INCR requests one at a time and checking every reply (each counter exact); with faults, a 5th connection sends a BAD request (a fault of a rotating kind inside the rescue point, with the table's mutex held) for every 49 ordinary ones — natively the server rejects them instead (`KV_VALIDATE=1`).",
		start: func(dir string) ([]string, string, error) {
			if binPath == "" {
				// In the bench's own directory (dir's parent), which goes
				// with it: it was left in /tmp after every run.
				binPath = filepath.Join(filepath.Dir(dir), "kvthreads")
				out, err := exec.Command("gcc", "-O2", "-g", "-pthread", "-fno-omit-frame-pointer", "-I", src,
					"-o", binPath, filepath.Join(src, "kvthreads.c")).CombinedOutput()
				if err != nil {
					binPath = ""
					return nil, "", fmt.Errorf("build kvthreads: %v\n%s", err, out)
				}
			}
			portfile := filepath.Join(dir, "port")
			return []string{binPath, "perconn", portfile}, "portfile:" + portfile, nil
		},
		binary: func() string { return binPath },
		measure: func(ctx context.Context, addr string, requests int) ([]float64, error) {
			var out []float64
			for _, bad := range []bool{false, true} {
				v, err := kvLoad(ctx, addr, requests, bad)
				if err != nil {
					return nil, err
				}
				out = append(out, v)
			}
			return out, nil
		},
	}, nil
}

// kvLoad sends requests INCRs over kvConns connections (and, with bad,
// BAD requests over one more) and returns the rate of all requests.
func kvLoad(ctx context.Context, addr string, requests int, bad bool) (float64, error) {
	per := requests / kvConns
	run := time.Now().UnixNano() // keys of their own for every run
	var wg sync.WaitGroup
	var acked, bads atomic.Int64
	errs := make(chan error, kvConns+1)
	stop := make(chan struct{})
	start := time.Now()
	for c := 0; c < kvConns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d_%d", run%1000000, c)
			if err := kvConn(ctx, addr, func(i int) (string, string, bool) {
				if i >= per {
					return "", "", false
				}
				if i > 0 {
					acked.Add(1)
				}
				return "INCR " + key, fmt.Sprintf(":%d", i+1), true
			}); err != nil {
				errs <- err
			}
		}()
	}
	var badWG sync.WaitGroup
	if bad {
		kinds := []string{"segv", "abort", "fpe", "ill", "bus", "stackchk", "assert"}
		badWG.Add(1)
		go func() {
			defer badWG.Done()
			if err := kvConn(ctx, addr, func(i int) (string, string, bool) {
				// Paced by the ordinary requests answered: one BAD
				// request for every kvBadEvery-1 of them.
				for acked.Load() < int64(i+1)*(kvBadEvery-1) {
					select {
					case <-stop:
						return "", "", false
					case <-time.After(50 * time.Microsecond):
					}
				}
				bads.Add(1)
				return "BAD " + kinds[i%len(kinds)], "-ERR", true
			}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(stop)
	badWG.Wait()
	took := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(per*kvConns+int(bads.Load())) / took.Seconds(), nil
}

// kvConn sends the requests next gives, one at a time, checking each
// reply.
func kvConn(ctx context.Context, addr string, next func(i int) (req, want string, ok bool)) error {
	conn, r, err := dialLoad(ctx, strings.TrimPrefix(addr, "tcp:"))
	if err != nil {
		return err
	}
	defer conn.Close()
	for i := 0; ; i++ {
		req, want, ok := next(i)
		if !ok {
			return nil
		}
		if _, err := conn.Write([]byte(req + "\n")); err != nil {
			return err
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s: %w", req, err)
		}
		if got := strings.TrimRight(line, "\r\n"); got != want {
			return fmt.Errorf("%s: reply %q, want %q (a request lost or undone)", req, got, want)
		}
	}
}
