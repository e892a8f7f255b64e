package recovery_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// discoverWorkload is the workload of the discover tests (one SET and two
// GETs to discoverme, every reply checked); its argument is the port file.
var discoverWorkload, _ = filepath.Abs(filepath.Join("testdata", "discoverme-work.sh"))

// TestE2EDiscover: assure discover tells each kind of candidate of
// discoverme apart by testing it (see discoverme.c): the two whose error
// return the server survives are kept; the one whose error makes it exit,
// the one that leaks on error and the one that breaks later requests are
// rejected for those reasons; the outer handle_line is accepted but
// dropped for the inner parse_request; the start-up function is never
// reached. The manifest written validates, and nothing is left running.
func TestE2EDiscover(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not installed")
	}
	dir := t.TempDir()
	portFile, script, out := filepath.Join(dir, "port"), discoverWorkload, filepath.Join(dir, "found.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, assureBin, "discover", "--workload", script+" "+portFile, "--out", out, "--budget", "2m",
		"--", bin("discoverme"), portFile)
	report, err := cmd.Output()
	if err != nil {
		t.Fatalf("assure discover: %v\n%s%s", err, report, stderrOf(err))
	}
	text := string(report)
	for fn, want := range map[string]string{
		"parse_request": "kept: fault",
		"find_entry":    "kept: fault",
		"check_storage": "rejected: fault after the first call returns",
		"reserve_slot":  "but the program holds more than before",
		"open_journal":  "was recovered, but then workload",
		"handle_line":   "but dropped: its calls reach parse_request",
	} {
		line := lineOf(text, "- "+fn+":")
		if !strings.Contains(line, want) {
			t.Errorf("%s: %q, want it to say %q\n%s", fn, line, want, text)
		}
	}
	if !strings.Contains(lineOf(text, "- check_storage:"), "exited (status 3)") {
		t.Errorf("check_storage's rejection does not say the program exited:\n%s", text)
	}
	if strings.Contains(text, "load_config") {
		t.Errorf("load_config (start-up only) was reached by the workload:\n%s", text)
	}
	var m struct {
		RescuePoints []struct {
			Function string `json:"function"`
			Return   int64  `json:"return"`
		} `json:"rescuePoints"`
	}
	data, err := os.ReadFile(out)
	if err != nil || json.Unmarshal(data, &m) != nil {
		t.Fatalf("manifest %s: %v\n%s", out, err, data)
	}
	got := map[string]int64{}
	for _, rp := range m.RescuePoints {
		got[rp.Function] = rp.Return
	}
	if len(got) != 2 || got["parse_request"] != -1 || got["find_entry"] != 0 {
		t.Errorf("manifest rescue points %v, want parse_request -1 and find_entry 0\n%s", got, data)
	}
	if v, err := exec.Command(assureBin, "manifest", "validate", out).CombinedOutput(); err != nil {
		t.Errorf("assure manifest validate: %v\n%s", err, v)
	}
	if pids := processesOf(bin("discoverme")); len(pids) > 0 {
		t.Errorf("discoverme still running after discover: %v", pids)
	}
}

// TestE2EDiscoverPid: discover in a running discoverme (--pid): the
// process is attached to and detached from, never restarted; the leak of
// reserve_slot stays in it, and once open_journal's error return has
// turned its writes off for good, triage stops and says why. The process
// runs on, untraced, and still answers.
func TestE2EDiscoverPid(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	dir := t.TempDir()
	portFile, script := filepath.Join(dir, "port"), discoverWorkload
	srv := exec.Command(bin("discoverme"), portFile)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	waitUntil(t, 10*time.Second, "discoverme's port file", func() bool { _, err := os.Stat(portFile); return err == nil })
	cmd := exec.Command(assureBin, "discover", "--pid", strconv.Itoa(srv.Process.Pid), "--workload", script+" "+portFile, "--budget", "1m")
	report, err := cmd.Output()
	if err != nil {
		t.Fatalf("assure discover --pid: %v\n%s%s", err, report, stderrOf(err))
	}
	text := string(report)
	for fn, want := range map[string]string{
		"parse_request": "kept: fault",
		"reserve_slot":  "but the program holds more than before",
		"open_journal":  "was recovered, but then workload",
	} {
		if line := lineOf(text, "- "+fn+":"); !strings.Contains(line, want) {
			t.Errorf("%s: %q, want it to say %q\n%s", fn, line, want, text)
		}
	}
	if !strings.Contains(text, "triage stopped: the workload no longer passes") {
		t.Errorf("no word of triage stopping on the broken process:\n%s", text)
	}
	if err := syscall.Kill(srv.Process.Pid, 0); err != nil || tracerOf(srv.Process.Pid) != 0 {
		t.Fatalf("discoverme after discover: %v, tracer %d", err, tracerOf(srv.Process.Pid))
	}
	// Its reads still work (its writes are off for good: open_journal).
	check := exec.Command("bash", "-c", `port=$(sed -n 's/^port=//p' "$1"); exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET zz\n' >&3; read -r l <&3; [ "$l" = "-NOKEY" ]`, "check", portFile)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("discoverme no longer answers after discover --pid: %v %s", err, out)
	}
}

// TestE2EDiscoverWorkloadNeverPasses: a workload that never passes is
// reported with its own output, and nothing is left running.
func TestE2EDiscoverWorkloadNeverPasses(t *testing.T) {
	if assureErr != nil {
		t.Skip(assureErr)
	}
	dir := t.TempDir()
	cmd := exec.Command(assureBin, "discover", "--workload", "echo no answer; exit 7", "--start-timeout", "2s",
		"--", bin("discoverme"), filepath.Join(dir, "port"))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "the workload did not pass") || !strings.Contains(string(out), "no answer") {
		t.Errorf("assure discover: %v, output:\n%s", err, out)
	}
	if pids := processesOf(bin("discoverme")); len(pids) > 0 {
		t.Errorf("discoverme still running: %v", pids)
	}
}

// tracerOf is the TracerPid of pid (0: not traced).
func tracerOf(pid int) int {
	data, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func lineOf(text, prefix string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// processesOf lists the processes running the executable at path.
func processesOf(path string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == path {
			out = append(out, e.Name())
		}
	}
	return out
}
