package candidates_test

import (
	"fmt"
	"path/filepath"

	"github.com/assure-rt/assure/recovery/candidates"
	"github.com/assure-rt/assure/recovery/manifest"
)

// Example turns candidates into manifest entries, as `assure discover`
// does before testing them: by name when the function has one, else by
// address (stripped files); the error value from the analysis. Only the
// well-supported ones are kept here; a real caller tests every entry by
// fault injection before writing it.
func Example() {
	rep, err := candidates.Find("/usr/bin/memcached", candidates.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var rps []manifest.RescuePoint
	for _, c := range rep.Candidates {
		if c.Confidence < candidates.High {
			continue
		}
		rp := manifest.RescuePoint{Binary: c.Binary, Function: c.Function, Return: c.Return, Scope: manifest.ScopeProcess}
		if c.Function == "" {
			rp.Address, rp.HasAddress = c.Address, true
		}
		rps = append(rps, rp)
	}
	m := manifest.Manifest{Version: manifest.Version, RescuePoints: rps[:min(len(rps), 2)],
		Signals: manifest.DefaultSignals(), MaxRecoveries: manifest.DefaultMaxRecoveries}
	data, err := m.JSON()
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := manifest.Parse(data); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(filepath.Base(rep.Binary), len(m.RescuePoints) > 0)
}
