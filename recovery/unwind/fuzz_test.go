package unwind

import (
	"testing"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// FuzzUnwind runs arbitrary CFA programs over an arbitrary stack: the
// walk must end (with or without an error) within its depth limit, and
// never panic.
func FuzzUnwind(f *testing.F) {
	f.Add(stdCIE.Initial, rbpFrame, make([]byte, 64))
	f.Add(stdCIE.Initial, pltProgram, make([]byte, 64))
	f.Add([]byte{0x0c, 0x07, 0x08, 0x10, 0x10, 0x02, 0x77, 0x00}, []byte{0x0a, 0x41, 0x0b, 0x0f, 0x03, 0x2f, 0xfd, 0xff}, []byte{8, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, initial, prog, stack []byte) {
		cie := &elfsym.CIE{CodeAlign: 1, DataAlign: -8, ReturnReg: 16, Initial: initial}
		cfi := fakeCFI{{Start: 0x1000, Size: 0x1000, CIE: cie, Instructions: prog}}
		mem := fakeMem{stackBase: stack, 0x1000: append([]byte{}, trampoline...)}
		for _, opt := range []Options{{MaxDepth: 32}, {MaxDepth: 32, FramePointers: true}} {
			frames, _ := Unwind(Regs{Rip: 0x1010, Rsp: stackBase, Rbp: stackBase + 16}, mem.read, fakeModules(0x1000, 0x2000, cfi), opt)
			if len(frames) > 32 {
				t.Fatalf("%d frames past the limit", len(frames))
			}
		}
	})
}
