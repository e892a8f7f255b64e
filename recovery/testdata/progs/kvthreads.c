/* kvthreads: a threaded key-value server over TCP on 127.0.0.1, for
 * issue 7 (a recovery loses no other thread's work).
 *
 *   kvthreads perconn PORTFILE
 *       one thread per accepted connection, blocking reads and writes
 *   kvthreads pool NWORKERS PORTFILE
 *       NWORKERS worker threads, each with its own epoll loop (as
 *       memcached does); the main thread accepts and hands each connection
 *       to the next worker in turn (epoll_ctl on that worker's epoll set).
 *       Worker 0 registers its connections edge-triggered (EPOLLET) and
 *       reads each until EAGAIN; the others are level-triggered, one read
 *       per wake-up. Sockets are non-blocking.
 *
 * The table (64 keys, long values) is one static array under ONE pthread
 * mutex; protocol and rescue point (handle_request, error value -1) are in
 * kv.h. The port is chosen by the kernel and written to PORTFILE as
 * "port=N\npid=P\n" (renamed into place when complete). SIGTERM or SIGINT
 * print the final state (requests, errors, partial, key_NAME=value) on
 * stdout and exit 0.
 */
#include "kv.h"

#include <sys/epoll.h>

struct worker {
	int epfd;
	int edge;
	pthread_t th;
};

static void *conn_thread(void *arg)
{
	struct conn *c = arg;
	while (kv_conn_io(c))
		;
	close(c->fd);
	free(c);
	return NULL;
}

static void *pool_worker(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[16];
	for (;;) {
		int n = epoll_wait(w->epfd, evs, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!kv_conn_io(c)) {
				epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
				close(c->fd);
				free(c);
			}
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int pool = argc == 4 && !strcmp(argv[1], "pool");
	if (!(pool || (argc == 3 && !strcmp(argv[1], "perconn")))) {
		fprintf(stderr, "usage: kvthreads perconn PORTFILE | kvthreads pool NWORKERS PORTFILE\n");
		return 2;
	}
	const char *portfile = argv[argc - 1];
	int nworkers = pool ? atoi(argv[2]) : 0;
	if (pool && (nworkers < 1 || nworkers > 64)) {
		fprintf(stderr, "kvthreads: NWORKERS must be 1..64\n");
		return 2;
	}

	static struct kv_table table;
	kv_init(&table, 0);
	kv_prepare_bus();
	int port;
	int lfd = kv_listen(pool, &port);
	int sfd = kv_signalfd(0, NULL);

	pthread_attr_t detached;
	pthread_attr_init(&detached);
	pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);

	struct worker *workers = NULL;
	if (pool) {
		workers = calloc((size_t)nworkers, sizeof *workers);
		if (!workers)
			die("calloc");
		for (int i = 0; i < nworkers; i++) {
			workers[i].epfd = epoll_create1(EPOLL_CLOEXEC);
			if (workers[i].epfd < 0)
				die("epoll_create1");
			workers[i].edge = i == 0;
			if (pthread_create(&workers[i].th, &detached, pool_worker, &workers[i]))
				die("pthread_create");
		}
	}
	kv_write_portfile(portfile, port);

	int next = 0;
	struct pollfd pf[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (pf[1].revents)
			break;
		if (!pf[0].revents)
			continue;
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | (pool ? SOCK_NONBLOCK : 0));
		if (fd < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
				continue;
			die("accept4");
		}
		if (!pool) {
			pthread_t th;
			if (pthread_create(&th, &detached, conn_thread, kv_conn_new(fd, 0)))
				die("pthread_create");
			continue;
		}
		struct worker *w = &workers[next];
		next = (next + 1) % nworkers;
		struct conn *c = kv_conn_new(fd, w->edge);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (w->edge ? EPOLLET : 0), .data.ptr = c};
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev))
			die("epoll_ctl");
	}
	kv_print_state();
	exit(0);
}
