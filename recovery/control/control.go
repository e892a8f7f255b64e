// Package control is the protocol between a container shim and the
// supervisor process serving its container: JSON lines over a unix
// socket that only the shim can reach. The supervisor is a process of its
// own because the shim reaps children with wait4(-1), which would also
// consume the ptrace stops of any tracee of a thread of its process.
package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Request is one line from the shim.
type Request struct {
	// Op is "adopt" (supervise Pid), "ping" or "stop" (detach and exit).
	Op  string `json:"op"`
	Pid int    `json:"pid,omitempty"`
	// Launcher: Pid has not exec'd its program yet (runc init waiting on
	// its exec fifo).
	Launcher bool `json:"launcher,omitempty"`
}

// Response answers one request.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Handler carries out requests.
type Handler interface {
	Adopt(pid int, launcher bool) error
	Stop()
}

// maxLine bounds a request line.
const maxLine = 4096

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
			case "adopt":
				if req.Pid <= 0 {
					resp = Response{Error: fmt.Sprintf("adopt: bad pid %d", req.Pid)}
				} else if err := h.Adopt(req.Pid, req.Launcher); err != nil {
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
			sc.Buffer(make([]byte, maxLine), maxLine)
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

func (c *Client) call(req Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := json.NewEncoder(c.conn).Encode(req); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	if !c.sc.Scan() {
		if err := c.sc.Err(); err != nil {
			return fmt.Errorf("supervisor: %w", err)
		}
		return errors.New("supervisor: connection closed")
	}
	var resp Response
	if err := json.Unmarshal(c.sc.Bytes(), &resp); err != nil {
		return fmt.Errorf("supervisor: bad response: %w", err)
	}
	if !resp.OK {
		return errors.New(resp.Error)
	}
	return nil
}

// Adopt asks the supervisor to supervise pid; it returns once pid is
// seized.
func (c *Client) Adopt(pid int, launcher bool) error {
	return c.call(Request{Op: "adopt", Pid: pid, Launcher: launcher})
}

// Ping checks that the supervisor answers.
func (c *Client) Ping() error { return c.call(Request{Op: "ping"}) }

// Stop asks the supervisor to detach from everything and exit.
func (c *Client) Stop() error { return c.call(Request{Op: "stop"}) }
