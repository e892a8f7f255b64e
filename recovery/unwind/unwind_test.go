package unwind

import (
	"errors"
	"testing"

	"github.com/assure-rt/assure/recovery/elfsym"
)

const stackBase = 0x7fff0000

// threeFrames is a module of three frame-pointer functions and a stack
// where the first calls the second calls the third, which returns to 0.
func threeFrames() (*Modules, fakeMem, Regs) {
	var cfi fakeCFI
	for _, start := range []uint64{0x1000, 0x2000, 0x3000} {
		cfi = append(cfi, elfsym.FDE{Start: start, Size: 0x100, CIE: stdCIE, Instructions: rbpFrame})
	}
	mem := fakeMem{stackBase: make([]byte, 0x1000)}
	s := uint64(stackBase)
	mem.put(s+0x10, s+0x40) // saved rbp
	mem.put(s+0x18, 0x2020) // return address
	mem.put(s+0x40, s+0x80) //
	mem.put(s+0x48, 0x3030) //
	regs := Regs{Rip: 0x1010, Rsp: s, Rbp: s + 0x10, Rbx: 7}
	return fakeModules(0x1000, 0x4000, cfi), mem, regs
}

func TestUnwindFramePointerCFI(t *testing.T) {
	mods, mem, regs := threeFrames()
	frames, err := Unwind(regs, mem.read, mods, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := uint64(stackBase)
	want := []struct{ pc, cfa uint64 }{{0x1010, s + 0x20}, {0x2020, s + 0x50}, {0x3030, s + 0x90}}
	if len(frames) != len(want) {
		t.Fatalf("%d frames, want %d: %+v", len(frames), len(want), frames)
	}
	for i, w := range want {
		f := frames[i]
		if f.PC != w.pc || f.CFA != w.cfa || f.Module != "/fake" || f.Guessed || f.Return != (i > 0) {
			t.Errorf("frame %d = %+v, want pc 0x%x CFA 0x%x", i, f, w.pc, w.cfa)
		}
		// rbx is callee-saved and never saved: the same in every frame.
		if !f.Known(RBX) || f.Regs.Rbx != 7 || i > 0 && f.Known(RAX) {
			t.Errorf("frame %d: rbx %v/%d, rax known %v", i, f.Known(RBX), f.Regs.Rbx, f.Known(RAX))
		}
	}
}

func TestUnwindLoopStops(t *testing.T) {
	mods, mem, regs := threeFrames()
	mem.put(stackBase+0x10, stackBase+0x10) // rbp saved as itself
	frames, err := Unwind(regs, mem.read, mods, Options{})
	if !errors.Is(err, ErrCFA) || len(frames) != 2 {
		t.Fatalf("got %d frames, %v; want 2, ErrCFA", len(frames), err)
	}
}

func TestUnwindReadError(t *testing.T) {
	mods, mem, regs := threeFrames()
	regs.Rbp = 0x10 // the saved registers are in no memory
	frames, err := Unwind(regs, mem.read, mods, Options{})
	if err == nil || len(frames) != 1 {
		t.Fatalf("got %d frames, %v; want 1 and a read error", len(frames), err)
	}
}

func TestUnwindDepthLimit(t *testing.T) {
	// A signal frame whose ucontext resumes the trampoline itself, on
	// the same stack: the CFA check does not apply across signal frames,
	// the depth limit ends it. The trampoline has no FDE: it is found by
	// its code.
	const code = 0x5000
	mem := fakeMem{stackBase: make([]byte, 0x1000), code: append([]byte{}, trampoline...)}
	mem.put(stackBase+ucGregs+15*8, stackBase) // rsp
	mem.put(stackBase+ucGregs+16*8, code)      // rip
	mods := fakeModules(code, code+0x100, fakeCFI{})
	frames, err := Unwind(Regs{Rip: code, Rsp: stackBase}, mem.read, mods, Options{MaxDepth: 20})
	if !errors.Is(err, ErrDepth) || len(frames) != 20 || !frames[0].Signal || frames[5].Return {
		t.Fatalf("got %d frames, %v; want 20 signal frames and ErrDepth", len(frames), err)
	}
}

func TestUnwindNoCFI(t *testing.T) {
	mods, mem, regs := threeFrames()
	mods = fakeModules(0x1000, 0x4000, fakeCFI{})
	if frames, err := Unwind(regs, mem.read, mods, Options{}); !errors.Is(err, ErrNoCFI) || len(frames) != 1 {
		t.Errorf("no FDE: %d frames, %v; want 1, ErrNoCFI", len(frames), err)
	}
	if frames, err := Unwind(regs, mem.read, &Modules{}, Options{}); !errors.Is(err, ErrNoModule) || len(frames) != 1 {
		t.Errorf("no module: %d frames, %v; want 1, ErrNoModule", len(frames), err)
	}
	// Following frame pointers finds the same frames, guessed.
	frames, err := Unwind(regs, mem.read, mods, Options{FramePointers: true})
	if err != nil || len(frames) != 3 || frames[0].Guessed || !frames[1].Guessed || frames[2].PC != 0x3030 {
		t.Errorf("frame pointers: %+v, %v", frames, err)
	}
}

func TestUnwindMalformedCFI(t *testing.T) {
	for name, prog := range map[string][]byte{
		"truncated uleb":          {0x0c, 0x07},
		"restore without state":   {0x0b},
		"window save":             {0x2d},
		"unknown opcode":          {0x3f},
		"set_loc":                 {0x01, 0, 0, 0, 0, 0, 0, 0, 0},
		"offset after expression": {0x0f, 0x01, 0x30, 0x0e, 0x08},
		"cfa register 99":         {0x0c, 0x63, 0x08},
		"block past the end":      {0x0f, 0x05, 0x30},
		"expression underflow":    {0x0f, 0x01, 0x22},
		"expression loop":         {0x0f, 0x03, 0x2f, 0xfd, 0xff},
		"register location":       {0x0f, 0x01, 0x50},
		"deref outside memory":    {0x0f, 0x02, 0x30, 0x06},
		"return address lost":     {0x08, 0x10}, // same_value rip
		"state stack overflow":    repeat(0x0a, maxRemember+1),
		"too long":                repeat(0x00, maxProgram+1),
	} {
		cfi := fakeCFI{{Start: 0x1000, Size: 0x100, CIE: stdCIE, Instructions: prog}}
		mods := fakeModules(0x1000, 0x2000, cfi)
		mem := fakeMem{stackBase: make([]byte, 0x100)}
		frames, err := Unwind(Regs{Rip: 0x1000, Rsp: stackBase}, mem.read, mods, Options{})
		if err == nil || len(frames) != 1 {
			t.Errorf("%s: %d frames, %v; want an error", name, len(frames), err)
		}
		t.Logf("%s: %v", name, err)
	}
	for name, cie := range map[string]*elfsym.CIE{
		"advance in CIE":  {CodeAlign: 1, DataAlign: -8, ReturnReg: 16, Initial: []byte{0x41}},
		"no CFA":          {CodeAlign: 1, DataAlign: -8, ReturnReg: 16},
		"return column 5": {CodeAlign: 1, DataAlign: -8, ReturnReg: 5, Initial: stdCIE.Initial},
	} {
		cfi := fakeCFI{{Start: 0x1000, Size: 0x100, CIE: cie}}
		frames, err := Unwind(Regs{Rip: 0x1000, Rsp: stackBase}, fakeMem{}.read, fakeModules(0x1000, 0x2000, cfi), Options{})
		if err == nil || len(frames) != 1 {
			t.Errorf("%s: %d frames, %v; want an error", name, len(frames), err)
		}
		t.Logf("%s: %v", name, err)
	}
}

func repeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}
