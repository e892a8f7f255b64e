package candidates

import (
	"strings"
	"testing"

	"github.com/assure-rt/assure/recovery/manifest"
)

// toRescuePoint is how a caller writes a candidate into a manifest: by
// name, or by address when the file is stripped.
func toRescuePoint(c Candidate) manifest.RescuePoint {
	rp := manifest.RescuePoint{Binary: c.Binary, Function: c.Function, Return: c.Return, Scope: manifest.ScopeProcess}
	if c.Function == "" {
		rp.Address, rp.HasAddress = c.Address, true
	}
	return rp
}

// TestManifestEntries writes the candidates of a built program into a
// manifest and reads it back: the entries are valid, by name for the
// unstripped build and by address for the stripped one.
func TestManifestEntries(t *testing.T) {
	buildAll(t)
	for _, v := range builds.variants[:2] {
		rep, err := Find(v.path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var rps []manifest.RescuePoint
		for _, c := range rep.Candidates {
			rps = append(rps, toRescuePoint(c))
		}
		m := manifest.Manifest{Version: manifest.Version, RescuePoints: rps,
			Signals: manifest.DefaultSignals(), MaxRecoveries: manifest.DefaultMaxRecoveries}
		data, err := m.JSON()
		if err != nil {
			t.Fatal(err)
		}
		back, err := manifest.Parse(data)
		if err != nil {
			t.Fatalf("%s\n%s", err, data)
		}
		for _, rp := range back.RescuePoints {
			if (v.unstripped != "") != rp.HasAddress {
				t.Errorf("%s: %s by address %v", v.name, rp, rp.HasAddress)
			}
		}
		if v.unstripped == "" && !strings.Contains(string(data), `"function": "parse"`) {
			t.Errorf("no entry for parse:\n%s", data)
		}
		t.Logf("%s:\n%s", v.name, data)
	}
}
