package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/hack/image"
	"github.com/assure-rt/assure/shim"
)

// cgroupOfPid returns pid's cgroup path in the v1 hierarchy of controller.
func cgroupOfPid(pid int, controller string) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[1] == controller {
			return f[2]
		}
	}
	return ""
}

func readInt(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return atoi(strings.TrimSpace(string(data)))
}

// TestSupervisorChargedToContainer: the supervisor lives in a child cgroup
// of the container's in the memory, cpu and cpuacct hierarchies, so the
// container's limits and statistics cover it; it is not one of the
// container's processes (runc ps, kill --all use the devices hierarchy).
func TestSupervisorChargedToContainer(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/cgroup.procs"); err != nil {
		t.Skip("no cgroup v1 memory hierarchy")
	}
	const id = "charged"
	s := startServerContainer(t, id)
	s.want("GOOD 1", "ok 1")
	s.want("BAD", "error")
	sup := supervisorOf(t, id)
	want := "/" + namespace + "/" + id
	for _, c := range []string{"memory", "cpu", "cpuacct"} {
		if got := cgroupOfPid(sup, c); got != want+"/"+shim.SupervisorCgroup {
			t.Errorf("supervisor's %s cgroup %s, want %s/%s", c, got, want, shim.SupervisorCgroup)
		}
	}
	for _, c := range []string{"devices", "freezer", "pids"} {
		if got := cgroupOfPid(sup, c); strings.HasPrefix(got, want) {
			t.Errorf("supervisor in the container's %s cgroup %s", c, got)
		}
	}
	for _, pid := range taskPids(t, id) {
		if pid == sup {
			t.Errorf("ctr task ps lists the supervisor %d", sup)
		}
	}
	mem := filepath.Join("/sys/fs/cgroup/memory", want)
	own, total := readInt(t, filepath.Join(mem, shim.SupervisorCgroup, "memory.usage_in_bytes")), readInt(t, filepath.Join(mem, "memory.usage_in_bytes"))
	if own <= 0 || total < own {
		t.Errorf("supervisor uses %d bytes, the container %d: the container's usage must include the supervisor's", own, total)
	}
	t.Logf("supervisor memory %d KiB of the container's %d KiB", own/1024, total/1024)
}

// TestKillAllSparesSupervisor: kill --all ends the container's processes,
// not the supervisor, which goes with the task's deletion.
func TestKillAllSparesSupervisor(t *testing.T) {
	const id = "killall"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sleep", "60"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer func() {
		removeDetached(t, id)
		noLeftovers(t, id)
	}()
	sup := supervisorOf(t, id)
	if out, err := ctr(t, "tasks", "kill", "--all", "-s", "SIGKILL", id); err != nil {
		t.Fatalf("kill --all: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "the task to stop", func() bool {
		out, _ := ctr(t, "tasks", "ls")
		return strings.Contains(out, id) && strings.Contains(out, "STOPPED")
	})
	if n := supervisorOf(t, id); sup == 0 || n != sup {
		t.Errorf("supervisor %d before kill --all, %d after", sup, n)
	}
}

// TestMemoryLimitCoversSupervisor: a program that fits its container's
// memory limit under runc does not under assure, whose shadow copy of the
// program's memory counts against the same limit (see README: a
// RuntimeClass overhead, or a larger limit).
func TestMemoryLimitCoversSupervisor(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/cgroup.procs"); err != nil {
		t.Skip("no cgroup v1 memory hierarchy")
	}
	bin := filepath.Join(env.work, "rpbench")
	if out, err := exec.Command("gcc", "-O2", "-x", "c", "-o", bin, filepath.Join(env.root, "hack", "bench", "rpbench.c")).CombinedOutput(); err != nil {
		t.Fatalf("compile rpbench.c: %v\n%s", err, out)
	}
	if err := buildImport(image.Spec{Name: "assure.test/rpbench:1", Files: []image.File{{Src: bin, Dst: "/app/rpbench"}}, WithLibs: true,
		Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/rpbench","function":"rp_call","return":-1}]}`}}, namespace); err != nil {
		t.Fatal(err)
	}
	const limit, touch = 48 << 20, "28" // MiB the program touches
	for _, c := range []struct {
		runtime string
		fits    bool
	}{{"io.containerd.runc.v2", true}, {runtime, false}} {
		t.Run(c.runtime, func(t *testing.T) {
			id := "memlimit-" + strings.ReplaceAll(c.runtime, ".", "-")
			out, err := ctr(t, "run", "--rm", "--runtime", c.runtime, "--memory-limit", fmt.Sprint(limit), "assure.test/rpbench:1", id, "/app/rpbench", touch, "3")
			switch {
			case c.fits && (err != nil || !strings.Contains(out, "calls=3")):
				t.Fatalf("under runc the program fits %d MiB: %v\n%s", limit>>20, err, out)
			case !c.fits && err == nil:
				t.Fatalf("under assure the program and the supervisor's shadow of its %s MiB fit %d MiB?\n%s", touch, limit>>20, out)
			}
			t.Logf("%v\n%s", err, out)
			noTask(t, id)
			noLeftovers(t, id)
		})
	}
}
