/* stress: rollbacks of the mapping layout while threads fault.
 *
 *   stress WORKERS ROUNDS
 *
 * Each worker thread owns five regions mapped before any rescue point:
 *   res   a PROT_NONE reservation (like glibc's arena and stack guards)
 *   ro    read-only anonymous memory with known contents
 *   hid   PROT_NONE memory that has contents (written, then protected)
 *   file  a private read-only mapping of the program's own file
 *   stk   a region grown like a glibc arena: its first part made
 *         read-write (mprotect) and written, the rest PROT_NONE
 * and a helper thread (named "helper-W") waiting on a futex.
 *
 * ROUNDS times, a worker calls the rescue point step() (error value -1) in
 * one of the modes below; in most of them step() then faults (a write
 * through NULL, or a stack buffer overflow caught by the stack protector,
 * as in REASSURE's steps_threaded_crashes). Outside the rescue point the
 * worker checks that every region is mapped exactly as before (same
 * addresses and protection, asked with PROCMAP_QUERY) with the same
 * contents.
 *
 * Modes (inside the rescue point):
 *   threads  start two threads with unusual stack sizes, each filling a
 *            fresh malloc arena, and join them (new stacks, new arenas,
 *            and glibc's stack cache unmapping stacks cached earlier)
 *   malloc   big and small allocations in this thread's arena, freed,
 *            then malloc_trim (arena shrinking: madvise, munmap)
 *   unmap    munmap every region
 *   partial  munmap parts, make parts of res and hid read-write and
 *            write them (glibc's grow_heap), shrink stk back
 *   fixed    mmap MAP_FIXED over ro, file and hid
 *   remap    mremap ro (grown, moved) and hid (moved into res)
 *   join     make the helper exit and join it; start and join a thread
 *   smash    overflow a stack buffer: __stack_chk_fail, SIGABRT
 *   dropstack  unmap the worker's own stack (its thread descriptor and
 *            rseq area with it): the kernel cannot even return the thread
 *            to user mode (SIGSEGV), and the thread the rollback injects
 *            its calls into must be another one
 * threads and malloc rounds also run without a fault now and then, so
 * that the layout keeps changing for real.
 *
 * Prints: ok, errors, want_errors, bad (failed checks), helpers (helpers
 * alive at the end), names (helpers with their name).
 */
#include "common.h"

#include <malloc.h>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define MAXW 8
#define PAGE 4096UL
#define RES_LEN (4UL << 20)
#define RO_LEN (64UL << 10)
#define HID_LEN (64UL << 10)
#define FILE_LEN (32UL << 10)
#define STK_LEN (1UL << 20)
#define STK_USED (128UL << 10)

enum mode { M_THREADS, M_MALLOC, M_UNMAP, M_PARTIAL, M_FIXED, M_REMAP, M_JOIN, M_SMASH, M_DROPSTACK, NMODES };

struct region {
	const char *name;
	char *addr;
	size_t len;
	const char *perms; /* expected protection ("r--p"); stk: see check */
	uint64_t sum;      /* of the contents, when readable through prot */
	int hidden;        /* PROT_NONE with contents: read with mprotect */
};

struct worker {
	int id;
	struct region res, ro, hid, file, stk;
	pthread_t helper;
	int hstop; /* futex: the helper exits when it is 1 */
	long ok, errors, want, bad;
};

static struct worker g_w[MAXW];
static int g_nw, g_rounds;
static char g_long[64];
volatile size_t g_smash_len = sizeof g_long;
volatile int g_sink;
static pthread_mutex_t g_print = PTHREAD_MUTEX_INITIALIZER;
static int g_done; /* futex: workers finished */

NOINLINE static int copy_name(const char *src, size_t n)
{
	char name[16];
	memcpy(name, src, n);
	escape(name);
	return name[0];
}

/* The helper waits in memory, not on a pipe: bytes another thread read
 * from a pipe are not given back by a rollback (kernel state outside the
 * process), while memory and a futex wait are. */
static void *helper_main(void *arg)
{
	struct worker *w = arg;
	char name[16];
	snprintf(name, sizeof name, "helper-%d", w->id);
	pthread_setname_np(pthread_self(), name);
	while (!__atomic_load_n(&w->hstop, __ATOMIC_ACQUIRE))
		syscall(SYS_futex, &w->hstop, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
	return (void *)(intptr_t)(1000 + w->id);
}

static void stop_helper(struct worker *w)
{
	__atomic_store_n(&w->hstop, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &w->hstop, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void start_helper(struct worker *w)
{
	if (pthread_create(&w->helper, NULL, helper_main, w))
		die("pthread_create helper");
}

static void *arena_filler(void *arg)
{
	size_t n = (size_t)(uintptr_t)arg;
	void *p[64];
	for (int i = 0; i < 64; i++) {
		p[i] = malloc(n + (size_t)i * 64);
		memset(p[i], i, n);
	}
	for (int i = 0; i < 64; i++)
		free(p[i]);
	return NULL;
}

static void spawn_and_join(size_t stack, size_t alloc)
{
	pthread_attr_t a;
	pthread_t t;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, stack);
	if (pthread_create(&t, &a, arena_filler, (void *)(uintptr_t)alloc))
		die("pthread_create");
	pthread_join(t, NULL);
	pthread_attr_destroy(&a);
}

static void churn_malloc(int round)
{
	char *big = malloc((1 << 20) + (size_t)round); /* above the mmap threshold */
	memset(big, 7, 1 << 20);
	void *small[256];
	for (int i = 0; i < 256; i++) {
		small[i] = malloc(512 + (size_t)(i % 7) * 256);
		memset(small[i], i, 512);
	}
	for (int i = 0; i < 256; i++)
		free(small[i]);
	free(big);
	malloc_trim(0);
}

RESCUE_POINT int step(struct worker *w, int mode, int round, int fault)
{
	switch (mode) {
	case M_THREADS:
		spawn_and_join((size_t)(3 + (round + w->id) % 5) << 20, 1000 + (size_t)round);
		spawn_and_join((size_t)(9 + (round + w->id) % 3) << 20, 20000);
		break;
	case M_MALLOC:
		churn_malloc(round);
		break;
	case M_UNMAP:
		munmap(w->res.addr, w->res.len);
		munmap(w->ro.addr, w->ro.len);
		munmap(w->hid.addr, w->hid.len);
		munmap(w->file.addr, w->file.len);
		munmap(w->stk.addr, w->stk.len);
		break;
	case M_PARTIAL:
		munmap(w->res.addr + RES_LEN / 2, 1 << 20);
		mprotect(w->res.addr, 64 << 10, PROT_READ | PROT_WRITE);
		memset(w->res.addr, 'R', 64 << 10);
		munmap(w->ro.addr, PAGE);
		mprotect(w->hid.addr + 2 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE);
		memset(w->hid.addr + 2 * PAGE, 'H', 2 * PAGE);
		munmap(w->file.addr + PAGE, PAGE);
		mprotect(w->stk.addr + STK_USED / 2, STK_USED / 2, PROT_NONE);
		mprotect(w->stk.addr + STK_USED, 64 << 10, PROT_READ | PROT_WRITE);
		memset(w->stk.addr + STK_USED, 'S', 64 << 10);
		break;
	case M_FIXED:
		if (mmap(w->ro.addr, w->ro.len, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED ||
		    mmap(w->file.addr, w->file.len, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED ||
		    mmap(w->hid.addr, w->hid.len, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
			die("mmap fixed");
		memset(w->ro.addr, 'F', w->ro.len);
		break;
	case M_REMAP: {
		char *n = mremap(w->ro.addr, w->ro.len, 4 * w->ro.len, MREMAP_MAYMOVE);
		if (n == MAP_FAILED)
			die("mremap");
		memset(n, 'M', 4 * w->ro.len);
		if (mremap(w->hid.addr, w->hid.len, w->hid.len, MREMAP_MAYMOVE | MREMAP_FIXED, w->res.addr + (1 << 20)) == MAP_FAILED)
			die("mremap fixed");
		break;
	}
	case M_JOIN:
		stop_helper(w);
		pthread_join(w->helper, NULL);
		spawn_and_join(2 << 20, 3000);
		break;
	case M_SMASH:
		g_sink = copy_name(g_long, g_smash_len); /* SIGABRT */
		break;
	case M_DROPSTACK: {
		pthread_attr_t a;
		void *base;
		size_t size;
		if (pthread_getattr_np(pthread_self(), &a) || pthread_attr_getstack(&a, &base, &size))
			die("pthread_getattr_np");
		pthread_attr_destroy(&a);
		munmap(base, size); /* SIGSEGV: no stack, no rseq area */
		break;
	}
	}
	if (fault)
		crash_null();
	return 0;
}

/* Mappings are looked up with the PROCMAP_QUERY ioctl (Linux 6.11), one
 * mapping per call, each answer a snapshot. (Reading /proc/self/maps takes
 * several reads, and another thread's fault can roll this one back between
 * two of them: the parts then come from different layouts.) The
 * definitions are from linux/fs.h, which the headers here predate. */
struct procmap_query {
	uint64_t size, query_flags, query_addr, vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define PROCMAP_QUERY_VMA_READABLE 0x01
#define PROCMAP_QUERY_VMA_WRITABLE 0x02
#define PROCMAP_QUERY_VMA_EXECUTABLE 0x04
#define PROCMAP_QUERY_VMA_SHARED 0x08

static void perms_of(uint64_t f, char out[5])
{
	out[0] = f & PROCMAP_QUERY_VMA_READABLE ? 'r' : '-';
	out[1] = f & PROCMAP_QUERY_VMA_WRITABLE ? 'w' : '-';
	out[2] = f & PROCMAP_QUERY_VMA_EXECUTABLE ? 'x' : '-';
	out[3] = f & PROCMAP_QUERY_VMA_SHARED ? 's' : 'p';
	out[4] = 0;
}

/* covered reports whether every byte of [start, end) is mapped with
 * protection p1 below split and p2 above it. */
static int covered(uintptr_t start, uintptr_t end, uintptr_t split, const char *p1, const char *p2)
{
	static __thread int fd = -1;
	if (fd < 0 && (fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)) < 0)
		die("maps");
	for (uintptr_t at = start; at < end;) {
		struct procmap_query q = { .size = sizeof q, .query_addr = at };
		if (ioctl(fd, PROCMAP_QUERY, &q) < 0)
			return 0; /* not mapped */
		char perms[5];
		perms_of(q.vma_flags, perms);
		uintptr_t stop = q.vma_end < end ? q.vma_end : end;
		while (at < stop) {
			if (strcmp(perms, at < split ? p1 : p2) != 0)
				return 0;
			at = at < split && split < stop ? split : stop;
		}
	}
	return 1;
}

static uint64_t region_sum(const struct region *r)
{
	if (r->hidden && mprotect(r->addr, r->len, PROT_READ))
		return 0;
	uint64_t s = fnv1a(FNV_INIT, r->addr, r->len);
	if (r->hidden && mprotect(r->addr, r->len, PROT_NONE))
		die("mprotect back");
	return s;
}

static int check(struct worker *w, int round)
{
	int bad = 0;
	struct region *rs[] = { &w->res, &w->ro, &w->hid, &w->file };
	const char *why = NULL, *which = NULL;
	for (int i = 0; i < 4; i++) {
		struct region *r = rs[i];
		uintptr_t a = (uintptr_t)r->addr;
		if (!covered(a, a + r->len, a + r->len, r->perms, r->perms)) {
			bad++, why = "mapping", which = r->name;
			continue;
		}
		if (r->sum && region_sum(r) != r->sum)
			bad++, why = "contents", which = r->name;
	}
	uintptr_t a = (uintptr_t)w->stk.addr;
	if (!covered(a, a + STK_LEN, a + STK_USED, "rw-p", "---p"))
		bad++, why = "mapping", which = "stk";
	else if (fnv1a(FNV_INIT, w->stk.addr, STK_USED) != w->stk.sum)
		bad++, why = "contents", which = "stk";
	if (bad) {
		pthread_mutex_lock(&g_print);
		fprintf(stderr, "stress: worker %d after round %d: %d bad regions, last: %s of %s\n", w->id, round, bad, why, which);
		pthread_mutex_unlock(&g_print);
	}
	return bad;
}

static void *map_or_die(size_t len, int prot, int flags, int fd)
{
	void *p = mmap(NULL, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void setup(struct worker *w)
{
	w->res = (struct region){ "res", map_or_die(RES_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1), RES_LEN, "---p", 0, 0 };

	char *ro = map_or_die(RO_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	for (size_t i = 0; i < RO_LEN; i++)
		ro[i] = (char)mix64((uint64_t)w->id * 7919 + i);
	mprotect(ro, RO_LEN, PROT_READ);
	w->ro = (struct region){ "ro", ro, RO_LEN, "r--p", fnv1a(FNV_INIT, ro, RO_LEN), 0 };


	char *hid = map_or_die(HID_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	for (size_t i = 0; i < HID_LEN; i += 8)
		hid[i] = (char)mix64((uint64_t)w->id * 31 + i);
	uint64_t hs = fnv1a(FNV_INIT, hid, HID_LEN);
	mprotect(hid, HID_LEN, PROT_NONE);
	w->hid = (struct region){ "hid", hid, HID_LEN, "---p", hs, 1 };

	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open self");
	char *f = map_or_die(FILE_LEN, PROT_READ, MAP_PRIVATE, fd);
	close(fd);
	w->file = (struct region){ "file", f, FILE_LEN, "r--p", fnv1a(FNV_INIT, f, FILE_LEN), 0 };

	char *stk = map_or_die(STK_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	mprotect(stk, STK_USED, PROT_READ | PROT_WRITE);
	memset(stk, 's' + w->id, STK_USED);
	w->stk = (struct region){ "stk", stk, STK_LEN, NULL, fnv1a(FNV_INIT, stk, STK_USED), 0 };

	start_helper(w);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < g_rounds; i++) {
		int mode = (i + w->id) % NMODES;
		int fault = !(mode == M_THREADS || mode == M_MALLOC) || (i / NMODES + w->id) % 2 == 0;
		if (mode == M_SMASH || mode == M_DROPSTACK)
			fault = 0; /* the mode faults by itself */
		int rc = step(w, mode, i, fault);
		int expect_error = fault || mode == M_SMASH || mode == M_DROPSTACK;
		w->want += expect_error;
		if (rc < 0)
			w->errors++;
		else
			w->ok++;
		if (rc < 0 || !expect_error)
			w->bad += check(w, i);
	}
	__atomic_fetch_add(&g_done, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &g_done, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: stress WORKERS ROUNDS\n");
		return 2;
	}
	g_nw = atoi(argv[1]);
	g_rounds = atoi(argv[2]);
	if (g_nw < 1 || g_nw > MAXW || g_rounds < 1)
		die("bad arguments");
	memset(g_long, 'A', sizeof g_long);

	for (int i = 0; i < g_nw; i++) {
		g_w[i].id = i;
		setup(&g_w[i]);
	}
	/* warm-up: the supervisor's one-time setup happens outside the stress */
	if (step(&g_w[0], M_MALLOC, 0, 0) != 0)
		die("warm-up");

	pthread_t t[MAXW];
	for (int i = 0; i < g_nw; i++)
		if (pthread_create(&t[i], NULL, worker_main, &g_w[i]))
			die("pthread_create worker");
	/* Wait in memory of our own, not in pthread_join: a dropstack round
	 * unmaps the thread descriptor that a join would wait on. */
	for (int n; (n = __atomic_load_n(&g_done, __ATOMIC_ACQUIRE)) < g_nw;)
		syscall(SYS_futex, &g_done, FUTEX_WAIT_PRIVATE, n, NULL, NULL, 0);
	for (int i = 0; i < g_nw; i++)
		pthread_join(t[i], NULL);

	long ok = 0, errors = 0, want = 0, bad = 0, helpers = 0, names = 0;
	for (int i = 0; i < g_nw; i++) {
		struct worker *w = &g_w[i];
		bad += check(w, -1);
		char name[16] = "", expect[16];
		snprintf(expect, sizeof expect, "helper-%d", i);
		if (pthread_getname_np(w->helper, name, sizeof name) == 0 && strcmp(name, expect) == 0)
			names++;
		stop_helper(w);
		void *ret;
		if (pthread_join(w->helper, &ret) == 0 && ret == (void *)(intptr_t)(1000 + i))
			helpers++;
		ok += w->ok;
		errors += w->errors;
		want += w->want;
		bad += w->bad;
	}
	printf("ok=%ld\nerrors=%ld\nwant_errors=%ld\nbad=%ld\nhelpers=%ld\nnames=%ld\n", ok, errors, want, bad, helpers, names);
	return 0;
}
