/* passthru: exit status and standard streams.
 *
 *   passthru cat       copies stdin to stdout in chunks through the rescue
 *                      point copy_chunk (error value -1), then writes a
 *                      line to stderr
 *   passthru exit N    prints a line and exits with status N
 *   passthru kill      prints a line and kills itself with SIGKILL
 */
#include "common.h"

#include <signal.h>

RESCUE_POINT int copy_chunk(const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(1, buf, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "cat")) {
		static char buf[4096];
		size_t total = 0;
		for (;;) {
			ssize_t r = read(0, buf, sizeof buf);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				die("read");
			if (r == 0)
				break;
			if (copy_chunk(buf, (size_t)r) < 0)
				die("copy_chunk");
			total += (size_t)r;
		}
		fprintf(stderr, "passthru: copied %zu bytes\n", total);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "exit")) {
		printf("exiting with %d\n", atoi(argv[2]));
		return atoi(argv[2]);
	}
	if (argc == 2 && !strcmp(argv[1], "kill")) {
		static const char msg[] = "killing myself\n";
		write_all(1, msg, sizeof msg - 1);
		kill(getpid(), SIGKILL);
		return 1;
	}
	fprintf(stderr, "usage: passthru cat | exit N | kill\n");
	return 2;
}
