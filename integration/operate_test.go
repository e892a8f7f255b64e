package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/assure-rt/assure/hack/image"
)

// TestLongIDs: ids and namespaces at containerd's length limits work
// under any state directory: a 64-character id in k8s.io (as CRI makes
// them), and a 76-character id in a 76-character namespace (containerd's
// limit), whose task state path is far beyond what a unix socket address
// holds.
func TestLongIDs(t *testing.T) {
	long := strings.Repeat("n", 76)
	for _, c := range []struct{ name, ns, id string }{
		{"cri-id", criNamespace, fmt.Sprintf("%064x", time.Now().UnixNano())},
		{"limits", long, strings.Repeat("i", 76)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.ns != criNamespace {
				snap, _ := os.ReadFile(filepath.Join(env.dir, "snapshotter"))
				if out, err := ctr(t, "namespaces", "create", c.ns, "containerd.io/defaults/snapshotter="+strings.TrimSpace(string(snap))); err != nil {
					t.Fatalf("create namespace: %v\n%s", err, out)
				}
				if err := buildImport(labelSpec(), c.ns); err != nil {
					t.Fatal(err)
				}
				// The namespace goes with the private containerd (its
				// content is garbage-collected later than a test ends).
				defer ctrIn(t, c.ns, "images", "rm", "assure.test/bugs:label")
			}
			out, err := ctrIn(t, c.ns, "run", "--rm", "--runtime", runtime, "assure.test/bugs:label", c.id, "/app/bugs", "null", "100", "25")
			if err != nil || out != reference(t) {
				t.Fatalf("ctr run: %v\n%s\nwant:\n%s", err, out, reference(t))
			}
			ev, err := exec.Command(filepath.Join(env.root, "bin", "assure"), "events", "--address", env.address, "--namespace", c.ns, c.id).CombinedOutput()
			if n := strings.Count(string(ev), "recovered SIGSEGV in handle_request"); err != nil || n != 4 {
				t.Errorf("assure events: %v, %d recoveries, want 4\n%s", err, n, ev)
			}
			noLeftoversIn(t, c.ns, c.id)
		})
	}
}

func labelSpec() image.Spec {
	return image.Spec{Name: "assure.test/bugs:label", Files: []image.File{{Src: filepath.Join(env.work, "bugs"), Dst: "/app/bugs"}}, WithLibs: true,
		Labels: map[string]string{"dev.assure.manifest": goodManifest}}
}

// TestEventsOnContainerdStream: every recovery is published once on
// containerd's event stream, topic /assure/recovered, as `ctr events`
// shows it.
func TestEventsOnContainerdStream(t *testing.T) {
	const id = "evstream"
	evs := subscribeEvents(t)
	if out, err := run(t, "assure.test/bugs:label", id, "/app/bugs", "null", "100", "25"); err != nil || out != reference(t) {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	// The shim forwards everything before the task's deletion returns;
	// containerd then deletes the container.
	waitFor(t, 30*time.Second, "the container's deletion event", func() bool {
		return evs.count(namespace+" /containers/delete", id) == 1
	})
	if n := evs.count(namespace+" /assure/recovered", id); n != 4 {
		t.Errorf("%d /assure/recovered events for %s, want 4:\n%s", n, id, evs.buf.String())
	}
	if n := evs.count(namespace+" /assure/attached", id); n != 0 {
		t.Errorf("attach bookkeeping published %d times", n)
	}
}

// TestMetrics: `assure metrics` shows a running container's counters,
// exactly, in the Prometheus text format (printed once, and served).
func TestMetrics(t *testing.T) {
	const id = "metrics"
	s := startServerContainer(t, id)
	s.want("GOOD 1", "ok 1")
	s.want("BAD", "error")
	s.want("BAD", "error")
	s.want("GOOD 2", "ok 2")
	out, err := exec.Command(filepath.Join(env.root, "bin", "assure"), "metrics", "--namespace", namespace).Output()
	if err != nil {
		t.Fatalf("assure metrics: %v", err)
	}
	checkMetrics(t, string(out), id)

	port := freePort(t)
	srv := exec.Command(filepath.Join(env.root, "bin", "assure"), "metrics", "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	var body []byte
	waitFor(t, 30*time.Second, "/metrics to answer", func() bool {
		r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			return false
		}
		defer r.Body.Close()
		body, err = io.ReadAll(r.Body)
		return err == nil && r.StatusCode == 200
	})
	checkMetrics(t, string(body), id)
}

func checkMetrics(t *testing.T, text, id string) {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	find := func(name, function string) *dto.Metric {
		for _, m := range fams[name].GetMetric() {
			l := map[string]string{}
			for _, p := range m.Label {
				l[p.GetName()] = p.GetValue()
			}
			if l["namespace"] == namespace && l["container"] == id && (function == "-" || l["function"] == function) {
				return m
			}
		}
		t.Fatalf("no %s for container %s function %s in\n%s", name, id, function, text)
		return nil
	}
	const fn = "handle_request"
	for name, want := range map[string]float64{"assure_rescue_point_calls_total": 4, "assure_recoveries_total": 2, "assure_crashes_total": 0} {
		if v := find(name, fn).GetCounter().GetValue(); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if v := find("assure_rescue_point_armed", fn).GetGauge().GetValue(); v != 1 {
		t.Errorf("armed in %v processes, want 1", v)
	}
	// Each call is checkpointed once: by the supervisor (timed) or inside
	// the process (the fast path, counted).
	h := find("assure_checkpoint_duration_seconds", fn).GetHistogram()
	inProcess := find("assure_checkpoints_in_process_total", fn).GetCounter().GetValue()
	if h.GetSampleCount()+uint64(inProcess) != 4 || h.GetSampleCount() > 0 && h.GetSampleSum() <= 0 {
		t.Errorf("checkpoint histogram: %d samples, sum %v, and %v in-process checkpoints; want 4 in all (and a sum above 0 for samples)",
			h.GetSampleCount(), h.GetSampleSum(), inProcess)
	}
	if h := find("assure_recovery_duration_seconds", fn).GetHistogram(); h.GetSampleCount() != 2 {
		t.Errorf("recovery histogram: %d samples, want 2", h.GetSampleCount())
	}
	if v := find("assure_shadow_bytes", "-").GetGauge().GetValue(); v < 4096 {
		t.Errorf("shadow bytes %v, want at least a page", v)
	}
}

// TestNoSupervisorForDeadTask: a supervisor that dies after its task has
// ended is not replaced (and nothing claims a re-attach).
func TestNoSupervisorForDeadTask(t *testing.T) {
	const id = "dead-task"
	if out, err := ctr(t, "run", "-d", "--runtime", runtime, "assure.test/bugs:label", id, "/bin/busybox", "true"); err != nil {
		t.Fatalf("ctr run -d: %v\n%s", err, out)
	}
	defer removeDetached(t, id)
	waitFor(t, 30*time.Second, "the task to stop", func() bool {
		out, _ := ctr(t, "tasks", "ls")
		return strings.Contains(out, id) && strings.Contains(out, "STOPPED")
	})
	sup := supervisorOf(t, id)
	if sup == 0 {
		t.Fatal("no supervisor")
	}
	syscall.Kill(sup, syscall.SIGKILL)
	log := filepath.Join(env.dir, "containerd.log")
	waitFor(t, 30*time.Second, "the shim to decide", func() bool {
		data, _ := os.ReadFile(log)
		return strings.Contains(string(data), fmt.Sprintf("container %s: supervisor %d exited; the task is not running", id, sup))
	})
	if n := supervisorOf(t, id); n != 0 {
		t.Errorf("supervisor %d started for a dead task", n)
	}
	data, _ := os.ReadFile(log)
	for _, bad := range []string{"container " + id + ": supervisor " + itoa(sup) + " died", "container " + id + ": supervisor re-attached"} {
		if strings.Contains(string(data), bad) {
			t.Errorf("containerd's log says %q for a dead task", bad)
		}
	}
}

// TestContainerdRestart: containerd restarted under supervised
// containers: they keep running (redis keeps its keys), faults are still
// recovered, and their events reach the new containerd's event stream.
func TestContainerdRestart(t *testing.T) {
	redisImage(t)
	port := freePort(t)
	id := fmt.Sprintf("ctd-restart-%d", port)
	out, err := ctr(t, "run", "-d", "--net-host", "--runtime", runtime, "assure.test/redis:1", id,
		"/usr/bin/redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--enable-debug-command", "yes", "--dir", "/data")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	defer removeDetached(t, id)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	redisOn(t, addr, 1000).conn.Close()
	sup := supervisorOf(t, id)
	if out, err := containerdScript("restart"); err != nil {
		t.Fatalf("restart containerd: %v\n%s", err, out)
	}
	out, err = ctr(t, "tasks", "ls")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "RUNNING") {
		t.Fatalf("after the restart: %v\n%s", err, out)
	}
	if n := supervisorOf(t, id); n != sup {
		t.Errorf("supervisor %d, was %d: the restart touched it", n, sup)
	}
	evs := subscribeEvents(t)
	redisSurvives(t, addr, 1000)
	waitFor(t, 30*time.Second, "/assure/recovered from the restarted containerd", func() bool {
		return evs.count(namespace+" /assure/recovered", id) == 1
	})
}
