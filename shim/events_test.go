package shim

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/assure-rt/assure/recovery/events"
)

// The forwarder publishes each event once: across polls, with a line
// written in two halves, after the file is rotated under it, and not the
// attach/detach bookkeeping.
func TestForwarderOnceEach(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.jsonl")
	var got []string
	lg := logrus.New()
	lg.Out = io.Discard
	fw := &forwarder{path: path, log: logrus.NewEntry(lg), publish: func(topic string, e events.Event, line []byte) {
		got = append(got, fmt.Sprintf("%s %s", topic, eventLabels(e, line)["pid"]))
	}}
	fw.poll() // no file yet
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `{"type":"attached","pid":1}`)
	fmt.Fprintln(f, `{"type":"recovered","pid":2}`)
	fmt.Fprint(f, `{"type":"crash",`)
	fw.poll()
	fw.poll()
	fmt.Fprintln(f, `"pid":3}`)
	fmt.Fprintln(f, `{"type":"../../x","pid":4}`) // not a topic
	fmt.Fprintln(f, `not json`)
	fw.poll()
	// Rotation: a last line lands in the old file after the rename.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, `{"type":"recovered","pid":5}`)
	f.Close()
	if err := os.WriteFile(path, []byte(`{"type":"error","pid":6}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fw.poll()
	fw.poll()
	want := []string{"/assure/recovered 2", "/assure/crash 3", "/assure/recovered 5", "/assure/error 6"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("published %q, want %q", got, want)
	}
}

func TestEventLabels(t *testing.T) {
	line := []byte(`{"time":"t","type":"recovered","container":"c","pid":12,"signal":"SIGSEGV","rescuePoint":{"binary":"/b","function":"f","address":"0x10"},"recoveryMicros":42,"stack":["a","b"]}`)
	var e events.Event
	if err := json.Unmarshal(line, &e); err != nil {
		t.Fatal(err)
	}
	l := eventLabels(e, line)
	for k, want := range map[string]string{"type": "recovered", "container": "c", "pid": "12", "signal": "SIGSEGV",
		"rescuePoint.function": "f", "recoveryMicros": "42", "stack": "a\nb", "event": string(line)} {
		if l[k] != want {
			t.Errorf("label %s = %q, want %q", k, l[k], want)
		}
	}
}
