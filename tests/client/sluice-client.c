/*
 * sluice-client: the project's own HTTP/2 Server-Sent-Events client, run by
 * the e2e tests and grown later into the benchmark driver.
 *
 * One thread, one libev loop, N TLS connections that each carry the same
 * list of GET streams. Input flows socket -> SSL_read ->
 * nghttp2_session_mem_recv -> on_data_chunk_recv -> a per-stream WHATWG
 * SSE parser that counts events on dispatch. Output flows the other way:
 * nghttp2_session_mem_send fills a per-connection buffer that a prepare
 * watcher flushes once per loop iteration, so frames leave in large TLS
 * records; after SSL_ERROR_WANT_WRITE the same buffer and length are
 * retried, and nothing new is pulled from nghttp2 until that write is done.
 *
 * Streams live in one array in the order they were opened (connection 0's
 * paths, then connection 1's, ...). nghttp2 stream user data points at the
 * entry, so a lookup is O(1). A stream's parser buffers grow lazily and are
 * freed when it closes, which keeps 4,000 streams on each of 50 connections
 * cheap.
 *
 * Flow control is manual (no_auto_window_update): each DATA chunk is
 * consumed as soon as it is parsed, except on the --stall-stream, whose
 * stream window is never reopened while the connection window still is.
 * That gives a test one stuck reader among fast ones on the same
 * connection. The connection window is widened to CLIENT_CONN_WINDOW so
 * that it never limits 4,000 streams.
 *
 * TLS, the nghttp2 session glue, the SSE parser and the option parser
 * come from the client library in tools/lib/ (cl_*), shared with
 * sluice-bench and sluice-probe.
 *
 * Rejected alternative: a plain poll() loop. libev is linked already, and
 * its timer gives the hard --timeout-ms bound, and its prepare watcher the
 * flush before each sleep, with no bookkeeping of our own.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "cl_buf.h"
#include "cl_conn.h"
#include "cl_file.h"
#include "cl_h2.h"
#include "cl_log.h"
#include "cl_mem.h"
#include "cl_opt.h"
#include "cl_sse.h"
#include "cl_target.h"
#include "cl_time.h"
#include "cl_tls.h"

#define CLIENT_OUT_SOFT_BYTES 65536        /* stop pulling frames from nghttp2 */
#define CLIENT_CONN_WINDOW (16 << 20)      /* bytes; connection-level window */
#define CLIENT_PER_STREAM_MAX 50           /* per_stream is reported up to this */
#define CLIENT_GRACE_S 0.25                /* seconds to flush GOAWAY at the end */
#define CLIENT_STATUS_MAX 600

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct opts {
    struct cl_target target; /* --connect and TLS: the server */
    bool verbose;
    unsigned connections;
    char **paths; /* owned; npaths <= paths_cap */
    size_t npaths, paths_cap;
    struct cl_h2_headers headers; /* --header */
    long long expect_events; /* -1: not set */
    long long expect_total;  /* -1: not set */
    long long stall_stream;  /* stream index; -1: none */
    long long dump_raw;      /* stream index; -1: none */
    const char *ready_file;
    const char *events_out;
    const char *raw_out;
    struct cl_h2_settings h2; /* --window-size, and this program's constants */
    unsigned long long timeout_ms;
};

struct client;
struct conn;

struct stream {
    struct conn *conn;
    const char *path;      /* borrowed from opts.paths */
    int32_t id;            /* HTTP/2 stream id assigned at submission */
    uint16_t status;       /* last :status seen; 0 before any */
    bool has_retry;
    bool settled;          /* final status known, or closed */
    bool met;              /* events >= --expect-events, counted once */
    bool closed;
    bool peer_ended;       /* END_STREAM received */
    bool reset;            /* closed without END_STREAM; reset_code says why */
    uint32_t reset_code;
    uint32_t retry_ms;
    uint64_t events, comments, bytes;
    char *content_type;    /* owned; NULL until seen */
    struct cl_sse sse;     /* the WHATWG parser; its buffers are freed at close */
    struct cl_buf headers; /* --verbose only: "name\0value\0" pairs */
};

struct conn {
    struct cl_conn net;     /* socket, TLS, pending output; net.state is the conn's */
    bool dirty;             /* nghttp2 may have output: flush before sleeping */
    struct client *client;
    nghttp2_session *session;
    struct stream *streams; /* this connection's slice, opts.npaths long */
};

struct client {
    struct opts o;
    struct ev_loop *loop;
    ev_timer timer;
    ev_prepare prepare;
    FILE *events_out, *raw_out;
    struct conn *conns;     /* o.connections entries */
    struct stream *streams; /* nstreams entries, in opening order */
    size_t nstreams;
    unsigned conns_open;    /* not CL_CONN_IDLE */
    unsigned conns_lost;    /* closed by an error after the handshake */
    size_t settled, closed, ended, reset, met;
    uint64_t events, comments;
    double start_ms, elapsed_ms;
    bool ready_written, finishing, timed_out, ok, failed;
};

static unsigned conn_no(const struct conn *c)
{
    return (unsigned)(c - c->client->conns);
}

static size_t stream_no(const struct stream *s)
{
    return (size_t)(s - s->conn->client->streams);
}

/* Length of the valid UTF-8 sequence at p, or 0 if it is not one. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint32_t cp, min;
    size_t len;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xE0) == 0xC0) {
        len = 2, min = 0x80, cp = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3, min = 0x800, cp = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4, min = 0x10000, cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* SSE streams are decoded as UTF-8 with replacement, so invalid bytes
 * become U+FFFD here, exactly as a browser's EventSource would show them. */
static void json_string(FILE *f, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    putc('"', f);
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        if (c >= 0x80) {
            size_t k = utf8_len(p + i, n - i);
            if (k == 0) {
                fputs("\\ufffd", f);
                k = 1;
            } else {
                fwrite(p + i, 1, k, f);
            }
            i += k;
            continue;
        }
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            putc(c, f);
        i++;
    }
    putc('"', f);
}

static void settle(struct stream *s)
{
    if (!s->settled) {
        s->settled = true;
        s->conn->client->settled++;
    }
}

/* The one place a stream's fate is decided: ended cleanly or reset. */
static void close_stream(struct stream *s, uint32_t error_code)
{
    struct client *cl = s->conn->client;
    if (s->closed)
        return;
    s->closed = true;
    cl->closed++;
    if (s->peer_ended) {
        cl->ended++;
    } else {
        s->reset = true;
        s->reset_code = error_code;
        cl->reset++;
        cl_log_debug("conn %u stream %zu (id %d) reset: %s", conn_no(s->conn), stream_no(s), s->id,
             nghttp2_http2_strerror(error_code));
    }
    settle(s);
    cl_sse_release(&s->sse);
}

static void write_event(struct client *cl, const struct stream *s, const struct cl_sse_event *ev)
{
    FILE *f = cl->events_out;
    fprintf(f, "{\"stream\":%zu,\"id\":", stream_no(s));
    json_string(f, ev->id, ev->id_len);
    if (ev->type_len > 0) {
        fputs(",\"event\":", f);
        json_string(f, ev->type, ev->type_len);
    }
    fputs(",\"data\":", f);
    json_string(f, ev->data, ev->data_len);
    fputs("}\n", f);
}

static void on_sse_event(void *ctx, const struct cl_sse_event *ev)
{
    struct stream *s = ctx;
    struct client *cl = s->conn->client;
    s->events++;
    cl->events++;
    if (cl->events_out)
        write_event(cl, s, ev);
    if (cl->o.expect_events >= 0 && !s->met && s->events >= (uint64_t)cl->o.expect_events) {
        s->met = true;
        cl->met++;
    }
}

static void on_sse_comment(void *ctx, const char *text, size_t len)
{
    struct stream *s = ctx;
    (void)text;
    (void)len;
    s->comments++;
    s->conn->client->comments++;
}

static void on_sse_retry(void *ctx, const char *value, size_t len)
{
    struct stream *s = ctx;
    if (cl_sse_retry_ms(value, len, &s->retry_ms))
        s->has_retry = true;
}

static const struct cl_sse_callbacks sse_callbacks = {
    .on_event = on_sse_event,
    .on_comment = on_sse_comment,
    .on_retry = on_sse_retry,
};

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct conn *c = user_data;
    struct stream *s;
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!s)
        return 0;
    if (cl_h2_name_is(name, namelen, ":status")) {
        s->status = (uint16_t)cl_h2_status(value, valuelen);
    } else if (cl_h2_name_is(name, namelen, "content-type")) {
        free(s->content_type);
        s->content_type = cl_mem_strndup((const char *)value, valuelen);
    }
    if (c->client->o.verbose) {
        cl_buf_append(&s->headers, name, namelen);
        cl_buf_append(&s->headers, "", 1);
        cl_buf_append(&s->headers, value, valuelen);
        cl_buf_append(&s->headers, "", 1);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    struct stream *s = frame->hd.stream_id
                           ? nghttp2_session_get_stream_user_data(session, frame->hd.stream_id)
                           : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (s && s->status >= 200)
            settle(s);
        if (s && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            s->peer_ended = true;
        break;
    case NGHTTP2_DATA:
        if (s && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            s->peer_ended = true;
        break;
    case NGHTTP2_GOAWAY:
        fprintf(stderr, "sluice-client: conn %u: GOAWAY last_stream_id=%d error=%s\n", conn_no(c),
                frame->goaway.last_stream_id,
                nghttp2_http2_strerror(frame->goaway.error_code));
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            cl_log_debug("conn %u: SETTINGS, max concurrent streams %u", conn_no(c),
                 nghttp2_session_get_remote_settings(session,
                                                     NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS));
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    struct conn *c = user_data;
    struct client *cl = c->client;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    int rv;
    (void)flags;
    if (s && (long long)stream_no(s) == cl->o.stall_stream)
        rv = nghttp2_session_consume_connection(session, len);
    else
        rv = nghttp2_session_consume(session, stream_id, len);
    if (rv != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    /* Counts freeze when the run is decided, so the report matches it. */
    if (!s || cl->finishing)
        return 0;
    s->bytes += len;
    if (cl->raw_out && (long long)stream_no(s) == cl->o.dump_raw)
        fwrite(data, 1, len, cl->raw_out);
    cl_sse_feed(&s->sse, (const char *)data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct conn *c = user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s && !c->client->finishing)
        close_stream(s, error_code);
    return 0;
}

/* A request that never left (GOAWAY, stream ids exhausted) has no nghttp2
 * stream yet; ids were handed out in submission order, so map it back. */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame,
                             int lib_error_code, void *user_data)
{
    struct conn *c = user_data;
    struct client *cl = c->client;
    (void)session;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id <= 0 || cl->finishing)
        return 0;
    size_t i = (size_t)(frame->hd.stream_id - 1) / 2;
    if (i < cl->o.npaths && c->streams[i].id == frame->hd.stream_id) {
        cl_log_debug("conn %u stream %zu not sent: %s", conn_no(c), stream_no(&c->streams[i]),
             nghttp2_strerror(lib_error_code));
        close_stream(&c->streams[i], NGHTTP2_REFUSED_STREAM);
    }
    return 0;
}

static const struct cl_h2_handlers h2_handlers = {
    .on_header = on_header,
    .on_frame_recv = on_frame_recv,
    .on_data_chunk_recv = on_data_chunk_recv,
    .on_stream_close = on_stream_close,
    .on_frame_not_send = on_frame_not_send,
};

static void conn_close(struct conn *c)
{
    if (c->net.state == CL_CONN_IDLE)
        return;
    nghttp2_session_del(c->session);
    c->session = NULL;
    cl_conn_close(&c->net, true);
    c->client->conns_open--;
}

/* A connection error after the handshake: its open streams stay open in
 * the report, and the run goes on with the other connections. */
static void conn_lost(struct conn *c, const char *why)
{
    struct client *cl = c->client;
    if (!cl->finishing) {
        fprintf(stderr, "sluice-client: conn %u lost: %s\n", conn_no(c), why);
        cl->conns_lost++;
    }
    conn_close(c);
}

/* Before the handshake completes, any error ends the whole run (exit 2). */
static void conn_fail(struct conn *c, const char *what, const char *why)
{
    struct client *cl = c->client;
    fprintf(stderr, "sluice-client: conn %u: %s: %s\n", conn_no(c), what, why);
    cl->failed = true;
    conn_close(c);
    ev_break(cl->loop, EVBREAK_ALL);
}

static void flush_output(struct conn *c)
{
    const char *why = cl_h2_flush(c->session, &c->net, CLIENT_OUT_SOFT_BYTES);
    if (why) {
        conn_lost(c, why);
        return;
    }
    if (c->net.out.len == 0 && !nghttp2_session_want_read(c->session) &&
        !nghttp2_session_want_write(c->session)) {
        cl_log_debug("conn %u: session over", conn_no(c));
        conn_close(c);
    }
}

static bool on_read(struct cl_conn *net, const char *buf, size_t n)
{
    struct conn *c = container_of(net, struct conn, net);
    ssize_t rv = nghttp2_session_mem_recv(c->session, (const uint8_t *)buf, n);
    if (rv < 0) {
        conn_lost(c, nghttp2_strerror((int)rv));
        return false;
    }
    return true;
}

static void submit_requests(struct conn *c)
{
    const struct opts *o = &c->client->o;
    size_t nnv = 5 + o->headers.n;
    nghttp2_nv *nv = cl_mem_realloc(NULL, nnv * sizeof *nv);
    nv[0] = cl_h2_nv(":method", "GET");
    nv[1] = cl_h2_nv(":scheme", "https");
    nv[2] = cl_h2_nv(":authority", o->target.authority);
    nv[4] = cl_h2_nv("accept", "text/event-stream");
    if (o->headers.n > 0)
        memcpy(nv + 5, o->headers.nv, o->headers.n * sizeof *nv);
    for (size_t i = 0; i < o->npaths; i++) {
        struct stream *s = &c->streams[i];
        nv[3] = cl_h2_nv(":path", s->path);
        int32_t id = nghttp2_submit_request(c->session, NULL, nv, nnv, NULL, s);
        if (id < 0) {
            fprintf(stderr, "sluice-client: conn %u stream %zu: %s\n", conn_no(c), stream_no(s),
                    nghttp2_strerror(id));
            close_stream(s, NGHTTP2_REFUSED_STREAM);
            continue;
        }
        s->id = id;
    }
    free(nv);
}

static void start_session(struct conn *c)
{
    struct client *cl = c->client;
    int rv = cl_h2_session_new(&c->session, &h2_handlers, c, &cl->o.h2);
    if (rv != 0) {
        conn_fail(c, "nghttp2", nghttp2_strerror(rv));
        return;
    }
    submit_requests(c);
    c->dirty = true;
    cl_conn_watch(&c->net, EV_READ);
}

static void on_open(struct cl_conn *net)
{
    struct conn *c = container_of(net, struct conn, net);
    char alpn[16];
    cl_tls_alpn(net->ssl, alpn, sizeof alpn);
    if (strcmp(alpn, "h2") != 0) {
        conn_fail(c, "ALPN", "server did not select h2");
        return;
    }
    cl_log_debug("conn %u: %s, ALPN h2", conn_no(c), SSL_get_version(net->ssl));
    start_session(c);
}

static void on_fail(struct cl_conn *net, const char *what, const char *why)
{
    conn_fail(container_of(net, struct conn, net), what, why);
}

/* Reads what is ready; the peer's close or a read error loses the connection. */
static void on_ready(struct cl_conn *net, int revents)
{
    struct conn *c = container_of(net, struct conn, net);
    c->dirty = true;
    if (!(revents & EV_READ) && !net->read_wants_write)
        return;
    ssize_t rc = cl_conn_read(net);
    if (rc != CL_TLS_AGAIN && rc != CL_CONN_STOPPED)
        conn_lost(c, rc == 0 ? "peer closed the connection" : cl_conn_error(net));
}

static const struct cl_conn_callbacks conn_callbacks = {
    .on_open = on_open,
    .on_fail = on_fail,
    .on_ready = on_ready,
    .on_read = on_read,
};

static int conn_connect(struct conn *c)
{
    if (cl_conn_start(&c->net, c->client->o.target.addr) < 0) {
        fprintf(stderr, "sluice-client: conn %u: connect: %s\n", conn_no(c), strerror(errno));
        return -1;
    }
    c->client->conns_open++;
    return 0;
}

/* Whether the run is decided; sets ok. */
static bool run_decided(struct client *cl)
{
    const struct opts *o = &cl->o;
    bool all_closed = cl->closed == cl->nstreams;
    bool expecting = o->expect_events >= 0 || o->expect_total >= 0;
    bool met = (o->expect_events < 0 || cl->met == cl->nstreams) &&
               (o->expect_total < 0 || cl->events >= (uint64_t)o->expect_total);
    if (expecting && met) {
        cl->ok = true;
        return true;
    }
    if (!expecting && all_closed) {
        cl->ok = cl->ended == cl->nstreams;
        return true;
    }
    return all_closed || cl->conns_open == 0;
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct client *cl = container_of(w, struct client, prepare);
    (void)revents;
    if (cl->failed)
        return;
    for (unsigned i = 0; i < cl->o.connections; i++) {
        struct conn *c = &cl->conns[i];
        if (c->net.state == CL_CONN_OPEN && c->dirty) {
            c->dirty = false;
            flush_output(c);
        }
    }
    if (cl->finishing) {
        if (cl->conns_open == 0)
            ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (cl->o.ready_file && !cl->ready_written && cl->settled == cl->nstreams) {
        cl->ready_written = true;
        cl_file_write_ready(cl->o.ready_file);
    }
    if (run_decided(cl)) {
        cl->elapsed_ms = cl_time_mono_ms() - cl->start_ms;
        ev_break(loop, EVBREAK_ALL);
    }
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct client *cl = container_of(w, struct client, timer);
    (void)revents;
    if (!cl->finishing) {
        cl->timed_out = true;
        cl->elapsed_ms = cl_time_mono_ms() - cl->start_ms;
    }
    ev_break(loop, EVBREAK_ALL);
}

/* GOAWAY on every connection, then a short flush within the hard bound. */
static void finish(struct client *cl)
{
    double left_s = ((double)cl->o.timeout_ms - (cl_time_mono_ms() - cl->start_ms)) / 1e3;
    cl->finishing = true;
    for (unsigned i = 0; i < cl->o.connections; i++) {
        struct conn *c = &cl->conns[i];
        if (c->net.state == CL_CONN_OPEN) {
            nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
            flush_output(c);
        }
    }
    if (cl->conns_open > 0 && left_s > 0.001) {
        ev_timer_stop(cl->loop, &cl->timer);
        ev_timer_set(&cl->timer, left_s < CLIENT_GRACE_S ? left_s : CLIENT_GRACE_S, 0.);
        ev_timer_start(cl->loop, &cl->timer);
        ev_run(cl->loop, 0);
    }
    for (unsigned i = 0; i < cl->o.connections; i++)
        conn_close(&cl->conns[i]);
}

static void print_stream(const struct client *cl, const struct stream *s)
{
    printf("{\"path\":");
    json_string(stdout, s->path, strlen(s->path));
    printf(",\"status\":%u,\"content_type\":", s->status);
    if (s->content_type)
        json_string(stdout, s->content_type, strlen(s->content_type));
    else
        printf("null");
    printf(",\"events\":%" PRIu64 ",\"comments\":%" PRIu64 ",\"retry\":", s->events, s->comments);
    if (s->has_retry)
        printf("%" PRIu32, s->retry_ms);
    else
        printf("null");
    printf(",\"last_id\":");
    size_t last_len = 0;
    const char *last = cl_sse_last_id(&s->sse, &last_len);
    if (last)
        json_string(stdout, last, last_len);
    else
        printf("null");
    printf(",\"ended\":%s,\"reset_code\":", s->peer_ended && s->closed ? "true" : "false");
    if (s->reset)
        printf("%" PRIu32, s->reset_code);
    else
        printf("null");
    printf(",\"bytes\":%" PRIu64, s->bytes);
    if (cl->o.verbose) {
        printf(",\"headers\":[");
        for (uint32_t i = 0; i < s->headers.len;) {
            const char *n = s->headers.p + i;
            const char *v = n + strlen(n) + 1;
            printf("%s[", i ? "," : "");
            json_string(stdout, n, strlen(n));
            putchar(',');
            json_string(stdout, v, strlen(v));
            putchar(']');
            i = (uint32_t)(v + strlen(v) + 1 - s->headers.p);
        }
        putchar(']');
    }
    putchar('}');
}

static void print_report(const struct client *cl)
{
    static size_t status_counts[CLIENT_STATUS_MAX];
    uint64_t min = UINT64_MAX, max = 0;
    for (size_t i = 0; i < cl->nstreams; i++) {
        const struct stream *s = &cl->streams[i];
        status_counts[s->status < CLIENT_STATUS_MAX ? s->status : 0]++;
        min = s->events < min ? s->events : min;
        max = s->events > max ? s->events : max;
    }
    printf("{\"ok\":%s,\"connections\":%u,\"streams\":%zu,\"events\":%" PRIu64
           ",\"comments\":%" PRIu64 ",\"elapsed_ms\":%.0f,\"status_counts\":{",
           cl->ok ? "true" : "false", cl->o.connections, cl->nstreams, cl->events, cl->comments,
           cl->elapsed_ms);
    bool first = true;
    for (unsigned st = 0; st < CLIENT_STATUS_MAX; st++) {
        if (status_counts[st]) {
            printf("%s\"%u\":%zu", first ? "" : ",", st, status_counts[st]);
            first = false;
        }
    }
    printf("},\"streams_ended\":%zu,\"streams_reset\":%zu,\"min_events\":%" PRIu64
           ",\"max_events\":%" PRIu64 ",\"timed_out\":%s,\"connections_lost\":%u",
           cl->ended, cl->reset, min, max, cl->timed_out ? "true" : "false", cl->conns_lost);
    if (cl->nstreams <= CLIENT_PER_STREAM_MAX) {
        printf(",\"per_stream\":[");
        for (size_t i = 0; i < cl->nstreams; i++) {
            if (i)
                putchar(',');
            print_stream(cl, &cl->streams[i]);
        }
        putchar(']');
    }
    printf("}\n");
    fflush(stdout);
}

static void add_path(struct opts *o, const char *path, size_t len)
{
    if (o->npaths == o->paths_cap) {
        o->paths_cap = o->paths_cap ? o->paths_cap * 2 : 16;
        o->paths = cl_mem_realloc(o->paths, o->paths_cap * sizeof *o->paths);
    }
    o->paths[o->npaths++] = cl_mem_strndup(path, len);
}

static bool on_opt_path(void *ctx, const char *arg)
{
    add_path(ctx, arg, strlen(arg));
    return true;
}

static bool on_opt_paths_file(void *ctx, const char *file)
{
    FILE *f = fopen(file, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (!f) {
        fprintf(stderr, "sluice-client: %s: %s\n", file, strerror(errno));
        return false;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && isspace((unsigned char)line[n - 1]))
            n--;
        if (n > 0 && line[0] != '#')
            add_path(ctx, line, (size_t)n);
    }
    free(line);
    fclose(f);
    return true;
}

static bool on_opt_repeat_path(void *ctx, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    unsigned long long count;
    if (!colon || colon == arg || !cl_opt_num(colon + 1, 1000000, &count))
        return false;
    for (unsigned long long i = 0; i < count; i++)
        add_path(ctx, arg, (size_t)(colon - arg));
    return true;
}

/* 0, 1 after --help, -1 after a usage error (said on stderr). */
static int parse_options(struct opts *o, int argc, char **argv)
{
    const struct cl_opt opts[] = {
        CL_TARGET_OPTS(&o->target),
        CL_OPT_UINT("connections", &o->connections, 1, 100000, "N", "TLS connections (default 1)"),
        CL_OPT_CALL("path", on_opt_path, o, "PATH", "open PATH once per connection (repeatable)"),
        CL_OPT_CALL("paths-file", on_opt_paths_file, o, "FILE",
                    "more paths, one a line (blank and # lines skipped)"),
        CL_OPT_CALL("repeat-path", on_opt_repeat_path, o, "PATH:COUNT",
                    "open PATH COUNT times per connection (repeatable)"),
        CL_OPT_CALL("header", cl_h2_headers_add, &o->headers, "'name: value'",
                    "extra request header (repeatable)"),
        CL_OPT_LL("expect-events", &o->expect_events, 0, INT64_MAX, "N",
                  "done when every stream has received >= N events"),
        CL_OPT_LL("expect-total", &o->expect_total, 0, INT64_MAX, "N",
                  "done when all streams together have >= N events"),
        CL_OPT_STR("ready-file", &o->ready_file, "FILE",
                   "write \"ready\\n\" once every stream has its status\n"
                   "(or has closed without one)"),
        CL_OPT_UINT("window-size", &o->h2.window_size, 0, NGHTTP2_MAX_WINDOW_SIZE, "BYTES",
                    "SETTINGS_INITIAL_WINDOW_SIZE (default 65535)"),
        CL_OPT_LL("stall-stream", &o->stall_stream, 0, INT64_MAX, "INDEX",
                  "never reopen the flow-control window of stream INDEX"),
        CL_OPT_ULL("timeout-ms", &o->timeout_ms, 0, 86400000, "N",
                   "hard limit on the whole run (default 10000)"),
        CL_OPT_STR("events-out", &o->events_out, "FILE",
                   "each event as a JSON line {stream,id,event?,data}"),
        CL_OPT_LL("dump-raw", &o->dump_raw, 0, INT64_MAX, "INDEX",
                  "write the raw body of stream INDEX to --raw-out FILE"),
        CL_OPT_STR("raw-out", &o->raw_out, "FILE", NULL),
        CL_OPT_FLAG("verbose", &o->verbose, "log to stderr; per_stream gets \"headers\""),
    };
    const struct cl_opt_spec spec = {
        .synopsis = "usage: sluice-client --connect HOST:PORT --path PATH [options]\n",
        .opts = opts,
        .nopts = sizeof opts / sizeof opts[0],
        .epilogue =
            "Streams are numbered in opening order: connection 0's paths, then 1's, ...\n"
            "Paths keep their command-line order. Without --expect-*, the run ends once\n"
            "every stream has closed, and is ok if all ended with END_STREAM (none reset).\n"
            "Prints one JSON line on stdout.\n"
            "Exit status: 0 ok, 1 not ok (timeout, expectation unmet), 2 usage,\n"
            "connection or TLS error.\n",
    };
    o->connections = 1;
    /* Flow control is manual (see the top); the connection window never limits. */
    o->h2 = (struct cl_h2_settings){.window_size = NGHTTP2_INITIAL_WINDOW_SIZE,
                                    .conn_window = CLIENT_CONN_WINDOW,
                                    .manual_window = true,
                                    .wait_peer_settings = true};
    o->timeout_ms = 10000;
    o->expect_events = o->expect_total = o->stall_stream = o->dump_raw = -1;
    int rc = cl_opt_parse(&spec, argc, argv);
    if (rc != 0)
        return rc;
    size_t nstreams = (size_t)o->connections * o->npaths;
    if (o->npaths == 0)
        return cl_opt_fail(&spec, "at least one path is required");
    if (o->stall_stream >= (long long)nstreams)
        return cl_opt_fail(&spec, "--stall-stream is not a stream index");
    if (o->dump_raw >= (long long)nstreams)
        return cl_opt_fail(&spec, "--dump-raw is not a stream index");
    if ((o->dump_raw >= 0) != (o->raw_out != NULL))
        return cl_opt_fail(&spec, "--dump-raw and --raw-out go together");
    return 0;
}

static FILE *open_out(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fprintf(stderr, "sluice-client: %s: %s\n", path, strerror(errno));
    return f;
}

static int setup(struct client *cl)
{
    struct opts *o = &cl->o;
    if (cl_target_open(&o->target, "\x02h2") < 0)
        return -1;
    if (o->events_out && !(cl->events_out = open_out(o->events_out)))
        return -1;
    if (o->raw_out && !(cl->raw_out = open_out(o->raw_out)))
        return -1;

    cl->nstreams = (size_t)o->connections * o->npaths;
    cl->streams = cl_mem_calloc(cl->nstreams, sizeof *cl->streams);
    cl->conns = cl_mem_calloc(o->connections, sizeof *cl->conns);
    for (unsigned i = 0; i < o->connections; i++) {
        struct conn *c = &cl->conns[i];
        c->client = cl;
        c->streams = &cl->streams[(size_t)i * o->npaths];
        for (size_t j = 0; j < o->npaths; j++) {
            c->streams[j].conn = c;
            c->streams[j].path = o->paths[j];
            cl_sse_init(&c->streams[j].sse, &sse_callbacks, &c->streams[j]);
        }
    }

    cl->loop = ev_default_loop(EVFLAG_AUTO);
    if (!cl->loop) {
        fputs("sluice-client: cannot start libev\n", stderr);
        return -1;
    }
    for (unsigned i = 0; i < o->connections; i++)
        cl_conn_init(&cl->conns[i].net, cl->loop, &conn_callbacks, o->target.tls,
                     cl_target_tls_name(&o->target), !o->target.insecure);
    cl->start_ms = cl_time_mono_ms();
    ev_timer_init(&cl->timer, on_timeout, (double)o->timeout_ms / 1e3, 0.);
    ev_timer_start(cl->loop, &cl->timer);
    ev_prepare_init(&cl->prepare, on_prepare);
    ev_prepare_start(cl->loop, &cl->prepare);
    for (unsigned i = 0; i < o->connections; i++) {
        if (conn_connect(&cl->conns[i]) < 0)
            return -1;
    }
    return 0;
}

static void dispose(struct client *cl)
{
    struct opts *o = &cl->o;
    if (cl->conns) {
        for (unsigned i = 0; i < o->connections; i++) {
            conn_close(&cl->conns[i]);
            cl_conn_dispose(&cl->conns[i].net);
        }
    }
    for (size_t i = 0; cl->streams && i < cl->nstreams; i++) {
        struct stream *s = &cl->streams[i];
        free(s->content_type);
        cl_sse_dispose(&s->sse);
        cl_buf_dispose(&s->headers);
    }
    free(cl->streams);
    free(cl->conns);
    if (cl->loop)
        ev_loop_destroy(cl->loop);
    if (cl->events_out)
        fclose(cl->events_out);
    if (cl->raw_out)
        fclose(cl->raw_out);
    for (size_t i = 0; i < o->npaths; i++)
        free(o->paths[i]);
    free(o->paths);
    cl_h2_headers_dispose(&o->headers);
    cl_target_dispose(&o->target);
}

int main(int argc, char **argv)
{
    struct client cl = {0};
    cl_log_init("sluice-client");
    int rc = parse_options(&cl.o, argc, argv);
    if (rc != 0) {
        dispose(&cl);
        return rc > 0 ? 0 : 2;
    }
    cl_log_set_verbose(cl.o.verbose);
    signal(SIGPIPE, SIG_IGN);
    if (setup(&cl) < 0) {
        rc = 2;
        goto out;
    }
    ev_run(cl.loop, 0);
    if (cl.failed) {
        rc = 2;
        goto out;
    }
    finish(&cl);
    print_report(&cl);
    rc = cl.ok ? 0 : 1;
out:
    dispose(&cl);
    return rc;
}
