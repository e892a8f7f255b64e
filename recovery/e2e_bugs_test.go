package recovery_test

import (
	"regexp"
	"strconv"
	"syscall"
	"testing"
)

// bugs N EVERY: request i is bad when i % EVERY == EVERY/2.
const (
	bugsN     = "100"
	bugsEvery = "25"
	bugsBad   = 4 // 12, 37, 62, 87
)

// bugsReference runs the program in "none" mode: the handler itself rejects
// the bad requests before changing anything. Error virtualization must
// produce exactly this output.
func bugsReference(t *testing.T, prog string) result {
	t.Helper()
	ref := runNative(t, prog, "none", bugsN, bugsEvery)
	wantStatus(t, ref, 0)
	wantKV(t, ref, map[string]string{
		"ok": strconv.Itoa(100 - bugsBad), "errors": strconv.Itoa(bugsBad),
		"processed": strconv.Itoa(100 - bugsBad), "listed": strconv.Itoa(100 - bugsBad),
	})
	return ref
}

func bugsManifest(rp rescuePoint) string {
	return manifest{
		Version:      1,
		RescuePoints: []rescuePoint{rp},
		Signals:      []string{"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"},
	}.JSON()
}

// TestE2EBugClasses: one single-threaded request loop, one bug class per
// subtest, 4 bad requests out of 100. Natively the program dies of the bug's
// signal; under assure, with handle_request a rescue point returning -1, it
// exits 0 and prints exactly what the reference run prints (ok, errors and
// a checksum of the heap list, the global table and the counter), with one
// recovered event per bad request.
func TestE2EBugClasses(t *testing.T) {
	ref := bugsReference(t, "bugs")
	m := bugsManifest(fn("bugs", "handle_request", -1))

	classes := []struct {
		bug  string
		sig  syscall.Signal
		mark *regexp.Regexp // what the bug prints on stderr (glibc), if anything
	}{
		{"null", syscall.SIGSEGV, nil},
		{"heap", syscall.SIGABRT, regexp.MustCompile(`(?m)^(double free or corruption|free\(\)|malloc\(\)|corrupted).*$`)},
		{"smash", syscall.SIGABRT, regexp.MustCompile(`(?m)^\*\*\* stack smashing detected \*\*\*.*$`)},
		{"div", syscall.SIGFPE, nil},
		{"assert", syscall.SIGABRT, regexp.MustCompile(`(?m)^.*Assertion .* failed\.$`)},
		{"ill", syscall.SIGILL, nil},
		{"bus", syscall.SIGBUS, nil},
	}
	for _, c := range classes {
		t.Run(c.bug, func(t *testing.T) {
			t.Run("native", func(t *testing.T) {
				r := runNative(t, "bugs", c.bug, bugsN, bugsEvery)
				wantSignalDeath(t, r, c.sig)
				if r.Stdout != "" {
					t.Errorf("stdout %q, want nothing (dies at the first bad request)%s", r.Stdout, r)
				}
				if c.mark != nil {
					if n := len(c.mark.FindAllString(r.Stderr, -1)); n != 1 {
						t.Errorf("stderr has %d lines matching %v, want 1 (the bug must be the real one)%s", n, c.mark, r)
					}
				}
			})
			t.Run("assure", func(t *testing.T) {
				r := runAssure(t, m, "bugs", c.bug, bugsN, bugsEvery)
				wantStatus(t, r, 0)
				if r.Stdout != ref.Stdout {
					t.Errorf("stdout differs from the reference run\nwant:\n%s%s", ref.Stdout, r)
				}
				evs := wantRecovered(t, r, recovered{
					n: bugsBad, signal: signalNames[c.sig], function: "handle_request",
					binary: "bugs", ret: -1, single: true,
				})
				for i, e := range evs {
					// handle_request wrote the heap, a global and the stack
					if e.PagesRestored < 1 {
						t.Errorf("recovered event %d: pagesRestored %d, want >= 1", i, e.PagesRestored)
					}
				}
				if c.mark != nil {
					if n := len(c.mark.FindAllString(r.Stderr, -1)); n != bugsBad {
						t.Errorf("stderr has %d lines matching %v, want %d (one per bad request)%s", n, c.mark, bugsBad, r)
					}
				}
			})
		})
	}
}

// TestE2EBinaryKinds: the null-pointer bug in a PIE, a non-PIE and a
// stripped executable; the stripped one with the rescue point given by
// address (from nm on the unstripped copy).
func TestE2EBinaryKinds(t *testing.T) {
	addr := nmAddress(t, "bugs", "handle_request")
	kinds := []struct {
		name, prog string
		pie        bool
		symtab     bool
		rp         rescuePoint
		function   string // expected rescuePoint.function in events; "" unchecked
	}{
		{"pie", "bugs", true, true, fn("bugs", "handle_request", -1), "handle_request"},
		{"nopie", "bugs-nopie", false, true, fn("bugs-nopie", "handle_request", -1), "handle_request"},
		{"stripped-address", "bugs-stripped", true, false,
			rescuePoint{Binary: bin("bugs-stripped"), Address: addr, Return: ptr(int64(-1))}, ""},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			pie, symtab := elfInfo(t, k.prog)
			if pie != k.pie || symtab != k.symtab {
				t.Fatalf("%s: PIE %v .symtab %v, want %v %v (build problem)", k.prog, pie, symtab, k.pie, k.symtab)
			}
			ref := bugsReference(t, k.prog)
			t.Run("native", func(t *testing.T) {
				wantSignalDeath(t, runNative(t, k.prog, "null", bugsN, bugsEvery), syscall.SIGSEGV)
			})
			t.Run("assure", func(t *testing.T) {
				r := runAssure(t, bugsManifest(k.rp), k.prog, "null", bugsN, bugsEvery)
				wantStatus(t, r, 0)
				if r.Stdout != ref.Stdout {
					t.Errorf("stdout differs from the reference run\nwant:\n%s%s", ref.Stdout, r)
				}
				evs := wantRecovered(t, r, recovered{
					n: bugsBad, signal: "SIGSEGV", function: k.function,
					binary: k.prog, ret: -1, single: true,
				})
				if k.function == "" && len(evs) > 0 && evs[0].RescuePoint != nil {
					t.Logf("stripped binary: rescuePoint in events: %+v", *evs[0].RescuePoint)
				}
			})
		})
	}
}

// TestE2EMaxRecoveries: "maxRecoveries": 2 and 5 bad requests. The first two
// are recovered; the third fault is delivered as if assure were not there:
// SIGSEGV, exit status 139, and a crash event.
func TestE2EMaxRecoveries(t *testing.T) {
	const n, every = "50", "10" // bad: 5, 15, 25, 35, 45
	t.Run("native", func(t *testing.T) {
		wantSignalDeath(t, runNative(t, "bugs", "null", n, every), syscall.SIGSEGV)
	})
	t.Run("assure", func(t *testing.T) {
		m := manifest{
			Version:       1,
			RescuePoints:  []rescuePoint{fn("bugs", "handle_request", -1)},
			MaxRecoveries: 2,
		}.JSON()
		r := runAssure(t, m, "bugs", "null", n, every)
		wantSignalDeath(t, r, syscall.SIGSEGV)
		if r.EventsErr != nil {
			t.Fatalf("%v%s", r.EventsErr, r)
		}
		if got := len(r.ofType("recovered")); got != 2 {
			t.Errorf("%d recovered events, want exactly 2 (maxRecoveries)%s", got, r)
		}
		crashes := r.ofType("crash")
		if len(crashes) != 1 || crashes[0].Signal != "SIGSEGV" {
			t.Errorf("crash events %v, want one SIGSEGV crash (the third fault)%s", crashes, r)
		}
		if r.Stdout != "" {
			t.Errorf("stdout %q, want nothing (the program died in the loop)%s", r.Stdout, r)
		}
	})
}

func ptr[T any](v T) *T { return &v }
