/*
 * reply: what names a request stream — its id, its owner tag, its reply
 * and cancel subjects — and the request-route table and the header
 * allow-list (src/proto/reply.c, prefix reply_).
 *
 * A POST to a request route starts a stream whose id is 128 bits from the
 * kernel's CSPRNG (getrandom), 32 hex digits, and whose owner tag is the
 * first 64 bits of HMAC-SHA256(request-secret-file's key, principal), 16
 * hex digits. The reply subject is <reply-prefix>.<tag>.<id>, the cancel
 * subject <cancel-prefix>.<tag>.<id>, and the URL /streams/r/<tag>.<id>.
 * Any gateway with the same key can tell whether a reader is the owner
 * without shared state: it computes the reader's tag and compares
 * (constant time). The id, not the tag, is the secret: the tag only binds
 * the id to one principal, so a leaked URL is useless to another one.
 * Rejected: the principal in clear in the subject (principals can hold
 * any byte, and URLs leak to logs), and a registry of owners in NATS (a
 * round trip and a store for every read).
 *
 * The key is loaded once at start-up (reply_init()) and read-only after.
 */
#ifndef SLUICE_REPLY_H
#define SLUICE_REPLY_H

#include <stdbool.h>
#include <stddef.h>

struct config;

#define REPLY_ID_LEN 32  /* hex digits of a stream id */
#define REPLY_TAG_LEN 16 /* hex digits of an owner tag */
#define REPLY_PREFIX_MAX 128

/*
 * Checks the request-stream settings (routes, prefixes, header names)
 * and loads request-secret-file. 0, or ERR_INVALID / ERR_IO with a reason.
 */
int reply_init(const struct config *c, char *err, size_t errlen);
/* Forgets the key. */
void reply_shutdown(void);

/*
 * The service subject of the request-route whose path is exactly path
 * (plen bytes, no query) in routes ("PATH SUBJECT,PATH SUBJECT"), copied
 * into subject (cap bytes). Returns the route's index in the list, or -1
 * when no route has that path.
 */
int reply_route_find(const char *routes, const char *path, size_t plen, char *subject,
                     size_t cap);
/* The PATH of request-route number index in routes, into out; false past the last. */
bool reply_route_path(const char *routes, int index, char *out, size_t cap);
/* A fresh stream id: REPLY_ID_LEN lower-case hex digits and a NUL. 0 or ERR_IO. */
int reply_new_id(char out[REPLY_ID_LEN + 1]);
/* principal's owner tag (principal "" for anonymous): REPLY_TAG_LEN hex digits and a NUL. */
void reply_owner_tag(const char *principal, char out[REPLY_TAG_LEN + 1]);
/* True when tag (REPLY_TAG_LEN bytes) is principal's; constant time. */
bool reply_owner_is(const char *tag, const char *principal);
/* Whether name (nlen bytes, lower case) is in the comma-separated list (any case). */
bool reply_header_listed(const char *list, const char *name, size_t nlen);
/*
 * True when value (n bytes) may travel as a NATS header value: no CR, LF
 * or NUL (each would end or forge a header line).
 */
bool reply_header_value_ok(const char *value, size_t n);

#endif
