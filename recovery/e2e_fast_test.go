package recovery_test

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The fast path (binary-patched entries, checkpoints inside the process):
// testdata/progs/fast.c.

const fastCalls = 20000

// TestE2EFastPathNoStops: an armed rescue point called N times costs the
// program no stop at all: it is not switched out voluntarily (every ptrace
// stop is a voluntary switch) more than a few times over N calls, alone
// and beside an idle thread; with the fast path off it is switched out at
// least once per call. The checkpoints are exact: the faulting call after
// them returns -1 with the counter and buffer as before it, and the idle
// thread is still there (the idle thread: with ASSURE_FASTPATH_MT=1,
// the experimental in-process checkpoints of one thread of several). The
// same holds in a child forked after the
// parent's fast path was set up (a prefork server's worker): its first
// call goes through the supervisor, which then gives it a fast path of
// its own.
func TestE2EFastPathNoStops(t *testing.T) {
	for _, mode := range []string{"single", "threads", "fork"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"calls", strconv.Itoa(fastCalls)}
			want := map[string]string{"counter": strconv.Itoa(1000 + fastCalls), "rc": "-1", "counter_kept": "1", "buf_kept": "1"}
			switch mode {
			case "threads":
				args = append(args, "threads")
				want["helper_ran"] = "1"
			case "fork":
				args = append(args, "fork")
				want["counter"] = strconv.Itoa(1100 + fastCalls)
				want["child_status"], want["child_signal"] = "0", "0"
			}
			native := runNative(t, "fast", args...)
			if mode == "fork" {
				wantKV(t, native, map[string]string{"child_signal": strconv.Itoa(int(syscall.SIGSEGV))})
			} else {
				wantSignalDeath(t, native, syscall.SIGSEGV)
			}
			m := simpleManifest("fast", -1, "count")
			var env []string
			if mode == "threads" {
				env = []string{"ASSURE_FASTPATH_MT=1"} // experimental: off by default
			}
			r := run(t, runSpec{manifest: m, prog: "fast", args: args, env: env})
			wantStatus(t, r, 0)
			wantKV(t, r, want)
			wantRecovered(t, r, recovered{n: 1, signal: "SIGSEGV", function: "count", binary: "fast", ret: -1, single: mode == "single"})
			if n := mustAtoi(t, r.kv()["switches"]); n > fastCalls/200 {
				t.Errorf("%d voluntary switches in %d calls, want at most %d (the calls stop for the supervisor?)%s", n, fastCalls, fastCalls/200, r)
			}
			slow := run(t, runSpec{manifest: m, prog: "fast", args: args, env: []string{"ASSURE_FASTPATH=0"}})
			wantStatus(t, slow, 0)
			wantKV(t, slow, want)
			if n := mustAtoi(t, slow.kv()["switches"]); n < fastCalls {
				t.Errorf("with ASSURE_FASTPATH=0: %d voluntary switches in %d calls, want at least one per call (the measure is blind?)%s", n, fastCalls, slow)
			}
		})
	}
}

// TestE2EFastPathWildWrite: a rescue point that writes into assure's
// shadow (found in /proc/self/maps: a wild pointer) faults there, because
// the shadow is behind a protection key while the program runs, and the
// fault is recovered like any other: the call returns -1, and later
// checkpoints still restore exactly.
func TestE2EFastPathWildWrite(t *testing.T) {
	if !cpuFlags("pku", "ospke") {
		t.Skip("no protection keys on this CPU: the shadow is not protected from wild writes (README, Fast path)")
	}
	r := runAssure(t, simpleManifest("fast", -1, "count"), "fast", "wild")
	wantStatus(t, r, 0)
	wantKV(t, r, map[string]string{"shadow_found": "1", "wild_rc": "-1", "wild_counter_kept": "1",
		"rc": "-1", "counter_kept": "1", "buf_kept": "1"})
	wantRecovered(t, r, recovered{n: 2, signal: "SIGSEGV", function: "count", binary: "fast", ret: -1, single: true})
}

// TestE2EFastPathLargeMemory: 64 MiB of heap filled after the fast path
// was set up, and 1 GiB mapped but never touched: the shadow then holds
// what was touched, not what was mapped (newly armed memory counts as
// written until protected, its pages never touched included). A fault in
// a call that wrote into that heap is recovered with the heap exactly as
// before the call.
func TestE2EFastPathLargeMemory(t *testing.T) {
	r := runAssure(t, simpleManifest("fast", -1, "count"), "fast", "big", "64")
	wantStatus(t, r, 0)
	wantKV(t, r, map[string]string{"ready": "1", "rc": "-1", "counter_kept": "1", "buf_kept": "1", "big_kept": "1"})
	wantRecovered(t, r, recovered{n: 1, signal: "SIGSEGV", function: "count", binary: "fast", ret: -1, single: true})
	if mib := mustAtoi(t, r.kv()["shadow_mib"]); mib < 64 || mib > 64+8 {
		t.Errorf("the shadow holds %d MiB, want the 64 MiB touched (+ at most 8 for the rest of the program)%s", mib, r)
	}
}

// TestE2EFastPathFaultDuringBackgroundCopy: a fault in the call right
// after a large block was filled, while the supervisor still copies it
// into the shadow in the background, is recovered with the block intact:
// that call waits for the copy rather than run unprotected.
func TestE2EFastPathFaultDuringBackgroundCopy(t *testing.T) {
	r := runAssure(t, simpleManifest("fast", -1, "count"), "fast", "bignow", "256")
	wantStatus(t, r, 0)
	wantKV(t, r, map[string]string{"rc": "-1", "counter_kept": "1", "buf_kept": "1", "big_kept": "1"})
	wantRecovered(t, r, recovered{n: 1, signal: "SIGSEGV", function: "count", binary: "fast", ret: -1, single: true})
}

// cpuFlags reports whether /proc/cpuinfo lists every flag.
func cpuFlags(flags ...string) bool {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		have := map[string]bool{}
		for _, f := range strings.Fields(line) {
			have[f] = true
		}
		for _, f := range flags {
			if !have[f] {
				return false
			}
		}
		return true
	}
	return false
}

// TestE2EFastPathOutlivesSupervisor: with the fast path, a server keeps
// serving when its supervisor is killed (kill -9): its patched entries
// check that the supervisor lives before anything that would stop for it.
// A new `assure attach` takes over the control block, the shadow and the
// patched entries, and recovers the next fault; the counters are exact
// throughout.
func TestE2EFastPathOutlivesSupervisor(t *testing.T) {
	srv := startServer(t, 0)
	pid := srv.pid()
	n := 0
	good := func(v int) {
		t.Helper()
		n++
		srv.want("GOOD "+strconv.Itoa(v), "ok "+strconv.Itoa(n))
	}
	m := simpleManifest("server", -1, "handle_request")
	attach := func() (*attProc, string) {
		as, ev := startAttach(t, m, pid)
		waitEvent(t, ev, attAttachTimeout, "attached event",
			func(e event) bool { return e.Type == "attached" }, func() string { return as.describe() + srv.describe() })
		return as, ev
	}
	as, ev := attach()
	srv.extra = func() string { return as.describe() }
	good(1)
	srv.want("BAD", "error")
	waitEvent(t, ev, attEventTimeout, "recovered event", func(e event) bool { return e.Type == "recovered" }, as.describe)
	good(2)

	as.cmd.Process.Kill()
	if !as.waitExit(attExitTimeout) {
		t.Fatal("assure attach did not die of SIGKILL")
	}
	waitUntil(t, attExitTimeout, "the server without a tracer", func() bool {
		st, err := procStatus(pid, pid)
		return err == nil && st["TracerPid"] == "0"
	})
	good(3) // through the patched entry, with nobody to stop for
	good(4)

	as2, ev2 := attach()
	srv.extra = func() string { return as2.describe() }
	waitUntil(t, attEventTimeout, "the take-over", func() bool {
		return strings.Contains(as2.stderr(), "took over the fast path")
	})
	srv.want("BAD", "error")
	waitEvent(t, ev2, attEventTimeout, "recovered event", func(e event) bool { return e.Type == "recovered" }, as2.describe)
	good(5)
	if st := srv.stats(); st.requests != n || st.errors != 2 || st.total != 15 {
		t.Errorf("server stats %+v, want %d requests, 2 errors, total 15%s", st, n, as2.describe())
	}
	syscall.Kill(as2.pid(), syscall.SIGTERM)
	if !as2.waitExit(attExitTimeout) {
		t.Fatalf("assure attach did not exit after SIGTERM%s", as2.describe())
	}
	good(6)
}
