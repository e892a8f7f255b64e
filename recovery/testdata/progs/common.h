/* Shared helpers for the end-to-end test programs of `assure run`.
 *
 * Conventions:
 *  - rescue points are non-static and marked RESCUE_POINT (noipa: never
 *    inlined, cloned or analysed across calls, so the symbol in the manifest
 *    is the code that runs and callers make no assumptions about it);
 *  - every fault is a real one the compiler cannot see coming: the bad
 *    pointer, divisor or length is read through a volatile;
 *  - the final state is printed to stdout as key=value lines.
 */
#ifndef E2E_COMMON_H
#define E2E_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RESCUE_POINT __attribute__((noipa))
#define NOINLINE __attribute__((noipa))
#define UNUSED __attribute__((unused))

/* The null pointer, as far as the compiler knows any pointer at all. */
static volatile uintptr_t e2e_null_addr UNUSED = 0;

/* A write through a null pointer: SIGSEGV at address 0. */
static inline UNUSED void crash_null(void)
{
	*(volatile int *)e2e_null_addr = 42;
}

/* Keep a pointer (and what it points to) alive for the optimiser. */
static inline UNUSED void escape(const void *p)
{
	__asm__ volatile("" : : "r"(p) : "memory");
}

#define FNV_INIT 1469598103934665603ULL

static inline UNUSED uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static inline UNUSED uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static UNUSED void die(const char *what)
{
	perror(what);
	exit(100);
}

/* Entries of a /proc directory (without . and ..). The directory fd that
 * opendir uses is counted too, identically every time. */
static UNUSED int count_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		die(path);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Lines of a file, read with plain read() into a static buffer (no stdio,
 * no malloc, so counting /proc/self/maps does not change it). */
static UNUSED int count_lines(const char *path)
{
	static char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die(path);
	int n = 0;
	ssize_t r;
	while ((r = read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < r; i++)
			n += buf[i] == '\n';
	close(fd);
	return n;
}

static UNUSED void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		c += w;
		n -= (size_t)w;
	}
}

static UNUSED void read_exact(int fd, void *p, size_t n)
{
	char *c = p;
	while (n > 0) {
		ssize_t r = read(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("read_exact");
		c += r;
		n -= (size_t)r;
	}
}

#endif
