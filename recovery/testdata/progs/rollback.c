/* rollback: what a recovery must undo.
 *
 *   rollback MODE fault|nofault
 *
 * main measures a set of probes, calls the rescue point mutate() (error
 * value -1), which changes one kind of state (MODE) and then, with "fault",
 * writes through a null pointer; main measures the probes again and prints
 * every probe as NAME_before=V and NAME_after=V, plus rc and a few
 * after-only observations (extra_*). Under assure with "fault" every
 * NAME_after must equal NAME_before; natively with "nofault" the probes of
 * MODE change (which shows each probe does see the change).
 *
 * Modes: heap stack global kernel mmap brk fd thread fork sigmask fpenv regs,
 * and kernel state the journal restores: sigaction (handlers, flags and
 * masks, SIGSEGV reset to SIG_DFL as redis's assertion path does),
 * altstack, close (a regular file with an offset, a pipe, a socket: they
 * must come back as the same open file descriptions), dup2 (over the
 * file), offset (reads and a seek on the file), prctl, umask, cwd, rlimit
 * (soft limits), madvise (MADV_DONTNEED on written pages of a private
 * file mapping, MADV_REMOVE on shared memory), name (the main thread's
 * name with prctl, the helper's through /proc .../comm) and threadexit
 * (the named helper thread exits and is joined: it must come back, with
 * its name), resethand (a signal delivered to a handler installed with
 * SA_RESETHAND: the delivery itself resets it, no system call), and
 * unmapshared (shared memory and a shared file mapping unmapped: they must
 * come back as mappings of the same objects, still shared). seccomp-close installs a seccomp filter that forbids
 * socketpair, which a rollback needs to give back a closed descriptor,
 * then closes the file inside the rescue point (bad input); seccomp-munmap
 * forbids unmapping what mode mmap maps at a fixed address inside the
 * rescue point: the rollback cannot complete.
 * Things the rescue point must hand out of a rolled-back world (an mmap
 * address, fd numbers, a thread id, a child pid) go through the pipe "oob":
 * the kernel's pipe buffer is not program memory and survives the rollback.
 */
#include "common.h"

#include <fenv.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

enum mode {
	M_NOOP, M_HEAP, M_STACK, M_GLOBAL, M_KERNEL, M_MMAP, M_BRK, M_FD, M_THREAD, M_FORK, M_SIGMASK, M_FPENV, M_REGS,
	M_SIGACTION, M_ALTSTACK, M_CLOSE, M_DUP2, M_OFFSET, M_PRCTL, M_UMASK, M_CWD, M_RLIMIT, M_MADVISE, M_NAME,
	M_THREADEXIT, M_SECCOMP_CLOSE, M_SECCOMP_MUNMAP, M_RESETHAND, M_UNMAPSHARED,
};
static const char *mode_names[] = {
	"noop", "heap", "stack", "global", "kernel", "mmap", "brk", "fd", "thread", "fork", "sigmask", "fpenv", "regs",
	"sigaction", "altstack", "close", "dup2", "offset", "prctl", "umask", "cwd", "rlimit", "madvise", "name",
	"threadexit", "seccomp-close", "seccomp-munmap", "resethand", "unmapshared",
};

#define MAP_LEN (1 << 20)
#define HEAP_LEN (64 * 1024)
#define NFDS 6

static int oob[2];       /* out of the rescue point, past the rollback */
static int datapipe[2];  /* kernel mode: what read() copies in */
static int blockpipe[2]; /* thread and fork: never written, blocks forever */
static int readypipe[2]; /* thread and fork: "I am running" */
static pid_t g_parent;

int g_global = 1234;
char g_gbuf[3 * 4096];
char g_kbuf[3 * 4096] __attribute__((aligned(4096)));

/* Kernel state set up before the measurements (setup_kstate). */
#define KFILE_LEN 16384
static int g_file = -1, g_pipe[2], g_sock[2];       /* closed, replaced, read */
static int g_wfile = -1, g_wpipe = -1, g_wsock = -1; /* witnesses: dups kept */
static char *g_fmap, *g_shm, *g_shm2;               /* madvise; g_shm2 maps g_shm's memfd again */
static char *g_fshared;                             /* kfile, MAP_SHARED */
static pthread_t g_helper;
static int g_helper_stop;  /* futex: the helper exits when it is 1 */
static int g_helper_ready; /* futex: 1 once the helper has its name */
static pid_t g_helper_tid;
static char g_altstack[65536];

static void usr1_handler(int sig) { (void)sig; }
static void segv_handler(int sig, siginfo_t *si, void *uc) { (void)sig, (void)si, (void)uc; }

static void *helper_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "rb-helper");
	g_helper_tid = (pid_t)syscall(SYS_gettid);
	__atomic_store_n(&g_helper_ready, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &g_helper_ready, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	while (!__atomic_load_n(&g_helper_stop, __ATOMIC_ACQUIRE))
		syscall(SYS_futex, &g_helper_stop, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
	return NULL;
}

static void setup_kstate(void)
{
	struct sigaction sa = { 0 };
	sa.sa_handler = usr1_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction");
	sa.sa_flags = SA_RESETHAND;
	if (sigaction(SIGUSR2, &sa, NULL))
		die("sigaction");
	struct sigaction sv = { 0 };
	sv.sa_sigaction = segv_handler;
	sv.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESETHAND; /* as redis */
	if (sigaction(SIGSEGV, &sv, NULL))
		die("sigaction");
	stack_t ss = { .ss_sp = g_altstack, .ss_size = sizeof g_altstack };
	if (sigaltstack(&ss, NULL))
		die("sigaltstack");

	g_file = open("kfile", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (g_file < 0)
		die("kfile");
	static char buf[KFILE_LEN];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (char)('a' + i % 23);
	write_all(g_file, buf, sizeof buf);
	lseek(g_file, 100, SEEK_SET);
	if (pipe(g_pipe) || socketpair(AF_UNIX, SOCK_STREAM, 0, g_sock))
		die("pipe");
	g_wfile = dup(g_file), g_wpipe = dup(g_pipe[0]), g_wsock = dup(g_sock[0]);

	g_fmap = mmap(NULL, KFILE_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE, g_file, 0);
	int mfd = memfd_create("rb-shm", MFD_CLOEXEC);
	if (g_fmap == MAP_FAILED || mfd < 0 || ftruncate(mfd, 8192))
		die("madvise setup");
	g_shm = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	g_shm2 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	close(mfd);
	g_fshared = mmap(NULL, KFILE_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, g_file, 0);
	if (g_shm == MAP_FAILED || g_shm2 == MAP_FAILED || g_fshared == MAP_FAILED)
		die("mmap shm");
	memset(g_fmap, 'C', 4096); /* a written (copied) page of the file mapping */
	memset(g_shm, 'S', 8192);

	prctl(PR_SET_NAME, "rb-main");
	if (pthread_create(&g_helper, NULL, helper_main, NULL))
		die("pthread_create");
	while (!__atomic_load_n(&g_helper_ready, __ATOMIC_ACQUIRE))
		syscall(SYS_futex, &g_helper_ready, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

#define FIXED_ADDR ((char *)0x200000000000UL)

/* A seccomp filter that fails socketpair (or munmap of FIXED_ADDR) with
 * EPERM and allows the rest. */
static void forbid(int munmap_fixed)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, munmap_fixed ? SYS_munmap : SYS_socketpair, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]) + 4),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, munmap_fixed ? 0x2000 : 0, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		die("seccomp");
}

struct ctx {
	int *local;
	char *lbuf;
	char *heap;
};

static void *blocker_thread(void *arg)
{
	(void)arg;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	write_all(oob[1], &tid, sizeof tid);
	write_all(readypipe[1], "t", 1);
	char x;
	while (read(blockpipe[0], &x, 1) < 0 && errno == EINTR)
		;
	return NULL;
}

RESCUE_POINT int mutate(int mode, struct ctx *c, int fault)
{
	switch (mode) {
	case M_NOOP:
		break;
	case M_HEAP:
		memset(c->heap, 'X', HEAP_LEN);
		for (int i = 0; i < 16; i++) {
			char *p = malloc(1000 + (size_t)i);
			memset(p, i, 1000);
			escape(p);
		}
		break;
	case M_STACK:
		*c->local = 99;
		memset(c->lbuf, 'Z', 256);
		break;
	case M_GLOBAL:
		g_global = 4321;
		memset(g_gbuf, 'G', sizeof g_gbuf);
		break;
	case M_KERNEL:
		/* only the kernel writes these pages inside the rescue point */
		read_exact(datapipe[0], g_kbuf + 100, 2 * 4096);
		break;
	case M_MMAP:
	case M_SECCOMP_MUNMAP: {
		char *f = mmap(FIXED_ADDR, MAP_LEN, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (f != FIXED_ADDR)
			die("mmap fixed");
		memset(f, 1, MAP_LEN);
		char *a = mmap(NULL, MAP_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (a == MAP_FAILED)
			die("mmap");
		memset(a, 2, MAP_LEN);
		write_all(oob[1], &a, sizeof a);
		break;
	}
	case M_BRK: {
		char *p = malloc(100000); /* below the mmap threshold: main heap */
		memset(p, 3, 100000);
		escape(p);
		char *s = sbrk(1 << 20);
		if (s == (char *)-1)
			die("sbrk");
		memset(s, 4, 1 << 20);
		break;
	}
	case M_FD: {
		int fds[NFDS];
		fds[0] = open("/dev/null", O_RDONLY);
		fds[1] = open("/dev/null", O_WRONLY);
		fds[2] = dup(1);
		if (pipe(fds + 3) < 0)
			die("pipe");
		fds[5] = open("/proc/self/status", O_RDONLY);
		for (int i = 0; i < NFDS; i++)
			if (fds[i] < 0)
				die("open");
		write_all(oob[1], fds, sizeof fds);
		break;
	}
	case M_THREAD: {
		pthread_t t;
		if (pthread_create(&t, NULL, blocker_thread, NULL))
			die("pthread_create");
		char b;
		read_exact(readypipe[0], &b, 1);
		break;
	}
	case M_FORK: {
		pid_t p = fork();
		if (p < 0)
			die("fork");
		if (p == 0) {
			/* do not outlive the program (natively it dies right away) */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != g_parent)
				_exit(0);
			pid_t me = getpid();
			write_all(oob[1], &me, sizeof me);
			write_all(readypipe[1], "f", 1);
			char x;
			while (read(blockpipe[0], &x, 1) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		char b;
		read_exact(readypipe[0], &b, 1);
		break;
	}
	case M_SIGMASK: {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR1);
		sigaddset(&s, SIGUSR2);
		pthread_sigmask(SIG_BLOCK, &s, NULL);
		break;
	}
	case M_FPENV:
		fesetround(FE_UPWARD); /* x87 control word and MXCSR */
		break;
	case M_SIGACTION: {
		struct sigaction sa = { 0 };
		sa.sa_handler = SIG_IGN;
		sigaction(SIGUSR1, &sa, NULL);
		signal(SIGSEGV, SIG_DFL); /* redis's _serverAssert, before abort() */
		signal(SIGUSR2, SIG_IGN);
		break;
	}
	case M_ALTSTACK: {
		stack_t ss = { .ss_flags = SS_DISABLE };
		sigaltstack(&ss, NULL);
		break;
	}
	case M_CLOSE:
	case M_SECCOMP_CLOSE:
		close(g_file);
		if (mode == M_CLOSE) {
			close(g_pipe[0]);
			close(g_sock[0]);
		}
		break;
	case M_DUP2: {
		int n = open("/dev/null", O_RDONLY);
		dup2(n, g_file);
		close(n);
		break;
	}
	case M_OFFSET: {
		char b[1000];
		read_exact(g_file, b, sizeof b);
		lseek(g_file, 5000, SEEK_CUR);
		break;
	}
	case M_PRCTL:
		prctl(PR_SET_DUMPABLE, 0);
		prctl(PR_SET_PDEATHSIG, SIGUSR2);
		prctl(PR_SET_CHILD_SUBREAPER, 1);
		prctl(PR_SET_TIMERSLACK, 123457);
		prctl(PR_SET_KEEPCAPS, 1);
		break;
	case M_UMASK:
		umask(077);
		break;
	case M_CWD:
		if (chdir("/"))
			die("chdir");
		break;
	case M_RLIMIT: {
		struct rlimit r;
		getrlimit(RLIMIT_NOFILE, &r);
		r.rlim_cur = 100;
		setrlimit(RLIMIT_NOFILE, &r);
		getrlimit(RLIMIT_STACK, &r);
		r.rlim_cur = 1 << 20;
		setrlimit(RLIMIT_STACK, &r);
		break;
	}
	case M_MADVISE:
		madvise(g_fmap, KFILE_LEN, MADV_DONTNEED); /* the copied page reverts to the file */
		madvise(g_shm, 8192, MADV_REMOVE);         /* the memfd's pages are freed */
		break;
	case M_NAME:
		prctl(PR_SET_NAME, "renamed");
		pthread_setname_np(g_helper, "other"); /* writes /proc/self/task/TID/comm */
		break;
	case M_RESETHAND:
		raise(SIGUSR2); /* its handler runs once, and is reset */
		break;
	case M_UNMAPSHARED:
		munmap(g_shm, 8192);
		munmap(g_fshared, KFILE_LEN);
		break;
	case M_THREADEXIT:
		__atomic_store_n(&g_helper_stop, 1, __ATOMIC_RELEASE);
		syscall(SYS_futex, &g_helper_stop, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
		pthread_join(g_helper, NULL);
		/* pthread_join returns when the kernel clears the thread's tid,
		 * a moment before the task leaves /proc/self/task. */
		{
			char path[64];
			snprintf(path, sizeof path, "/proc/self/task/%d", g_helper_tid);
			for (int k = 0; k < 5000 && access(path, F_OK) == 0; k++) {
				struct timespec ms = {0, 1000000};
				nanosleep(&ms, NULL);
			}
		}
		break;
	}
	if (fault)
		crash_null();
	return 0;
}

/* Callee-saved registers: the rescue point saves them, overwrites them and
 * (with fault) dies before its epilogue restores them. After error
 * virtualization the caller must see its own values again. */
RESCUE_POINT int clobber_regs(int fault)
{
	__asm__ volatile("mov $-1, %%rbx\n\t"
			 "mov $-1, %%r12\n\t"
			 "mov $-1, %%r13\n\t"
			 "mov $-1, %%r14\n\t"
			 "mov $-1, %%r15\n\t" ::
				 : "rbx", "r12", "r13", "r14", "r15");
	if (fault)
		crash_null();
	return 0;
}

/* int call_preserving(int fault, long out[6]): loads known values into
 * rbx, rbp, r12-r15, calls clobber_regs(fault), stores what those
 * registers hold afterwards into out. */
int call_preserving(int fault, long *out);
__asm__(".pushsection .text\n"
	".globl call_preserving\n"
	".type call_preserving, @function\n"
	"call_preserving:\n"
	"	push %rbx\n"
	"	push %rbp\n"
	"	push %r12\n"
	"	push %r13\n"
	"	push %r14\n"
	"	push %r15\n"
	"	push %rsi\n" /* 7 pushes + return address: rsp 16-aligned */
	"	movabs $0x1111111111111111, %rbx\n"
	"	movabs $0x5555555555555555, %rbp\n"
	"	movabs $0x1212121212121212, %r12\n"
	"	movabs $0x1313131313131313, %r13\n"
	"	movabs $0x1414141414141414, %r14\n"
	"	movabs $0x1515151515151515, %r15\n"
	"	call clobber_regs\n"
	"	pop %rsi\n"
	"	mov %rbx, 0(%rsi)\n"
	"	mov %rbp, 8(%rsi)\n"
	"	mov %r12, 16(%rsi)\n"
	"	mov %r13, 24(%rsi)\n"
	"	mov %r14, 32(%rsi)\n"
	"	mov %r15, 40(%rsi)\n"
	"	pop %r15\n"
	"	pop %r14\n"
	"	pop %r13\n"
	"	pop %r12\n"
	"	pop %rbp\n"
	"	pop %rbx\n"
	"	ret\n"
	".size call_preserving, .-call_preserving\n"
	".popsection\n");

struct probes {
	uint64_t heap_sum;
	size_t heap_inuse;
	int stack_local;
	uint64_t stack_buf;
	int global_int;
	uint64_t global_buf;
	uint64_t kbuf_sum;
	int maps_lines;
	int fixed_mapped;
	unsigned long brk;
	int brk_next_mapped;
	int fd_count;
	int task_count;
	int usr1_blocked;
	int fpround;
	unsigned mxcsr;
	unsigned x87cw;
	/* kernel state */
	unsigned long usr1_handler, usr1_flags, usr1_mask, usr2_handler, segv_handler, segv_flags;
	unsigned long alt_sp, alt_size;
	int alt_flags;
	long file_ino, file_off, file_flags, file_same, pipe_ino, pipe_same, sock_ino, sock_same;
	int dumpable, pdeathsig, subreaper, keepcaps;
	long timerslack;
	unsigned umask_;
	uint64_t cwd;
	long nofile_soft, stack_soft;
	uint64_t fmap_sum, shm_sum, fshared_sum;
	int shm_shared, fshared_shared;
	char main_name[16], helper_name[16];
};

static int is_mapped(const void *addr);

static void probe_fd(int fd, int witness, long *ino, long *same)
{
	struct stat st;
	*ino = fstat(fd, &st) == 0 ? (long)st.st_ino : -1;
	*same = syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, fd, witness);
}

static unsigned read_umask(void)
{
	static char buf[4096];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	char *u = strstr(buf, "Umask:");
	return u ? (unsigned)strtoul(u + 6, NULL, 8) : ~0u;
}

static void probe_kstate(struct probes *p)
{
	struct sigaction sa;
	sigaction(SIGUSR1, NULL, &sa);
	p->usr1_handler = (unsigned long)sa.sa_handler, p->usr1_flags = (unsigned long)sa.sa_flags;
	p->usr1_mask = sigismember(&sa.sa_mask, SIGUSR2);
	sigaction(SIGUSR2, NULL, &sa);
	p->usr2_handler = (unsigned long)sa.sa_handler;
	sigaction(SIGSEGV, NULL, &sa);
	p->segv_handler = (unsigned long)sa.sa_sigaction, p->segv_flags = (unsigned long)sa.sa_flags;
	stack_t ss;
	sigaltstack(NULL, &ss);
	p->alt_sp = (unsigned long)ss.ss_sp, p->alt_size = ss.ss_size, p->alt_flags = ss.ss_flags;
	probe_fd(g_file, g_wfile, &p->file_ino, &p->file_same);
	p->file_off = lseek(g_file, 0, SEEK_CUR);
	p->file_flags = fcntl(g_file, F_GETFL) | (long)fcntl(g_file, F_GETFD) << 32;
	probe_fd(g_pipe[0], g_wpipe, &p->pipe_ino, &p->pipe_same);
	probe_fd(g_sock[0], g_wsock, &p->sock_ino, &p->sock_same);
	p->dumpable = prctl(PR_GET_DUMPABLE);
	prctl(PR_GET_PDEATHSIG, &p->pdeathsig);
	prctl(PR_GET_CHILD_SUBREAPER, &p->subreaper);
	p->keepcaps = prctl(PR_GET_KEEPCAPS);
	p->timerslack = prctl(PR_GET_TIMERSLACK);
	p->umask_ = read_umask();
	char cwd[4096] = "";
	p->cwd = getcwd(cwd, sizeof cwd) ? fnv1a(FNV_INIT, cwd, strlen(cwd)) : 0;
	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	p->nofile_soft = (long)r.rlim_cur;
	getrlimit(RLIMIT_STACK, &r);
	p->stack_soft = (long)r.rlim_cur;
	p->fmap_sum = fnv1a(FNV_INIT, g_fmap, KFILE_LEN);
	p->shm_sum = 0;
	p->shm_shared = -1;
	p->fshared_sum = 0;
	p->fshared_shared = -1;
	if (is_mapped(g_shm)) { /* a write through one mapping shows in the other */
		p->shm_sum = fnv1a(FNV_INIT, g_shm, 8192);
		char c = g_shm[4000];
		g_shm[4000] = 'Q';
		p->shm_shared = g_shm2[4000] == 'Q';
		g_shm[4000] = c;
	}
	if (is_mapped(g_fshared)) { /* and in the file */
		p->fshared_sum = fnv1a(FNV_INIT, g_fshared, KFILE_LEN);
		char c = g_fshared[50], b = 0;
		g_fshared[50] = 'Q';
		p->fshared_shared = pread(g_file, &b, 1, 50) == 1 && b == 'Q';
		g_fshared[50] = c;
	}
	prctl(PR_GET_NAME, p->main_name);
	if (pthread_getname_np(g_helper, p->helper_name, sizeof p->helper_name))
		strcpy(p->helper_name, "(gone)");
}

static int is_mapped(const void *addr)
{
	unsigned char vec[1];
	if (mincore((void *)((uintptr_t)addr & ~(uintptr_t)4095), 4096, vec) == 0)
		return 1;
	if (errno != ENOMEM)
		die("mincore");
	return 0;
}

static unsigned long g_brk_start;

static void probe(struct probes *p, struct ctx *c)
{
	memset(p, 0, sizeof *p);
	p->heap_sum = fnv1a(FNV_INIT, c->heap, HEAP_LEN);
	p->heap_inuse = mallinfo2().uordblks;
	p->stack_local = *c->local;
	p->stack_buf = fnv1a(FNV_INIT, c->lbuf, 256);
	p->global_int = g_global;
	p->global_buf = fnv1a(FNV_INIT, g_gbuf, sizeof g_gbuf);
	p->kbuf_sum = fnv1a(FNV_INIT, g_kbuf, sizeof g_kbuf);
	p->maps_lines = count_lines("/proc/self/maps");
	p->fixed_mapped = is_mapped(FIXED_ADDR);
	p->brk = (unsigned long)syscall(SYS_brk, 0); /* the kernel's, not libc's cached one */
	p->brk_next_mapped = is_mapped((void *)((g_brk_start + 4095) & ~4095UL));
	p->fd_count = count_dir("/proc/self/fd");
	p->task_count = count_dir("/proc/self/task");
	sigset_t s;
	pthread_sigmask(SIG_BLOCK, NULL, &s);
	p->usr1_blocked = sigismember(&s, SIGUSR1);
	p->fpround = fegetround();
	unsigned m;
	unsigned short cw;
	__asm__ volatile("stmxcsr %0" : "=m"(m));
	__asm__ volatile("fnstcw %0" : "=m"(cw));
	p->mxcsr = m & ~0x3fu; /* without the sticky exception flags */
	p->x87cw = cw;
	probe_kstate(p);
}

#define PAIR(name, fmt)                                               \
	printf(#name "_before=" fmt "\n" #name "_after=" fmt "\n", \
	       b.name, a.name)

static void print_probes(struct probes b, struct probes a)
{
	PAIR(heap_sum, "%016lx");
	PAIR(heap_inuse, "%zu");
	PAIR(stack_local, "%d");
	PAIR(stack_buf, "%016lx");
	PAIR(global_int, "%d");
	PAIR(global_buf, "%016lx");
	PAIR(kbuf_sum, "%016lx");
	PAIR(maps_lines, "%d");
	PAIR(fixed_mapped, "%d");
	PAIR(brk, "%#lx");
	PAIR(brk_next_mapped, "%d");
	PAIR(fd_count, "%d");
	PAIR(task_count, "%d");
	PAIR(usr1_blocked, "%d");
	PAIR(fpround, "%d");
	PAIR(mxcsr, "%#x");
	PAIR(x87cw, "%#x");
	PAIR(usr1_handler, "%#lx");
	PAIR(usr1_flags, "%#lx");
	PAIR(usr1_mask, "%lu");
	PAIR(usr2_handler, "%#lx");
	PAIR(segv_handler, "%#lx");
	PAIR(segv_flags, "%#lx");
	PAIR(alt_sp, "%#lx");
	PAIR(alt_size, "%lu");
	PAIR(alt_flags, "%d");
	PAIR(file_ino, "%ld");
	PAIR(file_off, "%ld");
	PAIR(file_flags, "%#lx");
	PAIR(file_same, "%ld");
	PAIR(pipe_ino, "%ld");
	PAIR(pipe_same, "%ld");
	PAIR(sock_ino, "%ld");
	PAIR(sock_same, "%ld");
	PAIR(dumpable, "%d");
	PAIR(pdeathsig, "%d");
	PAIR(subreaper, "%d");
	PAIR(keepcaps, "%d");
	PAIR(timerslack, "%ld");
	PAIR(umask_, "%#o");
	PAIR(cwd, "%016lx");
	PAIR(nofile_soft, "%ld");
	PAIR(stack_soft, "%ld");
	PAIR(fmap_sum, "%016lx");
	PAIR(shm_sum, "%016lx");
	PAIR(shm_shared, "%d");
	PAIR(fshared_sum, "%016lx");
	PAIR(fshared_shared, "%d");
	PAIR(main_name, "%s");
	PAIR(helper_name, "%s");
}

/* State of a process: 'R', 'S', 'Z', ... or 0 if it does not exist. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' ? rp[2] : '?';
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: rollback MODE fault|nofault\n");
		return 2;
	}
	int mode = -1;
	for (int i = 1; i < (int)(sizeof mode_names / sizeof mode_names[0]); i++)
		if (!strcmp(argv[1], mode_names[i]))
			mode = i;
	if (mode < 0) {
		fprintf(stderr, "rollback: unknown mode %s\n", argv[1]);
		return 2;
	}
	int fault = !strcmp(argv[2], "fault");

	g_parent = getpid();
	if (pipe(oob) || pipe(datapipe) || pipe(blockpipe) || pipe(readypipe))
		die("pipe");

	int local = 11;
	char lbuf[256];
	memset(lbuf, 's', sizeof lbuf);
	char *heap = malloc(HEAP_LEN);
	memset(heap, 'h', HEAP_LEN);
	memset(g_gbuf, 'g', sizeof g_gbuf);
	memset(g_kbuf, 'k', sizeof g_kbuf);
	struct ctx c = { &local, lbuf, heap };
	g_brk_start = (unsigned long)syscall(SYS_brk, 0);
	setup_kstate();
	if (mode == M_SECCOMP_CLOSE || mode == M_SECCOMP_MUNMAP)
		forbid(mode == M_SECCOMP_MUNMAP);

	/* Warm-up calls without a fault: whatever the supervisor sets up once
	 * per process (a code page, ...) is in place before the measurements. */
	if (mutate(M_NOOP, &c, 0) != 0 || clobber_regs(0) != 0)
		die("warm-up");

	if (mode == M_KERNEL) {
		char data[2 * 4096];
		for (size_t i = 0; i < sizeof data; i++)
			data[i] = (char)('a' + i % 26);
		write_all(datapipe[1], data, sizeof data);
	}

	if (mode == M_REGS) {
		long out[6];
		static const char *names[6] = { "rbx", "rbp", "r12", "r13", "r14", "r15" };
		static const unsigned long want[6] = {
			0x1111111111111111UL, 0x5555555555555555UL, 0x1212121212121212UL,
			0x1313131313131313UL, 0x1414141414141414UL, 0x1515151515151515UL,
		};
		int rc = call_preserving(fault, out);
		printf("rc=%d\n", rc);
		for (int i = 0; i < 6; i++)
			printf("%s_before=%#lx\n%s_after=%#lx\n", names[i], want[i], names[i],
			       (unsigned long)out[i]);
		return 0;
	}

	struct probes before, after;
	probe(&before, &c);
	int rc = mutate(mode, &c, fault);
	probe(&after, &c);

	/* after-only observations, from what mutate() sent through oob */
	char extra[256] = "";
	pid_t child = 0;
	if (mode == M_MMAP) {
		char *a;
		read_exact(oob[0], &a, sizeof a);
		snprintf(extra, sizeof extra, "extra_oob_mapped=%d\n", is_mapped(a) && is_mapped(a + MAP_LEN - 1));
	} else if (mode == M_FD) {
		int fds[NFDS], open_ = 0;
		read_exact(oob[0], fds, sizeof fds);
		for (int i = 0; i < NFDS; i++)
			open_ += fcntl(fds[i], F_GETFD) != -1;
		snprintf(extra, sizeof extra, "extra_new_fds_open=%d\n", open_);
	} else if (mode == M_THREAD) {
		pid_t tid;
		read_exact(oob[0], &tid, sizeof tid);
		char path[64];
		snprintf(path, sizeof path, "/proc/self/task/%d", (int)tid);
		snprintf(extra, sizeof extra, "extra_new_thread_exists=%d\n", access(path, F_OK) == 0);
	} else if (mode == M_FORK) {
		read_exact(oob[0], &child, sizeof child);
		char st = proc_state(child);
		const char *state = st == 0 ? "gone" : (st == 'Z' || st == 'X') ? "zombie" : "running";
		int reaped = 0;
		if (st == 'Z' || st == 'X')
			reaped = waitpid(child, NULL, WNOHANG) == child;
		snprintf(extra, sizeof extra, "extra_child_running=%d\nextra_child_state=%s\nextra_child_reaped_by_program=%d\n",
			 st != 0 && st != 'Z' && st != 'X', state, reaped);
	}

	printf("rc=%d\n", rc);
	print_probes(before, after);
	fputs(extra, stdout);
	fflush(stdout);

	if (child > 0 && kill(child, 0) == 0) { /* nofault, or a child that survived */
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	return 0;
}
