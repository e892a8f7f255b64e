package integration

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

const redisManifest = `{"version":1,"rescuePoints":[{"binary":"/usr/bin/redis-server","function":"call"}]}`

// redisImage imports assure.test/redis:1 (the distribution's
// redis-server, its label declaring `call` a rescue point) into the test
// namespace once; it skips the test without redis-server.
func redisImage(t *testing.T) {
	t.Helper()
	redisOnce.Do(func() {
		spec, err := redisSpec("assure.test/redis:1", redisManifest)
		if err == nil {
			err = buildImport(spec, namespace)
		}
		redisErr = err
	})
	if redisErr != nil {
		t.Skip(redisErr)
	}
}

var (
	redisOnce sync.Once
	redisErr  error
)

// redisSpec is an image with the distribution's redis-server and a
// manifest label.
func redisSpec(name, manifest string, more ...image.File) (image.Spec, error) {
	server, err := exec.LookPath("redis-server")
	if err != nil {
		return image.Spec{}, fmt.Errorf("redis-server not installed (hack/install-deps.sh --redis)")
	}
	real, err := filepath.EvalSymlinks(server)
	if err != nil {
		return image.Spec{}, err
	}
	return image.Spec{
		Name: name, Files: append([]image.File{{Src: real, Dst: real}}, more...), WithLibs: true,
		Symlinks: map[string]string{"/usr/bin/redis-server": filepath.Base(real)}, Dirs: []string{"/tmp", "/data"},
		Labels: map[string]string{"dev.assure.manifest": manifest},
	}, nil
}

// redisOn stores n keys in the redis at addr, waiting for it to answer
// first; it returns a connection.
func redisOn(t *testing.T, addr string, n int) *resp {
	t.Helper()
	var r *resp
	var err error
	waitFor(t, 30*time.Second, "redis to answer", func() bool {
		if r, err = dialRedis(addr); err != nil {
			return false
		}
		pong, err := r.do(2*time.Second, "PING")
		return err == nil && pong == "+PONG"
	})
	w := bufio.NewWriter(r.conn)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(w, "SET key:%d value:%d\r\n", i, i)
	}
	w.Flush()
	r.conn.SetDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < n; i++ {
		if l, err := r.rd.ReadString('\n'); err != nil || strings.TrimSpace(l) != "+OK" {
			t.Fatalf("SET %d: %q %v", i+1, l, err)
		}
	}
	if got, err := r.do(5*time.Second, "DBSIZE"); got != fmt.Sprintf(":%d", n) {
		t.Fatalf("DBSIZE %q %v, want :%d", got, err, n)
	}
	return r
}

// redisSurvives makes the redis at addr crash (DEBUG SEGFAULT) and checks
// that it answers afterwards with its n keys.
func redisSurvives(t *testing.T, addr string, n int) {
	t.Helper()
	crash, err := dialRedis(addr)
	if err != nil {
		t.Fatal(err)
	}
	crash.do(2*time.Second, "DEBUG SEGFAULT") // `call` is void: no reply comes
	crash.conn.Close()
	next, err := dialRedis(addr)
	if err != nil {
		t.Fatalf("redis did not survive: %v", err)
	}
	defer next.conn.Close()
	if got, err := next.do(5*time.Second, "DBSIZE"); got != fmt.Sprintf(":%d", n) {
		t.Fatalf("after the crash DBSIZE %q %v, want :%d", got, err, n)
	}
	if v, err := next.do(5*time.Second, "GET key:7"); v != "value:7" {
		t.Fatalf("after the crash GET key:7 = %q %v", v, err)
	}
}

// TestRedisSurvivesSegfault is the demo as a test: the distribution's
// redis-server in a container whose label declares `call` a rescue point;
// 10,000 keys; DEBUG SEGFAULT; the next requests see every key. Under runc
// the same crash kills the container.
func TestRedisSurvivesSegfault(t *testing.T) {
	redisImage(t)
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
			redisOn(t, addr, 10000).conn.Close()
			if c.survives {
				redisSurvives(t, addr, 10000)
				return
			}
			crash, _ := dialRedis(addr)
			crash.do(2*time.Second, "DEBUG SEGFAULT")
			crash.conn.Close()
			if next, err := dialRedis(addr); err == nil {
				if pong, err := next.do(2*time.Second, "PING"); err == nil {
					t.Fatalf("redis answered %q after the crash under runc", pong)
				}
			}
		})
	}
}
