package recovery_test

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestE2EStressLayout: the stress program (testdata/progs/stress.c) runs 5
// worker threads that unmap, replace, move and re-protect mappings of every
// kind (PROT_NONE reservations, read-only memory, PROT_NONE memory with
// contents, a private file mapping, an arena-like region grown with
// mprotect), start threads (new stacks, new malloc arenas, glibc's stack
// cache unmapping old stacks), make a named helper thread exit, overflow
// stack buffers (REASSURE's steps_threaded_crashes) and unmap their own
// stack (the kernel cannot even return such a thread to user mode, and the
// rollback must run its calls in another thread), inside a rescue point,
// faulting in most rounds while the other workers do the same. With process
// scope every recovery rolls all threads back; the workers' windows run one
// at a time (the gate), so each bad round is recovered once. Under assure, in every run: exit 0; every
// faulting round returned -1 and every other round 0 (errors ==
// want_errors); after every recovery the worker's mappings are exactly as
// before (addresses, protections, contents: bad=0); the helpers, brought
// back each time they exited inside a rescue point, are alive and keep
// their names; no crash, no error event; the supervisor never panics. The
// runs together pass hundreds of recoveries.
func TestE2EStressLayout(t *testing.T) {
	const workers, rounds, runs = 5, 20, 3
	t.Run("native", func(t *testing.T) {
		r := runNative(t, "stress", strconv.Itoa(workers), strconv.Itoa(rounds))
		if r.Status != 128+int(syscall.SIGSEGV) && r.Status != 128+int(syscall.SIGABRT) {
			t.Fatalf("exit status %d, want death by SIGSEGV or SIGABRT (the first bad round)%s", r.Status, r)
		}
	})
	m := manifest{Version: 1, RescuePoints: []rescuePoint{fn("stress", "step", -1)}, MaxRecoveries: 100000}.JSON()
	total := 0
	for i := 0; i < runs; i++ {
		t.Run("assure-"+strconv.Itoa(i), func(t *testing.T) {
			r := runAssure(t, m, "stress", strconv.Itoa(workers), strconv.Itoa(rounds))
			wantStatus(t, r, 0)
			kv := r.kv()
			want, _ := strconv.Atoi(kv["want_errors"])
			if want == 0 {
				t.Fatalf("no want_errors in the output%s", r)
			}
			wantKV(t, r, map[string]string{
				"errors": kv["want_errors"], "bad": "0", "helpers": strconv.Itoa(workers), "names": strconv.Itoa(workers),
				"ok": strconv.Itoa(workers*rounds - want),
			})
			rec := wantRecovered(t, r, recovered{n: want, atLeast: true, function: "step", binary: "stress", ret: -1, signal: "*"})
			total += len(rec)
			if strings.Contains(r.Stderr, "panic") {
				t.Errorf("the supervisor panicked%s", r)
			}
		})
	}
	t.Logf("%d recoveries in %d runs", total, runs)
	if total < 200 {
		t.Errorf("%d recoveries in all, want hundreds (at least 200)", total)
	}
}
