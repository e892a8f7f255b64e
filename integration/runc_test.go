package integration

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRuncFeaturesKeepWorking: what runc's shim does still works under the
// assure runtime for a supervised container: exit status, TTYs, metrics
// (stats), the process list. (ctr 1.6 has no command for resource
// updates; the shim passes Update to runc's service untouched.)
func TestRuncFeaturesKeepWorking(t *testing.T) {
	t.Run("exit-status", func(t *testing.T) {
		out, err := run(t, "assure.test/bugs:label", "exit7", "/bin/busybox", "sh", "-c", "exit 7")
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 7 {
			t.Fatalf("ctr run: %v (want exit status 7)\n%s", err, out)
		}
		noTask(t, "exit7")
	})
	t.Run("tty", func(t *testing.T) {
		// script(1) gives ctr a terminal; the container sees one too.
		cmd := exec.Command("script", "-qec", "ctr --address "+env.address+" --namespace "+namespace+
			" run --rm -t --runtime "+runtime+" assure.test/bugs:label ttyc /bin/busybox sh -c 'test -t 0 && echo is-a-tty'", "/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "is-a-tty") {
			t.Fatalf("tty run: %v\n%s", err, out)
		}
		noTask(t, "ttyc")
	})
	t.Run("metrics-and-ps", func(t *testing.T) {
		const id = "stats"
		if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sleep", "60"); err != nil {
			t.Fatalf("ctr run -d: %v\n%s", err, out)
		}
		defer removeDetached(t, id)
		waitFor(t, 30*time.Second, "the task to run", func() bool {
			out, _ := ctr(t, "tasks", "ls")
			return strings.Contains(out, id) && strings.Contains(out, "RUNNING")
		})
		out, err := ctr(t, "tasks", "metrics", id)
		if err != nil || !strings.Contains(out, id) {
			t.Fatalf("metrics: %v\n%s", err, out)
		}
		if out, err := ctr(t, "tasks", "ps", id); err != nil || len(taskPids(t, id)) == 0 {
			t.Fatalf("ps: %v\n%s", err, out)
		}
	})
}

// removeDetached kills and removes a container started with ctr run -d.
func removeDetached(t *testing.T, id string) {
	t.Helper()
	ctr(t, "tasks", "kill", "-s", "SIGKILL", id)
	waitFor(t, 30*time.Second, id+" to stop", func() bool {
		out, _ := ctr(t, "tasks", "ls")
		return !strings.Contains(out, id) || strings.Contains(out, "STOPPED")
	})
	ctr(t, "tasks", "rm", "-f", id)
	ctr(t, "containers", "rm", id)
}
