/*
 * ds: the pure parts of the Durable Streams protocol route (src/proto/ds.c
 * serves it): a stream path turned into one safe NATS subject token, the
 * offsets, the request headers the protocol defines and their strict
 * parsers, and the cursor rule. No I/O; every input here comes from a
 * stranger's request.
 *
 * Offsets are JetStream stream sequences written as 16 zero-padded
 * decimal digits, so they sort as strings the way the sequences sort as
 * numbers, and never collide with the sentinels "-1" and "now".
 */
#ifndef SLUICE_DS_H
#define SLUICE_DS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_OFFSET_LEN 16
#define DS_PATH_MAX 256       /* decoded bytes of a stream path (below the base path) */
#define DS_TOKEN_MAX (3 * DS_PATH_MAX) /* its escaped subject token */
#define DS_HEADER_MAX 256     /* bytes of one kept protocol header's value */
#define DS_JS_INT_MAX 9007199254740991ULL /* 2^53 - 1: producer epochs and sequences */

/*
 * The subject token for stream path p (n bytes, still percent-encoded as
 * it came in the URL, without query). Every byte outside [A-Za-z0-9_-]
 * becomes "~XX" (upper-case hex), so no path yields '.', '*', '>', '$',
 * whitespace or an empty token. Writes a NUL-terminated token to out
 * (DS_TOKEN_MAX + 1 bytes). 0, or ERR_INVALID (empty, a NUL, a bad
 * percent escape, an empty segment, "." or ".." segment) or ERR_LIMIT
 * (decoded longer than DS_PATH_MAX).
 */
int ds_path_token(const char *p, size_t n, char *out);

enum ds_offset_kind {
    DS_OFFSET_SEQ,   /* a sequence: read what comes after it */
    DS_OFFSET_START, /* "-1" or absent: from the beginning */
    DS_OFFSET_NOW,   /* "now": from the tail, nothing old */
};

/* Writes seq as an offset into out (DS_OFFSET_LEN + 1 bytes). */
void ds_offset_format(uint64_t seq, char *out);
/*
 * Parses an offset (n bytes); 0 with *kind and *seq (0 unless
 * DS_OFFSET_SEQ), or ERR_INVALID. "-1" and the reference server's
 * "0000000000000000_0000000000000000" are the start.
 */
int ds_offset_parse(const char *s, size_t n, enum ds_offset_kind *kind, uint64_t *seq);

/*
 * A strict non-negative decimal (no sign, no leading zero unless "0", no
 * space) not above max; 0 with *out, or ERR_INVALID.
 */
int ds_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out);
/* Whether a Stream-Closed value means closed: exactly "true", any case. */
bool ds_is_true(const char *s, size_t n);

/* The protocol's request headers as one request sent them (kept by request.c). */
struct ds_headers {
    char content_type[DS_HEADER_MAX + 1];
    char ttl[DS_HEADER_MAX + 1];
    char expires_at[DS_HEADER_MAX + 1];
    char stream_seq[DS_HEADER_MAX + 1];
    char producer_id[DS_HEADER_MAX + 1];
    char producer_epoch[DS_HEADER_MAX + 1];
    char producer_seq[DS_HEADER_MAX + 1];
    char if_none_match[DS_HEADER_MAX + 1];
    char forked_from[DS_HEADER_MAX + 1];
    char fork_offset[DS_HEADER_MAX + 1];
    char fork_sub_offset[DS_HEADER_MAX + 1];
    bool has_fork_offset, has_fork_sub_offset;
    bool has_content_type, has_ttl, has_expires_at, has_stream_seq, has_if_none_match;
    bool has_producer_id, has_producer_epoch, has_producer_seq, has_fork;
    bool closed;   /* Stream-Closed: true */
    bool too_long; /* a value over DS_HEADER_MAX: 400 */
};

/*
 * Keeps header name (lower case, nlen bytes) if it is one of the
 * protocol's; true when it was (value longer than DS_HEADER_MAX sets
 * too_long). False for any other name.
 */
bool ds_header(struct ds_headers *h, const char *name, size_t nlen, const char *value,
               size_t vlen);

struct ds_producer {
    const char *id; /* points into the headers */
    uint64_t epoch, seq;
};

/*
 * The producer of h: 0 with none (*has false), 0 with *p filled (*has
 * true), or ERR_INVALID (only some of the three, an empty id, a value
 * that is not an integer up to 2^53 - 1): answer 400.
 */
int ds_producer_parse(const struct ds_headers *h, struct ds_producer *p, bool *has);

/*
 * The media type of a Content-Type value, lower-cased, parameters and
 * spaces dropped, into out (outsz bytes); "application/octet-stream" for
 * an empty one. Returns its length, or ERR_INVALID when it has no '/' or
 * holds a control byte or is too long.
 */
int ds_media_type(const char *ct, char *out, size_t outsz);
/* Whether a stream of media type mt is JSON mode. */
bool ds_is_json(const char *mt);
/* Whether SSE carries a stream of media type mt as text (else base64). */
bool ds_sse_text(const char *mt);

/*
 * The Stream-Cursor for a live answer at now_s (seconds since 1970):
 * the 20-second interval number since 2024-10-09T00:00:00Z, or, when the
 * client's cursor (NULL: none) is not below it, the client's plus 1 to
 * 180 intervals (rnd picks), so that cursors never go back.
 */
uint64_t ds_cursor(int64_t now_s, const char *client, size_t clen, uint32_t rnd);

/*
 * A query parameter key's value in query q (n bytes, no '?'), still
 * encoded; true with *v and *vlen when present.
 */
bool ds_query(const char *q, size_t n, const char *key, const char **v, size_t *vlen);

/*
 * The JetStream stream list (jetstream-streams: comma-separated, "*" or
 * "") with stream added unless it is there or the list is "*"; malloc'ed.
 */
char *ds_jetstream_list(const char *list, const char *stream);

struct ds_span {
    size_t off, len;
};

/*
 * The JSON-mode messages of a body s (n bytes) that is valid JSON (the
 * caller has checked): a top-level array gives its elements (one level
 * flattened), anything else itself, each trimmed of white space. Fills at
 * most max spans; returns how many there are (more than max: the caller
 * refuses), 0 for an empty array, or ERR_INVALID when s is not one JSON
 * value as far as the scan can tell.
 */
long ds_json_split(const char *s, size_t n, struct ds_span *out, size_t max);

#endif
