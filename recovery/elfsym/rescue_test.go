package elfsym

import (
	"debug/elf"
	"strings"
	"testing"
)

// TestCheckRescuePoint: the places where diverting a return corrupts the
// process are refused with a message naming the place; function starts
// are accepted.
func TestCheckRescuePoint(t *testing.T) {
	b := buildBinaries(t)
	for _, path := range []string{b.pie, b.noPIE, b.pieStripped} {
		f := open(t, path)
		ef, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sec := func(name string) uint64 {
			s := ef.Section(name)
			if s == nil {
				t.Fatalf("%s: no %s section", path, name)
			}
			return s.Addr
		}
		plt := sec(".plt")
		main := nmAddr(t, b.pie, "main")
		if path != b.pie {
			fn, err := f.Lookup("main")
			if err == nil {
				main = fn.Addr
			} else {
				main = 0
			}
		}
		type rpCase struct {
			name string
			addr uint64
			want string // "" for accepted
		}
		cases := []rpCase{
			{"entry", ef.Entry, "is the entry point of " + path + " (_start): the kernel jumps there with no return address on the stack"},
			{"_init", sec(".init"), "is in _init (.init) of " + path},
			{"_fini", sec(".fini"), "is in _fini (.fini) of " + path},
			{"PLT stub", plt + 16, "is in the PLT stubs (.plt) of " + path + ": a stub that jumps to the real function; name that function instead"},
			{"data", sec(".data"), "is not in an executable segment"},
		}
		if main != 0 {
			cases = append(cases, rpCase{"main", main, ""},
				rpCase{"inside main", main + 1, "is 0x1 bytes into main, not at a function start"})
		}
		for _, c := range cases {
			err := f.CheckRescuePoint(c.addr)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%s: %s at 0x%x refused: %v", path, c.name, c.addr, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("%s: %s at 0x%x: error %v, want one containing %q", path, c.name, c.addr, err, c.want)
			}
		}
		ef.Close()
	}
	// A library's functions are fine; its e_entry is not run.
	lib := open(t, b.lib)
	fn, err := lib.Lookup("parse_header")
	if err != nil {
		t.Fatal(err)
	}
	if err := lib.CheckRescuePoint(fn.Addr); err != nil {
		t.Errorf("parse_header refused: %v", err)
	}
}
