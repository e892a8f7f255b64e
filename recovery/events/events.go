// Package events reports what the supervisor does: a readable line on
// stderr for recoveries and crashes, and JSON lines for machines.
package events

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Types of events.
const (
	Recovered = "recovered"
	Crash     = "crash"
	Attached  = "attached"
	Detached  = "detached"
	Error     = "error"
	// Armed and Disarmed: a rescue point was added to or taken out of a
	// running supervisor (assure arm, assure disarm).
	Armed    = "armed"
	Disarmed = "disarmed"
	// Learned: a crash armed a rescue point (manifest "heal").
	Learned = "learned"
	// Suppressed counts the events of one type (Message) the rate limit
	// dropped (Count).
	Suppressed = "suppressed"
)

// Kinds of recovery (Event.Recovery).
const (
	// RecoveryRollback: memory and registers rolled back to the rescue
	// point's entry, which then returned its error value.
	RecoveryRollback = "rollback"
	// RecoveryReturn: the first fault in a healing candidate (manifest
	// heal.firstFault "return"): its frame unwound and its error value
	// returned, with no rollback: what it wrote before the fault stays.
	RecoveryReturn = "return"
)

// RescuePoint identifies the rescue point an event concerns.
type RescuePoint struct {
	Binary   string `json:"binary"`
	Function string `json:"function,omitempty"`
	Address  string `json:"address"`
}

// Event is one line of the events file. The field names are a public
// interface (README "Events").
type Event struct {
	Time      string `json:"time"`
	Type      string `json:"type"`
	Container string `json:"container,omitempty"`
	Pid       int    `json:"pid,omitempty"`
	Tid       int    `json:"tid,omitempty"`
	Signal    string `json:"signal,omitempty"`
	// SignalCode is si_code by name: how the signal came ("SEGV_MAPERR",
	// "SI_TKILL" for raise/abort/pthread_kill, "SI_USER" for kill).
	SignalCode string `json:"signalCode,omitempty"`
	// SenderPid is the pid (in the receiver's PID namespace) of the
	// process that sent the signal, for signals sent by a process.
	SenderPid int `json:"senderPid,omitempty"`
	// FaultAddress is set only for faults that have one.
	FaultAddress string       `json:"faultAddress,omitempty"`
	RescuePoint  *RescuePoint `json:"rescuePoint,omitempty"`
	Return       *int64       `json:"return,omitempty"`
	// Recovery says how a recovered event recovered: RecoveryRollback
	// or RecoveryReturn.
	Recovery            string   `json:"recovery,omitempty"`
	RecoveryMicros      int64    `json:"recoveryMicros"`
	PagesRestored       int      `json:"pagesRestored"`
	ThreadsRolledBack   int      `json:"threadsRolledBack"`
	ProcessesRolledBack int      `json:"processesRolledBack"`
	Stack               []string `json:"stack,omitempty"`
	Message             string   `json:"message,omitempty"`
	Count               int      `json:"count,omitempty"`
}

// Sink writes events. It is safe for concurrent use.
type Sink struct {
	// Container, when set, is stamped on every event.
	Container string
	mu        sync.Mutex
	human     io.Writer // stderr; nil for none
	json      io.Writer // events file; nil for none
	stamp     func() time.Time
	// clock drives the rate limit (limit.go).
	clock      func() time.Time
	buckets    map[string]*bucket
	flushTimer *time.Timer
}

// NewSink returns a sink writing readable lines to human and JSON lines
// to jsonOut; either may be nil.
func NewSink(human, jsonOut io.Writer) *Sink {
	return &Sink{human: human, json: jsonOut, stamp: time.Now, clock: time.Now}
}

// Emit writes one event, filling in its time, unless the rate limit of
// its type drops it (counted in a later "suppressed" event).
func (s *Sink) Emit(e Event) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.admit(e.Type) {
		return
	}
	// What was dropped is counted before the next event of the type.
	if b := s.buckets[e.Type]; b != nil && b.suppressed > 0 {
		s.flushLocked()
	}
	s.write(e)
}

// write writes one event. Caller holds s.mu.
func (s *Sink) write(e Event) {
	if e.Time == "" {
		e.Time = s.stamp().UTC().Format(time.RFC3339Nano)
	}
	if e.Container == "" {
		e.Container = s.Container
	}
	if s.json != nil {
		if b, err := json.Marshal(e); err == nil {
			s.json.Write(append(b, '\n'))
		}
	}
	if s.human != nil {
		if line := Format(e); line != "" {
			fmt.Fprintln(s.human, line)
		}
	}
}

// Begin notes, in the journal of the events file when the sink writes
// one (File), that what has begun; the function returned ends it. A
// supervisor that dies in between leaves the note for the next one
// (TakeJournal).
func (s *Sink) Begin(what string) func() {
	if s == nil {
		return func() {}
	}
	if f, ok := s.json.(*File); ok {
		return f.Begin(what)
	}
	return func() {}
}

// Format renders the readable line for an event.
func Format(e Event) string {
	switch e.Type {
	case Recovered:
		ret := "returned (void)"
		if e.Return != nil {
			ret = fmt.Sprintf("returned %d", *e.Return)
		}
		if e.Recovery == RecoveryReturn {
			return fmt.Sprintf("assure: %srecovered %s in %s pid %d tid %d: %s after %dµs, without a rollback (first fault; %s)",
				in(e.Container), e.Signal, rpName(e.RescuePoint), e.Pid, e.Tid, ret, e.RecoveryMicros, e.Message)
		}
		return fmt.Sprintf("assure: %srecovered %s in %s pid %d tid %d: %s after %dµs (%d pages, %d threads, %d processes)",
			in(e.Container), e.Signal, rpName(e.RescuePoint), e.Pid, e.Tid, ret, e.RecoveryMicros,
			e.PagesRestored, e.ThreadsRolledBack, e.ProcessesRolledBack)
	case Crash:
		s := fmt.Sprintf("assure: %scrash: %s pid %d tid %d at %s: %s", in(e.Container), e.Signal, e.Pid, e.Tid, e.FaultAddress, e.Message)
		for _, f := range e.Stack {
			s += "\n    " + f
		}
		return s
	case Error:
		return fmt.Sprintf("assure: %serror: pid %d: %s", in(e.Container), e.Pid, e.Message)
	case Suppressed:
		return fmt.Sprintf("assure: %ssuppressed %d %s events (rate limit: %d at once, then %d per second)",
			in(e.Container), e.Count, e.Message, Burst, PerSecond)
	case Learned:
		s := fmt.Sprintf("assure: %slearned %s from a %s at %s", in(e.Container), rpName(e.RescuePoint), e.Signal, e.FaultAddress)
		if e.Message != "" {
			return s + ": " + e.Message
		}
		return s + ": armed from now on"
	case Armed, Disarmed:
		return fmt.Sprintf("assure: %s%s %s", in(e.Container), e.Type, rpName(e.RescuePoint))
	case Attached, Detached:
		return fmt.Sprintf("assure: %s%s pid %d%s", in(e.Container), e.Type, e.Pid, suffix(e.Message))
	}
	return ""
}

// in prefixes a line with the container it concerns.
func in(container string) string {
	if container == "" {
		return ""
	}
	return "container " + container + ": "
}

func suffix(m string) string {
	if m == "" {
		return ""
	}
	return ": " + m
}

func rpName(r *RescuePoint) string {
	if r == nil {
		return "?"
	}
	name := r.Function
	if name == "" {
		name = r.Address
	}
	return fmt.Sprintf("%s (%s)", name, r.Binary)
}
