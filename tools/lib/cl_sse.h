/*
 * cl_sse: the client programs' one WHATWG Server-Sent Events parser,
 * incremental: bytes arrive in whatever pieces DATA frames, chunks or
 * reads cut them into, and any split of the same bytes yields the same
 * callbacks (tests/fuzz/fuzz_cl_sse.c checks exactly that).
 *
 * Bytes flow: feed -> one leading U+FEFF dropped (it may be split) ->
 * lines cut at CRLF, LF or CR (a CR ending one piece pairs with an LF
 * starting the next) -> a line split across pieces is gathered in `line`
 * -> fields: data lines gather in `data`, event sets the type, id (without
 * NUL) the id buffer, retry and comments are passed up raw -> a blank line
 * dispatches: the last event id takes the id buffer, and an event with
 * data is handed to on_event, data without its final LF.
 *
 * Only pure C: no I/O, no library header, so it fuzzes alone. The server's
 * src/core/sse.c keeps its own whole-buffer parser for the long-poll answer
 * (rejected here: it needs the complete body and reports no comments).
 */
#ifndef SLUICE_CL_SSE_H
#define SLUICE_CL_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cl_buf.h"

/* One dispatched event; pointers are valid only during the callback. */
struct cl_sse_event {
    const char *data, *type, *id; /* type "" means "message"; id: the last event id */
    size_t data_len, type_len, id_len;
    bool has_id; /* false: no event so far carried an id field */
};

/* Every callback may be NULL. ctx is the parser's ctx. None may feed,
 * restart or release the parser it is called from. */
struct cl_sse_callbacks {
    void (*on_event)(void *ctx, const struct cl_sse_event *ev);
    void (*on_comment)(void *ctx, const char *text, size_t len); /* after the ':' */
    void (*on_retry)(void *ctx, const char *value, size_t len);  /* raw value */
};

struct cl_sse {
    const struct cl_sse_callbacks *cb; /* borrowed, static in practice */
    void *ctx;
    uint8_t bom;           /* leading BOM bytes matched; 3 once past the start */
    bool cr_pending;       /* the previous piece ended in CR: a leading LF is its pair */
    bool has_id;           /* an id field was accepted since the last restart */
    bool has_last_id;      /* a dispatch took the id buffer */
    struct cl_buf line;    /* a line split across pieces */
    struct cl_buf data;    /* data lines of the event being parsed, each + LF */
    struct cl_buf type;    /* the event type being parsed */
    struct cl_buf id_buf;  /* the id buffer */
    struct cl_buf last_id; /* the last event id */
};

/* An empty parser; cb and ctx are borrowed. */
void cl_sse_init(struct cl_sse *p, const struct cl_sse_callbacks *cb, void *ctx);
/* Parses n more bytes; calls back for every complete line's effect. */
void cl_sse_feed(struct cl_sse *p, const char *s, size_t n);
/* A new response starts: partial line, event and id buffer are dropped,
 * the last event id is kept (it is what a resume sends). */
void cl_sse_restart(struct cl_sse *p);
/* Frees the working buffers, keeping the last event id; the parser may
 * be fed again. For streams that are over but still reported. */
void cl_sse_release(struct cl_sse *p);
/* Frees everything. */
void cl_sse_dispose(struct cl_sse *p);
/* The last event id and its length, or NULL when no dispatch took one. */
const char *cl_sse_last_id(const struct cl_sse *p, size_t *len);
/* A retry value that is only ASCII digits, as milliseconds (saturating
 * at UINT32_MAX); false for anything else, which WHATWG ignores. */
bool cl_sse_retry_ms(const char *value, size_t len, uint32_t *ms);

#endif
