/* server: a long-running request/response server, for `assure attach` and
 * for signal handling of `assure run`.
 *
 *   server serve [WORKERS]
 *       reads request lines from stdin and answers each with one line on
 *       stdout (line-buffered, so a test can talk to it over pipes):
 *         GOOD n   handle_request adds n to the total; reply "ok <requests>"
 *         BAD      handle_request counts the request, adds 1000000 to the
 *                  total, fills a fresh heap block, then writes through a
 *                  null pointer (SIGSEGV); if it returns (-1, recovered by
 *                  assure) the reply is "error"
 *         HOLD     handle_request prints "holding" and returns (0) only
 *                  after reading one more line: a thread inside a rescue
 *                  point, on demand (single-threaded serve only)
 *         LOCKBAD  handle_request takes a mutex, then faults as BAD does:
 *                  the fault happens with a lock held
 *         HANG     handle_request never returns (pause() inside the rescue
 *                  point), for kill/delete while a task is inside one
 *         STATS    "stats requests=R errors=E total=T fds=F maps=M threads=N"
 *                  (entries of /proc/self/fd and /proc/self/task, lines of
 *                  /proc/self/maps)
 *         QUIT     replies "bye" and exits 0 (so does end of input)
 *       anything else gets "unknown". With WORKERS > 0 (default 0) the main
 *       thread hands GOOD and BAD to WORKERS worker threads in turn, each
 *       blocked in read() on its own pipe until it gets one; handle_request
 *       then runs on a worker thread. STATS runs on the main thread.
 *       The first line, before any request, is "ready".
 *
 *   server sigterm
 *       installs a SIGTERM handler that writes "got SIGTERM" and _exit(5)s,
 *       prints "ready" and waits for signals forever
 *   server wait
 *       prints "ready" and waits forever, with SIGTERM, SIGINT, SIGHUP and
 *       SIGQUIT at their default action
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>

#define REQ_MAX 128

static long g_requests; /* requests handle_request counted */
static long g_total;    /* sum of n of GOOD n */
static long g_errors;   /* requests handle_request failed (main, outside) */
static char *g_scratch; /* last block BAD allocated */

/* The rescue point: its callers handle -1 as "request failed". */
__attribute__((noinline, noipa)) int handle_request(const char *req)
{
	g_requests++;
	if (!strncmp(req, "GOOD", 4)) {
		g_total += strtol(req + 4, NULL, 10);
		return 0;
	}
	if (!strncmp(req, "HOLD", 4)) {
		/* Stays inside the rescue point until the next input line. */
		char rel[REQ_MAX];
		printf("holding\n");
		if (!fgets(rel, sizeof rel, stdin))
			return -1;
		return 0;
	}
	if (!strncmp(req, "LOCKBAD", 7)) {
		static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
		pthread_mutex_lock(&lock);
		crash_null();
		pthread_mutex_unlock(&lock);
		return -1;
	}
	if (!strncmp(req, "HANG", 4)) {
		for (;;) /* stays inside the rescue point until killed */
			pause();
	}
	/* BAD: state changes the rollback must undo, then the fault. */
	g_total += 1000000;
	g_scratch = malloc(4096);
	if (g_scratch)
		memset(g_scratch, 'x', 4096);
	escape(g_scratch);
	crash_null();
	return -1;
}

struct worker {
	pthread_t thread;
	int req[2];  /* main -> worker: REQ_MAX bytes of request */
	int done[2]; /* worker -> main: the int handle_request returned */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	char req[REQ_MAX];
	for (;;) {
		read_exact(w->req[0], req, sizeof req);
		int rc = handle_request(req);
		write_all(w->done[1], &rc, sizeof rc);
	}
	return NULL;
}

static int serve(int nworkers)
{
	struct worker *workers = NULL;
	if (nworkers > 0) {
		workers = calloc((size_t)nworkers, sizeof *workers);
		if (!workers)
			die("calloc");
		for (int i = 0; i < nworkers; i++) {
			if (pipe2(workers[i].req, O_CLOEXEC) || pipe2(workers[i].done, O_CLOEXEC))
				die("pipe2");
			if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]))
				die("pthread_create");
		}
	}
	printf("ready\n");
	char line[REQ_MAX];
	int next = 0;
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\r\n")] = 0;
		if (!strncmp(line, "GOOD ", 5) || !strcmp(line, "BAD") || !strcmp(line, "LOCKBAD") || !strcmp(line, "HANG") || !strcmp(line, "HOLD")) {
			int rc;
			if (nworkers > 0) {
				struct worker *w = &workers[next];
				next = (next + 1) % nworkers;
				char req[REQ_MAX];
				memset(req, 0, sizeof req);
				memcpy(req, line, strlen(line));
				write_all(w->req[1], req, sizeof req);
				read_exact(w->done[0], &rc, sizeof rc);
			} else {
				rc = handle_request(line);
			}
			if (rc < 0) {
				g_errors++;
				printf("error\n");
			} else {
				printf("ok %ld\n", g_requests);
			}
		} else if (!strcmp(line, "STATS")) {
			int fds = count_dir("/proc/self/fd");
			int maps = count_lines("/proc/self/maps");
			int threads = count_dir("/proc/self/task");
			printf("stats requests=%ld errors=%ld total=%ld fds=%d maps=%d threads=%d\n",
			       g_requests, g_errors, g_total, fds, maps, threads);
		} else if (!strcmp(line, "QUIT")) {
			printf("bye\n");
			return 0;
		} else {
			printf("unknown\n");
		}
	}
	return 0;
}

static void on_term(int sig)
{
	(void)sig;
	static const char msg[] = "got SIGTERM\n";
	write_all(1, msg, sizeof msg - 1);
	_exit(5);
}

int main(int argc, char **argv)
{
	/* One reply per line, at once, whatever stdout is. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "serve") && argc <= 3)
		return serve(argc == 3 ? atoi(argv[2]) : 0);
	if (argc == 2 && (!strcmp(argv[1], "sigterm") || !strcmp(argv[1], "wait"))) {
		/* Whatever the parent left (a shell's background job ignores
		 * SIGINT): these signals unblocked and at their default action,
		 * SIGTERM handled in "sigterm" mode. */
		static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
		sigset_t set;
		sigemptyset(&set);
		for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
			struct sigaction sa;
			memset(&sa, 0, sizeof sa);
			sa.sa_handler = SIG_DFL;
			if (sigs[i] == SIGTERM && !strcmp(argv[1], "sigterm"))
				sa.sa_handler = on_term;
			sigemptyset(&sa.sa_mask);
			if (sigaction(sigs[i], &sa, NULL))
				die("sigaction");
			sigaddset(&set, sigs[i]);
		}
		if (sigprocmask(SIG_UNBLOCK, &set, NULL))
			die("sigprocmask");
		printf("ready\n");
		for (;;)
			pause();
	}
	fprintf(stderr, "usage: server serve [WORKERS] | server sigterm | server wait\n");
	return 2;
}
