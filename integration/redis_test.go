package integration

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/assure-rt/assure/hack/image"
)

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// resp is a minimal Redis client: inline commands, one reply line each
// (enough for SET, DBSIZE, GET of short values and PING).
type resp struct {
	conn net.Conn
	rd   *bufio.Reader
}

func dialRedis(addr string) (*resp, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &resp{conn: c, rd: bufio.NewReader(c)}, nil
}

// do sends a command and returns its reply, with a deadline.
func (r *resp) do(d time.Duration, cmd string) (string, error) {
	r.conn.SetDeadline(time.Now().Add(d))
	if _, err := fmt.Fprintf(r.conn, "%s\r\n", cmd); err != nil {
		return "", err
	}
	line, err := r.rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "$") && line != "$-1" { // bulk string: one more line
		v, err := r.rd.ReadString('\n')
		return strings.TrimSpace(v), err
	}
	return line, nil
}

// TestRedisSurvivesSegfault is the demo as a test: the distribution's
// redis-server in a container whose label declares `call` a rescue point;
// 10,000 keys; DEBUG SEGFAULT; the next requests see every key. Under runc
// the same crash kills the container.
func TestRedisSurvivesSegfault(t *testing.T) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (hack/install-deps.sh --redis)")
	}
	real, err := filepath.EvalSymlinks(server)
	if err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(env.work, "redis.tar")
	spec := image.Spec{
		Name: "assure.test/redis:1", Files: []image.File{{Src: real, Dst: real}}, WithLibs: true,
		Symlinks: map[string]string{"/usr/bin/redis-server": filepath.Base(real)}, Dirs: []string{"/tmp", "/data"},
		Labels: map[string]string{"dev.assure.manifest": `{"version":1,"rescuePoints":[{"binary":"/usr/bin/redis-server","function":"call"}]}`},
	}
	if err := image.Build(spec, tar); err != nil {
		t.Fatal(err)
	}
	if err := image.Import(env.address, namespace, tar); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		runtime  string
		port     int
		survives bool
	}{
		{runtime, freePort(t), true},
		{"io.containerd.runc.v2", freePort(t), false},
	} {
		t.Run(c.runtime, func(t *testing.T) {
			id := fmt.Sprintf("redis-%d", c.port)
			out, err := ctr(t, "run", "-d", "--net-host", "--runtime", c.runtime, "assure.test/redis:1", id,
				"/usr/bin/redis-server", "--port", fmt.Sprint(c.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
				"--enable-debug-command", "yes", "--dir", "/data")
			if err != nil {
				t.Fatalf("ctr run: %v\n%s", err, out)
			}
			defer removeDetached(t, id)
			addr := fmt.Sprintf("127.0.0.1:%d", c.port)
			var r *resp
			waitFor(t, 30*time.Second, "redis to answer", func() bool {
				if r, err = dialRedis(addr); err != nil {
					return false
				}
				pong, err := r.do(2*time.Second, "PING")
				return err == nil && pong == "+PONG"
			})
			w := bufio.NewWriter(r.conn)
			for i := 1; i <= 10000; i++ {
				fmt.Fprintf(w, "SET key:%d value:%d\r\n", i, i)
			}
			w.Flush()
			r.conn.SetDeadline(time.Now().Add(30 * time.Second))
			for i := 0; i < 10000; i++ {
				if l, err := r.rd.ReadString('\n'); err != nil || strings.TrimSpace(l) != "+OK" {
					t.Fatalf("SET %d: %q %v", i+1, l, err)
				}
			}
			if n, err := r.do(5*time.Second, "DBSIZE"); n != ":10000" {
				t.Fatalf("DBSIZE %q %v, want :10000", n, err)
			}
			// The faulting command fails: `call` is void, so no reply comes.
			crash, _ := dialRedis(addr)
			crash.do(2*time.Second, "DEBUG SEGFAULT")
			crash.conn.Close()
			next, err := dialRedis(addr)
			if !c.survives {
				if err == nil {
					if pong, err := next.do(2*time.Second, "PING"); err == nil {
						t.Fatalf("redis answered %q after the crash under runc", pong)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("redis did not survive: %v", err)
			}
			if n, err := next.do(5*time.Second, "DBSIZE"); n != ":10000" {
				t.Fatalf("after the crash DBSIZE %q %v, want :10000", n, err)
			}
			if v, err := next.do(5*time.Second, "GET key:1234"); v != "value:1234" {
				t.Fatalf("after the crash GET key:1234 = %q %v", v, err)
			}
		})
	}
}
