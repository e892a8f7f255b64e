/* useparse: links libparse.so (-lparse, rpath); the rescue point
 * parse_header is in the library.
 *
 *   useparse validate|fault N EVERY
 */
#include "libparse.h"
#include "parse_driver.h"

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: useparse validate|fault N EVERY\n");
		return 2;
	}
	return drive(parse_header, parse_count, !strcmp(argv[1], "validate"), atoi(argv[2]), atoi(argv[3]));
}
