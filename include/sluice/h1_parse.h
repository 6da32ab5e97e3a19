/*
 * h1: strict, bounded HTTP/1.1 request heads and chunked bodies (pure: no
 * I/O, no allocation, no library headers; src/core/h1_parse.c, prefix h1_).
 *
 * The connection layer appends received bytes to its own buffer and calls
 * h1_parse() with the whole buffered head each time; the parser answers
 * "need more" (ERR_AGAIN), "done" (0, with the head's length so that a
 * pipelined request follows it) or an error carrying the status to answer
 * (400, 413, 414, 431, 501, 505) and a one-line reason. A request body is
 * read through h1_body_read() (Content-Length bytes as they are, or chunked
 * through h1_chunked_decode()) whether the caller keeps it or drops it: the
 * next request starts only where the body's framing ends.
 *
 * The parser keeps its place between calls (the start of the line it has
 * not finished and how far into that line it has looked), so a head that
 * arrives one byte per read costs O(head) in total, not O(head^2).
 * Positions are kept as offsets, never pointers, so the caller may move or
 * grow its buffer between calls; the slices of the finished request point
 * into the buffer given to the call that returned 0.
 * Rejected alternative: re-parsing the whole head on every call (simpler,
 * but a client dribbling a 16 KiB head byte by byte would cost 128 M byte
 * visits per request).
 *
 * Every verdict depends only on the bytes before the point where it is
 * reached, scanned in order, so feeding a request in any number of pieces
 * gives exactly the result of feeding it at once (the fuzz target checks
 * this).
 *
 * Strictness (RFC 9112 plus request-smuggling defences), each a 400 unless
 * noted:
 *   - lines end in CRLF only: a bare CR or a bare LF anywhere in the head
 *     is refused (RFC 9112 lets a recipient accept a bare LF; two parsers
 *     that disagree on line ends is how smuggling starts, so we do not);
 *   - empty lines before the request line are skipped (they count towards
 *     the head limit);
 *   - request line: method SP request-target SP HTTP-version with single
 *     spaces; the method is a token; the version is exactly HTTP/1.0 or
 *     HTTP/1.1 (any other well-formed HTTP/x.y is 505); CONNECT is 501;
 *   - request-target: origin-form ("/path?query", visible ASCII except
 *     '#'), "*" for OPTIONS only, or absolute-form "http://authority/path"
 *     (also https), which RFC 9112 says servers must accept: it is reduced
 *     to path and query, its authority replaces Host, and one with user
 *     info, an empty authority, or a query but no path is refused;
 *   - header lines: a token name directly followed by ':' (no whitespace,
 *     no empty name); values hold no control character but HTAB (obs-text,
 *     bytes >= 0x80, is kept); a line starting with SP or HTAB (obs-fold,
 *     or whitespace after the request line) is refused;
 *   - exactly one valid Host on HTTP/1.1, at most one on HTTP/1.0;
 *   - Content-Length is 1*DIGIT without overflow; repeated lines must agree;
 *     a comma list is refused;
 *   - Transfer-Encoding: not with Content-Length, not on HTTP/1.0, chunked
 *     last and once, no empty list elements; any other coding is 501;
 *   - limits: request line longer than request_line_max is 414; a head
 *     longer than head_max or more than headers_max header lines is 431.
 * An Expect other than 100-continue is ignored (RFC 9110 allows 417 but
 * does not require it), as is Expect on HTTP/1.0, which the RFC demands.
 */
#ifndef SLUICE_H1_PARSE_H
#define SLUICE_H1_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Defaults for struct h1_limits; head_max matches h2's MAX_HEADER_LIST_SIZE. */
#define H1_HEAD_MAX 16384         /* bytes of head, leading empty lines and final CRLF included */
#define H1_HEAD_MAX_LIMIT 1048576 /* the largest head_max accepted (offsets are 32-bit) */
#define H1_REQUEST_LINE_MAX 8192  /* bytes of request line, CRLF excluded */
#define H1_HEADERS_MAX 64         /* header lines; also the size of the array */

/* Bounds of the chunked decoder beyond the body limit. */
#define H1_CHUNK_SIZE_CHARS_MAX 64 /* bytes of chunk-size and BWS on one line (leading zeros) */
#define H1_CHUNK_EXT_MAX 4096      /* bytes of chunk extensions in one body, all chunks */
#define H1_TRAILERS_MAX 8192       /* bytes of the trailer section */

/* Bytes of the caller's buffer; not NUL-terminated. p == NULL means absent. */
struct h1_str {
    const char *p;
    size_t len;
};

struct h1_header {
    struct h1_str name;  /* a token, case as sent */
    struct h1_str value; /* leading and trailing SP/HTAB removed; may be empty */
};

enum h1_body {
    H1_BODY_NONE,    /* neither Content-Length nor Transfer-Encoding: no body */
    H1_BODY_LENGTH,  /* content_length bytes follow the head */
    H1_BODY_CHUNKED, /* chunked; decode with h1_chunked_decode() */
};

/*
 * A parsed request head. Every slice points into the caller's buffer (the
 * one passed to the h1_parse() call that returned 0) except target, which
 * is the static "/" for an absolute-form target without a path. The caller
 * owns the struct and keeps the buffer alive while it uses the slices.
 */
struct h1_request {
    struct h1_str method;    /* a token, case-sensitive, e.g. "GET" */
    struct h1_str target;    /* "/path?query" as sent (not decoded), or "*" (OPTIONS) */
    struct h1_str authority; /* of an absolute-form target; p == NULL otherwise */
    struct h1_str host;      /* authority if absolute-form, else Host; p == NULL if absent */
    int minor;               /* HTTP/1.<minor>: 0 or 1 */
    enum h1_body body;
    uint64_t content_length; /* bytes; set when body == H1_BODY_LENGTH, else 0 */
    bool keep_alive;         /* the version's default, changed by Connection close/keep-alive */
    bool expect_continue;    /* Expect: 100-continue on HTTP/1.1 */
    /* The Upgrade header when Connection lists "upgrade"; p == NULL otherwise. */
    struct h1_str upgrade;
    /*
     * An h2c upgrade (RFC 7540 3.2): HTTP/1.1, Upgrade lists h2c, Connection
     * lists upgrade and HTTP2-Settings, and exactly one HTTP2-Settings header,
     * whose undecoded base64url value is http2_settings.
     */
    bool upgrade_h2c;
    struct h1_str http2_settings;
    size_t head_len; /* bytes of the head, final CRLF included; the body or next request follows */
    size_t nheaders; /* <= H1_HEADERS_MAX */
    struct h1_header headers[H1_HEADERS_MAX]; /* in the order received */
};

/* Zero fields take the defaults above; larger ones are clamped to the maximum. */
struct h1_limits {
    size_t head_max;         /* bytes, <= H1_HEAD_MAX_LIMIT */
    size_t request_line_max; /* bytes */
    size_t headers_max;      /* lines, <= H1_HEADERS_MAX */
};

/* One request head being parsed. Embedded by its owner; no resources to release. */
struct h1_parser {
    /* After ERR_PROTO or ERR_LIMIT: the status to answer and a static one-line reason. */
    int status;
    const char *reason;
    /* The rest is private. */
    struct h1_limits lim;
    int state;
    size_t pos;  /* offset of the first byte of the line not yet complete */
    size_t scan; /* bytes of that line already checked; pos + scan <= the last len seen */
    size_t head_len;
    struct {
        uint32_t off, len;
    } method, target, authority, names[H1_HEADERS_MAX], values[H1_HEADERS_MAX];
    uint32_t nheaders;
    int minor;
    bool has_authority;
    bool target_root; /* absolute-form without a path: target is "/" */
};

/* Prepares p for one request head; lim may be NULL for the defaults. */
void h1_parser_init(struct h1_parser *p, const struct h1_limits *lim);

/*
 * Parses the head at the start of buf, whose first len bytes are all that
 * has arrived of this request so far. Each call must pass the same bytes as
 * the previous call plus any that arrived since (the buffer may have moved).
 * Returns:
 *   0           the head is complete; *req is filled, req->head_len bytes
 *               belong to it (never more than len);
 *   ERR_AGAIN   need more bytes (never once len reaches head_max, so a
 *               buffer of head_max bytes is always enough);
 *   ERR_PROTO   malformed or unsupported: answer p->status (400, 501, 505);
 *   ERR_LIMIT   a limit was hit: answer p->status (414, 431).
 * After an error, close the connection once the answer is sent. Calls after
 * 0 or an error return the same result. req is written only when 0 is
 * returned. Never calls back. For the next pipelined request, call
 * h1_parser_init() again and pass the bytes after the head and body.
 */
int h1_parse(struct h1_parser *p, const char *buf, size_t len, struct h1_request *req);

/* The value of the first header named name (ASCII case-insensitive), or NULL. */
const struct h1_str *h1_header(const struct h1_request *req, const char *name);
/* The first header named name after prev (NULL: from the start), or NULL; for repeated fields. */
const struct h1_header *h1_header_next(const struct h1_request *req, const char *name,
                                       const struct h1_header *prev);

/*
 * An incremental chunked-body decoder (RFC 9112 7.1). Extensions are
 * checked for control characters and skipped; trailer fields are checked
 * for shape (token ':' value) and skipped. Embedded by its owner.
 */
struct h1_chunked {
    /* After ERR_PROTO or ERR_LIMIT: the status to answer and a static one-line reason. */
    int status;
    const char *reason;
    uint64_t total; /* decoded bytes so far; <= body_max */
    /* The rest is private. */
    uint64_t body_max;
    uint64_t remaining;  /* bytes of the current chunk still to come, or its size while parsed */
    uint32_t size_chars; /* bytes of chunk-size and BWS on the current line */
    uint32_t ext_bytes;  /* bytes of extensions so far, all chunks */
    uint32_t trailer_bytes;
    int state;
};

/* Prepares c for one body of at most body_max decoded bytes. */
void h1_chunked_init(struct h1_chunked *c, uint64_t body_max);

/*
 * Decodes the next len bytes of the body from in, writing the data they
 * carry to out: at most min(len, body_max - total) bytes, so out may be the
 * caller's body buffer at offset c->total, or in itself (decoding in place;
 * out <= in is required then, as data never moves forward). Sets
 * *consumed (bytes of in used) and *produced (bytes written). Returns:
 *   0           the last chunk and the trailers are complete; the next
 *               request starts at in + *consumed;
 *   ERR_AGAIN   all of in was used and more is needed;
 *   ERR_PROTO   malformed: answer c->status (400);
 *   ERR_LIMIT   the body (413), its extensions (413) or its trailers (431)
 *               are too large: answer c->status.
 * A size line is refused as soon as its size passes the body limit, before
 * any of the chunk's data arrives. Calls after 0 or an error consume nothing
 * and return the same result. Never calls back.
 */
int h1_chunked_decode(struct h1_chunked *c, const char *in, size_t len, size_t *consumed, char *out,
                      size_t *produced);

/*
 * A request body being read, whatever its framing: Content-Length bytes as
 * they are, or chunked through h1_chunked_decode(). The same reader serves
 * a body that is kept (a publish) and one that is dropped (every other
 * route), so that both end at the byte the framing says and the next
 * request starts there, never inside a body. Embedded by its owner.
 */
struct h1_body_reader {
    /* After ERR_PROTO or ERR_LIMIT: the status to answer and a static one-line reason. */
    int status;
    const char *reason;
    uint64_t total; /* body bytes so far (decoded); <= body_max */
    /* The rest is private. */
    enum h1_body kind;
    uint64_t left; /* H1_BODY_LENGTH: bytes still to come */
    struct h1_chunked chunked;
};

/*
 * Prepares b for the body of req (H1_BODY_NONE: an empty body). Returns 0,
 * or ERR_LIMIT (b->status 413) when Content-Length is larger than body_max:
 * then nothing of the body should be read, and the connection cannot go
 * on after the response.
 */
int h1_body_reader_init(struct h1_body_reader *b, const struct h1_request *req,
                        uint64_t body_max);

/*
 * Reads the next len bytes of the body from in, as h1_chunked_decode()
 * does (out may be in itself, or a buffer with room for min(len, body_max -
 * total) bytes). Returns 0 when the body is complete (the next request
 * starts at in + *consumed; an empty body completes with len 0), ERR_AGAIN
 * when all of in was used and more is needed, ERR_PROTO or ERR_LIMIT as
 * h1_chunked_decode(). Calls after 0 or an error consume nothing and return
 * the same result. Never calls back.
 */
int h1_body_read(struct h1_body_reader *b, const char *in, size_t len, size_t *consumed, char *out,
                 size_t *produced);

/* The reason phrase for status ("Bad Request"), or "Unknown" for one we never send. */
const char *h1_status_text(int status);

/*
 * Writes a response head to out: "HTTP/1.1 <status> <phrase>\r\n", then
 * "name: value\r\n" for each pair in fields (name, value, name, value, ...,
 * NULL), then "\r\n". Returns the bytes written, ERR_LIMIT when they do not
 * fit in cap, or ERR_INVALID when status is outside 100..999 or a name is
 * not a token or a value holds CR, LF or another control character (which
 * would let a value split the response). out is unspecified after an error.
 */
int h1_format_head(char *out, size_t cap, int status, const char *const *fields);

#endif
