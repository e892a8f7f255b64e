/* invisible: a checkpoint must not be visible to the program.
 *
 *   invisible validate|fault N BAD
 *
 * Before the first call the program records its fd count and task count
 * and installs a SIGCHLD handler that counts. On each good request, inside
 * the rescue point handle_request (error value -1), it checks:
 * waitpid(-1, WNOHANG) fails with ECHILD (no child to see), the SIGCHLD
 * counter is 0, /proc/self/fd and /proc/self/task have as many entries as
 * before. Request BAD (if 0 <= BAD < N) writes through a null pointer (with
 * "fault") or is rejected up front (with "validate"). The same checks are
 * made once more after the loop, in main. Prints how many checks passed.
 */
#include "common.h"

#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t g_sigchld;
static int g_base_fds, g_base_tasks;
static int g_validate;

struct obs {
	int calls, echild, sigchld_zero, fds_same, tasks_same;
} g_obs;

static void on_sigchld(int sig)
{
	(void)sig;
	g_sigchld++;
}

RESCUE_POINT int handle_request(int i, int bad)
{
	if (bad && g_validate)
		return -1;
	g_obs.calls++;
	int st;
	if (waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD)
		g_obs.echild++;
	if (g_sigchld == 0)
		g_obs.sigchld_zero++;
	if (count_dir("/proc/self/fd") == g_base_fds)
		g_obs.fds_same++;
	if (count_dir("/proc/self/task") == g_base_tasks)
		g_obs.tasks_same++;
	if (bad)
		crash_null();
	return i & 1;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: invisible validate|fault N BAD\n");
		return 2;
	}
	g_validate = !strcmp(argv[1], "validate");
	int n = atoi(argv[2]), badi = atoi(argv[3]);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL))
		die("sigaction");
	g_base_fds = count_dir("/proc/self/fd");
	g_base_tasks = count_dir("/proc/self/task");

	int ok = 0, errors = 0;
	for (int i = 0; i < n; i++) {
		if (handle_request(i, i == badi) < 0)
			errors++;
		else
			ok++;
	}
	int st;
	int final_echild = waitpid(-1, &st, WNOHANG) == -1 && errno == ECHILD;
	printf("ok=%d\nerrors=%d\ncalls=%d\nechild=%d\nsigchld_zero=%d\nfds_same=%d\ntasks_same=%d\n",
	       ok, errors, g_obs.calls, g_obs.echild, g_obs.sigchld_zero, g_obs.fds_same, g_obs.tasks_same);
	printf("final_echild=%d\nfinal_sigchld=%d\nfinal_fds_same=%d\nfinal_tasks_same=%d\n",
	       final_echild, (int)g_sigchld, count_dir("/proc/self/fd") == g_base_fds,
	       count_dir("/proc/self/task") == g_base_tasks);
	return 0;
}
