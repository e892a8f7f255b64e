package discover

import (
	"fmt"

	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/manifest"
)

// nestShare is the share of an outer candidate's calls that must reach an
// accepted inner one for the inner one alone to be kept.
const nestShare = 0.9

// keep picks, of the accepted candidates, those that go in the manifest.
// One whose faulting workload run passed as well is left out unless
// keepMasked: the error did not reach the client, so the value is likely
// a normal result ("not found", "try again") and the faulty request would
// get a wrong answer instead of failing. One whose calls nearly all reach
// an accepted inner one is dropped for it (the inner one undoes less)
// unless nested; the others are kept, nesting or not (rescue points nest).
// It returns nil when none is kept.
func keep(hot []*Verdict, nested, keepMasked bool) *manifest.Manifest {
	byProbe := map[int]*Verdict{}
	for _, v := range hot {
		if v.Accepted && (keepMasked || !v.Masked) {
			byProbe[v.probe] = v
		}
	}
	var kept []candidates.Candidate
	for _, v := range hot {
		if !v.Accepted {
			continue
		}
		if v.Masked && !keepMasked {
			v.Dropped = "the workload run with the fault passed too: the error return did not reach the client, so the value looks like a normal result (\"not found\", \"try again\"), not an error (--keep-masked keeps it)"
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
		if v.saturated || in.saturated {
			// Counted only up to the probes' limit: how many of v's
			// calls reach in is not known (a SET never reaches the GET
			// handler its command dispatcher also calls).
			continue
		}
		if n := in.outerCounts[v.probe]; float64(n) >= nestShare*float64(v.hits) {
			return in
		}
	}
	return nil
}
