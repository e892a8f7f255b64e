package events

import (
	"fmt"
	"io"
	"time"
)

// Rate limit of each event type: a program that faults in a loop cannot
// make the supervisor write more than this (plus one "suppressed" event
// per type and flush interval, which counts what was dropped).
const (
	// Burst is how many events of one type pass at once.
	Burst = 100
	// PerSecond is how many events of one type pass per second after a
	// burst.
	PerSecond = 10
	// flushAfter is how long dropped events wait to be counted.
	flushAfter = time.Second
)

// bucket is a token bucket for one event type.
type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.tokens = Burst
	} else {
		b.tokens = min(Burst, b.tokens+now.Sub(b.last).Seconds()*PerSecond)
	}
	b.last = now
}

// bucket returns the bucket of typ, refilled to now. Caller holds s.mu.
func (s *Sink) bucket(typ string) *bucket {
	if s.buckets == nil {
		s.buckets = make(map[string]*bucket)
	}
	b := s.buckets[typ]
	if b == nil {
		b = &bucket{}
		s.buckets[typ] = b
	}
	b.refill(s.clock())
	return b
}

// Wants reports whether an event of type typ would be written now: a
// caller can skip gathering what a dropped event would carry.
func (s *Sink) Wants(typ string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bucket(typ).tokens >= 1
}

// admit takes a token for an event of type typ, or counts it as
// suppressed. Caller holds s.mu.
func (s *Sink) admit(typ string) bool {
	if typ == Suppressed {
		return true
	}
	b := s.bucket(typ)
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	b.suppressed++
	if s.flushTimer == nil {
		s.flushTimer = time.AfterFunc(flushAfter, s.Flush)
	}
	return false
}

// Flush writes a "suppressed" event for every type that had events
// dropped since the last one. Call it before the sink's writers close.
func (s *Sink) Flush() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flushTimer != nil {
		s.flushTimer.Stop()
		s.flushTimer = nil
	}
	s.flushLocked()
}

// flushLocked writes the pending "suppressed" events. Caller holds s.mu.
func (s *Sink) flushLocked() {
	for _, typ := range []string{Recovered, Crash, Error, Attached, Detached} {
		b := s.buckets[typ]
		if b == nil || b.suppressed == 0 {
			continue
		}
		s.write(Event{Type: Suppressed, Count: b.suppressed, Message: typ})
		b.suppressed = 0
	}
}

// logType is the rate-limit bucket of diagnostic lines (LimitLog).
const logType = "log"

// LimitLog returns a writer that passes whole lines to w under the same
// rate limit as events of one type, so that the supervisor's diagnostic
// lines are bounded too; the number dropped is written before the next
// line that passes.
func (s *Sink) LimitLog(w io.Writer) io.Writer { return &limitedLog{s: s, w: w} }

type limitedLog struct {
	s *Sink
	w io.Writer
}

func (l *limitedLog) Write(p []byte) (int, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	b := l.s.bucket(logType)
	if b.tokens < 1 {
		b.suppressed++
		return len(p), nil
	}
	b.tokens--
	if b.suppressed > 0 {
		fmt.Fprintf(l.w, "assure: suppressed %d log lines (rate limit: %d at once, then %d per second)\n", b.suppressed, Burst, PerSecond)
		b.suppressed = 0
	}
	return l.w.Write(p)
}
