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
 * Rejected alternative: a plain poll() loop. libev is linked already, and
 * its timer gives the hard --timeout-ms bound, and its prepare watcher the
 * flush before each sleep, with no bookkeeping of our own.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define CLIENT_READ_CHUNK 16384            /* bytes per SSL_read; one TLS record */
#define CLIENT_READS_PER_WAKE 16           /* bounds one connection's turn */
#define CLIENT_OUT_SOFT_BYTES 65536        /* stop pulling frames from nghttp2 */
#define CLIENT_CONN_WINDOW (16 << 20)      /* bytes; connection-level window */
#define CLIENT_PER_STREAM_MAX 50           /* per_stream is reported up to this */
#define CLIENT_GRACE_S 0.25                /* seconds to flush GOAWAY at the end */
#define CLIENT_STATUS_MAX 600

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct sbuf {
    char *p;
    uint32_t len; /* bytes used; len <= cap */
    uint32_t cap;
};

struct opts {
    char *host;            /* without brackets; owned */
    char *port;            /* owned */
    const char *authority; /* the --connect argument as given */
    const char *cacert;
    const char *servername;
    bool insecure;
    bool verbose;
    unsigned connections;
    char **paths; /* owned; npaths <= paths_cap */
    size_t npaths, paths_cap;
    nghttp2_nv *headers; /* owned names and values, lowercase names */
    size_t nheaders;
    long long expect_events; /* -1: not set */
    long long expect_total;  /* -1: not set */
    long long stall_stream;  /* stream index; -1: none */
    long long dump_raw;      /* stream index; -1: none */
    const char *ready_file;
    const char *events_out;
    const char *raw_out;
    uint32_t window_size;   /* bytes */
    unsigned long long timeout_ms;
};

struct client;
struct conn;

struct stream {
    struct conn *conn;
    const char *path;      /* borrowed from opts.paths */
    int32_t id;            /* HTTP/2 stream id assigned at submission */
    uint16_t status;       /* last :status seen; 0 before any */
    uint8_t bom;           /* leading BOM bytes matched; 3 once past the start */
    bool cr_pending;       /* previous chunk ended in CR: a leading LF is its pair */
    bool has_id;           /* an id field was accepted into the id buffer */
    bool has_last_id;      /* an event dispatch copied the id buffer */
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
    struct sbuf line;      /* a line split across DATA chunks */
    struct sbuf data, type, id_buf, last_id; /* the WHATWG parser buffers */
    struct sbuf headers;   /* --verbose only: "name\0value\0" pairs */
};

enum conn_state { CONN_CONNECTING, CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSED };

struct conn {
    ev_io io;
    int io_events;         /* what io watches; EV_READ and/or EV_WRITE */
    int fd;
    enum conn_state state;
    bool dirty;            /* nghttp2 may have output: flush before sleeping */
    bool read_wants_write; /* SSL_read returned WANT_WRITE */
    struct client *client;
    SSL *ssl;
    nghttp2_session *session;
    struct stream *streams; /* this connection's slice, opts.npaths long */
    struct sbuf out;        /* pending plaintext; an unfinished SSL_write retries all of it */
};

struct client {
    struct opts o;
    struct ev_loop *loop;
    ev_timer timer;
    ev_prepare prepare;
    SSL_CTX *ssl_ctx;
    struct addrinfo *addr;
    nghttp2_session_callbacks *callbacks;
    FILE *events_out, *raw_out;
    struct conn *conns;     /* o.connections entries */
    struct stream *streams; /* nstreams entries, in opening order */
    size_t nstreams;
    unsigned conns_open;    /* not yet CONN_CLOSED */
    unsigned conns_lost;    /* closed by an error after the handshake */
    size_t settled, closed, ended, reset, met;
    uint64_t events, comments;
    double start_ms, elapsed_ms;
    bool ready_written, finishing, timed_out, ok, failed;
};

static void *must_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("sluice-client: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *must_strndup(const char *s, size_t n)
{
    char *p = must_realloc(NULL, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void sbuf_append(struct sbuf *b, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (n > UINT32_MAX - b->len) {
        fputs("sluice-client: buffer over 4 GiB\n", stderr);
        abort();
    }
    if (b->len + n > b->cap) {
        uint64_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        b->p = must_realloc(b->p, (size_t)cap);
        b->cap = (uint32_t)cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += (uint32_t)n;
}

static void sbuf_set(struct sbuf *b, const void *data, size_t n)
{
    b->len = 0;
    sbuf_append(b, data, n);
}

static void sbuf_dispose(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf){0};
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

__attribute__((format(printf, 2, 3))) static void logv(const struct client *cl, const char *fmt, ...)
{
    va_list ap;
    if (!cl->o.verbose)
        return;
    va_start(ap, fmt);
    fputs("sluice-client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

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
        logv(cl, "conn %u stream %zu (id %d) reset: %s", conn_no(s->conn), stream_no(s), s->id,
             nghttp2_http2_strerror(error_code));
    }
    settle(s);
    sbuf_dispose(&s->line);
    sbuf_dispose(&s->data);
    sbuf_dispose(&s->type);
    sbuf_dispose(&s->id_buf);
}

static void write_event(struct client *cl, const struct stream *s)
{
    FILE *f = cl->events_out;
    fprintf(f, "{\"stream\":%zu,\"id\":", stream_no(s));
    json_string(f, s->last_id.p, s->last_id.len);
    if (s->type.len > 0) {
        fputs(",\"event\":", f);
        json_string(f, s->type.p, s->type.len);
    }
    fputs(",\"data\":", f);
    json_string(f, s->data.p, s->data.len);
    fputs("}\n", f);
}

static void dispatch_event(struct stream *s)
{
    struct client *cl = s->conn->client;
    /* The last event id is taken even when no event follows (WHATWG). */
    if (s->has_id) {
        sbuf_set(&s->last_id, s->id_buf.p, s->id_buf.len);
        s->has_last_id = true;
    }
    if (s->data.len > 0) {
        s->data.len--; /* the LF after the last data line */
        s->events++;
        cl->events++;
        if (cl->events_out)
            write_event(cl, s);
        if (cl->o.expect_events >= 0 && !s->met && s->events >= (uint64_t)cl->o.expect_events) {
            s->met = true;
            cl->met++;
        }
    }
    s->data.len = 0;
    s->type.len = 0;
}

static bool field_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

static void process_line(struct stream *s, const char *line, size_t len)
{
    if (len == 0) {
        dispatch_event(s);
        return;
    }
    if (line[0] == ':') {
        s->comments++;
        s->conn->client->comments++;
        return;
    }
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *v = colon ? colon + 1 : line + len;
    size_t vlen = (size_t)(line + len - v);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (field_is(line, name_len, "data")) {
        sbuf_append(&s->data, v, vlen);
        sbuf_append(&s->data, "\n", 1);
    } else if (field_is(line, name_len, "event")) {
        sbuf_set(&s->type, v, vlen);
    } else if (field_is(line, name_len, "id")) {
        if (!memchr(v, '\0', vlen)) {
            sbuf_set(&s->id_buf, v, vlen);
            s->has_id = true;
        }
    } else if (field_is(line, name_len, "retry")) {
        uint64_t r = 0;
        size_t i = 0;
        while (i < vlen && v[i] >= '0' && v[i] <= '9') {
            r = r * 10 + (uint64_t)(v[i] - '0');
            if (r > UINT32_MAX)
                r = UINT32_MAX;
            i++;
        }
        if (vlen > 0 && i == vlen) {
            s->retry_ms = (uint32_t)r;
            s->has_retry = true;
        }
    }
}

static void end_line(struct stream *s, const char *p, size_t n)
{
    if (s->line.len == 0) {
        process_line(s, p, n);
        return;
    }
    sbuf_append(&s->line, p, n);
    process_line(s, s->line.p, s->line.len);
    s->line.len = 0;
}

/* Lines end in CRLF, LF or CR; a CR that ends one chunk pairs with an LF
 * that starts the next, so that split is still one line end. */
static void parse_bytes(struct stream *s, const char *p, size_t n)
{
    size_t i = 0;
    if (s->cr_pending && n > 0) {
        s->cr_pending = false;
        if (p[0] == '\n')
            i = 1;
    }
    size_t start = i;
    for (; i < n; i++) {
        if (p[i] != '\r' && p[i] != '\n')
            continue;
        end_line(s, p + start, i - start);
        if (p[i] == '\r') {
            if (i + 1 == n)
                s->cr_pending = true;
            else if (p[i + 1] == '\n')
                i++;
        }
        start = i + 1;
    }
    if (start < n)
        sbuf_append(&s->line, p + start, n - start);
}

/* One leading U+FEFF is not part of the stream (WHATWG); its bytes may be
 * split across DATA frames, so a partial match is held and replayed. */
static void feed_body(struct stream *s, const char *p, size_t n)
{
    static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
    while (s->bom < 3 && n > 0) {
        if (p[0] == bom[s->bom]) {
            s->bom++;
            p++;
            n--;
            continue;
        }
        uint8_t held = s->bom;
        s->bom = 3;
        parse_bytes(s, bom, held);
    }
    parse_bytes(s, p, n);
}

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
    if (field_is((const char *)name, namelen, ":status")) {
        unsigned st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            st = st * 10 + (unsigned)(value[i] - '0');
        s->status = (uint16_t)st;
    } else if (field_is((const char *)name, namelen, "content-type")) {
        free(s->content_type);
        s->content_type = must_strndup((const char *)value, valuelen);
    }
    if (c->client->o.verbose) {
        sbuf_append(&s->headers, name, namelen);
        sbuf_append(&s->headers, "", 1);
        sbuf_append(&s->headers, value, valuelen);
        sbuf_append(&s->headers, "", 1);
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
            logv(c->client, "conn %u: SETTINGS, max concurrent streams %u", conn_no(c),
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
    feed_body(s, (const char *)data, len);
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
        logv(cl, "conn %u stream %zu not sent: %s", conn_no(c), stream_no(&c->streams[i]),
             nghttp2_strerror(lib_error_code));
        close_stream(&c->streams[i], NGHTTP2_REFUSED_STREAM);
    }
    return 0;
}

static void set_io(struct conn *c, int events)
{
    if (events == c->io_events)
        return;
    ev_io_stop(c->client->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->client->loop, &c->io);
    c->io_events = events;
}

static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    ev_io_stop(c->client->loop, &c->io);
    nghttp2_session_del(c->session);
    c->session = NULL;
    if (c->ssl) {
        if (c->state == CONN_OPEN)
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    sbuf_dispose(&c->out);
    c->state = CONN_CLOSED;
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

static const char *tls_error(void)
{
    static char msg[256];
    unsigned long e = ERR_get_error();
    if (e == 0)
        return errno ? strerror(errno) : "connection closed";
    ERR_error_string_n(e, msg, sizeof msg);
    return msg;
}

static void fill_output(struct conn *c)
{
    while (c->out.len < CLIENT_OUT_SOFT_BYTES) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            conn_lost(c, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0)
            return;
        sbuf_append(&c->out, data, (size_t)n);
    }
}

static void flush_output(struct conn *c)
{
    while (c->state == CONN_OPEN) {
        if (c->out.len == 0)
            fill_output(c);
        if (c->state != CONN_OPEN || c->out.len == 0)
            break;
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out.p, (int)c->out.len);
        if (n > 0) {
            c->out.len = 0;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
            break;
        conn_lost(c, tls_error());
    }
    if (c->state != CONN_OPEN)
        return;
    if (c->out.len == 0 && !nghttp2_session_want_read(c->session) &&
        !nghttp2_session_want_write(c->session)) {
        logv(c->client, "conn %u: session over", conn_no(c));
        conn_close(c);
        return;
    }
    set_io(c, EV_READ | (c->out.len > 0 || c->read_wants_write ? EV_WRITE : 0));
}

static void read_input(struct conn *c)
{
    char buf[CLIENT_READ_CHUNK];
    c->read_wants_write = false;
    /* Bytes OpenSSL already holds do not make the socket readable again,
     * so the per-wake bound only applies once they are drained. */
    for (int i = 0; i < CLIENT_READS_PER_WAKE || SSL_has_pending(c->ssl); i++) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_READ)
                return;
            if (err == SSL_ERROR_WANT_WRITE) {
                c->read_wants_write = true;
                return;
            }
            conn_lost(c, err == SSL_ERROR_ZERO_RETURN ? "peer closed the connection" : tls_error());
            return;
        }
        ssize_t rv = nghttp2_session_mem_recv(c->session, (const uint8_t *)buf, (size_t)n);
        if (rv < 0) {
            conn_lost(c, nghttp2_strerror((int)rv));
            return;
        }
    }
}

static void submit_requests(struct conn *c)
{
    const struct opts *o = &c->client->o;
    size_t nnv = 5 + o->nheaders;
    nghttp2_nv *nv = must_realloc(NULL, nnv * sizeof *nv);
#define NV(n, v) ((nghttp2_nv){(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE})
    nv[0] = NV(":method", "GET");
    nv[1] = NV(":scheme", "https");
    nv[2] = NV(":authority", o->authority);
    nv[4] = NV("accept", "text/event-stream");
#undef NV
    if (o->nheaders > 0)
        memcpy(nv + 5, o->headers, o->nheaders * sizeof *nv);
    for (size_t i = 0; i < o->npaths; i++) {
        struct stream *s = &c->streams[i];
        nv[3] = (nghttp2_nv){(uint8_t *)":path", (uint8_t *)s->path, 5, strlen(s->path),
                             NGHTTP2_NV_FLAG_NONE};
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
    nghttp2_option *opt;
    nghttp2_settings_entry iv[2] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cl->o.window_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* nghttp2 assumes 100 until the server's SETTINGS arrive; a server with
     * a lower limit would refuse the excess, so hold every request until
     * its real limit is known (one round trip, already under way). */
    nghttp2_option_set_peer_max_concurrent_streams(opt, 0);
    int rv = nghttp2_session_client_new2(&c->session, cl->callbacks, c, opt);
    nghttp2_option_del(opt);
    if (rv == 0)
        rv = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
    if (rv == 0)
        rv = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                                   CLIENT_CONN_WINDOW);
    if (rv != 0) {
        conn_fail(c, "nghttp2", nghttp2_strerror(rv));
        return;
    }
    c->state = CONN_OPEN;
    submit_requests(c);
    c->dirty = true;
    set_io(c, EV_READ);
}

static void do_handshake(struct conn *c)
{
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ) {
            set_io(c, EV_READ);
        } else if (err == SSL_ERROR_WANT_WRITE) {
            set_io(c, EV_WRITE);
        } else {
            long vr = SSL_get_verify_result(c->ssl);
            conn_fail(c, "TLS handshake",
                      vr != X509_V_OK ? X509_verify_cert_error_string(vr) : tls_error());
        }
        return;
    }
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        conn_fail(c, "ALPN", "server did not select h2");
        return;
    }
    logv(c->client, "conn %u: %s, ALPN h2", conn_no(c), SSL_get_version(c->ssl));
    start_session(c);
}

static bool is_ip_literal(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

static void finish_connect(struct conn *c)
{
    const struct opts *o = &c->client->o;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        conn_fail(c, "connect", strerror(err));
        return;
    }
    c->ssl = SSL_new(c->client->ssl_ctx);
    if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
        conn_fail(c, "TLS", tls_error());
        return;
    }
    const char *name = o->servername ? o->servername : o->host;
    /* An IP address is not a valid SNI name (RFC 6066 section 3). */
    if (!is_ip_literal(name))
        SSL_set_tlsext_host_name(c->ssl, name);
    if (!o->insecure) {
        if (is_ip_literal(name))
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
        else
            SSL_set1_host(c->ssl, name);
    }
    SSL_set_connect_state(c->ssl);
    c->state = CONN_HANDSHAKE;
    do_handshake(c);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = container_of(w, struct conn, io);
    (void)loop;
    switch (c->state) {
    case CONN_CONNECTING:
        finish_connect(c);
        break;
    case CONN_HANDSHAKE:
        do_handshake(c);
        break;
    case CONN_OPEN:
        if ((revents & EV_READ) || c->read_wants_write)
            read_input(c);
        c->dirty = true;
        break;
    case CONN_CLOSED:
        break;
    }
}

static int conn_connect(struct conn *c)
{
    const struct addrinfo *ai = c->client->addr;
    int one = 1;
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fprintf(stderr, "sluice-client: socket: %s\n", strerror(errno));
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->client->conns_open++;
    c->state = CONN_CONNECTING;
    c->io_events = EV_WRITE;
    ev_io_init(&c->io, on_io, c->fd, EV_WRITE);
    ev_io_start(c->client->loop, &c->io);
    if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "sluice-client: conn %u: connect: %s\n", conn_no(c), strerror(errno));
        conn_close(c);
        return -1;
    }
    return 0;
}

static void write_ready_file(struct client *cl)
{
    size_t n = strlen(cl->o.ready_file);
    char *tmp = must_realloc(NULL, n + 5);
    memcpy(tmp, cl->o.ready_file, n);
    memcpy(tmp + n, ".tmp", 5);
    /* Written aside and renamed, so a poller never reads a partial file. */
    FILE *f = fopen(tmp, "w");
    if (!f || fputs("ready\n", f) == EOF || fclose(f) != 0 || rename(tmp, cl->o.ready_file) != 0)
        fprintf(stderr, "sluice-client: %s: %s\n", cl->o.ready_file, strerror(errno));
    free(tmp);
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
        if (c->state == CONN_OPEN && c->dirty) {
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
        write_ready_file(cl);
    }
    if (run_decided(cl)) {
        cl->elapsed_ms = now_ms() - cl->start_ms;
        ev_break(loop, EVBREAK_ALL);
    }
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct client *cl = container_of(w, struct client, timer);
    (void)revents;
    if (!cl->finishing) {
        cl->timed_out = true;
        cl->elapsed_ms = now_ms() - cl->start_ms;
    }
    ev_break(loop, EVBREAK_ALL);
}

/* GOAWAY on every connection, then a short flush within the hard bound. */
static void finish(struct client *cl)
{
    double left_s = ((double)cl->o.timeout_ms - (now_ms() - cl->start_ms)) / 1e3;
    cl->finishing = true;
    for (unsigned i = 0; i < cl->o.connections; i++) {
        struct conn *c = &cl->conns[i];
        if (c->state == CONN_OPEN) {
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
    if (s->has_last_id)
        json_string(stdout, s->last_id.p, s->last_id.len);
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

static const char usage_text[] =
    "usage: sluice-client --connect HOST:PORT --path PATH [options]\n"
    "  --connect HOST:PORT       server; also the :authority ([v6addr]:PORT works)\n"
    "  --cacert FILE             verify the server against this CA file\n"
    "  --insecure                do not verify the server certificate\n"
    "  --servername NAME         SNI and verified name (default HOST)\n"
    "  --connections N           TLS connections (default 1)\n"
    "  --path PATH               open PATH once per connection (repeatable)\n"
    "  --paths-file FILE         more paths, one a line (blank and # lines skipped)\n"
    "  --repeat-path PATH:COUNT  open PATH COUNT times per connection (repeatable)\n"
    "  --header 'name: value'    extra request header (repeatable)\n"
    "  --expect-events N         done when every stream has received >= N events\n"
    "  --expect-total N          done when all streams together have >= N events\n"
    "  --ready-file FILE         write \"ready\\n\" once every stream has its status\n"
    "                            (or has closed without one)\n"
    "  --window-size BYTES       SETTINGS_INITIAL_WINDOW_SIZE (default 65535)\n"
    "  --stall-stream INDEX      never reopen the flow-control window of stream INDEX\n"
    "  --timeout-ms N            hard limit on the whole run (default 10000)\n"
    "  --events-out FILE         each event as a JSON line {stream,id,event?,data}\n"
    "  --dump-raw INDEX          write the raw body of stream INDEX to --raw-out FILE\n"
    "  --raw-out FILE\n"
    "  --verbose                 log to stderr; per_stream gets \"headers\"\n"
    "Streams are numbered in opening order: connection 0's paths, then 1's, ...\n"
    "Paths keep their command-line order. Without --expect-*, the run ends once\n"
    "every stream has closed, and is ok if all ended with END_STREAM (none reset).\n"
    "Prints one JSON line on stdout.\n"
    "Exit status: 0 ok, 1 not ok (timeout, expectation unmet), 2 usage,\n"
    "connection or TLS error.\n";

static bool parse_num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

static void add_path(struct opts *o, const char *path, size_t len)
{
    if (o->npaths == o->paths_cap) {
        o->paths_cap = o->paths_cap ? o->paths_cap * 2 : 16;
        o->paths = must_realloc(o->paths, o->paths_cap * sizeof *o->paths);
    }
    o->paths[o->npaths++] = must_strndup(path, len);
}

static int read_paths_file(struct opts *o, const char *file)
{
    FILE *f = fopen(file, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (!f) {
        fprintf(stderr, "sluice-client: %s: %s\n", file, strerror(errno));
        return -1;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && isspace((unsigned char)line[n - 1]))
            n--;
        if (n > 0 && line[0] != '#')
            add_path(o, line, (size_t)n);
    }
    free(line);
    fclose(f);
    return 0;
}

static int add_repeat_path(struct opts *o, const char *arg)
{
    const char *colon = strrchr(arg, ':');
    unsigned long long count;
    if (!colon || colon == arg || !parse_num(colon + 1, 1000000, &count))
        return -1;
    for (unsigned long long i = 0; i < count; i++)
        add_path(o, arg, (size_t)(colon - arg));
    return 0;
}

static int add_header(struct opts *o, const char *arg)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg)
        return -1;
    size_t nlen = (size_t)(colon - arg);
    char *name = must_strndup(arg, nlen);
    for (size_t i = 0; i < nlen; i++)
        name[i] = (char)tolower((unsigned char)name[i]);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    o->headers = must_realloc(o->headers, (o->nheaders + 1) * sizeof *o->headers);
    o->headers[o->nheaders++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)must_strndup(v, strlen(v)),
                                             nlen, strlen(v), NGHTTP2_NV_FLAG_NONE};
    return 0;
}

static int split_host_port(struct opts *o, const char *arg)
{
    const char *host = arg, *port;
    size_t hlen;
    if (arg[0] == '[') {
        const char *close_br = strchr(arg, ']');
        if (!close_br || close_br[1] != ':')
            return -1;
        host = arg + 1;
        hlen = (size_t)(close_br - host);
        port = close_br + 2;
    } else {
        const char *colon = strrchr(arg, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - arg);
        port = colon + 1;
    }
    if (hlen == 0 || port[0] == '\0')
        return -1;
    o->host = must_strndup(host, hlen);
    o->port = must_strndup(port, strlen(port));
    o->authority = arg;
    return 0;
}

enum {
    OPT_CONNECT = 256, OPT_CACERT, OPT_INSECURE, OPT_SERVERNAME, OPT_CONNECTIONS, OPT_PATH,
    OPT_PATHS_FILE, OPT_REPEAT_PATH, OPT_HEADER, OPT_EXPECT_EVENTS, OPT_EXPECT_TOTAL,
    OPT_READY_FILE, OPT_WINDOW_SIZE, OPT_STALL_STREAM, OPT_TIMEOUT_MS, OPT_EVENTS_OUT,
    OPT_DUMP_RAW, OPT_RAW_OUT, OPT_VERBOSE, OPT_HELP,
};

static int parse_options(struct opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"servername", required_argument, NULL, OPT_SERVERNAME},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"path", required_argument, NULL, OPT_PATH},
        {"paths-file", required_argument, NULL, OPT_PATHS_FILE},
        {"repeat-path", required_argument, NULL, OPT_REPEAT_PATH},
        {"header", required_argument, NULL, OPT_HEADER},
        {"expect-events", required_argument, NULL, OPT_EXPECT_EVENTS},
        {"expect-total", required_argument, NULL, OPT_EXPECT_TOTAL},
        {"ready-file", required_argument, NULL, OPT_READY_FILE},
        {"window-size", required_argument, NULL, OPT_WINDOW_SIZE},
        {"stall-stream", required_argument, NULL, OPT_STALL_STREAM},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS},
        {"events-out", required_argument, NULL, OPT_EVENTS_OUT},
        {"dump-raw", required_argument, NULL, OPT_DUMP_RAW},
        {"raw-out", required_argument, NULL, OPT_RAW_OUT},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    unsigned long long v = 0;
    int ch;
    o->connections = 1;
    o->window_size = NGHTTP2_INITIAL_WINDOW_SIZE;
    o->timeout_ms = 10000;
    o->expect_events = o->expect_total = o->stall_stream = o->dump_raw = -1;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        bool bad = false;
        switch (ch) {
        case OPT_CONNECT: bad = o->host || split_host_port(o, optarg) < 0; break;
        case OPT_CACERT: o->cacert = optarg; break;
        case OPT_INSECURE: o->insecure = true; break;
        case OPT_SERVERNAME: o->servername = optarg; break;
        case OPT_CONNECTIONS:
            bad = !parse_num(optarg, 100000, &v) || v == 0;
            o->connections = (unsigned)v;
            break;
        case OPT_PATH: add_path(o, optarg, strlen(optarg)); break;
        case OPT_PATHS_FILE: bad = read_paths_file(o, optarg) < 0; break;
        case OPT_REPEAT_PATH: bad = add_repeat_path(o, optarg) < 0; break;
        case OPT_HEADER: bad = add_header(o, optarg) < 0; break;
        case OPT_EXPECT_EVENTS:
            bad = !parse_num(optarg, INT64_MAX, &v);
            o->expect_events = (long long)v;
            break;
        case OPT_EXPECT_TOTAL:
            bad = !parse_num(optarg, INT64_MAX, &v);
            o->expect_total = (long long)v;
            break;
        case OPT_READY_FILE: o->ready_file = optarg; break;
        case OPT_WINDOW_SIZE:
            bad = !parse_num(optarg, NGHTTP2_MAX_WINDOW_SIZE, &v);
            o->window_size = (uint32_t)v;
            break;
        case OPT_STALL_STREAM:
            bad = !parse_num(optarg, INT64_MAX, &v);
            o->stall_stream = (long long)v;
            break;
        case OPT_TIMEOUT_MS: bad = !parse_num(optarg, 86400000, &o->timeout_ms); break;
        case OPT_EVENTS_OUT: o->events_out = optarg; break;
        case OPT_DUMP_RAW:
            bad = !parse_num(optarg, INT64_MAX, &v);
            o->dump_raw = (long long)v;
            break;
        case OPT_RAW_OUT: o->raw_out = optarg; break;
        case OPT_VERBOSE: o->verbose = true; break;
        case OPT_HELP: fputs(usage_text, stdout); return 1;
        default: bad = true; break;
        }
        if (bad) {
            if (ch >= OPT_CONNECT && ch < OPT_HELP)
                fprintf(stderr, "sluice-client: bad value for --%s: %s\n",
                        longopts[ch - OPT_CONNECT].name, optarg ? optarg : "");
            fputs(usage_text, stderr);
            return -1;
        }
    }
    const char *err = NULL;
    size_t nstreams = (size_t)o->connections * o->npaths;
    if (optind < argc)
        err = "unexpected argument";
    else if (!o->host)
        err = "--connect is required";
    else if (o->npaths == 0)
        err = "at least one path is required";
    else if (o->stall_stream >= (long long)nstreams)
        err = "--stall-stream is not a stream index";
    else if (o->dump_raw >= (long long)nstreams)
        err = "--dump-raw is not a stream index";
    else if ((o->dump_raw >= 0) != (o->raw_out != NULL))
        err = "--dump-raw and --raw-out go together";
    if (err) {
        fprintf(stderr, "sluice-client: %s\n%s", err, usage_text);
        return -1;
    }
    return 0;
}

static int setup_tls(struct client *cl)
{
    cl->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!cl->ssl_ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(cl->ssl_ctx, TLS1_2_VERSION);
    if (SSL_CTX_set_alpn_protos(cl->ssl_ctx, (const unsigned char *)"\x02h2", 3) != 0)
        goto fail;
    if (cl->o.insecure) {
        SSL_CTX_set_verify(cl->ssl_ctx, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    SSL_CTX_set_verify(cl->ssl_ctx, SSL_VERIFY_PEER, NULL);
    if (cl->o.cacert ? SSL_CTX_load_verify_locations(cl->ssl_ctx, cl->o.cacert, NULL) != 1
                     : SSL_CTX_set_default_verify_paths(cl->ssl_ctx) != 1) {
        fprintf(stderr, "sluice-client: %s: %s\n", cl->o.cacert ? cl->o.cacert : "CA paths",
                tls_error());
        return -1;
    }
    return 0;
fail:
    fprintf(stderr, "sluice-client: TLS setup: %s\n", tls_error());
    return -1;
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
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rv = getaddrinfo(o->host, o->port, &hints, &cl->addr);
    if (rv != 0) {
        fprintf(stderr, "sluice-client: %s:%s: %s\n", o->host, o->port, gai_strerror(rv));
        cl->addr = NULL;
        return -1;
    }
    if (setup_tls(cl) < 0)
        return -1;
    if (o->events_out && !(cl->events_out = open_out(o->events_out)))
        return -1;
    if (o->raw_out && !(cl->raw_out = open_out(o->raw_out)))
        return -1;

    cl->nstreams = (size_t)o->connections * o->npaths;
    cl->streams = calloc(cl->nstreams, sizeof *cl->streams);
    cl->conns = calloc(o->connections, sizeof *cl->conns);
    if (!cl->streams || !cl->conns) {
        fputs("sluice-client: out of memory\n", stderr);
        abort();
    }
    for (unsigned i = 0; i < o->connections; i++) {
        struct conn *c = &cl->conns[i];
        c->client = cl;
        c->fd = -1;
        c->state = CONN_CLOSED;
        c->streams = &cl->streams[(size_t)i * o->npaths];
        for (size_t j = 0; j < o->npaths; j++) {
            c->streams[j].conn = c;
            c->streams[j].path = o->paths[j];
        }
    }

    nghttp2_session_callbacks_new(&cl->callbacks);
    nghttp2_session_callbacks_set_on_header_callback(cl->callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cl->callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cl->callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cl->callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cl->callbacks, on_frame_not_send);

    cl->loop = ev_default_loop(EVFLAG_AUTO);
    if (!cl->loop) {
        fputs("sluice-client: cannot start libev\n", stderr);
        return -1;
    }
    cl->start_ms = now_ms();
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
        for (unsigned i = 0; i < o->connections; i++)
            conn_close(&cl->conns[i]);
    }
    for (size_t i = 0; cl->streams && i < cl->nstreams; i++) {
        struct stream *s = &cl->streams[i];
        free(s->content_type);
        sbuf_dispose(&s->line);
        sbuf_dispose(&s->data);
        sbuf_dispose(&s->type);
        sbuf_dispose(&s->id_buf);
        sbuf_dispose(&s->last_id);
        sbuf_dispose(&s->headers);
    }
    free(cl->streams);
    free(cl->conns);
    if (cl->loop)
        ev_loop_destroy(cl->loop);
    if (cl->callbacks)
        nghttp2_session_callbacks_del(cl->callbacks);
    if (cl->events_out)
        fclose(cl->events_out);
    if (cl->raw_out)
        fclose(cl->raw_out);
    SSL_CTX_free(cl->ssl_ctx);
    if (cl->addr)
        freeaddrinfo(cl->addr);
    for (size_t i = 0; i < o->npaths; i++)
        free(o->paths[i]);
    free(o->paths);
    for (size_t i = 0; i < o->nheaders; i++) {
        free(o->headers[i].name);
        free(o->headers[i].value);
    }
    free(o->headers);
    free(o->host);
    free(o->port);
}

int main(int argc, char **argv)
{
    struct client cl = {0};
    int rc = parse_options(&cl.o, argc, argv);
    if (rc != 0) {
        dispose(&cl);
        return rc > 0 ? 0 : 2;
    }
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
