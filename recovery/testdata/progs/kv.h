/* kv.h: the key-value table, its line protocol and its rescue point,
 * shared by kvthreads.c (threads of one process) and kvprefork.c (forked
 * workers over shared memory). Include it from exactly one .c file.
 *
 * Protocol, one request per line ("\n" or "\r\n"), pipelining allowed:
 *   INCR key    ":N\n", the key's new value (a new key starts at 0)
 *   GET key     ":N\n", the key's value (0 for a key never incremented)
 *   BAD kind    the request faults inside the rescue point while holding
 *               the table's lock, after incrementing the key "partial" (a
 *               half-done write a rollback must undo); the caller replies
 *               "-ERR\n" when handle_request returns -1. Kinds: segv (write
 *               through NULL), bus (read past the end of a truncated memfd
 *               mapping), fpe (integer division by zero), ill (ud2), abort,
 *               assert (a failed assert), stackchk or stack
 *               (__stack_chk_fail, what a smashed stack protector calls).
 *               An unknown kind gets "-BADKIND\n" and touches nothing.
 *               With KV_VALIDATE=1 in the environment a BAD request does
 *               the same work but is rejected instead of faulting (a
 *               native reference for the benchmark, hack/bench).
 *   STATS       ":THREADS FDS PID\n": entries of /proc/self/task and
 *               /proc/self/fd (the directory's own descriptor included)
 *               and the pid of the process that serves the connection;
 *               answered by the caller, outside the rescue point
 *   FORK        ":K\n" for the connection's K-th FORK, written by a child
 *               process the serving thread forks and reaps (outside the
 *               rescue point; "-FORK\n" if the child failed): a process
 *               made, a reply sent and a child reaped by a thread that
 *               another thread's rescue point must not undo
 * Anything else gets "-PROTO\n"; a key that is not [A-Za-z0-9_]{1,31}
 * "-KEY\n"; a full table "-FULL\n".
 *
 * The rescue point is handle_request (error value -1): it parses one line
 * and fills the reply; the socket is read and written by its callers only.
 */
#ifndef E2E_KV_H
#define E2E_KV_H

#include "common.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <sys/socket.h>

#define KV_SLOTS 64
#define KV_KEYLEN 32
#define KV_REPLY 64
#define KV_INBUF 4096
#define KV_OUTBUF 8192

struct kv_slot {
	char key[KV_KEYLEN]; /* "" for a free slot */
	long value;
};

/* The table and the counters of the callers. In kvthreads it is a static
 * of the process; in kvprefork it lives in MAP_SHARED memory and its lock
 * is process-shared and robust. */
struct kv_table {
	pthread_mutex_t lock;
	struct kv_slot slots[KV_SLOTS];
	long requests; /* lines answered (outside the rescue point, atomics) */
	long errors;   /* of which -ERR */
};

static struct kv_table *kv;

struct conn {
	int fd;
	int edge; /* registered with EPOLLET: read until EAGAIN */
	long handled; /* requests handle_request completed (inside it) */
	long forks;   /* FORK requests */
	size_t inlen, outlen;
	char in[KV_INBUF];
	char out[KV_OUTBUF];
};

/* ------------------------------------------------------------ faults */

extern void __stack_chk_fail(void);

static volatile int kv_zero;
static volatile char *kv_bus_page;

/* A page whose file has been truncated under it: reading it is SIGBUS. */
static void kv_prepare_bus(void)
{
	int fd = memfd_create("kv-bus", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 4096))
		die("memfd");
	kv_bus_page = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	if (kv_bus_page == MAP_FAILED)
		die("mmap");
	if (ftruncate(fd, 0))
		die("ftruncate");
	close(fd);
}

static const char *const kv_kinds[] = {"segv", "bus", "fpe", "ill", "abort", "assert", "stackchk", "stack"};

static int kv_kind_valid(const char *kind)
{
	for (size_t i = 0; i < sizeof kv_kinds / sizeof kv_kinds[0]; i++)
		if (!strcmp(kind, kv_kinds[i]))
			return 1;
	return 0;
}

/* Faults as kind says; returns only if the fault did not happen. */
static NOINLINE int kv_fault(const char *kind)
{
	if (!strcmp(kind, "segv"))
		crash_null();
	else if (!strcmp(kind, "bus"))
		return kv_bus_page[0];
	else if (!strcmp(kind, "fpe"))
		return 1000 / kv_zero;
	else if (!strcmp(kind, "ill"))
		__builtin_trap();
	else if (!strcmp(kind, "abort"))
		abort();
	else if (!strcmp(kind, "assert"))
		assert(kv_zero == 1);
	else if (!strcmp(kind, "stackchk") || !strcmp(kind, "stack"))
		__stack_chk_fail();
	return 0;
}

/* ------------------------------------------------------------- table */

static void kv_lock(void)
{
	int e = pthread_mutex_lock(&kv->lock);
	if (e == EOWNERDEAD) /* a worker died holding it (natively, BAD) */
		e = pthread_mutex_consistent(&kv->lock);
	if (e) {
		errno = e;
		die("pthread_mutex_lock");
	}
}

static void kv_unlock(void)
{
	pthread_mutex_unlock(&kv->lock);
}

static int kv_key_valid(const char *k)
{
	size_t n = strlen(k);
	if (n == 0 || n >= KV_KEYLEN)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = k[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
			return 0;
	}
	return 1;
}

/* The slot of key (lock held): found, created if create, or NULL. Open
 * addressing by hash of the name, linear probing. */
static struct kv_slot *kv_slot(const char *key, int create)
{
	size_t n = strlen(key);
	uint64_t h = fnv1a(FNV_INIT, key, n);
	for (int i = 0; i < KV_SLOTS; i++) {
		struct kv_slot *s = &kv->slots[(h + (uint64_t)i) % KV_SLOTS];
		if (s->key[0] == 0) {
			if (!create)
				return NULL;
			memcpy(s->key, key, n + 1);
			s->value = 0;
			return s;
		}
		if (!strcmp(s->key, key))
			return s;
	}
	return NULL;
}

static long kv_get(const char *key)
{
	kv_lock();
	struct kv_slot *s = kv_slot(key, 0);
	long v = s ? s->value : 0;
	kv_unlock();
	return v;
}

static int kv_validate;

static void kv_init(struct kv_table *t, int pshared)
{
	const char *v = getenv("KV_VALIDATE");
	kv_validate = v && !strcmp(v, "1");
	memset(t, 0, sizeof *t);
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	if (pshared) {
		pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
		pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	}
	if (pthread_mutex_init(&t->lock, &a))
		die("pthread_mutex_init");
	pthread_mutexattr_destroy(&a);
	kv = t;
}

/* ------------------------------------------------------- rescue point */

RESCUE_POINT int handle_request(struct conn *c, const char *line, char *reply)
{
	char cmd[8], arg[KV_REPLY];
	const char *sp = strchr(line, ' ');
	size_t cl = sp ? (size_t)(sp - line) : strlen(line);
	if (!sp || cl >= sizeof cmd || strlen(sp + 1) >= sizeof arg)
		return snprintf(reply, KV_REPLY, "-PROTO\n");
	memcpy(cmd, line, cl);
	cmd[cl] = 0;
	strcpy(arg, sp + 1);

	if (!strcmp(cmd, "BAD")) {
		if (!kv_kind_valid(arg))
			return snprintf(reply, KV_REPLY, "-BADKIND\n");
		kv_lock();
		struct kv_slot *p = kv_slot("partial", 1);
		if (p)
			p->value++; /* half done: the rollback must undo it */
		if (kv_validate) {
			if (p)
				p->value--;
			kv_unlock();
			return -1;
		}
		kv_fault(arg); /* with the lock held */
		if (p)
			p->value--;
		kv_unlock();
		return snprintf(reply, KV_REPLY, "-NOFAULT %s\n", arg);
	}
	if (!kv_key_valid(arg))
		return snprintf(reply, KV_REPLY, "-KEY\n");
	if (!strcmp(cmd, "INCR")) {
		kv_lock();
		struct kv_slot *s = kv_slot(arg, 1);
		long v = s ? ++s->value : 0;
		kv_unlock();
		c->handled++;
		if (!s)
			return snprintf(reply, KV_REPLY, "-FULL\n");
		return snprintf(reply, KV_REPLY, ":%ld\n", v);
	}
	if (!strcmp(cmd, "GET")) {
		long v = kv_get(arg);
		c->handled++;
		return snprintf(reply, KV_REPLY, ":%ld\n", v);
	}
	return snprintf(reply, KV_REPLY, "-PROTO\n");
}

/* ------------------------------------------------------------ callers */

/* Writes out what is buffered; a non-blocking socket that is full is
 * waited for. -1 when the peer is gone. */
static int kv_flush(struct conn *c)
{
	size_t off = 0;
	while (off < c->outlen) {
		ssize_t w = send(c->fd, c->out + off, c->outlen - off, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				struct pollfd p = {.fd = c->fd, .events = POLLOUT};
				if (poll(&p, 1, -1) < 0 && errno != EINTR)
					die("poll");
				continue;
			}
			return -1;
		}
		off += (size_t)w;
	}
	c->outlen = 0;
	return 0;
}

static int kv_put(struct conn *c, const char *s, size_t n)
{
	if (c->outlen + n > sizeof c->out && kv_flush(c) < 0)
		return -1;
	memcpy(c->out + c->outlen, s, n);
	c->outlen += n;
	return 0;
}

/* Answers every complete line in c->in; a partial line stays for the next
 * read. -1 on a line longer than the buffer or a peer gone. */
static int kv_process(struct conn *c)
{
	size_t start = 0;
	for (;;) {
		char *nl = memchr(c->in + start, '\n', c->inlen - start);
		if (!nl)
			break;
		char *line = c->in + start;
		*nl = 0;
		if (nl > line && nl[-1] == '\r')
			nl[-1] = 0;
		start = (size_t)(nl - c->in) + 1;

		char reply[KV_REPLY + 32];
		int n;
		if (!strcmp(line, "STATS")) {
			n = snprintf(reply, sizeof reply, ":%d %d %d\n", count_dir("/proc/self/task"),
				     count_dir("/proc/self/fd"), (int)getpid());
		} else if (!strcmp(line, "FORK")) {
			long k = ++c->forks;
			pid_t pid = fork();
			if (pid == 0) {
				int m = snprintf(reply, sizeof reply, ":%ld\n", k);
				_exit(write(c->fd, reply, (size_t)m) == m ? 0 : 1);
			}
			int st = 0;
			if (pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0)
				n = 0; /* the child replied */
			else
				n = snprintf(reply, sizeof reply, "-FORK\n");
		} else {
			n = handle_request(c, line, reply);
			if (n < 0) {
				n = snprintf(reply, sizeof reply, "-ERR\n");
				__atomic_add_fetch(&kv->errors, 1, __ATOMIC_SEQ_CST);
			}
		}
		__atomic_add_fetch(&kv->requests, 1, __ATOMIC_SEQ_CST);
		if (n > 0 && kv_put(c, reply, (size_t)n) < 0)
			return -1;
	}
	memmove(c->in, c->in + start, c->inlen - start);
	c->inlen -= start;
	return c->inlen == sizeof c->in ? -1 : 0;
}

/* Reads what the connection has (one read, or until EAGAIN for an
 * edge-triggered one), answers the complete lines and writes the replies.
 * 0 when the connection is done (end of file, error, protocol error). */
static int kv_conn_io(struct conn *c)
{
	for (;;) {
		ssize_t r = read(c->fd, c->in + c->inlen, sizeof c->in - c->inlen);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return 0;
		}
		if (r == 0) {
			kv_flush(c);
			return 0;
		}
		c->inlen += (size_t)r;
		if (kv_process(c) < 0)
			return 0;
		if (!c->edge)
			break;
	}
	return kv_flush(c) == 0;
}

static struct conn *kv_conn_new(int fd, int edge)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		die("calloc");
	c->fd = fd;
	c->edge = edge;
	return c;
}

/* ------------------------------------------------------------- set-up */

/* A listening TCP socket on 127.0.0.1, port chosen by the kernel. */
static int kv_listen(int nonblock, int *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 128))
		die("bind/listen");
	socklen_t l = sizeof a;
	if (getsockname(fd, (struct sockaddr *)&a, &l))
		die("getsockname");
	*port = ntohs(a.sin_port);
	return fd;
}

/* Writes "port=N\npid=P\n" to path, atomically (a temporary file renamed),
 * so that a reader sees all of it or nothing. */
static void kv_write_portfile(const char *path, int port)
{
	char tmp[4096], buf[64];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die(tmp);
	int n = snprintf(buf, sizeof buf, "port=%d\npid=%d\n", port, (int)getpid());
	write_all(fd, buf, (size_t)n);
	if (close(fd) || rename(tmp, path))
		die("rename");
}

/* Blocks SIGTERM and SIGINT (in every thread created afterwards too) and
 * returns a signalfd for them (and for the extra signal, if not 0). */
static int kv_signalfd(int extra, sigset_t *old)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGTERM);
	sigaddset(&s, SIGINT);
	if (extra)
		sigaddset(&s, extra);
	if (sigprocmask(SIG_BLOCK, &s, old))
		die("sigprocmask");
	int fd = signalfd(-1, &s, SFD_CLOEXEC);
	if (fd < 0)
		die("signalfd");
	return fd;
}

/* The final state, as key=value lines. */
static void kv_print_state(void)
{
	kv_lock();
	printf("requests=%ld\nerrors=%ld\n", kv->requests, kv->errors);
	struct kv_slot *p = kv_slot("partial", 0);
	printf("partial=%ld\n", p ? p->value : 0);
	for (int i = 0; i < KV_SLOTS; i++)
		if (kv->slots[i].key[0] && strcmp(kv->slots[i].key, "partial"))
			printf("key_%s=%ld\n", kv->slots[i].key, kv->slots[i].value);
	kv_unlock();
	fflush(stdout);
}

#endif
