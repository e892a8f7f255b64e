package locks

import "encoding/binary"

// Sizes of the structures as glibc lays them out on x86-64.
const (
	mutexSize  = 40 // pthread_mutex_t
	rwlockSize = 56 // pthread_rwlock_t
	ioLockSize = 16 // _IO_lock_t, __libc_lock_recursive_t
	maxSize    = rwlockSize
)

// Field offsets that the scanner looks for an owner at.
const (
	mutexLockOff   = 0  // __lock: the tid for PI and robust mutexes
	mutexOwnerOff  = 8  // __owner
	rwlockOwnerOff = 24 // __cur_writer
	ioLockOwnerOff = 8  // owner (a struct pthread *)
)

// __kind bits (glibc nptl/pthreadP.h).
const (
	kindMask      = 3 // normal, recursive, errorcheck, adaptive
	kindRecursive = 1
	kindAdaptive  = 3
	kindRobust    = 16
	kindPI        = 32
	kindPP        = 64
	kindPshared   = 128
	kindElision   = 256
	kindNoElision = 512
	kindAll       = kindMask | kindRobust | kindPI | kindPP | kindPshared | kindElision | kindNoElision
)

// Values of __lock and __owner (glibc nptl/pthreadP.h, linux/futex.h).
const (
	futexWaiters      = 0x80000000
	futexOwnerDied    = 0x40000000
	futexTIDMask      = 0x3fffffff
	ownerInconsistent = 0x7fffffff // robust mutex whose owner died
	ceilingMask       = 0xfff80000 // priority-protect ceiling in __lock
)

// Bits of a rwlock's __readers and futex words (glibc nptl/pthreadP.h).
const (
	rwWrPhase     = 1
	rwWrLocked    = 2
	rwReaderShift = 3
	rwFutexUsed   = 2
	rwHandover    = 0x80000000 // in __writers
)

// Bounds on counters: far above anything real, far below what random
// bytes usually hold.
const (
	maxUsers = 1 << 22 // users of a process-shared lock
	maxDepth = 1 << 24 // recursion depth
)

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// thread is what the checks know of the thread they look for.
type thread struct {
	tid uint32
	// threads in its process. The users of a lock that is private to the
	// process are some of them, which rules out many look-alikes: small
	// tids, as in a container, where the first thread is 1, are small
	// integers that data is full of.
	threads uint32
}

// users bounds the count of users of a lock: process-shared ones may be
// used from other processes.
func (t thread) users(shared bool) uint32 {
	if shared {
		return maxUsers
	}
	return t.threads
}

// mutexHeldBy reports whether b starts with a pthread_mutex_t that thread
// t holds.
func mutexHeldBy(b []byte, t thread) bool {
	if len(b) < mutexSize {
		return false
	}
	lock, count, owner := le32(b[0:]), le32(b[4:]), le32(b[8:])
	nusers, kind := le32(b[12:]), le32(b[16:])
	// __nusers counts the owner and the threads waiting on a condition
	// variable with the mutex (pthread_cond_wait does not decrement it).
	return validKind(kind) &&
		nusers >= 1 && nusers <= t.users(kind&kindPshared != 0) &&
		lockWordHeldBy(lock, kind, t.tid) &&
		ownerIs(owner, kind, t.tid) &&
		countValid(count, kind) &&
		extrasValid(b, kind)
}

// validKind reports whether glibc can make a mutex of this __kind.
func validKind(kind uint32) bool {
	switch {
	case kind&^kindAll != 0:
		return false
	case kind&kindPI != 0 && kind&kindPP != 0:
		return false
	case kind&kindRobust != 0 && (kind&kindPP != 0 || kind&kindPshared == 0):
		// glibc refuses robust priority-protect mutexes, and marks every
		// robust one process-shared (the kernel wakes them that way).
		return false
	case kind&kindElision != 0 && (kind&^kindPshared != kindElision):
		// Elision is only ever forced on plain timed mutexes.
		return false
	}
	return true
}

// lockWordHeldBy checks __lock: a PI or robust mutex keeps its owner's tid
// there, with only the futex flags beside it (the kernel may set
// OWNER_DIED on a PI futex it hands over); the others keep 1 (locked) or 2
// (locked, maybe waiters), priority-protect ones above their ceiling.
func lockWordHeldBy(lock, kind, tid uint32) bool {
	switch {
	case kind&kindPI != 0:
		return lock&futexTIDMask == tid
	case kind&kindRobust != 0:
		return lock&^futexWaiters == tid
	case kind&kindPP != 0:
		low := lock &^ ceilingMask
		return low == 1 || low == 2
	}
	return lock == 1 || lock == 2
}

// ownerIs checks __owner. After a robust mutex's owner died, its next
// owner sees PTHREAD_MUTEX_INCONSISTENT there until it calls
// pthread_mutex_consistent; __lock (checked already) names it.
func ownerIs(owner, kind, tid uint32) bool {
	if owner == tid {
		return true
	}
	return kind&kindRobust != 0 && owner == ownerInconsistent
}

// countValid checks __count: a recursive mutex counts its depth, glibc's
// full lock path (PI, robust, priority-protect) sets 1, the fast path
// leaves 0.
func countValid(count, kind uint32) bool {
	switch {
	case kind&kindMask == kindRecursive:
		return count >= 1 && count <= maxDepth
	case kind&(kindPI|kindRobust|kindPP) != 0:
		return count == 1
	}
	return count == 0
}

// extrasValid checks the fields only some kinds use: __spins (adaptive,
// fast path), __elision (elision) and the robust list links, which point
// at other list entries or into struct pthread.
func extrasValid(b []byte, kind uint32) bool {
	spins, elision := int16(le16(b[20:])), int16(le16(b[22:]))
	prev, next := le64(b[24:]), le64(b[32:])
	adaptiveFast := kind&(kindMask|kindPI|kindRobust|kindPP) == kindAdaptive
	if spins < 0 || (spins != 0 && !adaptiveFast) {
		return false
	}
	if elision < 0 || (elision != 0 && kind&kindElision == 0) {
		return false
	}
	if kind&kindRobust == 0 {
		return prev == 0 && next == 0
	}
	// __next may carry bit 0: it marks the entry it points at as PI.
	return userPointer(prev) && userPointer(next&^1)
}

// userPointer reports whether p looks like an 8-aligned x86-64 user-space
// address.
func userPointer(p uint64) bool {
	return p != 0 && p&7 == 0 && p < 1<<47
}

// rwlockWriteHeldBy reports whether b starts with a pthread_rwlock_t that
// thread t holds for writing.
func rwlockWriteHeldBy(b []byte, t thread) bool {
	if len(b) < rwlockSize {
		return false
	}
	readers, writers := le32(b[0:]), le32(b[4:])
	wrphase, wfutex := le32(b[8:]), le32(b[12:])
	pad3, pad4 := le32(b[16:]), le32(b[20:])
	curWriter, shared := le32(b[24:]), le32(b[28:])
	elisionAndPad1, pad2, flags := le64(b[32:]), le64(b[40:]), le32(b[48:])
	return curWriter == t.tid &&
		// A writer holds it only in a write phase (states #7, #8 of
		// pthread_rwlock_common.c).
		readers&(rwWrPhase|rwWrLocked) == rwWrPhase|rwWrLocked &&
		// Readers may count more than once (recursive read locks);
		// writers waiting do not.
		readers>>rwReaderShift <= maxUsers &&
		writers&^rwHandover <= t.users(shared != 0) &&
		wrphase&^(1|rwFutexUsed) == 0 &&
		wfutex&^rwFutexUsed == 1 &&
		pad3 == 0 && pad4 == 0 && elisionAndPad1 == 0 && pad2 == 0 &&
		shared <= 1 &&
		flags <= 2 // PREFER_READER, PREFER_WRITER, ..._NONRECURSIVE
}

// Where a FILE records its lock (glibc libio/bits/types/struct_FILE.h).
const (
	fileLockOff = 136        // _lock in FILE
	fileMagic   = 0xFBAD0000 // _IO_MAGIC, in the high half of _flags
	fileMagicM  = 0xFFFF0000
	// A FILE that fopen, fdopen, popen, fopencookie, fmemopen or
	// open_memstream allocates is followed by its lock: 224 to 264
	// bytes from the FILE's start, depending on the kind.
	fileMinBefore = 224
	fileMaxBefore = 512
)

// fileBefore reports whether before, the bytes that end where an
// _IO_lock_t at addr starts, hold a FILE whose _lock points at it.
func fileBefore(before []byte, addr uint64) bool {
	for k := fileMinBefore; k <= len(before); k += 8 {
		f := before[len(before)-k:]
		if le32(f)&fileMagicM == fileMagic && le64(f[fileLockOff:]) == addr {
			return true
		}
	}
	return false
}

// ioLockHeldBy reports whether b starts with an _IO_lock_t (or glibc's
// internal recursive lock) owned by the thread whose struct pthread is at
// self.
func ioLockHeldBy(b []byte, self uint64) bool {
	if len(b) < ioLockSize {
		return false
	}
	lock, cnt, owner := le32(b[0:]), le32(b[4:]), le64(b[8:])
	return owner == self && (lock == 1 || lock == 2) &&
		cnt >= 1 && cnt <= maxDepth
}
