/* crash: faults outside rescue points, and the program's own handler.
 *
 *   crash plain      rescue_me(0) returns normally; then process_item()
 *                    writes through a null pointer, outside any rescue
 *                    point: the program dies with SIGSEGV
 *   crash handler    the same with a SIGSEGV handler installed that prints
 *                    "handler ran" and _exit(3)s
 *   crash inrp       the handler is installed, and the fault happens inside
 *                    the rescue point rescue_me (error value -1); prints rc
 *                    and "done" if the program lives on
 */
#include "common.h"

#include <signal.h>

int g_calls;

RESCUE_POINT int rescue_me(int fault)
{
	g_calls++;
	if (fault)
		crash_null();
	return 0;
}

NOINLINE void process_item(void)
{
	crash_null();
}

static void on_segv(int sig)
{
	(void)sig;
	static const char msg[] = "handler ran\n";
	write_all(1, msg, sizeof msg - 1);
	_exit(3);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: crash plain|handler|inrp\n");
		return 2;
	}
	const char *mode = argv[1];
	if (strcmp(mode, "plain")) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_segv;
		sigemptyset(&sa.sa_mask);
		if (sigaction(SIGSEGV, &sa, NULL))
			die("sigaction");
	}
	if (rescue_me(0) != 0)
		die("rescue_me");
	if (!strcmp(mode, "inrp")) {
		int rc = rescue_me(1);
		printf("rc=%d\ncalls=%d\ndone\n", rc, g_calls);
		return 0;
	}
	static const char msg[] = "before crash\n";
	write_all(1, msg, sizeof msg - 1);
	process_item();
	printf("survived\n");
	return 0;
}
