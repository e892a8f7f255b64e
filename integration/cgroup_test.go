package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/hack/image"
	"github.com/assure-rt/assure/shim/supcgroup"
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
		if got := cgroupOfPid(sup, c); got != want+"/"+supcgroup.Name {
			t.Errorf("supervisor's %s cgroup %s, want %s/%s", c, got, want, supcgroup.Name)
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
	own, total := readInt(t, filepath.Join(mem, supcgroup.Name, "memory.usage_in_bytes")), readInt(t, filepath.Join(mem, "memory.usage_in_bytes"))
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

// TestMemoryLimitCoversSupervisor: the shadow copy of a program's memory
// is charged to the program's container: the container's peak memory use
// under assure is the program's plus what its checkpoints copied (see
// README: a RuntimeClass overhead, or a larger limit), under runc the
// program's alone. (Over the limit, the kernel kills one of them: the
// program, or the supervisor, in which case the program goes on
// unprotected, as it would under runc.)
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
	const limit, touch = 256 << 20, 28 << 20 // the program touches 28 MiB
	peak := map[string]int64{}
	for _, rt := range []string{"io.containerd.runc.v2", runtime} {
		t.Run(rt, func(t *testing.T) {
			id := "memlimit-" + strings.ReplaceAll(rt, ".", "-")
			defer func() {
				removeDetached(t, id)
				noLeftovers(t, id)
			}()
			if out, err := ctr(t, "run", "-d", "--runtime", rt, "--memory-limit", fmt.Sprint(limit), "assure.test/rpbench:1", id,
				"/app/rpbench", fmt.Sprint(touch>>20), "3"); err != nil {
				t.Fatalf("ctr run: %v\n%s", err, out)
			}
			waitFor(t, 30*time.Second, "the task to stop", func() bool {
				out, _ := ctr(t, "tasks", "ls")
				return strings.Contains(out, id) && strings.Contains(out, "STOPPED")
			})
			// The task's cgroup lives until the task is deleted.
			data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", namespace, id, "memory.max_usage_in_bytes"))
			if err != nil {
				t.Fatal(err)
			}
			n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			peak[rt] = n
			t.Logf("peak memory of the container: %d MiB", n>>20)
		})
	}
	r, a := peak["io.containerd.runc.v2"], peak[runtime]
	if r == 0 || a == 0 {
		t.Fatalf("no peak for runc (%d) or assure (%d)", r, a)
	}
	if r < touch || a-r < touch*9/10 {
		t.Errorf("peak memory %d MiB under runc, %d MiB under assure: want the program's %d MiB under runc and about as much again under assure (the shadow, charged to the container)",
			r>>20, a>>20, touch>>20)
	}
}
