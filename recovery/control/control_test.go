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
	if err := c.Adopt(-1, false); err == nil || !strings.Contains(err.Error(), "bad pid") {
		t.Fatalf("adopt -1: %v, want a bad-pid error", err)
	}
	if err := c.call(Request{Op: "dance"}); err == nil || !strings.Contains(err.Error(), `unknown op "dance"`) {
		t.Fatalf("unknown op: %v", err)
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
