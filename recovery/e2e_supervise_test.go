package recovery_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/recovery/control"
)

// startSupervise starts `assure supervise` (the supervisor process a shim
// runs) and connects to its control socket.
func startSupervise(t *testing.T, manifestJSON string, extra ...string) (*attProc, *control.Client, string) {
	t.Helper()
	if assureErr != nil {
		t.Fatalf("assure is not available: %v", assureErr)
	}
	mf, events := manifestFiles(t, manifestJSON)
	sock := filepath.Join(filepath.Dir(mf), "control.sock")
	argv := append([]string{assureBin, "supervise", "--manifest", mf, "--events", events, "--socket", sock}, extra...)
	p := startProc(t, "supervise", false, argv...)
	c, err := control.Dial(sock, 10*time.Second)
	if err != nil {
		t.Fatalf("%v%s", err, p.describe())
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(); err != nil {
		t.Fatalf("ping: %v%s", err, p.describe())
	}
	return p, c, events
}

// TestE2ESuperviseLauncher is what the shim does with a container's init:
// a launcher process waits (as runc init waits on its exec fifo), is
// adopted, then execs the real program, which is supervised from its
// first instruction.
func TestE2ESuperviseLauncher(t *testing.T) {
	ref := runNative(t, "bugs", "none", "100", "25")
	wantStatus(t, ref, 0)
	sup, c, events := startSupervise(t, simpleManifest("bugs", -1, "handle_request"))
	launcher := startProc(t, "launcher", true, "/bin/sh", "-c", `read go && exec "$0" null 100 25`, bin("bugs"))
	if err := c.Adopt(launcher.pid(), true); err != nil {
		t.Fatalf("adopt launcher: %v%s", err, sup.describe())
	}
	launcher.stdin.Write([]byte("go\n"))
	launcher.stdin.Close()
	if !launcher.waitExit(30 * time.Second) {
		t.Fatalf("program did not finish%s%s", launcher.describe(), sup.describe())
	}
	if st := launcher.status(); st != 0 {
		t.Fatalf("program exit status %d, want 0 (recovered)%s%s", st, launcher.describe(), sup.describe())
	}
	// The state must be exactly that of a run whose handler rejects the
	// bad requests before touching anything.
	if out := strings.TrimSpace(strings.Join(launcher.rest(), "\n")); out != strings.TrimSpace(ref.Stdout) {
		t.Errorf("program output:\n%s\nwant (reference run):\n%s", out, ref.Stdout)
	}
	evs, err := attachEvents(events)
	if err != nil {
		t.Fatal(err)
	}
	var recovered, attached int
	for _, e := range evs {
		switch e.Type {
		case "recovered":
			recovered++
			if e.Pid != launcher.pid() {
				t.Errorf("recovered in pid %d, want the launched program %d", e.Pid, launcher.pid())
			}
		case "attached":
			attached++
		}
	}
	if recovered != 4 || attached != 1 {
		t.Errorf("%d recovered and %d attached events, want 4 and 1: %v", recovered, attached, evs)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !sup.waitExit(10*time.Second) || sup.status() != 0 {
		t.Fatalf("supervise did not exit 0 after stop%s", sup.describe())
	}
}

// TestE2ESuperviseRunningAndStop adopts a running server (as the shim does
// for `ctr task exec` processes), recovers a fault, then stops: the server
// runs on unsupervised.
func TestE2ESuperviseRunningAndStop(t *testing.T) {
	srv := startServer(t, 0)
	srv.want("GOOD 1", "ok 1")
	sup, c, _ := startSupervise(t, simpleManifest("server", -1, "handle_request"))
	if err := c.Adopt(srv.pid(), false); err != nil {
		t.Fatalf("adopt: %v%s", err, sup.describe())
	}
	srv.extra = sup.describe
	srv.want("BAD", "error")
	srv.want("GOOD 2", "ok 2")
	if err := c.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !sup.waitExit(10*time.Second) || sup.status() != 0 {
		t.Fatalf("supervise did not exit 0 after stop%s", sup.describe())
	}
	wantTracer(t, srv.pid(), 0, srv.describe)
	srv.want("GOOD 3", "ok 3")
}

// TestE2ESuperviseRefusesOtherCgroup: with --cgroup, a pid outside the
// container's cgroup (a recycled pid, say) is refused with a message that
// names the cgroup, and left alone.
func TestE2ESuperviseRefusesOtherCgroup(t *testing.T) {
	srv := startServer(t, 0)
	_, c, _ := startSupervise(t, simpleManifest("server", -1, "handle_request"), "--cgroup", "/assure-test/not-this-one")
	err := c.Adopt(srv.pid(), false)
	if err == nil || !strings.Contains(err.Error(), "/assure-test/not-this-one") {
		t.Fatalf("adopt outside the cgroup: %v, want a refusal naming the cgroup", err)
	}
	wantTracer(t, srv.pid(), 0, srv.describe)
	srv.want("GOOD 1", "ok 1")
}
