package learned

import (
	"strings"
	"testing"

	"github.com/assure-rt/assure/recovery/manifest"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

func entry(fn string, image string) Entry {
	ret := int64(-1)
	return Entry{RescuePoint: manifest.RescuePoint{Binary: "/usr/bin/server", Function: fn, Return: &ret, Scope: manifest.ScopeProcess},
		Image: image, Time: "2026-12-02T07:00:00Z", Container: "c1", Signal: "SIGSEGV"}
}

func TestRoundTrip(t *testing.T) {
	e := entry("handle", digestA)
	byAddr := entry("", digestA)
	byAddr.RescuePoint.Function, byAddr.RescuePoint.Address, byAddr.RescuePoint.HasAddress = "", 0x1a2b0, true
	for _, e := range []Entry{e, byAddr} {
		k, v, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k, Prefix) {
			t.Fatalf("key %q", k)
		}
		got, err := Decode(k, v)
		if err != nil {
			t.Fatalf("Decode(%s): %v", v, err)
		}
		if got.RescuePoint.Key() != e.RescuePoint.Key() || *got.RescuePoint.Return != -1 || got.Image != e.Image || got.Container != "c1" {
			t.Fatalf("got %+v, want %+v", got, e)
		}
	}
}

func TestOf(t *testing.T) {
	labels := map[string]string{"unrelated": "x"}
	for _, e := range []Entry{entry("b", digestA), entry("a", digestA), entry("old", digestB)} {
		k, v, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		labels[k] = v
	}
	_, good, _ := Encode(entry("c", digestA))
	labels[Prefix+"bad-json"] = "{"
	labels[Prefix+"moved"] = good // a valid value under another key
	labels[Key(entry("d", digestA).RescuePoint)] = `{"image":"sha256:x","rescuePoint":{"binary":"/b","function":"d"}}`
	labels[Key(entry("e", digestA).RescuePoint)] = `{"image":"` + digestA + `","rescuePoint":{"binary":"rel/b","function":"e"}}`
	s := Of(labels, digestA)
	if len(s.Entries) != 2 || len(s.Stale) != 1 || s.Stale[0].RescuePoint.Function != "old" {
		t.Fatalf("entries %v stale %v", s.Entries, s.Stale)
	}
	if Key(s.Entries[0].RescuePoint) > Key(s.Entries[1].RescuePoint) {
		t.Errorf("entries not in key order")
	}
	want := []string{"invalid JSON", "whose key is", "not a sha256 digest", `field "binary"`}
	if len(s.Problems) != len(want) {
		t.Fatalf("problems %v", s.Problems)
	}
	all := ""
	for _, p := range s.Problems {
		all += p.Error() + "\n"
	}
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("problems %q lack %q", all, w)
		}
	}
	if _, err := Manifest(s.Entries); err != nil {
		t.Fatal(err)
	}
}

func TestEncodeTooLarge(t *testing.T) {
	e := entry(strings.Repeat("f", 5000), digestA)
	if _, _, err := Encode(e); err == nil || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("err = %v", err)
	}
}
