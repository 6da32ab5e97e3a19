/*
 * json: writing JSON strings (pure). sluice only ever writes JSON it shapes
 * itself (access log lines, long-poll answers), so escaping is all it needs;
 * tokens are read with jansson inside auth. Not named json_string: jansson
 * exports that name, and a definition here would shadow it for every caller
 * in the process (jansson's own included).
 */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stddef.h>

#include "sluice/buf.h"

/*
 * Appends s (len bytes) as a quoted JSON string: quote, backslash and
 * control bytes escaped; bytes that are not valid UTF-8 become U+FFFD, so
 * the output is always valid JSON whatever a payload holds.
 */
void json_put_string(struct buf *out, const char *s, size_t len);

#endif
