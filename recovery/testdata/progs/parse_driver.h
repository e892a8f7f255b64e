/* The request loop shared by useparse (linked against libparse.so) and
 * dlparse (dlopen()s it): N header lines, every EVERY-th (i % EVERY ==
 * EVERY / 2) without a colon. With "validate" the caller checks a line
 * itself and counts it as an error without calling the parser (the
 * reference run); with "fault" it calls parse_header on it, which crashes. */
#ifndef PARSE_DRIVER_H
#define PARSE_DRIVER_H

#include "common.h"

static int drive(int (*parse)(const char *), long (*count)(void), int validate, int n, int every)
{
	long ok = 0, errors = 0, rsum = 0;
	char line[128];
	for (int i = 0; i < n; i++) {
		int bad = every > 0 && i % every == every / 2;
		if (bad)
			snprintf(line, sizeof line, "garbage-line-%d", i);
		else
			snprintf(line, sizeof line, "X-Header-%d: value %d", i, i * 7);
		int rc;
		if (validate && !strchr(line, ':'))
			rc = -1;
		else
			rc = parse(line);
		if (rc < 0) {
			errors++;
		} else {
			ok++;
			rsum += rc;
		}
	}
	printf("ok=%ld\nerrors=%ld\nrsum=%ld\nparse_count=%ld\n", ok, errors, rsum, count());
	return 0;
}

#endif
