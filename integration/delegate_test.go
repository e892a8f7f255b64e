package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/assure-rt/assure/shim/containerinfo"
)

// TestPlainContainerServedByRuncShim: a container that declares no rescue
// points is handed to runc's own shim at start (it then costs what it
// costs under io.containerd.runc.v2), works as a container does (exec,
// kill, delete) and leaves nothing; one that declares rescue points keeps
// assure's shim, which the start command handed the labels it read.
func TestPlainContainerServedByRuncShim(t *testing.T) {
	for _, tc := range []struct {
		image, id, shim string
	}{
		{"assure.test/busybox:1", "handed-plain", "containerd-shim-runc-v2"},
		{"assure.test/bugs:label", "handed-manifest", "assure-shim"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if out, err := ctr(t, "run", "-d", "--runtime", runtime, tc.image, tc.id, "/bin/busybox", "sleep", "120"); err != nil {
				t.Fatalf("ctr run -d: %v\n%s", err, out)
			}
			defer func() {
				removeDetached(t, tc.id)
				noLeftoversIn(t, namespace, tc.id)
			}()
			pids := taskPids(t, tc.id)
			if len(pids) == 0 {
				t.Fatalf("no process in task %s", tc.id)
			}
			// The init's parent is the shim that serves the task.
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid(pids[0])))
			if err != nil || filepath.Base(exe) != tc.shim {
				t.Fatalf("task %s is served by %q (%v), want %s", tc.id, exe, err, tc.shim)
			}
			handoff := filepath.Join(env.dir, "state", "io.containerd.runtime.v2.task", namespace, tc.id, "assure-labels.json")
			if _, err := os.Stat(handoff); (err == nil) != (tc.shim == "assure-shim") {
				t.Errorf("labels handed over in %s: %v", handoff, err)
			}
			if out, err := ctr(t, "task", "exec", "--exec-id", "e1", tc.id, "/bin/busybox", "echo", "in"); err != nil || strings.TrimSpace(out) != "in" {
				t.Errorf("exec: %v, output %q", err, out)
			}
		})
	}
}

// ppid is the parent of pid, from /proc/PID/stat (the field after the
// command, which may hold spaces and parentheses).
func ppid(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	var state string
	var parent int
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		fmt.Sscanf(s[i+1:], " %s %d", &state, &parent)
	}
	return parent
}

// TestContainerInfoFetch: the start command's own gRPC client
// (shim/containerinfo) reads from a real containerd what the shim decides
// on: the container's labels over its image config's (the image's
// manifest label, a container label that overrides it), the image record
// and its digest; a container that does not exist is containerd's "not
// found".
func TestContainerInfoFetch(t *testing.T) {
	const id = "info-fetch"
	if out, err := ctr(t, "containers", "create", "--label", "dev.assure.test=from-container", "assure.test/bugs:label", id); err != nil {
		t.Fatalf("ctr containers create: %v\n%s", err, out)
	}
	defer ctr(t, "containers", "delete", id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := containerinfo.Fetch(ctx, env.address, namespace, id)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if !strings.Contains(info.Labels["dev.assure.manifest"], "rescuePoints") {
		t.Errorf("labels %v: no manifest from the image config", info.Labels)
	}
	if info.Labels["dev.assure.test"] != "from-container" {
		t.Errorf("labels %v: the container's own label is missing", info.Labels)
	}
	if info.Image != "assure.test/bugs:label" || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Errorf("image %q digest %q", info.Image, info.Digest)
	}
	if _, err := containerinfo.Fetch(ctx, env.address, namespace, "no-such-container"); !containerinfo.IsNotFound(err) {
		t.Errorf("Fetch of a missing container: %v, want not found", err)
	}
	if _, err := containerinfo.Fetch(ctx, filepath.Join(env.dir, "nothing.sock"), namespace, id); err == nil {
		t.Error("Fetch from a socket nobody serves: no error")
	}
}

// TestShimDaemonKilled: when assure's shim daemon dies (SIGKILL here),
// containerd cleans the task up through the shim binary's delete: the
// container's processes end and nothing is left, the supervisor and its
// cgroups under the container's included, which only the daemon used to
// end (the front's deletion ends them now).
func TestShimDaemonKilled(t *testing.T) {
	const id = "daemon-killed"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sleep", "120"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer ctr(t, "containers", "rm", id)
	pids := taskPids(t, id)
	if len(pids) == 0 {
		t.Fatalf("no process in task %s", id)
	}
	daemon := ppid(pids[0])
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", daemon)); err != nil || filepath.Base(exe) != "assure-shim" {
		t.Fatalf("task %s is served by %q (%v), want assure-shim", id, exe, err)
	}
	if supervisorOf(t, id) == 0 {
		t.Fatalf("no supervisor for %s", id)
	}
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// containerd forgets the task first, then runs the shim binary's
	// delete and removes the bundle.
	state := filepath.Join(env.dir, "state", "io.containerd.runtime.v2.task", namespace, id)
	waitFor(t, 30*time.Second, "containerd to clean up after the dead shim", func() bool {
		out, _ := ctr(t, "tasks", "ls")
		return !strings.Contains(out, id) && !fileExists(state)
	})
	if running(pids[0]) {
		t.Errorf("the container's init %d still runs", pids[0])
	}
	if out, err := ctr(t, "containers", "rm", id); err != nil {
		t.Errorf("ctr containers rm: %v\n%s", err, out)
	}
	noLeftoversIn(t, namespace, id)
}

// running reports whether pid is a process that has not ended (a zombie
// has: nobody may reap the dead shim's orphans on these machines).
func running(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}
