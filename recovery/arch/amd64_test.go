package arch

import (
	"encoding/binary"
	"testing"
)

func TestEmulate(t *testing.T) {
	cases := []struct {
		name  string
		code  []byte
		setup func(r *Regs)
		check func(t *testing.T, r *Regs, mem map[uint64]uint64)
		len   uint64
	}{
		{"endbr64", []byte{0xf3, 0x0f, 0x1e, 0xfa}, nil, nil, 4},
		{"push rbp", []byte{0x55}, func(r *Regs) { r.Rbp = 0x1122334455667788 }, func(t *testing.T, r *Regs, mem map[uint64]uint64) {
			if r.Rsp != 0x7000-8 || mem[0x7000-8] != 0x1122334455667788 {
				t.Errorf("rsp %#x mem %#x", r.Rsp, mem[0x7000-8])
			}
		}, 1},
		{"push r15", []byte{0x41, 0x57}, func(r *Regs) { r.R15 = 42 }, func(t *testing.T, r *Regs, mem map[uint64]uint64) {
			if mem[0x7000-8] != 42 {
				t.Errorf("pushed %d", mem[0x7000-8])
			}
		}, 2},
		{"mov edi,eax", []byte{0x89, 0xf8}, func(r *Regs) { r.Rdi = 0xffffffff00000005; r.Rax = 0xdead_0000_0000 }, func(t *testing.T, r *Regs, _ map[uint64]uint64) {
			if r.Rax != 5 {
				t.Errorf("rax %#x, want 5 (upper half cleared)", r.Rax)
			}
		}, 2},
		{"mov rsp,rbp", []byte{0x48, 0x89, 0xe5}, nil, func(t *testing.T, r *Regs, _ map[uint64]uint64) {
			if r.Rbp != 0x7000 {
				t.Errorf("rbp %#x", r.Rbp)
			}
		}, 3},
		{"lea rip", []byte{0x48, 0x8d, 0x15, 0xb7, 0x2c, 0x00, 0x00}, nil, func(t *testing.T, r *Regs, _ map[uint64]uint64) {
			if r.Rdx != 0x1000+7+0x2cb7 {
				t.Errorf("rdx %#x", r.Rdx)
			}
		}, 7},
		{"mov imm32,eax", []byte{0xb8, 0xff, 0xff, 0xff, 0xff}, func(r *Regs) { r.Rax = 1 << 40 }, func(t *testing.T, r *Regs, _ map[uint64]uint64) {
			if r.Rax != 0xffffffff {
				t.Errorf("rax %#x", r.Rax)
			}
		}, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Regs{Rip: 0x1000, Rsp: 0x7000}
			if c.setup != nil {
				c.setup(r)
			}
			mem := map[uint64]uint64{}
			write := func(addr uint64, b []byte) error {
				mem[addr] = binary.LittleEndian.Uint64(b)
				return nil
			}
			code := append(append([]byte{}, c.code...), make([]byte, 15)...)
			ok, err := Emulate(code, r, write)
			if err != nil || !ok {
				t.Fatalf("Emulate = %v, %v; want emulated", ok, err)
			}
			if r.Rip != 0x1000+c.len {
				t.Errorf("rip %#x, want %#x", r.Rip, 0x1000+c.len)
			}
			if c.check != nil {
				c.check(t, r, mem)
			}
		})
	}
}

func TestEmulateRefuses(t *testing.T) {
	for name, code := range map[string][]byte{
		"sub rsp":        {0x48, 0x83, 0xec, 0x18}, // sets flags
		"mov to memory":  {0x48, 0x89, 0x07},       // mov %rax,(%rdi)
		"call":           {0xe8, 0, 0, 0, 0},
		"mov from stack": {0x48, 0x8b, 0x44, 0x24, 0x08}, // mov 8(%rsp),%rax
	} {
		r := &Regs{Rip: 0x1000, Rsp: 0x7000}
		before := *r
		ok, err := Emulate(append(code, make([]byte, 15)...), r, func(uint64, []byte) error { return nil })
		if ok || err != nil || *r != before {
			t.Errorf("%s: Emulate = %v, %v, regs changed %v; want refusal without side effects", name, ok, err, *r != before)
		}
	}
}

func TestIsCallBefore(t *testing.T) {
	if !IsCallBefore([]byte{0, 0, 0xe8, 1, 2, 3, 4}) {
		t.Error("call rel32 not recognised")
	}
	if !IsCallBefore([]byte{0, 0, 0, 0, 0, 0xff, 0xd0}) { // call *%rax
		t.Error("call *%rax not recognised")
	}
	if IsCallBefore([]byte{0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90}) {
		t.Error("nops taken for a call")
	}
}
