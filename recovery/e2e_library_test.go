package recovery_test

import (
	"syscall"
	"testing"
)

// TestE2ESharedLibrary: the rescue point parse_header is in libparse.so,
// named in the manifest by its bare file name. 60 header lines, 6 without a
// colon (the parser dereferences the missing colon). Under assure: exit 0,
// exactly the reference output (ok, errors, sum of results and the library's
// own parse counter), 6 recovered events in parse_header of libparse.so.
//
//   - linked: the program is linked against the library (-lparse, rpath);
//   - dlopen: the program loads it with dlopen() after start and calls
//     parse_header through dlsym, so the rescue point resolves only then;
//   - dlopen-reload: the program loads the library, uses it, dlclose()s it
//     (gone from its maps: reloaded=1) and loads it again: the rescue point
//     is armed again in the new mapping.
func TestE2ESharedLibrary(t *testing.T) {
	const n, every = "60", "10"
	m := manifest{Version: 1, RescuePoints: []rescuePoint{fn("libparse.so", "parse_header", -1)}}.JSON()
	lib := bin("libparse.so")
	variants := []struct {
		name string
		prog string
		args []string // before validate|fault
		tail []string // after N EVERY
	}{
		{"linked", "useparse", nil, nil},
		{"dlopen", "dlparse", []string{lib}, nil},
		{"dlopen-reload", "dlparse", []string{lib}, []string{"reload"}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			args := func(mode string) []string {
				return append(append(append([]string{}, v.args...), mode, n, every), v.tail...)
			}
			ref := runNative(t, v.prog, args("validate")...)
			wantStatus(t, ref, 0)
			wantKV(t, ref, map[string]string{"ok": "54", "errors": "6", "parse_count": "54"})
			if v.tail != nil {
				wantKV(t, ref, map[string]string{"reloaded": "1"})
			}
			t.Run("native", func(t *testing.T) {
				wantSignalDeath(t, runNative(t, v.prog, args("fault")...), syscall.SIGSEGV)
			})
			t.Run("assure", func(t *testing.T) {
				r := runAssure(t, m, v.prog, args("fault")...)
				wantStatus(t, r, 0)
				if r.Stdout != ref.Stdout {
					t.Errorf("stdout differs from the reference run\nwant:\n%s%s", ref.Stdout, r)
				}
				wantRecovered(t, r, recovered{n: 6, signal: "SIGSEGV", function: "parse_header", binary: "libparse.so", ret: -1, single: true})
			})
		})
	}
}
