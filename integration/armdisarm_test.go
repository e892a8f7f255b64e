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

// idleImage's manifest arms server.c's worker_main, which "serve 0" never
// calls: supervised, with nothing on the request path.
const idleImage = "assure.test/server:idle"

// TestArmRunningServer: assure arm into a running server container makes
// the same process (same pid) survive a bug that was fatal, with its
// state; assure disarm makes the bug fatal again.
func TestArmRunningServer(t *testing.T) {
	const id = "arm-server"
	s := startServerImage(t, idleImage, id)
	s.want("GOOD 5", "ok 1")
	before := taskPids(t, id)
	assure := filepath.Join(env.root, "bin", "assure")
	m := writeFile("arm-server.json", `{"version":1,"rescuePoints":[{"binary":"/app/server","function":"handle_request","return":-1}]}`)
	armed := func(op string) {
		t.Helper()
		if out, err := exec.Command(assure, op, "--address", env.address, "--namespace", namespace, id, m).CombinedOutput(); err != nil {
			t.Fatalf("assure %s: %v\n%s", op, err, out)
		}
	}
	armed("arm")
	s.want("BAD", "error")
	s.want("GOOD 7", "ok 2")
	s.in.Write([]byte("STATS\n"))
	if st := s.line("STATS"); !strings.Contains(st, "requests=2 errors=1 total=12 ") {
		t.Fatalf("after the recovery: %q", st)
	}
	if after := taskPids(t, id); len(before) == 0 || len(after) != len(before) || after[0] != before[0] {
		t.Fatalf("pids %v, then %v: not the same process", before, after)
	}
	armed("disarm")
	s.in.Write([]byte("BAD\n"))
	if code := s.exited("BAD after disarm"); code == 0 {
		t.Fatal("the server survived BAD after disarm")
	}
}

// TestArmRefused: assure arm says why when the container does not exist,
// or runs without a supervisor (no manifest: runc's shim serves it).
func TestArmRefused(t *testing.T) {
	assure := filepath.Join(env.root, "bin", "assure")
	m := writeFile("arm-refused.json", `{"version":1,"rescuePoints":[{"binary":"/app/server","function":"handle_request","return":-1}]}`)
	arm := func(id string) string {
		out, err := exec.Command(assure, "arm", "--address", env.address, "--namespace", namespace, id, m).CombinedOutput()
		if err == nil {
			t.Fatalf("assure arm %s succeeded:\n%s", id, out)
		}
		return string(out)
	}
	if out := arm("no-such-container"); !strings.Contains(out, "no-such-container") || !strings.Contains(out, "not found") {
		t.Errorf("arm of a missing container: %s", out)
	}
	const plain = "arm-plain"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/busybox:1", plain, "/bin/busybox", "sleep", "120"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer removeDetached(t, plain)
	if out := arm(plain); !strings.Contains(out, "runs without a supervisor") {
		t.Errorf("arm of a container without a manifest: %s", out)
	}
}
