/*
 * target.c: the process the checkpoint tests track. Built by the tests
 * with gcc; see dirty_test.go.
 *
 * At start it sets up regions of every kind the engine tracks, creates a
 * userfaultfd in itself (as the supervisor would inject it) and prints
 *
 *   heap=ADDR anon=ADDR shared=ADDR file=ADDR unpop=ADDR uffd=FD
 *
 * then answers one command per line on stdin with one line on stdout
 * ("ok ..." or "err ..."):
 *
 *   W addr byte len      memset(addr, byte, len)
 *   P addr len off       pread(datafile, addr, len, off): a kernel write
 *   M len [addr]         mmap anonymous private memory (MAP_FIXED at addr)
 *   O path len p|s       mmap a file read/write, private or shared
 *   U addr len           munmap
 *   K addr len prot      mprotect (prot as in mman.h: 1 read, 3 read/write)
 *   D addr len advice    madvise (4: MADV_DONTNEED, 9: MADV_REMOVE, 14: MADV_HUGEPAGE)
 *   R addr len           print the FNV-1a 64 hash of the bytes
 *   S                    nothing, only the acknowledgement
 *   X                    exit(0)
 *
 * Commands are read one byte per read(2) into static storage: nothing is
 * buffered between commands, so whenever the program waits for a command
 * its memory that matters is the same, and a page-level rollback of all
 * of it (while it is stopped in that read) leaves it working.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PG 4096
#define HEAP_LEN (16 * PG)
#define ANON_PAGES 16
#define SHARED_PAGES 8
#define FILE_PAGES 8
#define UNPOP_PAGES 16

static char line[512];
static char reply[128];
static int datafd = -1;

static void put(const char *s)
{
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(1, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			_exit(3);
		}
		s += w;
		n -= (size_t)w;
	}
}

static int readline(void)
{
	size_t i = 0;
	for (;;) {
		char c;
		ssize_t r = read(0, &c, 1);
		if (r == 0)
			return -1;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (c == '\n')
			break;
		if (i < sizeof line - 1)
			line[i++] = c;
	}
	line[i] = 0;
	return (int)i;
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
	uint64_t h = 14695981039346656037ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static void *xmap(size_t len, int flags)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	return p;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7 + (i >> 12) * 13);
}

static void command(void)
{
	char *s = line, *end;
	char op = *s++;
	unsigned long long a = strtoull(s, &end, 0);
	unsigned long long b = strtoull(end, &end, 0);
	unsigned long long c = strtoull(end, &end, 0);

	switch (op) {
	case 'W':
		memset((void *)(uintptr_t)a, (int)b, (size_t)c);
		put("ok\n");
		return;
	case 'P': {
		ssize_t n = pread(datafd, (void *)(uintptr_t)a, (size_t)b, (off_t)c);
		snprintf(reply, sizeof reply, n < 0 ? "err pread %zd\n" : "ok %zd\n", n);
		put(reply);
		return;
	}
	case 'M': {
		/* M len [addr] */
		int flags = MAP_PRIVATE | MAP_ANONYMOUS | (b ? MAP_FIXED : 0);
		void *p = mmap((void *)(uintptr_t)b, (size_t)a, PROT_READ | PROT_WRITE, flags, -1, 0);
		snprintf(reply, sizeof reply, p == MAP_FAILED ? "err mmap\n" : "ok %p\n", p);
		put(reply);
		return;
	}
	case 'O': {
		/* O path len p|s */
		char *path = s + strspn(s, " ");
		char *sp = strchr(path, ' ');
		if (!sp) {
			put("err syntax\n");
			return;
		}
		*sp = 0;
		unsigned long long len = strtoull(sp + 1, &end, 0);
		while (*end == ' ')
			end++;
		int fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			put("err open\n");
			return;
		}
		void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE,
			       *end == 's' ? MAP_SHARED : MAP_PRIVATE, fd, 0);
		close(fd);
		snprintf(reply, sizeof reply, p == MAP_FAILED ? "err mmap\n" : "ok %p\n", p);
		put(reply);
		return;
	}
	case 'K':
		put(mprotect((void *)(uintptr_t)a, (size_t)b, (int)c) ? "err mprotect\n" : "ok\n");
		return;
	case 'D':
		put(madvise((void *)(uintptr_t)a, (size_t)b, (int)c) ? "err madvise\n" : "ok\n");
		return;
	case 'U':
		put(munmap((void *)(uintptr_t)a, (size_t)b) ? "err munmap\n" : "ok\n");
		return;
	case 'R':
		snprintf(reply, sizeof reply, "ok %016llx\n",
			 (unsigned long long)fnv((const unsigned char *)(uintptr_t)a, (size_t)b));
		put(reply);
		return;
	case 'S':
		put("ok\n");
		return;
	case 'X':
		exit(0);
	}
	put("err unknown command\n");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: target DATAFILE\n");
		return 2;
	}
	unsigned char *heap = malloc(HEAP_LEN); /* below the mmap threshold: [heap] */
	if (!heap)
		return 2;
	fill(heap, HEAP_LEN, 1);

	unsigned char *anon = xmap(ANON_PAGES * PG, MAP_PRIVATE | MAP_ANONYMOUS);
	fill(anon, ANON_PAGES * PG, 2);

	unsigned char *shared = xmap(SHARED_PAGES * PG, MAP_SHARED | MAP_ANONYMOUS);
	fill(shared, SHARED_PAGES * PG, 3);

	datafd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (datafd < 0) {
		perror(argv[1]);
		return 2;
	}
	static unsigned char page[PG];
	for (int i = 0; i < FILE_PAGES; i++) {
		fill(page, PG, 40 + i);
		if (write(datafd, page, PG) != PG) {
			perror("write");
			return 2;
		}
	}
	unsigned char *file = mmap(NULL, FILE_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, datafd, 0);
	if (file == MAP_FAILED) {
		perror("mmap file");
		return 2;
	}
	file[0] = 0xAB;                         /* page 0: a private copy */
	volatile unsigned char sink = file[PG]; /* page 1: read only */
	(void)sink;                             /* pages 2..: never touched */

	unsigned char *unpop = xmap(UNPOP_PAGES * PG, MAP_PRIVATE | MAP_ANONYMOUS);

	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
	if (uffd < 0) {
		perror("userfaultfd");
		return 2;
	}
	printf("heap=%p anon=%p shared=%p file=%p unpop=%p uffd=%d\n",
	       (void *)heap, (void *)anon, (void *)shared, (void *)file, (void *)unpop, uffd);
	fflush(stdout);

	while (readline() >= 0)
		command();
	return 0;
}
