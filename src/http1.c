/*
 * http1: HTTP/1.1 server connection (see http1.h).
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
#include "sluice/http1.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/cors.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/h1.h"
#include "sluice/http.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/stream.h"

#define CHUNK_MAX 16384           /* bytes of stream data per chunk */
#define IGNORED_INPUT_MAX 65536   /* client bytes buffered while a stream or poll is open */
#define SMALL_BODY 1024           /* bytes of a response body always written whole */

enum state { READ_HEAD, READ_BODY, STREAM };

struct http1 {
    struct session_io io;
    struct session_conn conn; /* bytes and subject patterns held by this connection */
    struct buf in;            /* received, not yet consumed */
    struct h1_parser parser;
    enum state state;
    struct session_req req;   /* the request in progress */
    bool active;              /* req holds a request */
    bool keep_alive;          /* of the request in progress */
    bool chunked_out;         /* the SSE response is chunked (HTTP/1.1); else close-delimited */
    bool head_sent;           /* of the SSE response */
    bool poll;                /* the request in progress is a long-poll */
    bool close;               /* close once out is written */
    bool draining;
    bool body_active;         /* a request body is being read (its response may be out already) */
    bool body_keep;           /* that body is a publish's, kept in req.body; else dropped */
    bool drop_input;          /* a body was not read: input is dropped unparsed, close after */
    struct h1_body_reader body;
    const char *rest;         /* a plain response body not yet in out; NULL when none */
    char *rest_owned;         /* rest's malloc'ed block, or NULL */
    struct filecache_entry *rest_file; /* rest's shared file, referenced, or NULL */
    size_t rest_off, rest_len; /* bytes; rest_off < rest_len while rest != NULL */
};

#define FIELDS_MAX 40 /* name, value, …, NULL */

/*
 * Writes the head: fields (name, value, …, NULL), then the CORS headers of
 * the request (kind), then the blank line.
 */
static void append_head(struct http1 *h, int status, const char *const *fields,
                        enum cors_kind kind)
{
    const char *all[FIELDS_MAX];
    char cors[CORS_HEADERS_MAX][2][256];
    size_t n = 0;
    for (; fields[n] && n < FIELDS_MAX - 2 * CORS_HEADERS_MAX - 1; n++)
        all[n] = fields[n];
    struct cors_header ch[CORS_HEADERS_MAX];
    size_t k = h->active ? session_cors(&h->req, h->io.env, h->io.secure, kind, ch) : 0;
    for (size_t i = 0; i < k; i++) {
        snprintf(cors[i][0], sizeof(cors[i][0]), "%.*s", (int)ch[i].name_len, ch[i].name);
        snprintf(cors[i][1], sizeof(cors[i][1]), "%.*s", (int)ch[i].value_len, ch[i].value);
        all[n++] = cors[i][0];
        all[n++] = cors[i][1];
    }
    all[n] = NULL;
    fields = all;
    char head[2048];
    int len = h1_format_head(head, sizeof(head), status, fields);
    if (len < 0) /* a field we made ourselves cannot be invalid; keep the connection honest */
        len = h1_format_head(head, sizeof(head), 500, (const char *const[]){"content-length", "0", NULL});
    buf_append(h->io.out, head, (size_t)len);
}

/* Ends the request in progress: access log, then the next one may start. */
static void finish(struct http1 *h)
{
    session_req_dispose(&h->req, "http/1.1", h->io.peer);
    h->active = false;
    h->head_sent = false;
    h->poll = false;
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
 * http1_fill(). owned (may be NULL) is body's own malloc'ed block, taken;
 * file (may be NULL) is the shared file body lies in, whose reference is
 * taken; otherwise body is borrowed and copied.
 */
static void append_body(struct http1 *h, const char *body, size_t n, char *owned,
                        struct filecache_entry *file)
{
    size_t pending = buf_pending(h->io.out);
    size_t room = pending < h->io.out_max ? h->io.out_max - pending : 0;
    if (n <= SMALL_BODY || n <= room) {
        buf_append(h->io.out, body, n);
        free(owned);
        filecache_unref(h->io.env->files, file);
        return;
    }
    if (owned || file) {
        h->rest = body;
        h->rest_owned = owned;
        h->rest_file = file;
    } else {
        h->rest = h->rest_owned = mem_alloc(n);
        memcpy(h->rest_owned, body, n);
    }
    h->rest_off = 0;
    h->rest_len = n;
    write_rest(h);
}

/*
 * A whole response; www (may be NULL) becomes www-authenticate. 204 has no
 * body. owned, file: as for append_body().
 */
static void respond_owned(struct http1 *h, int status, const char *ctype, const char *body,
                          size_t n, char *owned, struct filecache_entry *file, const char *www)
{
    char len[24];
    snprintf(len, sizeof(len), "%zu", n);
    const char *fields[] = {
        "content-type", ctype,
        "content-length", len,
        "cache-control", "no-store",
        "x-request-id", h->req.request_id ? h->req.request_id : "-",
        "connection", h->keep_alive && !h->draining ? "keep-alive" : "close",
        www ? "www-authenticate" : NULL, www,
        NULL,
    };
    append_head(h, status, fields, status == 204 ? CORS_PREFLIGHT : CORS_ACTUAL);
    append_body(h, body, n, owned, file);
    h->req.status = status;
    h->req.body_bytes = (uint64_t)n;
    /* Paths without their query: it may carry an access_token. */
    const char *path = h->req.path ? h->req.path : "-";
    log_debug("conn %" PRIu64 ": %s %.*s -> %d", h->io.conn_id, h->req.method ? h->req.method : "-",
              (int)strcspn(path, "?"), path, status);
    finish(h);
}

static void respond_body(struct http1 *h, int status, const char *ctype, const void *body,
                         size_t n, const char *www)
{
    respond_owned(h, status, ctype, body, n, NULL, NULL, www);
}

static void respond_text_www(struct http1 *h, int status, const char *text, const char *www)
{
    char body[200];
    int n = status == 204 ? 0 : snprintf(body, sizeof(body), "%s\n", text);
    respond_body(h, status, "text/plain; charset=utf-8", body, (size_t)n, www);
}

static void respond_text(struct http1 *h, int status, const char *text)
{
    respond_text_www(h, status, text, NULL);
}

static void answer_poll(struct http1 *h)
{
    struct buf json;
    buf_init(&json);
    if (session_poll_answer(&h->req, h->io.env, &json) == 0)
        respond_body(h, 200, "application/json", json.data, json.len, NULL);
    else
        respond_text(h, 503, "too many bytes queued on this connection, retry");
    buf_dispose(&json);
}

static void send_stream_head(struct http1 *h)
{
    /* HTTP/1.0 has no chunked encoding: the body then ends when the connection does. */
    const char *fields[] = {
        "content-type", "text/event-stream",
        "cache-control", "no-cache",
        "x-accel-buffering", "no",
        "x-request-id", h->req.request_id,
        "connection", h->keep_alive && h->chunked_out ? "keep-alive" : "close",
        h->chunked_out ? "transfer-encoding" : NULL, "chunked",
        NULL,
    };
    if (!h->chunked_out)
        h->keep_alive = false;
    append_head(h, 200, fields, CORS_ACTUAL);
    h->req.status = 200;
    h->head_sent = true;
}

static void on_stream_wake(void *ctx)
{
    struct http1 *h = ctx;
    h->io.dirty(h->io.dirty_ctx);
}

/* Copies a whole request head's interesting parts into req (the buffer moves on). */
static void take_head(struct http1 *h, const struct h1_request *rq)
{
    session_req_init(&h->req);
    h->active = true;
    h->keep_alive = rq->keep_alive;
    h->chunked_out = rq->minor >= 1;
    session_req_header(&h->req, h->io.env, ":method", 7, rq->method.p, rq->method.len);
    session_req_header(&h->req, h->io.env, ":path", 5, rq->target.p, rq->target.len);
    for (size_t i = 0; i < rq->nheaders; i++) {
        char name[32];
        const struct h1_header *f = &rq->headers[i];
        if (f->name.len >= sizeof(name))
            continue;
        for (size_t k = 0; k < f->name.len; k++)
            name[k] = (char)((f->name.p[k] >= 'A' && f->name.p[k] <= 'Z') ? f->name.p[k] + 32
                                                                         : f->name.p[k]);
        session_req_header(&h->req, h->io.env, name, f->name.len, f->value.p, f->value.len);
    }
    /* RFC 9112 3.2.2: an absolute-form target's authority replaces Host (the Host rule reads it). */
    if (rq->authority.p)
        session_req_header(&h->req, h->io.env, ":authority", 10, rq->authority.p,
                           rq->authority.len);
    session_req_ensure_id(&h->req);
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
    if (h->req.header_too_long) {
        metrics_add(&h->io.env->stats->header_bytes, 1);
        h->keep_alive = false;
        h->drop_input = true;
        respond_text(h, 431, "request header too large");
        return;
    }
    /* Routing is pure, so the body's fate is known before any answer names the connection's. */
    struct http_route route;
    http_route(&route, h->req.method, strlen(h->req.method), h->req.path, strlen(h->req.path));
    bool publish = route.kind == HTTP_PUBLISH;
    expect_body(h, rq, publish, publish ? h->io.env->cfg->max_publish_bytes : HTTP1_DISCARD_MAX);
    int status;
    if (session_preflight(&h->req, h->io.env, h->io.secure, &status)) {
        respond_text(h, status, status == 204 ? "" : "origin not allowed");
        http_route_dispose(&route);
        return;
    }
    if (route.kind != HTTP_ERROR) {
        char www[256];
        const char *text;
        status = session_admit(&h->req, h->io.env, &route, h->io.secure, www, sizeof(www), &text);
        if (status != 0) {
            /* A refused publish's body is read and dropped; one not sent until 100 is never. */
            if (publish && rq->body != H1_BODY_NONE && rq->expect_continue)
                stop_reading(h, "publish refused before 100 Continue");
            h->body_keep = false;
            respond_text_www(h, status, text, status == 401 ? www : NULL);
            http_route_dispose(&route);
            return;
        }
    }
    unsigned retry_ms;
    if (route.kind == HTTP_EVENTS && !session_admit_stream(&h->req, h->io.env, &retry_ms)) {
        /* Over capacity: 200, a long retry: and the end; any other status stops an EventSource. */
        size_t n;
        char *body = session_refusal(retry_ms, &n);
        respond_body(h, 200, "text/event-stream", body, n, NULL);
        free(body);
    } else if (route.kind == HTTP_EVENTS || route.kind == HTTP_POLL) {
        const char *text;
        status = session_open_stream(&h->req, h->io.env, &h->conn, &route, on_stream_wake, h,
                                     h->io.conn_id, 0, &text);
        if (status != 0) {
            respond_text(h, status, text);
            http_route_dispose(&route);
            return;
        }
        h->state = STREAM;
        h->poll = route.kind == HTTP_POLL;
        if (h->poll && session_poll_ready(&h->req))
            answer_poll(h);
        else if (!h->poll && stream_ready(h->req.stream))
            send_stream_head(h);
    } else if (route.kind == HTTP_FILE) {
        struct filecache_entry *file = NULL;
        int rc = session_file(h->io.env, route.file, &file);
        if (rc == 0)
            respond_owned(h, 200, http_content_type(route.file), file->data, file->len, NULL,
                          file, NULL);
        else if (rc == ERR_AGAIN)
            respond_text(h, 503, "busy, retry");
        else
            respond_text(h, 404, "not found");
    } else if (route.kind == HTTP_PUBLISH) {
        if (h->drop_input) {
            respond_text(h, 413, "body larger than max-publish-bytes");
        } else {
            h->req.publish = mem_alloc(sizeof(route));
            *h->req.publish = route;
            memset(&route, 0, sizeof(route));
            h->state = READ_BODY; /* an empty body is published by process() at once */
            if (rq->expect_continue)
                buf_append(h->io.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
    } else {
        respond_text(h, route.status, route.reason);
    }
    http_route_dispose(&route);
}

/*
 * Consumes body bytes from in: a publish's into req.body, published and
 * answered when complete; any other is dropped where it lies (decoded in
 * place). ERR_PROTO when the body is malformed or too large: then the
 * connection stops reading.
 */
static int read_body(struct http1 *h)
{
    char *in = (char *)h->in.data + h->in.off;
    size_t avail = buf_pending(&h->in), used = 0, made = 0;
    char *out = h->body_keep ? (char *)buf_reserve(&h->req.body, avail) : in;
    int rc = h1_body_read(&h->body, in, avail, &used, out, &made);
    if (h->body_keep)
        h->req.body.len += made;
    buf_consume(&h->in, used);
    /* A publish body waiting in memory shares the connection's and worker's caps, as on h2. */
    if (h->body_keep && made && !session_charge(&h->req, &h->conn, made, false)) {
        h->body_active = false;
        h->keep_alive = false;
        h->drop_input = true; /* the rest of the body cannot be framed as requests */
        respond_text(h, 503, "too many bytes buffered, retry");
        return ERR_PROTO;
    }
    if (rc == ERR_AGAIN)
        return 0;
    h->body_active = false;
    if (rc == 0) {
        if (h->body_keep) {
            const char *text;
            int status = session_publish(&h->req, h->io.env, &text);
            respond_text(h, status, text);
        }
        return 0;
    }
    if (h->body_keep) {
        h->keep_alive = false;
        h->drop_input = true;
        respond_text(h, h->body.status, h->body.reason);
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
            session_req_init(&h->req);
            h->active = true;
            h->keep_alive = false;
            h->drop_input = true;
            session_req_ensure_id(&h->req);
            respond_text(h, h->parser.status, h->parser.reason);
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

struct http1 *http1_new(const struct session_io *io)
{
    struct http1 *h = mem_calloc(1, sizeof(*h));
    h->io = *io;
    session_conn_init(&h->conn, io->env, io->conn_id);
    buf_init(&h->in);
    h1_parser_init(&h->parser, NULL);
    return h;
}

void http1_free(struct http1 *h)
{
    if (!h)
        return;
    if (h->active)
        session_req_dispose(&h->req, "http/1.1", h->io.peer);
    session_conn_dispose(&h->conn);
    buf_dispose(&h->in);
    drop_rest(h);
    free(h);
}

int http1_recv(struct http1 *h, const uint8_t *data, size_t len)
{
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

int http1_fill(struct http1 *h)
{
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
    if (h->poll) {
        if (session_poll_ready(&h->req)) {
            answer_poll(h);
            process(h);
        }
        return 0;
    }
    if (!h->head_sent) {
        if (!stream_ready(h->req.stream))
            return 0;
        send_stream_head(h);
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

bool http1_finished(const struct http1 *h) { return h->close && !h->rest; }

bool http1_unread_input(const struct http1 *h)
{
    /* Also a body still being dropped when the connection ends (HTTP/1.0, Connection: close). */
    return h->drop_input || h->body_active;
}

size_t http1_streams(const struct http1 *h) { return h->state == STREAM ? 1 : 0; }

void http1_goaway(struct http1 *h)
{
    h->draining = true;
    if (!h->active)
        h->close = true;
}
