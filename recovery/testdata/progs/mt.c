/* mt: a multi-threaded server loop.
 *
 *   mt validate|fault M EVERY
 *
 * 4 worker threads handle M requests each; request i of a worker is bad when
 * i % EVERY == EVERY / 2. handle_request (rescue point, error value -1)
 * updates shared data under a mutex; a bad request writes through a null
 * pointer, alternately while holding the mutex and after releasing it. With
 * "validate" the handler rejects a bad request before touching anything
 * (the reference run). The caller counts ok/errors under the mutex.
 *
 * Two more threads watch the recoveries:
 *  - consistency: a loop that increments a counter in memory, one in a
 *    callee-saved general register (rbx) and one in an xmm register (xmm8),
 *    and checks after every step that all three are equal. A rollback that
 *    restored memory but not the registers (or the reverse) of a thread makes
 *    them differ. Prints mismatches (0 expected).
 *  - reader: blocked in read() on a pipe from before the first request; the
 *    main thread writes 16 bytes after all workers are done; the reader
 *    prints what it received.
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>

#define WORKERS 4
#define TABLE 256

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
uint64_t g_table[TABLE];
uint64_t g_sum;
long g_handled;
long g_ok, g_errors, g_rsum;
static int g_validate, g_m, g_every;

volatile long g_cons_mem;
volatile int g_cons_stop;
static long g_cons_mismatches, g_cons_iters;

static int g_reader_pipe[2], g_reader_tid_pipe[2];
static char g_reader_buf[64];
static ssize_t g_reader_n;

RESCUE_POINT int handle_request(int w, int i, int bad)
{
	if (bad && g_validate)
		return -1;
	uint64_t v = mix64((uint64_t)w * 1000003u + (uint64_t)i);
	uint64_t scratch[32];
	for (int k = 0; k < 32; k++)
		scratch[k] = mix64(v + (uint64_t)k);
	escape(scratch);

	pthread_mutex_lock(&g_lock);
	g_table[v % TABLE] += v ^ scratch[31];
	g_sum += v;
	g_handled++;
	if (bad && (i / g_every) % 2 == 0)
		crash_null(); /* inside the critical section */
	pthread_mutex_unlock(&g_lock);
	if (bad)
		crash_null();
	return (int)(v & 0x7f);
}

static void *worker(void *arg)
{
	int w = (int)(intptr_t)arg;
	for (int i = 0; i < g_m; i++) {
		int bad = i % g_every == g_every / 2;
		int rc = handle_request(w, i, bad);
		pthread_mutex_lock(&g_lock);
		if (rc < 0) {
			g_errors++;
		} else {
			g_ok++;
			g_rsum += rc;
		}
		pthread_mutex_unlock(&g_lock);
	}
	return NULL;
}

static void *consistency(void *arg)
{
	(void)arg;
	long mismatches = 0, iters;
	__asm__ volatile(
		"xor %%ebx, %%ebx\n\t"
		"pxor %%xmm8, %%xmm8\n\t"
		"mov $1, %%eax\n\t"
		"movq %%rax, %%xmm9\n\t"
		"movq $0, %[mem]\n"
		"1:\n\t"
		"incq %[mem]\n\t"
		"inc %%rbx\n\t"
		"paddq %%xmm9, %%xmm8\n\t"
		"mov %[mem], %%rax\n\t"
		"cmp %%rax, %%rbx\n\t"
		"jne 3f\n\t"
		"movq %%xmm8, %%rax\n\t"
		"cmp %%rax, %%rbx\n\t"
		"jne 3f\n"
		"2:\n\t"
		"cmpl $0, %[stop]\n\t"
		"je 1b\n\t"
		"jmp 4f\n"
		"3:\n\t"
		"inc %[mis]\n\t"
		"mov %[mem], %%rbx\n\t" /* resynchronise and go on */
		"movq %%rbx, %%xmm8\n\t"
		"jmp 2b\n"
		"4:\n\t"
		"mov %%rbx, %[iters]\n"
		: [mem] "+m"(g_cons_mem), [mis] "+r"(mismatches), [iters] "=r"(iters)
		: [stop] "m"(g_cons_stop)
		: "rax", "rbx", "xmm8", "xmm9", "cc", "memory");
	g_cons_mismatches = mismatches;
	g_cons_iters = iters;
	return NULL;
}

static void *reader(void *arg)
{
	(void)arg;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	write_all(g_reader_tid_pipe[1], &tid, sizeof tid);
	g_reader_n = read(g_reader_pipe[0], g_reader_buf, 16);
	return NULL;
}

/* Waits (without sleeping) until thread tid is blocked in read(2). */
static void wait_in_read(pid_t tid)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
	for (;;) {
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die(path);
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n > 0) {
			buf[n] = 0;
			long nr;
			if (sscanf(buf, "%ld ", &nr) == 1 && nr == SYS_read)
				return;
		}
		sched_yield();
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: mt validate|fault M EVERY\n");
		return 2;
	}
	g_validate = !strcmp(argv[1], "validate");
	g_m = atoi(argv[2]);
	g_every = atoi(argv[3]);

	if (pipe(g_reader_pipe) || pipe(g_reader_tid_pipe))
		die("pipe");
	pthread_t rd, cons, workers[WORKERS];
	if (pthread_create(&rd, NULL, reader, NULL))
		die("pthread_create");
	pid_t rtid;
	read_exact(g_reader_tid_pipe[0], &rtid, sizeof rtid);
	wait_in_read(rtid);

	if (pthread_create(&cons, NULL, consistency, NULL))
		die("pthread_create");
	while (g_cons_mem < 1000) /* the checker is running */
		sched_yield();

	for (int w = 0; w < WORKERS; w++)
		if (pthread_create(&workers[w], NULL, worker, (void *)(intptr_t)w))
			die("pthread_create");
	for (int w = 0; w < WORKERS; w++)
		pthread_join(workers[w], NULL);

	g_cons_stop = 1;
	pthread_join(cons, NULL);

	static const char msg[16] = "after-recovery!\n";
	write_all(g_reader_pipe[1], msg, sizeof msg);
	pthread_join(rd, NULL);

	uint64_t h = fnv1a(FNV_INIT, g_table, sizeof g_table);
	h = fnv1a(h, &g_sum, sizeof g_sum);
	printf("total=%ld\nok=%ld\nerrors=%ld\nhandled=%ld\nrsum=%ld\nchecksum=%016lx\n",
	       g_ok + g_errors, g_ok, g_errors, g_handled, g_rsum, (unsigned long)h);
	printf("mismatches=%ld\nconsistency_ran=%d\n", g_cons_mismatches, g_cons_iters > 1000);
	printf("reader_bytes=%zd\nreader_got=%.*s\n", g_reader_n,
	       g_reader_n > 0 ? (int)g_reader_n - 1 : 0, g_reader_buf);
	return 0;
}
