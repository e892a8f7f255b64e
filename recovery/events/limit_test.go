package events

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// decode returns the events of JSON lines.
func decode(t *testing.T, b []byte) []Event {
	t.Helper()
	var out []Event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// TestRateLimitCountsSuppressed: past the burst, events of a type are
// dropped and counted; the count comes before the next event that passes
// and on Flush, and no event is lost from the count.
func TestRateLimitCountsSuppressed(t *testing.T) {
	var js, human bytes.Buffer
	s := NewSink(&human, &js)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.clock = func() time.Time { return now }
	const n = 1000
	for i := 0; i < n; i++ {
		s.Emit(Event{Type: Crash, Pid: i})
	}
	s.Emit(Event{Type: Recovered}) // other types have their own budget
	if !s.Wants(Recovered) || s.Wants(Crash) {
		t.Errorf("Wants: recovered %v, crash %v; want true, false", s.Wants(Recovered), s.Wants(Crash))
	}
	now = now.Add(time.Second) // refills PerSecond tokens
	s.Emit(Event{Type: Crash, Pid: n})
	s.Flush()
	evs := decode(t, js.Bytes())
	var crashes, counted int
	for _, e := range evs {
		switch e.Type {
		case Crash:
			crashes++
		case Suppressed:
			if e.Message != Crash {
				t.Errorf("suppressed event for %q", e.Message)
			}
			counted += e.Count
		}
	}
	if crashes != Burst+1 || counted != n-Burst {
		t.Errorf("%d crash events written, %d counted as suppressed; want %d and %d", crashes, counted, Burst+1, n-Burst)
	}
	if !strings.Contains(human.String(), "suppressed 900 crash events") {
		t.Errorf("no readable suppressed line:\n%s", human.String())
	}
}

// TestFlushTimerCountsTail: the count of a flood that stops is written
// without another event or an explicit Flush.
func TestFlushTimerCountsTail(t *testing.T) {
	var js bytes.Buffer
	s := NewSink(nil, &js)
	for i := 0; i < Burst+5; i++ {
		s.Emit(Event{Type: Error})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		done := strings.Contains(js.String(), `"count":5`)
		s.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no suppressed event within 5s: %s", js.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

// TestFileRotates: the events file never grows past its limit; the older
// part is kept as PATH.1 and ReadFiles returns both, oldest first.
func TestFileRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.jsonl")
	f, err := OpenFile(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSink(nil, f)
	for i := 0; i < 60; i++ {
		s.Emit(Event{Type: Error, Pid: i + 1, Message: "x"})
	}
	f.Close()
	for _, p := range []string{path, Rotated(path)} {
		st, err := os.Stat(p)
		if err != nil || st.Size() > 1000 {
			t.Errorf("%s: %v, size %d; want at most 1000", p, err, st.Size())
		}
	}
	data, err := ReadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	evs := decode(t, data)
	if len(evs) == 0 || len(evs) >= 60 {
		t.Fatalf("%d events kept, want fewer than written (rotated away) and some", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Pid != evs[i-1].Pid+1 {
			t.Fatalf("events out of order or with a gap: pid %d after %d", evs[i].Pid, evs[i-1].Pid)
		}
	}
	if evs[len(evs)-1].Pid != 60 {
		t.Errorf("last event pid %d, want 60", evs[len(evs)-1].Pid)
	}
}

// TestLimitLog: diagnostic lines are bounded like events, and the number
// dropped is said before the next line that passes.
func TestLimitLog(t *testing.T) {
	var out bytes.Buffer
	s := NewSink(nil, nil)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.clock = func() time.Time { return now }
	w := s.LimitLog(&out)
	for i := 0; i < 150; i++ {
		w.Write([]byte("assure: line\n"))
	}
	now = now.Add(time.Second)
	w.Write([]byte("assure: after\n"))
	if n := strings.Count(out.String(), "assure: line\n"); n != Burst {
		t.Errorf("%d lines passed, want %d", n, Burst)
	}
	if !strings.Contains(out.String(), "assure: suppressed 50 log lines") || !strings.HasSuffix(out.String(), "assure: after\n") {
		t.Errorf("output tail %q", out.String()[len(out.String())-120:])
	}
}
