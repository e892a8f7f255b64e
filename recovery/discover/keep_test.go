package discover

import (
	"strings"
	"testing"

	"github.com/assure-rt/assure/recovery/candidates"
)

func verdict(name string, probe, hits int, accepted bool, outer map[int]int) *Verdict {
	ret := int64(-1)
	return &Verdict{Candidate: candidates.Candidate{Binary: "/srv/app", Function: name, Return: &ret},
		probe: probe, hits: hits, Accepted: accepted, outerCounts: outer}
}

// TestKeep: an outer candidate whose calls nearly all reach an accepted
// inner one is dropped for it (unless nested); one whose calls mostly do
// not is kept beside it; a rejected inner one drops nothing; candidates
// that call each other drop neither.
func TestKeep(t *testing.T) {
	outer := verdict("handle", 0, 10, true, map[int]int{})
	inner := verdict("parse", 1, 10, true, map[int]int{0: 10})
	partial := verdict("dispatch", 2, 10, true, map[int]int{})
	rare := verdict("lookup", 3, 3, true, map[int]int{2: 3})
	rejectedInner := verdict("io", 4, 10, false, map[int]int{5: 10})
	keeper := verdict("loop", 5, 10, true, map[int]int{})
	a := verdict("even", 6, 10, true, map[int]int{7: 10})
	b := verdict("odd", 7, 10, true, map[int]int{6: 10})
	hot := []*Verdict{outer, inner, partial, rare, rejectedInner, keeper, a, b}
	m := keep(hot, false, false)
	kept := map[string]bool{}
	for _, rp := range m.RescuePoints {
		kept[rp.Function] = true
	}
	for name, want := range map[string]bool{"handle": false, "parse": true, "dispatch": true, "lookup": true,
		"io": false, "loop": true, "even": true, "odd": true} {
		if kept[name] != want {
			t.Errorf("%s kept %v, want %v", name, kept[name], want)
		}
	}
	if !strings.Contains(outer.Dropped, "parse") {
		t.Errorf("handle dropped for %q, want parse named", outer.Dropped)
	}
	if m := keep(hot, true, false); len(m.RescuePoints) != 7 {
		t.Errorf("nested: %d rescue points, want every accepted one (7)", len(m.RescuePoints))
	}
	if keep([]*Verdict{rejectedInner}, false, false) != nil {
		t.Error("a manifest without an accepted candidate")
	}
	// Capped counts say nothing about coverage: both stay.
	capOuter := verdict("dispatch2", 8, 200, true, map[int]int{})
	capInner := verdict("get", 9, 200, true, map[int]int{8: 200})
	capOuter.saturated, capInner.saturated = true, true
	if m := keep([]*Verdict{capOuter, capInner}, false, false); m == nil || len(m.RescuePoints) != 2 {
		t.Errorf("saturated nesting dropped one: %v", m)
	}
	// A masked one is left out unless asked for.
	masked := verdict("lookup2", 10, 5, true, map[int]int{})
	masked.Masked = true
	if keep([]*Verdict{masked}, false, false) != nil || !strings.Contains(masked.Dropped, "passed too") {
		t.Errorf("masked candidate kept, or dropped for %q", masked.Dropped)
	}
	if m := keep([]*Verdict{masked}, false, true); m == nil {
		t.Error("--keep-masked did not keep it")
	}
}

func TestUsageWithin(t *testing.T) {
	base := usage{procs: 1, fds: 7, threads: 2, rssKiB: 2048}
	for _, tc := range []struct {
		u    usage
		want bool
	}{
		{usage{1, 7, 2, 2048}, true},
		{usage{1, 6, 1, 2000}, true}, // a connection's thread gone: less is fine
		{usage{1, 8, 2, 2048}, false},
		{usage{2, 7, 2, 2048}, false},
		{usage{1, 7, 3, 2048}, false},
		{usage{1, 7, 2, 2048 + rssSlackKiB + 1}, false},
	} {
		if got := base.within(tc.u, rssSlackKiB); got != tc.want {
			t.Errorf("within(%v) = %v, want %v", tc.u, got, tc.want)
		}
	}
}

func TestEventLogLines(t *testing.T) {
	var l eventLog
	l.Write([]byte(`{"type":"recovered","pid":1}` + "\n" + `{"type":"cra`))
	l.Write([]byte(`sh","pid":2}` + "\n"))
	if n := len(l.of("recovered")); n != 1 {
		t.Errorf("%d recovered events, want 1", n)
	}
	if c := l.of("crash"); len(c) != 1 || c[0].Pid != 2 {
		t.Errorf("crash events %v, want one of pid 2 (a line written in two parts)", c)
	}
}
