// Package control is the protocol between a container shim and the
// supervisor process serving its container: JSON lines over a unix
// socket that only the shim can reach. The supervisor is a process of its
// own because the shim reaps children with wait4(-1), which would also
// consume the ptrace stops of any tracee of a thread of its process.
package control

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"
)

// Dir holds the control sockets of a node's supervisors (mode 0700:
// root only). `assure metrics` finds the supervisors there.
const Dir = "/run/assure/control"

// SocketPath is the control socket of the supervisor of one container.
// Its length does not depend on containerd's state directory, namespace
// or container id, which together easily exceed the 108 bytes a unix
// socket address holds (a CRI id alone is 64 characters): the key is
// hashed into a fixed-size name of 41 bytes.
func SocketPath(address, namespace, id string) string {
	sum := sha256.Sum256([]byte(address + "\x00" + namespace + "\x00" + id))
	return filepath.Join(Dir, hex.EncodeToString(sum[:8])+".sock")
}

// Request is one line from the shim.
type Request struct {
	// Op is "adopt" (supervise Pid), "ping", "metrics" (the
	// supervisor's counters, in Response.Metrics) or "stop" (detach and
	// exit).
	Op  string `json:"op"`
	Pid int    `json:"pid,omitempty"`
	// Launcher: Pid has not exec'd its program yet (runc init waiting on
	// its exec fifo).
	Launcher bool `json:"launcher,omitempty"`
	// Manifest is the manifest of "arm" and "disarm" (add its rescue
	// points to the supervised processes, or take them out).
	Manifest json.RawMessage `json:"manifest,omitempty"`
}

// Response answers one request.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Metrics answers "metrics": whatever the handler's Metrics returns,
	// as JSON (recovery/supervisor.MetricsSnapshot for a supervisor).
	Metrics json.RawMessage `json:"metrics,omitempty"`
}

// Handler carries out requests.
type Handler interface {
	Adopt(pid int, launcher bool) error
	// Metrics returns a JSON-encodable snapshot of the handler's counters.
	Metrics() any
	Stop()
	// ArmManifest and DisarmManifest add or take out the rescue points of
	// a manifest (its JSON, untrusted: the handler validates it).
	ArmManifest(data []byte) error
	DisarmManifest(data []byte) error
}

// maxLine bounds a request line; maxResponse a response line (metrics
// of up to 1024 rescue points).
const (
	maxLine     = 2<<20 + 4096 // a manifest (1 MiB) in JSON string form
	maxResponse = 8 << 20
)

// Serve answers requests on l until Stop is requested or l is closed.
func Serve(l net.Listener, h Handler) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if serveConn(conn, h) {
				l.Close()
			}
		}()
	}
}

// serveConn answers the requests of one connection; it reports whether
// a stop was requested.
func serveConn(conn net.Conn, h Handler) bool {
	defer conn.Close()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, maxLine), maxLine)
	enc := json.NewEncoder(conn)
	for sc.Scan() {
		var req Request
		resp := Response{OK: true}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			resp = Response{Error: fmt.Sprintf("bad request: %v", err)}
		} else {
			switch req.Op {
			case "ping":
			case "metrics":
				data, err := json.Marshal(h.Metrics())
				if err != nil {
					resp = Response{Error: fmt.Sprintf("metrics: %v", err)}
				} else {
					resp.Metrics = data
				}
			case "adopt":
				if req.Pid <= 0 {
					resp = Response{Error: fmt.Sprintf("adopt: bad pid %d", req.Pid)}
				} else if err := h.Adopt(req.Pid, req.Launcher); err != nil {
					resp = Response{Error: err.Error()}
				}
			case "arm", "disarm":
				do := h.ArmManifest
				if req.Op == "disarm" {
					do = h.DisarmManifest
				}
				if err := do(req.Manifest); err != nil {
					resp = Response{Error: err.Error()}
				}
			case "stop":
				// Answer first: once detached the supervisor exits.
				enc.Encode(resp)
				h.Stop()
				return true
			default:
				resp = Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
			}
		}
		if enc.Encode(resp) != nil {
			return false
		}
	}
	return false
}

// Client talks to a supervisor.
type Client struct {
	conn net.Conn
	sc   *bufio.Scanner
	mu   sync.Mutex
}

// Dial connects to the supervisor's socket, waiting up to timeout for it
// to appear (the supervisor may just have been started).
func Dial(path string, timeout time.Duration) (*Client, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			sc := bufio.NewScanner(conn)
			sc.Buffer(make([]byte, maxLine), maxResponse)
			return &Client{conn: conn, sc: sc}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to supervisor at %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the socket to appear, with a deadline
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// SetDeadline bounds the requests made until t.
func (c *Client) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

func (c *Client) call(req Request) error {
	_, err := c.roundTrip(req)
	return err
}

func (c *Client) roundTrip(req Request) (*Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := json.NewEncoder(c.conn).Encode(req); err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	if !c.sc.Scan() {
		if err := c.sc.Err(); err != nil {
			return nil, fmt.Errorf("supervisor: %w", err)
		}
		return nil, errors.New("supervisor: connection closed")
	}
	var resp Response
	if err := json.Unmarshal(c.sc.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("supervisor: bad response: %w", err)
	}
	if !resp.OK {
		return nil, errors.New(resp.Error)
	}
	return &resp, nil
}

// Metrics asks for the supervisor's counters and decodes them into v
// (a *supervisor.MetricsSnapshot).
func (c *Client) Metrics(v any) error {
	resp, err := c.roundTrip(Request{Op: "metrics"})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(resp.Metrics, v); err != nil {
		return fmt.Errorf("supervisor: bad metrics: %w", err)
	}
	return nil
}

// Adopt asks the supervisor to supervise pid; it returns once pid is
// seized.
func (c *Client) Adopt(pid int, launcher bool) error {
	return c.call(Request{Op: "adopt", Pid: pid, Launcher: launcher})
}

// Arm asks the supervisor to add the rescue points of the manifest (its
// JSON) to every process it supervises.
func (c *Client) Arm(manifest []byte) error { return c.call(Request{Op: "arm", Manifest: manifest}) }

// Disarm asks the supervisor to take them out again.
func (c *Client) Disarm(manifest []byte) error {
	return c.call(Request{Op: "disarm", Manifest: manifest})
}

// Ping checks that the supervisor answers.
func (c *Client) Ping() error { return c.call(Request{Op: "ping"}) }

// Stop asks the supervisor to detach from everything and exit.
func (c *Client) Stop() error { return c.call(Request{Op: "stop"}) }
