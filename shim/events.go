package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	"github.com/containerd/containerd/namespaces"
	"github.com/sirupsen/logrus"

	"github.com/assure-rt/assure/recovery/events"
)

// TopicPrefix starts the topics of assure's events on containerd's event
// stream: /assure/recovered, /assure/crash, /assure/error (and the types
// the engine adds later).
const TopicPrefix = "/assure/"

// quietTypes are not published: attach and detach are bookkeeping,
// written to the shim's log only.
var quietTypes = map[string]bool{events.Attached: true, events.Detached: true}

var topicWord = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// forwarder copies a container's events file, line by line and once each,
// to the shim's log (which containerd writes to its own) and to
// containerd's event stream. One forwarder serves the container's whole
// life: supervisors restarted after a death append to the same file, and
// the forwarder carries on from where it was. A file replaced under it
// (rotated) is read to its end before the new one is opened.
type forwarder struct {
	path    string
	log     *logrus.Entry
	publish func(topic string, e events.Event, line []byte)
	// learned is told of each learned event, before it is published.
	learned func(events.Event)

	// mu serialises reading: the forwarder's own polls, and flushes
	// (shim Create) that must see what was learned before it reads an
	// image's labels.
	mu      sync.Mutex
	closed  bool // run returned: a late flush must not read the file again
	f       *os.File
	ino     uint64
	pending []byte // an incomplete last line
}

// maxPending bounds an incomplete line kept between reads.
const maxPending = 1 << 20

// run forwards until stop is closed, then forwards what is left and
// closes done.
func (fw *forwarder) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		fw.poll()
		select {
		case <-stop:
			fw.poll()
			fw.mu.Lock()
			if fw.f != nil {
				fw.f.Close()
				fw.f = nil
			}
			fw.closed = true
			fw.mu.Unlock()
			return
		case <-tick.C:
		}
	}
}

// poll forwards the complete lines written since the last poll.
func (fw *forwarder) poll() {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		return
	}
	if fw.f == nil && !fw.open() {
		return
	}
	fw.drain()
	// Rotated or removed and created again: finish the old file (done
	// above), then start on the new one.
	st, err := os.Stat(fw.path)
	if err != nil || inode(st) == fw.ino {
		return
	}
	fw.f.Close()
	fw.f, fw.pending = nil, nil
	if fw.open() {
		fw.drain()
	}
}

func (fw *forwarder) open() bool {
	f, err := os.Open(fw.path)
	if err != nil {
		return false
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return false
	}
	fw.f, fw.ino = f, inode(st)
	return true
}

func inode(st os.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}

// drain reads the open file to its end and forwards each complete line.
func (fw *forwarder) drain() {
	buf := make([]byte, 64<<10)
	for {
		n, err := fw.f.Read(buf)
		fw.pending = append(fw.pending, buf[:n]...)
		for {
			i := bytes.IndexByte(fw.pending, '\n')
			if i < 0 {
				break
			}
			fw.line(fw.pending[:i])
			fw.pending = fw.pending[i+1:]
		}
		if len(fw.pending) > maxPending {
			fw.log.Warnf("assure: events file %s: a line longer than %d bytes skipped", fw.path, maxPending)
			fw.pending = nil
		}
		if err == io.EOF || n == 0 || err != nil {
			fw.pending = append([]byte(nil), fw.pending...) // do not pin buf
			return
		}
	}
}

// line forwards one JSON line of the events file.
func (fw *forwarder) line(b []byte) {
	var e events.Event
	if json.Unmarshal(b, &e) != nil {
		return
	}
	msg := events.Format(e)
	switch e.Type {
	case events.Crash, events.Error:
		fw.log.Warn(msg)
	default:
		fw.log.Info(msg)
	}
	if e.Type == events.Learned && fw.learned != nil {
		fw.learned(e)
	}
	if quietTypes[e.Type] || !topicWord.MatchString(e.Type) || fw.publish == nil {
		return
	}
	fw.publish(TopicPrefix+e.Type, e, b)
}

// publishFunc publishes events of namespace ns on containerd's event
// stream, through the shim's publisher (which retries while containerd is
// away, e.g. restarting).
//
// The message must be a type that containerd's clients can decode, or
// `ctr events` skips it: ctr 1.6 and 2.x share no general-purpose one
// (google.protobuf.Struct is not linked into ctr 2.x), so the event rides
// in a containerd.services.containers.v1.Container — a record type, not
// one of containerd's own events, so no consumer mistakes it for one —
// whose id is the container's, runtime the assure runtime, and labels the
// event's fields (see eventLabels).
func (s *service) publishFunc(ns string) func(string, events.Event, []byte) {
	if s.publisher == nil {
		return nil
	}
	ctx := namespaces.WithNamespace(context.Background(), ns)
	return func(topic string, e events.Event, line []byte) {
		msg := &containers.Container{
			ID:      e.Container,
			Runtime: &containers.Container_Runtime{Name: RuntimeName},
			Labels:  eventLabels(e, line),
		}
		if err := s.publisher.Publish(ctx, topic, msg); err != nil {
			logrus.WithError(err).Warnf("assure: publish %s (queued for retry)", topic)
		}
	}
}

// eventLabels flattens an event into string labels: its JSON fields that
// are set (rescuePoint as rescuePoint.binary, .function, .address; the
// stack's frames one per line), plus "event", the JSON line itself.
func eventLabels(e events.Event, line []byte) map[string]string {
	var fields map[string]any
	json.Unmarshal(line, &fields)
	out := map[string]string{"event": string(line)}
	for k, v := range fields {
		switch v := v.(type) {
		case string:
			out[k] = v
		case float64:
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	if rp := e.RescuePoint; rp != nil {
		out["rescuePoint.binary"], out["rescuePoint.function"], out["rescuePoint.address"] = rp.Binary, rp.Function, rp.Address
	}
	if len(e.Stack) > 0 {
		out["stack"] = strings.Join(e.Stack, "\n")
	}
	return out
}
