package supervisor

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

func isStopSignal(sig unix.Signal) bool {
	return sig == unix.SIGSTOP || sig == unix.SIGTSTP || sig == unix.SIGTTIN || sig == unix.SIGTTOU
}

// resume lets a held thread run again, passing on its pending signal.
// While its process has an active checkpoint it runs under
// PTRACE_SYSCALL, so that the journal sees the system calls it makes.
func (s *Supervisor) resume(t *thread) {
	if t.running || t.awaitInitial || t.queued {
		s.debugf("no resume %d: running %v initial %v queued %v", t.tid, t.running, t.awaitInitial, t.queued)
		return
	}
	if s.holdParked(t) {
		return
	}
	var err error
	switch {
	case t.groupStop:
		err = ptrace.Listen(t.tid)
	case tracesSyscalls(t.proc):
		err = ptrace.Syscall(t.tid, t.deliver)
	default:
		err = ptrace.Cont(t.tid, t.deliver)
	}
	s.debugf("resume %d sig %d group %v", t.tid, t.deliver, t.groupStop)
	t.deliver = 0
	t.running = true
	t.sysStop = notInSyscall
	if err != nil && !errors.Is(err, unix.ESRCH) {
		s.logf("resume %d: %v", t.tid, err)
	}
}

// reinterrupt makes a held thread stop again as soon as it is on its way
// back to user mode, before it runs any code of the program: what it was
// doing in the kernel (a system call) completes, or is cut short to be
// restarted. Asked while the thread is still stopped, the interrupt
// cannot be used up by the stop it is in. Its pending signal stays for
// its next resume.
func (s *Supervisor) reinterrupt(t *thread) {
	if err := ptrace.Interrupt(t.tid); err != nil {
		return // gone: its exit status is on its way
	}
	t.interrupting = true
	t.sysStop = notInSyscall
	if err := ptrace.Cont(t.tid, 0); err == nil {
		t.running = true
	}
}

// stopThreads brings every thread of procs into a ptrace-stop in the
// signal-delivery path, where register writes take full effect. Events of
// other tracees that arrive meanwhile are queued for the main loop. With
// follow, processes that procs fork meanwhile are stopped too and added
// to the list returned ("container" scope covers them). It gives up early
// when the supervisor is asked to stop (the caller checks s.stopReq), so
// that a thread that never stops cannot keep it from detaching.
func (s *Supervisor) stopThreads(procs []*process, follow bool) []*process {
	in := make(map[*process]bool, len(procs))
	for _, p := range procs {
		in[p] = true
	}
	pending := make(map[int]*thread)
	s.takeQueuedSyscallStops(in, pending)
	for _, p := range procs {
		for _, t := range p.threads {
			s.interrupt(t, pending)
		}
	}
	for len(pending) > 0 {
		if s.stopReq.Load() && !s.stopping {
			return procs // detachAll stops them again
		}
		tid, ws, err := ptrace.Wait(-1, 0)
		if err != nil {
			s.logf("wait while stopping threads: %v", err)
			return procs
		}
		s.debugf("stop-all event %d %#x", tid, uint32(ws))
		t := s.threads[tid]
		if t == nil || !in[t.proc] {
			switch {
			case t == nil && ws.Stopped() && ptrace.Event(ws) == ptrace.EventStop:
				s.orphans[tid] = ws
			case t != nil && t.awaitInitial && ws.Stopped() && ptrace.Event(ws) == ptrace.EventStop:
				// The first stop of a task outside the scope (a vfork
				// child, which its parent waits for): let it run.
				s.dispatch(tid, ws)
			default:
				s.defer_(tid, ws)
			}
			continue
		}
		if ws.Exited() || ws.Signaled() {
			delete(pending, tid)
			s.onExit(tid, ws)
			continue
		}
		t.running = false
		sig := ws.StopSignal()
		switch ev := ptrace.Event(ws); {
		case t.awaitInitial && ev == ptrace.EventStop:
			t.awaitInitial = false
			s.firstStop(t)
			delete(pending, tid)
		case ev == ptrace.EventStop:
			t.interrupting = false
			t.groupStop = isStopSignal(sig)
			if !t.groupStop {
				s.undoEINTR(t)
			}
			delete(pending, tid)
		case ev == 0 && sig == ptrace.SyscallStop:
			// A system call's entry or exit, which used up the
			// interrupt: journal the entry, let the call go on, ask again.
			s.syscallStop(t)
			s.reinterrupt(t)
		case ev == ptrace.EventClone || ev == ptrace.EventFork || ev == ptrace.EventVfork:
			for _, c := range s.onClone(t, ev) {
				if follow && !in[c.proc] && c.proc != t.proc && !c.proc.sharedMM {
					in[c.proc] = true
					procs = append(procs, c.proc)
				}
				switch {
				case in[c.proc]:
					s.interrupt(c, pending)
				case !c.awaitInitial:
					// A child outside the scope whose first stop came
					// before this event (firstStop ran): nobody else
					// resumes it.
					s.resume(c)
				}
			}
			// The event stop may have used up the interrupt: ask again.
			s.reinterrupt(t)
		default:
			// A signal or an exec: handled by the main loop later. The
			// thread stays held until then.
			s.defer_(tid, ws)
			delete(pending, tid)
		}
	}
	return procs
}

// takeQueuedSyscallStops takes the queued syscall stops of threads of the
// processes in `in` out of the queue: a thread must not stay in such a
// stop while it is checkpointed or rolled back (registers set at a
// syscall stop do not get a system call restarted). Each is journaled
// and interrupted again, and added to pending.
func (s *Supervisor) takeQueuedSyscallStops(in map[*process]bool, pending map[int]*thread) {
	queue := s.queue
	s.queue = nil
	var kept []waitEvent
	for _, e := range queue {
		t := s.threads[e.tid]
		if t == nil || !in[t.proc] || !e.ws.Stopped() || e.ws.StopSignal() != ptrace.SyscallStop {
			kept = append(kept, e)
			continue
		}
		t.queued = false
		t.running = false
		s.syscallStop(t)
		s.reinterrupt(t)
		pending[t.tid] = t
	}
	s.queue = append(kept, s.queue...)
}

// interrupt asks a running thread to stop and adds it to pending; a new
// thread whose first stop has not arrived is waited for too. Threads
// already held (a queued event included) are left alone.
func (s *Supervisor) interrupt(t *thread, pending map[int]*thread) {
	switch {
	case t.queued:
	case t.awaitInitial:
		pending[t.tid] = t
	case t.running:
		s.debugf("interrupt %d", t.tid)
		if err := ptrace.Interrupt(t.tid); err != nil {
			return // exiting: its exit status is on its way
		}
		t.interrupting = true
		pending[t.tid] = t
	}
}

// undoEINTR hides our interrupt from calls the kernel never restarts: an
// epoll wait that the interrupt cut short with EINTR is set to run again,
// as if the thread had never stopped. Not when a signal is pending: then
// the program is owed that EINTR.
func (s *Supervisor) undoEINTR(t *thread) {
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil || int64(regs.Rax) != -int64(unix.EINTR) {
		return
	}
	switch regs.Orig_rax {
	case unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT, unix.SYS_EPOLL_PWAIT2:
	default:
		return
	}
	st, err := procfs.ReadStatus(t.tid)
	if err != nil || (st.SigPnd|st.ShdPnd)&^st.SigBlk != 0 {
		return
	}
	arch.RestartSyscall(&regs)
	if err := ptrace.SetRegs(t.tid, &regs); err == nil {
		s.debugf("restart epoll wait of %d", t.tid)
	}
}

// defer_ queues an event for the main loop; its thread stays held.
func (s *Supervisor) defer_(tid int, ws unix.WaitStatus) {
	if t := s.threads[tid]; t != nil {
		t.queued = true
		t.running = false
	}
	s.queue = append(s.queue, waitEvent{tid, ws})
}

// resumeThreads resumes every held thread of procs that has no queued
// event.
func (s *Supervisor) resumeThreads(procs []*process) {
	for _, p := range procs {
		for _, t := range p.threads {
			s.resume(t)
		}
	}
}

// waitStop waits for the next stop of one thread (after a single-step or
// an injected system call). Other tracees' events stay with the kernel.
func (s *Supervisor) waitStop(t *thread) (unix.WaitStatus, error) {
	_, ws, err := ptrace.Wait(t.tid, 0)
	if err != nil {
		return ws, err
	}
	if ws.Exited() || ws.Signaled() {
		s.onExit(t.tid, ws)
		return ws, errThreadGone
	}
	return ws, nil
}

var errThreadGone = errors.New("thread exited")

// seizeAll attaches to every thread of pid, looping until no new thread
// appears: threads made by already-seized threads are attached by the
// kernel (TRACECLONE), others must be found in /proc.
func (s *Supervisor) seizeAll(pid int, opts int) ([]int, error) {
	seen := make(map[int]bool)
	var order []int
	for {
		tids, err := procfs.Tasks(pid)
		if err != nil {
			return order, err
		}
		added := false
		for _, tid := range tids {
			if seen[tid] {
				continue
			}
			seen[tid] = true
			if err := seizeRetrying(tid, opts); err != nil {
				// A thread that exits meanwhile is gone (ESRCH) or a
				// zombie the kernel refuses to attach to (EPERM).
				if errors.Is(err, unix.ESRCH) || (tid != pid && errors.Is(err, unix.EPERM) && !taskAlive(pid, tid)) {
					continue
				}
				return order, err
			}
			order = append(order, tid)
			added = true
		}
		if !added {
			return order, nil
		}
	}
}

// seizeRetrying seizes a thread, retrying for a moment on EPERM: the
// kernel refuses an attach while the target is between states (a freshly
// started process finishing its exec, a thread on its way out), which the
// caller tells apart afterwards. A thread created by one already seized
// is attached by the kernel itself (PTRACE_O_TRACECLONE) between our
// listing of /proc/PID/task and our request, which then fails with EPERM:
// it is ours, and reports its first stop like any new thread.
func seizeRetrying(tid, opts int) error {
	deadline := time.Now().Add(200 * time.Millisecond)
	for {
		err := ptrace.Seize(tid, opts)
		if err == nil || !errors.Is(err, unix.EPERM) {
			return err
		}
		if st, serr := procfs.ReadStatus(tid); serr == nil && st.TracerPid == unix.Gettid() {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond) // a transient refusal, retried with a deadline
	}
}

// taskAlive reports whether a thread still exists and is not a zombie.
func taskAlive(pid, tid int) bool {
	st, err := procfs.ReadStatus(tid)
	return err == nil && st.Tgid == pid && st.State != 'Z' && st.State != 'X'
}
