package locks

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/procfs"
)

// Idle servers hold no locks, or only the ones they hold by design:
// anything else HeldBy reports in them is a false positive.

func TestIdleRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (hack/install-deps.sh --redis)")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--dir", t.TempDir(), "--logfile", "", "--loglevel", "warning",
		"--enable-debug-command", "local")
	start(t, cmd)
	waitFor(t, "redis", func() error { return redisWork(addr) })
	pid := cmd.Process.Pid
	image := imageRange(t, pid, bin)
	// Redis's main thread takes the module GIL, a static mutex, at start
	// and lets go of it only around its sleeps, and only if a module is
	// loaded: without modules it holds it for good.
	gil := func(tid int, h Held) bool {
		return tid == pid && h.Kind == KindMutex && h.Addr >= image[0] && h.Addr < image[1]
	}
	if n := scanIdle(t, []int{pid}, gil, true); n != 1 {
		t.Errorf("found the module GIL %d times, want once", n)
	}
	// Again with a data set, for the time a scan takes and for more bytes
	// to find false positives in.
	if err := redisDo(addr, "DEBUG POPULATE 500000 key 64\r\n", "+OK"); err != nil {
		t.Fatal(err)
	}
	if n := scanIdle(t, []int{pid}, gil, true); n != 1 {
		t.Errorf("found the module GIL %d times, want once", n)
	}
}

// redisDo sends cmds and reads replies until one starts with want.
func redisDo(addr, cmds, want string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte(cmds)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "-") {
			return fmt.Errorf("redis: %s", strings.TrimSpace(line))
		}
		if strings.HasPrefix(line, want) {
			return nil
		}
	}
}

func TestIdleNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/nginx"); err2 != nil {
			t.Skip("nginx not installed")
		}
		bin = "/usr/sbin/nginx"
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(dir, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	start(t, cmd)
	waitFor(t, "nginx", func() error { return httpGet(addr) })
	pids := []int{cmd.Process.Pid}
	for _, pid := range children(t, cmd.Process.Pid) {
		pids = append(pids, pid)
	}
	if len(pids) < 2 {
		t.Fatalf("nginx %d has no workers", cmd.Process.Pid)
	}
	if n := scanIdle(t, pids, nil, false); n != 0 {
		t.Errorf("nginx holds %d locks", n)
	}
}

func nginxConf(dir, addr string) string {
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
		location / { return 200 "ok\n"; }
	}
}
`, dir, addr)
}

// start runs cmd in a process group of its own, ended with the test:
// asked to stop first, so that a master process reaps its workers, then
// killed, the whole group, if it is slow.
func start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		_ = syscall.Kill(-pgid, syscall.SIGCONT)
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-done:
			// Its pid, so the group's id, is free now: kill nothing.
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// redisWork gives redis something to do first, so its locks and
// background threads have been used (UNLINK of a big value frees it in a
// bio thread), then checks it answers.
func redisWork(addr string) error {
	var cmds strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&cmds, "SET k%d v%d\r\n", i, i)
	}
	cmds.WriteString("DEL big\r\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&cmds, "RPUSH big element-%d\r\n", i)
	}
	cmds.WriteString("UNLINK big\r\nPING\r\n")
	return redisDo(addr, cmds.String(), "+PONG")
}

func httpGet(addr string) error {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// children lists the processes whose parent is pid.
func children(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		if st, err := procfs.ReadStatus(p); err == nil && st.PPid == pid {
			out = append(out, p)
		}
	}
	return out
}

// imageRange returns where the executable bin is mapped in pid, with the
// anonymous mapping (its .bss) right after it.
func imageRange(t *testing.T, pid int, bin string) [2]uint64 {
	t.Helper()
	path, err := filepath.EvalSymlinks(bin)
	if err != nil {
		t.Fatal(err)
	}
	maps, err := procfs.Maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	var r [2]uint64
	for _, m := range maps {
		switch {
		case m.Path == path && r[0] == 0:
			r = [2]uint64{m.Start, m.End}
		case m.Path == path, r[1] == m.Start && m.Anonymous() && m.Path == "":
			r[1] = m.End
		}
	}
	if r[0] == 0 {
		t.Fatalf("%s is not mapped in %d", path, pid)
	}
	return r
}

// scanIdle stops the processes, scans every thread of each (with its fs
// base, so stdio locks too) and expects no lock but those expected
// accepts, and returns how many those were. With compare, it also times a
// scan that reads every page.
func scanIdle(t *testing.T, pids []int, expected func(tid int, h Held) bool, compare bool) int {
	t.Helper()
	n := 0
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range pids {
		waitStopped(t, pid)
	}
	defer func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	for _, pid := range pids {
		tids, err := procfs.Tasks(pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, tid := range tids {
			var st Stats
			got, err := HeldBy(pid, tid, Options{FSBase: fsBase(t, tid), Stats: &st})
			if err != nil {
				t.Fatalf("thread %d of %d: %v", tid, pid, err)
			}
			for _, h := range got {
				if expected != nil && expected(tid, h) {
					n++
					t.Logf("thread %d of %d (%s) holds %s, as expected", tid, pid, comm(tid), format([]Held{h}))
				} else {
					t.Errorf("thread %d of %d (%s): false positive %s", tid, pid, comm(tid), format([]Held{h}))
				}
			}
			t.Logf("pid %d thread %d (%s): %s", pid, tid, comm(tid), st)
		}
		if compare {
			var st Stats
			if _, err := HeldBy(pid, pid, Options{NoPagemap: true, Stats: &st}); err != nil {
				t.Fatal(err)
			}
			t.Logf("pid %d, every page: %s", pid, st)
		}
	}
	return n
}

func comm(tid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tid))
	return strings.TrimSpace(string(b))
}

// fsBase reads the fs base of a stopped thread the way assure's tracer
// has it: seize it (it then reports its group-stop as a ptrace stop), get
// its registers, and detach (it stays stopped).
func fsBase(t *testing.T, tid int) uint64 {
	t.Helper()
	runtime.LockOSThread() // ptrace requests must come from the tracer thread
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(tid); err != nil {
		t.Fatalf("seize %d: %v", tid, err)
	}
	defer func() {
		if err := unix.PtraceDetach(tid); err != nil {
			t.Errorf("detach %d: %v", tid, err)
		}
	}()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		t.Fatalf("wait for %d: %v, status %v", tid, err, ws)
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		t.Fatalf("regs of %d: %v", tid, err)
	}
	return regs.Fs_base
}
