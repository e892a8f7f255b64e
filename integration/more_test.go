package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/control"
)

// TestAnnotationOverridesLabel: an OCI annotation of the same key (how a
// Kubernetes pod annotation reaches the runtime) replaces the image's
// label. The image's label names a function that does not exist; the
// annotation's manifest is the good one, so the run recovers.
func TestAnnotationOverridesLabel(t *testing.T) {
	out, err := ctr(t, "run", "--rm", "--runtime", runtime, "--annotation", "dev.assure.manifest="+goodManifest,
		"assure.test/bugs:badfunc", "annotated", "/app/bugs", "null", "100", "25")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	if want := reference(t); out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	noTask(t, "annotated")
	// And an annotation can bring rescue points to an image without any.
	out, err = ctr(t, "run", "--rm", "--runtime", runtime, "--annotation", "dev.assure.manifest="+goodManifest,
		"assure.test/bugs:none", "annotated2", "/app/bugs", "null", "100", "25")
	if err != nil || out != reference(t) {
		t.Fatalf("annotation on an image without a label: %v\n%s", err, out)
	}
	noTask(t, "annotated2")
}

// TestMoreBadManifests: a binary that is not in the image and an unknown
// field fail the creation, naming the problem; nothing is left behind: no
// task, no state directory, no supervisor or shim of the container.
func TestMoreBadManifests(t *testing.T) {
	for name, c := range map[string]struct{ manifest, want string }{
		"nobinary": {`{"version":1,"rescuePoints":[{"binary":"/usr/sbin/nothere","function":"f","return":-1}]}`, "/usr/sbin/nothere does not exist in the image"},
		"unknown":  {`{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"handle_request","retrun":-1}]}`, `"retrun"`},
		// Diverting the return there would corrupt the process.
		"start": {`{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"_start","return":-1}]}`, "is the entry point of /app/bugs (_start)"},
		"init":  {`{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"_init","return":-1}]}`, "is in _init (.init) of /app/bugs"},
		// One rule for every path: refused like the manifest-file label
		// with a ".." above the root (TestBadManifestsFailCreate/escape).
		"climb": {`{"version":1,"rescuePoints":[{"binary":"/../../app/bugs","function":"handle_request","return":-1}]}`,
			`/../../app/bugs: escapes the container root filesystem (".." above /)`},
	} {
		t.Run(name, func(t *testing.T) {
			id := "more-" + name
			out, err := ctr(t, "run", "--rm", "--runtime", runtime, "--annotation", "dev.assure.manifest="+c.manifest,
				"assure.test/bugs:none", id, "/app/bugs", "null", "10", "5")
			if err == nil {
				t.Fatalf("ctr run succeeded; want a failed creation:\n%s", out)
			}
			if !strings.Contains(out, "annotation dev.assure.manifest") || !strings.Contains(out, c.want) {
				t.Errorf("ctr's error %q: want it to name the annotation and %q", strings.TrimSpace(out), c.want)
			}
			noTask(t, id)
			noLeftovers(t, id)
		})
	}
}

// noLeftovers checks that nothing of a container outlives its deletion.
func noLeftovers(t *testing.T, id string) {
	t.Helper()
	noLeftoversIn(t, namespace, id)
}

// noLeftoversIn checks that nothing of container id of namespace ns
// outlives its deletion: no task state, supervisor, shim, rootfs mount or
// control socket.
func noLeftoversIn(t *testing.T, ns, id string) {
	t.Helper()
	if sock := control.SocketPath(env.address, ns, id); fileExists(sock) {
		t.Errorf("control socket %s of %s left behind", sock, id)
	}
	state := filepath.Join(env.dir, "state", "io.containerd.runtime.v2.task", ns, id)
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state directory %s left behind", state)
	}
	if pid := supervisorOf(t, id); pid != 0 {
		t.Errorf("supervisor %d of %s left behind", pid, id)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c := cmdline(atoi(e.Name()))
		if (strings.Contains(c, "containerd-shim-assure-v1") || strings.Contains(c, "assure-shim")) && strings.Contains(c, "-id "+id+" ") && strings.Contains(c, env.address) {
			t.Errorf("shim of %s left behind: %s", id, c)
		}
	}
	if d := filepath.Join("/sys/fs/cgroup/memory", ns, id); fileExists(d) {
		t.Errorf("memory cgroup %s left behind", d)
	}
	data, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(data), "/"+ns+"/"+id+"/rootfs") {
		t.Errorf("rootfs mount of %s left behind", id)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func timeAfter(seconds int) <-chan time.Time { return time.After(time.Duration(seconds) * time.Second) }

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// TestPauseResume: a supervised container can be paused and resumed; it
// then serves and recovers as before.
func TestPauseResume(t *testing.T) {
	const id = "pause"
	s := startServerContainer(t, id)
	s.want("GOOD 1", "ok 1")
	if out, err := ctr(t, "tasks", "pause", id); err != nil {
		t.Fatalf("pause: %v\n%s", err, out)
	}
	waitFor(t, 30e9, "the task to be paused", func() bool {
		out, err := ctr(t, "tasks", "ls")
		return err == nil && strings.Contains(out, "PAUSED")
	})
	if out, err := ctr(t, "tasks", "resume", id); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	s.want("BAD", "error")
	s.want("GOOD 2", "ok 2")
}

// TestContainerScope: a prefork program (a parent and three workers
// sharing memory) with a "container"-scope rescue point: every process of
// the container is checkpointed and rolled back together, shared memory
// included, and the totals come out exactly as in a run whose handler
// rejects the bad requests itself.
func TestContainerScope(t *testing.T) {
	out, err := ctr(t, "run", "--rm", "--runtime", runtime, "assure.test/prefork:1", "scope", "/app/prefork", "fault", "1", "40", "10")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	ref, err := exec.Command(filepath.Join(env.work, "prefork"), "validate", "1", "40", "10").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"total", "ok", "errors", "rsum", "shared_in_rp"} {
		if got, want := kv(out, key), kv(string(ref), key); got != want || want == "" {
			t.Errorf("%s = %q, want %q\n%s", key, got, want, out)
		}
	}
	noTask(t, "scope")
}

// kv returns the value of a "key=value" line.
func kv(out, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return v
		}
	}
	return ""
}

// TestKillInsideRescuePoint: a task killed while a thread is inside a
// rescue point (a checkpoint is active) dies, is deleted, and leaves
// nothing behind; the supervisor goes with it.
func TestKillInsideRescuePoint(t *testing.T) {
	const id = "killed"
	s := startServerContainer(t, id)
	s.want("GOOD 1", "ok 1")
	if _, err := s.in.Write([]byte("HANG\n")); err != nil {
		t.Fatal(err)
	}
	pids := taskPids(t, id)
	if len(pids) == 0 {
		t.Fatal("no task pids")
	}
	waitFor(t, 30e9, "the server to sleep inside handle_request", func() bool {
		data, _ := os.ReadFile("/proc/" + itoa(pids[0]) + "/syscall")
		return strings.HasPrefix(string(data), "34 ") // pause
	})
	if out, err := ctr(t, "tasks", "kill", "-s", "SIGKILL", id); err != nil {
		t.Fatalf("kill: %v\n%s", err, out)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-timeAfter(60):
		t.Fatal("ctr run did not return after the kill")
	}
	noTask(t, id)
	noLeftovers(t, id)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
