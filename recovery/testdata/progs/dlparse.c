/* dlparse: dlopen()s libparse.so after start and calls parse_header through
 * dlsym, so the rescue point can only be resolved once the library is
 * loaded.
 *
 *   dlparse LIBPATH validate|fault N EVERY [reload]
 *
 * reload: load the library, call parse_header once, dlclose it (checked
 * gone from /proc/self/maps: reloaded=1), then load it again for the run.
 */
#include "parse_driver.h"

#include <dlfcn.h>

/* mapped reports whether a file of that name is mapped. */
static int mapped(const char *name)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4096];
	int found = 0;
	if (!f)
		die("maps");
	while (fgets(line, sizeof line, f))
		if (strstr(line, name))
			found = 1;
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	if (argc != 5 && !(argc == 6 && !strcmp(argv[5], "reload"))) {
		fprintf(stderr, "usage: dlparse LIBPATH validate|fault N EVERY [reload]\n");
		return 2;
	}
	/* some work before the library is there */
	uint64_t h = FNV_INIT;
	for (int i = 0; i < 1000; i++)
		h = fnv1a(h, &i, sizeof i);
	escape(&h);

	if (argc == 6) {
		void *first = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
		int (*p1)(const char *) = first ? (int (*)(const char *))dlsym(first, "parse_header") : NULL;
		if (!p1 || p1("Host: example") < 0 || dlclose(first)) {
			fprintf(stderr, "dlparse: first load: %s\n", dlerror());
			return 100;
		}
		printf("reloaded=%d\n", !mapped("libparse.so"));
	}
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
