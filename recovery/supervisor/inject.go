package supervisor

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/patch"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// The injected pages: a code page holding a system call instruction
// followed by a breakpoint (to run system calls inside the tracee), and
// the return trampoline, a breakpoint that rescue-point calls return to
// instead of their caller; then a read-write data page, where injected
// calls take and return their buffers.
const (
	codeSize         = patch.CodeSize
	dataOffset       = codeSize
	scratchSize      = codeSize + 4096
	syscallOffset    = 0
	trampolineOffset = 16
)

// maxInjectStops bounds the stops one injected call may take: a thread
// that keeps faulting before it reaches the call (its stack or rseq area
// unmapped: the kernel cannot return it to user mode) fails the call
// instead of spinning forever.
const maxInjectStops = 32

// errCannotRun says a thread cannot execute an injected call.
var errCannotRun = errors.New("the thread cannot run (its stack or rseq area is not mapped?)")

// inject runs one system call in a held thread and restores the thread's
// registers afterwards. The thread must be in a signal-delivery or
// interrupt stop: then the kernel honours the new registers fully.
func (s *Supervisor) inject(t *thread, nr uint64, args ...uint64) (uint64, error) {
	p := t.proc
	if p.scratch == 0 {
		return 0, fmt.Errorf("inject %d in %d: no code page", nr, t.tid)
	}
	return s.injectAt(t, p.scratch+syscallOffset, nr, args...)
}

func (s *Supervisor) injectAt(t *thread, pc uint64, nr uint64, args ...uint64) (uint64, error) {
	s.debugf("inject %d in %d", nr, t.tid)
	if t.sysStop == atSyscallEntry {
		return s.injectInPlace(t, nr, args...)
	}
	var saved arch.Regs
	if err := ptrace.GetRegs(t.tid, &saved); err != nil {
		return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
	}
	regs := saved
	arch.PrepareSyscall(&regs, pc, nr, args...)
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
	}
	// From here on the thread is in a signal-delivery stop (or gone).
	t.sysStop = notInSyscall
	fail := func(err error) (uint64, error) {
		ptrace.SetRegs(t.tid, &saved)
		return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
	}
	want := pc + uint64(len(arch.SyscallInsn))
	faults := 0
	for n := 0; ; n++ {
		if n == maxInjectStops {
			return fail(errCannotRun)
		}
		if err := ptrace.Cont(t.tid, 0); err != nil {
			return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
		}
		ws, err := s.waitStop(t)
		if err != nil {
			return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
		}
		if ptrace.Event(ws) != 0 || ws.StopSignal() == ptrace.SyscallStop {
			continue // an interrupt that was still pending
		}
		if sig := ws.StopSignal(); sig != unix.SIGTRAP {
			si, _ := ptrace.GetSiginfo(t.tid)
			switch {
			case isFault(sig) && si.FromKernel() && (si.Code == ptrace.SIKernel || si.Addr >= pc && si.Addr < want):
				// The injected code itself faulted (its page is gone?), or
				// the kernel could not get the thread back to user mode
				// (SI_KERNEL: no stack for a signal frame, no rseq area):
				// it will fail every time.
				return fail(fmt.Errorf("%v at %#x: %w", sig, si.Addr, errCannotRun))
			case isFault(sig) && si.FromKernel():
				// A fault of the program's own that was pending when we
				// took the thread over (an interrupt is reported before
				// pending signals are dequeued). Its instruction runs again
				// from the saved registers and faults again, unless a
				// rollback undoes it: drop this one. More than a few mean
				// the thread faults before it reaches the injected call.
				if faults++; faults > 2 {
					return fail(fmt.Errorf("%v at %#x: %w", sig, si.Addr, errCannotRun))
				}
			default:
				// A signal sent meanwhile: keep it for the program.
				t.deliver = sig
			}
			continue
		}
		if err := ptrace.GetRegs(t.tid, &regs); err != nil {
			return 0, err
		}
		if regs.Rip == want {
			break
		}
		// A SIGTRAP that was pending when we took the thread over (it
		// stopped for our interrupt just after a trap): if the trap was
		// ours, rewind so the thread takes it again once it runs on;
		// otherwise it is the program's and is delivered later.
		p := t.proc
		if pc := arch.TrapPC(&saved); p.ourTrap(pc) {
			saved.Rip = pc
		} else {
			t.deliver = unix.SIGTRAP
		}
	}
	res, callErr := arch.SyscallResult(&regs)
	if err := ptrace.SetRegs(t.tid, &saved); err != nil {
		return 0, fmt.Errorf("restore registers of %d: %w", t.tid, err)
	}
	return res, callErr
}

// injectInPlace runs a system call in a thread held at the entry of a
// call of its own, in place of that call: the kernel runs the call that
// orig_rax names once the stop ends, so no code page is needed. The
// thread's own call is then rewound, to be made again when the thread
// runs on (t.replay tells its entry apart). No call is skipped by setting
// its number to -1: the process's seccomp filter would see that number,
// and may fail it (clobbering the registers) or kill the process.
func (s *Supervisor) injectInPlace(t *thread, nr uint64, args ...uint64) (uint64, error) {
	var saved arch.Regs
	if err := ptrace.GetRegs(t.tid, &saved); err != nil {
		return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
	}
	regs := saved
	arch.SetSyscall(&regs, nr, args...)
	if err := ptrace.SetRegs(t.tid, &regs); err != nil {
		return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
	}
	for n := 0; ; n++ {
		if n == maxInjectStops {
			return 0, fmt.Errorf("inject syscall %d in %d: no syscall-exit stop", nr, t.tid)
		}
		if err := ptrace.Syscall(t.tid, 0); err != nil {
			return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
		}
		ws, err := s.waitStop(t)
		if err != nil {
			return 0, fmt.Errorf("inject syscall %d in %d: %w", nr, t.tid, err)
		}
		if ws.StopSignal() == ptrace.SyscallStop {
			break
		}
	}
	if err := ptrace.GetRegs(t.tid, &regs); err != nil {
		return 0, err
	}
	res, callErr := arch.SyscallResult(&regs)
	rewound := saved
	arch.RewindSyscall(&rewound)
	if err := ptrace.SetRegs(t.tid, &rewound); err != nil {
		return 0, fmt.Errorf("restore registers of %d: %w", t.tid, err)
	}
	t.sysStop = atSyscallExit
	t.replay = &saved
	return res, callErr
}

// ensureScratch maps the injected pages into p once. The very first
// system calls run from the breakpoint's own bytes, briefly patched.
func (s *Supervisor) ensureScratch(t *thread, at uint64) error {
	p := t.proc
	if p.scratch != 0 {
		return nil
	}
	orig, err := p.readMem(at, len(arch.SyscallInsn))
	if err != nil {
		return err
	}
	if err := p.writeMem(at, arch.SyscallInsn); err != nil {
		return err
	}
	addr, callErr := s.injectAt(t, at, unix.SYS_MMAP, 0, scratchSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if callErr == nil {
		page := make([]byte, codeSize)
		for i := range page {
			page[i] = arch.Breakpoint[0]
		}
		copy(page[syscallOffset:], arch.SyscallInsn)
		if callErr = p.writeMem(addr, page); callErr == nil {
			_, callErr = s.injectAt(t, at, unix.SYS_MPROTECT, addr, codeSize, unix.PROT_READ|unix.PROT_EXEC)
		}
		if callErr == nil {
			// A flag of its own keeps the data page from merging with a
			// mapping of the program next to it (it is left out of
			// tracking and layout comparison by its range).
			s.injectAt(t, at, unix.SYS_MADVISE, addr+dataOffset, scratchSize-dataOffset, unix.MADV_WIPEONFORK)
		}
		if callErr != nil {
			s.injectAt(t, at, unix.SYS_MUNMAP, addr, scratchSize)
		}
	}
	if err := p.writeMem(at, orig); err != nil {
		return err
	}
	if callErr != nil {
		return fmt.Errorf("map code page in %d: %w", p.pid, callErr)
	}
	p.scratch = addr
	s.debugf("code page of %d at %#x", p.pid, addr)
	return nil
}

// ensureTracker sets up dirty tracking for p: a userfaultfd made inside
// the tracee (UFFD_USER_MODE_ONLY needs no privilege), copied out with
// pidfd_getfd, then closed in the tracee so that the program never sees
// an extra descriptor.
func (s *Supervisor) ensureTracker(t *thread) error {
	p := t.proc
	if p.tracker != nil {
		return nil
	}
	if p.noTrack != nil {
		return p.noTrack
	}
	err := s.makeTracker(t)
	if err != nil {
		p.noTrack = err
	}
	return err
}

func (s *Supervisor) makeTracker(t *thread) error {
	p := t.proc
	uffd, err := s.makeUffd(t)
	if err != nil {
		return err
	}
	shadow, err := unix.MemfdCreate(fmt.Sprintf("assure-shadow-%d", p.pid), unix.MFD_CLOEXEC)
	if err != nil {
		unix.Close(uffd)
		return fmt.Errorf("shadow of %d: %w", p.pid, err)
	}
	tr, err := checkpoint.NewMirror(p.pid, uffd, shadow)
	if err != nil {
		return fmt.Errorf("dirty tracking in %d: %w", p.pid, err)
	}
	tr.Exclude(p.scratch, p.scratch+scratchSize)
	p.tracker = tr
	return nil
}

// makeUffd creates a userfaultfd inside the tracee and takes it.
func (s *Supervisor) makeUffd(t *thread) (int, error) {
	p := t.proc
	fd, err := s.inject(t, unix.SYS_USERFAULTFD, checkpoint.UffdFlags)
	if err != nil {
		return -1, fmt.Errorf("create userfaultfd in %d (allow userfaultfd in its seccomp profile): %w", p.pid, err)
	}
	defer s.inject(t, unix.SYS_CLOSE, fd)
	own, err := takeFDs(p.pid, int(fd))
	if err != nil {
		return -1, fmt.Errorf("take userfaultfd of %d: %w", p.pid, err)
	}
	return own[0], nil
}
