// Package integration tests the containerd shim against a real, private
// containerd (hack/containerd.sh) and the distribution's runc, driving it
// with the ctr command as a user would, and through containerd's CRI
// plugin with crictl as a kubelet would.
//
// The containerd is the distribution's (1.6) unless CONTAINERD_BIN and
// CTR_BIN name others (make test runs the main scenarios again with a
// containerd 2.x built by hack/install-deps.sh --containerd2).
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/hack/image"
)

const runtime = "io.containerd.assure.v1"

// namespace is this run's own: runc keeps container state in
// /run/containerd/runc/<namespace>/<id> whatever containerd instance runs
// it, so two test runs on one machine must not share namespace and ids.
var namespace = fmt.Sprintf("assure-it-%d", os.Getpid())

var env struct {
	root    string // module root
	dir     string // private containerd's directory
	address string
	work    string // compiled programs, image tarballs
	skip    string
	// containerd and ctr: the distribution's, or $CONTAINERD_BIN and
	// $CTR_BIN.
	containerd, ctr string
	crictl          string // "" when not installed: CRI tests skip
}

func TestMain(m *testing.M) {
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	if code >= 0 {
		os.Exit(code)
	}
	code = m.Run()
	teardown()
	os.Exit(code)
}

// setup builds the binaries, starts containerd and imports the images. It
// returns a code to exit with right away (0: skipped), or -1 to run.
func setup() (int, error) {
	if os.Geteuid() != 0 {
		fmt.Println("integration: skipped: needs root (containerd, runc, ptrace)")
		return 0, nil
	}
	env.containerd, env.ctr = envOr("CONTAINERD_BIN", "containerd"), envOr("CTR_BIN", "ctr")
	for _, c := range []string{env.containerd, env.ctr, "runc", "gcc", "busybox"} {
		if _, err := exec.LookPath(c); err != nil {
			fmt.Printf("integration: skipped: %s not installed (hack/install-deps.sh --containerd)\n", c)
			return 0, nil
		}
	}
	env.crictl = findCrictl()
	// ctr 2.x warns at every call that cgroup v1 is deprecated.
	os.Setenv("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1")
	root, err := filepath.Abs("..")
	if err != nil {
		return 1, err
	}
	env.root = root
	// bin/ as make builds it (containerd finds the shim there).
	build := exec.Command("make", "-s", "build")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return 1, fmt.Errorf("make build: %v\n%s", err, out)
	}
	if env.work, err = os.MkdirTemp("", "assure-integration-"); err != nil {
		return 1, err
	}
	progs := filepath.Join(root, "recovery", "testdata", "progs")
	for _, prog := range []string{"bugs", "server", "prefork", "faults", "discoverme"} {
		cc := exec.Command("gcc", "-O2", "-g", "-pthread", "-I", progs, "-o", filepath.Join(env.work, prog), filepath.Join(progs, prog+".c"))
		if out, err := cc.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("compile %s.c: %v\n%s", prog, err, out)
		}
	}
	if env.dir, err = os.MkdirTemp("/tmp", "assure-ctd-"); err != nil {
		return 1, err
	}
	env.address = filepath.Join(env.dir, "containerd.sock")
	if out, err := containerdScript("start", "--cri"); err != nil {
		return 1, fmt.Errorf("start containerd: %v\n%s", err, out)
	}
	// The namespaces get the snapshotter the script chose, as the
	// script's own namespace has (CRI's k8s.io too, for the images
	// imported there).
	snap, _ := os.ReadFile(filepath.Join(env.dir, "snapshotter"))
	for _, ns := range []string{namespace, criNamespace} {
		if out, err := exec.Command(env.ctr, "--address", env.address, "namespaces", "create", ns,
			"containerd.io/defaults/snapshotter="+strings.TrimSpace(string(snap))).CombinedOutput(); err != nil && !strings.Contains(string(out), "already exists") {
			teardown()
			return 1, fmt.Errorf("create namespace %s: %v\n%s", ns, err, out)
		}
	}
	if err := importImages(); err != nil {
		teardown()
		return 1, err
	}
	return -1, nil
}

func teardown() {
	if env.dir != "" {
		if out, err := containerdScript("stop"); err != nil {
			fmt.Fprintf(os.Stderr, "integration: stop containerd: %v\n%s", err, out)
		}
	}
	os.RemoveAll(env.work)
	// runc leaves the namespace's (empty) cgroup in every hierarchy.
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", namespace))
	for _, d := range dirs {
		os.Remove(d)
	}
}

// containerdScript runs hack/containerd.sh CMD on the private containerd,
// with the containerd and ctr chosen.
func containerdScript(cmd string, flags ...string) ([]byte, error) {
	c := exec.Command("bash", append([]string{filepath.Join(env.root, "hack", "containerd.sh"), cmd, env.dir}, flags...)...)
	c.Env = append(os.Environ(), "CONTAINERD_BIN="+env.containerd, "CTR_BIN="+env.ctr)
	return c.CombinedOutput()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

const goodManifest = `{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"handle_request","return":-1}]}`

func importImages() error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	bugs := filepath.Join(env.work, "bugs")
	images := []image.Spec{
		{Name: "assure.test/busybox:1", Files: []image.File{{Src: busybox, Dst: "/bin/busybox"}}, Dirs: []string{"/tmp"}},
		{Name: "assure.test/bugs:label", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}, {Src: busybox, Dst: "/bin/busybox"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": goodManifest}},
		{Name: "assure.test/bugs:file", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}, {Src: writeFile("m.json", goodManifest), Dst: "/etc/assure.json"}},
			WithLibs: true, Labels: map[string]string{"dev.assure.manifest.file": "/etc/assure.json"}},
		{Name: "assure.test/server:1", Files: []image.File{{Src: filepath.Join(env.work, "server"), Dst: "/app/server"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/server","function":"handle_request","return":-1}]}`}},
		{Name: idleImage, Files: []image.File{{Src: filepath.Join(env.work, "server"), Dst: "/app/server"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/server","function":"worker_main"}]}`}},
		{Name: healImage, Files: []image.File{{Src: filepath.Join(env.work, "server"), Dst: "/app/server"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"heal":{"candidates":[{"binary":"/app/server","function":"handle_request","return":-1}]}}`}},
		{Name: "assure.test/prefork:1", Files: []image.File{{Src: filepath.Join(env.work, "prefork"), Dst: "/app/prefork"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/prefork","function":"handle_request","return":-1,"scope":"container"}]}`}},
		{Name: "assure.test/bugs:abslink", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true,
			Symlinks: map[string]string{"/usr/local/bin/srv": "/app/bugs"},
			Labels:   map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/usr/local/bin/srv","function":"handle_request","return":-1}]}`}},
		{Name: "assure.test/faults:1", Files: []image.File{{Src: filepath.Join(env.work, "faults"), Dst: "/app/faults"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/faults","function":"rescue_fault","return":-1}]}`}},
		{Name: "assure.test/bugs:none", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true},
		{Name: "assure.test/discoverme:1", Files: []image.File{{Src: filepath.Join(env.work, "discoverme"), Dst: "/app/discoverme"}},
			WithLibs: true, Dirs: []string{"/tmp"}},
		{Name: "assure.test/bugs:badfunc", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"no_such_function","return":-1}]}`}},
		{Name: "assure.test/bugs:badjson", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[`}},
		{Name: "assure.test/bugs:escape", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true, Dirs: []string{"/etc"},
			Labels: map[string]string{"dev.assure.manifest.file": "/etc/../../../../etc/passwd"}},
	}
	for _, spec := range images {
		if err := buildImport(spec, namespace); err != nil {
			return err
		}
	}
	return importCRIImages()
}

// buildImport builds an image and imports it into each namespace.
func buildImport(spec image.Spec, namespaces ...string) error {
	tar := filepath.Join(env.work, strings.NewReplacer("/", "_", ":", "_").Replace(spec.Name)+".tar")
	if err := image.Build(spec, tar); err != nil {
		return err
	}
	for _, ns := range namespaces {
		if err := image.Import(env.address, ns, tar); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(name, content string) string {
	p := filepath.Join(env.work, name)
	os.WriteFile(p, []byte(content), 0o644)
	return p
}

// ctr runs the ctr command against the private containerd, with a deadline.
func ctr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return ctrIn(t, namespace, args...)
}

// ctrIn runs ctr in namespace ns.
func ctrIn(t *testing.T, ns string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(env.ctr, append([]string{"--address", env.address, "--namespace", ns, "--timeout", "60s"}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return buf.String(), err
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		return buf.String(), fmt.Errorf("ctr %s: no answer in 90s", strings.Join(args, " "))
	}
}

// run runs IMAGE as container ID under the assure runtime and removes it.
func run(t *testing.T, img, id string, argv ...string) (string, error) {
	t.Helper()
	return ctr(t, append([]string{"run", "--rm", "--runtime", runtime, img, id}, argv...)...)
}

func noTask(t *testing.T, id string) {
	t.Helper()
	out, err := ctr(t, "tasks", "ls")
	if err != nil {
		t.Fatalf("ctr tasks ls: %v\n%s", err, out)
	}
	if strings.Contains(out, id) {
		t.Errorf("task %s left behind:\n%s", id, out)
	}
	out, _ = ctr(t, "containers", "ls", "-q")
	if strings.Contains(out, id) {
		ctr(t, "containers", "rm", id)
	}
}

// TestNoManifestRunsAsRunc: an image that declares no rescue points runs
// exactly as under runc.
func TestNoManifestRunsAsRunc(t *testing.T) {
	out, err := run(t, "assure.test/busybox:1", "plain", "/bin/busybox", "echo", "hello")
	if err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("ctr run: %v, output %q; want hello", err, out)
	}
	out, err = run(t, "assure.test/bugs:none", "plain-crash", "/app/bugs", "null", "100", "25")
	if err == nil {
		t.Fatalf("without a manifest the program must crash as under runc; it exited 0:\n%s", out)
	}
	noTask(t, "plain-crash")
}

// reference is the output of a run whose handler rejects bad requests
// before touching anything: what the recovered run must print exactly.
func reference(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(env.work, "bugs"), "none", "100", "25").Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestManifestFromLabel: the label's rescue point recovers every null
// dereference inside the container, with the state exactly right.
func TestManifestFromLabel(t *testing.T) {
	// abslink: the manifest names /usr/local/bin/srv, an absolute symlink
	// to /app/bugs inside the image, resolved as the kernel would there.
	for _, tag := range []string{"label", "file", "abslink"} {
		t.Run(tag, func(t *testing.T) {
			out, err := run(t, "assure.test/bugs:"+tag, "recover-"+tag, "/app/bugs", "null", "100", "25")
			if err != nil {
				t.Fatalf("ctr run: %v\n%s", err, out)
			}
			if want := reference(t); out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
			noTask(t, "recover-"+tag)
			// Each recovery is an event of the container.
			ev := exec.Command(filepath.Join(env.root, "bin", "assure"), "events", "--address", env.address, "--namespace", namespace, "recover-"+tag)
			evOut, err := ev.CombinedOutput()
			if err != nil {
				t.Fatalf("assure events: %v\n%s", err, evOut)
			}
			binary := "/app/bugs"
			if tag == "abslink" {
				binary = "/usr/local/bin/srv" // as the manifest names it
			}
			if n := strings.Count(string(evOut), "container recover-"+tag+": recovered SIGSEGV in handle_request ("+binary+")"); n != 4 {
				t.Errorf("assure events shows %d recoveries, want 4:\n%s", n, evOut)
			}
		})
	}
}

// TestBadManifestsFailCreate: task creation fails with an error ctr prints,
// naming the label and the problem, and nothing is left behind.
func TestBadManifestsFailCreate(t *testing.T) {
	for tag, want := range map[string][]string{
		"badfunc": {"dev.assure.manifest", "no_such_function"},
		"badjson": {"dev.assure.manifest", "JSON"},
		"escape":  {"dev.assure.manifest.file", "escapes the container root filesystem"},
	} {
		t.Run(tag, func(t *testing.T) {
			id := "bad-" + tag
			out, err := run(t, "assure.test/bugs:"+tag, id, "/app/bugs", "null", "100", "25")
			if err == nil {
				t.Fatalf("ctr run succeeded; want a failed creation:\n%s", out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("ctr's error %q does not mention %q", strings.TrimSpace(out), w)
				}
			}
			noTask(t, id)
			noLeftovers(t, id)
		})
	}
}

// TestExecIsSupervised: a process started with `ctr task exec` in a
// supervised container is supervised: it is traced, and its faults in a
// rescue point are recovered with the state exactly right.
func TestExecIsSupervised(t *testing.T) {
	id := "exec-target"
	// The init waits on its stdin, which stays open: a long-running task.
	initCmd := exec.Command(env.ctr, "--address", env.address, "--namespace", namespace,
		"run", "--rm", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sh", "-c", "read x")
	initIn, err := initCmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := initCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		initIn.Close()
		initCmd.Wait()
		noTask(t, id)
	}()
	waitFor(t, 30*time.Second, "the container's init to run", func() bool {
		out, err := ctr(t, "tasks", "ls")
		return err == nil && strings.Contains(out, id) && strings.Contains(out, "RUNNING")
	})
	// The exec'd shell waits for a line before it execs the program, so
	// that the test can see it traced first.
	ex := exec.Command(env.ctr, "--address", env.address, "--namespace", namespace,
		"task", "exec", "--exec-id", "e1", id, "/bin/busybox", "sh", "-c", "read x; exec /app/bugs null 100 25")
	exIn, err := ex.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ex.Stdout, ex.Stderr = &out, &out
	if err := ex.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the exec'd process to be traced", func() bool {
		for _, pid := range taskPids(t, id) {
			if tracer(pid) != 0 && strings.Contains(cmdline(pid), "read x; exec") {
				return true
			}
		}
		return false
	})
	exIn.Write([]byte("go\n"))
	exIn.Close()
	done := make(chan error, 1)
	go func() { done <- ex.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exec: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		ex.Process.Kill()
		t.Fatalf("exec did not finish\n%s", out.String())
	}
	if want := reference(t); out.String() != want {
		t.Errorf("exec output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestExecSupervisedFromFirstInstruction: a process started with exec
// is supervised before it runs its program's first instruction (the
// shim's seccomp listener holds its execve until the supervisor has it):
// a program whose very first request faults is recovered, every time.
func TestExecSupervisedFromFirstInstruction(t *testing.T) {
	const id = "exec-first"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "sleep", "120"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer removeDetached(t, id)
	want, err := exec.Command(filepath.Join(env.work, "bugs"), "none", "20", "1").Output()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		out, err := ctr(t, "task", "exec", "--exec-id", fmt.Sprintf("x%d", i), id, "/app/bugs", "null", "20", "1")
		if err != nil || out != string(want) {
			t.Fatalf("exec %d: %v\n%s\nwant:\n%s", i, err, out, want)
		}
	}
}

// waitFor polls a condition until a deadline.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

// taskPids lists the host pids of a task's processes (ctr task ps).
func taskPids(t *testing.T, id string) []int {
	out, err := ctr(t, "tasks", "ps", id)
	if err != nil {
		return nil
	}
	var pids []int
	for _, line := range strings.Split(out, "\n") {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "%d", &pid); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

func tracer(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		var n int
		if _, err := fmt.Sscanf(line, "TracerPid:\t%d", &n); err == nil {
			return n
		}
	}
	return 0
}

func cmdline(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(data), "\x00", " ")
}
