package discover

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// usage is what a program holds: its processes, and their descriptors,
// threads and resident memory, summed over the process tree.
type usage struct {
	procs, fds, threads int
	rssKiB              int
}

func (u usage) String() string {
	return fmt.Sprintf("%d processes, %d descriptors, %d threads, %.1f MiB resident", u.procs, u.fds, u.threads, float64(u.rssKiB)/1024)
}

// within reports whether b holds no more than a, allowing the resident
// memory to grow by slack (allocators keep what they were given).
func (a usage) within(b usage, slackKiB int) bool {
	return b.procs <= a.procs && b.fds <= a.fds && b.threads <= a.threads && b.rssKiB <= a.rssKiB+slackKiB
}

// quiet returns the usage of root once it stopped changing (three equal
// readings 50 ms apart, within 3 s): a connection the workload closed
// leaves the server a little after the client exits.
func quiet(root int) (usage, error) {
	var last usage
	same := 0
	for deadline := time.Now().Add(3 * time.Second); ; {
		u, err := treeUsage(root)
		if err != nil {
			return u, err
		}
		u2 := u
		u2.rssKiB, last.rssKiB = 0, 0 // memory moves a little all the time
		if u2 == last {
			same++
		} else {
			same = 0
		}
		last = u
		if same >= 2 || time.Now().After(deadline) {
			return u, nil
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, with a deadline
	}
}

// treeUsage reads the usage of root and its descendants from /proc.
func treeUsage(root int) (usage, error) {
	pids, err := tree(root)
	if err != nil {
		return usage{}, err
	}
	var u usage
	for _, pid := range pids {
		fds, err := countDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			return usage{}, err
		}
		threads, err := countDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return usage{}, err
		}
		u.procs++
		u.fds += fds
		u.threads += threads
		u.rssKiB += statusKiB(pid, "VmRSS:")
	}
	return u, nil
}

// tree lists root and every process descending from it.
func tree(root int) ([]int, error) {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", root)); err != nil {
		return nil, fmt.Errorf("process %d: %w", root, err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := parentOf(pid); pp > 0 {
			children[pp] = append(children[pp], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out, nil
}

func parentOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	var state string
	var ppid int
	fmt.Sscanf(s[i+1:], " %s %d", &state, &ppid)
	return ppid
}

func countDir(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

func statusKiB(pid int, key string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return 0
}
