// The code assure injects into a supervised process: the fast path of a
// rescue point. It is never called from Go. The supervisor copies each
// routine's bytes (from its start to the END marker) into a code page of
// the tracee; they are position independent (only relative branches) and
// find their data through the control block whose address the calling
// stub pushes. Every system call of the injected code is made from this
// code, inside the page that syscall user dispatch always allows.

#include "textflag.h"
#include "layout_amd64.h"

// END marks where a routine's bytes end: ud2, then "ASSUREnd".
#define END BYTE $0x0f; BYTE $0x0b; BYTE $0x41; BYTE $0x53; BYTE $0x53; BYTE $0x55; BYTE $0x52; BYTE $0x45; BYTE $0x6e; BYTE $0x64

#define SYS_ioctl 16
#define SYS_prctl 157
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PAGEMAP_SCAN $0xc0606610
#define TASK_END $0x00007ffffffff000

// rdpkru / wrpkru: eax = PKRU (ecx = edx = 0).
#define RDPKRU BYTE $0x0f; BYTE $0x01; BYTE $0xee
#define WRPKRU BYTE $0x0f; BYTE $0x01; BYTE $0xef
// rdfsbase rax: the thread pointer (the kernel enables it with FSGSBASE).
#define RDFSBASE BYTE $0xf3; BYTE $0x48; BYTE $0x0f; BYTE $0xae; BYTE $0xc0

// PKEYOFF write-protects the shadow again when protection keys guard it
// (R8 is the control block; clobbers AX, CX, DX). l names its label.
#define PKEYOFF(l) \
	MOVL CTL_FLAGS(R8), AX; \
	TESTL $FLAG_PKEY, AX; \
	JEQ l; \
	XORL CX, CX; \
	XORL DX, DX; \
	RDPKRU; \
	ORL CTL_PKEYMASK(R8), AX; \
	XORL CX, CX; \
	XORL DX, DX; \
	WRPKRU; \
l:

// stubEnter runs at every entry of a patched rescue point. The entry stub
// pushed the control block's address and the rescue point's index; above
// them is the return address the call pushed, and every register still
// holds what the function's caller left in it.
//
// On the fast path it takes the checkpoint here, in the process: one
// PAGEMAP_SCAN that reports the pages written since the last one and
// write-protects them again, a copy of those pages into the shadow, the
// caller's callee-saved registers saved, and the return address replaced
// by the trampoline. It then returns to the relocated first instructions
// of the function (rp.back). When the supervisor must take over (fast
// path off, a nested call, a broken scan) it returns instead to rp.trap,
// an int3 the supervisor handles as the entry of that rescue point.
//
// Stack after the saves: 0 r11 .. 64 ax, 72 flags, 80 ctl, 88 k, 96 return
// address (its address is the function's entry rsp).
TEXT ·stubEnter(SB), NOSPLIT|NOFRAME, $0-0
	PUSHFQ
	PUSHQ AX
	PUSHQ CX
	PUSHQ DX
	PUSHQ SI
	PUSHQ DI
	PUSHQ R8
	PUSHQ R9
	PUSHQ R10
	PUSHQ R11
	CLD
	MOVQ 80(SP), R8  // control block
	LEAQ 96(SP), R10 // entry rsp: the slot of the return address
	MOVQ 88(SP), AX
	SHLQ $RP_SHIFT, AX
	INCQ (CTL_RPTAB+RP_CALLS)(R8)(AX*1)

	// No supervisor: no checkpoint (no one could roll back to it) and no
	// trap (no one would handle it).
	MOVL CTL_ALIVE(R8), AX
	TESTL AX, AX
	JEQ unprotected
	TESTL $FUTEX_OWNER_DIED, AX
	JNE unprotected
	MOVL CTL_FLAGS(R8), AX
	TESTL $FLAG_FAST, AX
	JEQ slow
	TESTL $(FLAG_BROKEN|FLAG_STALE|FLAG_LAYOUT), AX
	JNE slow
	TESTL $FLAG_READY, AX
	JEQ unprotected
	// With other threads, one thread only takes checkpoints here (the
	// first to come): the others' entries go to the supervisor.
	TESTL $FLAG_MT, AX
	JEQ owned
	RDFSBASE
	MOVQ AX, CX
	XORL AX, AX
	LOCK
	CMPXCHGQ CX, CTL_OWNER(R8)
	JEQ owned
	CMPQ AX, CX
	JNE slow

owned:
	MOVL CTL_DEPTH(R8), AX
	TESTL AX, AX
	JEQ fresh
	// A frame is active. Below us on the stack (its slot is above our
	// entry rsp) it is live and this call nests in it: the supervisor
	// takes nested checkpoints. Else a longjmp left it: it is over.
	MOVQ CTL_FSLOT(R8), AX
	CMPQ AX, R10
	JCC slow
	MOVL $0, CTL_DEPTH(R8)
	MOVB $0, CTL_SELECTOR(R8)
	INCQ CTL_LONGJMPS(R8)

fresh:
	// Let the injected code write the shadow (protection keys).
	MOVL CTL_FLAGS(R8), AX
	TESTL $FLAG_PKEY, AX
	JEQ scan
	XORL CX, CX
	XORL DX, DX
	RDPKRU
	MOVL CTL_PKEYMASK(R8), CX
	NOTL CX
	ANDL CX, AX
	XORL CX, CX
	XORL DX, DX
	WRPKRU

scan:
	// Two spans: [0, stack_lo) and [entry rsp page, end of user space).
	// The part of this thread's stack below its stack pointer is dead:
	// it needs no copy, and its flags are left as they are.
	SUBQ $(ARG_BYTES+16), SP
	MOVQ $0, R9 // span index

span:
	CMPQ R9, $2
	JEQ shared
	TESTQ R9, R9
	JNE span1
	MOVQ $0, AX
	MOVQ CTL_STACKLO(R8), DX
	JMP havespan

span1:
	MOVQ R10, AX
	ANDQ $-4096, AX
	MOVQ TASK_END, DX

havespan:
	CMPQ AX, DX
	JCC nextspan
	MOVQ $ARG_BYTES, ARG_SIZE(SP)
	MOVQ $1, ARG_FLAGS(SP) // PM_SCAN_WP_MATCHING
	MOVQ AX, ARG_START(SP)
	MOVQ DX, ARG_END(SP)
	MOVQ $0, ARG_WALKEND(SP)
	MOVQ CTL_VEC(R8), AX
	MOVQ AX, ARG_VEC(SP)
	MOVQ CTL_VECLEN(R8), AX
	MOVQ AX, ARG_VECLEN(SP)
	MOVQ $0, ARG_MAXPAGES(SP)
	MOVQ $0, ARG_INV(SP)
	MOVQ $2, ARG_MASK(SP) // PAGE_IS_WRITTEN
	MOVQ $0, ARG_ANYOF(SP)
	MOVQ $2, ARG_RET(SP)

ioctl:
	MOVL CTL_PMFD(R8), DI
	MOVQ PAGEMAP_SCAN, SI
	MOVQ SP, DX
	MOVQ $SYS_ioctl, AX
	SYSCALL
	TESTQ AX, AX
	JLT scanfail
	MOVQ AX, (ARG_BYTES+0)(SP) // regions returned
	MOVQ $0, (ARG_BYTES+8)(SP) // region index

region:
	MOVQ (ARG_BYTES+8)(SP), AX
	CMPQ AX, (ARG_BYTES+0)(SP)
	JEQ walked
	LEAQ (AX)(AX*2), CX
	SHLQ $3, CX
	ADDQ CTL_VEC(R8), CX
	MOVQ 0(CX), SI // region start
	MOVQ 8(CX), DX // region end

copyrun:
	CMPQ SI, DX
	JCC nextregion
	// The range holding SI: its shadow span is where the pages go.
	MOVL CTL_NRANGES(R8), CX
	LEAQ CTL_RANGES(R8), DI

findrange:
	TESTQ CX, CX
	JEQ norange
	CMPQ SI, RANGE_START(DI)
	JCS nextrange
	CMPQ SI, RANGE_END(DI)
	JCS foundrange

nextrange:
	ADDQ $RANGE_SIZE, DI
	DECQ CX
	JMP findrange

foundrange:
	MOVQ RANGE_END(DI), CX
	CMPQ DX, CX
	JCC runend
	MOVQ DX, CX

runend:
	SUBQ SI, CX // bytes to copy, within this range
	MOVQ SI, AX
	SUBQ RANGE_START(DI), AX
	ADDQ RANGE_OFF(DI), AX
	ADDQ CTL_SHADOW(R8), AX
	MOVQ AX, DI
	MOVQ CX, AX
	SHRQ $12, AX
	ADDQ AX, CTL_PAGES(R8)
	SHRQ $3, CX
	REP; MOVSQ
	JMP copyrun

norange:
	// Written, but in no range the supervisor gave us (a mapping grew):
	// not copied. The supervisor takes this call and tracks it.
	LOCK
	ORL $FLAG_STALE, CTL_FLAGS(R8)
	ADDQ $4096, SI
	JMP copyrun

nextregion:
	INCQ (ARG_BYTES+8)(SP)
	JMP region

walked:
	// The walk stops early when the vector is full: go on from there.
	MOVQ ARG_WALKEND(SP), AX
	CMPQ AX, ARG_END(SP)
	JCC nextspan
	CMPQ AX, ARG_START(SP)
	JLS nextspan
	MOVQ AX, ARG_START(SP)
	JMP ioctl

nextspan:
	INCQ R9
	JMP span

shared:
	// Shared ranges are copied whole: other processes write them
	// without our page tables knowing.
	MOVL CTL_NRANGES(R8), R9
	LEAQ CTL_RANGES(R8), R11

sharedrange:
	TESTQ R9, R9
	JEQ scanned
	MOVQ RANGE_FLAGS(R11), AX
	TESTQ $RANGE_SHARED, AX
	JEQ nextshared
	MOVQ RANGE_START(R11), SI
	MOVQ RANGE_OFF(R11), DI
	ADDQ CTL_SHADOW(R8), DI
	MOVQ RANGE_END(R11), CX
	SUBQ SI, CX
	SHRQ $3, CX
	REP; MOVSQ

nextshared:
	ADDQ $RANGE_SIZE, R11
	DECQ R9
	JMP sharedrange

scanfail:
	// Pages the failed walk protected were not copied: the shadow is no
	// longer exact. The supervisor rebuilds it and handles this call.
	MOVQ AX, CTL_SCANERR(R8)
	LOCK
	ORL $FLAG_BROKEN, CTL_FLAGS(R8)
	ADDQ $(ARG_BYTES+16), SP
	PKEYOFF(failoff)
	JMP slow

scanned:
	ADDQ $(ARG_BYTES+16), SP
	PKEYOFF(okoff)
	MOVL CTL_FLAGS(R8), AX
	TESTL $FLAG_STALE, AX
	JNE slow
	// The frame: what the rollback needs to make the function return.
	MOVL $1, CTL_DEPTH(R8)
	MOVQ 88(SP), AX
	MOVL AX, CTL_FRP(R8)
	MOVQ R10, CTL_FSLOT(R8)
	MOVQ (R10), AX
	MOVQ AX, CTL_FRET(R8)
	MOVQ BX, CTL_FRBX(R8)
	MOVQ BP, CTL_FRBP(R8)
	MOVQ R12, CTL_FR12(R8)
	MOVQ R13, CTL_FR13(R8)
	MOVQ R14, CTL_FR14(R8)
	MOVQ R15, CTL_FR15(R8)
	MOVQ 64(SP), AX
	MOVQ AX, CTL_FRAX(R8)
	MOVQ 56(SP), AX
	MOVQ AX, CTL_FRCX(R8)
	MOVQ 48(SP), AX
	MOVQ AX, CTL_FRDX(R8)
	MOVQ 40(SP), AX
	MOVQ AX, CTL_FRSI(R8)
	MOVQ 32(SP), AX
	MOVQ AX, CTL_FRDI(R8)
	MOVQ 24(SP), AX
	MOVQ AX, CTL_FR8(R8)
	MOVQ 16(SP), AX
	MOVQ AX, CTL_FR9(R8)
	MOVQ 8(SP), AX
	MOVQ AX, CTL_FR10(R8)
	MOVQ 0(SP), AX
	MOVQ AX, CTL_FR11(R8)
	STMXCSR CTL_FMXCSR(R8)
	FSTCW CTL_FFCW(R8)
	MOVQ CTL_TRAMP(R8), AX
	MOVQ AX, (R10)
	INCQ CTL_CALLS(R8)
	MOVQ 88(SP), AX
	SHLQ $RP_SHIFT, AX
	INCQ (CTL_RPTAB+RP_CKPTS)(R8)(AX*1)
	// The window's system calls stop for the supervisor (syscall user
	// dispatch, on for the window only): it learns what the kernel state
	// was before the first one.
	MOVB $1, CTL_SELECTOR(R8)
	PUSHQ R8
	MOVQ $SYS_prctl, AX
	MOVQ $PR_SET_SYSCALL_USER_DISPATCH, DI
	MOVQ $1, SI // PR_SYS_DISPATCH_ON
	MOVQ CTL_CODEBASE(R8), DX
	MOVQ CTL_CODELEN(R8), R10
	LEAQ CTL_SELECTOR(R8), R8
	SYSCALL
	POPQ R8
	MOVQ $RP_BACK, CX
	JMP leave

unprotected:
	INCQ CTL_UNPROT(R8)
	MOVQ $RP_BACK, CX
	JMP leave

slow:
	INCQ CTL_SLOW(R8)
	MOVQ $RP_TRAP, CX

leave:
	// Return to rp.back or rp.trap with every register as it came.
	MOVQ 88(SP), AX
	SHLQ $RP_SHIFT, AX
	ADDQ R8, AX
	ADDQ CX, AX
	MOVQ CTL_RPTAB(AX), AX
	MOVQ AX, 88(SP)
	POPQ R11
	POPQ R10
	POPQ R9
	POPQ R8
	POPQ DI
	POPQ SI
	POPQ DX
	POPQ CX
	POPQ AX
	POPFQ
	LEAQ 8(SP), SP
	RET
	END

// stubReturn is where a rescue point returns to (through the trampoline
// thunk, which pushed the control block's address into the slot the
// return address had): the call completed, so its checkpoint is over. It
// preserves every register and the flags: with gcc's interprocedural
// register allocation a caller may keep values in registers it knows its
// callee does not touch, the return registers are not the only live ones.
TEXT ·stubReturn(SB), NOSPLIT|NOFRAME, $0-0
	PUSHFQ
	PUSHQ AX
	PUSHQ CX
	PUSHQ DX
	PUSHQ SI
	PUSHQ DI
	PUSHQ R8
	PUSHQ R9
	PUSHQ R10
	PUSHQ R11
	MOVQ 80(SP), R9
	MOVL CTL_DEPTH(R9), AX
	TESTL AX, AX
	JEQ lost
	MOVQ CTL_FSLOT(R9), AX
	LEAQ 80(SP), CX
	CMPQ AX, CX
	JNE lost
	MOVB $0, CTL_SELECTOR(R9)
	MOVL $0, CTL_DEPTH(R9)
	INCQ CTL_COMMITS(R9)
	// Syscall user dispatch off again.
	MOVQ $SYS_prctl, AX
	MOVQ $PR_SET_SYSCALL_USER_DISPATCH, DI
	XORL SI, SI
	XORL DX, DX
	XORL R10, R10
	XORL R8, R8
	SYSCALL
	// Return to the real return address, from the slot.
	MOVQ CTL_FRET(R9), AX
	MOVQ AX, 80(SP)
	POPQ R11
	POPQ R10
	POPQ R9
	POPQ R8
	POPQ DI
	POPQ SI
	POPQ DX
	POPQ CX
	POPQ AX
	POPFQ
	RET

lost:
	// No frame for this return: only memory corruption gets here. The
	// supervisor reports it; without one the program dies of SIGTRAP.
	BYTE $0xcc
	END

// stubSigsys is the SIGSYS handler (through a stub that pushed the control
// block's address; rdi, rsi, rdx: signal, siginfo, ucontext). The
// supervisor intercepts the SIGSYS of syscall user dispatch before any
// handler runs; this one only runs when there is no supervisor any more:
// it lets the window's system calls through and runs this one again.
// Any other SIGSYS (the program has no handler of its own: assure does not
// install one otherwise) ends the process as it would have.
TEXT ·stubSigsys(SB), NOSPLIT|NOFRAME, $0-0
	MOVQ 0(SP), R11
	MOVL 8(SI), AX // si_code
	CMPL AX, $2    // SYS_USER_DISPATCH
	JNE other
	MOVB $0, CTL_SELECTOR(R11)
	SUBQ $2, UC_RIP(DX)
	LEAQ 8(SP), SP
	RET

other:
	// rt_sigaction(SIGSYS, SIG_DFL), then send it again: delivered when
	// this handler returns, with the default action.
	SUBQ $32, SP
	MOVQ $0, 0(SP)
	MOVQ $0, 8(SP)
	MOVQ $0, 16(SP)
	MOVQ $0, 24(SP)
	MOVQ $13, AX
	MOVQ $31, DI
	MOVQ SP, SI
	MOVQ $0, DX
	MOVQ $8, R10
	SYSCALL
	ADDQ $32, SP
	MOVQ $39, AX // getpid
	SYSCALL
	MOVQ AX, DI
	MOVQ $186, AX // gettid
	SYSCALL
	MOVQ AX, SI
	MOVQ $31, DX
	MOVQ $234, AX // tgkill
	SYSCALL
	LEAQ 8(SP), SP
	RET
	END

// stubRestorer is the sa_restorer of stubSigsys: rt_sigreturn, from inside
// the page syscall user dispatch allows.
TEXT ·stubRestorer(SB), NOSPLIT|NOFRAME, $0-0
	MOVQ $15, AX
	SYSCALL
	END

// The addresses of the routines, for the supervisor to copy them.
TEXT ·enterCode(SB), NOSPLIT, $0-8
	LEAQ ·stubEnter(SB), AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·returnCode(SB), NOSPLIT, $0-8
	LEAQ ·stubReturn(SB), AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·sigsysCode(SB), NOSPLIT, $0-8
	LEAQ ·stubSigsys(SB), AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·restorerCode(SB), NOSPLIT, $0-8
	LEAQ ·stubRestorer(SB), AX
	MOVQ AX, ret+0(FP)
	RET
