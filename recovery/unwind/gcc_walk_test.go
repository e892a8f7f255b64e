package unwind

import (
	"debug/elf"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/assure-rt/assure/recovery/elfsym"
)

func TestWalkThroughLibc(t *testing.T) {
	bins := buildProg(t)
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			pid, regs := stopped(t, bins[b.name], "0")
			frames, err := walkProcess(t, pid, &regs, nil)
			if err != nil {
				t.Fatalf("walk: %v%s", err, names(frames))
			}
			// kill (libc), c, b, a, main, libc's start code, _start.
			if len(frames) < 7 || !isLibc(frames[0].Module) || frames[0].Function != "kill" {
				t.Fatalf("innermost frames are not libc's kill:%s", names(frames))
			}
			i := expectSeq(t, frames, 1, bins[b.name], "c", "b", "a", "main")
			if !isLibc(frames[i].Module) {
				t.Errorf("main's caller is not in libc:%s", names(frames))
			}
			last := frames[len(frames)-1]
			if last.Function != "_start" || last.Module != bins[b.name] {
				t.Errorf("outermost frame is not _start:%s", names(frames))
			}
			checkChain(t, frames)
		})
	}
}

func TestWalkFromSignalHandler(t *testing.T) {
	bins := buildProg(t)
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			pid, regs := stopped(t, bins[b.name], "1")
			frames, err := walkProcess(t, pid, &regs, nil)
			if err != nil {
				t.Fatalf("walk: %v%s", err, names(frames))
			}
			// kill, handler, the trampoline, then the faulting c.
			if len(frames) < 8 || frames[0].Function != "kill" || frames[1].Function != "handler" {
				t.Fatalf("innermost frames are not kill, handler:%s", names(frames))
			}
			tr := frames[2]
			if !tr.Signal || !isLibc(tr.Module) {
				t.Fatalf("frame 2 is not libc's signal trampoline:%s", names(frames))
			}
			c := frames[3]
			if c.Return || !c.Known(RAX) || c.Regs.Rip != c.PC {
				t.Errorf("interrupted frame %+v: want the exact faulting pc, all registers", c)
			}
			expectSeq(t, frames, 3, bins[b.name], "c", "b", "a", "main")
			checkChain(t, frames)
		})
	}
}

// TestWalkStripped walks the stripped -O2 build: no names, but each frame
// lies in the unstripped build's function of the same position.
func TestWalkStripped(t *testing.T) {
	bins := buildProg(t)
	plain, err := elfsym.Open(bins["O2-nofp"])
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"0", "1"} {
		t.Run("mode"+mode, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			bin := bins["O2-nofp-stripped"]
			pid, regs := stopped(t, bin, mode)
			frames, err := walkProcess(t, pid, &regs, nil)
			if err != nil {
				t.Fatalf("walk: %v%s", err, names(frames))
			}
			var got []string
			for _, f := range frames {
				if f.Module != bin {
					continue
				}
				if f.Function != "" {
					t.Errorf("stripped frame named %q", f.Function)
				}
				name, off, ok := plain.Symbolize(f.Vaddr - b2u(f.Return))
				if !ok || f.FuncStart != f.Vaddr-b2u(f.Return)-off {
					t.Errorf("frame at 0x%x: starts at 0x%x, unstripped %s+0x%x", f.Vaddr, f.FuncStart, name, off)
				}
				got = append(got, name)
			}
			want := []string{"c", "b", "a", "main", "_start"}
			if mode == "1" {
				want = append([]string{"handler"}, want...)
			}
			if filepath.Join(got...) != filepath.Join(want...) {
				t.Errorf("frames in the program: %v, want %v", got, want)
			}
		})
	}
}

// expectSeq checks that frames[i:] start with the functions of bin in
// want, and returns the index after them.
func expectSeq(t *testing.T, frames []Frame, i int, bin string, want ...string) int {
	t.Helper()
	for _, name := range want {
		if i >= len(frames) || frames[i].Function != name || frames[i].Module != bin {
			t.Fatalf("frame %d is not %s:%s", i, name, names(frames))
		}
		if frames[i].Offset == 0 && frames[i].Return {
			t.Errorf("frame %d (%s): return address at the function start", i, name)
		}
		i++
	}
	return i
}

// checkChain checks what every walk must satisfy: each caller's rsp is
// its callee's CFA, and CFAs grow (no sigaltstack here).
func checkChain(t *testing.T, frames []Frame) {
	t.Helper()
	t.Logf("frames:%s", names(frames))
	for i := 1; i < len(frames); i++ {
		prev, f := frames[i-1], frames[i]
		if f.Regs.Rsp != prev.CFA || !f.Known(RSP) || !f.Known(RIP) {
			t.Errorf("frame %d: rsp 0x%x, callee's CFA 0x%x", i, f.Regs.Rsp, prev.CFA)
		}
		if f.CFA != 0 && f.CFA <= prev.CFA && i != len(frames)-1 {
			t.Errorf("frame %d: CFA 0x%x not above 0x%x", i, f.CFA, prev.CFA)
		}
	}
}

// TestPLTFromGCC evaluates the CFA of the linker's .plt, described by
// DW_CFA_def_cfa_expression, at each instruction of an entry.
func TestPLTFromGCC(t *testing.T) {
	bins := buildProg(t)
	ef, err := elf.Open(bins["O0"])
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	plt := ef.Section(".plt")
	if plt == nil || plt.Size < 32 {
		t.Skip("no lazy .plt in this toolchain's output")
	}
	cfi, err := elfsym.OpenCFI(bins["O0"])
	if err != nil {
		t.Fatal(err)
	}
	fde, ok := cfi.Lookup(plt.Addr + 16)
	if !ok {
		t.Fatalf("no FDE for .plt at 0x%x", plt.Addr)
	}
	var in interp
	// The second entry: jmp *GOT (6 bytes), push $n (5), jmp .plt (5).
	for off, extra := range map[uint64]uint64{16: 0, 16 + 6: 0, 16 + 11: 8, 16 + 15: 8} {
		rip := plt.Addr + off
		if _, err := in.rowAt(fde, rip); err != nil {
			t.Fatal(err)
		}
		regs := fromRegs(Regs{Rip: rip, Rsp: 0x1000})
		cfa, err := in.cfa(exprEnv{regs: &regs, mem: &memory{}})
		if err != nil || cfa != 0x1008+extra {
			t.Errorf(".plt+%d: CFA 0x%x, %v; want 0x%x", off, cfa, err, 0x1008+extra)
		}
	}
}
