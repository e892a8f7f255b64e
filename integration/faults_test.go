package integration

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/assure-rt/assure/recovery/events"
)

// Every fault kind in a container, in its init (PID 1 of the container's
// PID namespace) and in a forked worker: recovered inside a rescue point,
// and passed on outside one exactly as under runc.

var containerFaultKinds = []string{"segv", "bus", "fpe", "ill", "abort", "assert", "stackchk", "raise", "kill", "tgkill"}

// exitCode is a command's exit status (-1 when it did not run).
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// containerEvents returns the events a container's supervisor wrote.
func containerEvents(t *testing.T, id string) []events.Event {
	t.Helper()
	data, err := events.ReadFiles(events.ContainerFile(env.address, namespace, id))
	if err != nil {
		return nil
	}
	var out []events.Event
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e events.Event
		if line != "" && json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

func countType(evs []events.Event, typ string) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// withoutDiagnostics drops the lines glibc writes on stderr before it
// aborts.
func withoutDiagnostics(out string) string {
	var keep []string
	for _, l := range strings.SplitAfter(out, "\n") {
		if !strings.Contains(l, "Assertion `") && !strings.Contains(l, "stack smashing detected") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func faultArgs(kind, where, ctx string) []string {
	argv := []string{"/app/faults", kind, where}
	if ctx == "worker" {
		argv = append(argv, "fork")
	}
	return argv
}

// TestFaultKindsRecoveredInContainer: inside the rescue point, every kind
// is recovered, the signals the program sends itself too.
func TestFaultKindsRecoveredInContainer(t *testing.T) {
	for _, ctx := range []string{"init", "worker"} {
		for _, kind := range containerFaultKinds {
			t.Run(ctx+"/"+kind, func(t *testing.T) {
				id := "r" + ctx[:1] + "-" + kind // unix socket paths are short
				out, err := run(t, "assure.test/faults:1", id, faultArgs(kind, "inrp", ctx)...)
				want := "rc=-1\nfaults=0\ndone\n"
				if ctx == "worker" {
					want += "worker=0\n"
				}
				// What the program wrote before the fault stays written
				// (assert's and the stack protector's message, on stderr,
				// which ctr interleaves with stdout in no fixed order).
				if err != nil || withoutDiagnostics(out) != want {
					t.Fatalf("ctr run: %v, output %q; want %q", err, out, want)
				}
				evs := containerEvents(t, id)
				if n := countType(evs, events.Recovered); n != 1 || countType(evs, events.Crash) != 0 {
					t.Errorf("%d recovered and %d crash events, want 1 and 0: %+v", n, countType(evs, events.Crash), evs)
				}
				noTask(t, id)
			})
		}
	}
}

// TestFaultKindsPassedOnInContainer: outside any rescue point the
// container ends (or, for a signal its init sends itself, goes on) exactly
// as under runc, with at most one crash event: no livelock of the init.
func TestFaultKindsPassedOnInContainer(t *testing.T) {
	for _, ctx := range []string{"init", "worker"} {
		for _, kind := range containerFaultKinds {
			if ctx == "worker" && kind != "segv" && kind != "abort" && kind != "tgkill" {
				continue
			}
			t.Run(ctx+"/"+kind, func(t *testing.T) {
				id := "p" + ctx[:1] + "-" + kind
				argv := faultArgs(kind, "outside", ctx)
				ref, rerr := ctr(t, append([]string{"run", "--rm", "assure.test/faults:1", id + "-c"}, argv...)...)
				out, err := run(t, "assure.test/faults:1", id, argv...)
				if exitCode(err) != exitCode(rerr) || out != ref {
					t.Fatalf("under assure: status %d, output %q; under runc: status %d, output %q", exitCode(err), out, exitCode(rerr), ref)
				}
				evs := containerEvents(t, id)
				if n := countType(evs, events.Crash); n > 1 || countType(evs, events.Recovered) != 0 {
					t.Errorf("%d crash and %d recovered events, want at most 1 and 0: %+v", n, countType(evs, events.Recovered), evs)
				}
				noTask(t, id)
				noTask(t, id+"-c")
			})
		}
	}
}
