// Package ptrace wraps the ptrace requests the supervisor uses.
//
// Every request for a tracee must come from the OS thread that attached
// to it (the kernel ties a tracee to its tracer thread); callers run all
// of these on one goroutine locked with runtime.LockOSThread, as Delve's
// native backend does.
package ptrace

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options set on every tracee: follow threads, forks and execs so that
// nothing the program starts escapes supervision, and tell system-call
// stops from SIGTRAPs (TRACESYSGOOD: they stop with SIGTRAP|0x80).
const Options = unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK |
	unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACESYSGOOD

// SyscallStop is the stop signal of a syscall-entry or syscall-exit stop.
const SyscallStop = unix.SIGTRAP | 0x80

// Event numbers reported in the high bits of a wait status.
const (
	EventFork  = unix.PTRACE_EVENT_FORK
	EventVfork = unix.PTRACE_EVENT_VFORK
	EventClone = unix.PTRACE_EVENT_CLONE
	EventExec  = unix.PTRACE_EVENT_EXEC
	EventStop  = unix.PTRACE_EVENT_STOP
)

func request(req int, tid int, addr, data uintptr) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// requestPtr is request with a buffer of ours as data. The pointer stays
// an unsafe.Pointer up to the system call's argument list: converted to
// uintptr any earlier (in a caller), the buffer, on the goroutine's
// stack, could move when the stack grows on the way (the kernel then
// wrote a siginfo into the old stack and we read zeros: a trap of ours
// taken for the program's, once in thousands of stops).
func requestPtr(req int, tid int, addr uintptr, data unsafe.Pointer) error {
	_, _, errno := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, uintptr(data), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Seize attaches to one thread without stopping it.
func Seize(tid int, opts int) error {
	if err := request(unix.PTRACE_SEIZE, tid, 0, uintptr(opts)); err != nil {
		return fmt.Errorf("ptrace seize %d: %w", tid, err)
	}
	return nil
}

// Interrupt asks a seized thread to stop with PTRACE_EVENT_STOP.
func Interrupt(tid int) error { return request(unix.PTRACE_INTERRUPT, tid, 0, 0) }

// Cont resumes a stopped thread, delivering sig when it is not zero.
func Cont(tid int, sig unix.Signal) error {
	return request(unix.PTRACE_CONT, tid, 0, uintptr(sig))
}

// Syscall resumes a stopped thread like Cont, and stops it again at the
// entry and at the exit of its next system call.
func Syscall(tid int, sig unix.Signal) error {
	return request(unix.PTRACE_SYSCALL, tid, 0, uintptr(sig))
}

// Listen resumes a thread in group-stop without ending the group-stop.
func Listen(tid int) error { return request(unix.PTRACE_LISTEN, tid, 0, 0) }

// Detach lets a stopped thread go, delivering sig when it is not zero.
func Detach(tid int, sig unix.Signal) error {
	return request(unix.PTRACE_DETACH, tid, 0, uintptr(sig))
}

// SingleStep runs one instruction of a stopped thread.
func SingleStep(tid int) error { return request(unix.PTRACE_SINGLESTEP, tid, 0, 0) }

// SetOptions sets ptrace options on a stopped thread.
func SetOptions(tid, opts int) error {
	return request(unix.PTRACE_SETOPTIONS, tid, 0, uintptr(opts))
}

// EventMsg returns the message of the last ptrace event (new tid, old tid).
func EventMsg(tid int) (uint64, error) {
	var msg uint64
	err := requestPtr(unix.PTRACE_GETEVENTMSG, tid, 0, unsafe.Pointer(&msg))
	return msg, err
}

// GetRegs reads the general registers.
func GetRegs(tid int, r *unix.PtraceRegs) error { return unix.PtraceGetRegs(tid, r) }

// SetRegs writes the general registers.
func SetRegs(tid int, r *unix.PtraceRegs) error { return unix.PtraceSetRegs(tid, r) }

// GetRegset reads one register set (NT_X86_XSTATE for FP/SSE/AVX state)
// into buf and returns the part the kernel filled.
func GetRegset(tid int, nt int, buf []byte) ([]byte, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := requestPtr(unix.PTRACE_GETREGSET, tid, uintptr(nt), unsafe.Pointer(&iov)); err != nil {
		return nil, err
	}
	return buf[:iov.Len], nil
}

// SetRegset writes one register set back.
func SetRegset(tid int, nt int, buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	return requestPtr(unix.PTRACE_SETREGSET, tid, uintptr(nt), unsafe.Pointer(&iov))
}

// FPRegs is struct user_fpregs_struct (the legacy FXSAVE area).
type FPRegs [512]byte

// GetFPRegs reads the x87/SSE registers of a thread.
func GetFPRegs(tid int, fp *FPRegs) error {
	return requestPtr(unix.PTRACE_GETFPREGS, tid, 0, unsafe.Pointer(fp))
}

// SetFPRegs writes the x87/SSE registers of a thread.
func SetFPRegs(tid int, fp *FPRegs) error {
	return requestPtr(unix.PTRACE_SETFPREGS, tid, 0, unsafe.Pointer(fp))
}

// GetSigmask reads the blocked-signal mask of a thread.
func GetSigmask(tid int) (uint64, error) {
	var m uint64
	err := requestPtr(unix.PTRACE_GETSIGMASK, tid, 8, unsafe.Pointer(&m))
	return m, err
}

// SetSigmask writes the blocked-signal mask of a thread.
func SetSigmask(tid int, m uint64) error {
	return requestPtr(unix.PTRACE_SETSIGMASK, tid, 8, unsafe.Pointer(&m))
}

// Siginfo is the part of siginfo_t the supervisor looks at.
type Siginfo struct {
	Signo unix.Signal
	Code  int32
	// Addr is si_addr: meaningful only when HasAddr says so.
	Addr uint64
	// Pid and Uid are si_pid and si_uid: meaningful only when Sent says
	// so. The pid is the sender's as seen in the receiver's PID
	// namespace (0 for a sender in an ancestor namespace).
	Pid int32
	Uid uint32
}

// Signal codes used to tell faults from signals sent by processes.
const (
	SIUser   = 0
	SIKernel = 0x80
	SIQueue  = -1
	SITkill  = -6
)

// RawSiginfo is a whole siginfo_t.
type RawSiginfo [128]byte

// GetSiginfoRaw reads the siginfo of a stop, to be put back with
// SetSiginfoRaw after something else (an injected call) replaced it.
func GetSiginfoRaw(tid int) (*RawSiginfo, error) {
	var raw RawSiginfo
	err := requestPtr(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(&raw[0]))
	return &raw, err
}

// SetSiginfoRaw sets the siginfo of the signal a stopped thread receives.
func SetSiginfoRaw(tid int, raw *RawSiginfo) error {
	return requestPtr(unix.PTRACE_SETSIGINFO, tid, 0, unsafe.Pointer(&raw[0]))
}

// GetSiginfo reads the siginfo of the signal that stopped a thread.
func GetSiginfo(tid int) (Siginfo, error) {
	var raw [128]byte
	if err := requestPtr(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(&raw[0])); err != nil {
		return Siginfo{}, err
	}
	le := binary.LittleEndian
	si := Siginfo{
		Signo: unix.Signal(le.Uint32(raw[0:])),
		Code:  int32(le.Uint32(raw[8:])),
	}
	// The union starts at offset 16 on 64-bit: si_addr for faults,
	// si_pid and si_uid for kill().
	si.Addr = le.Uint64(raw[16:])
	si.Pid = int32(le.Uint32(raw[16:]))
	si.Uid = le.Uint32(raw[20:])
	return si, nil
}

// FromKernel reports whether the signal was raised by the kernel for a
// fault rather than sent by a process.
func (s Siginfo) FromKernel() bool { return s.Code > 0 }

// Sent reports whether the signal was sent by a process with kill,
// tgkill (raise, abort, pthread_kill) or sigqueue: si_pid names it.
func (s Siginfo) Sent() bool {
	return s.Code == SIUser || s.Code == SITkill || s.Code == SIQueue
}

// HasAddr reports whether si_addr holds the faulting address: a fault
// the kernel raised for an instruction (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGTRAP). A general-protection fault (SI_KERNEL) has none.
func (s Siginfo) HasAddr() bool {
	if s.Code <= 0 || s.Code == SIKernel {
		return false
	}
	switch s.Signo {
	case unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGTRAP:
		return true
	}
	return false
}

// CodeName names si_code as <asm-generic/siginfo.h> does ("SEGV_MAPERR",
// "SI_TKILL"), or gives its number.
func (s Siginfo) CodeName() string {
	switch s.Code {
	case SIUser:
		return "SI_USER"
	case SIKernel:
		return "SI_KERNEL"
	case SIQueue:
		return "SI_QUEUE"
	case -2:
		return "SI_TIMER"
	case -3:
		return "SI_MESGQ"
	case -4:
		return "SI_ASYNCIO"
	case -5:
		return "SI_SIGIO"
	case SITkill:
		return "SI_TKILL"
	}
	if names := faultCodes[s.Signo]; s.Code > 0 && int(s.Code) <= len(names) {
		return names[s.Code-1]
	}
	return fmt.Sprintf("%d", s.Code)
}

// faultCodes are the si_code names of kernel faults, from 1.
var faultCodes = map[unix.Signal][]string{
	unix.SIGSEGV: {"SEGV_MAPERR", "SEGV_ACCERR", "SEGV_BNDERR", "SEGV_PKUERR", "SEGV_ACCADI", "SEGV_ADIDERR", "SEGV_ADIPERR", "SEGV_MTEAERR", "SEGV_MTESERR", "SEGV_CPERR"},
	unix.SIGBUS:  {"BUS_ADRALN", "BUS_ADRERR", "BUS_OBJERR", "BUS_MCEERR_AR", "BUS_MCEERR_AO"},
	unix.SIGFPE:  {"FPE_INTDIV", "FPE_INTOVF", "FPE_FLTDIV", "FPE_FLTOVF", "FPE_FLTUND", "FPE_FLTRES", "FPE_FLTINV", "FPE_FLTSUB"},
	unix.SIGILL:  {"ILL_ILLOPC", "ILL_ILLOPN", "ILL_ILLADR", "ILL_ILLTRP", "ILL_PRVOPC", "ILL_PRVREG", "ILL_COPROC", "ILL_BADSTK"},
	unix.SIGTRAP: {"TRAP_BRKPT", "TRAP_TRACE", "TRAP_BRANCH", "TRAP_HWBKPT", "TRAP_UNK", "TRAP_PERF"},
	unix.SIGSYS:  {"SYS_SECCOMP", "SYS_USER_DISPATCH"},
}

// Wait waits for a state change of any tracee (pid -1) or of one thread.
func Wait(pid int, flags int) (int, unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		wpid, err := unix.Wait4(pid, &ws, flags|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		return wpid, ws, err
	}
}

// Event returns the PTRACE_EVENT_* of a stop status, or 0.
func Event(ws unix.WaitStatus) int { return int(ws>>16) & 0xff }

// Rseq is a thread's restartable-sequences registration.
type Rseq struct {
	Pointer   uint64
	Size      uint32
	Signature uint32
	Flags     uint32
	_         uint32
}

// ptraceGetRseqConfiguration is PTRACE_GET_RSEQ_CONFIGURATION (Linux 5.13).
const ptraceGetRseqConfiguration = 0x420f

// GetRseq reads the rseq registration of a stopped thread (zero: none).
func GetRseq(tid int) (Rseq, error) {
	var r Rseq
	err := requestPtr(ptraceGetRseqConfiguration, tid, unsafe.Sizeof(r), unsafe.Pointer(&r))
	return r, err
}

// SyscallInfo is what PTRACE_GET_SYSCALL_INFO tells of a syscall stop.
type SyscallInfo struct {
	Op   uint8 // SyscallEntry, SyscallExit, or 0: not a syscall stop
	Arch uint32
	IP   uint64
	SP   uint64
	// Nr and Args for an entry; for an exit, Args[0] is the return value.
	Nr   uint64
	Args [6]uint64
}

// Ops of SyscallInfo (PTRACE_SYSCALL_INFO_*).
const (
	SyscallEntry = 1
	SyscallExit  = 2
)

// AuditArchX8664 is AUDIT_ARCH_X86_64: a 64-bit system call (a 64-bit
// process may also make 32-bit ones with int 0x80).
const AuditArchX8664 = 0xc000003e

const ptraceGetSyscallInfo = 0x420e

// GetSyscallInfo describes the system call a thread is stopped at
// (Linux 5.3).
func GetSyscallInfo(tid int) (SyscallInfo, error) {
	var raw [88]byte
	if err := requestPtr(ptraceGetSyscallInfo, tid, uintptr(len(raw)), unsafe.Pointer(&raw[0])); err != nil {
		return SyscallInfo{}, err
	}
	le := binary.LittleEndian
	si := SyscallInfo{Op: raw[0], Arch: le.Uint32(raw[4:]), IP: le.Uint64(raw[8:]), SP: le.Uint64(raw[16:])}
	si.Nr = le.Uint64(raw[24:])
	for i := range si.Args {
		si.Args[i] = le.Uint64(raw[32+8*i:])
	}
	if si.Op == SyscallExit {
		si.Nr, si.Args[0] = 0, le.Uint64(raw[24:])
	}
	return si, nil
}
