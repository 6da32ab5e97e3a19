/*
 * http1: HTTP/1.1 server connection (see http1.h).
 *
 * States: reading a head; reading a publish body; streaming an SSE
 * response. Plain responses are written whole at once. Pipelined requests
 * wait in `in` until the current response is done; past a bound while a
 * stream or poll is open, the connection is closed. HTTP/1.0 gets a
 * close-delimited SSE body (it has no chunked encoding).
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
#include "sluice/h1.h"
#include "sluice/http.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/stream.h"

#define CHUNK_MAX 16384           /* bytes of stream data per chunk */
#define IGNORED_INPUT_MAX 65536   /* client bytes buffered while a stream or poll is open */

enum state { READ_HEAD, READ_BODY, STREAM };

struct http1 {
    struct session_io io;
    struct stream_budget budget;
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
    uint64_t body_left;       /* READ_BODY with Content-Length */
    bool chunked;
    struct h1_chunked dechunk;
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

/* A whole response; www (may be NULL) becomes www-authenticate. 204 has no body. */
static void respond_body(struct http1 *h, int status, const char *ctype, const void *body,
                         size_t n, const char *www)
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
    buf_append(h->io.out, body, n);
    h->req.status = status;
    h->req.body_bytes = (uint64_t)n;
    /* Paths without their query: it may carry an access_token. */
    const char *path = h->req.path ? h->req.path : "-";
    log_debug("conn %" PRIu64 ": %s %.*s -> %d", h->io.conn_id, h->req.method ? h->req.method : "-",
              (int)strcspn(path, "?"), path, status);
    finish(h);
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
    session_poll_answer(&h->req, &json);
    respond_body(h, 200, "application/json", json.data, json.len, NULL);
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
    session_req_ensure_id(&h->req);
}

static void start_request(struct http1 *h, const struct h1_request *rq)
{
    take_head(h, rq);
    if (h->req.header_too_long) {
        metrics_add(&h->io.env->stats->header_bytes, 1);
        h->keep_alive = false;
        respond_text(h, 431, "request header too large");
        return;
    }
    int status;
    if (session_preflight(&h->req, h->io.env, h->io.secure, &status)) {
        respond_text(h, status, status == 204 ? "" : "origin not allowed");
        return;
    }
    struct http_route route;
    http_route(&route, h->req.method, strlen(h->req.method), h->req.path, strlen(h->req.path));
    if (route.kind != HTTP_ERROR) {
        char www[256];
        const char *text;
        status = session_admit(&h->req, h->io.env, &route, h->io.secure, www, sizeof(www), &text);
        if (status != 0) {
            if (route.kind == HTTP_PUBLISH && rq->body != H1_BODY_NONE)
                h->keep_alive = false; /* its body is not read */
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
        session_open_stream(&h->req, h->io.env, &h->budget, &route, on_stream_wake, h, h->io.conn_id, 0);
        h->state = STREAM;
        h->poll = route.kind == HTTP_POLL;
        if (h->poll && session_poll_ready(&h->req))
            answer_poll(h);
        else if (!h->poll && stream_ready(h->req.stream))
            send_stream_head(h);
    } else if (route.kind == HTTP_FILE) {
        char *body = NULL;
        size_t len = 0;
        if (session_file(h->io.env, route.file, &body, &len) == 0)
            respond_body(h, 200, http_content_type(route.file), body, len, NULL);
        else
            respond_text(h, 404, "not found");
        free(body);
    } else if (route.kind == HTTP_PUBLISH) {
        uint64_t max = h->io.env->cfg->max_publish_bytes;
        if (rq->body == H1_BODY_LENGTH && rq->content_length > max) {
            h->keep_alive = false; /* the body is not read, so the connection cannot go on */
            respond_text(h, 413, "body larger than max-publish-bytes");
        } else {
            h->req.publish = mem_alloc(sizeof(route));
            *h->req.publish = route;
            memset(&route, 0, sizeof(route));
            h->state = READ_BODY; /* an empty body is published by process() at once */
            h->chunked = rq->body == H1_BODY_CHUNKED;
            h->body_left = rq->body == H1_BODY_LENGTH ? rq->content_length : 0;
            if (h->chunked)
                h1_chunked_init(&h->dechunk, max);
            if (rq->expect_continue)
                buf_append(h->io.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
    } else {
        respond_text(h, route.status, route.reason);
    }
    http_route_dispose(&route);
}

/* Consumes body bytes from in; publishes and answers when the body is complete. */
static int read_body(struct http1 *h)
{
    size_t used = 0;
    bool done;
    if (h->chunked) {
        size_t produced = 0;
        char *out = (char *)buf_reserve(&h->req.body, buf_pending(&h->in));
        int rc = h1_chunked_decode(&h->dechunk, (const char *)h->in.data + h->in.off,
                                   buf_pending(&h->in), &used, out, &produced);
        h->req.body.len += produced;
        if (rc == ERR_PROTO || rc == ERR_LIMIT) {
            h->keep_alive = false;
            respond_text(h, h->dechunk.status, h->dechunk.reason);
            return ERR_PROTO;
        }
        done = rc == 0;
    } else {
        used = buf_pending(&h->in) < h->body_left ? buf_pending(&h->in) : (size_t)h->body_left;
        buf_append(&h->req.body, h->in.data + h->in.off, used);
        h->body_left -= used;
        done = h->body_left == 0;
    }
    buf_consume(&h->in, used);
    if (done) {
        const char *text;
        int status = session_publish(&h->req, h->io.env, &text);
        respond_text(h, status, text);
    }
    return 0;
}

/* Serves what is buffered in `in` as far as it goes. */
static int process(struct http1 *h)
{
    while (!h->close) {
        if (h->state == STREAM) {
            /* Pipelined requests wait for the stream or poll to end; a bounded few. */
            return buf_pending(&h->in) > IGNORED_INPUT_MAX ? ERR_PROTO : 0;
        }
        if (h->state == READ_BODY) {
            bool more = h->chunked || h->body_left > 0;
            if ((more && buf_pending(&h->in) == 0) || read_body(h) != 0)
                return 0;
            continue;
        }
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
            session_req_ensure_id(&h->req);
            respond_text(h, h->parser.status, h->parser.reason);
            return 0;
        }
        start_request(h, &rq);
        buf_consume(&h->in, rq.head_len);
    }
    return 0;
}

struct http1 *http1_new(const struct session_io *io)
{
    struct http1 *h = mem_calloc(1, sizeof(*h));
    h->io = *io;
    h->budget.max = io->env->cfg->conn_queue_bytes;
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
    buf_dispose(&h->in);
    free(h);
}

int http1_recv(struct http1 *h, const uint8_t *data, size_t len)
{
    if (h->close)
        return 0;
    /* Bounded: a head is at most H1_HEAD_MAX, a body is consumed as it arrives. */
    buf_append(&h->in, data, len);
    return process(h);
}

int http1_fill(struct http1 *h)
{
    if (h->state != STREAM || !h->active)
        return 0;
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

bool http1_finished(const struct http1 *h) { return h->close; }

size_t http1_streams(const struct http1 *h) { return h->state == STREAM ? 1 : 0; }

void http1_goaway(struct http1 *h)
{
    h->draining = true;
    if (!h->active)
        h->close = true;
}
