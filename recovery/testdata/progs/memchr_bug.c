/* memchr_bug.so: a memchr with a bug, preloaded into a real server
 * (TestE2ELighttpd). Called from lighttpd's header processing
 * (http_request_headers_process) on a buffer holding "crashme", it
 * dereferences NULL; everywhere else it is memchr. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

void *memchr(const void *s, int c, size_t n)
{
	const unsigned char *p = s;
	Dl_info di;

	if (dladdr(__builtin_return_address(0), &di) && di.dli_sname &&
	    strcmp(di.dli_sname, "http_request_headers_process") == 0)
		for (size_t i = 0; i + 7 <= n; i++)
			if (p[i] == 'c' && memcmp(p + i, "crashme", 7) == 0)
				*(volatile int *)0 = 1;
	for (size_t i = 0; i < n; i++)
		if (p[i] == (unsigned char)c)
			return (void *)(p + i);
	return NULL;
}
