/* nested: two rescue points, outer() calls inner().
 *
 *   nested STEP...        STEP is none, inner or outer
 *
 * For each step (numbered from 1) the globals are reset, outer(STEP) runs
 * and the program prints STEPNO.outer_rc, STEPNO.inner_rc and the three
 * marks outer_before (written by outer before calling inner),
 * inner_written (written by inner) and outer_after (written by outer after
 * inner returned). inner faults when STEP is "inner", outer faults after
 * inner returned when STEP is "outer". The manifest gives outer -1 and
 * inner -2.
 */
#include "common.h"

enum where { W_NONE, W_INNER, W_OUTER };

int g_outer_before, g_inner_written, g_outer_after;
int g_inner_rc;

RESCUE_POINT int inner(int fault)
{
	g_inner_written = 1;
	if (fault)
		crash_null();
	return 0;
}

RESCUE_POINT int outer(int where)
{
	g_outer_before = 1;
	g_inner_rc = inner(where == W_INNER);
	g_outer_after = 1;
	if (where == W_OUTER)
		crash_null();
	return 0;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		int where;
		if (!strcmp(argv[i], "none"))
			where = W_NONE;
		else if (!strcmp(argv[i], "inner"))
			where = W_INNER;
		else if (!strcmp(argv[i], "outer"))
			where = W_OUTER;
		else {
			fprintf(stderr, "nested: unknown step %s\n", argv[i]);
			return 2;
		}
		g_outer_before = g_inner_written = g_outer_after = 0;
		g_inner_rc = 99; /* "inner never returned" */
		int rc = outer(where);
		printf("%d.outer_rc=%d\n%d.inner_rc=%d\n%d.outer_before=%d\n%d.inner_written=%d\n%d.outer_after=%d\n",
		       i, rc, i, g_inner_rc, i, g_outer_before, i, g_inner_written, i, g_outer_after);
	}
	return 0;
}
