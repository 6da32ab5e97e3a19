/*
 * http1: the HTTP/1.1 front end (see h1_conn.h). The file is named for
 * what it is, the HTTP/1.1 connection beside h1_parse.c's parser; its
 * calls keep the http1_ prefix.
 *
 * It frames requests and their bodies and hands each request to the
 * request pipeline (request.h), which decides everything about it; the
 * pipeline's answers come back through `front` (on_respond,
 * on_start_stream) as a head of fields, serialised here with this
 * connection's own connection and transfer-encoding fields. A stream's
 * wake only marks the connection dirty: its head, a poll's answer and its
 * chunks are written by http1_fill(), never while a write is pending.
 *
 * States: reading a head; reading a publish body; streaming an SSE
 * response. Pipelined requests wait in `in` until the current response is
 * done; past a bound while a stream or poll is open, the connection is
 * closed. HTTP/1.0 gets a close-delimited SSE body (it has no chunked
 * encoding).
 *
 * Every byte the client sends is consumed or the connection ends: a
 * request body is always read through its framing (h1_body_read), kept
 * for a publish and dropped on every other route, before the next request
 * is parsed; one too large to drop (over HTTP1_DISCARD_MAX, or announced
 * with Expect: 100-continue, or malformed) is not read at all, and then
 * the response says "connection: close", the input is dropped unparsed and
 * the connection ends after the response. A body is never parsed as a
 * request (request smuggling). Rejected alternative: closing after every
 * request with a body (simplest, but a proxy that forwards a GET with a
 * small body would lose its keep-alive connection each time).
 *
 * Output is bounded: a plain response body goes into the output buffer
 * only as far as out_max leaves room, the rest waits in `rest` and is
 * written piece by piece by http1_fill(); pipelined requests are not
 * parsed while output is over its limit, and resume from http1_fill().
 *
 * Each stream chunk is written as "<hex>\r\n" + bytes + "\r\n" straight
 * from the stream queue into the output buffer, so an event is copied
 * once, as on h2.
 */
#include "sluice/h1_conn.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/h1_parse.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/request.h"
#include "sluice/stream.h"

#define CHUNK_MAX 16384           /* bytes of stream data per chunk */
#define IGNORED_INPUT_MAX 65536   /* client bytes buffered while a stream or poll is open */
#define SMALL_BODY 1024           /* bytes of a response body always written whole */

enum state { READ_HEAD, READ_BODY, STREAM };

struct http1 {
    struct front_io io;
    struct request_quota quota;  /* bytes and subject patterns held by this connection */
    struct buf in;            /* received, not yet consumed */
    struct h1_parser parser;
    enum state state;
    struct request req;       /* the request in progress */
    bool active;              /* req holds a request */
    bool keep_alive;          /* of the request in progress */
    bool chunked_out;         /* the SSE response is chunked (HTTP/1.1); else close-delimited */
    bool head_sent;           /* of the SSE response */
    bool close;               /* close once out is written */
    bool draining;
    bool body_active;         /* a request body is being read (its response may be out already) */
    bool body_keep;           /* that body is a publish's, handed to the pipeline; else dropped */
    bool expect_continue;     /* the request announced a body with Expect: 100-continue */
    bool drop_input;          /* a body was not read: input is dropped unparsed, close after */
    struct h1_body_reader body;
    const char *rest;         /* a plain response body not yet in out; NULL when none */
    char *rest_owned;         /* rest's malloc'ed block, or NULL */
    struct filecache_entry *rest_file; /* rest's shared file, referenced, or NULL */
    size_t rest_off, rest_len; /* bytes; rest_off < rest_len while rest != NULL */
};

static struct http1 *http1_of(struct request *r) { return container_of(r, struct http1, req); }

#define HEAD_BYTES 2048

/*
 * Writes the head: the pipeline's fields, then this connection's own
 * (name, value, …, NULL: connection, transfer-encoding), then the blank
 * line. Values are copied to be NUL-terminated for h1_format_head.
 */
static void append_head(struct http1 *h, const struct request_head *head,
                        const char *const *own)
{
    const char *all[2 * (REQUEST_HEAD_MAX + 4) + 1];
    char text[HEAD_BYTES];
    size_t n = 0, used = 0;
    for (size_t i = 0; i < head->n; i++) {
        const struct request_field *f = &head->f[i];
        int k = snprintf(text + used, sizeof(text) - used, "%.*s", (int)f->value_len, f->value);
        if (k < 0 || (size_t)k >= sizeof(text) - used)
            break;
        all[n++] = f->name;
        all[n++] = text + used;
        used += (size_t)k + 1;
    }
    for (; own[0] && n < 2 * (REQUEST_HEAD_MAX + 3); own += 2) {
        all[n++] = own[0];
        all[n++] = own[1];
    }
    all[n] = NULL;
    char out[HEAD_BYTES];
    int len = h1_format_head(out, sizeof(out), head->status, all);
    if (len < 0) /* a field we made ourselves cannot be invalid; keep the connection honest */
        len = h1_format_head(out, sizeof(out), 500, (const char *const[]){"content-length", "0", NULL});
    buf_append(h->io.out, out, (size_t)len);
}

/* Ends the request in progress: access log, then the next one may start. */
static void finish(struct http1 *h)
{
    request_dispose(&h->req);
    h->active = false;
    h->head_sent = false;
    h->state = READ_HEAD;
    h1_parser_init(&h->parser, NULL);
    if (!h->keep_alive || h->draining)
        h->close = true;
}

/* Lets go of the pending body: frees its block or drops its file reference. */
static void drop_rest(struct http1 *h)
{
    free(h->rest_owned);
    filecache_unref(h->io.env->files, h->rest_file);
    h->rest = h->rest_owned = NULL;
    h->rest_file = NULL;
    h->rest_off = h->rest_len = 0;
}

/* Moves as much of rest into out as out_max leaves room for; lets go of it once written. */
static void write_rest(struct http1 *h)
{
    size_t pending = buf_pending(h->io.out);
    if (!h->rest || pending >= h->io.out_max)
        return;
    size_t n = h->rest_len - h->rest_off;
    if (n > h->io.out_max - pending)
        n = h->io.out_max - pending;
    buf_append(h->io.out, h->rest + h->rest_off, n);
    h->rest_off += n;
    if (h->rest_off == h->rest_len)
        drop_rest(h);
}

/*
 * A plain response body: what out has room for now, the rest kept for
 * http1_fill(). Takes body's owned block and file reference; a borrowed
 * body is copied.
 */
static void append_body(struct http1 *h, const struct request_body *body)
{
    size_t pending = buf_pending(h->io.out);
    size_t room = pending < h->io.out_max ? h->io.out_max - pending : 0;
    size_t n = body->len;
    if (n <= SMALL_BODY || n <= room) {
        buf_append(h->io.out, body->data, n);
        free(body->owned);
        filecache_unref(h->io.env->files, body->file);
        return;
    }
    if (body->owned || body->file) {
        h->rest = body->data;
        h->rest_owned = body->owned;
        h->rest_file = body->file;
    } else {
        h->rest = h->rest_owned = mem_alloc(n);
        memcpy(h->rest_owned, body->data, n);
    }
    h->rest_off = 0;
    h->rest_len = n;
    write_rest(h);
}

static void stop_reading(struct http1 *h, const char *why);

static int on_respond(struct request *r, const struct request_head *head,
                      struct request_body *body)
{
    struct http1 *h = http1_of(r);
    if (h->body_active && h->body_keep) {
        /* A publish answered before its body is read was refused. */
        if (h->state == READ_BODY) {
            /* Partway: the rest of the body cannot be framed as requests. */
            h->body_active = false;
            h->keep_alive = false;
            h->drop_input = true;
        } else if (h->expect_continue) {
            /* Not sent until 100 Continue, which it will never get. */
            stop_reading(h, "publish refused before 100 Continue");
        } else {
            h->body_keep = false; /* read and dropped */
        }
    }
    const char *own[] = {"connection", h->keep_alive && !h->draining ? "keep-alive" : "close",
                         NULL};
    append_head(h, head, own);
    if (body) {
        append_body(h, body);
        r->body_bytes = (uint64_t)body->len;
    }
    finish(h);
    return 0;
}

static int on_start_stream(struct request *r, const struct request_head *head)
{
    struct http1 *h = http1_of(r);
    /* HTTP/1.0 has no chunked encoding: the body then ends when the connection does. */
    const char *own[] = {
        "connection", h->keep_alive && h->chunked_out ? "keep-alive" : "close",
        h->chunked_out ? "transfer-encoding" : NULL, "chunked",
        NULL,
    };
    if (!h->chunked_out)
        h->keep_alive = false;
    append_head(h, head, own);
    h->head_sent = true;
    return 0;
}

static void on_wake(struct request *r)
{
    /* Written by http1_fill(): never while a write of out is pending. */
    struct http1 *h = http1_of(r);
    h->io.dirty(h->io.dirty_ctx);
}

static int on_reset(struct request *r, enum request_reset why)
{
    (void)why; /* HTTP/1.1 has no stream to reset: the connection ends */
    struct http1 *h = http1_of(r);
    h->keep_alive = false;
    h->drop_input = true;
    finish(h);
    return 0;
}

static const struct request_front front = {
    .protocol = "http/1.1",
    .respond = on_respond,
    .start_stream = on_start_stream,
    .wake = on_wake,
    .reset = on_reset,
};

/* Copies a whole request head's interesting parts into req (the buffer moves on). */
static void take_head(struct http1 *h, const struct h1_request *rq)
{
    request_init(&h->req, &front, &h->io, &h->quota, 0);
    h->active = true;
    h->keep_alive = rq->keep_alive;
    h->chunked_out = rq->minor >= 1;
    request_header(&h->req, ":method", 7, rq->method.p, rq->method.len);
    request_header(&h->req, ":path", 5, rq->target.p, rq->target.len);
    for (size_t i = 0; i < rq->nheaders; i++) {
        char name[32];
        const struct h1_header *f = &rq->headers[i];
        if (f->name.len >= sizeof(name))
            continue;
        for (size_t k = 0; k < f->name.len; k++)
            name[k] = (char)((f->name.p[k] >= 'A' && f->name.p[k] <= 'Z') ? f->name.p[k] + 32
                                                                         : f->name.p[k]);
        request_header(&h->req, name, f->name.len, f->value.p, f->value.len);
    }
    /* RFC 9112 3.2.2: an absolute-form target's authority replaces Host (the Host rule reads it). */
    if (rq->authority.p)
        request_header(&h->req, ":authority", 10, rq->authority.p, rq->authority.len);
}

/*
 * Ends the reading of this connection's input: a body that is not read
 * leaves the client's bytes unframed, so nothing after it may be parsed.
 * The response in progress (if any) says "connection: close"; the
 * connection ends once it is written.
 */
static void stop_reading(struct http1 *h, const char *why)
{
    metrics_add(&h->io.env->stats->unread_body, 1);
    log_info("conn %" PRIu64 " %s: request body not read (%s); closing after the response",
             h->io.conn_id, h->io.peer, why);
    h->keep_alive = false;
    h->drop_input = true;
    h->body_active = false;
    buf_consume(&h->in, buf_pending(&h->in));
    if (!h->active)
        h->close = true;
}

/*
 * Decides how the body of rq is read: kept up to max (a publish) or read
 * and dropped (every other route). A body that cannot be read is left
 * unread and stops the reading of the connection (for a publish too large,
 * the caller answers 413).
 */
static void expect_body(struct http1 *h, const struct h1_request *rq, bool keep, uint64_t max)
{
    h->drop_input = false;
    h->body_active = false;
    h->body_keep = keep;
    if (rq->body == H1_BODY_NONE && !keep)
        return;
    /*
     * A client waiting for 100 Continue may never send a body we do not ask
     * for; guessing either way could take its next request for the body.
     */
    if (!keep && rq->expect_continue) {
        stop_reading(h, "announced with Expect: 100-continue");
        return;
    }
    if (h1_body_reader_init(&h->body, rq, max) != 0) {
        if (keep) { /* a publish: answered 413 by the caller */
            h->keep_alive = false;
            h->drop_input = true;
        } else {
            stop_reading(h, "larger than 64 KiB");
        }
        return;
    }
    h->body_active = true;
}

static void start_request(struct http1 *h, const struct h1_request *rq)
{
    take_head(h, rq);
    h->expect_continue = rq->expect_continue && rq->body != H1_BODY_NONE;
    uint64_t max = HTTP1_DISCARD_MAX;
    bool publish = false;
    if (h->req.header_too_long) {
        h->keep_alive = false;
        h->drop_input = true;
    } else {
        /* Routing is pure, so the body's fate is known before any answer names the connection's. */
        publish = request_wants_body(&h->req, &max);
        expect_body(h, rq, publish, publish ? max : HTTP1_DISCARD_MAX);
    }
    request_process(&h->req);
    if (!h->active)
        return; /* answered */
    if (h->req.stream || (request_waiting(&h->req) && !request_publishing(&h->req))) {
        h->state = STREAM; /* its head or answer waits (NATS, the auth callout), or streams */
        return;
    }
    if (request_publishing(&h->req)) {
        if (h->drop_input) {
            request_fail(&h->req, 413, "body too large (max-publish-bytes, max-request-body-bytes)");
            return;
        }
        h->state = READ_BODY; /* an empty body is published by process() at once */
        if (rq->expect_continue)
            buf_append(h->io.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
}

/*
 * Consumes body bytes from in, decoded where they lie: a publish's handed
 * to the pipeline, published and answered when complete; any other
 * dropped. ERR_PROTO when the body is malformed, too large or refused:
 * then the connection stops reading.
 */
static int read_body(struct http1 *h)
{
    char *in = (char *)h->in.data + h->in.off;
    size_t avail = buf_pending(&h->in), used = 0, made = 0;
    int rc = h1_body_read(&h->body, in, avail, &used, in, &made);
    /* Refused (connection's or worker's bytes full): answered, and on_respond stops reading. */
    bool refused = h->body_keep && made && request_body(&h->req, in, made) != 0;
    buf_consume(&h->in, used);
    if (refused)
        return ERR_PROTO;
    if (rc == ERR_AGAIN)
        return 0;
    h->body_active = false;
    if (rc == 0) {
        if (h->body_keep)
            request_body_end(&h->req);
        /* A request stream: its 200 waits for the service's first reply, then streams. */
        if (h->active && (h->req.stream || request_waiting(&h->req)))
            h->state = STREAM;
        return 0;
    }
    if (h->body_keep) {
        h->keep_alive = false;
        h->drop_input = true;
        request_fail(&h->req, h->body.status, h->body.reason);
    } else {
        /* The response may be out already; the connection cannot go on. */
        stop_reading(h, h->body.reason);
    }
    return ERR_PROTO;
}

/* Serves what is buffered in `in` as far as it goes. */
static int process(struct http1 *h)
{
    while (!h->close && !h->drop_input) {
        /* A body first, even under a response in progress: it is never a request. */
        if (h->body_active) {
            if (read_body(h) != 0 || h->body_active)
                return 0;
            continue;
        }
        if (h->state == STREAM) {
            /* Pipelined requests wait for the stream or poll to end; a bounded few. */
            return buf_pending(&h->in) > IGNORED_INPUT_MAX ? ERR_PROTO : 0;
        }
        /* Back-pressure: the next request waits until output drains (http1_fill). */
        if (h->rest || buf_pending(h->io.out) >= h->io.out_max)
            return 0;
        if (buf_pending(&h->in) == 0)
            return 0;
        struct h1_request rq;
        int rc = h1_parse(&h->parser, (const char *)h->in.data + h->in.off, buf_pending(&h->in),
                          &rq);
        if (rc == ERR_AGAIN)
            return 0;
        if (rc != 0) {
            request_init(&h->req, &front, &h->io, &h->quota, 0);
            h->active = true;
            h->keep_alive = false;
            h->drop_input = true;
            request_fail(&h->req, h->parser.status, h->parser.reason);
            return 0;
        }
        /* start_request() copies what it keeps of the head: the bytes can go after it. */
        size_t head_len = rq.head_len;
        start_request(h, &rq);
        buf_consume(&h->in, head_len);
        if (h->drop_input)
            buf_consume(&h->in, buf_pending(&h->in));
    }
    return 0;
}

static void *http1_new(const struct front_io *io)
{
    struct http1 *h = mem_calloc(1, sizeof(*h));
    h->io = *io;
    request_quota_init(&h->quota, io->env, io->conn_id);
    buf_init(&h->in);
    h1_parser_init(&h->parser, NULL);
    return h;
}

static void http1_free(void *f)
{
    struct http1 *h = f;
    if (!h)
        return;
    if (h->active)
        request_dispose(&h->req);
    request_quota_dispose(&h->quota);
    buf_dispose(&h->in);
    drop_rest(h);
    free(h);
}

static int http1_recv(void *f, const uint8_t *data, size_t len)
{
    struct http1 *h = f;
    /* After a body that was not read, nothing the client sends can be framed: dropped. */
    if (h->close || h->drop_input)
        return 0;
    /*
     * Bounded: a head is at most H1_HEAD_MAX, a body is consumed as it
     * arrives, and the connection stops reading while its output is full.
     */
    buf_append(&h->in, data, len);
    return process(h);
}

static int http1_fill(void *f)
{
    struct http1 *h = f;
    if (h->rest) {
        write_rest(h);
        if (h->rest)
            return 0;
    }
    if (h->state != STREAM || !h->active) {
        /* Pipelined requests held back while output was full resume here. */
        process(h);
        return 0;
    }
    if (!h->head_sent) {
        /* The SSE head, or a poll's whole answer, once the stream is ready. */
        request_resume(&h->req);
        if (!h->active) {
            /* A pipelined request may have waited for this answer. */
            process(h);
            return 0;
        }
        if (!h->head_sent)
            return 0;
    }
    for (;;) {
        size_t pending = buf_pending(h->io.out);
        if (pending >= h->io.out_max)
            return 0;
        size_t room = h->io.out_max - pending;
        if (room < 64)
            return 0;
        bool eof;
        size_t max = room - 16 < CHUNK_MAX ? room - 16 : CHUNK_MAX;
        size_t n = stream_pending(h->req.stream, max, &eof);
        if (n && h->chunked_out) {
            char size[16];
            int k = snprintf(size, sizeof(size), "%zx\r\n", n);
            buf_append(h->io.out, size, (size_t)k);
        }
        if (n) {
            stream_copy(h->req.stream, buf_reserve(h->io.out, n), n);
            h->io.out->len += n;
        }
        if (n && h->chunked_out)
            buf_append(h->io.out, "\r\n", 2);
        if (eof) {
            if (h->chunked_out)
                buf_append(h->io.out, "0\r\n\r\n", 5);
            finish(h);
            /* A pipelined request may have waited for this response. */
            process(h);
            return 0;
        }
        if (n == 0)
            return 0;
    }
}

static bool http1_finished(const void *f)
{
    const struct http1 *h = f;
    return h->close && !h->rest;
}

static bool http1_unread_input(const void *f)
{
    const struct http1 *h = f;
    /* Also a body still being dropped when the connection ends (HTTP/1.0, Connection: close). */
    return h->drop_input || h->body_active;
}

static size_t http1_streams(const void *f)
{
    return ((const struct http1 *)f)->state == STREAM ? 1 : 0;
}

static void http1_shutdown_notice(void *f)
{
    (void)f; /* HTTP/1.1 has no way to announce a drain before it happens */
}

static void http1_goaway(void *f)
{
    struct http1 *h = f;
    h->draining = true;
    if (!h->active)
        h->close = true;
}

const struct front_ops http1_front_ops = FRONT_OPS(http1, "http/1.1");
