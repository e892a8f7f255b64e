package recovery_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestE2ELearnFromCrash: with a manifest that heals, a crash outside every
// rescue point arms the innermost candidate on the faulting stack (a
// "learned" event) and --learn FILE keeps it: the next run, from FILE, has
// it armed from the start and survives the same fault. Candidates are
// named in the manifest (crash.c's void process_item) or derived by
// static analysis (bugs.c's handle_request, -1), whose recovered run
// prints exactly what the native run that rejects the bad requests does.
func TestE2ELearnFromCrash(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	for _, tc := range []struct {
		name, prog, heal, learned string
		args                      []string
	}{
		{"named", "crash", `{"candidates":[{"binary":"` + bin("crash") + `","function":"process_item"}]}`, "process_item", []string{"plain"}},
		{"derived", "bugs", `{}`, "handle_request", []string{"null", "100", "25"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			learn := filepath.Join(t.TempDir(), "learned.json")
			m := `{"version":1,"heal":` + tc.heal + `}`
			first := run(t, runSpec{manifest: m, prog: tc.prog, args: tc.args, runArgs: []string{"--learn", learn}})
			wantSignalDeath(t, first, syscall.SIGSEGV)
			l := first.ofType("learned")
			if len(l) != 1 || l[0].RescuePoint == nil || l[0].RescuePoint.Function != tc.learned || l[0].Signal != "SIGSEGV" {
				t.Fatalf("learned events %+v, want one for %s%s", l, tc.learned, first)
			}
			data, err := os.ReadFile(learn)
			if err != nil || !strings.Contains(string(data), `"function": "`+tc.learned+`"`) {
				t.Fatalf("--learn file: %v\n%s", err, data)
			}
			second := run(t, runSpec{manifest: m, prog: tc.prog, args: tc.args, runArgs: []string{"--learn", learn}})
			wantStatus(t, second, 0)
			if n := len(second.ofType("recovered")); n == 0 {
				t.Errorf("the second run recovered nothing%s", second)
			}
			if tc.prog == "bugs" {
				if ref := runNative(t, "bugs", "none", "100", "25"); second.Stdout != ref.Stdout {
					t.Errorf("recovered output:\n%s\nwant the native rejecting run's:\n%s", second.Stdout, ref.Stdout)
				}
			}
		})
	}
}
