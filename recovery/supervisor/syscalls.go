package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/assure-rt/assure/recovery/arch"
	"github.com/assure-rt/assure/recovery/checkpoint"
	"github.com/assure-rt/assure/recovery/manifest"
	"github.com/assure-rt/assure/recovery/procfs"
	"github.com/assure-rt/assure/recovery/ptrace"
)

// While a process has an active checkpoint its threads run under
// PTRACE_SYSCALL: each system call stops the thread at its entry (and
// exit), and the entry hook records in the checkpoint's journal what the
// call is about to change. Outside checkpoints threads run under
// PTRACE_CONT and system calls cost nothing. No seccomp filter is used for
// this: a filter cannot be removed again, and once the supervisor is gone
// every call it traced would fail.

// sysStopKind says which system-call stop a held thread is in.
type sysStopKind uint8

const (
	notInSyscall   sysStopKind = iota // a signal-delivery, event or interrupt stop
	atSyscallEntry                    // its call has not run yet
	atSyscallExit                     // after a call: an injection in place of its own
)

// journalOn turns the journal off with ASSURE_JOURNAL=off, for
// measurements side by side (hack/bench); rollbacks then leave the
// kernel state that only the journal restores as the rescue point left it.
var journalOn = os.Getenv("ASSURE_JOURNAL") != "off"

// tracesSyscalls reports whether p's threads run under PTRACE_SYSCALL.
func tracesSyscalls(p *process) bool {
	return journalOn && newestCkpt(p) != nil && !p.sharedMM
}

// onSyscallStop handles a syscall stop reported to the main loop.
func (s *Supervisor) onSyscallStop(t *thread) {
	if s.syscallStop(t) {
		s.reinterrupt(t) // to its parking stop
		return
	}
	s.resume(t)
}

// syscallStop runs the entry hook if t stopped at the entry of a system
// call while its process has an active checkpoint. t stays held. It
// reports whether the gate parks t: the caller must then let t run to
// its parking stop with reinterrupt (once: a second interrupt could be
// used up by that stop, and the second resume let the call run).
func (s *Supervisor) syscallStop(t *thread) (parked bool) {
	s.syncFastFrame(t.proc) // the window of a recorded state may have ended
	if !tracesSyscalls(t.proc) {
		return false
	}
	info, err := ptrace.GetSyscallInfo(t.tid)
	if err != nil || info.Op != ptrace.SyscallEntry {
		return false
	}
	if info.Arch != ptrace.AuditArchX8664 {
		// int 0x80 from a 64-bit process: another numbering, not journaled.
		return false
	}
	var regs arch.Regs
	if ptrace.GetRegs(t.tid, &regs) != nil {
		return false
	}
	if r := t.replay; r != nil {
		t.replay = nil
		if r.Rip == regs.Rip && r.Orig_rax == regs.Orig_rax && arch.SyscallArgs(r) == arch.SyscallArgs(&regs) {
			return false // made again after an injection ran in its place: journaled already
		}
	}
	if s.gate(t, &regs) {
		return true
	}
	t.sysStop = atSyscallEntry
	s.debugf("syscall %d entry in %d (%#x %#x %#x %#x)", regs.Orig_rax, t.tid, regs.Rdi, regs.Rsi, regs.Rdx, regs.R10)
	s.beforeSyscall(t, &regs)
	return false
}

// beforeSyscall is the journal's entry hook: thread t, whose process has
// an active checkpoint, is about to make the system call regs describes
// (number in orig_rax, arguments in the argument registers). It records
// what the call is about to change, and must stay cheap for every other
// call. t is held; the hook may run system calls in it (inject), which
// leaves the call itself to be made afterwards.
func (s *Supervisor) beforeSyscall(t *thread, regs *arch.Regs) {
	p := t.proc
	j := journalOf(p)
	if j == nil || p.views == nil {
		return
	}
	a := arch.SyscallArgs(regs)
	if !interesting[regs.Orig_rax] {
		return
	}
	j.ensure()
	switch regs.Orig_rax {
	case unix.SYS_RT_SIGACTION:
		if a[1] != 0 {
			s.recordSigaction(t, j, int(a[0]))
		}
	case unix.SYS_SIGALTSTACK:
		if a[0] != 0 {
			s.recordAltstack(t, j)
		}
	case unix.SYS_CLOSE:
		s.recordFD(p, j, int(int32(a[0])))
	case unix.SYS_CLOSE_RANGE:
		s.recordFDRange(p, j, a[0], a[1], a[2])
	case unix.SYS_DUP2, unix.SYS_DUP3:
		if a[0] != a[1] {
			s.recordFD(p, j, int(int32(a[1])))
		}
	case unix.SYS_READ, unix.SYS_READV, unix.SYS_LSEEK, unix.SYS_GETDENTS64, unix.SYS_GETDENTS:
		s.recordOffset(p, j, int(int32(a[0])), false)
	case unix.SYS_WRITE, unix.SYS_WRITEV:
		s.recordOffset(p, j, int(int32(a[0])), true)
	case unix.SYS_PWRITE64, unix.SYS_PWRITEV, unix.SYS_PWRITEV2:
		s.recordOffset(p, j, int(int32(a[0])), true) // for comm writes; offsets unchanged
	case unix.SYS_PREADV2:
		if int64(a[3]) == -1 {
			s.recordOffset(p, j, int(int32(a[0])), false)
		}
	case unix.SYS_SENDFILE:
		s.recordOffset(p, j, int(int32(a[0])), true)
		if a[2] == 0 {
			s.recordOffset(p, j, int(int32(a[1])), false)
		}
	case unix.SYS_COPY_FILE_RANGE, unix.SYS_SPLICE:
		if a[1] == 0 {
			s.recordOffset(p, j, int(int32(a[0])), false)
		}
		if a[3] == 0 {
			s.recordOffset(p, j, int(int32(a[2])), true)
		}
	case unix.SYS_PRCTL:
		s.recordPrctl(t, j, a[0])
	case unix.SYS_UMASK:
		if j.umask == nil {
			if st, err := procfs.ReadStatus(p.pid); err == nil {
				u := st.Umask
				j.umask = &u
			}
		}
	case unix.SYS_CHDIR, unix.SYS_FCHDIR:
		s.recordCwd(p, j)
	case unix.SYS_SETRLIMIT:
		s.recordRlimit(p, j, int(a[0]))
	case unix.SYS_PRLIMIT64:
		if pid := int(int32(a[0])); a[2] != 0 && (pid == 0 || pid == p.pid || p.threads[pid] != nil) {
			s.recordRlimit(p, j, int(a[1]))
		}
	case unix.SYS_MUNMAP, unix.SYS_MPROTECT, unix.SYS_PKEY_MPROTECT:
		s.recordRange(p, j, a[0], a[1], 0)
	case unix.SYS_MMAP:
		if a[3]&unix.MAP_FIXED != 0 && a[3]&unix.MAP_FIXED_NOREPLACE == 0 {
			s.recordRange(p, j, a[0], a[1], 0)
		}
	case unix.SYS_MREMAP:
		if a[3]&mremapDontunmap != 0 {
			// The old range stays mapped, emptied.
			s.recordRange(p, j, a[0], a[1], unix.MADV_DONTNEED)
		} else {
			s.recordRange(p, j, a[0], a[1], 0)
		}
		if a[3]&unix.MREMAP_FIXED != 0 {
			s.recordRange(p, j, a[4], a[2], 0)
		}
	case unix.SYS_MADVISE:
		switch a[2] {
		case unix.MADV_DONTNEED, unix.MADV_REMOVE, unix.MADV_FREE, madvDontneedLocked:
			s.recordRange(p, j, a[0], a[1], int(a[2]))
		}
	case unix.SYS_SHMDT:
		s.recordRange(p, j, a[0], 1, 0)
	case unix.SYS_EXIT:
		s.recordExit(t, j)
	default:
		if what, ok := irreversible[regs.Orig_rax]; ok {
			j.note(what)
		}
	}
}

const (
	madvDontneedLocked = 24
	mremapDontunmap    = 4
)

// interesting are the system calls beforeSyscall looks at.
var interesting = func() map[uint64]bool {
	m := map[uint64]bool{}
	for _, nr := range []uint64{
		unix.SYS_RT_SIGACTION, unix.SYS_SIGALTSTACK, unix.SYS_CLOSE, unix.SYS_CLOSE_RANGE,
		unix.SYS_DUP2, unix.SYS_DUP3, unix.SYS_READ, unix.SYS_READV, unix.SYS_LSEEK,
		unix.SYS_GETDENTS64, unix.SYS_GETDENTS, unix.SYS_WRITE, unix.SYS_WRITEV,
		unix.SYS_PWRITE64, unix.SYS_PWRITEV, unix.SYS_PWRITEV2, unix.SYS_PREADV2, unix.SYS_SENDFILE,
		unix.SYS_COPY_FILE_RANGE, unix.SYS_SPLICE, unix.SYS_PRCTL, unix.SYS_UMASK, unix.SYS_CHDIR,
		unix.SYS_FCHDIR, unix.SYS_SETRLIMIT, unix.SYS_PRLIMIT64, unix.SYS_MUNMAP, unix.SYS_MPROTECT,
		unix.SYS_PKEY_MPROTECT, unix.SYS_MMAP, unix.SYS_MREMAP, unix.SYS_MADVISE, unix.SYS_SHMDT,
		unix.SYS_EXIT,
	} {
		m[nr] = true
	}
	for nr := range irreversible {
		m[nr] = true
	}
	return m
}()

// irreversible are system calls whose effect no rollback takes back.
var irreversible = map[uint64]string{
	unix.SYS_SECCOMP:   "seccomp filters",
	unix.SYS_SETUID:    "credentials (setuid)",
	unix.SYS_SETGID:    "credentials (setgid)",
	unix.SYS_SETREUID:  "credentials (setreuid)",
	unix.SYS_SETREGID:  "credentials (setregid)",
	unix.SYS_SETRESUID: "credentials (setresuid)",
	unix.SYS_SETRESGID: "credentials (setresgid)",
	unix.SYS_SETFSUID:  "credentials (setfsuid)",
	unix.SYS_SETFSGID:  "credentials (setfsgid)",
	unix.SYS_SETGROUPS: "credentials (setgroups)",
	unix.SYS_CAPSET:    "capabilities (capset)",
	unix.SYS_UNSHARE:   "namespaces (unshare)",
	unix.SYS_SETNS:     "namespaces (setns)",
	unix.SYS_CHROOT:    "root directory (chroot)",
	unix.SYS_SETSID:    "session (setsid)",
	unix.SYS_SETPGID:   "process group (setpgid)",
}

// dataPage is where injected calls take and return their buffers: the
// second page of the injected code page, read-write.
func dataPage(p *process) uint64 { return p.scratch + dataOffset }

// kernelSigactionSize is the kernel's struct sigaction on x86-64
// (handler, flags, restorer, an 8-byte mask).
const kernelSigactionSize = 32

func (s *Supervisor) recordSigaction(t *thread, j *journal, sig int) {
	if sig <= 0 || sig > 64 || sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
		return
	}
	if _, ok := j.sigactions[sig]; ok {
		return
	}
	if b, err := s.readSigaction(t, sig); err == nil {
		j.sigactions[sig] = b
	} else {
		j.losef("disposition of %s (%v)", signalName(sig), err)
	}
}

// readSigaction asks the kernel for a signal's disposition, in t.
func (s *Supervisor) readSigaction(t *thread, sig int) ([]byte, error) {
	p := t.proc
	if _, err := s.inject(t, unix.SYS_RT_SIGACTION, uint64(sig), 0, dataPage(p), 8); err != nil {
		return nil, err
	}
	return p.readMem(dataPage(p), kernelSigactionSize)
}

// stackTSize is sizeof(stack_t): ss_sp, ss_flags (padded), ss_size.
const stackTSize = 24

func (s *Supervisor) recordAltstack(t *thread, j *journal) {
	if _, ok := j.altstacks[t.tid]; ok {
		return
	}
	if b, err := s.readAltstack(t); err == nil {
		j.altstacks[t.tid] = b
	} else {
		j.losef("alternate signal stack of thread %d (%v)", t.tid, err)
	}
}

func (s *Supervisor) readAltstack(t *thread) ([]byte, error) {
	p := t.proc
	if _, err := s.inject(t, unix.SYS_SIGALTSTACK, 0, dataPage(p)); err != nil {
		return nil, err
	}
	return p.readMem(dataPage(p), stackTSize)
}

// recordFD keeps the open file description behind descriptor fd before
// a call closes or replaces it, unless fd was opened since the
// checkpoint (the rollback closes those anyway).
func (s *Supervisor) recordFD(p *process, j *journal, fd int) {
	if fd < 0 || j.fdSeen[fd] {
		return
	}
	j.fdSeen[fd] = true
	delete(j.offSeen, fd) // the number will name something else
	if !newestCkpt(p).hasFD(fd) {
		return
	}
	f, err := p.views.takeFD(fd)
	if err != nil {
		if err != unix.EBADF {
			j.losef("descriptor %d (%v)", fd, err)
		}
		return
	}
	j.fds = append(j.fds, fdRecord{num: fd, file: f, cloexec: fdCloexec(p.pid, fd)})
}

func (s *Supervisor) recordFDRange(p *process, j *journal, first, last, flags uint64) {
	if flags&unix.CLOSE_RANGE_UNSHARE != 0 {
		j.note("descriptor table (close_range CLOSE_RANGE_UNSHARE)")
	}
	fds, err := p.views.fds.FDs()
	if err != nil {
		j.losef("descriptors %d-%d (%v)", first, last, err)
		return
	}
	for _, fd := range fds {
		if uint64(fd) >= first && uint64(fd) <= last {
			s.recordFD(p, j, fd)
		}
	}
}

// fdCloexec reads a descriptor's close-on-exec flag from fdinfo.
func fdCloexec(pid, fd int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			f, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return f&unix.O_CLOEXEC != 0
		}
	}
	return false
}

// recordOffset keeps the offset of a regular file (or directory) before
// a call moves it, once per descriptor number. A write through a /proc
// comm file renames a thread: the names of all threads are recorded then.
func (s *Supervisor) recordOffset(p *process, j *journal, fd int, write bool) {
	if fd < 0 || j.offSeen[fd] {
		return
	}
	j.offSeen[fd] = true
	existed := newestCkpt(p).hasFD(fd)
	if !existed && !write {
		return
	}
	f, err := p.views.takeFD(fd)
	if err != nil {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		f.Close()
		return
	}
	mode := st.Mode & unix.S_IFMT
	if write && mode == unix.S_IFREG && isCommFile(p, f, fd) {
		s.recordNames(p, j)
	}
	if !existed || (mode != unix.S_IFREG && mode != unix.S_IFDIR && mode != unix.S_IFBLK) || !offsetMatters(f) {
		f.Close()
		return
	}
	off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_CUR)
	if err != nil {
		f.Close()
		return
	}
	j.offsets = append(j.offsets, offsetRecord{file: f, off: off})
}

// offsetMatters reports whether the offset of an open file description
// is worth restoring: not for O_APPEND (writes go to the end anyway) nor
// for write-only descriptions, which are logs more often than not, and
// often shared with other writers (a shell's redirection): rewinding
// them would make the next write overwrite what others appended since.
func offsetMatters(f *os.File) bool {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_APPEND == 0 && fl&unix.O_ACCMODE != unix.O_WRONLY
}

// isCommFile reports whether f, descriptor fd of p, is a thread's
// /proc/.../comm (thread names are written there, pthread_setname_np).
func isCommFile(p *process, f *os.File, fd int) bool {
	var fs unix.Statfs_t
	if unix.Fstatfs(int(f.Fd()), &fs) != nil || fs.Type != unix.PROC_SUPER_MAGIC {
		return false
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", p.pid, fd))
	return err == nil && filepath.Base(link) == "comm"
}

// recordNames keeps the name of every thread of p not recorded yet.
func (s *Supervisor) recordNames(p *process, j *journal) {
	for tid := range p.threads {
		s.recordName(p, j, tid)
	}
}

func (s *Supervisor) recordName(p *process, j *journal, tid int) {
	if _, ok := j.names[tid]; ok {
		return
	}
	if name, err := threadName(p.pid, tid); err == nil {
		j.names[tid] = name
	}
}

func threadName(pid, tid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid))
	return strings.TrimSuffix(string(b), "\n"), err
}

// prctlAttr describes a prctl attribute the journal restores: the option
// that reads it, whether it is returned through a pointer (an int)
// rather than as the result, and whether it belongs to the thread.
type prctlAttr struct {
	get       uint64
	byRef     bool
	perThread bool
}

// Values from linux/prctl.h that x/sys/unix lacks.
const (
	prSetMemoryMerge = 67
	prGetMemoryMerge = 68
	prSetMDWE        = 65
)

var prctlAttrs = map[uint64]prctlAttr{
	unix.PR_SET_DUMPABLE:        {get: unix.PR_GET_DUMPABLE},
	unix.PR_SET_PDEATHSIG:       {get: unix.PR_GET_PDEATHSIG, byRef: true, perThread: true},
	unix.PR_SET_CHILD_SUBREAPER: {get: unix.PR_GET_CHILD_SUBREAPER, byRef: true},
	unix.PR_SET_KEEPCAPS:        {get: unix.PR_GET_KEEPCAPS, perThread: true},
	unix.PR_SET_TIMERSLACK:      {get: unix.PR_GET_TIMERSLACK, perThread: true},
	unix.PR_SET_THP_DISABLE:     {get: unix.PR_GET_THP_DISABLE},
	unix.PR_SET_TSC:             {get: unix.PR_GET_TSC, byRef: true, perThread: true},
	unix.PR_SET_IO_FLUSHER:      {get: unix.PR_GET_IO_FLUSHER},
	prSetMemoryMerge:            {get: prGetMemoryMerge},
}

// prctlIrreversible are prctl options whose effect no rollback takes back.
var prctlIrreversible = map[uint64]string{
	unix.PR_SET_NO_NEW_PRIVS: "prctl PR_SET_NO_NEW_PRIVS",
	unix.PR_SET_SECCOMP:      "prctl PR_SET_SECCOMP",
	unix.PR_CAPBSET_DROP:     "prctl PR_CAPBSET_DROP",
	unix.PR_CAP_AMBIENT:      "prctl PR_CAP_AMBIENT",
	unix.PR_SET_SECUREBITS:   "prctl PR_SET_SECUREBITS",
	prSetMDWE:                "prctl PR_SET_MDWE",
	unix.PR_SET_MM:           "prctl PR_SET_MM",
	unix.PR_SET_VMA:          "prctl PR_SET_VMA (mapping names)",
	unix.PR_SET_PTRACER:      "prctl PR_SET_PTRACER",
}

func (s *Supervisor) recordPrctl(t *thread, j *journal, option uint64) {
	p := t.proc
	if option == unix.PR_SET_NAME {
		s.recordName(p, j, t.tid)
		return
	}
	attr, ok := prctlAttrs[option]
	if !ok {
		if what, ok := prctlIrreversible[option]; ok {
			j.note(what)
		}
		return
	}
	key := prctlKey{option: option}
	if attr.perThread {
		key.tid = t.tid
	}
	if _, ok := j.prctls[key]; ok {
		return
	}
	v, err := s.readPrctl(t, attr)
	if err != nil {
		j.losef("prctl option %d (%v)", option, err)
		return
	}
	j.prctls[key] = v
}

func (s *Supervisor) readPrctl(t *thread, attr prctlAttr) (uint64, error) {
	p := t.proc
	if !attr.byRef {
		return s.inject(t, unix.SYS_PRCTL, attr.get, 0, 0, 0, 0)
	}
	if _, err := s.inject(t, unix.SYS_PRCTL, attr.get, dataPage(p), 0, 0, 0); err != nil {
		return 0, err
	}
	b, err := p.readMem(dataPage(p), 4)
	if err != nil {
		return 0, err
	}
	return uint64(le32(b)), nil
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func (s *Supervisor) recordCwd(p *process, j *journal) {
	if j.cwd != nil {
		return
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/cwd", p.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		j.losef("working directory (%v)", err)
		return
	}
	j.cwd = f
}

func (s *Supervisor) recordRlimit(p *process, j *journal, res int) {
	if _, ok := j.rlimits[res]; ok || res < 0 || res >= 16 {
		return
	}
	var old unix.Rlimit
	if err := unix.Prlimit(p.pid, res, nil, &old); err != nil {
		j.losef("resource limit %d (%v)", res, err)
		return
	}
	j.rlimits[res] = old
}

// recordRange prepares the rollback of a call that unmaps, replaces,
// moves or re-protects the pages of [addr, addr+n), or (with a madvise
// advice) empties them: it keeps the files mapped there, and saves the
// pages of private mappings that are not writable (the dirty tracker
// copies writable memory, not these). For discarded writable pages it
// tells the tracker, which has their contents; in shared memory only
// MADV_REMOVE loses any.
func (s *Supervisor) recordRange(p *process, j *journal, addr, n uint64, advice int) {
	start, end := addr&^(pageSize-1), pageAlign(addr+n)
	if n == 0 || end <= start || end > 1<<47 {
		return
	}
	maps, err := p.views.maps.Range(start, end)
	if err != nil {
		j.losef("mappings at %#x-%#x (%v)", start, end, err)
		return
	}
	for _, m := range maps {
		a, b := max(m.Start, start), min(m.End, end)
		if a >= b || ownRange(p, a, b) {
			continue
		}
		if m.Inode != 0 {
			s.keepFile(p, j, m)
		}
		switch {
		case advice != 0 && m.Shared() && advice != unix.MADV_REMOVE:
		case advice != 0 && m.Writable():
			if p.tracker != nil {
				p.tracker.Discarded(a, b)
			}
		case m.Shared(), m.Writable():
			// Contents live in the shared object, or the tracker has them.
		default:
			s.savePages(p, j, a, b)
		}
	}
}

// ownRange reports whether [a, b) overlaps a mapping of the supervisor's.
func ownRange(p *process, a, b uint64) bool { return overlapsAny(p.ours(), a, b) }

// keepFile keeps open the file of mapping m (through map_files, the very
// file mapped), once per file.
func (s *Supervisor) keepFile(p *process, j *journal, m procfs.Mapping) {
	k := fileKey{m.Major, m.Minor, m.Inode}
	if j.files[k] != nil {
		return
	}
	f, err := openMapped(p.pid, m)
	if err != nil {
		j.losef("file mapped at %#x (%v)", m.Start, err)
		return
	}
	j.files[k] = f
}

// openMapped opens the file of a mapping, read-write when it can (a
// shared mapping made writable again needs that), else read-only.
func openMapped(pid int, m procfs.Mapping) (*os.File, error) {
	path := fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		f, err = os.Open(path)
	}
	return f, err
}

// savePages saves the pages of [a, b) that hold contents of the
// process's own (not file pages, not the zero page), first record wins,
// and marks the range for a reset at rollback.
func (s *Supervisor) savePages(p *process, j *journal, a, b uint64) {
	j.touched = append(j.touched, span{a, b})
	err := checkpoint.OwnPages(p.views.pagemap, a, b, func(start, end uint64) {
		for pg := start; pg < end; pg += pageSize {
			if _, ok := j.pages[pg]; ok {
				continue
			}
			buf, err := p.readMem(pg, pageSize)
			if err != nil {
				j.losef("contents at %#x (%v)", pg, err)
				continue
			}
			j.pages[pg] = buf
		}
	})
	if err != nil {
		j.losef("contents of %#x-%#x (%v)", a, b, err)
	}
	s.debugf("journal: saved pages of %#x-%#x: %d in all", a, b, len(j.pages))
}

// recordExit keeps what a thread of the checkpoint takes with it when it
// exits: its name, alternate signal stack, robust futex list and CPU
// affinity, which the thread a rollback makes in its place gets back.
func (s *Supervisor) recordExit(t *thread, j *journal) {
	p := t.proc
	if !inCheckpoint(p, t.tid) || j.exited[t.tid] != nil {
		return
	}
	e := &exitedThread{}
	e.name, _ = threadName(p.pid, t.tid)
	if b, err := s.readAltstack(t); err == nil {
		e.altstack = b
	}
	var head, n uint64
	if _, _, errno := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(t.tid), uintptr(unsafe.Pointer(&head)), uintptr(unsafe.Pointer(&n))); errno == 0 {
		e.robust = [2]uint64{head, n}
	}
	var set unix.CPUSet
	if unix.SchedGetaffinity(t.tid, &set) == nil {
		e.affinity = unsafe.Slice((*byte)(unsafe.Pointer(&set)), unsafe.Sizeof(set))
		e.affinity = append([]byte(nil), e.affinity...)
	}
	j.exited[t.tid] = e
}

// noteDelivery runs before a signal is delivered to the program while a
// checkpoint is active: a handler installed with SA_RESETHAND is reset by
// the delivery itself, with no system call to journal.
// The injection replaces the siginfo of the stop, which is put back.
func (s *Supervisor) noteDelivery(t *thread, sig unix.Signal) {
	j := journalOf(t.proc)
	if j == nil || !tracesSyscalls(t.proc) || t.proc.scratch == 0 {
		return
	}
	j.ensure()
	if _, ok := j.sigactions[int(sig)]; ok {
		return
	}
	if st, err := procfs.ReadStatus(t.tid); err != nil || st.SigCgt&(1<<(sig-1)) == 0 {
		return // no handler: nothing for the delivery to reset
	}
	si, err := ptrace.GetSiginfoRaw(t.tid)
	if err != nil {
		return
	}
	s.recordSigaction(t, j, int(sig))
	ptrace.SetSiginfoRaw(t.tid, si)
}

func signalName(sig int) string { return manifest.SignalName(unix.Signal(sig)) }

const pageSize = checkpoint.PageSize
