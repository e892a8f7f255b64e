/* bugs: a request loop whose handler has real bug classes.
 *
 *   bugs BUG N EVERY
 *
 * Handles requests 0..N-1; request i is bad when EVERY > 0 and
 * i % EVERY == EVERY / 2. handle_request (the rescue point, error value -1)
 * changes the program state (heap list, global table, counter) and then, for
 * a bad request, runs into BUG:
 *
 *   none    the handler validates its input and rejects a bad request with
 *           -1 before touching anything (the reference run: what error
 *           virtualization must reproduce)
 *   null    write through a null pointer                       SIGSEGV
 *   heap    heap buffer overflow over the next chunk header,
 *           then free() -> glibc detects it and aborts         SIGABRT
 *   smash   stack buffer overflow caught by the stack
 *           protector (__stack_chk_fail)                       SIGABRT
 *   div     integer division by zero                           SIGFPE
 *   assert  a failing assert()                                 SIGABRT
 *   ill     ud2                                                SIGILL
 *   bus     read of a mapped file page after ftruncate(0)      SIGBUS
 *
 * The caller handles the error (errors++) and goes on. Prints ok, errors,
 * processed, rsum and a checksum of the whole state.
 */
#include "common.h"

#include <assert.h>
#include <sys/mman.h>

enum bug { BUG_NONE, BUG_NULL, BUG_HEAP, BUG_SMASH, BUG_DIV, BUG_ASSERT, BUG_ILL, BUG_BUS };

static const char *bug_names[] = { "none", "null", "heap", "smash", "div", "assert", "ill", "bus" };

struct entry {
	uint64_t id, val;
	struct entry *next;
};

struct entry *g_list;
uint64_t g_table[64];
long g_processed;
static enum bug g_bug;

static int g_bus_fd = -1;
static volatile char *g_bus_map;
static char g_long_name[64];
volatile size_t g_smash_len = sizeof g_long_name;
volatile size_t g_heap_overflow = 200 + 16;
volatile int g_divisor; /* 0 */
volatile long g_assert_len = 1 << 20;
volatile int g_sink;

/* Copies a name into a 16-byte stack buffer: the classic unchecked copy. */
NOINLINE int copy_name(const char *src, size_t n)
{
	char name[16];
	memcpy(name, src, n);
	escape(name);
	return name[0];
}

NOINLINE void trigger(enum bug b, uint64_t id)
{
	switch (b) {
	case BUG_NONE:
		break;
	case BUG_NULL:
		crash_null();
		break;
	case BUG_HEAP: {
		/* malloc(200) has 200 usable bytes; the 16 bytes past them are the
		 * next chunk's prev_size/size. A size class nothing else uses, so
		 * both come fresh from the top chunk, b right after a. */
		char *a = malloc(200), *b = malloc(200);
		escape(a);
		escape(b);
		memset(a, 0x41, g_heap_overflow);
		escape(a);
		free(b); /* "double free or corruption" / "invalid size": abort */
		free(a);
		break;
	}
	case BUG_SMASH:
		g_sink = copy_name(g_long_name, g_smash_len);
		break;
	case BUG_DIV:
		g_sink = (int)(id + 1000) / g_divisor;
		break;
	case BUG_ASSERT: {
		long len = g_assert_len;
		assert(len <= 4096 && "request length within the buffer");
		g_sink = (int)len;
		break;
	}
	case BUG_ILL:
		__asm__ volatile("ud2");
		break;
	case BUG_BUS:
		if (ftruncate(g_bus_fd, 0) < 0)
			die("ftruncate");
		g_sink = g_bus_map[100];
		break;
	}
}

RESCUE_POINT int handle_request(uint64_t id, int bad)
{
	if (bad && g_bug == BUG_NONE)
		return -1; /* validated: rejected before any change */

	struct entry *e = malloc(sizeof *e);
	if (!e)
		die("malloc");
	e->id = id;
	e->val = mix64(id);
	e->next = g_list;
	g_list = e;
	g_table[id % 64] += e->val;
	g_processed++;

	if (bad)
		trigger(g_bug, id);

	return (int)(e->val & 0xff);
}

static void setup_bus(void)
{
	char path[] = "/tmp/e2e-bus-XXXXXX";
	g_bus_fd = mkstemp(path);
	if (g_bus_fd < 0)
		die("mkstemp");
	unlink(path);
	char page[4096];
	memset(page, 'b', sizeof page);
	write_all(g_bus_fd, page, sizeof page);
	g_bus_map = mmap(NULL, sizeof page, PROT_READ, MAP_SHARED, g_bus_fd, 0);
	if (g_bus_map == MAP_FAILED)
		die("mmap");
	g_sink = g_bus_map[100]; /* fine while the file is long enough */
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: bugs BUG N EVERY\n");
		return 2;
	}
	int found = 0;
	for (size_t i = 0; i < sizeof bug_names / sizeof bug_names[0]; i++)
		if (!strcmp(argv[1], bug_names[i])) {
			g_bug = (enum bug)i;
			found = 1;
		}
	if (!found) {
		fprintf(stderr, "bugs: unknown bug %s\n", argv[1]);
		return 2;
	}
	long n = atol(argv[2]), every = atol(argv[3]);
	memset(g_long_name, 'A', sizeof g_long_name);
	if (g_bug == BUG_BUS)
		setup_bus();

	long ok = 0, errors = 0, rsum = 0;
	for (long i = 0; i < n; i++) {
		int bad = every > 0 && i % every == every / 2;
		int rc = handle_request((uint64_t)i, bad);
		if (rc < 0) {
			errors++;
		} else {
			ok++;
			rsum += rc;
		}
	}

	uint64_t h = FNV_INIT;
	h = fnv1a(h, g_table, sizeof g_table);
	h = fnv1a(h, &g_processed, sizeof g_processed);
	long listed = 0;
	for (struct entry *e = g_list; e; e = e->next) {
		h = fnv1a(h, &e->id, sizeof e->id);
		h = fnv1a(h, &e->val, sizeof e->val);
		listed++;
	}
	/* The heap must still be usable: free everything, allocate again. */
	while (g_list) {
		struct entry *next = g_list->next;
		free(g_list);
		g_list = next;
	}
	void *p = malloc(100000);
	escape(p);
	free(p);

	printf("ok=%ld\nerrors=%ld\nprocessed=%ld\nlisted=%ld\nrsum=%ld\nchecksum=%016llx\n",
	       ok, errors, g_processed, listed, rsum, (unsigned long long)h);
	return 0;
}
