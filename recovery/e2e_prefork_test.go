package recovery_test

import (
	"strconv"
	"testing"
)

// TestE2EPrefork: a parent forks 3 workers that share counters in a
// MAP_SHARED|MAP_ANONYMOUS region (atomics); each handles 40 requests, 4 of
// them bad. Natively every worker dies of SIGSEGV at its first bad request
// (the parent reports worker_status_N=139). Under assure: every worker exits
// 0, the totals and each worker's private checksum are exactly those of the
// reference run, and the 12 recovered events come from the worker pids, 4
// each.
//
//   - process scope: the handler writes only private memory before the
//     fault; the callers update the shared counters (concurrently with the
//     rollbacks of other workers, which must not undo them).
//   - container scope: the handler also adds to a shared counter before the
//     fault; the coordinated checkpoint must undo that too (shared_in_rp).
func TestE2EPrefork(t *testing.T) {
	const r, every = "40", "10"
	variants := []struct {
		name, sharedWrite, scope string
	}{
		{"process-scope", "0", ""},
		{"container-scope", "1", "container"},
	}
	pidKeys := []string{"parent_pid", "worker_pid_0", "worker_pid_1", "worker_pid_2"}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			ref := runNative(t, "prefork", "validate", v.sharedWrite, r, every)
			wantStatus(t, ref, 0)
			wantKV(t, ref, map[string]string{
				"total": "120", "ok": "108", "errors": "12",
				"worker_status_0": "0", "worker_status_1": "0", "worker_status_2": "0",
				"worker_handled_0": "36", "worker_handled_1": "36", "worker_handled_2": "36",
			})
			t.Run("native", func(t *testing.T) {
				n := runNative(t, "prefork", "fault", v.sharedWrite, r, every)
				wantStatus(t, n, 0)
				wantKV(t, n, map[string]string{
					"worker_status_0": "139", "worker_status_1": "139", "worker_status_2": "139",
				})
			})
			t.Run("assure", func(t *testing.T) {
				rp := fn("prefork", "handle_request", -1)
				rp.Scope = v.scope
				m := manifest{Version: 1, RescuePoints: []rescuePoint{rp}}.JSON()
				res := runAssure(t, m, "prefork", "fault", v.sharedWrite, r, every)
				wantStatus(t, res, 0)
				wantSameKV(t, res, ref, pidKeys...)
				// With container scope a rollback returns every process to the
				// checkpoint: workers forked since are ended and forked again
				// (new pids), work done since is redone, faults included.
				container := v.scope == "container"
				evs := wantRecovered(t, res, recovered{n: 12, atLeast: container, signal: "SIGSEGV", function: "handle_request", binary: "prefork", ret: -1})
				kv := res.kv()
				perWorker := map[int]int{}
				for w := 0; w < 3; w++ {
					pid, err := strconv.Atoi(kv["worker_pid_"+strconv.Itoa(w)])
					if err != nil {
						t.Fatalf("no worker_pid_%d in the output%s", w, res)
					}
					perWorker[pid] = 0
				}
				for i, e := range evs {
					if container {
						if strconv.Itoa(e.Pid) == kv["parent_pid"] || e.ProcessesRolledBack < 2 {
							t.Errorf("recovered event %d: pid %d processesRolledBack %d; want a worker, and the parent rolled back with it", i, e.Pid, e.ProcessesRolledBack)
						}
						continue
					}
					if _, ok := perWorker[e.Pid]; !ok {
						t.Errorf("recovered event %d: pid %d is not a worker (workers %v, parent %s)", i, e.Pid, perWorker, kv["parent_pid"])
						continue
					}
					perWorker[e.Pid]++
					if e.Tid != e.Pid {
						t.Errorf("recovered event %d: tid %d, want the worker's pid %d (single-threaded)", i, e.Tid, e.Pid)
					}
					if e.ProcessesRolledBack != 1 {
						t.Errorf("recovered event %d: processesRolledBack %d, want 1 with process scope", i, e.ProcessesRolledBack)
					}
				}
				for pid, n := range perWorker {
					if container {
						break
					}
					if n != 4 {
						t.Errorf("worker %d: %d recovered events, want 4%s", pid, n, res)
					}
				}
			})
		})
	}
}
