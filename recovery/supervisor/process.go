package supervisor

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/locks"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/unwind"
)

// process is one supervised address space (a thread group).
type process struct {
	pid     int
	parent  int // supervised process that forked it, or 0
	born    uint64
	mem     *os.File // /proc/PID/mem: FOLL_FORCE access to text for breakpoints
	threads map[int]*thread
	// sharedMM is set for a vfork child until it execs: it runs in its
	// parent's memory, so it takes no checkpoints of its own.
	sharedMM bool

	breakpoints map[uint64]*breakpoint
	// retired holds the bytes that entries of rescue points disarmed
	// here displaced (by address): a child forked before a disarm that
	// the supervisor learns of after it still has the entry's
	// breakpoint or jump, which no bookkeeping claims (syncInherited).
	retired map[uint64][]byte
	// resolved maps rescue points (manifest order) to their address here
	// once their module is mapped.
	resolved map[*rescuePoint]uint64
	// resolvedIn is the module (moduleKey) each rescue point resolved in.
	resolvedIn map[*rescuePoint]string
	modules    *moduleCache

	scratch uint64 // address of the injected code page, 0 until made
	// views opened at the first checkpoint after exec: maps by
	// PROCMAP_QUERY, the fd directory, and where the heap starts.
	views   *views
	tracker checkpoint.Tracker
	noTrack error // why this process cannot be checkpointed
	ckpts   []*procCheckpoint
	// expectChld lists children killed by a rollback: the SIGCHLD their
	// death sends the (rolled back) parent is swallowed.
	expectChld map[int]bool
	gone       bool
	// brk caches the program break seen when the [heap] mapping ended at
	// heapMapEnd.
	brk, heapMapEnd uint64
	brkKnown        bool
	// preExec is set for the launcher before it execs the program.
	preExec bool
	// entryDone is set once the program entry breakpoint has fired.
	entryDone bool
	// nsPid is the pid in the process's own PID namespace (0: not read
	// yet); refaulted is set once a thread was let go to die of a fault.
	nsPid     int
	refaulted bool
	// fast is the in-process fast path (nil: none); noFast says why it
	// could not be set up. forkedFrom is set for a child forked from a
	// process with a fast path, until its first stop undoes what it
	// inherited of it.
	fast       *fastState
	noFast     error
	forkedFrom *fastState
	// promote is set for such a child once it gave back what it
	// inherited: it gets a fast path of its own later (promoteChild).
	promote bool
	// probeRanges are the probed functions here, sorted by address, and
	// unwindMods the module set their stacks are walked with (nil: to be
	// read again).
	probeRanges []probeRange
	unwindMods  *unwind.Modules
	atExecStop  bool // the process is held at its exec stop
}

// thread is one supervised task.
type thread struct {
	tid  int
	proc *process
	born uint64

	running bool // resumed by us and not known to be stopped since
	// awaitInitial is set for a new thread until its first stop arrives.
	awaitInitial bool
	// queued is set while an event of this thread waits in the queue.
	queued bool
	// interrupting is set while a PTRACE_INTERRUPT is outstanding.
	interrupting bool
	groupStop    bool
	// deliver is the signal passed on at the next resume.
	deliver unix.Signal
	// clearTid is the address the kernel clears when the thread exits
	// (CLONE_CHILD_CLEARTID): where threading libraries keep its tid.
	clearTid uint64
	// staleSigs are fault signals (mask of 1<<(sig-1)) a rollback left
	// pending whose cause it undid: swallowed when they arrive.
	staleSigs uint64
	frames    []frame
	// sysStop says which system-call stop the thread is held in.
	sysStop sysStopKind
	// replay is the entry (registers) of a system call of the thread's
	// own that an injection ran in place of: it makes the call again, and
	// that entry is not journaled twice.
	replay *arch.Regs
	// park is set while the thread is held at the gate (gate.go); passes
	// are the checkpoints it was let past after waiting too long.
	park   *park
	passes map[checkpoint.ID]bool
	// admitNext lets the thread's next rescue-point entry in at once.
	admitNext bool
	// heldFor holds the first thread of a new process (holdChild).
	heldFor *heldFor
	// lockBase are the locks the thread held at its latest clone or fork
	// outside every healing candidate, lockSamples how many times they
	// were looked for (survive.go).
	lockBase    []locks.Held
	lockSamples int
}

// frame is one active rescue-point call of a thread.
type frame struct {
	rp   *rescuePoint
	ckpt checkpoint.ID // 0: no checkpoint (taken in a child that inherited it)
	slot uint64        // stack address holding the return address
	ret  uint64        // the real return address
}

// rescuePoint is a manifest entry plus what resolution learned.
type rescuePoint struct {
	manifest.RescuePoint
	// vaddr is the ELF address the rescue point resolved to.
	vaddr uint64
	// hook is set for a probe or an injection (probe.go), which is
	// resolved like a rescue point but is none.
	hook *hook
	// disarmed: taken out by Disarm (arm.go), not resolved any more.
	disarmed bool
}

type bpKind int

const (
	bpRescue bpKind = iota
	bpEntry         // program entry: shared libraries are loaded
	bpLoader        // _dl_debug_state: dlopen/dlclose happened
	bpProbe         // a probe's function entry (probe.go)
	bpInject        // an injection's place (probe.go)
)

// breakpoint is one int3 planted in a process.
type breakpoint struct {
	addr  uint64
	kind  bpKind
	rp    *rescuePoint
	orig  []byte // the instruction bytes it displaced (first byte replaced)
	owner string // module path, for events
}

func (s *Supervisor) newProcess(pid, parent int) (*process, error) {
	mem, err := openMem(pid)
	if err != nil {
		return nil, err
	}
	s.seq++
	p := &process{
		pid: pid, parent: parent, born: s.seq, mem: mem,
		threads:     make(map[int]*thread),
		breakpoints: make(map[uint64]*breakpoint),
		resolved:    make(map[*rescuePoint]uint64),
		resolvedIn:  make(map[*rescuePoint]string),
		modules:     newModuleCache(),
		expectChld:  make(map[int]bool),
	}
	s.procs[pid] = p
	return p, nil
}

func (s *Supervisor) addThread(p *process, tid int) *thread {
	s.seq++
	t := &thread{tid: tid, proc: p, born: s.seq}
	p.threads[tid] = t
	s.threads[tid] = t
	return t
}

func (s *Supervisor) removeThread(t *thread) {
	delete(s.threads, t.tid)
	delete(t.proc.threads, t.tid)
}

// dropProcess forgets a process whose last thread is gone.
func (s *Supervisor) dropProcess(p *process) {
	if p.gone {
		return
	}
	p.gone = true
	s.forgetMetrics(p)
	for _, t := range p.threads {
		delete(s.threads, t.tid)
	}
	if p.tracker != nil {
		p.tracker.Close()
		p.tracker = nil
	}
	s.releaseFast(p)
	p.dropCkpts()
	p.views.close()
	p.views = nil
	p.mem.Close()
	delete(s.procs, p.pid)
}

// dropCkpts forgets p's checkpoints (the process is gone, exec'd or
// detached), closing what their journals hold.
func (p *process) dropCkpts() {
	for _, c := range p.ckpts {
		c.journal.release()
	}
	p.ckpts = nil
}

func (p *process) readMem(addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := p.mem.ReadAt(b, int64(addr)); err != nil {
		return nil, fmt.Errorf("read %d bytes at %#x in %d: %w", n, addr, p.pid, err)
	}
	return b, nil
}

func (p *process) writeMem(addr uint64, b []byte) error {
	if _, err := p.mem.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("write %d bytes at %#x in %d: %w", len(b), addr, p.pid, err)
	}
	return nil
}

func (p *process) readWord(addr uint64) (uint64, error) {
	b, err := p.readMem(addr, 8)
	if err != nil {
		return 0, err
	}
	return le64(b), nil
}

func (p *process) writeWord(addr, v uint64) error {
	var b [8]byte
	putLE64(b[:], v)
	return p.writeMem(addr, b[:])
}

// ourTrap reports whether pc is one of our breakpoints or the return
// trampoline: a SIGTRAP there is the supervisor's, not the program's.
func (p *process) ourTrap(pc uint64) bool {
	return p.breakpoints[pc] != nil || p.isTrampoline(pc) || p.isFastTrap(pc)
}

func (p *process) isTrampoline(pc uint64) bool {
	return p.scratch != 0 && pc == p.scratch+trampolineOffset
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func putLE64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

// views are the descriptors a checkpoint reads the process through,
// kept open because opening /proc files costs as much as reading them:
// maps by PROCMAP_QUERY, the fd directory, the pagemap, and a pidfd to
// take descriptors from the process with pidfd_getfd.
type views struct {
	maps     *procfs.MapsQuerier
	fds      *procfs.FDLister
	pagemap  int
	pidfd    int
	startBrk uint64
}

func openViews(pid int) (v *views, err error) {
	v = &views{pagemap: -1, pidfd: -1}
	defer func() {
		if err != nil {
			v.close()
		}
	}()
	if v.maps, err = procfs.NewMapsQuerier(pid); err != nil {
		return nil, err
	}
	if v.fds, err = procfs.NewFDLister(pid); err != nil {
		return nil, err
	}
	if v.startBrk, err = procfs.StartBrk(pid); err != nil {
		return nil, err
	}
	if v.pagemap, err = unix.Open(fmt.Sprintf("/proc/%d/pagemap", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("open pagemap of %d: %w", pid, err)
	}
	if v.pidfd, err = unix.PidfdOpen(pid, 0); err != nil {
		return nil, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	return v, nil
}

func (v *views) close() {
	if v == nil {
		return
	}
	if v.maps != nil {
		v.maps.Close()
	}
	if v.fds != nil {
		v.fds.Close()
	}
	for _, fd := range []int{v.pagemap, v.pidfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// takeFD duplicates descriptor fd of the process into the supervisor
// (pidfd_getfd): the same open file description.
func (v *views) takeFD(fd int) (*os.File, error) {
	own, err := unix.PidfdGetfd(v.pidfd, fd, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(own), fmt.Sprintf("fd %d", fd)), nil
}

func openMem(pid int) (*os.File, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open memory of %d: %w", pid, err)
	}
	return f, nil
}
