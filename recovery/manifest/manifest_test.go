package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const example = `{
  "version": 1,
  "rescuePoints": [
    {"binary": "/usr/bin/server", "function": "handle_request", "return": -1},
    {"binary": "libparse.so.1", "function": "parse_header", "return": 0, "scope": "container"},
    {"binary": "/usr/bin/server", "address": "0x1a2b0"}
  ],
  "signals": ["SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"],
  "maxRecoveries": 100
}`

func i64(v int64) *int64 { return &v }

func TestParseExample(t *testing.T) {
	m, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{
		Version: 1,
		RescuePoints: []RescuePoint{
			{Binary: "/usr/bin/server", Function: "handle_request", Return: i64(-1), Scope: ScopeProcess},
			{Binary: "libparse.so.1", Function: "parse_header", Return: i64(0), Scope: ScopeContainer},
			{Binary: "/usr/bin/server", Address: 0x1a2b0, HasAddress: true, Scope: ScopeProcess},
		},
		Signals:       []unix.Signal{unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT},
		MaxRecoveries: 100,
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Parse(example) =\n%+v\nwant\n%+v", m, want)
	}
	if got := m.RescuePoints[0].String(); got != "handle_request in /usr/bin/server" {
		t.Errorf("String() = %q", got)
	}
	if got := m.RescuePoints[2].Name(); got != "0x1a2b0" {
		t.Errorf("Name() = %q", got)
	}
	if got := m.RescuePoints[2].String(); got != "0x1a2b0 in /usr/bin/server" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseDefaults(t *testing.T) {
	m, err := Parse([]byte(`{"version":1,"rescuePoints":[{"binary":"/bin/x","function":"f"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.MaxRecoveries != 100 {
		t.Errorf("MaxRecoveries = %d, want 100", m.MaxRecoveries)
	}
	if !reflect.DeepEqual(m.Signals, DefaultSignals()) {
		t.Errorf("Signals = %v, want %v", m.Signals, DefaultSignals())
	}
	rp := m.RescuePoints[0]
	if rp.Return != nil || rp.Scope != ScopeProcess || rp.HasAddress {
		t.Errorf("defaults not applied: %+v", rp)
	}
	for _, s := range []unix.Signal{unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT} {
		if !m.WantsSignal(s) {
			t.Errorf("WantsSignal(%v) = false", s)
		}
	}
	for _, s := range []unix.Signal{unix.SIGTRAP, unix.SIGSYS, unix.SIGKILL, unix.SIGTERM} {
		if m.WantsSignal(s) {
			t.Errorf("WantsSignal(%v) = true", s)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		entry string // one rescue point
		top   string // extra top-level members
		check func(*testing.T, *Manifest)
	}{
		{name: "address with 0x", entry: `{"binary":"/b","address":"0x1A2b0"}`, check: wantAddr(0x1a2b0)},
		{name: "address as nm prints", entry: `{"binary":"/b","address":"000000000001a2b0"}`, check: wantAddr(0x1a2b0)},
		{name: "address max", entry: `{"binary":"/b","address":"0xffffffffffffffff"}`, check: wantAddr(^uint64(0))},
		{name: "return min int64", entry: `{"binary":"/b","function":"f","return":-9223372036854775808}`, check: wantReturn(-1 << 63)},
		{name: "return max int64", entry: `{"binary":"/b","function":"f","return":9223372036854775807}`, check: wantReturn(1<<63 - 1)},
		{name: "path cleaned", entry: `{"binary":"/usr//bin/./server/","function":"f"}`, check: wantBinary("/usr/bin/server")},
		// ".." is resolved in the root as the kernel does, not cleaned away.
		{name: "dotdot kept", entry: `{"binary":"/usr/lib/../bin/server","function":"f"}`, check: wantBinary("/usr/lib/../bin/server")},
		{name: "bare name", entry: `{"binary":"libc.so.6","function":"f"}`, check: wantBinary("libc.so.6")},
		{name: "path with space", entry: `{"binary":"/opt/my app/srv","function":"f"}`, check: wantBinary("/opt/my app/srv")},
		{name: "versioned symbol", entry: `{"binary":"/b","function":"memcpy@@GLIBC_2.14"}`, check: wantFunction("memcpy@@GLIBC_2.14")},
		{name: "C++ symbol", entry: `{"binary":"/b","function":"_ZN3foo3barEv"}`, check: wantFunction("_ZN3foo3barEv")},
		{name: "function at limit", entry: `{"binary":"/b","function":"` + strings.Repeat("a", 1024) + `"}`, check: wantFunction(strings.Repeat("a", 1024))},
		{name: "scope process", entry: `{"binary":"/b","function":"f","scope":"process"}`, check: wantScope(ScopeProcess)},
		{name: "maxRecoveries 0", entry: `{"binary":"/b","function":"f"}`, top: `,"maxRecoveries":0`, check: func(t *testing.T, m *Manifest) {
			if m.MaxRecoveries != 0 {
				t.Errorf("MaxRecoveries = %d", m.MaxRecoveries)
			}
		}},
		{name: "all signals", entry: `{"binary":"/b","function":"f"}`, top: `,"signals":["SIGTRAP","SIGSYS","SIGSEGV","SIGBUS","SIGFPE","SIGILL","SIGABRT"]`, check: func(t *testing.T, m *Manifest) {
			want := []unix.Signal{unix.SIGTRAP, unix.SIGSYS, unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGABRT}
			if !reflect.DeepEqual(m.Signals, want) {
				t.Errorf("Signals = %v", m.Signals)
			}
		}},
		{name: "one signal", entry: `{"binary":"/b","function":"f"}`, top: `,"signals":["SIGFPE"]`, check: func(t *testing.T, m *Manifest) {
			if !m.WantsSignal(unix.SIGFPE) || m.WantsSignal(unix.SIGSEGV) {
				t.Errorf("Signals = %v", m.Signals)
			}
		}},
		{name: "escaped unicode", entry: `{"binary":"/srv/\u00e9t\u00e9","function":"f"}`, check: wantBinary("/srv/été")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := `{"version":1,"rescuePoints":[` + tc.entry + `]` + tc.top + "}\n\n"
			m, err := Parse([]byte(doc))
			if err != nil {
				t.Fatalf("Parse(%s): %v", doc, err)
			}
			tc.check(t, m)
		})
	}
}

func wantAddr(a uint64) func(*testing.T, *Manifest) {
	return func(t *testing.T, m *Manifest) {
		rp := m.RescuePoints[0]
		if !rp.HasAddress || rp.Address != a || rp.Function != "" {
			t.Errorf("got %+v, want address 0x%x", rp, a)
		}
	}
}

func wantReturn(v int64) func(*testing.T, *Manifest) {
	return func(t *testing.T, m *Manifest) {
		if r := m.RescuePoints[0].Return; r == nil || *r != v {
			t.Errorf("Return = %v, want %d", r, v)
		}
	}
}

func wantBinary(b string) func(*testing.T, *Manifest) {
	return func(t *testing.T, m *Manifest) {
		if got := m.RescuePoints[0].Binary; got != b {
			t.Errorf("Binary = %q, want %q", got, b)
		}
	}
}

func wantFunction(f string) func(*testing.T, *Manifest) {
	return func(t *testing.T, m *Manifest) {
		if got := m.RescuePoints[0].Function; got != f {
			t.Errorf("Function = %q, want %q", got, f)
		}
	}
}

func wantScope(s Scope) func(*testing.T, *Manifest) {
	return func(t *testing.T, m *Manifest) {
		if got := m.RescuePoints[0].Scope; got != s {
			t.Errorf("Scope = %q, want %q", got, s)
		}
	}
}

// rp0 wraps one rescue point into an otherwise valid manifest.
func rp0(entry string) string {
	return `{"version":1,"rescuePoints":[` + entry + `]}`
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want string // the complete message
	}{
		// Document level.
		{"empty", ``, `manifest: empty document`},
		{"white space only", " \n\t", `manifest: empty document`},
		{"syntax", "{\n  \"version\": 1,\n  }", `manifest: invalid JSON at line 3, column 3 (offset 20): invalid character '}' looking for beginning of object key string`},
		{"truncated", `{"version": 1, "rescuePoints": [`, `manifest: invalid JSON at line 1, column 33 (offset 32): unexpected end of input`},
		{"trailing object", rp0(`{"binary":"/b","function":"f"}`) + "\n{}", `manifest: unexpected data after the manifest object at line 2, column 1 (offset 62)`},
		{"trailing garbage", rp0(`{"binary":"/b","function":"f"}`) + " x", `manifest: unexpected data after the manifest object at line 1, column 63 (offset 62)`},
		{"invalid utf8", "{\"version\":1,\"rescuePoints\":[{\"binary\":\"/b\xff\",\"function\":\"f\"}]}", `manifest: invalid UTF-8 at line 1, column 43 (offset 42)`},
		{"array", `[]`, `manifest: must be an object, got an array`},
		{"string", `"x"`, `manifest: must be an object, got "x"`},
		{"null", `null`, `manifest: must be an object, got null`},

		// version
		{"version missing", `{"rescuePoints":[]}`, `manifest: field "version": required`},
		{"version 2", `{"version":2,"rescuePoints":[],"newThing":true}`, `manifest: field "version": unsupported version 2 (supported: 1)`},
		{"version 0", `{"version":0}`, `manifest: field "version": unsupported version 0 (supported: 1)`},
		{"version string", `{"version":"1"}`, `manifest: field "version": must be an integer, got "1"`},
		{"version float", `{"version":1.0}`, `manifest: field "version": must be an integer, got 1.0`},
		{"version exponent", `{"version":1e0}`, `manifest: field "version": must be an integer, got 1e0`},
		{"version huge", `{"version":123456789012345678901234567890}`, `manifest: field "version": integer 123456789012345678901234567890 is out of range (64-bit)`},
		{"version null", `{"version":null}`, `manifest: field "version": must be an integer, got null`},
		{"duplicate version", `{"version":1,"version":2}`, `manifest: duplicate field "version"`},

		// Unknown fields.
		{"unknown top", `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"}],"retries":3}`, `manifest: unknown field "retries"`},
		{"wrong case top", `{"version":1,"RescuePoints":[]}`, `manifest: unknown field "RescuePoints" (did you mean "rescuePoints"?)`},
		{"unknown in entry", rp0(`{"binary":"/b","function":"f","retrun":1}`), `manifest: rescuePoints[0] (f in /b): unknown field "retrun"`},
		{"unknown in entry no label", rp0(`{"retrun":1}`), `manifest: rescuePoints[0]: unknown field "retrun"`},
		{"wrong case entry", `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"},{"binary":"/b","Function":"g"}]}`, `manifest: rescuePoints[1]: unknown field "Function" (did you mean "function"?)`},
		{"duplicate in entry", rp0(`{"binary":"/b","function":"f","binary":"/c"}`), `manifest: rescuePoints[0] (f in /b): duplicate field "binary"`},

		// rescuePoints
		{"rescuePoints missing", `{"version":1}`, `manifest: field "rescuePoints": required`},
		{"rescuePoints empty", `{"version":1,"rescuePoints":[]}`, `manifest: field "rescuePoints": must not be empty`},
		{"rescuePoints object", `{"version":1,"rescuePoints":{}}`, `manifest: field "rescuePoints": must be an array, got an object`},
		{"entry not object", `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"}, 7]}`, `manifest: rescuePoints[1]: must be an object, got 7`},
		{"too many", tooMany(), `manifest: field "rescuePoints": has more than 1024 entries (limit 1024)`},
		{"duplicate function", `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"},{"binary":"//b/.","function":"f","return":1}]}`,
			`manifest: rescuePoints[1] (f in /b): fields "binary" and "function": duplicates rescuePoints[0]`},
		{"duplicate address", `{"version":1,"rescuePoints":[{"binary":"/b","address":"10"},{"binary":"/b","function":"f"},{"binary":"/b","address":"0x0010"}]}`,
			`manifest: rescuePoints[2] (0x10 in /b): fields "binary" and "address": duplicates rescuePoints[0]`},

		// binary
		{"binary missing", rp0(`{"function":"f"}`), `manifest: rescuePoints[0]: field "binary": required`},
		{"binary empty", rp0(`{"binary":"","function":"f"}`), `manifest: rescuePoints[0]: field "binary": must not be empty`},
		{"binary number", rp0(`{"binary":1,"function":"f"}`), `manifest: rescuePoints[0]: field "binary": must be a string, got 1`},
		{"binary relative", rp0(`{"binary":"bin/server","function":"f"}`), `manifest: rescuePoints[0] (f in bin/server): field "binary": relative path "bin/server" is not allowed: use an absolute path, or a bare file name to match a loaded module by base name`},
		{"binary dot slash", rp0(`{"binary":"./server","function":"f"}`), `manifest: rescuePoints[0] (f in ./server): field "binary": relative path "./server" is not allowed: use an absolute path, or a bare file name to match a loaded module by base name`},
		{"binary dot", rp0(`{"binary":".","function":"f"}`), `manifest: rescuePoints[0] (f in .): field "binary": must name a file, got "."`},
		{"binary dotdot", rp0(`{"binary":"..","function":"f"}`), `manifest: rescuePoints[0] (f in ..): field "binary": must name a file, got ".."`},
		{"binary root", rp0(`{"binary":"/.","function":"f"}`), `manifest: rescuePoints[0] (f in /.): field "binary": must name a file, got "/."`},
		// The rule of every path inside a root (recovery/resolve), with the
		// message a manifest-file label with that path gets.
		{"binary above root", rp0(`{"binary":"/..","function":"f"}`), `manifest: rescuePoints[0] (f in /..): field "binary": /..: escapes the container root filesystem (".." above /)`},
		{"binary climbs", rp0(`{"binary":"/../../x","function":"f"}`), `manifest: rescuePoints[0] (f in /../../x): field "binary": /../../x: escapes the container root filesystem (".." above /)`},
		{"binary climbs later", rp0(`{"binary":"/usr/../../x","function":"f"}`), `manifest: rescuePoints[0] (f in /usr/../../x): field "binary": /usr/../../x: escapes the container root filesystem (".." above /)`},
		{"binary NUL", rp0(`{"binary":"/bin/a\u0000b","function":"f"}`), `manifest: rescuePoints[0] (f in "/bin/a\x00b"): field "binary": must not contain NUL bytes`},
		{"binary newline", rp0(`{"binary":"/bin/a\nb","function":"f"}`), `manifest: rescuePoints[0] (f in "/bin/a\nb"): field "binary": must not contain control characters, got "/bin/a\nb"`},
		{"binary too long", rp0(`{"binary":"/` + strings.Repeat("a", 4096) + `","function":"f"}`), `field "binary": is 4097 bytes long (limit 4096)`},

		// function / address
		{"both", rp0(`{"binary":"/b","function":"f","address":"0x10"}`), `manifest: rescuePoints[0]: fields "function" and "address": exactly one is required, got both`},
		{"neither", rp0(`{"binary":"/b","return":1}`), `manifest: rescuePoints[0]: fields "function" and "address": exactly one is required, got neither`},
		{"function empty", rp0(`{"binary":"/b","function":""}`), `manifest: rescuePoints[0]: field "function": must not be empty`},
		{"function space", rp0(`{"binary":"/b","function":"handle request"}`), `manifest: rescuePoints[0] (handle request in /b): field "function": must not contain white space, got "handle request"`},
		{"function tab", rp0(`{"binary":"/b","function":"f\tg"}`), `field "function": must not contain white space, got "f\tg"`},
		{"function NUL", rp0(`{"binary":"/b","function":"f\u0000"}`), `manifest: rescuePoints[0] ("f\x00" in /b): field "function": must not contain NUL bytes`},
		{"function control", rp0(`{"binary":"/b","function":"f\u001b[2J"}`), `field "function": must not contain control characters, got "f\x1b[2J"`},
		{"function too long", rp0(`{"binary":"/b","function":"` + strings.Repeat("a", 1025) + `"}`), `field "function": is 1025 bytes long (limit 1024)`},
		{"function number", rp0(`{"binary":"/b","function":12}`), `manifest: rescuePoints[0]: field "function": must be a string, got 12`},
		{"function null", rp0(`{"binary":"/b","function":null}`), `manifest: rescuePoints[0]: field "function": must be a string, got null`},
		{"address zero", rp0(`{"binary":"/b","address":"0x0"}`), `manifest: rescuePoints[0] (0x0 in /b): field "address": must not be zero`},
		{"address number", rp0(`{"binary":"/b","address":4096}`), `manifest: rescuePoints[0]: field "address": must be a hex string such as "0x1a2b0", got 4096`},
		{"address not hex", rp0(`{"binary":"/b","address":"0x1g"}`), `manifest: rescuePoints[0] (0x1g in /b): field "address": must be a hex number such as "0x1a2b0", got "0x1g"`},
		{"address bare 0x", rp0(`{"binary":"/b","address":"0x"}`), `field "address": must be a hex number such as "0x1a2b0", got "0x"`},
		{"address empty", rp0(`{"binary":"/b","address":""}`), `manifest: rescuePoints[0]: field "address": must be a hex number such as "0x1a2b0", got ""`},
		{"address sign", rp0(`{"binary":"/b","address":"-0x10"}`), `field "address": must be a hex number such as "0x1a2b0", got "-0x10"`},
		{"address decimal underscore", rp0(`{"binary":"/b","address":"1_000"}`), `field "address": must be a hex number such as "0x1a2b0", got "1_000"`},
		{"address overflow", rp0(`{"binary":"/b","address":"0x10000000000000000"}`), `manifest: rescuePoints[0] (0x10000000000000000 in /b): field "address": "0x10000000000000000" does not fit in 64 bits`},

		// return
		{"return float", rp0(`{"binary":"/b","function":"f","return":1.5}`), `manifest: rescuePoints[0] (f in /b): field "return": must be an integer, got 1.5`},
		{"return string", rp0(`{"binary":"/b","function":"f","return":"-1"}`), `manifest: rescuePoints[0] (f in /b): field "return": must be an integer, got "-1"`},
		{"return bool", rp0(`{"binary":"/b","function":"f","return":true}`), `manifest: rescuePoints[0] (f in /b): field "return": must be an integer, got true`},
		{"return null", rp0(`{"binary":"/b","function":"f","return":null}`), `manifest: rescuePoints[0] (f in /b): field "return": must be an integer, got null (omit the field for a void function)`},
		{"return overflow", rp0(`{"binary":"/b","function":"f","return":9223372036854775808}`), `manifest: rescuePoints[0] (f in /b): field "return": integer 9223372036854775808 is out of range (64-bit)`},
		{"return array", rp0(`{"binary":"/b","function":"f","return":[1]}`), `manifest: rescuePoints[0] (f in /b): field "return": must be an integer, got an array`},

		// scope
		{"scope global", `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"},{"binary":"libparse.so.1","function":"parse_header","return":0,"scope":"global"}]}`,
			`manifest: rescuePoints[1] (parse_header in libparse.so.1): field "scope": must be "process" or "container", got "global"`},
		{"scope case", rp0(`{"binary":"/b","function":"f","scope":"Process"}`), `manifest: rescuePoints[0] (f in /b): field "scope": must be "process" or "container", got "Process"`},
		{"scope number", rp0(`{"binary":"/b","function":"f","scope":1}`), `manifest: rescuePoints[0] (f in /b): field "scope": must be "process" or "container", got 1`},

		// signals
		{"signal unknown", sigs(`["SIGSEGV","SIGBUS","SIGFOO"]`), `manifest: field "signals"[2]: unknown signal "SIGFOO"`},
		{"signal kill", sigs(`["SIGSEGV","SIGKILL"]`), `manifest: field "signals"[1]: signal SIGKILL cannot be recovered from (allowed: SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS)`},
		{"signal term", sigs(`["SIGTERM"]`), `manifest: field "signals"[0]: signal SIGTERM cannot be recovered from (allowed: SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS)`},
		{"signal short name", sigs(`["SEGV"]`), `manifest: field "signals"[0]: signal "SEGV" must be written "SIGSEGV"`},
		{"signal lower case", sigs(`["sigsegv"]`), `manifest: field "signals"[0]: signal "sigsegv" must be written "SIGSEGV"`},
		{"signal alias", sigs(`["SIGIOT"]`), `manifest: field "signals"[0]: unknown signal "SIGIOT"`},
		{"signal empty name", sigs(`[""]`), `manifest: field "signals"[0]: unknown signal ""`},
		{"signal number", sigs(`[11]`), `manifest: field "signals"[0]: must be a string, got 11`},
		{"signal duplicate", sigs(`["SIGSEGV","SIGBUS","SIGSEGV"]`), `manifest: field "signals"[2]: duplicate signal "SIGSEGV" (also at [0])`},
		{"signals empty", sigs(`[]`), `manifest: field "signals": must not be empty (omit it for the default signals, or set "maxRecoveries" to 0 to never recover)`},
		{"signals string", sigs(`"SIGSEGV"`), `manifest: field "signals": must be an array, got "SIGSEGV"`},

		// maxRecoveries
		{"maxRecoveries negative", maxRec(`-1`), `manifest: field "maxRecoveries": must be >= 0 (0 means never recover), got -1`},
		{"maxRecoveries float", maxRec(`2.5`), `manifest: field "maxRecoveries": must be an integer, got 2.5`},
		{"maxRecoveries string", maxRec(`"10"`), `manifest: field "maxRecoveries": must be an integer, got "10"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error %q", m, tc.want)
			}
			if m != nil {
				t.Errorf("Parse returned a manifest with the error")
			}
			var me *Error
			if !errors.As(err, &me) {
				t.Errorf("error %T is not *Error", err)
			}
			got := err.Error()
			if strings.HasPrefix(tc.want, "manifest: ") {
				if got != tc.want {
					t.Errorf("error:\n got %s\nwant %s", got, tc.want)
				}
			} else if !strings.Contains(got, tc.want) {
				t.Errorf("error:\n got %s\nwant it to contain %s", got, tc.want)
			}
		})
	}
}

func sigs(list string) string {
	return `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"}],"signals":` + list + `}`
}

func maxRec(v string) string {
	return `{"version":1,"rescuePoints":[{"binary":"/b","function":"f"}],"maxRecoveries":` + v + `}`
}

func tooMany() string {
	var b strings.Builder
	b.WriteString(`{"version":1,"rescuePoints":[`)
	for i := 0; i <= MaxRescuePoints; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"binary":"/b","address":"`)
		b.WriteString(strings.Repeat("1", 1+i%8))
		b.WriteString(`"}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

func TestParseLimits(t *testing.T) {
	// Exactly MaxRescuePoints distinct entries are fine.
	var b strings.Builder
	b.WriteString(`{"version":1,"rescuePoints":[`)
	for i := 0; i < MaxRescuePoints; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"binary":"/b","address":"0x`)
		b.WriteString(strings.ToLower(strings.TrimLeft(strings.Repeat("0", 4)+itoa16(i+1), "0")))
		b.WriteString(`"}`)
	}
	b.WriteString(`]}`)
	m, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.RescuePoints) != MaxRescuePoints {
		t.Fatalf("got %d rescue points", len(m.RescuePoints))
	}

	// Over MaxSize is refused before anything is parsed.
	big := make([]byte, MaxSize+1)
	for i := range big {
		big[i] = ' '
	}
	_, err = Parse(big)
	if want := "manifest: size 1048577 bytes exceeds the limit of 1048576"; err == nil || err.Error() != want {
		t.Errorf("Parse(big) = %v, want %s", err, want)
	}

	// Deep nesting inside an ignored value must not blow the stack.
	deep := `{"version":1,"rescuePoints":[{"binary":"/b","function":"f","return":` +
		strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}]}`
	if _, err := Parse([]byte(deep)); err == nil {
		t.Error("deeply nested return accepted")
	}
}

func itoa16(i int) string {
	const digits = "0123456789abcdef"
	s := ""
	for ; i > 0; i >>= 4 {
		s = string(digits[i&15]) + s
	}
	return s
}

func TestRoundTrip(t *testing.T) {
	docs := []string{
		example,
		rp0(`{"binary":"/b","function":"f"}`),
		`{"version":1,"rescuePoints":[{"binary":"/srv/<a&b>","address":"ffffffffffffffff","return":-9223372036854775808,"scope":"container"}],"signals":["SIGSYS"],"maxRecoveries":0}`,
	}
	for _, doc := range docs {
		m1, err := Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		data, err := m1.JSON()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Parse(data)
		if err != nil {
			t.Fatalf("Parse(JSON()) = %v\n%s", err, data)
		}
		if !reflect.DeepEqual(m1, m2) {
			t.Errorf("round trip changed the manifest:\n%+v\n%+v", m1, m2)
		}
		again, err := m2.JSON()
		if err != nil || string(again) != string(data) {
			t.Errorf("JSON() is not canonical:\n%s\n%s", data, again)
		}
	}

	m, _ := Parse([]byte(example))
	data, _ := m.JSON()
	want := `{
  "version": 1,
  "rescuePoints": [
    {
      "binary": "/usr/bin/server",
      "function": "handle_request",
      "return": -1,
      "scope": "process"
    },
    {
      "binary": "libparse.so.1",
      "function": "parse_header",
      "return": 0,
      "scope": "container"
    },
    {
      "binary": "/usr/bin/server",
      "address": "0x1a2b0",
      "scope": "process"
    }
  ],
  "signals": [
    "SIGSEGV",
    "SIGBUS",
    "SIGFPE",
    "SIGILL",
    "SIGABRT"
  ],
  "maxRecoveries": 100
}
`
	if string(data) != want {
		t.Errorf("JSON() =\n%s\nwant\n%s", data, want)
	}
}

func TestJSONRefusesInvalid(t *testing.T) {
	for name, m := range map[string]*Manifest{
		"version 0":    {RescuePoints: []RescuePoint{{Binary: "/b", Function: "f"}}, Signals: DefaultSignals()},
		"no points":    {Version: 1, Signals: DefaultSignals()},
		"both":         {Version: 1, RescuePoints: []RescuePoint{{Binary: "/b", Function: "f", HasAddress: true, Address: 1}}, Signals: DefaultSignals()},
		"relative":     {Version: 1, RescuePoints: []RescuePoint{{Binary: "a/b", Function: "f"}}, Signals: DefaultSignals()},
		"no signals":   {Version: 1, RescuePoints: []RescuePoint{{Binary: "/b", Function: "f"}}},
		"bad signal":   {Version: 1, RescuePoints: []RescuePoint{{Binary: "/b", Function: "f"}}, Signals: []unix.Signal{unix.SIGKILL}},
		"bad scope":    {Version: 1, RescuePoints: []RescuePoint{{Binary: "/b", Function: "f", Scope: "x"}}, Signals: DefaultSignals()},
		"negative max": {Version: 1, RescuePoints: []RescuePoint{{Binary: "/b", Function: "f"}}, Signals: DefaultSignals(), MaxRecoveries: -1},
	} {
		if data, err := m.JSON(); err == nil {
			t.Errorf("%s: JSON() = %s, want error", name, data)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(example), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.RescuePoints) != 3 {
		t.Errorf("got %d rescue points", len(m.RescuePoints))
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(rp0(`{"binary":"/b","function":"f","scope":"global"}`)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	want := "manifest " + bad + `: rescuePoints[0] (f in /b): field "scope": must be "process" or "container", got "global"`
	if err == nil || err.Error() != want {
		t.Errorf("Load(bad) = %v\nwant %s", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.json"))
	if err == nil || !errors.Is(err, fs.ErrNotExist) ||
		err.Error() != "manifest "+filepath.Join(dir, "missing.json")+": open: no such file or directory" {
		t.Errorf("Load(missing) = %v", err)
	}

	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, MaxSize+10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || err.Error() != "manifest "+big+": larger than the limit of 1048576 bytes" {
		t.Errorf("Load(big) = %v", err)
	}

	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "manifest "+dir+": ") {
		t.Errorf("Load(dir) = %v", err)
	}

	// A FIFO must be refused, not block the reader.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	if _, err := Load(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load(fifo) = %v", err)
	}
}

func TestSignalNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  unix.Signal
	}{
		{"SIGSEGV", unix.SIGSEGV}, {"SIGBUS", unix.SIGBUS}, {"SIGFPE", unix.SIGFPE}, {"SIGILL", unix.SIGILL},
		{"SIGABRT", unix.SIGABRT}, {"SIGTRAP", unix.SIGTRAP}, {"SIGSYS", unix.SIGSYS},
		{"SIGTERM", unix.SIGTERM}, {"SIGKILL", unix.SIGKILL}, {"SIGUSR1", unix.SIGUSR1}, {"SIGCHLD", unix.SIGCHLD},
	} {
		if got := SignalName(tc.sig); got != tc.name {
			t.Errorf("SignalName(%d) = %q, want %q", tc.sig, got, tc.name)
		}
		for _, in := range []string{tc.name, strings.ToLower(tc.name), strings.TrimPrefix(tc.name, "SIG"), " " + tc.name} {
			if got, err := ParseSignal(in); err != nil || got != tc.sig {
				t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, tc.sig)
			}
		}
	}
	if got := SignalName(unix.Signal(42)); got != "signal 42" {
		t.Errorf("SignalName(42) = %q", got)
	}
	for _, in := range []string{"", "SIG", "SIGFOO", "11", "SIG SEGV"} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) succeeded", in)
		}
	}
}

func TestEntryError(t *testing.T) {
	rp := RescuePoint{Binary: "/usr/bin/prog", Function: "nosuch"}
	err := EntryError("x.json", 0, rp, "function", errors.New(`no function "nosuch" in /usr/bin/prog`))
	want := `manifest x.json: rescuePoints[0] (nosuch in /usr/bin/prog): field "function": no function "nosuch" in /usr/bin/prog`
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}

// TestHeal: "heal" lets "rescuePoints" be left out or empty, its
// candidates are entries like rescue points (errors named by their list),
// and it survives a round trip through JSON.
func TestHeal(t *testing.T) {
	m, err := Parse([]byte(`{"version":1,"heal":{"candidates":[{"binary":"/srv/app","function":"parse","return":-1},{"binary":"/srv/app","function":"fill"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.RescuePoints) != 0 || m.Heal == nil || len(m.Heal.Candidates) != 2 || *m.Heal.Candidates[0].Return != -1 || m.Heal.Candidates[1].Return != nil {
		t.Fatalf("parsed %+v", m)
	}
	data, err := m.JSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil || back.Heal == nil || len(back.Heal.Candidates) != 2 {
		t.Fatalf("round trip: %v\n%s", err, data)
	}
	if m, err := Parse([]byte(`{"version":1,"rescuePoints":[],"heal":{}}`)); err != nil || m.Heal == nil || m.Heal.Candidates != nil || m.Heal.FirstFault != FirstFaultCrash {
		t.Errorf("heal without candidates: %v %+v", err, m)
	}
	m, err = Parse([]byte(`{"version":1,"heal":{"firstFault":"return"}}`))
	if err != nil || m.Heal.FirstFault != FirstFaultReturn {
		t.Fatalf("firstFault return: %v %+v", err, m)
	}
	if data, err := m.JSON(); err != nil || !strings.Contains(string(data), `"firstFault": "return"`) {
		t.Errorf("JSON of firstFault return: %v\n%s", err, data)
	}
	for doc, want := range map[string]string{
		`{"version":1,"heal":{"candidates":[{"binary":"rel/app","function":"f"}]}}`: `heal.candidates[0]`,
		`{"version":1,"heal":{"learn":true}}`:                                       `field "heal": unknown field "learn"`,
		`{"version":1,"heal":[]}`:                                                   `field "heal"`,
		`{"version":1,"heal":{"firstFault":"rollback"}}`:                            `field "heal.firstFault": must be "crash" or "return", got "rollback"`,
		`{"version":1,"rescuePoints":[]}`:                                           `field "rescuePoints": must not be empty`,
	} {
		if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want an error with %q", doc, err, want)
		}
	}
}
