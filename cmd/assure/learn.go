package main

import (
	"errors"
	"fmt"
	"github.com/containerd/containerd/pkg/atomicfile"
	"io"
	"io/fs"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/supervisor"
)

// learnFrom makes cfg remember what crashes teach in file (assure run
// --learn): file's rescue points, when it exists, are armed from the
// start (checked under root like the manifest's), and each learned one is
// added to it.
func learnFrom(cfg *supervisor.Config, file, root string) error {
	if cfg.Manifest.Heal == nil {
		return cli.Exit(`run: --learn needs a manifest with "heal" (what may be learned)`, 2)
	}
	var kept []manifest.RescuePoint
	if _, err := os.Stat(file); err == nil {
		m, err := manifest.Load(file)
		if err != nil {
			return cli.Exit("run: --learn: "+err.Error(), 1)
		}
		if _, _, err := checkManifest(os.Stderr, m, file, root); err != nil {
			return err
		}
		kept = m.RescuePoints
	}
	keepLearned(cfg, file, kept)
	return nil
}

// learnedFrom is learnFrom for a container's supervisor (assure supervise
// --learned), whose file the shim wrote from its image's learned labels:
// a rescue point of it that does not resolve in the container's binaries
// (a label tampered with) is left out with an error event, never a failed
// start; learning needs "heal" in the manifest, arming file's does not.
func learnedFrom(cfg *supervisor.Config, file, root string) {
	var kept []manifest.RescuePoint
	if m, err := manifest.Load(file); err == nil {
		for _, rp := range m.RescuePoints {
			one := manifest.Empty()
			one.RescuePoints = []manifest.RescuePoint{rp}
			if _, _, err := checkManifest(io.Discard, one, file, root); err != nil {
				cfg.Events.Emit(events.Event{Type: events.Error, Message: "learned rescue point ignored: " + err.Error()})
				continue
			}
			kept = append(kept, rp)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		cfg.Events.Emit(events.Event{Type: events.Error, Message: "learned rescue points ignored: " + err.Error()})
	}
	keepLearned(cfg, file, kept)
}

// keepLearned arms kept with cfg's manifest and adds each rescue point
// learned to file (only a manifest with "heal" learns).
func keepLearned(cfg *supervisor.Config, file string, kept []manifest.RescuePoint) {
	merged := *cfg.Manifest
	merged.RescuePoints = mergeRescuePoints(cfg.Manifest.RescuePoints, kept)
	cfg.Manifest = &merged
	cfg.OnLearn = func(rp manifest.RescuePoint) {
		kept = mergeRescuePoints(kept, []manifest.RescuePoint{rp})
		if err := writeLearned(file, kept); err != nil {
			fmt.Fprintf(os.Stderr, "assure: learned rescue points in %s: %v\n", file, err)
		}
	}
}

// mergeRescuePoints appends those of add that a has not (same binary and
// function or address).
func mergeRescuePoints(a, add []manifest.RescuePoint) []manifest.RescuePoint {
	out := append([]manifest.RescuePoint(nil), a...)
	for _, rp := range add {
		dup := false
		for _, o := range out {
			dup = dup || o.Binary == rp.Binary && o.Function == rp.Function && o.HasAddress == rp.HasAddress && o.Address == rp.Address
		}
		if !dup {
			out = append(out, rp)
		}
	}
	return out
}

// writeLearned replaces file with a manifest of rps, atomically.
func writeLearned(file string, rps []manifest.RescuePoint) error {
	m := manifest.Empty()
	m.RescuePoints = rps
	data, err := m.JSON()
	if err != nil {
		return err
	}
	f, err := atomicfile.New(file, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Cancel()
		return err
	}
	return f.Close()
}
