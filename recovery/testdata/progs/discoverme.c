/* discoverme: a small single-threaded TCP server on 127.0.0.1 whose
 * functions are each kind of candidate `assure discover` must tell apart
 * (TestE2EDiscover).
 *
 *   discoverme PORTFILE
 *       writes "port=N\npid=P\n" to PORTFILE once it listens, then serves
 *       one connection at a time, one request per line:
 *         SET key value   "+OK"        GET key   the value, or "-NOKEY"
 *       anything else "-ERR". A request handle_line fails gets "-ERR".
 *
 * Called per request, by handle_line (error value -1), in this order:
 *   check_storage  -1: the caller exits (status 3): not a rescue point
 *   parse_request  -1: the request is refused: a good rescue point
 *   reserve_slot   -1: the caller keeps 8 MiB it touched (a leak per
 *                  failure), then goes on: not a rescue point
 *   find_entry     NULL: "-NOKEY" (GET) or "-ERR" (SET): a good one
 *   open_journal   -1 (SET only): the caller turns writes off for good,
 *                  every later SET fails: not a rescue point
 * load_config (-1: the server exits) runs once, before the first request:
 * never on the request path. log_line is void.
 */
/* Only kv.h's socket helpers are used here. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "kv.h"

#include <sys/stat.h>

#define ENTRIES 16
#define LEAK_BYTES (8 << 20)

struct entry {
	char key[32];
	char value[32];
};

static struct entry g_entries[ENTRIES];
static int g_journal_off, g_config_loaded, g_storage_fd = -1;
static void *g_leaks[64];
static int g_nleaks;

NOINLINE int load_config(void)
{
	if (getenv("DISCOVERME_NO_CONFIG"))
		return -1;
	g_config_loaded = 1;
	return 0;
}

NOINLINE int check_storage(void)
{
	struct stat st;
	if (fstat(g_storage_fd, &st) < 0)
		return -1;
	return 0;
}

NOINLINE int parse_request(char *line, char **op, char **key, char **value)
{
	*op = strtok(line, " \r\n");
	*key = strtok(NULL, " \r\n");
	*value = strtok(NULL, " \r\n");
	if (*op == NULL || *key == NULL || strlen(*key) >= 32)
		return -1;
	if (strcmp(*op, "SET") == 0 && (*value == NULL || strlen(*value) >= 32))
		return -1;
	if (strcmp(*op, "SET") != 0 && strcmp(*op, "GET") != 0)
		return -1;
	return 0;
}

NOINLINE int reserve_slot(void)
{
	int used = 0;
	for (int i = 0; i < ENTRIES; i++)
		used += g_entries[i].key[0] != 0;
	return used < ENTRIES ? 0 : -1;
}

NOINLINE struct entry *find_entry(const char *key, int create)
{
	struct entry *free_e = NULL;
	for (int i = 0; i < ENTRIES; i++) {
		if (strcmp(g_entries[i].key, key) == 0)
			return &g_entries[i];
		if (!free_e && g_entries[i].key[0] == 0)
			free_e = &g_entries[i];
	}
	if (!create || !free_e)
		return NULL;
	snprintf(free_e->key, sizeof free_e->key, "%s", key);
	return free_e;
}

NOINLINE int open_journal(void)
{
	return g_journal_off ? -1 : 0;
}

NOINLINE void log_line(const char *what)
{
	if (getenv("DISCOVERME_LOG"))
		fprintf(stderr, "%s\n", what);
}

NOINLINE int handle_line(char *line, char *reply, size_t n)
{
	char *op, *key, *value;
	if (check_storage() < 0) {
		fprintf(stderr, "discoverme: fatal: storage is gone\n");
		exit(3);
	}
	if (parse_request(line, &op, &key, &value) < 0)
		return -1;
	if (reserve_slot() < 0 && g_nleaks < 64) {
		char *p = malloc(LEAK_BYTES); /* "make room": kept for good */
		if (p) {
			memset(p, 1, LEAK_BYTES);
			g_leaks[g_nleaks++] = p;
		}
	}
	int set = strcmp(op, "SET") == 0;
	struct entry *e = find_entry(key, set);
	if (e == NULL) {
		snprintf(reply, n, set ? "-ERR\n" : "-NOKEY\n");
		return 0;
	}
	if (set) {
		if (open_journal() < 0) {
			g_journal_off = 1;
			return -1;
		}
		snprintf(e->value, sizeof e->value, "%s", value);
		snprintf(reply, n, "+OK\n");
	} else {
		snprintf(reply, n, "%s\n", e->value);
	}
	log_line(reply);
	return 0;
}

static void serve(int cfd)
{
	FILE *in = fdopen(cfd, "r");
	char line[256], reply[64];
	while (in && fgets(line, sizeof line, in)) {
		if (handle_line(line, reply, sizeof reply) < 0)
			snprintf(reply, sizeof reply, "-ERR\n");
		write_all(cfd, reply, strlen(reply));
	}
	if (in)
		fclose(in);
	else
		close(cfd);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: discoverme PORTFILE\n");
		return 2;
	}
	if (load_config() < 0) {
		fprintf(stderr, "discoverme: no configuration\n");
		return 1;
	}
	g_storage_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	signal(SIGPIPE, SIG_IGN);
	int port, lfd = kv_listen(0, &port);
	kv_write_portfile(argv[1], port);
	for (;;) {
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (cfd >= 0)
			serve(cfd);
	}
}
