/*
 * epollwait: a thread waits in epoll_wait(-1) while the main thread calls a
 * rescue point N times. Each checkpoint stops every thread; the waiter must
 * not see EINTR for it (assure restarts the wait), and it must still wake
 * when data arrives.
 *
 *   epollwait N
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

static int g_ep, g_pipe[2];
static long g_eintr, g_woken;
static volatile pid_t g_waiter_tid;

/* in_epoll_wait reports whether thread tid sleeps in epoll_wait. */
static int in_epoll_wait(pid_t tid)
{
	char path[64], buf[64] = { 0 };
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	return n > 0 && atoi(buf) == SYS_epoll_wait;
}

static void *waiter(void *arg)
{
	(void)arg;
	g_waiter_tid = (pid_t)syscall(SYS_gettid);
	struct epoll_event ev;
	for (;;) {
		int n = epoll_wait(g_ep, &ev, 1, -1);
		if (n < 0 && errno == EINTR) {
			g_eintr++;
			continue;
		}
		if (n > 0) {
			g_woken = 1;
			return NULL;
		}
	}
}

RESCUE_POINT int handle_request(int i)
{
	volatile int x = i;
	return x & 1;
}

int main(int argc, char **argv)
{
	if (argc != 2)
		die("usage: epollwait N");
	int n = atoi(argv[1]);
	g_ep = epoll_create1(EPOLL_CLOEXEC);
	if (g_ep < 0 || pipe(g_pipe) < 0)
		die("epoll/pipe");
	struct epoll_event ev = { .events = EPOLLIN };
	if (epoll_ctl(g_ep, EPOLL_CTL_ADD, g_pipe[0], &ev) < 0)
		die("epoll_ctl");
	pthread_t t;
	if (pthread_create(&t, NULL, waiter, NULL))
		die("pthread_create");
	/* Wait until the waiter sleeps in epoll_wait. */
	while (g_waiter_tid == 0 || !in_epoll_wait(g_waiter_tid))
		sched_yield();
	long sum = 0;
	for (int i = 0; i < n; i++)
		sum += handle_request(i);
	write_all(g_pipe[1], "x", 1);
	pthread_join(t, NULL);
	printf("calls=%d\nsum=%ld\neintr=%ld\nwoken=%ld\n", n, sum, g_eintr, g_woken);
	return 0;
}
