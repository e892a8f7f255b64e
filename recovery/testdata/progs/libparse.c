/* libparse.so: a header parser with a bug, as a shared library.
 * Built with -shared -fPIC; the rescue point is parse_header. */
#include "libparse.h"

#include <string.h>

static long g_parsed;
static unsigned long g_hash_state = 5381;

__attribute__((noipa)) int parse_header(const char *line)
{
	g_parsed++;
	const char *colon = strchr(line, ':');
	size_t name_len = (size_t)(colon - line);
	const char *v = colon + 1; /* the bug: no check for a missing colon */
	while (*v == ' ')          /* reads address 0x1 when colon is NULL */
		v++;
	unsigned long h = g_hash_state;
	for (const char *p = v; *p; p++)
		h = h * 33 + (unsigned char)*p;
	g_hash_state = h;
	return (int)((name_len * 131 + strlen(v) + (h & 0xff)) & 0x7fff);
}

long parse_count(void)
{
	return g_parsed;
}
