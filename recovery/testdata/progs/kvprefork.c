/* kvprefork: a prefork key-value server over TCP on 127.0.0.1, for
 * issue 7 (a recovery loses no other process's work).
 *
 *   kvprefork PORTFILE
 *
 * The master binds and listens (port chosen by the kernel), forks 3
 * workers and then writes PORTFILE ("port=N\npid=MASTER\n", renamed into
 * place when complete, so the workers exist once it is there). Each worker
 * runs an epoll loop of its own over the shared, non-blocking listening
 * socket (EPOLLEXCLUSIVE: one worker woken per connection) and the
 * connections it accepted; worker 0 registers its connections
 * edge-triggered (EPOLLET) and reads each until EAGAIN.
 *
 * The table lives in MAP_SHARED|MAP_ANONYMOUS memory under one
 * process-shared robust mutex; protocol and rescue point (handle_request,
 * error value -1) are in kv.h. STATS gives the serving worker's pid.
 *
 * The master waits for SIGTERM or SIGINT (signalfd), then sends SIGTERM to
 * the workers, reaps them, prints the final state (requests, errors,
 * partial, key_NAME=value, worker_pid_N, worker_status_N: exit code or
 * 128+signal) on stdout and exits 0. A worker that ends before is reported
 * on stderr ("kvprefork: worker N pid P ended, status S").
 */
#include "kv.h"

#include <sys/epoll.h>
#include <sys/wait.h>

#define WORKERS 3

static void worker_main(int w, int lfd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev))
		die("epoll_ctl listen");
	int edge = w == 0;
	struct epoll_event evs[16];
	for (;;) {
		int n = epoll_wait(ep, evs, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
				if (fd < 0) {
					if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
						continue;
					die("accept4");
				}
				c = kv_conn_new(fd, edge);
				struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (edge ? EPOLLET : 0), .data.ptr = c};
				if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
					die("epoll_ctl");
				continue;
			}
			if (!kv_conn_io(c)) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				free(c);
			}
		}
	}
}

static int worker_index(const pid_t *pids, pid_t pid)
{
	for (int w = 0; w < WORKERS; w++)
		if (pids[w] == pid)
			return w;
	return -1;
}

static int status_of(int st)
{
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: kvprefork PORTFILE\n");
		return 2;
	}
	struct kv_table *t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		die("mmap");
	kv_init(t, 1);
	kv_prepare_bus();
	int port;
	int lfd = kv_listen(1, &port);
	sigset_t old;
	int sfd = kv_signalfd(SIGCHLD, &old);

	pid_t pids[WORKERS];
	int status[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		status[w] = -1;
		pids[w] = fork();
		if (pids[w] < 0)
			die("fork");
		if (pids[w] == 0) {
			close(sfd);
			if (sigprocmask(SIG_SETMASK, &old, NULL))
				die("sigprocmask");
			worker_main(w, lfd);
			_exit(0);
		}
	}
	kv_write_portfile(argv[1], port);

	int live = WORKERS, stopping = 0;
	while (live > 0) {
		struct signalfd_siginfo si;
		ssize_t r = read(sfd, &si, sizeof si);
		if (r < 0 && errno == EINTR)
			continue;
		if (r != sizeof si)
			die("read signalfd");
		if ((si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) && !stopping) {
			stopping = 1;
			for (int w = 0; w < WORKERS; w++)
				if (status[w] < 0)
					kill(pids[w], SIGTERM);
		}
		int st;
		pid_t pid;
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			int w = worker_index(pids, pid);
			if (w < 0)
				continue;
			status[w] = status_of(st);
			live--;
			if (!stopping)
				fprintf(stderr, "kvprefork: worker %d pid %d ended, status %d\n", w, (int)pid, status[w]);
		}
	}
	kv_print_state();
	for (int w = 0; w < WORKERS; w++)
		printf("worker_pid_%d=%d\nworker_status_%d=%d\n", w, (int)pids[w], w, status[w]);
	fflush(stdout);
	return 0;
}
