/* dlparse: dlopen()s libparse.so after start and calls parse_header through
 * dlsym, so the rescue point can only be resolved once the library is
 * loaded.
 *
 *   dlparse LIBPATH validate|fault N EVERY
 */
#include "parse_driver.h"

#include <dlfcn.h>

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: dlparse LIBPATH validate|fault N EVERY\n");
		return 2;
	}
	/* some work before the library is there */
	uint64_t h = FNV_INIT;
	for (int i = 0; i < 1000; i++)
		h = fnv1a(h, &i, sizeof i);
	escape(&h);

	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlparse: %s\n", dlerror());
		return 100;
	}
	int (*parse)(const char *) = (int (*)(const char *))dlsym(lib, "parse_header");
	long (*count)(void) = (long (*)(void))dlsym(lib, "parse_count");
	if (!parse || !count) {
		fprintf(stderr, "dlparse: %s\n", dlerror());
		return 100;
	}
	return drive(parse, count, !strcmp(argv[2], "validate"), atoi(argv[3]), atoi(argv[4]));
}
