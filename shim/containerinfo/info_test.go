package containerinfo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHandoffRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, ok := Read(dir); ok || Handed(dir) {
		t.Fatal("a hand-over in an empty bundle")
	}
	want := &Info{Labels: map[string]string{"dev.assure.manifest": `{"version":1}`, "a": "b"},
		Image: "x:1", Digest: "sha256:1", Learned: map[string]string{"dev.assure.learned.1": "{}"}}
	Write(dir, want)
	got, ok := Read(dir)
	if !ok || len(got.Labels) != 2 || got.Labels["a"] != "b" || got.Labels["dev.assure.manifest"] != want.Labels["dev.assure.manifest"] ||
		got.Image != "x:1" || got.Digest != "sha256:1" || got.Learned["dev.assure.learned.1"] != "{}" {
		t.Fatalf("Read = %+v, %v", got, ok)
	}
	os.WriteFile(filepath.Join(dir, handoffFile), []byte("not json"), 0o600)
	if _, ok := Read(dir); ok {
		t.Error("a malformed hand-over was read")
	}
}
