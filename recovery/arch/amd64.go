// Package arch holds everything specific to the instruction set: register
// layout, the breakpoint and syscall instructions, the calling convention
// used for error virtualization, and emulation of the instructions that
// breakpoints displace. Only x86-64 is implemented; an arm64 port adds a
// sibling file set behind the same names.
package arch

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Regs is the general register set as ptrace reads it.
type Regs = unix.PtraceRegs

// Breakpoint is the trap instruction planted at rescue points (int3).
var Breakpoint = []byte{0xcc}

// SyscallInsn is the system call instruction followed by a breakpoint, the
// code the supervisor runs inside a tracee to inject a system call.
var SyscallInsn = []byte{0x0f, 0x05, 0xcc}

// XstateNote is the regset holding FP, SSE and AVX state.
const XstateNote = unix.NT_X86_XSTATE

// XstateMax bounds the XSAVE area (AVX-512 needs about 2.7 KiB).
const XstateMax = 8192

// PC returns the instruction pointer.
func PC(r *Regs) uint64 { return r.Rip }

// SetPC sets the instruction pointer.
func SetPC(r *Regs, pc uint64) { r.Rip = pc }

// SP returns the stack pointer.
func SP(r *Regs) uint64 { return r.Rsp }

// TrapPC returns the address of the breakpoint that a thread stopped at:
// after int3 the instruction pointer is one byte past it.
func TrapPC(r *Regs) uint64 { return r.Rip - uint64(len(Breakpoint)) }

// ReturnFromCall makes a thread stopped at a function's first instruction
// return to its caller as if the function had executed `ret` with value
// in the return register (System V: rax; callee-saved registers are still
// the caller's at entry). retAddr is the address the call pushed.
func ReturnFromCall(r *Regs, retAddr uint64, value *int64) {
	r.Rip = retAddr
	r.Rsp += 8
	if value != nil {
		r.Rax = uint64(*value)
	}
}

// PrepareSyscall loads a system call into a register set whose Rip points
// at SyscallInsn. orig_rax is set to -1 so that the kernel does not treat
// the thread as interrupted in a restartable call when it resumes.
func PrepareSyscall(r *Regs, pc uint64, nr uint64, args ...uint64) {
	r.Rip = pc
	r.Rax = nr
	r.Orig_rax = ^uint64(0)
	dst := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i, a := range args {
		*dst[i] = a
	}
}

// SyscallResult returns the result of an injected system call, or an
// errno when the kernel returned one.
func SyscallResult(r *Regs) (uint64, error) {
	v := int64(r.Rax)
	if v < 0 && v > -4096 {
		return 0, unix.Errno(-v)
	}
	return r.Rax, nil
}

// Emulate executes the instruction displaced by a breakpoint without
// running the thread, for the common function prologue instructions:
// endbr64, nop, push reg. It reports false for anything else, and the
// caller steps the original instruction instead. write stores bytes into
// the tracee's memory.
func Emulate(code []byte, r *Regs, write func(addr uint64, b []byte) error) (bool, error) {
	if len(code) >= 4 && code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && code[3] == 0xfa {
		r.Rip += 4 // endbr64: no architectural effect outside CET
		return true, nil
	}
	inst, err := x86asm.Decode(code, 64)
	if err != nil {
		return false, nil
	}
	switch inst.Op {
	case x86asm.NOP:
		r.Rip += uint64(inst.Len)
		return true, nil
	case x86asm.MOV:
		return emulateMov(inst, r), nil
	case x86asm.LEA:
		mem, ok := inst.Args[1].(x86asm.Mem)
		dst, ok2 := inst.Args[0].(x86asm.Reg)
		if !ok || !ok2 || mem.Base != x86asm.RIP || mem.Index != 0 || mem.Segment != 0 {
			return false, nil
		}
		next := r.Rip + uint64(inst.Len)
		return setReg(r, dst, next+uint64(mem.Disp)) && advance(r, inst), nil
	case x86asm.PUSH:
		// In 64-bit mode a push of a 64-bit register pushes 8 bytes (the
		// decoder's DataSize does not say so reliably).
		reg, ok := inst.Args[0].(x86asm.Reg)
		if !ok || regBits(reg) != 64 || code[0] == 0x66 {
			return false, nil
		}
		val, ok := regValue(r, reg)
		if !ok {
			return false, nil
		}
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], val)
		if err := write(r.Rsp-8, b[:]); err != nil {
			return false, fmt.Errorf("emulate push at %#x: %w", r.Rip, err)
		}
		r.Rsp -= 8
		r.Rip += uint64(inst.Len)
		return true, nil
	}
	return false, nil
}

// emulateMov handles register-to-register and immediate-to-register
// moves, which set no flags. A 32-bit destination clears the upper half.
func emulateMov(inst x86asm.Inst, r *Regs) bool {
	dst, ok := inst.Args[0].(x86asm.Reg)
	if !ok {
		return false
	}
	var v uint64
	switch src := inst.Args[1].(type) {
	case x86asm.Reg:
		val, ok := regValue(r, wide(src))
		if !ok || regBits(src) != regBits(dst) {
			return false
		}
		v = val
	case x86asm.Imm:
		v = uint64(int64(src))
	default:
		return false
	}
	switch regBits(dst) {
	case 32:
		v = uint64(uint32(v))
	case 64:
	default:
		return false
	}
	return setReg(r, dst, v) && advance(r, inst)
}

func advance(r *Regs, inst x86asm.Inst) bool {
	r.Rip += uint64(inst.Len)
	return true
}

// regBits returns the width of a general register operand (32 or 64).
func regBits(reg x86asm.Reg) int {
	switch {
	case reg >= x86asm.EAX && reg <= x86asm.R15L:
		return 32
	case reg >= x86asm.RAX && reg <= x86asm.R15:
		return 64
	}
	return 0
}

// wide maps a 32-bit register to its 64-bit register.
func wide(reg x86asm.Reg) x86asm.Reg {
	if regBits(reg) == 32 {
		return reg - x86asm.EAX + x86asm.RAX
	}
	return reg
}

func setReg(r *Regs, reg x86asm.Reg, v uint64) bool {
	p := regPtr(r, wide(reg))
	if p == nil {
		return false
	}
	*p = v
	return true
}

func regPtr(r *Regs, reg x86asm.Reg) *uint64 {
	switch reg {
	case x86asm.RAX:
		return &r.Rax
	case x86asm.RBX:
		return &r.Rbx
	case x86asm.RCX:
		return &r.Rcx
	case x86asm.RDX:
		return &r.Rdx
	case x86asm.RSI:
		return &r.Rsi
	case x86asm.RDI:
		return &r.Rdi
	case x86asm.RBP:
		return &r.Rbp
	case x86asm.RSP:
		return &r.Rsp
	case x86asm.R8:
		return &r.R8
	case x86asm.R9:
		return &r.R9
	case x86asm.R10:
		return &r.R10
	case x86asm.R11:
		return &r.R11
	case x86asm.R12:
		return &r.R12
	case x86asm.R13:
		return &r.R13
	case x86asm.R14:
		return &r.R14
	case x86asm.R15:
		return &r.R15
	}
	return nil
}

// MaxInsnLen is the longest x86 instruction.
const MaxInsnLen = 15

func regValue(r *Regs, reg x86asm.Reg) (uint64, bool) {
	if p := regPtr(r, reg); p != nil {
		return *p, true
	}
	return 0, false
}

// Restart codes the kernel leaves in rax when a blocking system call is
// interrupted by a stop; on resume it restarts the call.
const (
	ERESTARTSYS           = 512
	ERESTARTNOINTR        = 513
	ERESTARTNOHAND        = 514
	ERESTART_RESTARTBLOCK = 516
)

// RestartSyscall makes a thread stopped just after a system call returned
// run the same call again: back over the 2-byte syscall instruction, with
// the call number back in rax.
func RestartSyscall(r *Regs) {
	r.Rax = r.Orig_rax
	r.Rip -= 2
}

// SyscallArgs returns the six argument registers of a system call, as
// a thread stopped at its entry holds them (the number is in orig_rax).
func SyscallArgs(r *Regs) [6]uint64 {
	return [6]uint64{r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9}
}

// SetSyscall makes a thread stopped at a system call's entry run system
// call nr with args instead: the kernel reads both after the stop.
func SetSyscall(r *Regs, nr uint64, args ...uint64) {
	r.Orig_rax = nr
	dst := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i, a := range args {
		*dst[i] = a
	}
}

// RewindSyscall turns the registers of a thread stopped at a system
// call's entry into those it had just before its syscall instruction,
// so that it makes the same call again when it runs.
func RewindSyscall(r *Regs) {
	RestartSyscall(r)
	r.Orig_rax = ^uint64(0)
}

// InSyscall reports whether a stopped thread was interrupted inside a
// system call (orig_rax holds its number).
func InSyscall(r *Regs) bool { return int64(r.Orig_rax) >= 0 }

// Restarting reports whether the system call a thread is stopped in was
// interrupted before it completed (the kernel will restart it or return
// EINTR): rax holds a restart code.
func Restarting(r *Regs) bool {
	switch -int64(r.Rax) {
	case ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK:
		return true
	}
	return false
}

// CallerFrames returns candidate return addresses found by scanning the
// stack words above sp: each word that points just after a call
// instruction in executable memory. Used only to symbolize crash stacks
// when no frame information is at hand.
func CallerFrames(stack []byte, isCallSite func(uint64) bool, max int) []uint64 {
	var out []uint64
	for i := 0; i+8 <= len(stack) && len(out) < max; i += 8 {
		v := binary.LittleEndian.Uint64(stack[i:])
		if v > 0x1000 && isCallSite(v) {
			out = append(out, v)
		}
	}
	return out
}

// IsCallBefore reports whether code, the bytes ending at a candidate
// return address, ends with a call instruction (e8 rel32, or ff /2).
func IsCallBefore(code []byte) bool {
	n := len(code)
	if n >= 5 && code[n-5] == 0xe8 {
		return true
	}
	for l := 2; l <= 7 && l <= n; l++ {
		if code[n-l] == 0xff && (code[n-l+1]>>3)&7 == 2 {
			return true
		}
		if l >= 3 && code[n-l] >= 0x40 && code[n-l] <= 0x4f && code[n-l+1] == 0xff && (code[n-l+2]>>3)&7 == 2 {
			return true
		}
	}
	return false
}
