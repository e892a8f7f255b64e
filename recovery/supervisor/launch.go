package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/events"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// ExecHelperArg is the hidden first argument with which the assure binary
// re-executes itself as the launcher of a supervised program: it waits on
// fd 3 until the supervisor has seized it, then execs the program, so
// that supervision starts at the program's first instruction (the same
// handshake runc's exec fifo gives the shim).
const ExecHelperArg = "__assure_exec"

// ExecHelper is the launcher's main; it does not return on success.
func ExecHelper(args []string) error {
	if len(args) < 1 {
		return errors.New("exec helper: no program")
	}
	gate := os.NewFile(3, "gate")
	var b [1]byte
	if n, _ := gate.Read(b[:]); n != 1 {
		os.Exit(127) // the supervisor went away before releasing us
	}
	gate.Close()
	return syscall.Exec(args[0], args, os.Environ())
}

// Run starts program under supervision and returns its exit status as a
// shell reports it.
func (s *Supervisor) Run(self string, program string, args []string) (int, error) {
	defer s.markEnded()
	path, err := exec.LookPath(program)
	if err != nil {
		return 127, fmt.Errorf("program %s: %w", program, err)
	}
	s.prepare()
	lockThread()
	r, w, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	argv := append([]string{self, ExecHelperArg, path}, args...)
	stdio := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	if s.cfg.Stdio != nil {
		stdio = s.cfg.Stdio[:3]
	}
	proc, err := os.StartProcess(self, argv, &os.ProcAttr{
		Files: append(stdio, r),
		Sys:   &syscall.SysProcAttr{Setpgid: s.cfg.NewProcessGroup},
	})
	r.Close()
	if err != nil {
		w.Close()
		return 1, fmt.Errorf("start %s: %w", program, err)
	}
	pid := proc.Pid
	proc.Release()
	s.root = pid
	s.rootPid.Store(int64(pid))
	if err := s.adopt(pid, ptrace.Options|unix.PTRACE_O_EXITKILL, true); err != nil {
		w.Close()
		unix.Kill(pid, unix.SIGKILL)
		return 1, fmt.Errorf("supervise %s: %w", program, err)
	}
	w.Write([]byte{1})
	w.Close()
	if err := s.loop(); err != nil {
		return 1, err
	}
	if !s.rootDone {
		return 1, errors.New("lost track of the program")
	}
	return ExitStatus(s.rootWS), nil
}

// Attach supervises a running process, its threads and later children,
// until it exits or Stop is called.
func (s *Supervisor) Attach(pid int) error {
	defer s.markEnded()
	if err := unix.Kill(pid, 0); err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	s.prepare()
	lockThread()
	s.root, s.attached = pid, true
	if err := s.adopt(pid, ptrace.Options, false); err != nil {
		return fmt.Errorf("attach to %d: %w", pid, err)
	}
	s.rootPid.Store(int64(pid))
	p := s.procs[pid]
	// Hold every thread while breakpoints go in.
	s.stopThreads([]*process{p}, false)
	s.adoptLeftovers(p)
	err := s.resolve(p, true)
	p.entryDone = true
	s.resumeThreads([]*process{p})
	if err != nil {
		s.emitError(pid, err)
	}
	s.cfg.Events.Emit(events.Event{Type: events.Attached, Pid: pid})
	return s.loop()
}

// adopt seizes every thread of pid and registers the process.
func (s *Supervisor) adopt(pid int, opts int, launcher bool) error {
	tids, err := s.seizeAll(pid, opts)
	if err != nil {
		for _, tid := range tids {
			ptrace.Detach(tid, 0)
		}
		return err
	}
	p, err := s.newProcess(pid, 0)
	if err != nil {
		return err
	}
	p.preExec = launcher
	for _, tid := range tids {
		t := s.addThread(p, tid)
		t.running = true
	}
	return nil
}

// prepare builds the rescue point list from the manifest.
func (s *Supervisor) prepare() {
	for _, rp := range s.cfg.Manifest.RescuePoints {
		s.rps = append(s.rps, &rescuePoint{RescuePoint: rp})
	}
	s.prepareProbes()
}

// detachAll removes every trace of supervision and lets the program run
// on: trampolined return addresses are put back, breakpoints removed,
// the injected page unmapped, dirty tracking closed.
func (s *Supervisor) detachAll() error {
	var all []*process
	for _, p := range s.procs {
		all = append(all, p)
	}
	all = s.stopThreads(all, true)
	s.settleQueue()
	for _, p := range all {
		s.cleanProcess(p)
	}
	for _, p := range all {
		for _, t := range p.threads {
			if !t.awaitInitial {
				ptrace.Detach(t.tid, t.deliver)
			}
		}
		s.cfg.Events.Emit(events.Event{Type: events.Detached, Pid: p.pid})
		s.dropProcess(p)
	}
	for tid := range s.orphans {
		ptrace.Detach(tid, 0)
	}
	return nil
}

// settleQueue turns queued stops into pending signals before a detach:
// our own breakpoint traps are rewound, the rest are delivered.
func (s *Supervisor) settleQueue() {
	for _, e := range s.queue {
		t := s.threads[e.tid]
		if t == nil || !e.ws.Stopped() {
			continue
		}
		t.queued = false
		sig := e.ws.StopSignal()
		if ptrace.Event(e.ws) != 0 {
			continue
		}
		if sig == unix.SIGTRAP && s.rewindTrap(t) {
			continue
		}
		if sig != unix.SIGSTOP && sig != ptrace.SyscallStop {
			t.deliver = sig
		}
	}
	s.queue = nil
}

// Forward sends sig to the supervised program (run mode). Safe to call
// from any goroutine.
func (s *Supervisor) Forward(sig unix.Signal) {
	if root := s.rootPid.Load(); root > 0 {
		unix.Kill(int(root), sig)
	}
}

// RootPid is the pid of the program Run started or Attach attached to,
// once it is supervised (0 before).
func (s *Supervisor) RootPid() int { return int(s.rootPid.Load()) }
