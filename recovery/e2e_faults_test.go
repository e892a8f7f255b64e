package recovery_test

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func crashManifest() string {
	return simpleManifest("crash", -1, "rescue_me")
}

// TestE2EFaultOutsideRescuePoint: a fault that no rescue point covers ends
// the program exactly as without assure.
func TestE2EFaultOutsideRescuePoint(t *testing.T) {
	// (a) No handler: death by SIGSEGV (139), plus a crash event whose
	// stack starts in the faulting function.
	t.Run("plain", func(t *testing.T) {
		t.Run("native", func(t *testing.T) {
			r := runNative(t, "crash", "plain")
			wantSignalDeath(t, r, syscall.SIGSEGV)
			if r.Stdout != "before crash\n" {
				t.Errorf("stdout %q, want %q%s", r.Stdout, "before crash\n", r)
			}
		})
		t.Run("assure", func(t *testing.T) {
			r := runAssure(t, crashManifest(), "crash", "plain")
			wantSignalDeath(t, r, syscall.SIGSEGV)
			if r.Stdout != "before crash\n" {
				t.Errorf("stdout %q, want %q%s", r.Stdout, "before crash\n", r)
			}
			if r.EventsErr != nil {
				t.Fatalf("%v%s", r.EventsErr, r)
			}
			if rec := r.ofType("recovered"); len(rec) != 0 {
				t.Errorf("%d recovered events, want none%s", len(rec), r)
			}
			crashes := r.ofType("crash")
			if len(crashes) != 1 {
				t.Fatalf("%d crash events, want 1%s", len(crashes), r)
			}
			c := crashes[0]
			if c.Signal != "SIGSEGV" {
				t.Errorf("crash signal %q, want SIGSEGV%s", c.Signal, r)
			}
			if addr, err := strconv.ParseUint(strings.TrimPrefix(c.FaultAddress, "0x"), 16, 64); err != nil || addr != 0 {
				t.Errorf("crash faultAddress %q, want 0x0 (a write through a null pointer)%s", c.FaultAddress, r)
			}
			if len(c.Stack) == 0 {
				t.Fatalf("crash event has an empty stack%s", r)
			}
			if !strings.HasPrefix(c.Stack[0], "process_item+") && !strings.HasPrefix(c.Stack[0], "process_item ") {
				t.Errorf("crash stack starts with %q, want the faulting function process_item\n  stack: %q%s", c.Stack[0], c.Stack, r)
			}
			// Walked with the unwind tables: the caller next, nothing
			// the stack merely holds in between.
			if len(c.Stack) < 2 || !strings.HasPrefix(c.Stack[1], "main+") {
				t.Errorf("crash stack %q: want main right after process_item%s", c.Stack, r)
			}
			if !strings.Contains(r.Stderr, "assure: crash") {
				t.Errorf("no 'assure: crash' line on stderr%s", r)
			}
		})
	})
	// (b) The program's own SIGSEGV handler runs, prints and _exit(3)s.
	t.Run("own-handler", func(t *testing.T) {
		const want = "before crash\nhandler ran\n"
		t.Run("native", func(t *testing.T) {
			r := runNative(t, "crash", "handler")
			wantStatus(t, r, 3)
			if r.Stdout != want {
				t.Errorf("stdout %q, want %q%s", r.Stdout, want, r)
			}
		})
		t.Run("assure", func(t *testing.T) {
			r := runAssure(t, crashManifest(), "crash", "handler")
			wantStatus(t, r, 3)
			if r.Stdout != want {
				t.Errorf("stdout %q, want %q%s", r.Stdout, want, r)
			}
			if r.EventsErr != nil {
				t.Fatalf("%v%s", r.EventsErr, r)
			}
			if rec := r.ofType("recovered"); len(rec) != 0 {
				t.Errorf("%d recovered events, want none%s", len(rec), r)
			}
		})
	})
}

// TestE2EOwnHandlerNotRun: the program has its own SIGSEGV handler (which
// would print "handler ran" and exit 3); the fault happens inside a rescue
// point. Under assure the handler does not run: the call returns -1 and the
// program finishes normally.
func TestE2EOwnHandlerNotRun(t *testing.T) {
	t.Run("native", func(t *testing.T) {
		r := runNative(t, "crash", "inrp")
		wantStatus(t, r, 3)
		if r.Stdout != "handler ran\n" {
			t.Errorf("stdout %q, want %q%s", r.Stdout, "handler ran\n", r)
		}
	})
	t.Run("assure", func(t *testing.T) {
		r := runAssure(t, crashManifest(), "crash", "inrp")
		wantStatus(t, r, 0)
		if strings.Contains(r.Stdout, "handler ran") {
			t.Errorf("the program's SIGSEGV handler ran%s", r)
		}
		// calls=1: the first, good call's increment stays; the faulting
		// call's is rolled back.
		const want = "rc=-1\ncalls=1\ndone\n"
		if r.Stdout != want {
			t.Errorf("stdout %q, want %q%s", r.Stdout, want, r)
		}
		wantRecovered(t, r, recovered{n: 1, signal: "SIGSEGV", function: "rescue_me", binary: "crash", ret: -1, single: true})
	})
}
