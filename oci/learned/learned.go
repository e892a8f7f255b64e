// Package learned keeps the rescue points a container's crashes taught
// (manifest "heal") on its image's record in containerd's metadata, so
// that every later container of that image on the node has them armed
// from its first instruction.
//
// Each rescue point is one label of the image record, keyed by a hash of
// its binary and function (Key): containerd updates labels one key at a
// time (an update mask of "labels.KEY"), so two containers of the image
// that learn at the same moment never overwrite each other, and no single
// label outgrows containerd's 4 KiB limit however many are learned. The
// value names the image digest the rescue point was learned in: a name
// that a later pull points at another image keeps its labels, and they
// are ignored there (Stale), so learned rescue points never cross from
// one image to another.
//
// Labels are written by the shim alone, as root, through containerd's
// API: anyone who may label images in the namespace may also run any
// container there. Their values are still checked like an image's
// manifest before use (Decode, and the supervisor resolves them against
// the container's own binaries), and one that does not pass is ignored,
// never a failed start.
package learned

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/assure-rt/assure/oci"
	"github.com/assure-rt/assure/recovery/manifest"
)

// Prefix starts the key of every learned label.
const Prefix = "dev.assure.learned."

// Entry is one learned rescue point.
type Entry struct {
	RescuePoint manifest.RescuePoint
	// Image is the digest of the image (the record's target) it was
	// learned in.
	Image string
	// Time, Container and Signal say when and where it was learned, for
	// the operator who reviews it.
	Time, Container, Signal string
}

type value struct {
	Image       string          `json:"image"`
	RescuePoint json.RawMessage `json:"rescuePoint"`
	Time        string          `json:"time,omitempty"`
	Container   string          `json:"container,omitempty"`
	Signal      string          `json:"signal,omitempty"`
}

// Key is the label key of rp: the same rescue point learned twice is one
// label.
func Key(rp manifest.RescuePoint) string {
	sum := sha256.Sum256([]byte(rp.Key()))
	return Prefix + hex.EncodeToString(sum[:8])
}

// Encode returns the label of e.
func Encode(e Entry) (key, val string, err error) {
	rp, err := manifest.EntryJSON(e.RescuePoint)
	if err != nil {
		return "", "", err
	}
	data, err := json.Marshal(value{Image: e.Image, RescuePoint: rp, Time: e.Time, Container: e.Container, Signal: e.Signal})
	if err != nil {
		return "", "", fmt.Errorf("encode learned %s: %w", e.RescuePoint, err)
	}
	key = Key(e.RescuePoint)
	if err := oci.CheckLabelSize(key, string(data)); err != nil {
		return "", "", err
	}
	return key, string(data), nil
}

// Decode reads the learned label key=val, checked as a manifest's entry
// is, and refused when its key is not the one its rescue point has (a
// label written by hand, or copied from another entry).
func Decode(key, val string) (Entry, error) {
	var v value
	dec := json.NewDecoder(strings.NewReader(val))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return Entry{}, fmt.Errorf("label %s: invalid JSON: %w", key, err)
	}
	if !strings.HasPrefix(v.Image, "sha256:") || len(v.Image) != len("sha256:")+64 {
		return Entry{}, fmt.Errorf("label %s: field \"image\": not a sha256 digest: %q", key, v.Image)
	}
	if len(v.RescuePoint) == 0 {
		return Entry{}, fmt.Errorf("label %s: field \"rescuePoint\": required", key)
	}
	rp, err := manifest.ParseEntry(v.RescuePoint)
	if err != nil {
		return Entry{}, fmt.Errorf("label %s: %w", key, err)
	}
	if want := Key(rp); want != key {
		return Entry{}, fmt.Errorf("label %s: holds %s, whose key is %s", key, rp, want)
	}
	return Entry{RescuePoint: rp, Image: v.Image, Time: v.Time, Container: v.Container, Signal: v.Signal}, nil
}

// Set is what an image record's labels say was learned.
type Set struct {
	// Entries were learned in the image the record names now.
	Entries []Entry
	// Stale were learned in another image the name pointed at before.
	Stale []Entry
	// Problems are labels that do not decode (Decode's errors).
	Problems []error
}

// Of sorts the learned labels among labels, for an image record whose
// target is digest. Entries come in key order, so that every container
// arms them in the same order.
func Of(labels map[string]string, digest string) Set {
	var keys []string
	for k := range labels {
		if strings.HasPrefix(k, Prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var s Set
	for _, k := range keys {
		e, err := Decode(k, labels[k])
		switch {
		case err != nil:
			s.Problems = append(s.Problems, err)
		case e.Image != digest:
			s.Stale = append(s.Stale, e)
		default:
			s.Entries = append(s.Entries, e)
		}
	}
	return s
}

// RescuePoints returns the entries' rescue points.
func RescuePoints(es []Entry) []manifest.RescuePoint {
	out := make([]manifest.RescuePoint, len(es))
	for i, e := range es {
		out[i] = e.RescuePoint
	}
	return out
}

// Manifest returns a manifest of the entries' rescue points (the file the
// shim hands its supervisor), or nil for none.
func Manifest(es []Entry) ([]byte, error) {
	if len(es) == 0 {
		return nil, errors.New("no learned rescue points")
	}
	m := manifest.Empty()
	m.RescuePoints = RescuePoints(es)
	return m.JSON()
}
