/*
 * sluice-probe: certifies that one URL streams Server-Sent Events end to
 * end, through whatever proxies and load balancers sit in front of the
 * gateway, and names the kind of hop that breaks it when it does not.
 *
 *   sluice-probe URL [--cacert F] [--insecure] [--nats URL --subject S |
 *                     --publish-url URL] [--idle-ms N] [--json] [--timeout-ms N]
 *
 * It opens the stream the way a browser's EventSource does (Accept:
 * text/event-stream, and Accept-Encoding as browsers send it, so that a
 * compressing hop shows itself), then runs its checks in phases:
 *
 *   head     negotiated protocol (ALPN h2 or HTTP/1.1) and the advertised
 *            SETTINGS_MAX_CONCURRENT_STREAMS; status; content-type,
 *            cache-control, content-encoding; time to the response head
 *            and to the first body byte
 *   publish  with --nats or --publish-url, --events N events spaced
 *            --interval-ms apart, each carrying a run id and a sequence
 *            number; their receive times against their publish times give
 *            the time to first event and expose buffering: a hop that
 *            holds events delivers them late (delay over --max-delay-ms),
 *            in bursts (two events closer together than half the interval
 *            they were published at), or not at all
 *   idle     with --idle-ms, nothing is published for that long: the
 *            stream must stay open and ':' heartbeat comments must arrive;
 *            then one more event proves the stream still delivers
 *
 * One thread, one libev loop, at most two connections: the stream's and,
 * with --publish-url, the publisher's. Each connection is cleartext or TLS,
 * and speaks HTTP/2 (ALPN h2, or --h2c prior knowledge) or HTTP/1.1 (ALPN
 * http/1.1, no ALPN, or http:// URLs), because proxies in front of sluice
 * may speak either. Publish and receive times come from the same monotonic
 * clock in the same process, so no clock synchronisation is involved.
 * cnats (--nats) publishes from its own flusher thread; the probe never
 * subscribes, so cnats never calls back into it.
 *
 * Exit status: 0 when every check passed (warnings allowed), 1 when one
 * failed, 2 for a usage error or a local set-up error (bad CA file, NATS
 * unreachable).
 *
 * TLS, the nghttp2 session glue, the SSE parser, the HTTP/1.1 response
 * parser and the option parser come from the client library in
 * tools/lib/ (cl_*), shared with sluice-client and sluice-bench.
 *
 * Rejected alternative: driving curl. curl cannot report the server's
 * SETTINGS, and a second process puts a pipe and a scheduler between the
 * receipt of an event and its timestamp.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nats/nats.h>
#include <nghttp2/nghttp2.h>

#include "cl_buf.h"
#include "cl_conn.h"
#include "cl_h1.h"
#include "cl_h2.h"
#include "cl_log.h"
#include "cl_nats.h"
#include "cl_mem.h"
#include "cl_net.h"
#include "cl_opt.h"
#include "cl_sse.h"
#include "cl_time.h"
#include "cl_tls.h"

#define PROBE_HEAD_MAX (64 * 1024)    /* bytes of an HTTP/1.1 response head */
#define PROBE_HEADERS_MAX 64          /* response header fields kept for the report */
#define PROBE_EVENTS_MAX 1000         /* --events upper bound */
#define PROBE_WARMUP_MS 50.0          /* head received -> first publish */
#define PROBE_DRAIN_MIN_MS 1000.0     /* wait for stragglers at least this long */
#define PROBE_OBSERVE_MS 1000.0       /* without a publisher: wait for a first body byte */
#define PROBE_FEW_STREAMS 100         /* fewer advertised h2 streams earns a warning */
#define PROBE_STREAM_WINDOW (1 << 20) /* bytes; h2 stream receive window */
#define PROBE_LAG_PERIOD_MS 5.0       /* the probe's own loop-lag sampling period */
#define PROBE_STALL_MS 10.0           /* lag above this: the probe itself was stalled */
#define PROBE_STALLS_MAX 256

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

struct url {
    char *scheme;    /* "http" or "https"; owned */
    char *host;      /* without brackets; owned */
    char *port;      /* owned */
    char *authority; /* host[:port] as written in the URL; owned */
    char *path;      /* path and query, at least "/"; owned */
    bool tls;
};

struct opts {
    const char *url_arg;
    const char *cacert;
    const char *connect_to; /* HOST:PORT to connect to instead of the URL's */
    const char *nats_url;
    const char *subject;
    const char *publish_url;
    const char *extra_headers[16]; /* "name: value" */
    size_t nextra;
    bool insecure, json, http1, h2c, require_h2, verbose;
    unsigned long long event_bytes; /* payload size; 0 = as short as possible */
    unsigned long long events, interval_ms, max_delay_ms, idle_ms, timeout_ms, head_wait_ms;
};

struct probe;

enum link_role { ROLE_STREAM, ROLE_PUBLISH };

/* One POST queued for --publish-url. */
struct pub_req {
    struct pub_req *next;
    struct link *link;
    char *body; /* owned */
    size_t len;
    struct cl_h2_body h2body; /* body as nghttp2 sends it */
    int status;
};

struct link {
    struct cl_conn net; /* socket, TLS, pending output; net.state is the link's */
    enum link_role role;
    struct probe *probe;
    const struct url *url;
    struct addrinfo *addrs;      /* owned */
    const struct addrinfo *addr; /* the one being tried */
    bool h2;
    bool dirty; /* may have output: flush before the loop sleeps */
    nghttp2_session *session;
    struct cl_h1 h1; /* the HTTP/1.1 response */
    int32_t stream_id;     /* the GET, on the stream link */
    struct pub_req *queue; /* publish link: requests not yet answered, oldest first */
    bool settings_seen;
    uint32_t max_streams; /* advertised SETTINGS_MAX_CONCURRENT_STREAMS */
    char tls_version[16];
    char alpn[16];
};

struct header {
    char *name;  /* lowercase; owned */
    char *value; /* owned */
};

enum phase {
    PH_CONNECT,
    PH_HEAD,
    PH_OBSERVE,
    PH_WARMUP,
    PH_PUBLISH,
    PH_DRAIN,
    PH_IDLE,
    PH_FINAL,
    PH_DONE
};

enum verdict { V_SKIP, V_PASS, V_WARN, V_FAIL };

struct check {
    const char *name;
    enum verdict v;
    char detail[256];
};

struct event_rec {
    double pub_ms;  /* monotonic; 0 = not published */
    double recv_ms; /* monotonic; 0 = not received */
    bool stalled;   /* received as the probe woke from a stall: its timing says nothing */
};

struct stall {
    double from, to; /* monotonic ms: the probe's loop did not run in between */
};

struct probe {
    struct opts o;
    struct url url, pub_url;
    struct ev_loop *loop;
    ev_timer tick;     /* the next phase deadline */
    ev_timer deadline; /* --timeout-ms */
    ev_timer lag;      /* samples the probe's own loop lag while events are timed */
    double lag_due;    /* when the lag timer should fire; 0 = not running */
    struct stall stalls[PROBE_STALLS_MAX];
    size_t nstalls;
    double max_stall_ms;
    ev_prepare prepare;
    SSL_CTX *ssl_ctx;
    natsConnection *nc;
    struct link stream, publisher;
    enum phase phase;
    double t0, t_connected, t_tls, t_request, t_head, t_first_body;
    double phase_end; /* monotonic deadline of the current phase */
    double idle_start, idle_end, last_body_ms, longest_silence_ms;
    int status;
    struct header headers[PROBE_HEADERS_MAX];
    size_t nheaders;
    struct cl_sse sse; /* the stream body's parser */
    uint64_t body_bytes, comments, idle_comments, foreign_events, retry_fields;
    /* published events: 0..events-1 in the publish phase, events = the one after idle */
    struct event_rec *ev;
    size_t npub, nrecv, out_of_order;
    long long last_seq;
    char run_id[17];
    unsigned publish_errors;
    char publish_error[160];
    bool stream_closed, stream_ended_cleanly, timed_out;
    bool head_held; /* no response head within --head-wait-ms */
    double closed_ms;
    enum phase closed_phase;
    char close_reason[160];
    char connect_error[256];
    struct check checks[16];
    size_t nchecks;
};

__attribute__((format(printf, 4, 5))) static void add_check(struct probe *p, const char *name,
                                                            enum verdict v, const char *fmt, ...)
{
    va_list ap;
    if (p->nchecks == sizeof p->checks / sizeof p->checks[0])
        return;
    struct check *c = &p->checks[p->nchecks++];
    c->name = name;
    c->v = v;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
}

static const char *header_value(const struct probe *p, const char *name)
{
    for (size_t i = p->nheaders; i-- > 0;) {
        if (strcmp(p->headers[i].name, name) == 0)
            return p->headers[i].value;
    }
    return NULL;
}

/* A final response head replaces whatever an earlier one left. */
static void clear_headers(struct probe *p)
{
    for (size_t i = 0; i < p->nheaders; i++) {
        free(p->headers[i].name);
        free(p->headers[i].value);
    }
    p->nheaders = 0;
}

static void add_header(struct probe *p, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    if (p->nheaders == PROBE_HEADERS_MAX)
        return;
    struct header *h = &p->headers[p->nheaders++];
    h->name = cl_mem_strndup(name, nlen);
    for (char *c = h->name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    while (vlen > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        vlen--;
    }
    while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
        vlen--;
    h->value = cl_mem_strndup(value, vlen);
}

static void enter(struct probe *p, enum phase ph, double end)
{
    p->phase = ph;
    p->phase_end = end;
}

/* ------------------------------------------------------------------ */
/* URLs */

static void url_dispose(struct url *u)
{
    free(u->scheme);
    free(u->host);
    free(u->port);
    free(u->authority);
    free(u->path);
    *u = (struct url){0};
}

static int url_parse(struct url *u, const char *s)
{
    const char *rest;
    if (strncasecmp(s, "https://", 8) == 0) {
        u->tls = true;
        rest = s + 8;
    } else if (strncasecmp(s, "http://", 7) == 0) {
        rest = s + 7;
    } else {
        return -1;
    }
    u->scheme = cl_mem_strndup(u->tls ? "https" : "http", u->tls ? 5 : 4);
    size_t alen = strcspn(rest, "/?#");
    if (alen == 0)
        return -1;
    u->authority = cl_mem_strndup(rest, alen);
    const char *a = u->authority, *port = NULL;
    if (a[0] == '[') {
        const char *close_br = strchr(a, ']');
        if (!close_br)
            return -1;
        u->host = cl_mem_strndup(a + 1, (size_t)(close_br - a - 1));
        if (close_br[1] == ':')
            port = close_br + 2;
        else if (close_br[1] != '\0')
            return -1;
    } else {
        const char *colon = strchr(a, ':');
        u->host = cl_mem_strndup(a, colon ? (size_t)(colon - a) : strlen(a));
        if (colon)
            port = colon + 1;
    }
    if (u->host[0] == '\0' || strchr(u->authority, '@'))
        return -1;
    if (port) {
        if (*port == '\0' || strspn(port, "0123456789") != strlen(port))
            return -1;
        u->port = cl_mem_strndup(port, strlen(port));
    } else {
        u->port = cl_mem_strndup(u->tls ? "443" : "80", u->tls ? 3 : 2);
    }
    const char *path = rest + alen;
    size_t plen = strcspn(path, "#");
    if (plen == 0 || path[0] != '/') {
        struct cl_buf b = {0};
        cl_buf_append(&b, "/", 1);
        cl_buf_append(&b, path, plen);
        cl_buf_append(&b, "", 1);
        u->path = b.p;
    } else {
        u->path = cl_mem_strndup(path, plen);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The SSE body of the stream */

static void on_probe_event(void *ctx, const struct cl_sse_event *ev)
{
    struct probe *p = ctx;
    const char *data = ev->data;
    size_t len = ev->data_len;
    double t = cl_time_mono_ms();
    char prefix[64];
    int n = snprintf(prefix, sizeof prefix, "sluice-probe %s ", p->run_id);
    if (len <= (size_t)n || memcmp(data, prefix, (size_t)n) != 0) {
        p->foreign_events++;
        return;
    }
    unsigned long long seq = 0;
    size_t i = (size_t)n;
    if (i >= len || !isdigit((unsigned char)data[i])) {
        p->foreign_events++;
        return;
    }
    while (i < len && isdigit((unsigned char)data[i]) && seq < PROBE_EVENTS_MAX + 1)
        seq = seq * 10 + (unsigned long long)(data[i++] - '0');
    if (seq > p->o.events || p->ev[seq].pub_ms == 0 || p->ev[seq].recv_ms != 0) {
        p->foreign_events++;
        return;
    }
    p->ev[seq].recv_ms = t;
    p->nrecv++;
    if ((long long)seq < p->last_seq)
        p->out_of_order++;
    p->last_seq = (long long)seq;
    cl_log_debug("event %llu after %.1f ms", seq, t - p->ev[seq].pub_ms);
}

static void on_probe_comment(void *ctx, const char *text, size_t len)
{
    struct probe *p = ctx;
    (void)text;
    (void)len;
    p->comments++;
    if (p->phase == PH_IDLE)
        p->idle_comments++;
}

static void on_probe_retry(void *ctx, const char *value, size_t len)
{
    struct probe *p = ctx;
    (void)value;
    (void)len;
    p->retry_fields++;
}

static const struct cl_sse_callbacks sse_callbacks = {
    .on_event = on_probe_event,
    .on_comment = on_probe_comment,
    .on_retry = on_probe_retry,
};

static void on_stream_body(struct probe *p, const char *data, size_t len)
{
    double t = cl_time_mono_ms();
    if (len == 0)
        return;
    if (p->t_first_body == 0)
        p->t_first_body = t;
    if (p->phase == PH_IDLE && p->last_body_ms > 0) {
        double from = p->last_body_ms > p->idle_start ? p->last_body_ms : p->idle_start;
        if (t - from > p->longest_silence_ms)
            p->longest_silence_ms = t - from;
    }
    p->last_body_ms = t;
    p->body_bytes += len;
    cl_sse_feed(&p->sse, data, len);
}

static void start_lag(struct probe *p)
{
    if (p->lag_due > 0)
        return;
    p->lag_due = cl_time_mono_ms() + PROBE_LAG_PERIOD_MS;
    ev_timer_set(&p->lag, PROBE_LAG_PERIOD_MS / 1e3, 0.);
    ev_timer_start(p->loop, &p->lag);
}

static void on_stream_head(struct probe *p, int status)
{
    p->status = status;
    p->t_head = cl_time_mono_ms();
    cl_log_debug("response head: status %d", status);
}

static void on_stream_closed(struct probe *p, bool clean, const char *why)
{
    if (p->stream_closed)
        return;
    p->stream_closed = true;
    p->stream_ended_cleanly = clean;
    p->closed_ms = cl_time_mono_ms();
    p->closed_phase = p->phase;
    snprintf(p->close_reason, sizeof p->close_reason, "%s", why);
    cl_log_debug("stream closed: %s", why);
}

/* ------------------------------------------------------------------ */
/* Connections */

static void pub_req_free(struct pub_req *r)
{
    if (!r)
        return;
    free(r->body);
    free(r);
}

static void link_close(struct link *l)
{
    if (l->session) {
        nghttp2_session_del(l->session);
        l->session = NULL;
    }
    cl_conn_close(&l->net, true);
    cl_h1_dispose(&l->h1);
}

__attribute__((format(printf, 2, 3))) static void publish_failed(struct probe *p, const char *fmt,
                                                                 ...)
{
    va_list ap;
    p->publish_errors++;
    if (p->publish_error[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(p->publish_error, sizeof p->publish_error, fmt, ap);
    va_end(ap);
}

/* The one place a connection's failure is decided, per role. */
static void link_lost(struct link *l, const char *why)
{
    struct probe *p = l->probe;
    bool opened = l->net.state == CL_CONN_OPEN;
    cl_log_debug("%s connection lost: %s", l->role == ROLE_STREAM ? "stream" : "publish", why);
    if (l->role == ROLE_STREAM) {
        if (!opened && p->connect_error[0] == '\0')
            snprintf(p->connect_error, sizeof p->connect_error, "%s", why);
        if (opened)
            on_stream_closed(p, false, why);
    } else {
        if (!opened || l->queue)
            publish_failed(p, "publish connection: %s", why);
        while (l->queue) {
            struct pub_req *r = l->queue;
            l->queue = r->next;
            pub_req_free(r);
        }
    }
    link_close(l);
}

static void flush_link(struct link *l)
{
    const char *why = cl_h2_flush(l->session, &l->net, SIZE_MAX);
    if (why)
        link_lost(l, why);
}

/* ---- HTTP/1.1 ---- */

static void h1_request(struct link *l, const char *method, const char *body, size_t blen)
{
    struct probe *p = l->probe;
    char line[512];
    int n = snprintf(line, sizeof line, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, l->url->path,
                     l->url->authority);
    cl_buf_append(&l->net.out, line, (size_t)n);
    if (l->role == ROLE_STREAM) {
        static const char sse[] = "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
                                  "Accept-Encoding: gzip, deflate, br\r\n";
        cl_buf_append(&l->net.out, sse, sizeof sse - 1);
    } else {
        n = snprintf(line, sizeof line, "Content-Type: text/plain\r\nContent-Length: %zu\r\n",
                     blen);
        cl_buf_append(&l->net.out, line, (size_t)n);
    }
    n = snprintf(line, sizeof line, "User-Agent: sluice-probe/%s\r\n", SLUICE_VERSION);
    cl_buf_append(&l->net.out, line, (size_t)n);
    for (size_t i = 0; i < p->o.nextra; i++) {
        cl_buf_append(&l->net.out, p->o.extra_headers[i], strlen(p->o.extra_headers[i]));
        cl_buf_append(&l->net.out, "\r\n", 2);
    }
    cl_buf_append(&l->net.out, "\r\n", 2);
    cl_buf_append(&l->net.out, body, blen);
    l->dirty = true;
}

static void h1_response_done(struct link *l)
{
    struct probe *p = l->probe;
    if (l->role == ROLE_STREAM) {
        on_stream_closed(p, true, "the response ended (HTTP/1.1 body complete)");
        return;
    }
    struct pub_req *r = l->queue;
    if (r) {
        l->queue = r->next;
        if (r->status < 200 || r->status > 299) {
            publish_failed(p, "publish answered with status %d", r->status);
        }
        pub_req_free(r);
    }
    cl_h1_reset(&l->h1);
    if (l->queue) {
        h1_request(l, "POST", l->queue->body, l->queue->len);
    }
}

/* A final head replaces the headers an earlier one left. */
static void on_h1_status(void *ctx, int status)
{
    struct link *l = ctx;
    if (l->role == ROLE_STREAM && status >= 200)
        clear_headers(l->probe);
}

static void on_h1_header(void *ctx, int status, const char *name, size_t nlen, const char *value,
                         size_t vlen)
{
    struct link *l = ctx;
    if (l->role == ROLE_STREAM && status >= 200)
        add_header(l->probe, name, nlen, value, vlen);
}

static void on_h1_head(void *ctx, int status)
{
    struct link *l = ctx;
    if (status < 200)
        return;
    if (l->role == ROLE_STREAM)
        on_stream_head(l->probe, status);
    else if (l->queue)
        l->queue->status = status;
}

static void on_h1_body(void *ctx, const char *data, size_t n)
{
    struct link *l = ctx;
    if (l->role == ROLE_STREAM)
        on_stream_body(l->probe, data, n);
}

static const struct cl_h1_callbacks h1_callbacks = {
    .on_status = on_h1_status,
    .on_header = on_h1_header,
    .on_head = on_h1_head,
    .on_body = on_h1_body,
};

/* Feeds response bytes; returns false when the connection must close. */
static bool h1_feed(struct link *l, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t k = cl_h1_feed(&l->h1, s, n);
        if (k < 0) {
            link_lost(l, cl_h1_strerror((int)k));
            return false;
        }
        s += k;
        n -= (size_t)k;
        if (cl_h1_done(&l->h1)) {
            h1_response_done(l);
            /* Bytes after a complete response the probe did not ask for. */
            if (l->role == ROLE_STREAM)
                return true;
        }
        if (l->net.state != CL_CONN_OPEN)
            return false;
    }
    return true;
}

static void h1_eof(struct link *l)
{
    if (l->h1.state == CL_H1_BODY_EOF) {
        cl_h1_eof(&l->h1);
        if (l->role == ROLE_STREAM) {
            on_stream_closed(l->probe, true, "the connection closed (HTTP/1.1 body until close)");
            link_close(l);
            return;
        }
        h1_response_done(l);
    }
    if (l->role == ROLE_PUBLISH && !l->queue) {
        link_close(l); /* keep-alive ended between requests: reconnect on demand */
        return;
    }
    link_lost(l, "the connection closed mid-response");
}

/* ---- HTTP/2 ---- */

static int32_t h2_submit(struct link *l, const char *method, struct pub_req *r)
{
    struct probe *p = l->probe;
    nghttp2_nv nv[32];
    size_t n = 0;
    char ua[64], clen[32];
    char *extra = NULL;
    snprintf(ua, sizeof ua, "sluice-probe/%s", SLUICE_VERSION);
    nv[n++] = cl_h2_nv(":method", method);
    nv[n++] = cl_h2_nv(":scheme", l->url->scheme);
    nv[n++] = cl_h2_nv(":authority", l->url->authority);
    nv[n++] = cl_h2_nv(":path", l->url->path);
    if (l->role == ROLE_STREAM) {
        nv[n++] = cl_h2_nv("accept", "text/event-stream");
        nv[n++] = cl_h2_nv("cache-control", "no-cache");
        nv[n++] = cl_h2_nv("accept-encoding", "gzip, deflate, br");
    } else {
        snprintf(clen, sizeof clen, "%zu", r->len);
        nv[n++] = cl_h2_nv("content-type", "text/plain");
        nv[n++] = cl_h2_nv("content-length", clen);
    }
    nv[n++] = cl_h2_nv("user-agent", ua);
    /* Extra headers: lowercase names (HTTP/2), split at the first colon. */
    size_t total = 0;
    for (size_t i = 0; i < p->o.nextra; i++)
        total += strlen(p->o.extra_headers[i]) + 1;
    extra = cl_mem_realloc(NULL, total + 1);
    char *w = extra;
    for (size_t i = 0; i < p->o.nextra && n < sizeof nv / sizeof nv[0]; i++) {
        const char *h = p->o.extra_headers[i];
        const char *colon = strchr(h, ':');
        size_t nlen = (size_t)(colon - h);
        for (size_t k = 0; k < nlen; k++)
            w[k] = (char)tolower((unsigned char)h[k]);
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        nv[n++] = (nghttp2_nv){(uint8_t *)w, (uint8_t *)v, nlen, strlen(v), NGHTTP2_NV_FLAG_NONE};
        w += nlen;
    }
    nghttp2_data_provider dp;
    if (r) {
        r->h2body = (struct cl_h2_body){.data = r->body, .len = r->len};
        dp = cl_h2_body_provider(&r->h2body);
    }
    int32_t id = nghttp2_submit_request(l->session, NULL, nv, n, r ? &dp : NULL, r);
    free(extra); /* nghttp2 copies header names and values on submission */
    l->dirty = true;
    return id;
}

static int on_h2_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data)
{
    struct link *l = user_data;
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (cl_h2_name_is(name, namelen, ":status")) {
        int st = cl_h2_status(value, valuelen);
        if (l->role == ROLE_PUBLISH) {
            struct pub_req *r = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
            if (r)
                r->status = st;
        } else if (frame->hd.stream_id == l->stream_id && st >= 200) {
            l->probe->status = st;
            clear_headers(l->probe);
        }
        return 0;
    }
    if (l->role == ROLE_STREAM && frame->hd.stream_id == l->stream_id && l->probe->status >= 200 &&
        l->probe->t_head == 0)
        add_header(l->probe, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

static int on_h2_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct link *l = user_data;
    struct probe *p = l->probe;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
            l->settings_seen = true;
            l->max_streams = nghttp2_session_get_remote_settings(
                session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
            for (size_t i = 0; i < frame->settings.niv; i++)
                if (frame->settings.iv[i].settings_id == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                    l->max_streams = frame->settings.iv[i].value;
        }
        break;
    case NGHTTP2_HEADERS:
        if (l->role == ROLE_STREAM && frame->hd.stream_id == l->stream_id && p->status >= 200 &&
            p->t_head == 0)
            on_stream_head(p, p->status);
        break;
    case NGHTTP2_GOAWAY:
        cl_log_debug("GOAWAY on the %s connection: %s", l->role == ROLE_STREAM ? "stream" : "publish",
             nghttp2_http2_strerror(frame->goaway.error_code));
        break;
    default: break;
    }
    return 0;
}

static int on_h2_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                      const uint8_t *data, size_t len, void *user_data)
{
    struct link *l = user_data;
    (void)session;
    (void)flags;
    if (l->role == ROLE_STREAM && stream_id == l->stream_id)
        on_stream_body(l->probe, (const char *)data, len);
    return 0;
}

static int on_h2_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data)
{
    struct link *l = user_data;
    struct probe *p = l->probe;
    if (l->role == ROLE_STREAM) {
        if (stream_id == l->stream_id) {
            char why[160];
            if (error_code == NGHTTP2_NO_ERROR)
                snprintf(why, sizeof why, "the server ended the stream (END_STREAM)");
            else
                snprintf(why, sizeof why, "the stream was reset (%s)",
                         nghttp2_http2_strerror(error_code));
            on_stream_closed(p, error_code == NGHTTP2_NO_ERROR, why);
        }
        return 0;
    }
    struct pub_req *r = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!r)
        return 0;
    if (error_code != NGHTTP2_NO_ERROR)
        publish_failed(p, "publish stream reset: %s", nghttp2_http2_strerror(error_code));
    else if (r->status < 200 || r->status > 299) {
        publish_failed(p, "publish answered with status %d", r->status);
    }
    for (struct pub_req **pp = &l->queue; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    pub_req_free(r);
    return 0;
}

static const struct cl_h2_handlers h2_handlers = {
    .on_header = on_h2_header,
    .on_frame_recv = on_h2_frame_recv,
    .on_data_chunk_recv = on_h2_data,
    .on_stream_close = on_h2_stream_close,
};

static void h2_start(struct link *l)
{
    /* The stream's connection window matches its stream window, so that
     * a hop's burst is never held back by us. */
    struct cl_h2_settings settings = {
        .window_size = PROBE_STREAM_WINDOW,
        .conn_window = l->role == ROLE_STREAM ? PROBE_STREAM_WINDOW : 0,
    };
    int rv = cl_h2_session_new(&l->session, &h2_handlers, l, &settings);
    if (rv != 0) {
        link_lost(l, nghttp2_strerror(rv));
        return;
    }
    l->h2 = true;
    l->dirty = true;
}

/* ---- connection set-up ---- */

static void on_open(struct cl_conn *net)
{
    struct link *l = container_of(net, struct link, net);
    struct probe *p = l->probe;
    if (net->ssl) {
        cl_tls_alpn(net->ssl, l->alpn, sizeof l->alpn);
        snprintf(l->tls_version, sizeof l->tls_version, "%s", SSL_get_version(net->ssl));
    }
    if ((net->ssl && strcmp(l->alpn, "h2") == 0) || (!net->ssl && p->o.h2c)) {
        h2_start(l);
        if (net->state != CL_CONN_OPEN)
            return;
    }
    if (l->role == ROLE_STREAM) {
        p->t_tls = cl_time_mono_ms();
        p->t_request = p->t_tls;
        if (l->h2) {
            l->stream_id = h2_submit(l, "GET", NULL);
            if (l->stream_id < 0) {
                link_lost(l, nghttp2_strerror(l->stream_id));
                return;
            }
        } else {
            h1_request(l, "GET", NULL, 0);
        }
        enter(p, PH_HEAD, p->t_request + (double)p->o.head_wait_ms);
        cl_log_debug("connected (%s%s%s), request sent", net->ssl ? l->tls_version : "cleartext",
                     net->ssl ? ", ALPN " : "", net->ssl ? (l->alpn[0] ? l->alpn : "none") : "");
    } else {
        for (struct pub_req *r = l->queue; r; r = r->next) {
            if (l->h2) {
                if (h2_submit(l, "POST", r) < 0)
                    publish_failed(p, "publish: cannot submit the request");
            } else {
                h1_request(l, "POST", r->body, r->len);
                break; /* HTTP/1.1: one request in flight */
            }
        }
    }
    l->dirty = true;
    cl_conn_watch(net, EV_READ);
}

static void on_connected(struct cl_conn *net)
{
    struct link *l = container_of(net, struct link, net);
    if (l->role == ROLE_STREAM)
        l->probe->t_connected = cl_time_mono_ms();
}

static void on_fail(struct cl_conn *net, const char *what, const char *why)
{
    struct link *l = container_of(net, struct link, net);
    char msg[300];
    if (strcmp(what, "connect") == 0) {
        /* Try the next address of the name before giving up. */
        cl_conn_close(net, false);
        if (l->addr && l->addr->ai_next) {
            l->addr = l->addr->ai_next;
            if (cl_conn_start(net, l->addr) == 0)
                return;
        }
    }
    snprintf(msg, sizeof msg, "%s: %s", what, why);
    link_lost(l, msg);
}

static bool on_read(struct cl_conn *net, const char *buf, size_t n)
{
    struct link *l = container_of(net, struct link, net);
    if (l->h2) {
        ssize_t rv = nghttp2_session_mem_recv(l->session, (const uint8_t *)buf, n);
        if (rv < 0) {
            link_lost(l, nghttp2_strerror((int)rv));
            return false;
        }
    } else if (!h1_feed(l, buf, n)) {
        return false;
    }
    return net->state == CL_CONN_OPEN;
}

static void read_input(struct link *l)
{
    ssize_t n = cl_conn_read(&l->net);
    if (n == CL_TLS_AGAIN || n == CL_CONN_STOPPED)
        return;
    if (n == CL_TLS_ERROR)
        link_lost(l, cl_conn_error(&l->net));
    else if (l->h2)
        link_lost(l, "the peer closed the connection");
    else
        h1_eof(l); /* with or without close_notify: HTTP/1.1 peers often skip it */
}

static void on_ready(struct cl_conn *net, int revents)
{
    struct link *l = container_of(net, struct link, net);
    if ((revents & EV_READ) || net->read_wants_write)
        read_input(l);
    l->dirty = true;
}

static const struct cl_conn_callbacks conn_callbacks = {
    .on_connected = on_connected,
    .on_open = on_open,
    .on_fail = on_fail,
    .on_ready = on_ready,
    .on_read = on_read,
};

/* Resolves (once) and connects; failures are reported through link_lost. */
static void link_connect(struct link *l, const char *connect_to)
{
    char *host = NULL, *port = NULL;
    if (!l->addrs) {
        const char *h = l->url->host, *pt = l->url->port;
        if (connect_to) {
            const char *colon = strrchr(connect_to, ':');
            const char *hs = connect_to;
            size_t hl = colon ? (size_t)(colon - connect_to) : 0;
            if (hl >= 2 && hs[0] == '[' && hs[hl - 1] == ']') {
                hs++;
                hl -= 2;
            }
            host = cl_mem_strndup(hs, hl);
            port = cl_mem_strndup(colon + 1, strlen(colon + 1));
            h = host;
            pt = port;
        }
        const char *err = cl_net_resolve(h, pt, &l->addrs);
        if (err) {
            char why[300];
            snprintf(why, sizeof why, "resolve %s:%s: %s", h, pt, err);
            free(host);
            free(port);
            link_lost(l, why);
            return;
        }
        free(host);
        free(port);
    }
    for (l->addr = l->addrs; l->addr; l->addr = l->addr->ai_next) {
        if (cl_conn_start(&l->net, l->addr) == 0)
            return;
    }
    char why[300];
    snprintf(why, sizeof why, "connect: %s", strerror(errno));
    link_lost(l, why);
}

/* ------------------------------------------------------------------ */
/* Publishing */

static void publish(struct probe *p, size_t seq)
{
    char head[128];
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int hn = snprintf(head, sizeof head, "sluice-probe %s %zu %lld%03ld", p->run_id, seq,
                      (long long)wall.tv_sec, wall.tv_nsec / 1000000);
    /* Padding to --event-bytes: hops that flush per N bytes show up only
     * with events of realistic size. */
    size_t len = (size_t)hn < p->o.event_bytes ? p->o.event_bytes : (size_t)hn;
    char *body = cl_mem_realloc(NULL, len + 1);
    memcpy(body, head, (size_t)hn);
    if (len > (size_t)hn) {
        body[hn] = ' ';
        for (size_t i = (size_t)hn + 1; i < len; i++)
            body[i] = (char)('a' + (i * 7 + seq) % 26);
    }
    body[len] = '\0';
    int n = (int)len;
    p->ev[seq].pub_ms = cl_time_mono_ms();
    p->npub++;
    cl_log_debug("publish %zu", seq);
    if (p->nc) {
        natsStatus s = natsConnection_Publish(p->nc, p->o.subject, body, n);
        if (s != NATS_OK)
            publish_failed(p, "NATS publish: %s", natsStatus_GetText(s));
        free(body);
        return;
    }
    struct link *l = &p->publisher;
    struct pub_req *r = cl_mem_realloc(NULL, sizeof *r);
    *r = (struct pub_req){.link = l, .body = body, .len = (size_t)n};
    bool was_empty = l->queue == NULL;
    struct pub_req **tail = &l->queue;
    while (*tail)
        tail = &(*tail)->next;
    *tail = r;
    if (l->net.state == CL_CONN_IDLE) {
        link_connect(l, NULL);
        return;
    }
    if (l->net.state != CL_CONN_OPEN)
        return; /* sent once the connection is up */
    if (l->h2) {
        if (h2_submit(l, "POST", r) < 0)
            publish_failed(p, "publish: cannot submit the request");
    } else if (was_empty) {
        h1_request(l, "POST", r->body, r->len);
    }
}

/* ------------------------------------------------------------------ */
/* Phases */

static bool have_publisher(const struct probe *p) { return p->nc || p->o.publish_url; }

static double drain_ms(const struct probe *p)
{
    double d = 2.0 * (double)p->o.max_delay_ms;
    return d > PROBE_DRAIN_MIN_MS ? d : PROBE_DRAIN_MIN_MS;
}

/* Moves the run forward; called after every wake-up. */
/* After the events: the idle phase when --idle-ms asks for one, else the end. */
static void enter_idle_or_done(struct probe *p, double t)
{
    if (p->o.idle_ms > 0) {
        p->idle_start = t;
        enter(p, PH_IDLE, t + (double)p->o.idle_ms);
    } else {
        enter(p, PH_DONE, 0);
    }
}

static void advance(struct probe *p)
{
    double t = cl_time_mono_ms();
    for (;;) {
        enum phase before = p->phase;
        if (p->phase != PH_DONE && (p->stream_closed || (p->t_head > 0 && p->status != 200))) {
            enter(p, PH_DONE, 0);
            break;
        }
        switch (p->phase) {
        case PH_CONNECT: break;
        case PH_HEAD:
            if (p->t_head == 0) {
                if (t < p->phase_end)
                    break;
                /* A hop that holds the head until body bytes flow (a
                 * compressor, postpone_output) is found by publishing blind. */
                p->head_held = true;
                start_lag(p);
                enter(p, have_publisher(p) ? PH_PUBLISH : PH_DONE, t);
                break;
            }
            if (p->status != 200)
                enter(p, PH_DONE, 0);
            else if (have_publisher(p)) {
                start_lag(p);
                enter(p, PH_WARMUP, p->t_head + PROBE_WARMUP_MS);
            } else
                enter(p, PH_OBSERVE, p->t_head + PROBE_OBSERVE_MS);
            break;
        case PH_OBSERVE:
            if (p->t_first_body > 0 || t >= p->phase_end) {
                enter_idle_or_done(p, t);
            }
            break;
        case PH_WARMUP:
            if (t >= p->phase_end)
                enter(p, PH_PUBLISH, t);
            break;
        case PH_PUBLISH:
            if (t < p->phase_end)
                break;
            publish(p, p->npub);
            if (p->npub == p->o.events)
                enter(p, PH_DRAIN, t + drain_ms(p));
            else if (t - p->phase_end > (double)p->o.interval_ms / 4)
                /* Woken late (a loaded machine): keep the spacing rather than
                 * catch up, or two events would leave together. */
                p->phase_end = t + (double)p->o.interval_ms;
            else
                p->phase_end += (double)p->o.interval_ms;
            break;
        case PH_DRAIN:
            if (p->nrecv == p->npub || t >= p->phase_end) {
                enter_idle_or_done(p, t);
            }
            break;
        case PH_IDLE:
            if (t < p->phase_end)
                break;
            if (p->last_body_ms > 0) {
                double from = p->last_body_ms > p->idle_start ? p->last_body_ms : p->idle_start;
                if (t - from > p->longest_silence_ms)
                    p->longest_silence_ms = t - from;
            }
            p->idle_end = t;
            if (have_publisher(p)) {
                publish(p, p->o.events);
                enter(p, PH_FINAL, t + drain_ms(p));
            } else {
                enter(p, PH_DONE, 0);
            }
            break;
        case PH_FINAL:
            if (p->ev[p->o.events].recv_ms > 0 || t >= p->phase_end)
                enter(p, PH_DONE, 0);
            break;
        case PH_DONE: break;
        }
        if (p->phase == before)
            break;
    }
    ev_timer_stop(p->loop, &p->tick);
    if (p->phase == PH_DONE) {
        ev_break(p->loop, EVBREAK_ALL);
        return;
    }
    if (p->phase_end > 0 && p->phase >= PH_HEAD) {
        double wait = (p->phase_end - cl_time_mono_ms()) / 1e3;
        ev_timer_set(&p->tick, wait > 0 ? wait : 0, 0);
        ev_timer_start(p->loop, &p->tick);
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* A machine too busy to run the probe on time makes events look late and
 * bunched: they wait in the socket, not in a proxy. The probe notices its
 * own stalls and leaves the events read at the end of one out of the
 * timing verdicts instead of blaming the path. */
static void on_lag(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct probe *p = container_of(w, struct probe, lag);
    (void)revents;
    double t = cl_time_mono_ms();
    double late = t - p->lag_due;
    if (late > PROBE_STALL_MS) {
        if (p->nstalls < PROBE_STALLS_MAX)
            p->stalls[p->nstalls++] = (struct stall){p->lag_due - PROBE_LAG_PERIOD_MS, t};
        if (late > p->max_stall_ms)
            p->max_stall_ms = late;
    }
    p->lag_due = t + PROBE_LAG_PERIOD_MS;
    ev_timer_set(w, PROBE_LAG_PERIOD_MS / 1e3, 0.);
    ev_timer_start(loop, w);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct probe *p = container_of(w, struct probe, deadline);
    (void)revents;
    p->timed_out = true;
    ev_break(loop, EVBREAK_ALL);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct probe *p = container_of(w, struct probe, prepare);
    (void)loop;
    (void)revents;
    if (p->timed_out)
        return;
    advance(p);
    struct link *links[2] = {&p->stream, &p->publisher};
    for (int i = 0; i < 2; i++) {
        struct link *l = links[i];
        if (l->net.state == CL_CONN_OPEN && l->dirty) {
            l->dirty = false;
            flush_link(l);
        }
    }
    if (p->stream.net.state != CL_CONN_OPEN && p->phase <= PH_HEAD && p->connect_error[0])
        ev_break(p->loop, EVBREAK_ALL);
}

/* ------------------------------------------------------------------ */
/* Verdicts */

static const char *phase_name(enum phase ph)
{
    switch (ph) {
    case PH_CONNECT: return "connecting";
    case PH_HEAD: return "waiting for the response head";
    case PH_OBSERVE: return "waiting for the first body byte";
    case PH_WARMUP:
    case PH_PUBLISH: return "events were being published";
    case PH_DRAIN: return "waiting for the last events";
    case PH_IDLE: return "idle";
    case PH_FINAL: return "waiting for the event after the idle period";
    case PH_DONE: return "finishing";
    }
    return "?";
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bool contains_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *s = v; *s; s++)
        if (strncasecmp(s, tok, n) == 0)
            return true;
    return false;
}

struct stats {
    size_t n, batched, unjudged; /* n: judged events; unjudged: read after a probe stall */
    double min, median, max, first;
    bool first_stalled;
};

static void mark_stalled(struct probe *p)
{
    for (size_t i = 0; i <= p->o.events; i++) {
        struct event_rec *e = &p->ev[i];
        e->stalled = false;
        for (size_t k = 0; e->recv_ms > 0 && k < p->nstalls; k++) {
            /* Read at the end of a stall, or just after it in the same wake-up. */
            if (e->recv_ms >= p->stalls[k].from &&
                e->recv_ms <= p->stalls[k].to + PROBE_LAG_PERIOD_MS)
                e->stalled = true;
        }
    }
}

static void delay_stats(const struct probe *p, struct stats *st)
{
    double d[PROBE_EVENTS_MAX];
    *st = (struct stats){.first = -1};
    for (size_t i = 0; i < p->o.events; i++) {
        const struct event_rec *e = &p->ev[i];
        if (e->pub_ms == 0 || e->recv_ms == 0)
            continue;
        if (i == 0) {
            st->first = e->recv_ms - e->pub_ms;
            st->first_stalled = e->stalled;
        }
        if (e->stalled) {
            st->unjudged++;
            continue;
        }
        d[st->n++] = e->recv_ms - e->pub_ms;
        /* A burst: two events published an interval apart arrive much
         * closer together than that. */
        if (i > 0 && p->ev[i - 1].recv_ms > 0 && !p->ev[i - 1].stalled) {
            double pub_gap = e->pub_ms - p->ev[i - 1].pub_ms;
            double recv_gap = e->recv_ms - p->ev[i - 1].recv_ms;
            if (recv_gap < pub_gap / 2)
                st->batched++;
        }
    }
    if (st->n == 0)
        return;
    qsort(d, st->n, sizeof d[0], cmp_double);
    st->min = d[0];
    st->max = d[st->n - 1];
    st->median = d[st->n / 2];
}

static void judge_head(struct probe *p);
static void judge_stream(struct probe *p, bool compressed, const char *timeout_note);

static void judge(struct probe *p)
{
    struct link *l = &p->stream;
    const char *timeout_note = p->timed_out ? " (probe --timeout-ms reached)" : "";
    if (p->t_request == 0) {
        add_check(p, "connect", V_FAIL, "%s%s",
                  p->connect_error[0] ? p->connect_error : "no connection", timeout_note);
        return;
    }
    bool tls = l->net.ssl != NULL;
    add_check(p, "connect", V_PASS, "%s in %.1f ms%s%s", tls ? l->tls_version : "cleartext",
              p->t_request - p->t0, tls ? ", ALPN " : "", tls ? (l->alpn[0] ? l->alpn : "none") : "");
    if (l->h2) {
        char streams[64];
        if (l->settings_seen && l->max_streams != UINT32_MAX)
            snprintf(streams, sizeof streams, "%" PRIu32, l->max_streams);
        else
            snprintf(streams, sizeof streams, "not advertised (unlimited)");
        bool few = l->settings_seen && l->max_streams < PROBE_FEW_STREAMS;
        add_check(p, "protocol", few ? V_WARN : V_PASS, "h2, SETTINGS_MAX_CONCURRENT_STREAMS %s%s",
                  streams, few ? ": a page with many streams will queue" : "");
    } else {
        add_check(p, "protocol", p->o.require_h2 ? V_FAIL : V_WARN,
                  "HTTP/1.1: browsers open at most 6 connections per host, one stream each");
    }
    bool compressed = false;
    if (p->t_head == 0) {
        add_check(p, "response", V_FAIL, "no response head in %.0f ms%s%s%s%s",
                  cl_time_mono_ms() - p->t_request, p->npub ? " although events were published" : "",
                  p->stream_closed ? ": " : "", p->stream_closed ? p->close_reason : "",
                  timeout_note);
        if (p->npub == 0)
            return;
    } else {
        judge_head(p);
        const char *ce = header_value(p, "content-encoding");
        compressed = ce && strcasecmp(ce, "identity") != 0;
        if (p->status != 200)
            return;
    }
    judge_stream(p, compressed, timeout_note);
}

static void judge_head(struct probe *p)
{
    add_check(p, "status", p->status == 200 ? V_PASS : V_FAIL, "%d", p->status);
    const char *ct = header_value(p, "content-type");
    add_check(p, "content-type",
              ct && strncasecmp(ct, "text/event-stream", 17) == 0 ? V_PASS : V_FAIL, "%s",
              ct ? ct : "missing");
    const char *cc = header_value(p, "cache-control");
    bool nocache = cc && (contains_token(cc, "no-cache") || contains_token(cc, "no-store"));
    add_check(p, "cache-control", nocache ? V_PASS : V_FAIL, "%s%s", cc ? cc : "missing",
              nocache ? "" : ": a cache on the path may store or coalesce the stream");
    const char *ce = header_value(p, "content-encoding");
    bool compressed = ce && strcasecmp(ce, "identity") != 0;
    add_check(p, "compression", compressed ? V_FAIL : V_PASS, "%s%s", compressed ? ce : "none",
              compressed ? ": compressors commonly hold small events until a block fills, and "
                           "the events inside cannot be timed"
                         : "");
    double head_ms = p->t_head - p->t_request;
    if (p->head_held)
        add_check(p, "first byte", V_FAIL,
                  "response head held %.0f ms, released only once "
                  "events flowed: a hop buffers (compression, postpone_output, cache)",
                  head_ms);
    else
        add_check(p, "first byte", V_PASS, "response head %.1f ms after the request%s", head_ms,
                  p->t_first_body > 0 ? "" : ", no body byte yet");
}

static void judge_stream(struct probe *p, bool compressed, const char *timeout_note)
{
    if (have_publisher(p)) {
        struct stats st;
        delay_stats(p, &st);
        size_t nev = p->o.events;
        size_t got = 0, sent = 0;
        for (size_t i = 0; i < nev; i++) {
            got += p->ev[i].recv_ms > 0;
            sent += p->ev[i].pub_ms > 0;
        }
        const char *why_none =
            compressed ? " as readable events (the body is compressed, the probe cannot time them)"
                       : "";
        double limit = (double)p->o.max_delay_ms;
        if (st.first >= 0 && st.first_stalled)
            add_check(p, "first event", V_WARN,
                      "%.1f ms after publish, but read as the probe woke from a %.0f ms stall "
                      "of its own: not judged",
                      st.first, p->max_stall_ms);
        else if (st.first >= 0)
            add_check(p, "first event", st.first <= limit ? V_PASS : V_FAIL,
                      "%.1f ms after publish (limit %llu ms)", st.first, p->o.max_delay_ms);
        else
            add_check(p, "first event", V_FAIL, "not received%s%s", why_none, timeout_note);
        bool late = st.n > 0 && st.max > limit;
        bool fail = p->publish_errors || got < sent || sent < nev || st.batched > 0 ||
                    p->out_of_order > 0 || late;
        enum verdict v = fail ? V_FAIL : st.unjudged > 0 ? V_WARN : V_PASS;
        char detail[256];
        if (p->publish_errors)
            snprintf(detail, sizeof detail, "%u publish errors: %s", p->publish_errors,
                     p->publish_error);
        else if (got == 0 && compressed)
            snprintf(detail, sizeof detail,
                     "0/%zu events readable: the body is compressed, and the probe cannot "
                     "tell when events inside it arrived",
                     sent);
        else if (got == 0)
            snprintf(detail, sizeof detail,
                     "0/%zu events arrived: a hop holds them, or the events do not go where "
                     "the URL listens (--subject, --publish-url)",
                     sent);
        else if (st.n == 0)
            snprintf(detail, sizeof detail,
                     "%zu/%zu events, all read as the probe woke from "
                     "stalls of its own (up to %.0f ms): not judged, rerun on a quieter machine",
                     got, sent, p->max_stall_ms);
        else
            snprintf(detail, sizeof detail,
                     "%zu/%zu events, %s; delay min %.1f / median %.1f / max %.1f ms (limit %llu)"
                     "%s",
                     got, sent, st.batched ? "arrived in bursts: a hop buffers" : "one at a time",
                     st.min, st.median, st.max, p->o.max_delay_ms,
                     p->out_of_order ? ", out of order" : "");
        size_t used = strlen(detail);
        if (st.batched)
            snprintf(detail + used, sizeof detail - used,
                     ", %zu of %zu arrived together with the one before", st.batched, st.n);
        used = strlen(detail);
        if (st.unjudged && st.n > 0)
            snprintf(detail + used, sizeof detail - used,
                     "; %zu not judged (read as the probe woke from a %.0f ms stall of its own)",
                     st.unjudged, p->max_stall_ms);
        add_check(p, "buffering", v, "%s", detail);
    } else {
        add_check(p, "first event", V_SKIP, "needs --nats/--subject or --publish-url");
        add_check(p, "buffering", V_SKIP, "needs --nats/--subject or --publish-url");
    }

    if (p->o.idle_ms == 0) {
        add_check(p, "heartbeat", V_SKIP, "needs --idle-ms above the gateway's heartbeat-ms");
    } else if (p->idle_start == 0) {
        add_check(p, "heartbeat", p->t_head > 0 ? V_FAIL : V_SKIP,
                  "the idle period never began%s%s%s", p->stream_closed ? ": " : "",
                  p->stream_closed ? p->close_reason : "", timeout_note);
    } else {
        double end = p->idle_end > 0 ? p->idle_end : (p->stream_closed ? p->closed_ms : cl_time_mono_ms());
        bool survived = p->idle_end > 0 && (!p->stream_closed || p->closed_ms >= p->idle_end);
        if (!survived)
            add_check(p, "heartbeat", V_FAIL,
                      "stream closed %.0f ms into a %llu ms idle period (%s) after %" PRIu64
                      " comments: a hop's idle timeout is below the heartbeat interval",
                      end - p->idle_start, p->o.idle_ms,
                      p->stream_closed ? p->close_reason : "timeout", p->idle_comments);
        else if (p->idle_comments == 0)
            add_check(p, "heartbeat", V_FAIL,
                      "no ':' comment in %llu ms idle: heartbeat-ms is above --idle-ms, or a hop "
                      "holds them",
                      p->o.idle_ms);
        else
            add_check(p, "heartbeat", V_PASS,
                      "open after %llu ms idle, %" PRIu64 " comments, longest silence %.0f ms",
                      p->o.idle_ms, p->idle_comments, p->longest_silence_ms);
        if (have_publisher(p) && survived) {
            const struct event_rec *e = &p->ev[p->o.events];
            if (e->recv_ms > 0 && e->stalled)
                add_check(p, "after idle", V_WARN,
                          "event delivered %.1f ms after publish, read after a stall of the "
                          "probe's own: not judged",
                          e->recv_ms - e->pub_ms);
            else if (e->recv_ms > 0)
                add_check(p, "after idle",
                          e->recv_ms - e->pub_ms <= (double)p->o.max_delay_ms ? V_PASS : V_FAIL,
                          "event delivered %.1f ms after publish", e->recv_ms - e->pub_ms);
            else
                add_check(p, "after idle", V_FAIL,
                          "the event published after the idle period "
                          "did not arrive%s%s%s",
                          p->stream_closed ? ": " : "", p->stream_closed ? p->close_reason : "",
                          timeout_note);
        }
    }
    if (p->t_head == 0)
        return;
    if (p->stream_closed)
        add_check(p, "stream", V_FAIL, "closed while %s: %s", phase_name(p->closed_phase),
                  p->close_reason);
    else
        add_check(p, "stream", V_PASS, "open until the probe ended it after %.0f ms",
                  cl_time_mono_ms() - p->t0);
    if (p->timed_out)
        add_check(p, "timeout", V_FAIL, "--timeout-ms %llu reached before the checks finished",
                  p->o.timeout_ms);
}

static const char *verdict_name(enum verdict v)
{
    switch (v) {
    case V_PASS: return "pass";
    case V_WARN: return "warn";
    case V_FAIL: return "fail";
    case V_SKIP: return "skip";
    }
    return "?";
}

static void json_string(FILE *f, const char *s)
{
    putc('"', f);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(f, "\\u%04x", *c);
        else
            putc(*c, f);
    }
    putc('"', f);
}

static void json_ms(FILE *f, const char *name, double from, double to, bool comma)
{
    fprintf(f, "%s\"%s\":", comma ? "," : "", name);
    if (from > 0 && to > 0)
        fprintf(f, "%.3f", to - from);
    else
        fputs("null", f);
}

/* Which time of each event a report array holds. */
enum event_time { EV_DELAY, EV_PUBLISHED, EV_RECEIVED };

/* One time of every event as a JSON array of ms (since t0, or publish to receive), null where
 * the event lacks it. */
static void json_event_times(FILE *f, const struct probe *p, enum event_time what)
{
    putc('[', f);
    for (size_t i = 0; i <= p->o.events && p->ev; i++) {
        const struct event_rec *e = &p->ev[i];
        bool have = what == EV_DELAY       ? e->pub_ms > 0 && e->recv_ms > 0
                    : what == EV_PUBLISHED ? e->pub_ms > 0
                                           : e->recv_ms > 0;
        double ms = what == EV_DELAY       ? e->recv_ms - e->pub_ms
                    : what == EV_PUBLISHED ? e->pub_ms - p->t0
                                           : e->recv_ms - p->t0;
        if (i)
            putc(',', f);
        if (have)
            fprintf(f, "%.3f", ms);
        else
            fputs("null", f);
    }
    putc(']', f);
}

static void report_json(const struct probe *p, bool ok, size_t failed, size_t warned)
{
    const struct link *l = &p->stream;
    FILE *f = stdout;
    struct stats st;
    delay_stats(p, &st);
    fputs("{\"url\":", f);
    json_string(f, p->o.url_arg);
    fprintf(f, ",\"ok\":%s,\"failed\":%zu,\"warnings\":%zu", ok ? "true" : "false", failed, warned);
    fputs(",\"protocol\":", f);
    if (p->t_request == 0)
        fputs("null", f);
    else
        json_string(f, l->h2 ? "h2" : "http/1.1");
    fputs(",\"tls\":", f);
    if (l->tls_version[0])
        json_string(f, l->tls_version);
    else
        fputs("null", f);
    fputs(",\"alpn\":", f);
    if (l->alpn[0])
        json_string(f, l->alpn);
    else
        fputs("null", f);
    fputs(",\"max_concurrent_streams\":", f);
    if (l->h2 && l->settings_seen && l->max_streams != UINT32_MAX)
        fprintf(f, "%" PRIu32, l->max_streams);
    else
        fputs("null", f);
    fprintf(f, ",\"status\":%d,\"headers\":{", p->status);
    for (size_t i = 0; i < p->nheaders; i++) {
        if (i)
            putc(',', f);
        json_string(f, p->headers[i].name);
        putc(':', f);
        json_string(f, p->headers[i].value);
    }
    fputs("},\"timings_ms\":{", f);
    json_ms(f, "connect", p->t0, p->t_connected, false);
    json_ms(f, "request", p->t0, p->t_request, true);
    json_ms(f, "first_byte", p->t_request, p->t_head, true);
    json_ms(f, "first_body", p->t_request, p->t_first_body, true);
    fputs(",\"first_event\":", f);
    if (st.first >= 0)
        fprintf(f, "%.3f", st.first);
    else
        fputs("null", f);
    fputs("}", f);
    fprintf(f,
            ",\"events\":{\"planned\":%llu,\"published\":%zu,\"received\":%zu,\"foreign\":%" PRIu64
            ",\"batched\":%zu,\"out_of_order\":%zu,\"publish_errors\":%u",
            have_publisher(p) ? p->o.events : 0ULL, p->npub, p->nrecv, p->foreign_events,
            st.batched, p->out_of_order, p->publish_errors);
    fprintf(f, ",\"unjudged\":%zu,\"probe_stall_max_ms\":%.3f,\"stalled\":[", st.unjudged,
            p->max_stall_ms);
    for (size_t i = 0, k = 0; i <= p->o.events && p->ev; i++) {
        if (p->ev[i].stalled)
            fprintf(f, "%s%zu", k++ ? "," : "", i);
    }
    fputs("]", f);
    if (st.n > 0)
        fprintf(f, ",\"min_delay_ms\":%.3f,\"median_delay_ms\":%.3f,\"max_delay_ms\":%.3f", st.min,
                st.median, st.max);
    fputs(",\"delays_ms\":", f);
    json_event_times(f, p, EV_DELAY);
    fputs(",\"published_at_ms\":", f);
    json_event_times(f, p, EV_PUBLISHED);
    fputs(",\"received_at_ms\":", f);
    json_event_times(f, p, EV_RECEIVED);
    putc('}', f);
    fprintf(f,
            ",\"heartbeat\":{\"idle_ms\":%llu,\"comments\":%" PRIu64 ",\"idle_comments\":%" PRIu64
            ",\"longest_silence_ms\":%.3f}",
            p->o.idle_ms, p->comments, p->idle_comments, p->longest_silence_ms);
    fprintf(f, ",\"body_bytes\":%" PRIu64 ",\"stream_closed\":%s,\"close_reason\":", p->body_bytes,
            p->stream_closed ? "true" : "false");
    if (p->stream_closed)
        json_string(f, p->close_reason);
    else
        fputs("null", f);
    fputs(",\"checks\":[", f);
    for (size_t i = 0; i < p->nchecks; i++) {
        fputs(i ? ",{\"name\":" : "{\"name\":", f);
        json_string(f, p->checks[i].name);
        fputs(",\"result\":", f);
        json_string(f, verdict_name(p->checks[i].v));
        fputs(",\"detail\":", f);
        json_string(f, p->checks[i].detail);
        putc('}', f);
    }
    fputs("]}\n", f);
    fflush(f);
}

static void report_text(const struct probe *p, bool ok, size_t failed, size_t warned)
{
    static const char *tag[] = {"SKIP", "PASS", "WARN", "FAIL"};
    printf("sluice-probe %s\n", p->o.url_arg);
    for (size_t i = 0; i < p->nchecks; i++)
        printf("  %s  %-13s %s\n", tag[p->checks[i].v], p->checks[i].name, p->checks[i].detail);
    if (p->nheaders > 0) {
        printf("  response headers:\n");
        for (size_t i = 0; i < p->nheaders; i++)
            printf("    %s: %s\n", p->headers[i].name, p->headers[i].value);
    }
    printf("result: %s (%zu failed, %zu warnings)\n", ok ? "PASS" : "FAIL", failed, warned);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Options and main */

static bool on_opt_connect(void *ctx, const char *arg)
{
    struct opts *o = ctx;
    o->connect_to = arg;
    return strrchr(arg, ':') != NULL;
}

/* Kept as written, "Name: value": both protocols' requests are made from it. */
static bool on_opt_header(void *ctx, const char *arg)
{
    struct opts *o = ctx;
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg ||
        o->nextra == sizeof o->extra_headers / sizeof o->extra_headers[0] || strpbrk(arg, "\r\n"))
        return false;
    o->extra_headers[o->nextra++] = arg;
    return true;
}

/* 0, 1 after --help, -1 after a usage error (said on stderr). */
static int parse_options(struct opts *o, int argc, char **argv)
{
    const struct cl_opt opts[] = {
        CL_OPT_STR("cacert", &o->cacert, "FILE",
                   "verify TLS against this CA file (default: system CAs)"),
        CL_OPT_FLAG("insecure", &o->insecure, "do not verify certificates"),
        CL_OPT_CALL("connect", on_opt_connect, o, "HOST:PORT",
                    "connect here instead of the stream URL's host (its name,\n"
                    "SNI and Host still come from the URL)"),
        CL_OPT_FLAG("http1.1", &o->http1, "offer only http/1.1 in ALPN"),
        CL_OPT_FLAG("h2c", &o->h2c, "http:// URLs: HTTP/2 with prior knowledge, not HTTP/1.1"),
        CL_OPT_FLAG("require-h2", &o->require_h2, "fail, not warn, when the stream is not HTTP/2"),
        CL_OPT_CALL("header", on_opt_header, o, "'N: V'",
                    "extra request header, e.g. Authorization (repeatable)"),
        CL_OPT_STR("nats", &o->nats_url, "URL", "publish the probe's events to NATS ..."),
        CL_OPT_STR("subject", &o->subject, "S",
                   "... on this subject (one the stream URL receives)"),
        CL_OPT_STR("publish-url", &o->publish_url, "URL",
                   "or POST them to this URL (e.g. .../publish/<subject>)"),
        CL_OPT_ULL("events", &o->events, 2, PROBE_EVENTS_MAX, "N", "events to publish (default 10)"),
        CL_OPT_ULL("interval-ms", &o->interval_ms, 10, 60000, "N",
                   "between two events (default 100)"),
        CL_OPT_ULL("max-delay-ms", &o->max_delay_ms, 0, 600000, "N",
                   "publish-to-receive limit per event (default 250)"),
        CL_OPT_ULL("head-wait-ms", &o->head_wait_ms, 1, 600000, "N",
                   "wait this long for the response head before publishing\n"
                   "blind to find a hop that holds it (default 3000)"),
        CL_OPT_ULL("event-bytes", &o->event_bytes, 0, 1 << 20, "N",
                   "pad each event's payload to N bytes (default: ~40)"),
        CL_OPT_ULL("idle-ms", &o->idle_ms, 0, 86400000, "N",
                   "then publish nothing for N ms: the stream must stay\n"
                   "open and receive ':' heartbeats (default 0: skipped)"),
        CL_OPT_ULL("timeout-ms", &o->timeout_ms, 1, 86400000, "N",
                   "hard bound on the whole run (default: enough for the\n"
                   "phases plus 10 s)"),
        CL_OPT_FLAG("json", &o->json, "one JSON object on stdout instead of the report"),
        CL_OPT_FLAG("verbose", &o->verbose, "progress on stderr"),
    };
    const struct cl_opt_spec spec = {
        .synopsis = "usage: sluice-probe URL [options]\n"
                    "Certifies that URL streams Server-Sent Events end to end, unbuffered.\n",
        .opts = opts,
        .nopts = sizeof opts / sizeof opts[0],
        .epilogue = "Exit status: 0 every check passed (warnings allowed), 1 a check failed,\n"
                    "2 usage or local set-up error.\n",
        .operand = "URL",
    };
    o->events = 10;
    o->interval_ms = 100;
    o->max_delay_ms = 250;
    o->head_wait_ms = 3000;
    int rc = cl_opt_parse(&spec, argc, argv);
    if (rc != 0)
        return rc;
    if ((o->nats_url != NULL) != (o->subject != NULL))
        return cl_opt_fail(&spec, "--nats and --subject go together");
    if (o->nats_url && o->publish_url)
        return cl_opt_fail(&spec, "--nats and --publish-url exclude each other");
    o->url_arg = argv[optind];
    if (o->timeout_ms == 0) {
        double max_delay = (double)o->max_delay_ms * 2 > PROBE_DRAIN_MIN_MS
                               ? (double)o->max_delay_ms * 2
                               : PROBE_DRAIN_MIN_MS;
        o->timeout_ms = 10000 + o->head_wait_ms + o->events * o->interval_ms + o->idle_ms +
                        2 * (unsigned long long)max_delay;
    }
    return 0;
}

static int setup_tls(struct probe *p)
{
    /* Proxies in front of sluice may speak either protocol: offer both
     * unless --http1.1 asks for the HTTP/1.1 path alone. */
    const char *alpn = p->o.http1 ? "\x08http/1.1" : "\x02h2\x08http/1.1";
    p->ssl_ctx = cl_tls_ctx_new(alpn, p->o.insecure, p->o.cacert, true);
    return p->ssl_ctx ? 0 : -1;
}

static int setup(struct probe *p)
{
    if (url_parse(&p->url, p->o.url_arg) < 0) {
        fprintf(stderr, "sluice-probe: bad URL %s (http:// or https:// HOST[:PORT]/PATH)\n",
                p->o.url_arg);
        return -1;
    }
    if (p->o.publish_url && url_parse(&p->pub_url, p->o.publish_url) < 0) {
        fprintf(stderr, "sluice-probe: bad --publish-url %s\n", p->o.publish_url);
        return -1;
    }
    if (setup_tls(p) < 0)
        return -1;
    if (p->o.nats_url && !(p->nc = cl_nats_connect(p->o.nats_url, false)))
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(
        p->run_id, sizeof p->run_id, "%08lx",
        (unsigned long)((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16) ^ (uint64_t)ts.tv_sec) &
            0xffffffffUL);
    p->ev = calloc(p->o.events + 1, sizeof *p->ev);
    if (!p->ev)
        abort();
    p->last_seq = -1;

    p->loop = ev_default_loop(EVFLAG_AUTO);
    if (!p->loop) {
        fputs("sluice-probe: cannot start libev\n", stderr);
        return -1;
    }
    p->stream = (struct link){.role = ROLE_STREAM, .probe = p, .url = &p->url};
    p->publisher = (struct link){.role = ROLE_PUBLISH, .probe = p, .url = &p->pub_url};
    cl_conn_init(&p->stream.net, p->loop, &conn_callbacks, p->url.tls ? p->ssl_ctx : NULL,
                 p->url.host, !p->o.insecure);
    cl_conn_init(&p->publisher.net, p->loop, &conn_callbacks, p->pub_url.tls ? p->ssl_ctx : NULL,
                 p->pub_url.host, !p->o.insecure);
    cl_h1_init(&p->stream.h1, &h1_callbacks, &p->stream, PROBE_HEAD_MAX);
    cl_h1_init(&p->publisher.h1, &h1_callbacks, &p->publisher, PROBE_HEAD_MAX);
    cl_sse_init(&p->sse, &sse_callbacks, p);
    ev_timer_init(&p->tick, on_tick, 0., 0.);
    ev_timer_init(&p->lag, on_lag, 0., 0.);
    ev_timer_init(&p->deadline, on_deadline, (double)p->o.timeout_ms / 1e3, 0.);
    ev_timer_start(p->loop, &p->deadline);
    ev_prepare_init(&p->prepare, on_prepare);
    ev_prepare_start(p->loop, &p->prepare);
    p->t0 = cl_time_mono_ms();
    cl_log_set_origin(p->t0);
    p->phase = PH_CONNECT;
    link_connect(&p->stream, p->o.connect_to);
    return 0;
}

static void dispose(struct probe *p)
{
    struct link *links[2] = {&p->stream, &p->publisher};
    for (int i = 0; i < 2; i++) {
        struct link *l = links[i];
        if (p->loop)
            link_close(l);
        while (l->queue) {
            struct pub_req *r = l->queue;
            l->queue = r->next;
            pub_req_free(r);
        }
        if (l->addrs)
            freeaddrinfo(l->addrs);
        cl_conn_dispose(&l->net);
    }
    if (p->nc) {
        natsConnection_FlushTimeout(p->nc, 1000);
        natsConnection_Destroy(p->nc);
    }
    if (p->o.nats_url)
        nats_Close();
    clear_headers(p);
    cl_sse_dispose(&p->sse);
    free(p->ev);
    if (p->loop)
        ev_loop_destroy(p->loop);
    SSL_CTX_free(p->ssl_ctx);
    url_dispose(&p->url);
    url_dispose(&p->pub_url);
}

int main(int argc, char **argv)
{
    static struct probe p; /* large; zeroed */
    cl_log_init("sluice-probe");
    int rc = parse_options(&p.o, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    cl_log_set_verbose(p.o.verbose);
    signal(SIGPIPE, SIG_IGN);
    if (setup(&p) < 0) {
        dispose(&p);
        return 2;
    }
    ev_run(p.loop, 0);
    /* Hand back the stream politely: GOAWAY on h2, then close. */
    if (p.stream.net.state == CL_CONN_OPEN && p.stream.session) {
        nghttp2_session_terminate_session(p.stream.session, NGHTTP2_NO_ERROR);
        flush_link(&p.stream);
    }
    mark_stalled(&p);
    judge(&p);
    size_t failed = 0, warned = 0;
    for (size_t i = 0; i < p.nchecks; i++) {
        failed += p.checks[i].v == V_FAIL;
        warned += p.checks[i].v == V_WARN;
    }
    bool ok = failed == 0;
    if (p.o.json)
        report_json(&p, ok, failed, warned);
    else
        report_text(&p, ok, failed, warned);
    dispose(&p);
    return ok ? 0 : 1;
}
