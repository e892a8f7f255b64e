/* fast: the fast path of a rescue point (binary-patched entry, checkpoint
 * inside the process).
 *
 *   fast calls N [threads|fork]
 *                            N calls of count(), then a faulting call; with
 *                            "fork" in a child forked after 100 calls (a
 *                            prefork server's worker)
 *   fast wild                a call that writes into assure's shadow (a wild
 *                            write), faults, and a call that only faults
 *   fast big MIB             MIB MiB of heap filled after the fast path was
 *                            set up, and 1 GiB mapped but never touched: waits
 *                            until the shadow is ready, prints the shadow's
 *                            size, then a call that writes into that heap and
 *                            faults
 *   fast bignow MIB          the same, but the faulting call comes at once,
 *                            while the supervisor copies the heap into the
 *                            shadow in the background
 *
 * "calls" prints how many times the process was switched out voluntarily
 * during the N calls (a ptrace stop is one: the common path must have
 * none), the state after the faulting call (rc=-1 and the counter and
 * buffer as before it) and whether a helper thread, blocked in a condition
 * variable, is still there. With "threads" the helper exists from the
 * start (a process with an idle thread, as redis's).
 */
#include "common.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

long g_counter;
char g_buf[4096];
static volatile int g_fault;
static volatile char *g_wild;
static unsigned char *g_big;
static size_t g_big_size;

RESCUE_POINT int count(int i)
{
	g_counter++;
	g_buf[i % sizeof g_buf] ^= 1;
	if (g_wild)
		g_wild[64] = 0x5a; /* a wild write, towards assure's shadow */
	if (g_big && g_fault)
		for (size_t off = 0; off < g_big_size; off += g_big_size / 16)
			g_big[off + (size_t)i % 4096] ^= 0x55;
	if (g_fault)
		crash_null();
	return 0;
}

static long voluntary_switches(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long n = -1;
	if (!f)
		die("status");
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int g_stop, g_helper_ran;

static void *helper(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&g_lock);
	while (!g_stop)
		pthread_cond_wait(&g_cond, &g_lock);
	g_helper_ran = 1;
	pthread_mutex_unlock(&g_lock);
	return NULL;
}

/* shadow_addr finds assure's shadow in /proc/self/maps (0: none). */
static uintptr_t shadow_addr(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	uintptr_t a = 0;
	if (!f)
		die("maps");
	while (fgets(line, sizeof line, f))
		if (strstr(line, "assure-shadow")) {
			sscanf(line, "%lx", &a);
			break;
		}
	fclose(f);
	return a;
}

/* shadow_mib is what assure's shadow holds (its memfd's allocated blocks,
 * through /proc/self/map_files), -1 without one. */
static double shadow_mib(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512], path[128];
	double mib = -1;
	if (!f)
		die("maps");
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

/* wait_ready waits up to 30 s for the flag of assure's control block
 * ("assure-ctl") that says the shadow is ready; the offset and the flag
 * come from recovery/patch (the tests pass them to gcc). */
static int wait_ready(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	volatile uint32_t *flags = NULL;
	if (!f)
		die("maps");
	while (fgets(line, sizeof line, f)) {
		unsigned long lo;
		if (strstr(line, "assure-ctl") && sscanf(line, "%lx", &lo) == 1) {
			flags = (volatile uint32_t *)(lo + ASSURE_CTL_FLAGS);
			break;
		}
	}
	fclose(f);
	for (int k = 0; flags && k < 30000; k++) {
		if (*flags & ASSURE_FLAG_READY)
			return 1;
		struct timespec ms = {0, 1000000};
		nanosleep(&ms, NULL);
	}
	return 0;
}

static void faulting_call(void)
{
	long before = g_counter;
	uint64_t h = fnv1a(FNV_INIT, g_buf, sizeof g_buf);
	g_fault = 1;
	int rc = count(7);
	g_fault = 0;
	printf("rc=%d\ncounter_kept=%d\nbuf_kept=%d\n", rc, g_counter == before,
	       fnv1a(FNV_INIT, g_buf, sizeof g_buf) == h);
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "calls")) {
		pthread_t th;
		int threads = argc == 4 && !strcmp(argv[3], "threads");
		if (threads && pthread_create(&th, NULL, helper, NULL))
			die("pthread_create");
		if (argc == 4 && !strcmp(argv[3], "fork")) {
			for (int i = 0; i < 100; i++)
				count(i);
			fflush(stdout);
			pid_t pid = fork();
			if (pid < 0)
				die("fork");
			if (pid > 0) {
				int st;
				if (waitpid(pid, &st, 0) != pid)
					die("waitpid");
				printf("child_status=%d\nchild_signal=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
				       WIFSIGNALED(st) ? WTERMSIG(st) : 0);
				return 0;
			}
		}
		long n = atol(argv[2]);
		for (int i = 0; i < 1000; i++) /* warm up: the first calls set things up */
			count(i);
		long v0 = voluntary_switches();
		for (long i = 0; i < n; i++)
			count((int)i);
		long v1 = voluntary_switches();
		printf("switches=%ld\ncounter=%ld\n", v1 - v0, g_counter);
		faulting_call();
		if (threads) {
			pthread_mutex_lock(&g_lock);
			g_stop = 1;
			pthread_cond_signal(&g_cond);
			pthread_mutex_unlock(&g_lock);
			pthread_join(th, NULL);
			printf("helper_ran=%d\n", g_helper_ran);
		}
		return 0;
	}
	if (argc == 3 && (!strcmp(argv[1], "big") || !strcmp(argv[1], "bignow"))) {
		int now = !strcmp(argv[1], "bignow");
		for (int i = 0; i < 100; i++)
			count(i);
		g_big_size = (size_t)atol(argv[2]) << 20;
		g_big = malloc(g_big_size);
		void *untouched = mmap(NULL, 1UL << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (!g_big || untouched == MAP_FAILED)
			die("alloc");
		for (size_t off = 0; off < g_big_size; off += 4096)
			g_big[off] = (unsigned char)(off >> 12) | 1;
		count(0); /* the supervisor takes the new memory: in the background */
		if (!now) {
			printf("ready=%d\n", wait_ready());
			printf("shadow_mib=%.0f\n", shadow_mib());
		}
		uint64_t h = fnv1a(FNV_INIT, g_big, g_big_size);
		faulting_call();
		printf("big_kept=%d\n", fnv1a(FNV_INIT, g_big, g_big_size) == h);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "wild")) {
		for (int i = 0; i < 100; i++)
			count(i);
		uintptr_t s = shadow_addr();
		printf("shadow_found=%d\n", s != 0);
		if (s) {
			/* Inside the rescue point: the write must fault (protection
			 * key), which is recovered like any fault. */
			long before = g_counter;
			g_wild = (volatile char *)s;
			int rc = count(3);
			g_wild = NULL;
			printf("wild_rc=%d\nwild_counter_kept=%d\n", rc, g_counter == before);
		}
		/* The checkpoints still restore exactly. */
		faulting_call();
		return 0;
	}
	fprintf(stderr, "usage: fast calls N [threads|fork] | fast wild | fast big|bignow MIB\n");
	return 2;
}
