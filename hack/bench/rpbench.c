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
 * dup'ed descriptor and an lseek: calls it records) or "floor" (plain,
 * run natively with what assure's injected code does at each entry done
 * by hand before each call: a PAGEMAP_SCAN of /proc/self/pagemap that
 * write-protects again the pages written since the previous call, through
 * a userfaultfd of its own, and a copy of those pages into a shadow: the
 * kernel's part of an in-process checkpoint, the floor of the fast path).
 * IDLE threads (default 0) wait in read() on a pipe the whole time. Prints
 * one line:
 *
 *   ns_per_call=F calls=N errors=E mem_mib=M first_max_us=U shadow_mib=S
 *
 * Without faults, 1000 calls timed one by one come before the timed loop:
 * first_max_us is the longest of them (the first checkpoints after the
 * heap was touched: how long the process is held when its memory is first
 * copied). shadow_mib is the memory assure's shadow holds at the end (-1:
 * no shadow mapped, as natively), read through /proc/self/map_files; the
 * timed loop waits (up to 30 s) until the shadow holds the heap.
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
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

char rp_buf[64];
static long fault_every;
static int body, bench_fd = -1, idle_pipe[2];
static struct sigaction usr1;

enum { BODY_PLAIN, BODY_SYSCALLS, BODY_JOURNALED, BODY_FLOOR };
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

/* PAGEMAP_SCAN (Linux 6.7), from <linux/fs.h>, and the userfaultfd
 * features it needs: spelled out here because Debian 12's kernel headers
 * predate them. */
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct page_region {
	uint64_t start, end, categories;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING 1
#define PAGE_IS_WRITTEN 2
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* The floor probe: the ranges it tracks and their place in the shadow. */
#define MAX_RANGES 256
static struct { uintptr_t start, end, off; } ranges[MAX_RANGES];
static int nranges, pagemap_fd;
static char *shadow;
static struct page_region *vec; /* mapped after registration: not tracked */
#define VEC_LEN 128

static void floor_setup(void)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api)) {
		perror("rpbench: userfaultfd");
		exit(1);
	}
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	size_t total = 0;
	while (f && fgets(line, sizeof line, f) && nranges < MAX_RANGES) {
		uintptr_t a, b;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) != 3 || perms[1] != 'w' || perms[3] != 'p' ||
		    strstr(line, "[vsyscall]"))
			continue;
		struct uffdio_register reg = { .range = { .start = a, .len = b - a }, .mode = UFFDIO_REGISTER_MODE_WP };
		if (ioctl(uffd, UFFDIO_REGISTER, &reg))
			continue;
		ranges[nranges].start = a, ranges[nranges].end = b, ranges[nranges].off = total;
		total += b - a, nranges++;
	}
	if (f)
		fclose(f);
	pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	shadow = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	vec = mmap(NULL, VEC_LEN * sizeof *vec, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pagemap_fd < 0 || shadow == MAP_FAILED || vec == MAP_FAILED) {
		perror("rpbench: floor setup");
		exit(1);
	}
}

/* floor_checkpoint: what the injected code does in the kernel and in
 * memory at a rescue point's entry. */
static void floor_checkpoint(void)
{
	struct pm_scan_arg arg = { .size = sizeof arg, .flags = PM_SCAN_WP_MATCHING, .start = 0,
				   .end = 0x7ffffffff000UL, .vec = (uintptr_t)vec, .vec_len = VEC_LEN,
				   .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN };
	for (;;) {
		long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0) {
			perror("rpbench: PAGEMAP_SCAN");
			exit(1);
		}
		for (long k = 0; k < n; k++)
			for (int r = 0; r < nranges; r++) {
				uintptr_t a = vec[k].start > ranges[r].start ? vec[k].start : ranges[r].start;
				uintptr_t b = vec[k].end < ranges[r].end ? vec[k].end : ranges[r].end;
				if (a < b)
					memcpy(shadow + ranges[r].off + (a - ranges[r].start), (void *)a, b - a);
			}
		if (arg.walk_end >= arg.end || n < VEC_LEN)
			return;
		arg.start = arg.walk_end;
	}
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

/* shadow_mib returns the MiB allocated to assure's shadow (a memfd mapped
 * as "assure-shadow"), or -1 when there is none. */
static double shadow_mib(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512], path[128];
	double mib = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		struct stat st;
		if (!strstr(line, "assure-shadow") || sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", lo, hi);
		if (stat(path, &st) == 0)
			mib = (double)st.st_blocks * 512 / (1 << 20);
		break;
	}
	fclose(f);
	return mib;
}

/* wait_ready waits (up to 30 s) until assure's control block, if one is
 * mapped ("assure-ctl"), has the flag that says the shadow is ready: the
 * bench tool passes its offset and value (recovery/patch). */
static void wait_ready(void)
{
#ifdef ASSURE_CTL_FLAGS
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	volatile uint32_t *flags = NULL;
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		unsigned long lo;
		if (strstr(line, "assure-ctl") && sscanf(line, "%lx", &lo) == 1) {
			flags = (volatile uint32_t *)(lo + ASSURE_CTL_FLAGS);
			break;
		}
	}
	fclose(f);
	for (int k = 0; flags && !(*flags & ASSURE_FLAG_READY) && k < 30000; k++) {
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
#endif
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
	else if (argc > 4 && !strcmp(argv[4], "floor"))
		body = BODY_FLOOR;
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
	if (body == BODY_FLOOR) {
		floor_setup();
		floor_checkpoint(); /* the first copy, as assure's, is not timed */
	}
	double first_max = 0;
	for (long i = 0; fault_every == 0 && i < 1000; i++) {
		double a = now_ns();
		if (body == BODY_FLOOR)
			floor_checkpoint();
		rp_call((int)i);
		double d = now_ns() - a;
		if (d > first_max)
			first_max = d;
	}
	/* Under assure, the first copy of a large process is made in the
	 * background (the calls run unprotected meanwhile): the timed loop
	 * starts once the fast path says the shadow is ready. */
	wait_ready();
	double t0 = now_ns();
	for (long i = 0; i < calls; i++) {
		if (body == BODY_FLOOR)
			floor_checkpoint();
		if (rp_call((int)i) < 0)
			errors++;
	}
	double t1 = now_ns();

	printf("ns_per_call=%.3f calls=%ld errors=%ld mem_mib=%ld first_max_us=%.1f shadow_mib=%.1f\n",
	       (t1 - t0) / (double)calls, calls, errors, mib, first_max / 1000, shadow_mib());
	free((void *)mem);
	return 0;
}
