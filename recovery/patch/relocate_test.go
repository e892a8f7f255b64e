package patch

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// effect is what an instruction means wherever it sits: its mnemonic and,
// for a relative operand, the absolute address it designates.
type effect struct {
	op     x86asm.Op
	target uint64
	rel    bool
}

func effects(t *testing.T, code []byte, at uint64) []effect {
	t.Helper()
	var out []effect
	for off := 0; off < len(code); {
		inst, err := decode(code[off:])
		if err != nil {
			t.Fatalf("decode relocated code at +%#x: %v (% x)", off, err, code)
		}
		e := effect{op: inst.Op}
		if inst.PCRel != 0 {
			e.rel = true
			e.target = at + uint64(off) + uint64(inst.Len) + uint64(relValue(inst, code[off:off+inst.Len]))
		}
		out = append(out, e)
		off += inst.Len
	}
	return out
}

// checkRelocation relocates d to newAddr and checks the copy means the
// same as the original, then jumps back right after the displaced bytes.
func checkRelocation(t *testing.T, d *Displaced, newAddr uint64) []byte {
	t.Helper()
	got, err := d.Relocate(newAddr)
	if err != nil {
		t.Fatalf("relocate to %#x: %v", newAddr, err)
	}
	want := effects(t, d.Code, d.Addr)
	have := effects(t, got, newAddr)
	if len(have) != len(want)+1 {
		t.Fatalf("relocated %d instructions into %d (want %d + jmp back): % x", len(want), len(have), len(want), got)
	}
	for i, w := range want {
		h := have[i]
		if h.op != w.op || h.rel != w.rel {
			t.Errorf("instruction %d: %v became %v", i, w, h)
			continue
		}
		if !w.rel {
			continue
		}
		if inRun(d, w.target) && isBranch(w.op) {
			continue // follows the copy; checked by TestRelocateInternalBranch
		}
		if h.target != w.target {
			t.Errorf("instruction %d (%s): designates %#x, want %#x", i, w.op, h.target, w.target)
		}
	}
	last := have[len(have)-1]
	if last.op != x86asm.JMP || last.target != d.Addr+uint64(d.Len()) {
		t.Errorf("copy ends with %v, want jmp %#x", last, d.Addr+uint64(d.Len()))
	}
	return got
}

func inRun(d *Displaced, a uint64) bool { return a >= d.Addr && a < d.Addr+uint64(d.Len()) }

func TestPlanAndRelocate(t *testing.T) {
	const at = 0x401000
	cases := []struct {
		name string
		code []byte
		want int // bytes displaced
	}{
		{"endbr64 push rbp", []byte{0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xc3}, 5},
		{"push push", []byte{0x55, 0x53, 0x48, 0x83, 0xec, 0x18, 0xc3}, 6},
		{"rip-relative load", []byte{0x48, 0x8b, 0x05, 0x10, 0x20, 0x00, 0x00, 0xc3}, 7},
		{"rip-relative lea", []byte{0x48, 0x8d, 0x3d, 0xf0, 0xff, 0xff, 0xff, 0x90, 0xc3}, 7},
		{"short jcc out", []byte{0x85, 0xff, 0x74, 0x30, 0x90, 0x90, 0xc3}, 5},
		{"short jmp out", []byte{0xeb, 0x40, 0x90, 0x90, 0x90, 0x90, 0xc3}, 2 + 1 + 1 + 1},
		{"rel32 jmp", []byte{0xe9, 0x00, 0x01, 0x00, 0x00, 0xc3}, 5},
		{"sse rip-relative", []byte{0xf2, 0x0f, 0x10, 0x05, 0x00, 0x10, 0x00, 0x00, 0xc3}, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := Plan(at, c.code, len(c.code))
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			if d.Len() != c.want {
				t.Fatalf("displaced %d bytes, want %d", d.Len(), c.want)
			}
			for _, to := range []uint64{at + 0x10000, at - 0x8000, at + 0x7fff0000} {
				checkRelocation(t, d, to)
			}
		})
	}
}

func TestRelocateInternalBranch(t *testing.T) {
	// test edi,edi; je +0 (to the nop right after it, inside the run);
	// nop; nop; ret. The run is test, je, nop (5 bytes).
	code := []byte{0x85, 0xff, 0x74, 0x00, 0x90, 0x90, 0xc3}
	d, err := Plan(0x1000, code, 0) // size unknown: no branch scan
	if err != nil {
		t.Fatal(err)
	}
	got := checkRelocation(t, d, 0x2000)
	// In the copy the je (widened to 6 bytes) must land on the copy of
	// the nop: test(2) + je(6).
	inst, _ := x86asm.Decode(got[2:], 64)
	target := 0x2000 + 2 + uint64(inst.Len) + uint64(relValue(inst, got[2:2+inst.Len]))
	if inst.Op != x86asm.JE || target != 0x2000+2+6 {
		t.Fatalf("internal %s goes to %#x, want %#x (the copy of the nop)", inst.Op, target, 0x2000+2+6)
	}
}

func TestPlanRefuses(t *testing.T) {
	cases := []struct {
		name string
		code []byte
		size int
	}{
		{"too short", []byte{0x31, 0xc0, 0xc3}, 3},
		{"ret early", []byte{0x31, 0xc0, 0xc3, 0x90, 0x90, 0x90}, 0},
		{"call first", []byte{0xe8, 0x00, 0x00, 0x00, 0x00, 0xc3}, 6},
		{"indirect jmp", []byte{0xff, 0xe0, 0x90, 0x90, 0x90, 0x90}, 0},
		{"loop", []byte{0xe2, 0xfe, 0x90, 0x90, 0x90, 0xc3}, 6},
		// A loop at the entry: the jnz at +8 jumps back to +2, inside
		// the 5 bytes a jump would cover.
		{"branch into", []byte{0x31, 0xc0, 0xff, 0xc0, 0x83, 0xf8, 0x0a, 0x90, 0x75, 0xf8, 0xc3}, 11},
		{"undecodable", []byte{0x0f, 0xff, 0xff, 0xff, 0xff, 0xff}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Plan(0x1000, c.code, c.size)
			if !errors.Is(err, ErrNotPatchable) {
				t.Fatalf("plan: %v, want ErrNotPatchable", err)
			}
			t.Log(err)
		})
	}
}

func TestRelocateTooFar(t *testing.T) {
	d, err := Plan(0x401000, []byte{0x48, 0x8b, 0x05, 0x10, 0x20, 0x00, 0x00, 0xc3}, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Relocate(0x401000 + 3<<30); !errors.Is(err, ErrNotPatchable) {
		t.Fatalf("relocate 3 GiB away: %v, want ErrNotPatchable", err)
	}
}

const gccFuncs = `
#include <string.h>
int g;
static char buf[64];
int with_global(int x) { g += x; return g; }
int with_string(const char *s) { return strlen(s) + buf[3]; }
int loop_head(int n) { int s = 0; for (int i = 0; i < n; i++) s += i * g; return s; }
double with_double(double x) { return x * 3.25 + g; }
int tiny(void) { return 3; }
long with_stack(long a, long b) { char tmp[256]; memset(tmp, a, sizeof tmp); return tmp[b & 255] + a; }
`

// TestRelocateGCC plans every function gcc makes of gccFuncs at several
// optimisation levels, with and without CET, and checks each relocation.
func TestRelocateGCC(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not installed")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "f.c")
	if err := os.WriteFile(src, []byte(gccFuncs), 0o644); err != nil {
		t.Fatal(err)
	}
	patched, refused := 0, 0
	for _, flags := range [][]string{{"-O0"}, {"-O2"}, {"-O2", "-fcf-protection"}, {"-Os"}, {"-O3", "-fPIC"}} {
		obj := filepath.Join(dir, "f.so")
		args := append(append([]string{}, flags...), "-shared", "-fPIC", "-o", obj, src)
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, out)
		}
		f, err := elf.Open(obj)
		if err != nil {
			t.Fatal(err)
		}
		syms, _ := f.DynamicSymbols()
		text := f.Section(".text")
		data, _ := text.Data()
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value < text.Addr || s.Value >= text.Addr+text.Size {
				continue
			}
			off := s.Value - text.Addr
			code := data[off:]
			d, err := Plan(s.Value, code, int(s.Size))
			if err != nil {
				if !errors.Is(err, ErrNotPatchable) {
					t.Errorf("%v %s: %v", flags, s.Name, err)
				}
				refused++
				t.Logf("%v %s: %v", flags, s.Name, err)
				continue
			}
			patched++
			checkRelocation(t, d, s.Value+0x40000000)
			checkRelocation(t, d, s.Value-0x10000)
		}
		f.Close()
	}
	if patched == 0 {
		t.Fatal("no gcc function could be planned")
	}
	t.Logf("%d entries relocated, %d refused", patched, refused)
}

func TestJmpRel32(t *testing.T) {
	b, err := JmpRel32(0x1000, 0x2000)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0xe9 || int32(binary.LittleEndian.Uint32(b[1:])) != 0x2000-0x1005 {
		t.Fatalf("jmp encoding % x", b)
	}
}
