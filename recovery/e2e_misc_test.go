package recovery_test

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
)

// TestE2EInvisibleCheckpoints: on every good request, inside the rescue
// point, the program checks that waitpid(-1, WNOHANG) fails with ECHILD, its
// SIGCHLD handler never ran, and /proc/self/fd and /proc/self/task have as
// many entries as before the first call; once more in main after the loop
// (after a recovery: request 10 of 20 faults). Every check must hold under
// assure, exactly as natively.
func TestE2EInvisibleCheckpoints(t *testing.T) {
	want := map[string]string{
		"ok": "19", "errors": "1", "calls": "19",
		"echild": "19", "sigchld_zero": "19", "fds_same": "19", "tasks_same": "19",
		"final_echild": "1", "final_sigchld": "0", "final_fds_same": "1", "final_tasks_same": "1",
	}
	t.Run("native", func(t *testing.T) {
		r := runNative(t, "invisible", "validate", "20", "10")
		wantStatus(t, r, 0)
		wantKV(t, r, want)
		wantSignalDeath(t, runNative(t, "invisible", "fault", "20", "10"), syscall.SIGSEGV)
	})
	t.Run("assure", func(t *testing.T) {
		r := runAssure(t, simpleManifest("invisible", -1, "handle_request"), "invisible", "fault", "20", "10")
		wantStatus(t, r, 0)
		wantKV(t, r, want)
		wantRecovered(t, r, recovered{n: 1, signal: "SIGSEGV", function: "handle_request", binary: "invisible", ret: -1, single: true})
	})
}

// TestE2EExitStatusPassThrough: assure exits with the program's status, or
// 128+N when signal N killed it; stdin, stdout and stderr pass through
// untouched (256 KiB through a cat-like program whose copy function is a
// rescue point).
func TestE2EExitStatusPassThrough(t *testing.T) {
	m := simpleManifest("passthru", -1, "copy_chunk")
	for _, under := range []string{"native", "assure"} {
		t.Run(under, func(t *testing.T) {
			do := func(stdin []byte, args ...string) result {
				s := runSpec{prog: "passthru", args: args, stdin: stdin}
				if under == "assure" {
					s.manifest = m
				}
				return run(t, s)
			}
			t.Run("exit7", func(t *testing.T) {
				r := do(nil, "exit", "7")
				wantStatus(t, r, 7)
				if r.Stdout != "exiting with 7\n" {
					t.Errorf("stdout %q, want %q%s", r.Stdout, "exiting with 7\n", r)
				}
			})
			t.Run("sigkill", func(t *testing.T) {
				r := do(nil, "kill")
				wantSignalDeath(t, r, syscall.SIGKILL)
				if r.Stdout != "killing myself\n" {
					t.Errorf("stdout %q, want %q%s", r.Stdout, "killing myself\n", r)
				}
			})
			t.Run("stdio", func(t *testing.T) {
				data := make([]byte, 256<<10)
				x := uint32(12345)
				for i := range data {
					x = x*1103515245 + 12345
					data[i] = byte(x >> 16)
				}
				r := do(data, "cat")
				wantStatus(t, r, 0)
				if !bytes.Equal([]byte(r.Stdout), data) {
					t.Errorf("stdout (%d bytes) differs from stdin (%d bytes)", len(r.Stdout), len(data))
				}
				const line = "passthru: copied 262144 bytes\n"
				if !strings.Contains(r.Stderr, line) {
					t.Errorf("stderr lacks %q:\n%s", line, clip(r.Stderr, 2000))
				}
				if under == "assure" && r.EventsErr == nil {
					if rec := r.ofType("recovered"); len(rec) != 0 {
						t.Errorf("%d recovered events, want none", len(rec))
					}
				}
			})
		})
	}
}
