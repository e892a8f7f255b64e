package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDiscoverContainer: assure discover --address … CONTAINER works in
// the init of a running container that declares no manifest (served by
// runc's shim), with the manifest naming the binary as the container
// sees it; a container whose init assure supervises already is refused,
// naming its tracer.
func TestDiscoverContainer(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	const id = "discover-me"
	if out, err := ctr(t, "run", "-d", "--net-host", "--runtime", runtime, "assure.test/discoverme:1", id, "/app/discoverme", "/tmp/port"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer removeDetached(t, id)
	pids := taskPids(t, id)
	if len(pids) == 0 {
		t.Fatal("no process in the task")
	}
	port := fmt.Sprintf("/proc/%d/root/tmp/port", pids[0])
	waitFor(t, 20*time.Second, "discoverme's port file", func() bool { _, err := os.Stat(port); return err == nil })
	// discoverme's workload, shared with the recovery package's tests.
	script := filepath.Join(env.root, "recovery", "testdata", "discoverme-work.sh")
	out := filepath.Join(t.TempDir(), "found.json")
	assure := filepath.Join(env.root, "bin", "assure")
	cmd := exec.Command(assure, "discover", "--address", env.address, "--namespace", namespace, "--workload", script+" "+port,
		"--out", out, "--budget", "1m", id)
	report, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("assure discover: %v\n%s", err, report)
	}
	data, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(data), `"binary": "/app/discoverme"`) || !strings.Contains(string(data), `"function": "parse_request"`) {
		t.Errorf("manifest %v:\n%s\nreport:\n%s", err, data, report)
	}
	if tracer(pids[0]) != 0 {
		t.Errorf("the container's init is still traced after discover")
	}

	const traced = "discover-traced"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", traced, "/bin/busybox", "sleep", "120"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer removeDetached(t, traced)
	waitFor(t, 20*time.Second, "the supervised init", func() bool {
		p := taskPids(t, traced)
		return len(p) > 0 && tracer(p[0]) != 0
	})
	b, err := exec.Command(assure, "discover", "--address", env.address, "--namespace", namespace, "--workload", "true", traced).CombinedOutput()
	if err == nil || !strings.Contains(string(b), "is traced by") {
		t.Errorf("discover in a supervised container: %v\n%s", err, b)
	}
}
