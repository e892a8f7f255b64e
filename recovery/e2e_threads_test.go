package recovery_test

import (
	"syscall"
	"testing"
)

// TestE2EMultiThreaded: 4 worker threads x 50 requests, every 10th bad (20
// bad, half of them faulting while holding the shared mutex). Under assure:
// exit 0; totals, shared table checksum and the callers' counters exactly
// those of the reference run; the consistency thread (memory, rbx and xmm8
// counters kept equal step by step) saw no mismatch; the reader thread,
// blocked in read() across every checkpoint and rollback, receives exactly
// the 16 bytes written after the recoveries.
func TestE2EMultiThreaded(t *testing.T) {
	const m, every = "50", "10"
	ref := runNative(t, "mt", "validate", m, every)
	wantStatus(t, ref, 0)
	wantKV(t, ref, map[string]string{
		"total": "200", "ok": "180", "errors": "20", "handled": "180",
		"mismatches": "0", "consistency_ran": "1", "reader_bytes": "16", "reader_got": "after-recovery!",
	})
	t.Run("native", func(t *testing.T) {
		wantSignalDeath(t, runNative(t, "mt", "fault", m, every), syscall.SIGSEGV)
	})
	t.Run("assure", func(t *testing.T) {
		mf := simpleManifest("mt", -1, "handle_request")
		r := runAssure(t, mf, "mt", "fault", m, every)
		wantStatus(t, r, 0)
		wantSameKV(t, r, ref)
		evs := wantRecovered(t, r, recovered{n: 20, atLeast: true, signal: "SIGSEGV", function: "handle_request", binary: "mt", ret: -1})
		for i, e := range evs {
			if e.Pid != evs[0].Pid {
				t.Errorf("recovered event %d: pid %d, want %d like the others (one process)", i, e.Pid, evs[0].Pid)
			}
			if e.Tid == e.Pid {
				t.Errorf("recovered event %d: tid %d is the main thread; the faults happen in worker threads", i, e.Tid)
			}
			if e.ThreadsRolledBack < 1 || e.ProcessesRolledBack != 1 {
				t.Errorf("recovered event %d: threadsRolledBack %d processesRolledBack %d, want >= 1 and 1",
					i, e.ThreadsRolledBack, e.ProcessesRolledBack)
			}
		}
	})
}
