// Package supcgroup makes and removes a container supervisor's own
// cgroups: children of the container's, in the hierarchies that charge
// the supervisor to the container. The shim daemon makes them; the shim
// daemon, or the front's deletion after the daemon died, removes them.
package supcgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Name is the child cgroup, under the container's own, that
// holds the container's supervisor.
const Name = "assure-supervisor"

// chargedControllers are the cgroup v1 hierarchies in which the supervisor
// joins a child cgroup of the container's: its memory (shadow copies,
// parsed ELF files) counts against the container's limit and shows in the
// container's statistics, and its CPU time is the container's. Not the
// others: runc lists a container's processes (runc ps, the task's Pids,
// kill --all) from the devices hierarchy, pauses through freezer and
// counts pids: the supervisor must not be one of the container's
// processes for any of those.
var chargedControllers = []string{"memory", "cpu", "cpuacct"}

// Make creates the supervisor's child cgroup under the
// container's (containerPath, a cgroupfs path such as /k8s.io/ID) in each
// charged hierarchy that is mounted, and returns the directories. On a
// host without those v1 hierarchies (cgroup v2 only) it returns none: a
// v2 child of a cgroup with processes cannot get controllers.
func Make(containerPath string) ([]string, error) {
	if containerPath == "" {
		return nil, nil
	}
	mounts, err := v1Mounts()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, c := range chargedControllers {
		root, ok := mounts[c]
		if !ok {
			continue
		}
		parent := filepath.Join(root, containerPath)
		if _, err := os.Stat(parent); err != nil {
			continue // runc made none here
		}
		dir := filepath.Join(parent, Name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			Remove(dirs)
			return nil, fmt.Errorf("supervisor cgroup: %w", err)
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// Remove removes the supervisor's cgroups, once it has exited
// (the kernel empties a cgroup a moment after its last process is
// reaped: a few tries).
func Remove(dirs []string) error {
	var errs []error
	for _, d := range dirs {
		var err error
		for try := 0; try < 50; try++ {
			if err = os.Remove(d); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(2 * time.Millisecond) // the cgroup empties asynchronously
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Of is the cgroup path of the container whose spec is spec when it is a
// plain path (cgroupfs); systemd's "slice:prefix:name" form shows up
// differently in /proc/PID/cgroup and is not checked.
func Of(spec *specs.Spec) string {
	if spec.Linux == nil || !strings.HasPrefix(spec.Linux.CgroupsPath, "/") {
		return ""
	}
	return spec.Linux.CgroupsPath
}

// Existing returns the supervisor's cgroups of the container at
// containerPath that exist.
func Existing(containerPath string) []string {
	if containerPath == "" {
		return nil
	}
	mounts, err := v1Mounts()
	if err != nil {
		return nil
	}
	var dirs []string
	for _, c := range chargedControllers {
		if root, ok := mounts[c]; ok {
			dir := filepath.Join(root, containerPath, Name)
			if _, err := os.Stat(dir); err == nil {
				dirs = append(dirs, dir)
			}
		}
	}
	return dirs
}

// v1Mounts maps each cgroup v1 controller to the mount point of its
// hierarchy (from /proc/self/mountinfo: fstype "cgroup", the controllers
// in the super options).
func v1Mounts() (map[string]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 3 || tail[0] != "cgroup" {
			continue
		}
		for _, opt := range strings.Split(tail[2], ",") {
			if _, seen := out[opt]; !seen {
				out[opt] = fields[4]
			}
		}
	}
	return out, sc.Err()
}
