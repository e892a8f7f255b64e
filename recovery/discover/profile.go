package discover

import (
	"context"
	"fmt"
	"time"

	"github.com/assure-rt/assure/recovery/supervisor"
)

// profile runs the program with a probe on every candidate and returns
// the candidates the workload reached.
func (d *run) profile(ctx context.Context) ([]*Verdict, error) {
	in, err := d.start(nil, d.probes())
	if err != nil {
		return nil, err
	}
	defer in.stop()
	t0 := time.Now()
	if err := d.waitUp(ctx, in); err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	// What the start-up and the first runs called is not the request
	// path, and a busy function's probe may have reached its limit there.
	if !in.sup.ResetProbes() {
		return nil, fmt.Errorf("profile: the program exited (status %d)", in.status)
	}
	for i := 0; i < d.cfg.ProfileRuns; i++ {
		if err := d.workload(ctx); err != nil {
			return nil, fmt.Errorf("profile: run %d of the workload with probes: %w", i+1, err)
		}
	}
	hot := d.hot(in.sup.ProbeStats())
	d.progress("profile: %d of %d candidates reached by %d workload runs (%v)", len(hot), len(d.cands), d.cfg.ProfileRuns,
		time.Since(t0).Round(time.Millisecond))
	return hot, nil
}

// hot turns the probes' counts into verdicts for the reached candidates.
func (d *run) hot(after []supervisor.ProbeStat) []*Verdict {
	runs := float64(d.cfg.ProfileRuns)
	byProbe := map[int]*Verdict{}
	var hot []*Verdict
	for i, st := range after {
		if st.Hits == 0 {
			continue
		}
		v := &Verdict{Candidate: d.cands[i], probe: i, CallsPerRun: float64(st.Hits) / runs,
			Saturated: st.Hits >= supervisor.DefaultProbeHits, Depth: float64(st.Depth) / float64(st.Hits)}
		byProbe[i] = v
		hot = append(hot, v)
	}
	for _, v := range hot {
		for outer, n := range after[v.probe].Outer {
			if o := byProbe[outer]; o != nil && n > 0 {
				v.Outer = append(v.Outer, o.Candidate.Label())
			}
		}
	}
	for _, v := range hot {
		v.outerCounts = map[int]int{}
		for outer, n := range after[v.probe].Outer {
			v.outerCounts[outer] = n
		}
		v.hits = after[v.probe].Hits
		v.saturated = v.Saturated
	}
	sortHot(hot)
	return hot
}
