package recovery_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/assure-rt/assure/recovery/events"
)

// Every fault kind, raised by the kernel or sent by the program to itself,
// both as an ordinary process and as the init of a PID namespace (under
// `unshare --pid --fork`, as in a container), in the first process, in a
// forked worker and in a second thread.

type faultKind struct {
	name   string
	signal string
	code   string // signalCode of the event
	sent   bool   // sent by the program to itself: no fault address
}

var faultKinds = []faultKind{
	{"segv", "SIGSEGV", "SEGV_MAPERR", false},
	{"bus", "SIGBUS", "BUS_ADRERR", false},
	{"fpe", "SIGFPE", "FPE_INTDIV", false},
	{"ill", "SIGILL", "ILL_ILLOPN", false},
	{"abort", "SIGABRT", "SI_TKILL", true},
	{"assert", "SIGABRT", "SI_TKILL", true},
	{"stackchk", "SIGABRT", "SI_TKILL", true},
	{"raise", "SIGSEGV", "SI_TKILL", true},
	{"kill", "SIGSEGV", "SI_USER", true},
	{"tgkill", "SIGBUS", "SI_TKILL", true},
}

func faultsManifest(max int) string {
	m := manifest{Version: 1, RescuePoints: []rescuePoint{fn("faults", "rescue_fault", -1)}, MaxRecoveries: max}
	return m.JSON()
}

// pidNS runs argv as the init of a new PID namespace, or as it is.
func pidNS(init bool, argv ...string) (string, []string) {
	if !init {
		return "faults", argv
	}
	return "/usr/bin/unshare", append([]string{"--pid", "--fork", bin("faults")}, argv...)
}

func needUnshare(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
}

// crashesOf returns the crash events of the faults program (unshare, which
// kills itself with its child's signal, has crashes of its own).
func crashesOf(r result) []event {
	var out []event
	for _, e := range r.ofType("crash") {
		if !strings.Contains(strings.Join(e.Stack, " "), "/unshare)") {
			out = append(out, e)
		}
	}
	return out
}

// eachFaultCase runs fn as a subtest for every fault kind in every
// context (main, fork, thread) that want accepts, as an ordinary process
// and as a namespace's init; args are the program's arguments.
func eachFaultCase(t *testing.T, where string, want func(kind, ctx string) bool, fn func(t *testing.T, init bool, k faultKind, ctx string, prog string, argv []string)) {
	for _, init := range []bool{false, true} {
		for _, k := range faultKinds {
			for _, ctx := range []string{"main", "fork", "thread"} {
				if !want(k.name, ctx) {
					continue
				}
				name := k.name + "/" + ctx
				if init {
					name = "pidns-init/" + name
				}
				t.Run(name, func(t *testing.T) {
					args := []string{k.name, where}
					if ctx != "main" {
						args = append(args, ctx)
					}
					prog, argv := pidNS(init, args...)
					fn(t, init, k, ctx, prog, argv)
				})
			}
		}
	}
}

// TestE2EFaultKindsPassedOn: a fault assure does not recover ends the
// program exactly as without assure (same status, same output), in and out
// of a PID namespace, with one crash event when it ends the program and
// none when the kernel ignores it (a signal sent to a namespace's init).
func TestE2EFaultKindsPassedOn(t *testing.T) {
	needUnshare(t)
	some := func(kind, ctx string) bool {
		return ctx == "main" || kind == "segv" || kind == "abort" || kind == "tgkill"
	}
	eachFaultCase(t, "outside", some, func(t *testing.T, init bool, k faultKind, ctx, prog string, argv []string) {
		native := runNative(t, prog, argv...)
		r := runAssure(t, faultsManifest(0), prog, argv...)
		if r.Status != native.Status || r.Stdout != native.Stdout {
			t.Fatalf("under assure: status %d, stdout %q; natively: status %d, stdout %q%s",
				r.Status, r.Stdout, native.Status, native.Stdout, r)
		}
		if r.EventsErr != nil {
			t.Fatalf("%v%s", r.EventsErr, r)
		}
		want := 1
		if strings.Contains(native.Stdout, "done") && ctx != "fork" {
			want = 0 // ignored by the kernel: nothing ended
		}
		if ctx == "fork" && strings.Contains(native.Stdout, "worker=0") {
			want = 0
		}
		crashes := crashesOf(r)
		if len(crashes) != want {
			t.Fatalf("%d crash events of the program, want %d%s", len(crashes), want, r)
		}
		if rec := r.ofType("recovered"); len(rec) != 0 {
			t.Errorf("%d recovered events, want none%s", len(rec), r)
		}
		for _, c := range crashes {
			if c.Signal != k.signal && !(init && k.sent) {
				t.Errorf("crash signal %s, want %s%s", c.Signal, k.signal, r)
			}
			if c.SignalCode == "" {
				t.Errorf("crash event without signalCode%s", r)
			}
		}
	})
}

// TestE2EFaultKindsRecovered: every fault kind inside a rescue point is
// recovered, the ones the program sends itself too, inside a PID namespace
// exactly as outside; the event says how the signal came.
func TestE2EFaultKindsRecovered(t *testing.T) {
	needUnshare(t)
	some := func(kind, ctx string) bool { return ctx != "thread" || kind == "segv" || kind == "tgkill" }
	eachFaultCase(t, "inrp", some, func(t *testing.T, init bool, k faultKind, ctx, prog string, argv []string) {
		r := runAssure(t, faultsManifest(0), prog, argv...)
		want := "rc=-1\nfaults=0\ndone\n"
		if ctx == "fork" {
			want += "worker=0\n"
		}
		wantStatus(t, r, 0)
		if r.Stdout != want {
			t.Fatalf("stdout %q, want %q%s", r.Stdout, want, r)
		}
		evs := wantRecovered(t, r, recovered{n: 1, signal: k.signal, function: "rescue_fault", binary: "faults", ret: -1})
		e := evs[0]
		if e.SignalCode != k.code {
			t.Errorf("signalCode %q, want %q%s", e.SignalCode, k.code, r)
		}
		switch {
		case k.sent && e.FaultAddress != "":
			t.Errorf("faultAddress %q for a signal the program sent itself: it has none%s", e.FaultAddress, r)
		case k.sent && init && ctx != "fork" && e.SenderPid != 1:
			t.Errorf("senderPid %d, want 1 (the namespace's init sent it)%s", e.SenderPid, r)
		case k.sent && !init && e.SenderPid != e.Pid:
			t.Errorf("senderPid %d, want the program's pid %d%s", e.SenderPid, e.Pid, r)
		case !k.sent && (e.FaultAddress == "" || e.SenderPid != 0):
			t.Errorf("a fault: want a faultAddress and no senderPid%s", r)
		}
	})
}

// TestE2ESignalFromAnotherProcess: a fault signal another process sends is
// delivered untouched, inside a rescue point too, in and out of a PID
// namespace.
func TestE2ESignalFromAnotherProcess(t *testing.T) {
	needUnshare(t)
	for _, init := range []bool{false, true} {
		prog, argv := pidNS(init, "sibling", "inrp")
		native := runNative(t, prog, argv...)
		r := runAssure(t, faultsManifest(0), prog, argv...)
		if r.Status != native.Status || r.Stdout != native.Stdout {
			t.Fatalf("init %v: status %d, stdout %q under assure; natively %d, %q%s", init, r.Status, r.Stdout, native.Status, native.Stdout, r)
		}
		if rec := r.ofType("recovered"); len(rec) != 0 {
			t.Errorf("init %v: %d recovered events, want none%s", init, len(rec), r)
		}
		if init {
			continue // ignored by the namespace's init, natively and under assure
		}
		wantSignalDeath(t, r, 11)
		c := crashesOf(r)
		if len(c) != 1 || !strings.Contains(c[0].Message, "sent by another process") || c[0].SignalCode != "SI_USER" || c[0].SenderPid == c[0].Pid {
			t.Errorf("want one crash event: sent by another process, SI_USER, its sender%s", r)
		}
	}
}

// TestE2EAbortLoopPastMaxRecoveries: a program that calls abort() in a loop
// inside a rescue point is recovered maxRecoveries times, then ends as
// without assure, with one crash event — as the init of a PID namespace
// too (where abort's SIGABRT is ignored and its last resort, hlt, ends the
// program with SIGSEGV).
func TestE2EAbortLoopPastMaxRecoveries(t *testing.T) {
	needUnshare(t)
	for _, init := range []bool{false, true} {
		name := "process"
		if init {
			name = "pidns-init"
		}
		t.Run(name, func(t *testing.T) {
			prog, argv := pidNS(init, "abort", "inrp", "loop")
			native := runNative(t, prog, argv...)
			r := runAssure(t, faultsManifest(3), prog, argv...)
			if r.Status != native.Status {
				t.Fatalf("status %d under assure, %d natively%s", r.Status, native.Status, r)
			}
			if want := "rc=-1\nrc=-1\nrc=-1\n"; r.Stdout != want {
				t.Errorf("stdout %q, want %q%s", r.Stdout, want, r)
			}
			if rec := r.ofType("recovered"); len(rec) != 3 {
				t.Errorf("%d recovered events, want 3%s", len(rec), r)
			}
			crashes := crashesOf(r)
			if len(crashes) != 1 || !strings.Contains(crashes[0].Message, "maxRecoveries") {
				t.Fatalf("want one crash event naming maxRecoveries%s", r)
			}
		})
	}
}

// TestE2EFaultStormBounded: a program whose SIGSEGV handler returns faults
// again at once, 2000 times. Natively and under assure it ends with its own
// status 7; assure writes at most the burst of crash events and counts
// every other one in "suppressed" events.
func TestE2EFaultStormBounded(t *testing.T) {
	native := runNative(t, "faults", "segv", "outside", "storm")
	wantStatus(t, native, 7)
	r := runAssure(t, faultsManifest(0), "faults", "segv", "outside", "storm")
	wantStatus(t, r, 7)
	if r.EventsErr != nil {
		t.Fatalf("%v%s", r.EventsErr, r)
	}
	crashes := r.ofType("crash")
	limit := events.Burst + int(r.Took.Seconds()*events.PerSecond) + 1
	if len(crashes) > limit {
		t.Errorf("%d crash events in %v, want at most %d", len(crashes), r.Took, limit)
	}
	total := len(crashes)
	for _, e := range r.ofType("suppressed") {
		if e.Message != "crash" {
			t.Errorf("suppressed event for %q, want crash", e.Message)
		}
		total += e.Count
	}
	if total != 2000 {
		t.Errorf("%d crash events written plus suppressed, want 2000 (each fault counted once)%s", total, r)
	}
}

// TestE2ECoreDump: a fault passed on leaves the core dump the system makes
// without assure (core_pattern "core": in the working directory), in and
// out of a PID namespace.
func TestE2ECoreDump(t *testing.T) {
	needUnshare(t)
	pat, err := os.ReadFile("/proc/sys/kernel/core_pattern")
	if err != nil || strings.TrimSpace(string(pat)) != "core" {
		t.Skipf("core_pattern is %q, not \"core\"", strings.TrimSpace(string(pat)))
	}
	for _, init := range []bool{false, true} {
		prog, argv := pidNS(init, "segv", "outside", "core")
		for _, under := range []bool{false, true} {
			var r result
			if under {
				r = runAssure(t, faultsManifest(0), prog, argv...)
			} else {
				r = runNative(t, prog, argv...)
			}
			wantSignalDeath(t, r, 11)
			st, err := os.Stat(filepath.Join(r.Dir, "core"))
			if err != nil || st.Size() == 0 {
				t.Errorf("init %v, assure %v: no core file (%v)%s", init, under, err, r)
			}
		}
	}
}
