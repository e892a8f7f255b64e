package recovery_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestE2ELighttpd: Debian's lighttpd with a bug in its request path: a
// memchr preloaded into it (memchr_bug.so) dereferences NULL when the
// header processing (http_request_headers_process) scans a header that
// holds "crashme". Natively one such request kills the server. Under
// `assure run`, with that function as a (void) rescue point, each such
// request fails and every other one is answered with the file, on the
// fast path (lighttpd is single-threaded): one
// recovered event per bad request, no crash, the server still up.
func TestE2ELighttpd(t *testing.T) {
	const server = "/usr/sbin/lighttpd"
	if _, err := os.Stat(server); err != nil {
		t.Skip("lighttpd not installed (hack/install-deps.sh --lighttpd)")
	}
	bug := bin("memchr_bug.so")
	dir := t.TempDir()
	sock := filepath.Join(dir, "lighttpd.sock")
	www := filepath.Join(dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "lighttpd.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`server.document-root = %q
server.bind = %q
server.errorlog = %q
index-file.names = ( "index.html" )
`, www, sock, filepath.Join(dir, "error.log"))), 0o644); err != nil {
		t.Fatal(err)
	}
	// A failed request is answered as lighttpd makes of a request whose
	// headers were never processed (a redirect to "/", HTTP/1.0): not
	// followed, or it would be the same request again.
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	// get says whether the request was answered with the file.
	get := func(bad bool) (bool, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://lighttpd/", nil)
		if bad {
			req.Header.Set("X-Bug", "crashme")
			req.Close = true // whatever the server makes of a failed request, not on a shared connection
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && string(body) == "hello\n", fmt.Sprintf("%d %q", resp.StatusCode, body)
	}
	args := []string{"env", "LD_PRELOAD=" + bug, server, "-D", "-f", conf}

	t.Run("native", func(t *testing.T) {
		p := startProc(t, "lighttpd", false, args...)
		waitUntil(t, 10*time.Second, "lighttpd to answer", func() bool { ok, _ := get(false); return ok })
		get(true)
		if !p.waitExit(10 * time.Second) {
			t.Fatalf("lighttpd survived the bad request natively: the bug did not fire%s", p.describe())
		}
		if ws := p.ws; !ws.Signaled() || ws.Signal() != syscall.SIGSEGV {
			t.Fatalf("native lighttpd ended with %v, want SIGSEGV%s", ws, p.describe())
		}
	})
	os.Remove(sock)

	t.Run("assure", func(t *testing.T) {
		mf, ev := manifestFiles(t, fmt.Sprintf(`{"version":1,"rescuePoints":[{"binary":%q,"function":"http_request_headers_process"}]}`, server))
		p := startProc(t, "assure", false, append([]string{assureBin, "run", "--manifest", mf, "--events", ev, "--"}, args...)...)
		waitUntil(t, 10*time.Second, "lighttpd to answer under assure", func() bool { ok, _ := get(false); return ok || p.done() })
		const requests, every = 200, 20
		bad := 0
		for i := 1; i <= requests; i++ {
			isBad := i%every == 0
			ok, what := get(isBad)
			switch {
			case isBad && ok:
				t.Fatalf("request %d (bad) was answered with the file: the bug did not fire", i)
			case !isBad && !ok:
				t.Fatalf("request %d: %s, want 200 with the file%s", i, what, p.describe())
			}
			if isBad {
				bad++
			}
		}
		if p.done() {
			t.Fatalf("assure ended%s", p.describe())
		}
		waitUntil(t, 10*time.Second, fmt.Sprintf("%d recovered events", bad), func() bool {
			n, _ := countRecovered(ev)
			return n >= bad
		})
		if n, _ := countRecovered(ev); n != bad {
			t.Errorf("%d recovered events, want %d%s", n, bad, p.describe())
		}
		evs, _, _, _ := readEvents(ev)
		for _, e := range evs {
			if e.Type == "crash" || e.Type == "error" {
				t.Errorf("%s event: %+v%s", e.Type, e, p.describe())
			}
			if e.Type == "recovered" && (e.RescuePoint == nil || e.RescuePoint.Function != "http_request_headers_process" || e.Signal != "SIGSEGV") {
				t.Errorf("recovered event %+v: want SIGSEGV in http_request_headers_process", e)
			}
		}
	})
}
