#ifndef LIBPARSE_H
#define LIBPARSE_H
/* Parses "Name: value"; returns a small positive hash of it, or crashes on a
 * line without a colon (the bug). */
int parse_header(const char *line);
/* How many headers parse_header has parsed (state inside the library). */
long parse_count(void);
#endif
