package discover

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// rssSlackKiB is how much more resident memory a program may hold after
// a recovery than before it (allocators keep what they were given).
const rssSlackKiB = 4 << 10

// injectTries is how many workload runs an injection may wait to be
// reached before the place is moved to the function's second instruction.
const injectTries = 3

// triage tests each hot candidate, while the budget lasts.
func (d *run) triage(ctx context.Context, hot []*Verdict) {
	var spent time.Duration // by the tests so far
	for i, v := range hot {
		// A test that would end past the budget is not started.
		if left := time.Until(d.deadline); ctx.Err() != nil || left <= 0 || i > 0 && left < spent/time.Duration(i) {
			d.progress("triage: budget spent; %d of %d hot candidates not tested", len(hot)-i, len(hot))
			return
		}
		t0 := time.Now()
		if d.cfg.Pid != 0 {
			// A running process carries what earlier tests did to it.
			if err := d.stillServes(ctx); err != nil {
				d.stopped = err.Error()
				d.progress("triage: %v; %d of %d hot candidates not tested", err, len(hot)-i, len(hot))
				return
			}
		}
		d.test(ctx, v)
		spent += time.Since(t0)
		verdict := "rejected: " + v.Reason
		if v.Accepted {
			verdict = "accepted: " + v.Evidence
		}
		d.progress("triage %d/%d: %s in %s: %s", i+1, len(hot), v.Candidate.Label(), v.Candidate.Binary, verdict)
	}
}

// test runs a fresh instance of the program with v's candidate as its
// only rescue point and makes one of its calls fault.
func (d *run) test(ctx context.Context, v *Verdict) {
	v.Triaged = true
	c := v.Candidate
	sym := d.syms[c.Binary]
	at, where, err := injectionPlace(d.read(c.Binary), sym, c.Address)
	if err != nil {
		v.Reason = "no place to make it fault: " + err.Error()
		return
	}
	in, err := d.start(rescueManifest(c), nil)
	if err != nil {
		v.Reason = err.Error()
		return
	}
	defer in.stop()
	if err := d.waitUp(ctx, in); err != nil {
		v.Reason = "with it armed, " + err.Error()
		return
	}
	// One more run, so that what the workload allocates once is there.
	if err := d.workload(ctx); err != nil {
		v.Reason = "with it armed, the workload fails: " + err.Error()
		return
	}
	base, err := quiet(in.sup.RootPid())
	if err != nil {
		v.Reason = err.Error()
		return
	}
	fired, masked := d.fire(ctx, in, c.Binary, at)
	if !fired {
		second, err := secondInstruction(d.read(c.Binary), sym, c.Address)
		if err == nil && second != at {
			at, where = second, "at the second instruction (the place after the first call was not reached)"
			fired, masked = d.fire(ctx, in, c.Binary, second)
		}
	}
	v.Masked = masked
	if !fired {
		v.Reason = fmt.Sprintf("the workload never reached the place to fault (%#x, %s)", at, where)
		return
	}
	d.judge(ctx, v, in, base, fmt.Sprintf("fault %s (%#x)", where, at))
}

// fire arms an injection at at and runs the workload until it fired; it
// reports whether it did, and whether the run it fired in passed anyway.
func (d *run) fire(ctx context.Context, in *instance, binary string, at uint64) (fired, passed bool) {
	n := in.sup.InjectionsFired()
	in.sup.Inject(supervisor.Injection{Binary: binary, Address: at})
	for i := 0; i < injectTries && in.alive(); i++ {
		err := d.workload(ctx) // the faulting request may fail: that is the point
		if in.sup.InjectionsFired() > n {
			return true, err == nil
		}
	}
	return in.sup.InjectionsFired() > n, false
}

// judge decides on v once its fault was made: recovered, still running,
// the workload passing, and nothing held that was not before.
func (d *run) judge(ctx context.Context, v *Verdict, in *instance, base usage, fault string) {
	if crashes := in.evs.of(events.Crash); len(crashes) > 0 {
		v.Reason = fmt.Sprintf("%s was not recovered: %s", fault, events.Format(crashes[0]))
		return
	}
	rec := in.evs.of(events.Recovered)
	if len(rec) == 0 {
		if !in.alive() {
			v.Reason = fmt.Sprintf("%s: the program died (status %d)", fault, in.status)
		} else {
			v.Reason = fault + " was made, but the supervisor reported neither a recovery nor a crash (the program handled the signal itself?)"
		}
		return
	}
	err := d.workload(ctx)
	if err != nil {
		// The program may be on its way out (exit after the error
		// return): that is the reason, not the workload's failure.
		select {
		case <-in.exited:
		case <-time.After(time.Second):
		}
	}
	if !in.alive() {
		v.Reason = fmt.Sprintf("%s was recovered, but the program then exited (status %d): its callers do not survive the error return", fault, in.status)
		return
	}
	if err != nil {
		v.Reason = fmt.Sprintf("%s was recovered, but then %v", fault, err)
		return
	}
	after, ok := settle(in, base)
	if !ok {
		v.Reason = fmt.Sprintf("%s was recovered, but the program holds more than before: %v, was %v", fault, after, base)
		return
	}
	r := rec[0]
	v.Accepted = true
	v.Evidence = fmt.Sprintf("%s recovered in %d µs (%d pages restored); the workload passed after it; %v before and after",
		fault, r.RecoveryMicros, r.PagesRestored, after)
	if v.Masked {
		v.Evidence += "; the run with the fault passed too: check that the value is an error, not a normal result"
	}
}

// settle waits a moment for the program's usage to return to base (a
// connection the workload closed is gone from the server a little after
// the client exits).
func settle(in *instance, base usage) (usage, bool) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		u, err := treeUsage(in.sup.RootPid())
		if err == nil && base.within(u, rssSlackKiB) {
			return u, true
		}
		if time.Now().After(deadline) || err != nil {
			return u, false
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

// rescueManifest is the manifest with c as its only rescue point.
func rescueManifest(c candidates.Candidate) *manifest.Manifest {
	m, err := manifestOf([]candidates.Candidate{c}, triageRecoveries)
	if err != nil {
		panic(err) // built from a candidate: always valid
	}
	return m
}

// triageRecoveries bounds the recoveries of a triage run.
const triageRecoveries = 10

// manifestOf builds a version 1 manifest of cs, through Parse so that it
// holds exactly what a manifest file of it would (default signals).
func manifestOf(cs []candidates.Candidate, maxRecoveries int) (*manifest.Manifest, error) {
	type entry struct {
		Binary   string `json:"binary"`
		Function string `json:"function,omitempty"`
		Address  string `json:"address,omitempty"`
		Return   int64  `json:"return"`
	}
	doc := struct {
		Version       int     `json:"version"`
		RescuePoints  []entry `json:"rescuePoints"`
		MaxRecoveries int     `json:"maxRecoveries"`
	}{Version: manifest.Version, MaxRecoveries: maxRecoveries, RescuePoints: []entry{}}
	for _, c := range cs {
		e := entry{Binary: c.Binary, Function: c.Function, Return: *c.Return}
		if c.Function == "" {
			e.Address = fmt.Sprintf("0x%x", c.Address)
		}
		doc.RescuePoints = append(doc.RescuePoints, e)
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return manifest.Parse(data)
}
