//go:build ignore

/* rpbench: the program that hack/bench runs, natively and under assure.
 *
 *   rpbench MEM_MIB CALLS [FAULT_EVERY [BODY [IDLE]]]
 *
 * Touches MEM_MIB MiB of heap (one write per page), then calls the rescue
 * point rp_call(i) CALLS times in a timed loop. With FAULT_EVERY = K > 0,
 * every K-th call dereferences NULL: natively the program dies of SIGSEGV;
 * under assure with rp_call declared (return -1) each fault is recovered and
 * the call returns -1. BODY is what rp_call does besides two stores to a
 * global: "plain" (nothing, the default), "syscalls" (four getppid(), calls
 * the journal does not record) or "journaled" (a sigaction, a close of a
 * dup'ed descriptor and an lseek: calls it records). IDLE threads (default
 * 0) wait in read() on a pipe the whole time. Prints one line:
 *
 *   ns_per_call=F calls=N errors=E mem_mib=M
 *
 * (The "//go:build ignore" line above keeps the Go tool from treating this
 * file as part of the hack/bench package; the bench tool embeds and compiles
 * it with gcc -O2.) */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

char rp_buf[64];
static long fault_every;
static int body, bench_fd = -1, idle_pipe[2];
static struct sigaction usr1;

enum { BODY_PLAIN, BODY_SYSCALLS, BODY_JOURNALED };
static int *volatile null_ptr; /* stays NULL: the fault below is real */

__attribute__((noinline)) int rp_call(int i)
{
	rp_buf[i & 31] = (char)i;
	rp_buf[(i >> 5) & 31] ^= 1;
	switch (body) {
	case BODY_SYSCALLS:
		for (int k = 0; k < 4; k++)
			rp_buf[40 + k] = (char)getppid();
		break;
	case BODY_JOURNALED:
		sigaction(SIGUSR1, &usr1, NULL);
		close(dup(bench_fd));
		lseek(bench_fd, i & 1023, SEEK_SET);
		break;
	}
	if (fault_every > 0 && (i + 1) % fault_every == 0)
		*null_ptr = i; /* SIGSEGV */
	__asm__ volatile("" ::: "memory");
	return 0;
}

static void *idle(void *arg)
{
	char b;
	(void)arg;
	while (read(idle_pipe[0], &b, 1) < 0)
		;
	return NULL;
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s MEM_MIB CALLS [FAULT_EVERY]\n", argv[0]);
		return 2;
	}
	long mib = atol(argv[1]);
	long calls = atol(argv[2]);
	fault_every = argc > 3 ? atol(argv[3]) : 0;
	long nidle = argc > 5 ? atol(argv[5]) : 0;
	if (argc > 4 && !strcmp(argv[4], "syscalls"))
		body = BODY_SYSCALLS;
	else if (argc > 4 && !strcmp(argv[4], "journaled"))
		body = BODY_JOURNALED;
	else if (argc > 4 && strcmp(argv[4], "plain"))
		nidle = -1;
	if (mib < 0 || calls <= 0 || fault_every < 0 || calls > 0x7fffffffL || nidle < 0 || nidle > 64) {
		fprintf(stderr, "rpbench: bad arguments\n");
		return 2;
	}

	size_t size = (size_t)mib << 20;
	long page = sysconf(_SC_PAGESIZE);
	volatile char *mem = NULL;
	if (size > 0) {
		mem = malloc(size);
		if (!mem) {
			perror("rpbench: malloc");
			return 1;
		}
		for (size_t off = 0; off < size; off += (size_t)page)
			mem[off] = (char)off | 1;
	}

	if ((bench_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)) < 0 || pipe(idle_pipe)) {
		perror("rpbench: setup");
		return 1;
	}
	usr1.sa_handler = SIG_IGN;
	for (long k = 0; k < nidle; k++) {
		pthread_t t;
		if (pthread_create(&t, NULL, idle, NULL)) {
			fprintf(stderr, "rpbench: pthread_create failed\n");
			return 1;
		}
	}

	long errors = 0;
	double t0 = now_ns();
	for (long i = 0; i < calls; i++)
		if (rp_call((int)i) < 0)
			errors++;
	double t1 = now_ns();

	printf("ns_per_call=%.3f calls=%ld errors=%ld mem_mib=%ld\n",
	       (t1 - t0) / (double)calls, calls, errors, mib);
	free((void *)mem);
	return 0;
}
