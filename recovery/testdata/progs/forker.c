/* forker: forks children back to back until its standard input closes;
 * each child calls the rescue point rp_work a few times and exits 0. The
 * parent reaps every child and at the end prints how many ran and how
 * many ended otherwise (killed by a signal or a non-zero status): a
 * breakpoint the child inherited from its parent for a rescue point that
 * was then disarmed would kill it with SIGTRAP.
 *
 * Usage: forker   (prints "ready", then children=N abnormal=M lastsig=S)
 */
#include "common.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

static volatile int sink;

RESCUE_POINT int rp_work(int i)
{
	sink += i;
	return 0;
}

int main(void)
{
	long children = 0, abnormal = 0;
	int lastsig = 0;
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd pfd = {.fd = 0, .events = POLLIN};
		if (poll(&pfd, 1, 0) > 0)
			break; /* input or EOF: stop */
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			for (int i = 0; i < 3; i++)
				if (rp_work(i) != 0)
					_exit(3);
			_exit(0);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid) {
			perror("waitpid");
			return 1;
		}
		children++;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			abnormal++;
			if (WIFSIGNALED(st))
				lastsig = WTERMSIG(st);
		}
	}
	printf("children=%ld abnormal=%ld lastsig=%d\n", children, abnormal, lastsig);
	return 0;
}
