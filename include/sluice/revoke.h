/*
 * revoke: what an operator or a service asks to end now — the streams of
 * one principal (logout, ban) or on one subject (permission change) —
 * read from the admin listener's query or a NATS control message.
 *
 * A revocation reaches every worker as mail (worker.h); each ends its
 * matching streams with a final `event: revoked` whose data is the
 * reason, and drops the matching cached callout decisions so that the
 * next reconnect is authorized afresh.
 *
 * Control message (the NATS body; the admin query has the same names):
 *   {"principal": "user-42", "subject": "orders.>", "reason": "logout"}
 * principal and/or subject (at least one); a stream matches when its
 * principal is the one named, or one of its subjects overlaps subject
 * (NATS wildcards on both sides). reason is optional (default
 * "revoked"), at most REVOKE_REASON_MAX bytes, one line.
 */
#ifndef SLUICE_REVOKE_H
#define SLUICE_REVOKE_H

#include <stddef.h>

#define REVOKE_REASON_MAX 200

struct revoke {
    char *principal; /* NULL: any */
    char *subject;   /* NULL: any; a valid subject, wildcards allowed */
    char *reason;    /* never NULL once parsed: printable ASCII, one line */
};

/*
 * From a JSON object (len bytes). 0 with *out filled (dispose it), or
 * ERR_INVALID with *why a static reason and nothing to dispose.
 */
int revoke_from_json(const char *data, size_t len, struct revoke *out, const char **why);
/* From a query string (the bytes after '?'; percent-encoded), the same rules. */
int revoke_from_query(const char *query, size_t len, struct revoke *out, const char **why);
/* A heap copy of r (for mail to one worker). */
struct revoke *revoke_copy(const struct revoke *r);
void revoke_dispose(struct revoke *r);
/* revoke_dispose() and free(); NULL is a no-op. */
void revoke_free(struct revoke *r);

#endif
