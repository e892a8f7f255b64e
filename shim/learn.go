package shim

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/namespaces"

	"github.com/assure-rt/assure/oci/learned"
	"github.com/assure-rt/assure/oci/learned/store"
	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/manifest"
)

// What a container's crashes teach (manifest "heal") is kept on its
// image's record in containerd (oci/learned): the shim hands the
// record's learned rescue points to the supervisor in a file of the
// bundle, which the supervisor arms from the first instruction and adds
// what it learns to; at each learned event the shim writes what is new
// in the file back to the record.

// learnedFile is the file of the bundle the supervisor reads learned
// rescue points from and writes learned ones to (assure supervise
// --learned).
func (sv *supervised) learnedFile() string { return filepath.Join(sv.bundle, "assure-learned.json") }

// handLearned writes the image's learned rescue points for the
// supervisor, and reports the labels that cannot be used as error events
// (a tampered label never fails the start).
func (sv *supervised) handLearned() error {
	sv.remembered = map[string]bool{}
	for _, e := range sv.learnt.Entries {
		sv.remembered[learned.Key(e.RescuePoint)] = true
	}
	for _, e := range sv.learnt.Stale {
		sv.log.Infof("assure: container %s: %s was learned in image %s, not this one (%s): not armed", sv.id, e.RescuePoint, e.Image, sv.digest)
	}
	os.Remove(sv.learnedFile()) // an earlier task's
	if len(sv.learnt.Entries) > 0 {
		data, err := learned.Manifest(sv.learnt.Entries)
		if err != nil {
			return err
		}
		if err := os.WriteFile(sv.learnedFile(), data, 0o600); err != nil {
			return err
		}
	}
	if len(sv.learnt.Problems) == 0 {
		return nil
	}
	f, err := events.OpenFile(sv.events, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	sink := events.NewSink(nil, f)
	sink.Container = sv.id
	for _, p := range sv.learnt.Problems {
		sink.Emit(events.Event{Type: events.Error, Message: "image " + sv.image + ": learned rescue point ignored: " + p.Error()})
	}
	sink.Flush()
	return nil
}

// remember writes the rescue points the supervisor learned, and the
// image's record has not, to the record. Called by the forwarder for each
// learned event e, after the supervisor wrote the file.
func (s *service) remember(sv *supervised, e events.Event) {
	m, err := manifest.Load(sv.learnedFile())
	if err != nil {
		sv.log.WithError(err).Warnf("assure: container %s: learned rescue points not kept for its image", sv.id)
		return
	}
	if sv.image == "" || sv.digest == "" {
		sv.log.Warnf("assure: container %s has no image record: what it learned is kept only while it runs", sv.id)
		return
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), sv.ns), 10*time.Second)
	defer cancel()
	st, err := store.Dial(s.address)
	if err != nil {
		sv.log.WithError(err).Warnf("assure: container %s: learned rescue points not kept for image %s", sv.id, sv.image)
		return
	}
	defer st.Close()
	for _, rp := range m.RescuePoints {
		key := learned.Key(rp)
		if sv.remembered[key] {
			continue
		}
		entry := learned.Entry{RescuePoint: rp, Image: sv.digest, Time: e.Time, Container: sv.id, Signal: e.Signal}
		if err := st.Remember(ctx, sv.image, entry); err != nil {
			sv.log.WithError(err).Warnf("assure: container %s: %s not kept for image %s", sv.id, rp, sv.image)
			continue
		}
		sv.remembered[key] = true
		sv.log.Infof("assure: container %s: %s kept for image %s (label %s)", sv.id, rp, sv.image, key)
	}
}

// flushLearned forwards what the shim's supervisors have written and not
// yet been read (their learned events among it), so that a container
// created right after another crashed sees what the crash taught.
func (s *service) flushLearned() {
	s.st.mu.Lock()
	var fws []*forwarder
	for _, sv := range s.st.containers {
		if sv.fwd != nil {
			fws = append(fws, sv.fwd)
		}
	}
	s.st.mu.Unlock()
	for _, fw := range fws {
		fw.poll()
	}
}
