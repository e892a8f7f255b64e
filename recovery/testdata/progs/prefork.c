/* prefork: a master forks workers that share counters.
 *
 *   prefork validate|fault SHAREDWRITE R EVERY
 *
 * A MAP_SHARED|MAP_ANONYMOUS region holds the counters. The parent forks 3
 * workers and waitpid()s them all. Worker w handles R requests; request i is
 * bad when i % EVERY == EVERY / 2. handle_request (rescue point, error value
 * -1) updates the worker's private state and, with SHAREDWRITE=1, also adds
 * to a counter in the shared region (shared_in_rp) before a bad request
 * writes through a null pointer. The caller adds ok/errors/rsum to the shared
 * region with atomics. With "validate" the handler rejects a bad request
 * before touching anything (the reference run).
 *
 * The parent prints the totals, each worker's private checksum and exit
 * status, and the pids (worker_pid_N, parent_pid) for the test to match
 * against event pids.
 */
#include "common.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define WORKERS 3

struct shared {
	long ok, errors, rsum;
	uint64_t shared_in_rp;
	uint64_t worker_sum[WORKERS];
	long worker_handled[WORKERS];
	int finished;
};

static int g_validate, g_sharedwrite;
uint64_t g_private_sum;
long g_private_handled;

RESCUE_POINT int handle_request(struct shared *s, int w, int i, int bad)
{
	if (bad && g_validate)
		return -1;
	uint64_t v = mix64((uint64_t)w * 7919u + (uint64_t)i);
	g_private_sum = mix64(g_private_sum ^ v);
	g_private_handled++;
	if (g_sharedwrite)
		__atomic_add_fetch(&s->shared_in_rp, v, __ATOMIC_SEQ_CST);
	if (bad)
		crash_null();
	return (int)(v & 0x7f);
}

static void work(struct shared *s, int w, int r, int every)
{
	for (int i = 0; i < r; i++) {
		int bad = i % every == every / 2;
		int rc = handle_request(s, w, i, bad);
		if (rc < 0) {
			__atomic_add_fetch(&s->errors, 1, __ATOMIC_SEQ_CST);
		} else {
			__atomic_add_fetch(&s->ok, 1, __ATOMIC_SEQ_CST);
			__atomic_add_fetch(&s->rsum, rc, __ATOMIC_SEQ_CST);
		}
	}
	s->worker_sum[w] = g_private_sum;
	s->worker_handled[w] = g_private_handled;
	/* Nobody exits while another worker may still be inside a rescue
	 * point: a container-scope rollback cannot bring back a process that
	 * has exited (README, Limits). */
	__atomic_add_fetch(&s->finished, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&s->finished, __ATOMIC_SEQ_CST) < WORKERS)
		sched_yield();
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: prefork validate|fault SHAREDWRITE R EVERY\n");
		return 2;
	}
	g_validate = !strcmp(argv[1], "validate");
	g_sharedwrite = atoi(argv[2]);
	int r = atoi(argv[3]), every = atoi(argv[4]);

	struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		die("mmap");
	memset(s, 0, sizeof *s);

	pid_t pids[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		pids[w] = fork();
		if (pids[w] < 0)
			die("fork");
		if (pids[w] == 0) {
			work(s, w, r, every);
			_exit(0);
		}
	}
	int statuses[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		int st;
		if (waitpid(pids[w], &st, 0) != pids[w])
			die("waitpid");
		statuses[w] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	}

	printf("total=%ld\nok=%ld\nerrors=%ld\nrsum=%ld\nshared_in_rp=%016lx\n",
	       s->ok + s->errors, s->ok, s->errors, s->rsum, (unsigned long)s->shared_in_rp);
	for (int w = 0; w < WORKERS; w++)
		printf("worker_status_%d=%d\nworker_handled_%d=%ld\nworker_sum_%d=%016lx\n",
		       w, statuses[w], w, s->worker_handled[w], w, (unsigned long)s->worker_sum[w]);
	printf("parent_pid=%d\n", (int)getpid());
	for (int w = 0; w < WORKERS; w++)
		printf("worker_pid_%d=%d\n", w, (int)pids[w]);
	return 0;
}
