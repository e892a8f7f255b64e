package candidates

import (
	"sort"
	"strconv"
)

// startupNames are refused by name: nothing that handles errors calls
// them (elfsym.CheckRescuePoint refuses them too; the separate reason
// makes the report readable).
var startupNames = map[string]bool{"_start": true, "_init": true, "_fini": true}

// report turns the evidence into the Report: each function becomes a
// candidate or gets the first Reason that applies.
func (a *analysis) report() *Report {
	rep := &Report{
		Binary:     a.sym.Name(),
		PIE:        a.sym.PIE(),
		Functions:  len(a.funcs),
		Dropped:    make(map[Reason]int),
		Imports:    a.imports,
		Stats:      a.stats,
		Incomplete: a.note,
		reasons:    make([]funcReason, len(a.funcs)),
	}
	for i := range a.funcs {
		c, reason := a.decide(i)
		rep.reasons[i] = funcReason{addr: a.funcs[i].Addr, reason: reason}
		if reason != "" {
			rep.Dropped[reason]++
			if reason == ReasonNoDirectCallers {
				rep.NoDirectCallers = append(rep.NoDirectCallers, Function{Name: a.funcs[i].Name, Address: a.funcs[i].Addr})
			}
			continue
		}
		rep.Candidates = append(rep.Candidates, c)
	}
	sortCandidates(rep.Candidates)
	return rep
}

// decide returns function i's candidate, or why it is not one.
func (a *analysis) decide(i int) (Candidate, Reason) {
	f := a.funcs[i]
	if a.reason[i] == ReasonPLT {
		return Candidate{}, ReasonPLT
	}
	if a.isStartup(i) {
		return Candidate{}, ReasonStartup
	}
	if err := a.sym.CheckRescuePoint(f.Addr); err != nil {
		return Candidate{}, ReasonRefused
	}
	if a.reason[i] != "" {
		return Candidate{}, a.reason[i]
	}
	ev, rs := a.ev[i], &a.rets[i]
	switch {
	case ev == nil || ev.Sites == 0 && ev.Tail == 0:
		return Candidate{}, ReasonNoDirectCallers
	case ev.Sites == 0:
		return Candidate{}, ReasonTailCallsOnly
	case ev.Checked() == 0 && ev.WeakChecked() == 0:
		return Candidate{}, ReasonUnchecked
	}
	inf, ok := infer(ev, rs)
	if !ok {
		return Candidate{}, ReasonNoErrorValue
	}
	v := inf.value
	return Candidate{
		Binary: a.sym.Name(), Function: f.Name, Address: f.Addr,
		Return: &v, Confidence: inf.conf,
		ReturnEvidence: evidenceText(inf, ev, rs),
		CallSites:      ev.Sites, CheckedSites: ev.Checked() + ev.WeakChecked(),
		Callers: *ev, Returns: *rs,
	}, ""
}

// isStartup reports _start, _init, _fini, the entry point, and anything
// in .init or .fini.
func (a *analysis) isStartup(i int) bool {
	f := a.funcs[i]
	if startupNames[f.Name] || (a.img.entry != 0 && f.Addr == a.img.entry) {
		return true
	}
	s := a.img.section(f.Addr)
	return s != nil && (s.name == ".init" || s.name == ".fini")
}

// sortCandidates orders by confidence, then the number of checked call
// sites, then the share of call sites checked, then address, so that the
// order is deterministic.
func sortCandidates(cs []Candidate) {
	sort.Slice(cs, func(i, j int) bool {
		a, b := &cs[i], &cs[j]
		if a.Confidence != b.Confidence {
			return a.Confidence > b.Confidence
		}
		if a.CheckedSites != b.CheckedSites {
			return a.CheckedSites > b.CheckedSites
		}
		// a.Checked/a.Sites > b.Checked/b.Sites, without division.
		if l, r := a.CheckedSites*b.CallSites, b.CheckedSites*a.CallSites; l != r {
			return l > r
		}
		return a.Address < b.Address
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
