// Package locks finds the glibc locks that one thread of a stopped process
// holds.
//
// assure uses it before it makes a faulted function return an error
// without rolling memory back: unwinding the frame of a thread that holds
// a lock would leave the lock held forever, so such a recovery is refused.
//
// # How
//
// glibc records the owner of a lock inside the lock, and a lock lives in
// memory the process can write. HeldBy reads every readable and writable
// mapping of the process (process_vm_readv, 1 MiB at a time, skipping pages
// that /proc/PID/pagemap says were never touched: a held lock was written,
// so its page is present or swapped) and looks at each 8-byte aligned word
// for the thread's id. Around each hit it checks that the bytes are a lock
// in glibc's x86-64 layout, held by that thread:
//
//   - pthread_mutex_t (40 bytes): __owner is the tid (for a robust mutex
//     whose previous owner died, __owner is PTHREAD_MUTEX_INCONSISTENT and
//     the tid is in __lock); __lock is 1 or 2, or for PI and robust mutexes
//     the tid with only the futex flag bits beside it, or for
//     priority-protect ones the ceiling with 1 or 2; __kind is a kind glibc
//     makes; __nusers is at least 1 and, unless the mutex is
//     process-shared, at most the number of threads of the process;
//     __count is 0, 1 or the recursion depth as glibc leaves it for that
//     kind; __spins, __elision and the robust list links are zero unless
//     the kind uses them, and then plausible.
//     This covers normal, recursive, errorcheck and adaptive mutexes, PI,
//     robust and priority-protect ones, process-shared ones in shared
//     memory, C++ std::mutex and glibc's own mutexes (e.g. the dynamic
//     loader's lock).
//   - pthread_rwlock_t (56 bytes) locked for writing: __cur_writer is the
//     tid, __readers has the write-phase and write-locked bits,
//     __writers_futex says a writer holds it, padding is zero, __flags and
//     __shared have values glibc uses. Also std::shared_mutex and glibc's
//     internal rwlocks (e.g. setlocale's).
//   - with Options.FSBase, stdio's _IO_lock_t (16 bytes: lock, cnt, owner)
//     and glibc's internal recursive locks, which share its layout: owner is
//     the thread's struct pthread, which on x86-64 is its fs base, not its
//     tid, so the caller has to supply it (from PTRACE_GETREGS). Programs
//     keep pthread_self() beside small integers too, so such a lock counts
//     only where glibc puts one: in libc's data and .bss (stdin, stdout,
//     stderr, glibc's own), or right after a FILE whose _lock points at it
//     (fopen, fdopen, popen, fopencookie, fmemopen, open_memstream).
//
// The checks are strict because a false positive, though safe (assure only
// refuses a recovery it could have made), makes the feature useless if it
// is common.
//
// # Limits
//
// Only glibc's x86-64 layout is known. The owner's tid is the one signal
// that is rare in memory; the smaller it is the less rare: for tid 1 (the
// first thread of a container) a normal mutex is the bytes 1, 0, 1, 1 and
// zeros, which some data are too (2 look-alikes in the 11 MiB of a Python
// process; none for tids 2 to 1000 there, in redis or in nginx). A caller
// can subtract the locks a thread held at a point it knows was safe.
//
// Not seen: read locks (readers are only counted, not named); locks that
// record no owner (glibc's internal __libc_lock_t, so malloc's arena
// locks; spinlocks; semaphores; Go, musl or hand-made locks); mutexes taken
// through lock elision (the tunable glibc.elision.enable, off by default),
// which record no owner; in a statically linked program, the locks of
// stdin, stdout, stderr and glibc's own recursive locks (no libc mapping to
// place them in); a lock in a mapping that is not writable; a lock in a
// page of a shared mapping that memory pressure made the kernel unmap from
// this process (pagemap then shows it as untouched); a lock the thread
// acquired but whose owner field it had not yet written when it stopped (a
// few instructions inside glibc). HeldBy reads memory while the process
// runs just as well, but then the answer may be stale: stop the process
// first.
package locks
