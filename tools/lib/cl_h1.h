/*
 * cl_h1: the client programs' one HTTP/1.1 response parser: the response
 * head, then the body framed by chunked transfer coding, Content-Length,
 * or the connection's end. Incremental and pure (no I/O): the caller
 * feeds what it reads, in any pieces, and gets callbacks.
 *
 * Bytes flow: head bytes gather in `head` (up to head_max) until a blank
 * line (CRLF or bare LF line ends) -> status line and header fields are
 * parsed, on_status/on_header/on_head called -> 1xx heads are skipped, 204
 * and 304 have no body -> body bytes go to on_body as they arrive; chunk
 * size lines, chunk ends and trailers are gathered in `line` (4 KiB at
 * most) -> the response is done. The parser stops at the end of one
 * response and leaves the bytes after it to the caller, who decides:
 * ignore them, or cl_h1_reset() and feed them as the next response.
 *
 * Rejected alternative: picohttpparser-style "parse the whole head
 * again per read". The gateway streams for hours; the head is parsed
 * once, and the body path copies nothing.
 */
#ifndef SLUICE_CL_H1_H
#define SLUICE_CL_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cl_buf.h"

/* Errors cl_h1_feed() returns; cl_h1_strerror() names them. */
#define CL_H1_E_HEAD_SIZE (-1)  /* the head is longer than head_max */
#define CL_H1_E_HEAD (-2)       /* malformed status line */
#define CL_H1_E_LINE_SIZE (-3)  /* a chunk-size or trailer line over 4 KiB */
#define CL_H1_E_CHUNK_END (-4)  /* chunk data not followed by CRLF */
#define CL_H1_E_CHUNK_SIZE (-5) /* no hex digit in a chunk-size line */

#define CL_H1_LINE_MAX 4096

/* Every callback may be NULL; none may feed or reset the parser. */
struct cl_h1_callbacks {
    /* A head's status line was parsed (1xx heads too), before its headers. */
    void (*on_status)(void *ctx, int status);
    /* One header field; value without surrounding blanks. */
    void (*on_header)(void *ctx, int status, const char *name, size_t nlen, const char *value,
                      size_t vlen);
    /* The head is complete (1xx heads too). */
    void (*on_head)(void *ctx, int status);
    /* Body bytes, de-chunked. */
    void (*on_body)(void *ctx, const char *data, size_t len);
};

enum cl_h1_state {
    CL_H1_HEAD,
    CL_H1_BODY_LEN,
    CL_H1_BODY_EOF,
    CL_H1_CHUNK_SIZE,
    CL_H1_CHUNK_DATA,
    CL_H1_CHUNK_END,
    CL_H1_TRAILERS,
    CL_H1_DONE
};

struct cl_h1 {
    const struct cl_h1_callbacks *cb; /* borrowed */
    void *ctx;
    size_t head_max; /* bytes */
    enum cl_h1_state state;
    int status;         /* of the last head; 0 before one */
    struct cl_buf head; /* the head so far; head_max at most */
    struct cl_buf line; /* a chunk-size or trailer line split across pieces */
    uint64_t remaining; /* bytes left in the body (BODY_LEN) or chunk (CHUNK_DATA) */
};

/* A parser waiting for a response head; cb and ctx are borrowed. */
void cl_h1_init(struct cl_h1 *h, const struct cl_h1_callbacks *cb, void *ctx, size_t head_max);
/*
 * Parses up to n bytes. Returns how many it consumed: all of them, or
 * fewer when the response completed (then cl_h1_done() is true and the
 * rest belongs to whatever follows). A negative CL_H1_E_* on a malformed
 * response; the parser is then unusable until cl_h1_reset().
 */
ssize_t cl_h1_feed(struct cl_h1 *h, const char *s, size_t n);
/* The connection ended: true when that completes the response (a body
 * delimited by the close), false when it cuts the response short. */
bool cl_h1_eof(struct cl_h1 *h);
/* Whether the response is complete. */
bool cl_h1_done(const struct cl_h1 *h);
/* Waits for the next response head (keep-alive). */
void cl_h1_reset(struct cl_h1 *h);
/* Frees the buffers; the parser waits for a head again. */
void cl_h1_dispose(struct cl_h1 *h);
/* A message for a CL_H1_E_* code. */
const char *cl_h1_strerror(int err);

#endif
