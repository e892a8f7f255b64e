package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
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
		cmd := exec.Command("script", "-qec", env.ctr+" --address "+env.address+" --namespace "+namespace+
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

// TestOOMAndUpdate: OOM events and resource updates of a supervised
// container work as under runc.
func TestOOMAndUpdate(t *testing.T) {
	t.Run("oom-event", func(t *testing.T) {
		evs := exec.Command(env.ctr, "--address", env.address, "events")
		var buf lockedBuffer
		evs.Stdout = &buf
		if err := evs.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { evs.Process.Kill(); evs.Wait() }()
		out, err := ctr(t, "run", "--rm", "--runtime", runtime, "--memory-limit", "33554432", "assure.test/bugs:label", "oom",
			"/bin/busybox", "sh", "-c", `a=$(/bin/busybox head -c 300000000 /dev/zero | /bin/busybox tr "\000" a); echo survived`)
		if err == nil || strings.Contains(out, "survived") {
			t.Fatalf("a 32 MiB container holding 300 MB was not OOM-killed: %v\n%s", err, out)
		}
		waitFor(t, 30*time.Second, "a /tasks/oom event", func() bool {
			return strings.Contains(buf.String(), "/tasks/oom")
		})
		noTask(t, "oom")
	})
	t.Run("update", func(t *testing.T) {
		const id = "update"
		if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sleep", "60"); err != nil {
			t.Fatalf("ctr run -d: %v\n%s", err, out)
		}
		defer removeDetached(t, id)
		ctx := namespaces.WithNamespace(context.Background(), namespace)
		client, err := containerd.New(env.address)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		c, err := client.LoadContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		task, err := c.Task(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		limit := int64(96 << 20)
		if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
			t.Fatalf("update: %v", err)
		}
		got, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", namespace, id, "memory.limit_in_bytes"))
		if err != nil {
			t.Skipf("no cgroup v1 memory controller to check: %v", err)
		}
		if strings.TrimSpace(string(got)) != strconv.FormatInt(limit, 10) {
			t.Errorf("memory.limit_in_bytes = %s, want %d", got, limit)
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for a writing process and a
// reading test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
