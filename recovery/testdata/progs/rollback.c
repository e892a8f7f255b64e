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
 * Modes: heap stack global kernel mmap brk fd thread fork sigmask fpenv regs.
 * Things the rescue point must hand out of a rolled-back world (an mmap
 * address, fd numbers, a thread id, a child pid) go through the pipe "oob":
 * the kernel's pipe buffer is not program memory and survives the rollback.
 */
#include "common.h"

#include <fenv.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

enum mode { M_NOOP, M_HEAP, M_STACK, M_GLOBAL, M_KERNEL, M_MMAP, M_BRK, M_FD, M_THREAD, M_FORK, M_SIGMASK, M_FPENV, M_REGS };
static const char *mode_names[] = { "noop", "heap", "stack", "global", "kernel", "mmap", "brk", "fd", "thread", "fork", "sigmask", "fpenv", "regs" };

#define FIXED_ADDR ((char *)0x200000000000UL)
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
	case M_MMAP: {
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
};

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
