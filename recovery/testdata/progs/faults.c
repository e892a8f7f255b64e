/* faults: every kind of fault, raised by the kernel or sent by the
 * process to itself, inside or outside a rescue point, in the first
 * process or in a forked worker.
 *
 *   faults KIND WHERE [OPTION]...
 *
 * KIND   segv (write through NULL), bus (read past the end of a truncated
 *        memfd mapping), fpe (integer division by zero), ill (ud2),
 *        abort, assert (a failed assert), stackchk (__stack_chk_fail, what
 *        a smashed stack protector calls), raise (raise(SIGSEGV)), kill
 *        (kill(getpid(), SIGSEGV)), tgkill (pthread_kill of the calling
 *        thread with SIGBUS), sibling (a child it forks sends it SIGSEGV
 *        while it waits: a signal from another process)
 * WHERE  inrp: inside the rescue point rescue_fault (error value -1);
 *        outside: in fault_outside, covered by no rescue point
 * OPTION fork    a forked worker faults; the first process waits for it
 *                and prints worker=STATUS (exit code, or 128+N for signal N)
 *        thread  a second thread faults while the first waits for it in
 *                pthread_join
 *        loop    fault 50 times in a row (past a low maxRecoveries)
 *        storm   a SIGSEGV/SIGBUS handler that returns, so that the fault
 *                happens again at once, 2000 times; then it _exit(7)s
 *        core    allow core dumps (RLIMIT_CORE unlimited)
 *        gate    print pid=N, then wait for a byte on stdin before the
 *                work (time for `assure attach`), and for another one
 *                after it
 *
 * Prints rc=N for each call that returned, then faults=N (calls whose
 * effects stand) and done. When the fault is passed on and does not end
 * the program (a signal the kernel ignores for the init of a PID
 * namespace), the program goes on too.
 */
#include "common.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

extern void __stack_chk_fail(void);

static volatile int zero;
static volatile char *bus_page;
int g_faults;

static void prepare_bus(void)
{
	int fd = memfd_create("faults-bus", 0);
	if (fd < 0 || ftruncate(fd, 4096))
		die("memfd");
	bus_page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (bus_page == MAP_FAILED)
		die("mmap");
	if (ftruncate(fd, 0))
		die("ftruncate");
	close(fd);
}

static NOINLINE int fault(const char *kind)
{
	g_faults++;
	if (!strcmp(kind, "segv"))
		crash_null();
	else if (!strcmp(kind, "bus"))
		return bus_page[0];
	else if (!strcmp(kind, "fpe"))
		return g_faults / zero;
	else if (!strcmp(kind, "ill"))
		__builtin_trap();
	else if (!strcmp(kind, "abort"))
		abort();
	else if (!strcmp(kind, "assert"))
		assert(zero == 1);
	else if (!strcmp(kind, "stackchk"))
		__stack_chk_fail();
	else if (!strcmp(kind, "raise"))
		raise(SIGSEGV);
	else if (!strcmp(kind, "kill"))
		kill(getpid(), SIGSEGV);
	else if (!strcmp(kind, "tgkill"))
		pthread_kill(pthread_self(), SIGBUS);
	else if (!strcmp(kind, "sibling")) {
		int p[2];
		char c;
		if (pipe(p))
			die("pipe");
		pid_t pid = fork();
		if (pid == 0) {
			kill(getppid(), SIGSEGV);
			_exit(0);
		}
		close(p[1]);
		/* The signal is pending before the child's exit closes the pipe. */
		while (read(p[0], &c, 1) > 0)
			;
		close(p[0]);
		waitpid(pid, NULL, 0);
	}
	else {
		fprintf(stderr, "faults: unknown kind %s\n", kind);
		exit(2);
	}
	return 0;
}

RESCUE_POINT int rescue_fault(const char *kind)
{
	return fault(kind);
}

NOINLINE int fault_outside(const char *kind)
{
	return fault(kind);
}

static void work(const char *kind, int inrp, int times)
{
	for (int i = 0; i < times; i++) {
		int rc = inrp ? rescue_fault(kind) : fault_outside(kind);
		printf("rc=%d\n", rc);
		fflush(stdout);
	}
	printf("faults=%d\ndone\n", g_faults);
	fflush(stdout);
}

static volatile sig_atomic_t storms;

static void on_fault_return(int sig)
{
	(void)sig;
	if (++storms == 2000)
		_exit(7);
}

struct job {
	const char *kind;
	int inrp, times;
};

static void *work_thread(void *arg)
{
	struct job *j = arg;
	work(j->kind, j->inrp, j->times);
	return NULL;
}

static void run(const char *kind, int inrp, int times, int threaded)
{
	if (!threaded) {
		work(kind, inrp, times);
		return;
	}
	struct job j = {kind, inrp, times};
	pthread_t th;
	if (pthread_create(&th, NULL, work_thread, &j) || pthread_join(th, NULL))
		die("thread");
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: faults KIND inrp|outside [fork|thread|loop|storm|core]...\n");
		return 2;
	}
	int inrp = !strcmp(argv[2], "inrp"), forked = 0, times = 1, threaded = 0;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "fork"))
			forked = 1;
		else if (!strcmp(argv[i], "thread"))
			threaded = 1;
		else if (!strcmp(argv[i], "core")) {
			struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
			setrlimit(RLIMIT_CORE, &rl);
		} else if (!strcmp(argv[i], "storm")) {
			signal(SIGSEGV, on_fault_return);
			signal(SIGBUS, on_fault_return);
		}
		else if (!strcmp(argv[i], "loop"))
			times = 50;
	}
	prepare_bus();
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "gate")) {
			char c;
			printf("pid=%d\n", (int)getpid());
			fflush(stdout);
			if (read(0, &c, 1) != 1)
				die("gate");
		}
	}
	if (!forked) {
		run(argv[1], inrp, times, threaded);
		for (int i = 3; i < argc; i++) {
			char c;
			if (!strcmp(argv[i], "gate") && read(0, &c, 1) != 1)
				die("gate");
		}
		return 0;
	}
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		run(argv[1], inrp, times, threaded);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid)
		die("waitpid");
	printf("worker=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return 0;
}
