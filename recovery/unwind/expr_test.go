package unwind

import (
	"errors"
	"testing"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// pltProgram is what GCC and binutils emit for .plt: after the first
// two entries' pushes, CFA = rsp+8, plus 8 once rip is past the push in
// its 16-byte entry (offset 11 or more).
var pltProgram = []byte{
	0x0e, 0x10, // def_cfa_offset 16
	0x46,       // advance_loc 6
	0x0e, 0x18, // def_cfa_offset 24
	0x4a, // advance_loc 10
	0x0f, 0x0b, 0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
}

func TestPLTExpression(t *testing.T) {
	fde := elfsym.FDE{Start: 0x1020, Size: 0x40, CIE: stdCIE, Instructions: pltProgram}
	var in interp
	for _, tc := range []struct{ rip, cfa uint64 }{
		{0x1020, 0x1000 + 16}, {0x1026, 0x1000 + 24},
		{0x1030, 0x1008}, {0x103a, 0x1008}, {0x103b, 0x1010}, {0x103f, 0x1010}, {0x1040, 0x1008},
	} {
		if _, err := in.rowAt(fde, tc.rip); err != nil {
			t.Fatal(err)
		}
		regs := fromRegs(Regs{Rip: tc.rip, Rsp: 0x1000})
		cfa, err := in.cfa(exprEnv{regs: &regs, mem: &memory{}})
		if err != nil || cfa != tc.cfa {
			t.Errorf("rip 0x%x: CFA 0x%x, %v; want 0x%x", tc.rip, cfa, err, tc.cfa)
		}
	}
}

func TestExpressions(t *testing.T) {
	regs := fromRegs(Regs{Rsp: 0x100, Rbp: 0x200})
	mem := memory{rd: fakeMem{0x300: {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}}.read}
	env := exprEnv{regs: &regs, mem: &mem}
	for _, tc := range []struct {
		name string
		code []byte
		want uint64
		err  error
	}{
		{"breg rbp", []byte{0x76, 0x78}, 0x1f8, nil},
		{"bregx", []byte{0x92, 0x07, 0x10}, 0x110, nil},
		{"const deref", []byte{0x0a, 0x00, 0x03, 0x06}, 0x8877665544332211, nil},
		{"deref_size 2", []byte{0x0a, 0x00, 0x03, 0x94, 0x02}, 0x2211, nil},
		{"arith", []byte{0x35, 0x33, 0x1c, 0x32, 0x1e, 0x1f, 0x20}, 3, nil}, // ^-((5-3)*2)
		{"rot", []byte{0x31, 0x32, 0x33, 0x17, 0x13, 0x13}, 3, nil},
		{"pick over swap", []byte{0x31, 0x32, 0x14, 0x16, 0x15, 0x02, 0x22, 0x22}, 4, nil},
		{"shra", []byte{0x11, 0x70, 0x31, 0x26}, ^uint64(7), nil},
		{"lt signed", []byte{0x11, 0x7f, 0x30, 0x2d}, 1, nil},
		{"bra taken", []byte{0x31, 0x28, 0x01, 0x00, 0x35, 0x37}, 7, nil},
		{"bra not taken", []byte{0x30, 0x28, 0x01, 0x00, 0x35}, 5, nil},
		{"div", []byte{0x11, 0x79, 0x32, 0x1b}, ^uint64(2), nil}, // -7/2 = -3
		{"div by zero", []byte{0x31, 0x30, 0x1b}, 0, ErrMalformed},
		{"unknown register", []byte{0x70, 0x00}, 0, nil},
		{"empty", nil, 0, ErrMalformed},
		{"stack overflow", repeat(0x30, maxExprStack+1), 0, ErrUnsupported},
		{"branch out", []byte{0x2f, 0x10, 0x00}, 0, ErrMalformed},
		{"piece", []byte{0x30, 0x93, 0x08}, 0, ErrUnsupported},
	} {
		regs.known = allKnown &^ (1 << RAX)
		v, err := env.eval(tc.code)
		switch {
		case tc.name == "unknown register":
			if err == nil {
				t.Errorf("%s: %x, want an error", tc.name, v)
			}
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: %x, %v; want %v", tc.name, v, err, tc.err)
			}
		case err != nil || v != tc.want:
			t.Errorf("%s: 0x%x, %v; want 0x%x", tc.name, v, err, tc.want)
		}
	}
}
