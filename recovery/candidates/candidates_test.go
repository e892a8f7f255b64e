package candidates

import (
	"testing"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// want is the expected outcome for one function of progC: a candidate
// returning ret, or dropped for reason.
type want struct {
	ret    int64
	reason Reason // "" for a candidate
}

var progWant = map[string]want{
	"parse":  {ret: -1},
	"lookup": {ret: 0},
	"logit":  {reason: ReasonUnchecked},
	"touch":  {reason: ReasonUnchecked},
	"viaptr": {reason: ReasonNoDirectCallers},
}

// addrOf returns the address of name in the unstripped file path.
func addrOf(t *testing.T, path, name string) uint64 {
	t.Helper()
	f, err := elfsym.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fn, err := f.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return fn.Addr
}

func candidateAt(rep *Report, addr uint64) *Candidate {
	for i := range rep.Candidates {
		if rep.Candidates[i].Address == addr {
			return &rep.Candidates[i]
		}
	}
	return nil
}

func TestProgram(t *testing.T) {
	buildAll(t)
	for _, v := range builds.variants {
		t.Run(v.name, func(t *testing.T) {
			rep, err := Find(v.path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			symbols := v.path
			if v.unstripped != "" {
				symbols = v.unstripped
			}
			for name, w := range progWant {
				checkOutcome(t, rep, name, addrOf(t, symbols, name), w, v.unstripped != "")
			}
			checkTotals(t, rep)
			t.Logf("%d functions, %d candidates, dropped %v, %s", rep.Functions, len(rep.Candidates), rep.Dropped, rep.Stats.Elapsed)
		})
	}
}

// checkOutcome checks one function's fate; in a stripped file the
// function is found by the unstripped build's address, with no name.
func checkOutcome(t *testing.T, rep *Report, name string, addr uint64, w want, stripped bool) {
	t.Helper()
	c := candidateAt(rep, addr)
	if w.reason != "" {
		if c != nil {
			t.Errorf("%s (0x%x) is a candidate (%s), want dropped: %s", name, addr, c.ReturnEvidence, w.reason)
		}
		if got, ok := rep.Reason(addr); !ok || got != w.reason {
			t.Errorf("%s (0x%x): reason %q (known %v), want %q", name, addr, got, ok, w.reason)
		}
		if w.reason == ReasonNoDirectCallers && !listed(rep.NoDirectCallers, addr) {
			t.Errorf("%s (0x%x) not in NoDirectCallers", name, addr)
		}
		return
	}
	if c == nil {
		r, _ := rep.Reason(addr)
		t.Errorf("%s (0x%x) is not a candidate: %s", name, addr, r)
		return
	}
	if *c.Return != w.ret {
		t.Errorf("%s: return %d, want %d (%s)", name, *c.Return, w.ret, c.ReturnEvidence)
	}
	if wantName := map[bool]string{false: name, true: ""}[stripped]; c.Function != wantName {
		t.Errorf("0x%x: function %q, want %q", addr, c.Function, wantName)
	}
	// gcc -O2 may duplicate a call (one per arm of argc > 1 ? ...).
	if c.CallSites < 2 || c.CheckedSites != c.CallSites {
		t.Errorf("%s: %d of %d call sites checked, want all of 2 or more", name, c.CheckedSites, c.CallSites)
	}
	t.Logf("%s -> %d (%s): %s", c.Label(), *c.Return, c.Confidence, c.ReturnEvidence)
}

func listed(fs []Function, addr uint64) bool {
	for _, f := range fs {
		if f.Address == addr {
			return true
		}
	}
	return false
}

// checkTotals checks that every function examined is accounted for.
func checkTotals(t *testing.T, rep *Report) {
	t.Helper()
	n := len(rep.Candidates)
	for _, c := range rep.Dropped {
		n += c
	}
	if n != rep.Functions {
		t.Errorf("%d candidates + dropped, %d functions examined", n, rep.Functions)
	}
	if rep.Dropped[ReasonNoDirectCallers] != len(rep.NoDirectCallers) {
		t.Errorf("%d no-direct-caller functions counted, %d listed", rep.Dropped[ReasonNoDirectCallers], len(rep.NoDirectCallers))
	}
}

// TestLibrary checks calls through the PLT: the main program's calls to
// lib_parse and lib_get are reported as imports, and, passed to the
// library's analysis, make lib_get a candidate; lib_parse is one even
// alone, through the library's own call via its PLT.
func TestLibrary(t *testing.T) {
	buildAll(t)
	exe, err := Find(builds.exe, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, kind := range map[string]string{"lib_parse": "sign", "lib_get": "zero"} {
		ev := exe.Imports[name]
		if ev == nil || ev.Sites != 1 || ev.Checked() != 1 || (kind == "sign") != (ev.Sign == 1) {
			t.Errorf("import %s: %+v, want 1 site checked (%s)", name, ev, kind)
		}
	}
	alone, err := Find(builds.lib, Options{})
	if err != nil {
		t.Fatal(err)
	}
	getAddr, parseAddr := addrOf(t, builds.lib, "lib_get"), addrOf(t, builds.lib, "lib_parse")
	if r, _ := alone.Reason(getAddr); r != ReasonNoDirectCallers {
		t.Errorf("lib_get alone: reason %q, want %q", r, ReasonNoDirectCallers)
	}
	if c := candidateAt(alone, parseAddr); c == nil || *c.Return != -1 || c.Callers.ViaPLT != 1 {
		t.Errorf("lib_parse alone: %+v, want return -1 from its call via the library's PLT", c)
	}
	merged, err := Find(builds.lib, Options{ExternalCallers: MergeImports(exe)})
	if err != nil {
		t.Fatal(err)
	}
	c := candidateAt(merged, getAddr)
	if c == nil || *c.Return != 0 || c.Callers.External != 1 {
		t.Fatalf("lib_get with the main program's calls: %+v, want return 0, 1 external site", c)
	}
	if p := candidateAt(merged, parseAddr); p == nil || p.CallSites != 2 || p.Callers.External != 1 {
		t.Errorf("lib_parse with the main program's calls: %+v, want 2 sites, 1 external", p)
	}
	t.Logf("lib_get: %s", c.ReturnEvidence)
}
