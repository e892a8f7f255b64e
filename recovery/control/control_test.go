package control

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeHandler struct {
	mu      sync.Mutex
	adopted []int
	armed   []string
	stopped chan struct{}
}

func (h *fakeHandler) Adopt(pid int, launcher bool) error {
	if pid == 13 {
		return errors.New("process 13 is not in cgroup /x: refused")
	}
	h.mu.Lock()
	h.adopted = append(h.adopted, pid)
	h.mu.Unlock()
	return nil
}

func (h *fakeHandler) Stop() { close(h.stopped) }

func (h *fakeHandler) ArmManifest(data []byte) error {
	h.mu.Lock()
	h.armed = append(h.armed, string(data))
	h.mu.Unlock()
	return nil
}

func (h *fakeHandler) DisarmManifest(data []byte) error {
	return errors.New("rescue point f in /x is not armed")
}

// Metrics answers with a large body: responses are not bound by the
// request line limit.
func (h *fakeHandler) Metrics() any {
	return map[string]string{"container": "c1", "padding": strings.Repeat("x", 100000)}
}

// The protocol over a real unix socket: adopt, errors carried back, bad
// requests answered, stop ends Serve.
func TestProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{stopped: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- Serve(l, h) }()
	c, err := Dial(sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := c.Adopt(42, true); err != nil {
		t.Fatalf("adopt 42: %v", err)
	}
	if err := c.Adopt(13, false); err == nil || !strings.Contains(err.Error(), "cgroup /x") {
		t.Fatalf("adopt 13: %v, want the handler's refusal", err)
	}
	// A manifest of 100 KiB, past the old 4 KiB line limit, arrives whole.
	big := `{"version":1,"rescuePoints":[],"pad":"` + strings.Repeat("y", 100<<10) + `"}`
	if err := c.Arm([]byte(big)); err != nil {
		t.Fatalf("arm: %v", err)
	}
	h.mu.Lock()
	got := h.armed
	h.mu.Unlock()
	if len(got) != 1 || got[0] != big {
		t.Fatalf("armed %d manifests (%d bytes), want the one sent", len(got), len(strings.Join(got, "")))
	}
	if err := c.Disarm([]byte(`{}`)); err == nil || !strings.Contains(err.Error(), "not armed") {
		t.Fatalf("disarm: %v, want the handler's refusal", err)
	}
	if err := c.Adopt(-1, false); err == nil || !strings.Contains(err.Error(), "bad pid") {
		t.Fatalf("adopt -1: %v, want a bad-pid error", err)
	}
	if err := c.call(Request{Op: "dance"}); err == nil || !strings.Contains(err.Error(), `unknown op "dance"`) {
		t.Fatalf("unknown op: %v", err)
	}
	var m map[string]string
	if err := c.Metrics(&m); err != nil || m["container"] != "c1" || len(m["padding"]) != 100000 {
		t.Fatalf("metrics: %v, %d bytes of padding, container %q", err, len(m["padding"]), m["container"])
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	select {
	case <-h.stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not reach the handler")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after stop")
	}
	if len(h.adopted) != 1 || h.adopted[0] != 42 {
		t.Errorf("adopted %v, want [42]", h.adopted)
	}
}

func TestDialGivesUp(t *testing.T) {
	start := time.Now()
	_, err := Dial(filepath.Join(t.TempDir(), "none.sock"), 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "none.sock") {
		t.Fatalf("Dial of a missing socket: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Dial took %v, deadline was 100ms", time.Since(start))
	}
}

// Socket paths fit a unix socket address whatever the id, namespace and
// containerd address, and differ for each.
func TestSocketPath(t *testing.T) {
	long := strings.Repeat("a", 64)
	paths := map[string]bool{}
	for _, k := range [][3]string{
		{"/run/containerd/containerd.sock", "k8s.io", long},
		{"/run/containerd/containerd.sock", "k8s.io", long[:63] + "b"},
		{"/run/containerd/containerd.sock", strings.Repeat("n", 76), long},
		{"/tmp/other/containerd.sock", "k8s.io", long},
		{"/run/containerd/containerd.sock", "k8s.io\x00" + long, ""},
	} {
		p := SocketPath(k[0], k[1], k[2])
		if len(p) >= 108 || !strings.HasPrefix(p, Dir+"/") {
			t.Errorf("SocketPath%q = %s (%d bytes)", k, p, len(p))
		}
		paths[p] = true
	}
	if len(paths) != 5 {
		t.Errorf("collisions: %v", paths)
	}
}
