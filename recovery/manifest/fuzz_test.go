package manifest

import (
	"reflect"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		example,
		rp0(`{"binary":"/b","function":"f"}`),
		rp0(`{"binary":"libc.so.6","address":"0x1a2b0","return":-1,"scope":"container"}`),
		`{"version":1,"rescuePoints":[{"binary":"/b","function":"f"}],"signals":["SIGTRAP"],"maxRecoveries":0}`,
		`{"version":2}`,
		`{"version":1,"rescuePoints":[{"binary":"/b","function":"f","address":"1"}]}`,
		`{"version":1,"Version":1}`,
		`{"version":1,"rescuePoints":[{"binary":"/b","function":"f"}]} {}`,
		`[`,
		``,
		"\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if m != nil {
				t.Fatalf("Parse returned both a manifest and %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		out, err := m.JSON()
		if err != nil {
			t.Fatalf("JSON() of a parsed manifest: %v", err)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(JSON()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}
