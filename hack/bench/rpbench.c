//go:build ignore

/* rpbench: the program that hack/bench runs, natively and under assure.
 *
 *   rpbench MEM_MIB CALLS [FAULT_EVERY]
 *
 * Touches MEM_MIB MiB of heap (one write per page), then calls the rescue
 * point rp_call(i) CALLS times in a timed loop. With FAULT_EVERY = K > 0,
 * every K-th call dereferences NULL: natively the program dies of SIGSEGV;
 * under assure with rp_call declared (return -1) each fault is recovered and
 * the call returns -1. Prints one line:
 *
 *   ns_per_call=F calls=N errors=E mem_mib=M
 *
 * (The "//go:build ignore" line above keeps the Go tool from treating this
 * file as part of the hack/bench package; the bench tool embeds and compiles
 * it with gcc -O2.) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

char rp_buf[64];
static long fault_every;
static int *volatile null_ptr; /* stays NULL: the fault below is real */

__attribute__((noinline)) int rp_call(int i)
{
	rp_buf[i & 31] = (char)i;
	rp_buf[(i >> 5) & 31] ^= 1;
	if (fault_every > 0 && (i + 1) % fault_every == 0)
		*null_ptr = i; /* SIGSEGV */
	__asm__ volatile("" ::: "memory");
	return 0;
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
	if (mib < 0 || calls <= 0 || fault_every < 0 || calls > 0x7fffffffL) {
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
