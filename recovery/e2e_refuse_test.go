package recovery_test

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2ERefusesUnsafeRescuePoints: `assure run` refuses, before the
// program starts, rescue points where diverting the return would corrupt
// the process, naming the entry and the place.
func TestE2ERefusesUnsafeRescuePoints(t *testing.T) {
	if assureErr != nil {
		t.Fatal(assureErr)
	}
	ef, err := elf.Open(bin("faults"))
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	plt := ef.Section(".plt")
	if plt == nil {
		t.Fatal("faults has no .plt")
	}
	at := func(addr uint64) rescuePoint {
		return rescuePoint{Binary: bin("faults"), Address: fmt.Sprintf("%#x", addr)}
	}
	inside := nmAddress(t, "faults", "rescue_fault")
	var insideAddr uint64
	fmt.Sscanf(inside, "0x%x", &insideAddr)
	for _, c := range []struct {
		name string
		rp   rescuePoint
		want string
	}{
		{"_start", fn("faults", "_start", -1), "is the entry point of " + bin("faults") + " (_start)"},
		{"entry by address", at(ef.Entry), "is the entry point of"},
		{"_init", fn("faults", "_init", -1), "is in _init (.init)"},
		{"_fini", fn("faults", "_fini", -1), "is in _fini (.fini)"},
		{"PLT stub", at(plt.Addr + 16), "is in the PLT stubs (.plt)"},
		{"inside a function", at(insideAddr + 1), "is 0x1 bytes into rescue_fault, not at a function start"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := manifest{Version: 1, RescuePoints: []rescuePoint{c.rp}}
			mf := writeTemp(t, m.JSON())
			out, err := exec.Command(assureBin, "run", "--manifest", mf, "--", bin("faults"), "segv", "inrp").CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Fatalf("assure run: %v, want exit status 1\n%s", err, out)
			}
			if !strings.Contains(string(out), "rescuePoints[0]") || !strings.Contains(string(out), c.want) {
				t.Errorf("output %q, want it to name rescuePoints[0] and say %q", out, c.want)
			}
			if strings.Contains(string(out), "rc=") {
				t.Errorf("the program ran: %q", out)
			}
		})
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "manifest.json")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestE2ERefusesUnsafeRescuePointAtRunTime: a library named by its bare
// file name resolves only once it is mapped; the supervisor refuses an
// unsafe place there with an error event, plants nothing, and the program
// runs on untouched.
func TestE2ERefusesUnsafeRescuePointAtRunTime(t *testing.T) {
	m := manifest{Version: 1, RescuePoints: []rescuePoint{fn("libparse.so", "_fini", -1)}}
	ref := runNative(t, "useparse", "validate", "20", "10")
	r := runAssure(t, m.JSON(), "useparse", "validate", "20", "10")
	wantStatus(t, r, 0)
	if r.Stdout != ref.Stdout {
		t.Errorf("stdout differs from the native run\nwant:\n%s%s", ref.Stdout, r)
	}
	errs := r.ofType("error")
	if len(errs) != 1 || !strings.Contains(errs[0].Message, "_fini in libparse.so") || !strings.Contains(errs[0].Message, "is in _fini (.fini)") {
		t.Errorf("want one error event refusing _fini in libparse.so%s", r)
	}
}
