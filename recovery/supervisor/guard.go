package supervisor

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// A rollback writes pages, registers and kernel state of several threads
// one after the other. Were the supervisor to die part way, the kernel
// would detach the tracees and let them run on half rolled back. So for
// the duration of a rollback every thread in it has PTRACE_O_EXITKILL: if
// the supervisor dies then, the kernel kills them, and the program ends
// (SIGKILL) rather than continue in a state it never had. A note in the
// events file's journal (events.File.Begin) tells the next supervisor
// what happened. Measured cost: README "Limits".

// guardRollback sets PTRACE_O_EXITKILL on every held thread of procs and
// leaves a note of the rollback; the function returned undoes both.
func (s *Supervisor) guardRollback(procs []*process, pid int, id checkpoint.ID) func() {
	end := s.cfg.Events.Begin(fmt.Sprintf("rollback of pid %d to checkpoint %d", pid, id))
	if s.exitKill() {
		return end // the tracees die with the supervisor anyway
	}
	setAll(procs, ptrace.Options|unix.PTRACE_O_EXITKILL)
	return func() {
		// Every held thread, also those the rollback brought back (a
		// thread cloned by a guarded one inherits its options).
		setAll(procs, ptrace.Options)
		end()
	}
}

// setAll sets the ptrace options of every held thread of procs; a thread
// that vanished meanwhile is skipped.
func setAll(procs []*process, opts int) {
	for _, p := range procs {
		for _, t := range p.threads {
			if !t.running && !t.awaitInitial {
				ptrace.SetOptions(t.tid, opts)
			}
		}
	}
}

// exitKill reports whether the tracees have PTRACE_O_EXITKILL for good:
// `assure run`, whose program does not outlive its supervisor.
func (s *Supervisor) exitKill() bool { return s.root > 0 && !s.attached }

// failpoint stops the supervisor for good at a named point when
// ASSURE_FAILPOINT names it, so that tests can kill it there (say, in the
// middle of a rollback). It announces itself on stderr.
func failpoint(name string) {
	if os.Getenv("ASSURE_FAILPOINT") != name {
		return
	}
	fmt.Fprintf(os.Stderr, "assure: failpoint %s reached\n", name)
	select {}
}
