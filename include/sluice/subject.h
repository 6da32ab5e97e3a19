/*
 * subject: NATS subject validation, wildcard matching and permission cover
 * (pure).
 *
 * A subject is tokens separated by '.'; a pattern may use '*' for exactly
 * one token and '>' as its last token for one or more. Tokens are never
 * empty and hold no whitespace or control characters.
 *
 * Reserved subjects are NATS's own: a first token that starts with '$'
 * ($JS.API for JetStream's API, $SYS, $KV …) or is exactly "_INBOX"
 * (request replies, among them the gateway's own JetStream replies and
 * consumer deliveries). Clients reach them only through the operator's
 * allow-list, and no wildcard first token ever covers them: NATS's own
 * '>' and '*' do match "$JS.API.X", so the bus also drops such messages
 * from patterns that are not themselves reserved.
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
 * A reserved request is covered only by a grant whose first token is
 * reserved too: ">" and "*.>" never cover "$JS.API.X" or "_INBOX.x".
 */
bool subject_covers(const char *grant, const char *request);
/*
 * True when s (NUL-terminated subject or pattern) is reserved: its first
 * token starts with '$' or is "_INBOX". A wildcard first token is not
 * reserved ("_INBOXES" and "a.$b" are not either). Only the first token is
 * read, so this is cheap enough for every message.
 */
bool subject_reserved(const char *s);
/*
 * True when request may be served by the allow-list: it is not reserved,
 * or some pattern of list ("PATTERN,PATTERN", may be "" or NULL) covers it.
 */
bool subject_allowed(const char *list, const char *request);
/*
 * Checks an allow-list for the config: every entry a valid pattern with a
 * reserved, literal first token (a wildcard first token would let a
 * client's '>' reach NATS's own subjects). On false, *reason is static.
 */
bool subject_allow_list_valid(const char *list, const char **reason);
/* True when some literal subject is matched by both patterns ("a.*" and "*.b" do). */
bool subject_overlaps(const char *a, const char *b);

#endif
