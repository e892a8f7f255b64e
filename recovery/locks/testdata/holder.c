/*
 * holder: a process whose threads hold glibc locks of every kind that
 * recovery/locks detects, and some that it must not report. It prints one
 * line per fact to stdout, then "ready", then stops itself with SIGSTOP, so
 * the test can scan it exactly as assure scans a faulted tracee.
 *
 * Lines: "thread NAME TID SELF" (SELF is pthread_self(), i.e. the thread's
 * fs base on x86-64), "held NAME KIND ADDR" for a lock NAME holds,
 * "free KIND ADDR" for a lock nobody holds.
 *
 * Output goes through write(2), not stdio: thread "stdio" holds stdout's
 * FILE lock, so printf would block.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static sem_t ready; /* posted by a thread once it holds its locks */

static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (write(1, buf, n) != n)
		abort();
}

static void check(int err, const char *what)
{
	if (err != 0) {
		fprintf(stderr, "%s: %s\n", what, strerror(err));
		exit(1);
	}
}

static void thread_line(const char *name)
{
	say("thread %s %ld %p\n", name, (long)syscall(SYS_gettid),
	    (void *)pthread_self());
}

static void init_mutex(pthread_mutex_t *m, int type, int protocol,
		       int robust, int pshared)
{
	pthread_mutexattr_t a;
	check(pthread_mutexattr_init(&a), "mutexattr_init");
	check(pthread_mutexattr_settype(&a, type), "settype");
	check(pthread_mutexattr_setprotocol(&a, protocol), "setprotocol");
	if (robust)
		check(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST),
		      "setrobust");
	if (pshared)
		check(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED),
		      "setpshared");
	check(pthread_mutex_init(m, &a), "mutex_init");
	pthread_mutexattr_destroy(&a);
}

static void *xmmap(size_t n, int flags)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return p;
}

static void hold_forever(void)
{
	sem_post(&ready);
	for (;;)
		pause();
}

/* Thread "a": plain mutexes in .bss, .data, the heap and its own stack. */
static pthread_mutex_t bss_normal = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t data_recursive = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static pthread_mutex_t adaptive = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;

static void *thread_a(void *arg)
{
	(void)arg;
	pthread_mutex_t on_stack;
	init_mutex(&on_stack, PTHREAD_MUTEX_NORMAL, PTHREAD_PRIO_NONE, 0, 0);
	pthread_mutex_t *heap_rec = malloc(sizeof *heap_rec);
	init_mutex(heap_rec, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PRIO_NONE, 0, 0);

	thread_line("a");
	check(pthread_mutex_lock(&bss_normal), "lock bss");
	check(pthread_mutex_lock(&data_recursive), "lock data");
	check(pthread_mutex_lock(&data_recursive), "lock data again");
	check(pthread_mutex_lock(&data_recursive), "lock data again");
	check(pthread_mutex_lock(heap_rec), "lock heap");
	check(pthread_mutex_lock(heap_rec), "lock heap again");
	check(pthread_mutex_lock(&on_stack), "lock stack");
	check(pthread_mutex_trylock(&adaptive), "trylock adaptive");
	say("held a mutex %p\n", (void *)&bss_normal);
	say("held a mutex %p\n", (void *)&data_recursive);
	say("held a mutex %p\n", (void *)heap_rec);
	say("held a mutex %p\n", (void *)&on_stack);
	say("held a mutex %p\n", (void *)&adaptive);
	hold_forever();
	return NULL;
}

/* Thread "b": the kinds that go through glibc's full lock path, and a
 * write-locked rwlock. */
static pthread_mutex_t errorcheck = PTHREAD_ERRORCHECK_MUTEX_INITIALIZER_NP;
static pthread_rwlock_t wrlocked = PTHREAD_RWLOCK_INITIALIZER;

static void *thread_b(void *arg)
{
	(void)arg;
	pthread_mutex_t *pi = malloc(sizeof *pi);
	pthread_mutex_t *robust = malloc(sizeof *robust);
	pthread_mutex_t *robust_pi = malloc(sizeof *robust_pi);
	/* A process-shared robust mutex in shared memory, as between a
	 * server's processes. */
	pthread_mutex_t *shared = xmmap(4096, MAP_SHARED);
	init_mutex(pi, PTHREAD_MUTEX_NORMAL, PTHREAD_PRIO_INHERIT, 0, 0);
	init_mutex(robust, PTHREAD_MUTEX_NORMAL, PTHREAD_PRIO_NONE, 1, 0);
	init_mutex(robust_pi, PTHREAD_MUTEX_RECURSIVE, PTHREAD_PRIO_INHERIT, 1, 0);
	init_mutex(shared, PTHREAD_MUTEX_ERRORCHECK, PTHREAD_PRIO_NONE, 1, 1);

	thread_line("b");
	check(pthread_mutex_lock(&errorcheck), "lock errorcheck");
	check(pthread_mutex_lock(pi), "lock pi");
	check(pthread_mutex_lock(robust), "lock robust");
	check(pthread_mutex_lock(robust_pi), "lock robust pi");
	check(pthread_mutex_lock(robust_pi), "lock robust pi again");
	check(pthread_mutex_lock(shared), "lock shared");
	check(pthread_rwlock_wrlock(&wrlocked), "wrlock");
	say("held b mutex %p\n", (void *)&errorcheck);
	say("held b mutex %p\n", (void *)pi);
	say("held b mutex %p\n", (void *)robust);
	say("held b mutex %p\n", (void *)robust_pi);
	say("held b mutex %p\n", (void *)shared);
	say("held b rwlock %p\n", (void *)&wrlocked);

	/* A priority-protect mutex needs the right to raise the thread's
	 * priority; where that is refused it is left out. */
	pthread_mutex_t *pp = malloc(sizeof *pp);
	init_mutex(pp, PTHREAD_MUTEX_NORMAL, PTHREAD_PRIO_PROTECT, 0, 0);
	if (pthread_mutex_lock(pp) == 0)
		say("held b mutex %p\n", (void *)pp);
	else
		say("free mutex %p\n", (void *)pp);
	hold_forever();
	return NULL;
}

/* Thread "c" holds nothing, yet has touched locks: one it locked and
 * unlocked, a read lock (readers are anonymous, so not reported), and a
 * condition variable wait, which leaves the mutex unlocked but counted in
 * __nusers. */
static pthread_mutex_t once_locked = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t rdlocked = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t cv_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void *thread_c(void *arg)
{
	(void)arg;
	thread_line("c");
	check(pthread_mutex_lock(&once_locked), "lock once");
	check(pthread_mutex_unlock(&once_locked), "unlock once");
	check(pthread_rwlock_rdlock(&rdlocked), "rdlock");
	say("free mutex %p\n", (void *)&once_locked);
	say("free rwlock %p\n", (void *)&rdlocked);
	say("free mutex %p\n", (void *)&cv_mutex);
	check(pthread_mutex_lock(&cv_mutex), "lock cv");
	sem_post(&ready);
	for (;;)
		pthread_cond_wait(&cv, &cv_mutex);
	return NULL;
}

/* Thread "edge": a mutex whose first 16 bytes end a page that is also the
 * end of a 1 MiB block, so it straddles both the scanner's read windows and
 * a page boundary. Locking only reads the second page (so the zero page is
 * mapped there); dropping that mapping leaves the page not present, which
 * the scanner must read as zeros without faulting it in. A zero-filled
 * mutex is a valid normal one. */
static void *thread_edge(void *arg)
{
	(void)arg;
	size_t mib = 1 << 20;
	char *area = xmmap(3 * mib, MAP_PRIVATE);
	/* A transparent huge page would keep the second page present. */
	madvise(area, 3 * mib, MADV_NOHUGEPAGE);
	uintptr_t boundary = ((uintptr_t)area + mib) & ~(uintptr_t)(mib - 1);
	pthread_mutex_t *m = (pthread_mutex_t *)(boundary - 16);
	thread_line("edge");
	check(pthread_mutex_lock(m), "lock edge");
	if (madvise((void *)boundary, 4096, MADV_DONTNEED) != 0) {
		perror("madvise");
		exit(1);
	}
	say("held edge mutex %p\n", (void *)m);
	hold_forever();
	return NULL;
}

/* Thread "file" holds a process-shared mutex at the start of a shared
 * mapping of a one-page file that is mapped 64 pages long: reading the
 * pages past the end of the file fails (SIGBUS in the process, EFAULT for
 * the scanner). */
static void *thread_file(void *arg)
{
	(void)arg;
	int fd = memfd_create("holder", 0);
	if (fd < 0 || ftruncate(fd, 4096) != 0) {
		perror("memfd");
		exit(1);
	}
	pthread_mutex_t *m = mmap(NULL, 64 * 4096, PROT_READ | PROT_WRITE,
				  MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap memfd");
		exit(1);
	}
	close(fd);
	init_mutex(m, PTHREAD_MUTEX_NORMAL, PTHREAD_PRIO_NONE, 0, 1);
	thread_line("file");
	check(pthread_mutex_lock(m), "lock file");
	say("held file mutex %p\n", (void *)m);
	say("beyond-eof %p %d\n", (void *)((char *)m + 4096), 63 * 4096);
	hold_forever();
	return NULL;
}

/* Thread "heir" holds a robust mutex whose previous owner exited holding
 * it: its pthread_mutex_lock returned EOWNERDEAD and it has not called
 * pthread_mutex_consistent, so __owner is PTHREAD_MUTEX_INCONSISTENT and
 * only __lock names it. */
static pthread_mutex_t orphan;

static void *thread_dies_holding(void *arg)
{
	(void)arg;
	check(pthread_mutex_lock(&orphan), "lock orphan");
	return NULL;
}

static void *thread_heir(void *arg)
{
	(void)arg;
	pthread_t t;
	init_mutex(&orphan, PTHREAD_MUTEX_NORMAL, PTHREAD_PRIO_NONE, 1, 0);
	check(pthread_create(&t, NULL, thread_dies_holding, NULL), "create");
	check(pthread_join(t, NULL), "join");
	thread_line("heir");
	if (pthread_mutex_lock(&orphan) != EOWNERDEAD) {
		fprintf(stderr, "orphan: no EOWNERDEAD\n");
		exit(1);
	}
	say("held heir mutex %p\n", (void *)&orphan);
	hold_forever();
	return NULL;
}

/* Thread "stdio" holds stdout's FILE lock (in libc's .bss) and that of a
 * FILE from fopen (on the heap, after the FILE); thread "waiter" is blocked
 * inside flockfile(stdout), so it wants the lock but does not own it. */
struct decoy {
	int a, b;
	pthread_t self;
};

static void *thread_stdio(void *arg)
{
	(void)arg;
	FILE *f = fopen("/dev/null", "w");
	if (f == NULL) {
		perror("fopen");
		exit(1);
	}
	/* Like Python's sqlite3 connection: pthread_self() after two ints of
	 * 1, the bytes of a held _IO_lock_t, but no lock. */
	struct decoy *d = malloc(sizeof *d);
	d->a = d->b = 1;
	d->self = pthread_self();
	thread_line("stdio");
	flockfile(stdout);
	flockfile(stdout); /* recursive: cnt 2 */
	flockfile(f);
	say("held stdio stdio %p\n", (void *)stdout->_lock);
	say("held stdio stdio %p\n", (void *)f->_lock);
	say("free stdio %p\n", (void *)d);
	hold_forever();
	return NULL;
}

static void *thread_waiter(void *arg)
{
	(void)arg;
	thread_line("waiter");
	sem_post(&ready);
	flockfile(stdout);
	abort(); /* never: "stdio" never lets go */
	return NULL;
}

int main(void)
{
	void *(*threads[])(void *) = { thread_a, thread_b, thread_c,
				       thread_edge, thread_file, thread_heir,
				       thread_stdio,
				       thread_waiter };
	size_t n = sizeof threads / sizeof threads[0];
	check(sem_init(&ready, 0, 0), "sem_init");
	say("pid %ld\n", (long)getpid());
	thread_line("main");
	for (size_t i = 0; i < n; i++) {
		pthread_t t;
		check(pthread_create(&t, NULL, threads[i], NULL), "create");
		while (sem_wait(&ready) != 0)
			;
	}
	/* Let "waiter" get into the futex wait of flockfile. */
	usleep(100 * 1000);
	say("ready\n");
	raise(SIGSTOP);
	for (;;)
		pause();
}
