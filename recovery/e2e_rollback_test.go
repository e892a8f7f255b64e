package recovery_test

import (
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestE2ERollback: what a recovery undoes. For each mode the rescue point
// mutate() (or clobber_regs() for "regs") changes one kind of state and then
// faults. The program measures all its probes before and after the call
// (program memory, mappings, brk, fds, threads, signal mask, FP control
// state, and the kernel state the journal restores: signal dispositions,
// the alternate signal stack, descriptors and offsets, prctl attributes,
// umask, cwd, resource limits, pages discarded with madvise, thread names;
// see rollback.c).
//
//   - native, fault:    dies with SIGSEGV;
//   - native, nofault:  rc=0 and the probes of the mode do change (so each
//     probe is shown to see what it is meant to see);
//   - assure, fault:    rc=-1 and every probe after equals its value before,
//     plus mode-specific after-only observations.
func TestE2ERollback(t *testing.T) {
	m := manifest{Version: 1, RescuePoints: []rescuePoint{
		fn("rollback", "mutate", -1),
		fn("rollback", "clobber_regs", -1),
	}}.JSON()

	modes := []struct {
		mode string
		// probes that change natively without a fault
		changes []string
		// after-only observations: natively without a fault, and under
		// assure after the recovery
		extraNative, extraAssure map[string]string
		function                 string
	}{
		{mode: "heap", changes: []string{"heap_sum", "heap_inuse"}},
		{mode: "stack", changes: []string{"stack_local", "stack_buf"}},
		{mode: "global", changes: []string{"global_int", "global_buf"}},
		{mode: "kernel", changes: []string{"kbuf_sum"}},
		{mode: "mmap", changes: []string{"maps_lines", "fixed_mapped"},
			extraNative: map[string]string{"extra_oob_mapped": "1"},
			extraAssure: map[string]string{"extra_oob_mapped": "0"}},
		{mode: "brk", changes: []string{"brk", "brk_next_mapped"}},
		{mode: "fd", changes: []string{"fd_count"},
			extraNative: map[string]string{"extra_new_fds_open": "6"},
			extraAssure: map[string]string{"extra_new_fds_open": "0"}},
		{mode: "thread", changes: []string{"task_count", "maps_lines"},
			extraNative: map[string]string{"extra_new_thread_exists": "1"},
			extraAssure: map[string]string{"extra_new_thread_exists": "0"}},
		// The child forked inside the rescue point must not be running
		// afterwards. Accepted: it is gone (reaped) or a zombie; see
		// extra_child_state. Not accepted: alive in any other state.
		{mode: "fork",
			extraNative: map[string]string{"extra_child_running": "1", "extra_child_state": "running"},
			extraAssure: map[string]string{"extra_child_running": "0"}},
		{mode: "sigmask", changes: []string{"usr1_blocked"}},
		{mode: "fpenv", changes: []string{"fpround", "mxcsr", "x87cw"}},
		// Callee-saved registers: equal before and after also natively,
		// where the function restores them in its epilogue; under assure
		// the fault skips the epilogue.
		{mode: "regs", function: "clobber_regs"},
		// Kernel state, put back from the journal. file_same, pipe_same
		// and sock_same compare (kcmp) each descriptor with a duplicate
		// kept outside the rescue point: 0 is the same open file
		// description.
		{mode: "sigaction", changes: []string{"usr1_handler", "usr1_flags", "usr1_mask", "usr2_handler", "segv_handler", "segv_flags"}},
		{mode: "altstack", changes: []string{"alt_sp", "alt_size", "alt_flags"}},
		{mode: "close", changes: []string{"fd_count", "file_ino", "file_off", "file_same", "pipe_ino", "pipe_same", "sock_ino", "sock_same"}},
		{mode: "dup2", changes: []string{"file_ino", "file_same"}},
		{mode: "offset", changes: []string{"file_off"}},
		{mode: "prctl", changes: []string{"dumpable", "pdeathsig", "subreaper", "keepcaps", "timerslack"}},
		{mode: "umask", changes: []string{"umask_"}},
		{mode: "cwd", changes: []string{"cwd"}},
		{mode: "rlimit", changes: []string{"nofile_soft", "stack_soft"}},
		{mode: "madvise", changes: []string{"fmap_sum", "shm_sum"}},
		{mode: "name", changes: []string{"main_name", "helper_name"}},
		{mode: "threadexit", changes: []string{"task_count", "helper_name"}},
		{mode: "resethand", changes: []string{"usr2_handler"}},
		// shm_shared and fshared_shared: a write through the mapping shows
		// through a second mapping of the memfd, and in the file.
		{mode: "unmapshared", changes: []string{"maps_lines", "shm_sum", "shm_shared", "fshared_sum", "fshared_shared"}},
	}
	for _, c := range modes {
		t.Run(c.mode, func(t *testing.T) {
			t.Run("native", func(t *testing.T) {
				wantSignalDeath(t, runNative(t, "rollback", c.mode, "fault"), syscall.SIGSEGV)

				r := runNative(t, "rollback", c.mode, "nofault")
				wantStatus(t, r, 0)
				wantKV(t, r, map[string]string{"rc": "0"})
				pairs := probePairs(t, r)
				for _, p := range c.changes {
					v, ok := pairs[p]
					if !ok {
						t.Errorf("no probe %s%s", p, r)
					} else if v[0] == v[1] {
						t.Errorf("probe %s did not change without a fault (%s): it cannot show a rollback%s", p, v[0], r)
					}
				}
				wantKV(t, r, c.extraNative)
			})
			t.Run("assure", func(t *testing.T) {
				r := runAssure(t, m, "rollback", c.mode, "fault")
				wantStatus(t, r, 0)
				wantKV(t, r, map[string]string{"rc": "-1"})
				pairs := probePairs(t, r)
				var diff []string
				for name, v := range pairs {
					if v[0] != v[1] {
						diff = append(diff, name+": "+v[0]+" before, "+v[1]+" after")
					}
				}
				sort.Strings(diff)
				if len(diff) > 0 {
					t.Errorf("not rolled back:\n  %s%s", strings.Join(diff, "\n  "), r)
				}
				wantKV(t, r, c.extraAssure)
				if c.mode == "fork" {
					t.Logf("child forked inside the rescue point, after the recovery: %s (reaped by the program: %s)",
						r.kv()["extra_child_state"], r.kv()["extra_child_reaped_by_program"])
				}
				f := c.function
				if f == "" {
					f = "mutate"
				}
				wantRecovered(t, r, recovered{n: 1, signal: "SIGSEGV", function: f, binary: "rollback", ret: -1})
			})
		})
	}
}

// probePairs collects NAME_before / NAME_after values.
func probePairs(t *testing.T, r result) map[string][2]string {
	t.Helper()
	kv := r.kv()
	pairs := map[string][2]string{}
	for k, v := range kv {
		if name, ok := strings.CutSuffix(k, "_before"); ok {
			after, ok := kv[name+"_after"]
			if !ok {
				t.Fatalf("probe %s has no _after value%s", name, r)
			}
			pairs[name] = [2]string{v, after}
		}
	}
	if len(pairs) == 0 {
		t.Fatalf("no probes in the output%s", r)
	}
	return pairs
}

// TestE2ENested: outer() (error value -1) calls inner() (error value -2),
// both rescue points. A fault in inner returns -2 from inner only: inner's
// write is undone, outer's write made before calling inner stays, and outer
// goes on and returns 0. A fault in outer after inner returned returns -1
// from outer and undoes everything since outer's entry, inner's effects
// included.
func TestE2ENested(t *testing.T) {
	t.Run("native", func(t *testing.T) {
		r := runNative(t, "nested", "none")
		wantStatus(t, r, 0)
		wantKV(t, r, map[string]string{
			"1.outer_rc": "0", "1.inner_rc": "0", "1.outer_before": "1", "1.inner_written": "1", "1.outer_after": "1",
		})
		wantSignalDeath(t, runNative(t, "nested", "inner"), syscall.SIGSEGV)
		wantSignalDeath(t, runNative(t, "nested", "outer"), syscall.SIGSEGV)
	})
	t.Run("assure", func(t *testing.T) {
		m := manifest{Version: 1, RescuePoints: []rescuePoint{
			fn("nested", "outer", -1),
			fn("nested", "inner", -2),
		}}.JSON()
		r := runAssure(t, m, "nested", "inner", "outer", "none", "inner")
		wantStatus(t, r, 0)
		faultInInner := map[string]string{"outer_rc": "0", "inner_rc": "-2", "outer_before": "1", "inner_written": "0", "outer_after": "1"}
		faultInOuter := map[string]string{"outer_rc": "-1", "inner_rc": "99", "outer_before": "0", "inner_written": "0", "outer_after": "0"}
		noFault := map[string]string{"outer_rc": "0", "inner_rc": "0", "outer_before": "1", "inner_written": "1", "outer_after": "1"}
		want := map[string]string{}
		for i, step := range []map[string]string{faultInInner, faultInOuter, noFault, faultInInner} {
			for k, v := range step {
				want[strconv.Itoa(i+1)+"."+k] = v
			}
		}
		wantKV(t, r, want)
		if r.EventsErr != nil {
			t.Fatalf("%v%s", r.EventsErr, r)
		}
		rec := r.ofType("recovered")
		type fr struct {
			f string
			r int64
		}
		wantSeq := []fr{{"inner", -2}, {"outer", -1}, {"inner", -2}}
		var got []fr
		for _, e := range rec {
			x := fr{r: -999}
			if e.RescuePoint != nil {
				x.f = e.RescuePoint.Function
			}
			if e.Return != nil {
				x.r = *e.Return
			}
			got = append(got, x)
		}
		if len(got) != len(wantSeq) {
			t.Fatalf("recovered events (function, return) %v, want %v%s", got, wantSeq, r)
		}
		for i := range got {
			if got[i] != wantSeq[i] {
				t.Errorf("recovered events (function, return) %v, want %v%s", got, wantSeq, r)
				break
			}
		}
	})
}

// TestE2ERollbackSeccomp (bad input): the program's seccomp filter fails
// socketpair, which a rollback needs to give back a descriptor that the
// rescue point closed. The rollback still completes (rc=-1, every other
// probe as before) and an error event names the descriptor it could not
// restore and why.
func TestE2ERollbackSeccomp(t *testing.T) {
	m := manifest{Version: 1, RescuePoints: []rescuePoint{fn("rollback", "mutate", -1)}}.JSON()
	r := runAssure(t, m, "rollback", "seccomp-close", "fault")
	wantStatus(t, r, 0)
	wantKV(t, r, map[string]string{"rc": "-1"})
	notRestored := map[string]bool{"fd_count": true, "file_ino": true, "file_off": true, "file_flags": true, "file_same": true,
		"fshared_shared": true} // read through the file descriptor
	for name, v := range probePairs(t, r) {
		if v[0] != v[1] && !notRestored[name] {
			t.Errorf("probe %s: %s before, %s after%s", name, v[0], v[1], r)
		}
		if v[0] == v[1] && notRestored[name] {
			t.Errorf("probe %s unchanged: the filter did not stop the restore of the descriptor?%s", name, r)
		}
	}
	if n := len(r.ofType("recovered")); n != 1 {
		t.Errorf("%d recovered events, want 1%s", n, r)
	}
	errs := r.ofType("error")
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "descriptor") || !strings.Contains(errs[0].Message, "socketpair: operation not permitted") {
		t.Fatalf("want one error event naming the descriptor and socketpair's EPERM, got %v%s", errs, r)
	}
}

// TestE2ERollbackCannotComplete (bad input): the program's seccomp filter
// forbids unmapping the mapping the rescue point made, so the rollback
// cannot restore the layout. The process ends as it would without assure
// (its SIGSEGV handler, installed with SA_RESETHAND, runs, the fault
// recurs, it dies of SIGSEGV), with an error event that says why, and
// nothing hangs.
func TestE2ERollbackCannotComplete(t *testing.T) {
	native := runNative(t, "rollback", "seccomp-munmap", "fault")
	wantSignalDeath(t, native, syscall.SIGSEGV)
	m := manifest{Version: 1, RescuePoints: []rescuePoint{fn("rollback", "mutate", -1)}}.JSON()
	r := runAssure(t, m, "rollback", "seccomp-munmap", "fault")
	wantSignalDeath(t, r, syscall.SIGSEGV)
	if n := len(r.ofType("recovered")); n != 0 {
		t.Errorf("%d recovered events, want none%s", n, r)
	}
	errs := r.ofType("error")
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "failed") || !strings.Contains(errs[0].Message, "operation not permitted") {
		t.Errorf("want one error event saying the rollback failed and why, got %v%s", errs, r)
	}
	if len(r.ofType("crash")) == 0 {
		t.Errorf("no crash event for the fault that was delivered%s", r)
	}
}
