package unwind

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/assure-rt/assure/recovery/elfsym"
)

// The sigreturn trampoline of x86-64 Linux (glibc's and musl's
// __restore_rt): mov $15,%rax (rt_sigreturn); syscall. The kernel makes
// a handler return to it, with rsp at the ucontext it saved.
var trampoline = []byte{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}

// syscallAt is the offset of the syscall instruction in the trampoline,
// where a thread stopped in rt_sigreturn is.
const syscallAt = 7

// The ucontext layout (asm/sigcontext.h, sys/ucontext.h): uc_flags,
// uc_link, uc_stack (24 bytes), then mcontext's gregs in this order.
const ucGregs = 40

var gregOrder = [...]Reg{R8, R9, R10, R11, R12, R13, R14, R15, RDI, RSI, RBP, RBX, RDX, RAX, RCX, RSP, RIP}

// atTrampoline reports whether pc is in a sigreturn trampoline: its FDE
// says so (augmentation 'S', glibc), or its code is the trampoline's.
// The code is only read where no FDE covers pc as an ordinary function
// would: musl's trampoline has no CFI, and a return address to it may
// fall at the very end of the preceding function's FDE.
func (w *walker) atTrampoline(pc uint64, exact bool, r *modRange, fde elfsym.FDE, haveFDE bool) bool {
	if haveFDE && fde.CIE != nil && fde.CIE.Signal {
		return true
	}
	if haveFDE && pc-r.bias-fde.Start < fde.Size {
		return false // pc (and pc-1) inside one ordinary function
	}
	if w.codeIs(pc, trampoline) {
		return true
	}
	return exact && pc >= syscallAt && w.codeIs(pc-syscallAt, trampoline)
}

func (w *walker) codeIs(addr uint64, want []byte) bool {
	b := w.code[:len(want)]
	return w.mem.bytes(addr, b) == nil && bytes.Equal(b, want)
}

// sigreturn reads the interrupted code's registers from the ucontext at
// the trampoline's rsp (the handler's return popped the pointer to the
// trampoline that sat above it), as rt_sigreturn will.
func (w *walker) sigreturn(f *Frame, cur *regset) (regset, stepKind, error) {
	uc, ok := cur.get(RSP)
	if !ok {
		return regset{}, 0, fmt.Errorf("signal frame at 0x%x: rsp unknown", f.PC)
	}
	raw := w.gregs[:]
	if err := w.mem.bytes(uc+ucGregs, raw); err != nil {
		return regset{}, 0, fmt.Errorf("signal frame at 0x%x: ucontext: %w", f.PC, err)
	}
	var next regset
	for i, reg := range gregOrder {
		next.set(reg, binary.LittleEndian.Uint64(raw[i*8:]))
	}
	// As glibc's CFI for the trampoline has it: the CFA is the
	// interrupted code's rsp.
	f.CFA = next.v[RSP]
	return next, stepSignal, nil
}
