package integration

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestArmRunningContainer: assure arm adds a rescue point to a running
// supervised container (checked against the container's own binaries
// first: a missing function is refused, naming it), processes exec'd
// afterwards have it and still recover exactly, and assure disarm takes
// it out (again: "not armed"); both show in the container's events.
func TestArmRunningContainer(t *testing.T) {
	const id = "arm-live"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sleep", "120"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer removeDetached(t, id)
	waitFor(t, 20*time.Second, "the supervised init", func() bool {
		p := taskPids(t, id)
		return len(p) > 0 && tracer(p[0]) != 0
	})
	assure := filepath.Join(env.root, "bin", "assure")
	arm := func(op, manifest string) (string, error) {
		out, err := exec.Command(assure, op, "--address", env.address, "--namespace", namespace, id,
			writeFile(op+"-"+strconv.Itoa(len(manifest))+".json", manifest)).CombinedOutput()
		return string(out), err
	}
	missing := `{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"no_such_function","return":-1}]}`
	copyName := `{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"copy_name","return":-1}]}`
	if out, err := arm("arm", missing); err == nil || !strings.Contains(out, "no_such_function") {
		t.Fatalf("arm of a missing function: %v\n%s", err, out)
	}
	if out, err := arm("arm", copyName); err != nil {
		t.Fatalf("arm: %v\n%s", err, out)
	}
	if out, err := ctr(t, "task", "exec", "--exec-id", "x1", id, "/app/bugs", "null", "100", "25"); err != nil || out != reference(t) {
		t.Fatalf("exec after arm: %v\n%s", err, out)
	}
	if out, err := arm("disarm", copyName); err != nil {
		t.Fatalf("disarm: %v\n%s", err, out)
	}
	if out, err := arm("disarm", copyName); err == nil || !strings.Contains(out, "is not armed") {
		t.Fatalf("second disarm: %v\n%s", err, out)
	}
	ev, err := exec.Command(assure, "events", "--address", env.address, "--namespace", namespace, id).CombinedOutput()
	if err != nil || !strings.Contains(string(ev), "armed copy_name (/app/bugs)") || !strings.Contains(string(ev), "disarmed copy_name (/app/bugs)") {
		t.Errorf("assure events: %v\n%s", err, ev)
	}
}
