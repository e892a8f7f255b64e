package discover

import (
	"fmt"

	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/manifest"
)

// nestShare is the share of an outer candidate's calls that must reach an
// accepted inner one for the inner one alone to be kept.
const nestShare = 0.9

// keep picks, of the accepted candidates, those that go in the manifest:
// an accepted candidate whose calls nearly all reach an accepted inner
// one is dropped for it (the inner one undoes less, and the outer one's
// callers are its callers' business); the others are kept, nesting or
// not (nested rescue points work); with nested, every accepted one is.
// It returns nil when none is kept.
func keep(hot []*Verdict, nested bool) *manifest.Manifest {
	byProbe := map[int]*Verdict{}
	for _, v := range hot {
		if v.Accepted {
			byProbe[v.probe] = v
		}
	}
	var kept []candidates.Candidate
	for _, v := range hot {
		if !v.Accepted {
			continue
		}
		if inner := coveringInner(v, hot, byProbe); inner != nil && !nested {
			v.Dropped = fmt.Sprintf("its calls reach %s, accepted and inner, which is kept instead (%s was called %d times inside its %d calls)",
				inner.Candidate.Label(), inner.Candidate.Label(), inner.outerCounts[v.probe], v.hits)
			continue
		}
		v.Kept = true
		kept = append(kept, v.Candidate)
	}
	if len(kept) == 0 {
		return nil
	}
	m, err := manifestOf(kept, manifest.DefaultMaxRecoveries)
	if err != nil {
		return nil
	}
	return m
}

// coveringInner returns an accepted candidate that v calls on nearly all
// of v's calls, if there is one.
func coveringInner(v *Verdict, hot []*Verdict, accepted map[int]*Verdict) *Verdict {
	for _, in := range hot {
		if in == v || !in.Accepted || accepted[in.probe] == nil || v.hits == 0 {
			continue
		}
		if v.outerCounts[in.probe] > 0 {
			continue // each calls the other (recursion): neither is inner
		}
		if n := in.outerCounts[v.probe]; float64(n) >= nestShare*float64(v.hits) {
			return in
		}
	}
	return nil
}
