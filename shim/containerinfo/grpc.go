package containerinfo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// client makes gRPC calls to containerd over its unix socket.
//
// Hand-written on purpose: the start command of the shim runs for every
// container, and grpc-go (with the generated API packages that need it)
// adds about 5 ms of Go start-up to it, more than the calls themselves
// take. The Go standard library speaks HTTP/2 without TLS (prior
// knowledge), which is all gRPC needs from the transport; what is left
// is gRPC's framing of messages (a flag byte and a 32-bit length) and
// its status trailers, both small and fixed by the gRPC over HTTP/2
// protocol (PROTOCOL-HTTP2.md in grpc/grpc).
type client struct {
	hc        *http.Client
	namespace string
}

// maxMessage bounds one response message: containerd's own default
// receive limit for clients is 16 MiB.
const maxMessage = 16 << 20

// namespaceHeader is the metadata containerd reads the namespace of a
// request from (containerd's namespaces.GRPCHeader).
const namespaceHeader = "containerd-namespace"

func newClient(address, namespace string) *client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols: &protocols,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", address)
		},
		// One connection serves every call of the lookup.
		MaxIdleConnsPerHost: 1,
	}
	return &client{hc: &http.Client{Transport: tr}, namespace: namespace}
}

func (c *client) close() { c.hc.CloseIdleConnections() }

// Error is a gRPC status other than OK.
type Error struct {
	Method  string
	Code    int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s (gRPC status %d)", e.Method, e.Message, e.Code)
}

// notFound is gRPC's NOT_FOUND.
const notFound = 5

// IsNotFound reports whether err is containerd's "not found".
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == notFound
}

// call sends one request message to method ("/pkg.Service/Method") and
// hands each response message to recv (once for a unary method, once
// per message for a server-streaming one).
func (c *client) call(ctx context.Context, method string, req []byte, recv func([]byte) error) error {
	body := make([]byte, 5, 5+len(req))
	binary.BigEndian.PutUint32(body[1:], uint32(len(req)))
	body = append(body, req...)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://containerd"+method, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/grpc")
	hr.Header.Set("TE", "trailers")
	hr.Header.Set(namespaceHeader, c.namespace)
	if dl, ok := ctx.Deadline(); ok {
		if ms := time.Until(dl).Milliseconds(); ms > 0 {
			hr.Header.Set("Grpc-Timeout", strconv.FormatInt(ms, 10)+"m")
		}
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP status %d", method, resp.StatusCode)
	}
	// A call that fails at once answers with headers only.
	if err := status(method, resp.Header); err != nil {
		return err
	}
	if err := readMessages(method, resp.Body, recv); err != nil {
		return err
	}
	if resp.Trailer.Get("Grpc-Status") == "" {
		return fmt.Errorf("%s: no gRPC status in the response", method)
	}
	return status(method, resp.Trailer)
}

// readMessages reads length-prefixed gRPC messages until the body ends.
func readMessages(method string, r io.Reader, recv func([]byte) error) error {
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("%s: read response: %w", method, err)
		}
		if hdr[0] != 0 {
			return fmt.Errorf("%s: compressed response (not asked for)", method)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if n > maxMessage {
			return fmt.Errorf("%s: response message of %d bytes", method, n)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(r, msg); err != nil {
			return fmt.Errorf("%s: read response: %w", method, err)
		}
		if err := recv(msg); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
	}
}

// status returns the error a grpc-status header or trailer says, if any.
func status(method string, h http.Header) error {
	s := h.Get("Grpc-Status")
	if s == "" || s == "0" {
		return nil
	}
	code, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%s: malformed gRPC status %q", method, s)
	}
	msg := h.Get("Grpc-Message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &Error{Method: method, Code: code, Message: msg}
}
