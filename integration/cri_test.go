package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/hack/image"
)

// criNamespace is the containerd namespace of containerd's CRI plugin.
const criNamespace = "k8s.io"

// findCrictl finds crictl: $CRICTL, hack/install-deps.sh's install
// (--cri), or PATH.
func findCrictl() string {
	for _, c := range []string{os.Getenv("CRICTL"), "/opt/assure/crictl/bin/crictl"} {
		if c != "" && fileExists(c) {
			return c
		}
	}
	p, _ := exec.LookPath("crictl")
	return p
}

// importCRIImages imports into k8s.io the sandbox image the CRI config
// names and the images the CRI tests run.
func importCRIImages() error {
	pause := filepath.Join(env.work, "pause")
	if out, err := exec.Command("gcc", "-O2", "-static", "-o", pause, filepath.Join(env.root, "hack", "pause", "pause.c")).CombinedOutput(); err != nil {
		return fmt.Errorf("compile pause.c: %v\n%s", err, out)
	}
	bugs := filepath.Join(env.work, "bugs")
	for _, spec := range []image.Spec{
		{Name: "assure.test/pause:1", Files: []image.File{{Src: pause, Dst: "/pause"}}, Entrypoint: []string{"/pause"}},
		{Name: "assure.test/bugs:label", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": goodManifest}},
		{Name: "assure.test/bugs:badfunc", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/app/bugs","function":"no_such_function","return":-1}]}`}},
		{Name: "assure.test/bugs:none", Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true},
	} {
		if err := buildImport(spec, criNamespace); err != nil {
			return err
		}
	}
	return os.WriteFile(crictlConfig(), []byte(fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", env.address, env.address)), 0o644)
}

func crictlConfig() string { return filepath.Join(env.work, "crictl.yaml") }

// crictl runs crictl against the private containerd's CRI plugin, as a
// kubelet would call it; it returns stdout.
func crictl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(env.crictl, append([]string{"--config", crictlConfig()}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.String(), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return strings.TrimSpace(stdout.String()), nil
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		return stdout.String(), fmt.Errorf("crictl %s: no answer in 90s", strings.Join(args, " "))
	}
}

func needCRI(t *testing.T) {
	t.Helper()
	if env.crictl == "" {
		t.Skip("crictl not installed (hack/install-deps.sh --cri)")
	}
}

// pod is a pod sandbox run through CRI with the assure handler.
type pod struct {
	t          *testing.T
	id, config string
	logs       string // its log directory
	containers []string
}

// runPod runs a host-network pod sandbox (no CNI needed) with the
// runtime handler assure and the given annotations. Its cleanup stops
// and removes it, then checks that nothing of it is left.
func runPod(t *testing.T, name string, annotations map[string]string) *pod {
	t.Helper()
	dir := t.TempDir()
	p := &pod{t: t, config: filepath.Join(dir, "pod.json"), logs: filepath.Join(dir, "logs")}
	writeJSON(t, p.config, map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": namespace, "uid": fmt.Sprintf("%s-%d", name, os.Getpid())},
		"log_directory": p.logs,
		"annotations":   annotations,
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}}, // NODE
	})
	id, err := crictl(t, "runp", "--runtime", "assure", p.config)
	if err != nil {
		t.Fatalf("runp: %v", err)
	}
	p.id = id
	t.Cleanup(p.remove)
	return p
}

// create creates a container in the pod; it returns its id, or the
// error CRI answered.
func (p *pod) create(name, img string, cmd ...string) (string, error) {
	p.t.Helper()
	cfg := filepath.Join(filepath.Dir(p.config), name+".json")
	writeJSON(p.t, cfg, map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": img},
		"command":  cmd,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	})
	id, err := crictl(p.t, "create", p.id, cfg, p.config)
	if err == nil {
		p.containers = append(p.containers, id)
	}
	return id, err
}

// run creates and starts a container.
func (p *pod) run(name, img string, cmd ...string) string {
	p.t.Helper()
	id, err := p.create(name, img, cmd...)
	if err != nil {
		p.t.Fatalf("create %s: %v", name, err)
	}
	if _, err := crictl(p.t, "start", id); err != nil {
		p.t.Fatalf("start %s: %v", name, err)
	}
	return id
}

// inspect returns crictl inspect's JSON of a container.
func (p *pod) inspect(id string) map[string]any {
	p.t.Helper()
	out, err := crictl(p.t, "inspect", "-o", "json", id)
	if err != nil {
		p.t.Fatalf("inspect: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		p.t.Fatalf("inspect output: %v\n%s", err, out)
	}
	return v
}

// wait waits for a container to exit; it returns its exit code and its
// standard output, from the CRI log file.
func (p *pod) wait(name, id string) (int, string) {
	p.t.Helper()
	var status map[string]any
	waitFor(p.t, 60*time.Second, name+" to exit", func() bool {
		status, _ = p.inspect(id)["status"].(map[string]any)
		return status["state"] == "CONTAINER_EXITED"
	})
	code, _ := status["exitCode"].(float64)
	return int(code), criStdout(p.t, filepath.Join(p.logs, name+".log"))
}

// criStdout rebuilds the standard output of a container from its CRI log
// ("TIME stdout F|P TEXT" lines; P is a partial line).
func criStdout(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("container log: %v", err)
	}
	var out strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, " ", 4)
		if len(f) < 3 || f[1] != "stdout" {
			continue
		}
		if len(f) == 4 {
			out.WriteString(f[3])
		}
		if f[2] == "F" {
			out.WriteString("\n")
		}
	}
	return out.String()
}

// remove stops and removes the pod, as the kubelet does when a pod is
// deleted, and checks that nothing of it is left.
func (p *pod) remove() {
	t := p.t
	if _, err := crictl(t, "stopp", p.id); err != nil {
		t.Errorf("stopp: %v", err)
	}
	if _, err := crictl(t, "rmp", p.id); err != nil {
		t.Errorf("rmp: %v", err)
	}
	if out, _ := crictl(t, "pods", "-q"); strings.Contains(out, p.id) {
		t.Errorf("pod %s still listed", p.id)
	}
	if out, _ := crictl(t, "ps", "-a", "-q"); out != "" {
		for _, c := range p.containers {
			if strings.Contains(out, c) {
				t.Errorf("container %s still listed", c)
			}
		}
	}
	for _, id := range append([]string{p.id}, p.containers...) {
		noLeftoversIn(t, criNamespace, id)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCRI drives the assure runtime handler through containerd's CRI
// plugin as a kubelet does: host-network pod sandboxes, containers from
// images whose labels declare rescue points, pod annotations, stop and
// remove.
func TestCRI(t *testing.T) {
	needCRI(t)
	t.Run("redis", func(t *testing.T) {
		spec, err := redisSpec("assure.test/cri-redis:1",
			`{"version":1,"rescuePoints":[{"binary":"/usr/bin/redis-server","function":"call"},{"binary":"/app/bugs","function":"handle_request","return":-1}]}`,
			image.File{Src: filepath.Join(env.work, "bugs"), Dst: "/app/bugs"})
		if err != nil {
			t.Skip(err)
		}
		if err := buildImport(spec, criNamespace); err != nil {
			t.Fatal(err)
		}
		evs := subscribeEvents(t)
		p := runPod(t, "redis", nil)
		port := freePort(t)
		id := p.run("redis", "assure.test/cri-redis:1", "/usr/bin/redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--enable-debug-command", "yes", "--dir", "/data")
		if len(id) != 64 {
			t.Errorf("CRI container id %q: want 64 characters", id)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		redisOn(t, addr, 1000).conn.Close()
		redisSurvives(t, addr, 1000)
		// crictl inspect and stats as under runc: running, under our
		// runtime, with cgroup statistics.
		st := p.inspect(id)
		if s, _ := st["status"].(map[string]any); s["state"] != "CONTAINER_RUNNING" {
			t.Errorf("after the fault the container is %v, want CONTAINER_RUNNING", s["state"])
		}
		if info, _ := json.Marshal(st["info"]); !strings.Contains(string(info), runtime) {
			t.Errorf("crictl inspect info does not name %s: %s", runtime, info)
		}
		out, err := crictl(t, "stats", "-o", "json", "--id", id)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		var stats struct {
			Stats []struct {
				CPU    struct{ UsageCoreNanoSeconds struct{ Value string } }
				Memory struct{ WorkingSetBytes struct{ Value string } }
			}
		}
		if err := json.Unmarshal([]byte(out), &stats); err != nil || len(stats.Stats) != 1 ||
			atoi(stats.Stats[0].Memory.WorkingSetBytes.Value) <= 0 || atoi(stats.Stats[0].CPU.UsageCoreNanoSeconds.Value) <= 0 {
			t.Errorf("crictl stats: %v\n%s", err, out)
		}
		// ExecSync (crictl exec -s): supervised from its first
		// instruction, as the init: its very first request faults.
		want, err := exec.Command(filepath.Join(env.work, "bugs"), "none", "20", "1").Output()
		if err != nil {
			t.Fatal(err)
		}
		if out, err := crictl(t, "exec", "-s", id, "/app/bugs", "null", "20", "1"); err != nil || out+"\n" != string(want) {
			t.Errorf("crictl exec -s: %v\n%s\nwant:\n%s", err, out, want)
		}
		// The recovery on containerd's event stream, in namespace k8s.io.
		waitFor(t, 30*time.Second, "/assure/recovered on containerd's event stream", func() bool {
			return evs.count(criNamespace+" /assure/recovered", id, `"rescuePoint.function":"call"`) == 1 &&
				evs.count(criNamespace+" /assure/recovered", id, `"rescuePoint.function":"handle_request"`) == 20
		})
	})
	t.Run("annotation-overrides-label", func(t *testing.T) {
		// The image's label names a function that does not exist: only
		// the pod annotation's manifest lets the container start.
		p := runPod(t, "override", map[string]string{"dev.assure.manifest": goodManifest})
		id := p.run("bugs", "assure.test/bugs:badfunc", "/app/bugs", "null", "100", "25")
		code, out := p.wait("bugs", id)
		if code != 0 || out != reference(t) {
			t.Errorf("exit code %d, output:\n%s\nwant 0 and:\n%s", code, out, reference(t))
		}
	})
	t.Run("malformed-annotation", func(t *testing.T) {
		p := runPod(t, "malformed", map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[`})
		id, err := p.create("bugs", "assure.test/bugs:label", "/app/bugs", "null", "100", "25")
		if err == nil {
			_, err = crictl(t, "start", id)
		}
		if err == nil || !strings.Contains(err.Error(), "annotation dev.assure.manifest") || !strings.Contains(err.Error(), "JSON") {
			t.Fatalf("a malformed pod annotation: %v; want a refusal naming annotation dev.assure.manifest and the JSON error", err)
		}
	})
	t.Run("no-label", func(t *testing.T) {
		// No manifest anywhere: plain runc, so the fault kills it.
		p := runPod(t, "plain", nil)
		id := p.run("bugs", "assure.test/bugs:none", "/app/bugs", "null", "100", "25")
		if code, _ := p.wait("bugs", id); code != 139 {
			t.Errorf("exit code %d, want 139 (SIGSEGV, as under runc)", code)
		}
		log, _ := os.ReadFile(filepath.Join(env.dir, "containerd.log"))
		if !strings.Contains(string(log), "container "+id+" declares no rescue points") {
			t.Errorf("the shim did not log that %s runs as plain runc", id)
		}
	})
	t.Run("learned", func(t *testing.T) {
		// As a kubelet restarts a crashed container: a new container of
		// the same image in the same pod (the same shim) right after the
		// crash has what the crash taught armed from its start.
		const img = "assure.test/cri-heal:1"
		bugs := filepath.Join(env.work, "bugs")
		if err := buildImport(image.Spec{Name: img, Files: []image.File{{Src: bugs, Dst: "/app/bugs"}}, WithLibs: true,
			Labels: map[string]string{"dev.assure.manifest": `{"version":1,"heal":{}}`}}, criNamespace); err != nil {
			t.Fatal(err)
		}
		assure := filepath.Join(env.root, "bin", "assure")
		learnedOf := func(args ...string) string {
			out, _ := exec.Command(assure, append([]string{args[0], "--address", env.address, "--namespace", criNamespace}, args[1:]...)...).CombinedOutput()
			return string(out)
		}
		t.Cleanup(func() { learnedOf("forget", img) })
		p := runPod(t, "heal", nil)
		first := p.run("first", img, "/app/bugs", "null", "100", "25")
		if code, _ := p.wait("first", first); code != 139 {
			t.Fatalf("first container: exit code %d, want 139 (SIGSEGV: nothing learned yet)", code)
		}
		second := p.run("second", img, "/app/bugs", "null", "100", "25")
		if code, out := p.wait("second", second); code != 0 || out != reference(t) {
			t.Errorf("second container: exit code %d, output:\n%s\nwant 0 and:\n%s", code, out, reference(t))
		}
		if l := learnedOf("learned", img); !strings.Contains(l, "handle_request") || !strings.Contains(l, first) {
			t.Errorf("assure learned %s:\n%s", img, l)
		}
	})
}

// eventStream is `ctr events` running in the background.
type eventStream struct {
	buf lockedBuffer
}

// subscribeEvents subscribes to containerd's event stream (all
// namespaces) until the test ends.
func subscribeEvents(t *testing.T) *eventStream {
	t.Helper()
	e := &eventStream{}
	cmd := exec.Command(env.ctr, "--address", env.address, "events")
	cmd.Stdout = &e.buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Subscribed once an event published now comes back.
	probe := fmt.Sprintf("assure-probe-%d", time.Now().UnixNano())
	waitFor(t, 30*time.Second, "the event subscription", func() bool {
		ctr(t, "namespaces", "create", probe)
		ctr(t, "namespaces", "rm", probe)
		return strings.Contains(e.buf.String(), probe)
	})
	return e
}

// count counts the events whose line has the topic (after the namespace),
// mentions id and has every one of also.
func (e *eventStream) count(nsTopic, id string, also ...string) int {
	n := 0
next:
	for _, l := range strings.Split(e.buf.String(), "\n") {
		if !strings.Contains(l, " "+nsTopic+" ") || !strings.Contains(l, `"`+id+`"`) {
			continue
		}
		for _, a := range also {
			if !strings.Contains(l, a) {
				continue next
			}
		}
		n++
	}
	return n
}
