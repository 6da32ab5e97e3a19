/*
 * subject: NATS subject validation, wildcard matching and permission cover
 * (pure).
 *
 * A subject is tokens separated by '.'; a pattern may use '*' for exactly
 * one token and '>' as its last token for one or more. Tokens are never
 * empty and hold no whitespace or control characters.
 */
#ifndef SLUICE_SUBJECT_H
#define SLUICE_SUBJECT_H

#include <stdbool.h>
#include <stddef.h>

#define SUBJECT_MAX_LEN 255

/*
 * True when s (len bytes, no NUL needed) is a valid subject or, when
 * wildcards is set, pattern. On false, *reason (if reason is not NULL)
 * points at a static one-line explanation.
 */
bool subject_valid(const char *s, size_t len, bool wildcards, const char **reason);
/* True when the literal subject matches pattern. Both must be valid. */
bool subject_match(const char *pattern, const char *subject);
/*
 * True when every subject that request can match is also matched by grant:
 * "orders.>" covers "orders.*", "orders.*" does not cover "orders.>".
 */
bool subject_covers(const char *grant, const char *request);
/* True when some literal subject is matched by both patterns ("a.*" and "*.b" do). */
bool subject_overlaps(const char *a, const char *b);

#endif
