/*
 * conn: connection I/O, TLS or cleartext, and protocol selection (see conn.h).
 *
 * The protocol is chosen once: by ALPN on TLS ("h2" for h2, "http/1.1" or
 * none for HTTP/1.1), by the first bytes in cleartext (the request line
 * of the HTTP/2 client preface means h2 with prior knowledge, anything
 * else HTTP/1.1). h2c Upgrade is not offered: such a request is answered
 * as HTTP/1.1, its body read or the connection closed like any other. The
 * chosen front end is then reached only through its front_ops table
 * (front.h); nothing else here knows which protocol it is.
 *
 * One io watcher per connection. Reads are bounded per wake-up so one
 * busy client cannot starve the rest of the worker; when the socket will
 * not take more output, the connection stops reading (its peer gets no
 * new work done until it drains what it already asked for). After
 * SSL_ERROR_WANT_WRITE the very same bytes are offered again: the output
 * buffer is never touched while a write is pending.
 *
 * An HTTP/1.1 connection that left a request body unread closes with a
 * linger (start_linger): shut for writing, then reading and dropping for a
 * bounded time, so that the client's body bytes do not draw a reset that
 * destroys the answer.
 *
 * On a listener marked proxy-protocol, a PROXY v1/v2 header comes first,
 * before TLS or HTTP (read_proxy): peeked, parsed (proxy.h), and exactly
 * its bytes taken off the socket, under the handshake deadline. The
 * client it names replaces the peer as the connection's address and is
 * charged per address then; until then the connection counts in the total
 * only, as a trusted proxy's own connections always do (their requests
 * are charged to the clients they forward; request.c).
 *
 * Freeing: callbacks only mark a connection closing; the outermost
 * handler (the io callback or the worker's flush) frees it at its end.
 */
#include "sluice/conn.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/forwarded.h"
#include "sluice/guard.h"
#include "sluice/h1_parse.h"
#include "sluice/h2_conn.h"
#include "sluice/h1_conn.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/proxy.h"
#include "sluice/tls.h"

#define READ_BUDGET (256 * 1024) /* bytes per wake-up */
/*
 * TLS record sizes, as nghttpx sizes them (its tls-dyn-rec-* settings):
 * after TLS_IDLE_S without a write, a connection's first TLS_WARMUP_BYTES
 * go out in records of at most TLS_SMALL_RECORD bytes, each of which fits
 * one TCP segment and can be decrypted as soon as it arrives; then
 * SSL_write gets everything pending and makes full 16 KiB records. Linux
 * restarts an idle connection's congestion window from ten segments, so a
 * large record would otherwise sit in the client's kernel until its last
 * segment came, a round trip or more later: the first event after a quiet
 * spell (or a resume's replay on a new connection) is not held back by
 * the rest of its record. 64 KiB covers the first three round trips of
 * slow start (15 + 29 + 58 KB); under load every connection writes
 * continuously and stays on large records, one write and one record per
 * 16 KiB.
 */
#define TLS_SMALL_RECORD 1300
#define TLS_WARMUP_BYTES (64 * 1024)
#define TLS_IDLE_S 1.0
#define LINGER_S 2.0                /* seconds a lingering close reads and drops */
#define LINGER_BYTES (1024 * 1024)  /* bytes a lingering close reads and drops */
#define CONN_STATE_BYTES (30 * 1024) /* what a closed connection gives back, roughly (mem_trim) */

struct conn {
    struct conn_env *env;
    struct list node;       /* env->all */
    struct list dirty_node; /* env->dirty, or detached */
    ev_io io;
    int fd;
    SSL *ssl;               /* NULL for cleartext */
    const struct front_ops *ops; /* the protocol's; NULL: handshake or preface pending */
    void *front;            /* ops->new's, when ops is set */
    struct buf sniff;       /* cleartext: first bytes, until the protocol is known */
    struct buf out;         /* frames not yet accepted by SSL_write */
    uint64_t id;
    ev_tstamp opened;       /* ev_now at accept */
    ev_timer timer;         /* handshake deadline, then idle checks */
    ev_tstamp active;       /* last read, or last seen with a stream open */
    ev_tstamp goaway_at;    /* the idle GOAWAY was queued; 0 before */
    bool write_blocked;     /* SSL_write wants the socket writable */
    size_t write_len;       /* TLS: the length of an SSL_write to repeat; 0: none pending */
    size_t warm_bytes;      /* TLS: bytes written since the last idle spell */
    ev_tstamp last_write;   /* TLS: ev_now of the last write that wrote bytes */
    bool lingering;         /* answered and shut for writing; dropping what still arrives */
    size_t lingered;        /* bytes dropped while lingering; <= LINGER_BYTES */
    bool closing;
    bool awaiting_proxy;    /* a PROXY header must come first (sniff holds its bytes so far) */
    bool trusted;           /* address is a trusted proxy: requests name their clients */
    bool charged;           /* address is counted per address in the guard */
    char peer[64];          /* "ip:port": the client's (a PROXY header's when it named one) */
    char address[48];       /* ip, for the guard: the client's, as peer */
    char via[64];           /* the proxy's "ip:port" when a PROXY header named the client */
};

static atomic_uint_fast64_t next_id;

struct conn *conn_of_dirty(struct list *node) { return container_of(node, struct conn, dirty_node); }
struct conn *conn_of_node(struct list *node) { return container_of(node, struct conn, node); }

static void mark_dirty(void *ctx)
{
    struct conn *c = ctx;
    if (list_empty(&c->dirty_node) && !c->closing)
        list_insert_tail(&c->env->dirty, &c->dirty_node);
}

static void set_events(struct conn *c, int events)
{
    if (events == (c->io.events & (EV_READ | EV_WRITE)))
        return;
    ev_io_stop(c->env->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->env->loop, &c->io);
}

static void close_conn(struct conn *c, const char *why)
{
    if (c->closing)
        return;
    c->closing = true;
    log_debug("conn %" PRIu64 " %s: closing: %s", c->id, c->peer, why);
}

/* The reason OpenSSL gave for the last failure, for one log line. */
static const char *ssl_reason(int err)
{
    static _Thread_local char text[160];
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, text, sizeof(text));
    else if (err == SSL_ERROR_SYSCALL)
        snprintf(text, sizeof(text), "%s", errno ? strerror(errno) : "peer closed");
    else
        snprintf(text, sizeof(text), "ssl error %d", err);
    ERR_clear_error();
    return text;
}

/* Reads into data: bytes read, 0 when nothing more now, -1 when closed or failed. */
static ssize_t io_read(struct conn *c, uint8_t *data, size_t n)
{
    if (!c->ssl) {
        ssize_t r = read(c->fd, data, n);
        if (r > 0)
            return r;
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        close_conn(c, r == 0 ? "peer closed" : strerror(errno));
        return -1;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, data, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    close_conn(c, e == SSL_ERROR_ZERO_RETURN ? "peer closed" : ssl_reason(e));
    return -1;
}

/*
 * Writes out's pending bytes: bytes written, 0 when the socket is full
 * (*want_read set when TLS needs to read first), -1 when failed.
 */
static ssize_t io_write(struct conn *c, bool *want_read)
{
    *want_read = false;
    if (!c->ssl) {
        ssize_t w = write(c->fd, c->out.data + c->out.off, buf_pending(&c->out));
        if (w >= 0)
            return w;
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        close_conn(c, strerror(errno));
        return -1;
    }
    /* A write that wanted the socket is repeated with the very same length (OpenSSL's rule). */
    if (c->write_len == 0) {
        size_t n = buf_pending(&c->out);
        if (ev_now(c->env->loop) - c->last_write >= TLS_IDLE_S)
            c->warm_bytes = 0;
        if (c->warm_bytes < TLS_WARMUP_BYTES && n > TLS_SMALL_RECORD)
            n = TLS_SMALL_RECORD;
        c->write_len = n;
    }
    ERR_clear_error();
    int w = SSL_write(c->ssl, c->out.data + c->out.off, (int)c->write_len);
    if (w > 0) {
        c->write_len = 0;
        c->warm_bytes += (size_t)w;
        c->last_write = ev_now(c->env->loop);
        return w;
    }
    int e = SSL_get_error(c->ssl, w);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        *want_read = e == SSL_ERROR_WANT_READ;
        return 0;
    }
    close_conn(c, ssl_reason(e));
    return -1;
}

/*
 * Before a fill: a whole buffer at once, pooled or new, so that the frames
 * of a burst never grow it by doubling (ten reallocations and copies).
 */
static void take_out(struct conn *c)
{
    struct conn_env *env = c->env;
    if (c->out.data)
        return;
    c->out.data = env->out_pooled ? env->out_pool[--env->out_pooled] : mem_alloc(CONN_OUT_MAX);
    c->out.cap = CONN_OUT_MAX;
}

/* Drained: the buffer goes back to the worker, or to malloc when the pool is full. */
static void give_out(struct conn *c)
{
    struct conn_env *env = c->env;
    if (!c->out.data)
        return;
    if (c->out.cap == CONN_OUT_MAX && env->out_pooled < CONN_OUT_POOL) {
        env->out_pool[env->out_pooled++] = c->out.data;
        buf_init(&c->out);
        return;
    }
    mem_note_released(c->out.cap);
    buf_dispose(&c->out);
}

void conn_env_dispose(struct conn_env *env)
{
    while (env->out_pooled)
        free(env->out_pool[--env->out_pooled]);
}

/* The protocol is known: start its front end; the idle timer replaces the handshake deadline. */
static void start_front(struct conn *c, bool h2)
{
    c->ops = h2 ? &h2_front_ops : &http1_front_ops;
    c->active = ev_now(c->env->loop);
    ev_timer_stop(c->env->loop, &c->timer);
    ev_timer_set(&c->timer, c->env->requests.cfg->idle_timeout_ms / 1000.0, 0);
    ev_timer_start(c->env->loop, &c->timer);
    metrics_add(h2 ? &c->env->stats.open_h2 : &c->env->stats.open_h1, 1);
    struct front_io io = {
        .env = &c->env->requests,
        .out = &c->out,
        .out_max = CONN_OUT_MAX,
        .dirty = mark_dirty,
        .dirty_ctx = c,
        .conn_id = c->id,
        .peer = c->peer,
        .address = c->address,
        .via = c->via[0] ? c->via : NULL,
        .trusted = c->trusted,
        .secure = c->ssl != NULL,
    };
    c->front = c->ops->new(&io);
    mark_dirty(c);
}

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/* The preface's request line: no HTTP/1.1 request starts so (it would be a 505). */
#define PREFACE_LINE_LEN 14 /* "PRI * HTTP/2.0" */

/*
 * Whether a cleartext client's first line is an HTTP/1.x request line, by
 * its version token: 1 yes, 0 no, -1 not complete yet. A line longer than
 * HTTP/1.1 allows is left to its parser (414).
 */
static int http1_first_line(const uint8_t *p, size_t n)
{
    const uint8_t *lf = memchr(p, '\n', n);
    if (!lf)
        return n > H1_REQUEST_LINE_MAX ? 1 : -1;
    size_t len = (size_t)(lf - p);
    if (len && p[len - 1] == '\r')
        len--;
    static const char V[] = " HTTP/d.d";
    if (len < sizeof(V) - 1)
        return 0;
    const uint8_t *v = p + len - (sizeof(V) - 1);
    for (size_t i = 0; i < sizeof(V) - 1; i++) {
        /* Any case: "http/1.1" is a (refused) HTTP/1.1 client, not an HTTP/2 one. */
        uint8_t ch = v[i] >= 'a' && v[i] <= 'z' ? (uint8_t)(v[i] - 32) : v[i];
        bool ok = V[i] == 'd' ? ch >= '0' && ch <= '9' : ch == (uint8_t)V[i];
        if (!ok)
            return 0;
    }
    return 1;
}

/*
 * Cleartext: buffers the first bytes until they are, or cannot be, the
 * start of the HTTP/2 client preface; then starts the front end and feeds it
 * what was buffered. A client whose first bytes are the preface's request
 * line speaks HTTP/2 whatever follows: nghttp2 checks the rest, and a wrong
 * preface gets an HTTP/2 connection error (GOAWAY PROTOCOL_ERROR), not an
 * HTTP/1.1 answer it could not read. So does a client whose first line is
 * no HTTP/1.x request line at all (h2spec's "INVALID CONNECTION PREFACE"):
 * the listener's other protocol is h2, and a 400 would be unreadable to it.
 * The wait for a whole first line is bounded by the first-request timeout.
 */
static void sniff(struct conn *c, const uint8_t *data, size_t n)
{
    buf_append(&c->sniff, data, n);
    size_t have = c->sniff.len;
    size_t cmp = have < PREFACE_LINE_LEN ? have : PREFACE_LINE_LEN;
    bool h2 = memcmp(c->sniff.data, PREFACE, cmp) == 0;
    if (h2 && have < PREFACE_LINE_LEN)
        return;
    if (!h2) {
        int h1 = http1_first_line(c->sniff.data, have);
        if (h1 < 0)
            return;
        h2 = h1 == 0;
    }
    start_front(c, h2);
    if (c->ops->recv(c->front, c->sniff.data, c->sniff.len) != 0)
        close_conn(c, "protocol error");
    buf_dispose(&c->sniff);
}

static void do_read(struct conn *c)
{
    uint8_t data[16384];
    size_t budget = READ_BUDGET;
    c->active = ev_now(c->env->loop);
    while (!c->closing) {
        ssize_t n = io_read(c, data, sizeof(data));
        if (n <= 0)
            break;
        if (!c->ops)
            sniff(c, data, (size_t)n);
        else if (c->ops->recv(c->front, data, (size_t)n) != 0)
            close_conn(c, "protocol error");
        if (budget <= (size_t)n) {
            /* More may wait inside OpenSSL where the io watcher cannot see it. */
            ev_feed_event(c->env->loop, &c->io, EV_READ);
            break;
        }
        budget -= (size_t)n;
    }
    mark_dirty(c);
}

/* At most one line a second per worker: a flood must not become a log flood. */
static bool log_due(struct conn *c)
{
    static _Thread_local ev_tstamp last_log = -1e9;
    if (ev_now(c->env->loop) - last_log < 1.0)
        return false;
    last_log = ev_now(c->env->loop);
    return true;
}

/* Closes a connection whose PROXY header is missing, bad or late: counted, logged at most 1/s. */
static void refuse_proxy(struct conn *c, atomic_uint_fast64_t *counter, const char *why)
{
    metrics_add(counter, 1);
    if (log_due(c))
        log_info("conn %" PRIu64 " %s: PROXY protocol header %s; closing (at most one line a "
                 "second)", c->id, c->peer, why);
    close_conn(c, why);
}

/*
 * The PROXY header is complete: the connection is now its client's
 * (unless LOCAL: the proxy's own), counted per address as a direct one
 * would have been at accept, unless that client is itself a trusted proxy.
 */
static void proxy_ready(struct conn *c, const struct proxy_header *ph)
{
    c->awaiting_proxy = false;
    buf_dispose(&c->sniff);
    buf_init(&c->sniff);
    metrics_add(&c->env->stats.proxy_headers, 1);
    if (!ph->local) {
        snprintf(c->via, sizeof(c->via), "%s", c->peer);
        snprintf(c->address, sizeof(c->address), "%s", ph->address);
        snprintf(c->peer, sizeof(c->peer), strchr(ph->address, ':') ? "[%s]:%u" : "%s:%u",
                 ph->address, ph->port);
    }
    c->trusted = forwarded_nets_contains(c->env->requests.trusted, c->address);
    if (!c->trusted) {
        if (!guard_hold(c->env->guard, c->address)) {
            if (log_due(c))
                log_info("%s (via %s): connection refused: connections_per_address limit",
                         c->peer, c->via);
            metrics_add(&c->env->stats.refused_per_address, 1);
            close_conn(c, "connections_per_address");
            return;
        }
        c->charged = true;
    }
    log_debug("conn %" PRIu64 " %s: PROXY v%d header%s%s", c->id, c->peer, ph->version,
              c->via[0] ? " via " : " LOCAL", c->via);
}

/*
 * A listener marked proxy-protocol: the header first, before TLS or HTTP.
 * Peeks at what has arrived and takes off the socket only bytes that are
 * surely the header's (all of them while it is incomplete: a v1 line
 * lasts until its LF, a v2 header its declared length), so whatever
 * follows it stays there for OpenSSL or the HTTP sniffing. The wait is
 * bounded by the handshake timer.
 */
static void read_proxy(struct conn *c)
{
    uint8_t data[PROXY_HEADER_MAX];
    size_t have = c->sniff.len;
    if (have) /* sniff.data is NULL until the first append */
        memcpy(data, c->sniff.data, have);
    ssize_t r = recv(c->fd, data + have, sizeof(data) - have, MSG_PEEK);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        if (have)
            refuse_proxy(c, &c->env->stats.proxy_malformed, "cut short");
        else
            close_conn(c, r == 0 ? "peer closed" : strerror(errno));
        return;
    }
    struct proxy_header ph;
    int rc = proxy_parse(data, have + (size_t)r, &ph);
    if (rc == ERR_NOTFOUND)
        refuse_proxy(c, &c->env->stats.proxy_missing, "missing");
    else if (rc == ERR_LIMIT)
        refuse_proxy(c, &c->env->stats.proxy_oversized, "too long");
    else if (rc != 0 && rc != ERR_AGAIN)
        refuse_proxy(c, &c->env->stats.proxy_malformed, "malformed");
    if (rc != 0 && rc != ERR_AGAIN)
        return;
    size_t take = rc == 0 ? ph.len - have : (size_t)r;
    ssize_t got = recv(c->fd, data + have, take, 0);
    if (got != (ssize_t)take) {
        close_conn(c, "PROXY header read failed");
        return;
    }
    if (rc == ERR_AGAIN)
        buf_append(&c->sniff, data + have, take);
    else
        proxy_ready(c, &ph);
}

static void do_handshake(struct conn *c)
{
    ERR_clear_error();
    int rv = SSL_do_handshake(c->ssl);
    if (rv != 1) {
        int e = SSL_get_error(c->ssl, rv);
        if (e == SSL_ERROR_WANT_READ)
            set_events(c, EV_READ);
        else if (e == SSL_ERROR_WANT_WRITE)
            set_events(c, EV_WRITE);
        else {
            log_info("conn %" PRIu64 " %s: TLS handshake failed: %s", c->id, c->peer,
                     ssl_reason(e));
            metrics_add(&c->env->stats.tls_failures, 1);
            close_conn(c, "handshake failed");
        }
        return;
    }
    set_events(c, EV_READ);
    start_front(c, tls_is_h2(c->ssl));
    do_read(c);
}

/*
 * HTTP/1.1 that stopped reading a request body: closing at once, with the
 * client still sending that body, makes the kernel answer its bytes with a
 * reset, which can destroy our answer before the client reads it. So the
 * connection is shut for writing (the client sees the end of the answer)
 * and what still arrives is read and dropped until the client closes, for
 * at most LINGER_S seconds and LINGER_BYTES bytes.
 */
static void start_linger(struct conn *c)
{
    c->lingering = true;
    if (c->ssl) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* close_notify, best effort */
        ERR_clear_error();
    }
    shutdown(c->fd, SHUT_WR);
    ev_timer_stop(c->env->loop, &c->timer);
    ev_timer_set(&c->timer, LINGER_S, 0);
    ev_timer_start(c->env->loop, &c->timer);
    set_events(c, EV_READ);
}

static void linger_read(struct conn *c)
{
    uint8_t data[16384];
    for (;;) {
        ssize_t r = read(c->fd, data, sizeof(data));
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            close_conn(c, "lingering close done");
            return;
        }
        c->lingered += (size_t)r;
        if (c->lingered > LINGER_BYTES) {
            close_conn(c, "lingering close: too many bytes");
            return;
        }
    }
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct conn *c = container_of(w, struct conn, io);
    if (c->lingering)
        linger_read(c);
    else if (c->awaiting_proxy)
        read_proxy(c);
    else if (c->ssl && !c->ops)
        do_handshake(c);
    else if (c->write_blocked)
        mark_dirty(c); /* the flush retries the pending write */
    else if (revents & EV_READ)
        do_read(c);
    if (c->closing)
        conn_free(c);
}

/*
 * During the handshake: the deadline. After: a connection with no stream
 * and nothing read for idle-timeout-ms (checked lazily, so between one and
 * two timeouts) is told GOAWAY; if it has not closed 5 s later (a peer
 * that does not read cannot even receive the GOAWAY), it is closed.
 */
static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct conn *c = container_of(t, struct conn, timer);
    double idle = c->env->requests.cfg->idle_timeout_ms / 1000.0;
    if (c->lingering) {
        close_conn(c, "lingering close timed out");
    } else if (c->awaiting_proxy) {
        refuse_proxy(c, &c->env->stats.proxy_timeout, "not complete within handshake-timeout-ms");
    } else if (!c->ops) {
        log_info("conn %" PRIu64 " %s: %s timed out", c->id, c->peer,
                 c->ssl ? "TLS handshake" : "first request");
        metrics_add(&c->env->stats.handshake_timeouts, 1);
        close_conn(c, "handshake timeout");
    } else if (c->goaway_at) {
        if (ev_now(loop) - c->goaway_at >= 5.0)
            close_conn(c, "idle, GOAWAY not taken");
    } else if (c->ops->streams(c->front) > 0) {
        c->active = ev_now(loop);
    } else if (ev_now(loop) - c->active >= idle) {
        log_info("conn %" PRIu64 " %s: idle for %.0f s; GOAWAY", c->id, c->peer, idle);
        metrics_add(&c->env->stats.idle_timeouts, 1);
        c->ops->goaway(c->front);
        mark_dirty(c);
        c->goaway_at = ev_now(loop);
    }
    if (c->closing) {
        conn_free(c);
        return;
    }
    /* After the GOAWAY, check again when the 5 s grace is over. */
    ev_timer_set(t, c->goaway_at ? 5.0 : idle, 0);
    ev_timer_start(loop, t);
}

struct conn *conn_new(struct conn_env *env, int fd, bool tls, bool proxied, const char *address,
                      const char *peer)
{
    const char *limit;
    bool trusted = forwarded_nets_contains(env->requests.trusted, address);
    if (proxied && forwarded_nets_count(env->requests.trusted) && !trusted) {
        metrics_add(&env->stats.proxy_untrusted, 1);
        static _Thread_local ev_tstamp last_untrusted = -1e9;
        if (ev_now(env->loop) - last_untrusted >= 1.0) {
            last_untrusted = ev_now(env->loop);
            log_info("%s: connection refused: a proxy-protocol listener, and the peer is not "
                     "in trusted-proxies", peer);
        }
        close(fd);
        return NULL;
    }
    /*
     * A trusted proxy's connection carries many clients (nginx: one per
     * request over keep-alive), and a PROXY header's names its client
     * later: both count in the total only until a client is known.
     */
    bool per_address = !proxied && !trusted;
    if (!guard_admit(env->guard, per_address ? address : NULL, &limit)) {
        /* At most one line a second per worker: a flood must not become a log flood. */
        static _Thread_local ev_tstamp last_log;
        if (ev_now(env->loop) - last_log >= 1.0) {
            last_log = ev_now(env->loop);
            log_info("%s: connection refused: %s limit", peer, limit);
        }
        metrics_add(strcmp(limit, "connections") == 0 ? &env->stats.refused
                                                       : &env->stats.refused_per_address,
                    1);
        close(fd);
        return NULL;
    }
    struct conn *c = mem_calloc(1, sizeof(*c));
    snprintf(c->address, sizeof(c->address), "%s", address);
    c->charged = per_address;
    c->trusted = trusted && !proxied;
    c->awaiting_proxy = proxied;
    c->env = env;
    c->fd = fd;
    c->id = atomic_fetch_add(&next_id, 1) + 1;
    c->opened = ev_now(env->loop);
    metrics_add(&env->stats.accepted, 1);
    metrics_add(&env->stats.open, 1);
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    buf_init(&c->out);
    list_init(&c->dirty_node);
    list_insert_tail(&env->all, &c->node);
    buf_init(&c->sniff);
    if (tls) {
        c->ssl = tls_ssl_new(env->tls);
        SSL_set_fd(c->ssl, fd);
        SSL_set_accept_state(c->ssl);
    }
    ev_io_init(&c->io, on_io, fd, EV_READ);
    ev_io_start(env->loop, &c->io);
    ev_timer_init(&c->timer, on_timer, env->requests.cfg->handshake_timeout_ms / 1000.0, 0);
    ev_timer_start(env->loop, &c->timer);
    log_debug("conn %" PRIu64 " %s: accepted", c->id, c->peer);
    return c;
}

void conn_free(struct conn *c)
{
    if (!c)
        return;
    ev_io_stop(c->env->loop, &c->io);
    ev_timer_stop(c->env->loop, &c->timer);
    guard_release(c->env->guard, c->charged ? c->address : NULL);
    metrics_add(&c->env->stats.open, -1);
    if (c->ops)
        metrics_add(c->ops == &h2_front_ops ? &c->env->stats.open_h2 : &c->env->stats.open_h1, -1);
    metrics_observe(&c->env->stats.age, ev_now(c->env->loop) - c->opened);
    list_remove(&c->node);
    list_remove(&c->dirty_node);
    /* close_notify, best effort: a clean end for the peer, not an unexpected EOF. */
    if (c->ssl && c->ops && !c->write_blocked && !c->lingering)
        SSL_shutdown(c->ssl);
    if (c->ops)
        c->ops->free(c->front);
    ERR_clear_error();
    SSL_free(c->ssl);
    buf_dispose(&c->sniff);
    close(c->fd);
    if (buf_pending(&c->out) == 0)
        give_out(c);
    /* Its TLS and protocol state too: about 30 KiB per idle h2 connection (bench/README.md). */
    mem_note_released(c->out.cap + CONN_STATE_BYTES);
    buf_dispose(&c->out);
    free(c);
}

void conn_flush(struct conn *c)
{
    list_remove(&c->dirty_node);
    while (!c->closing && !c->lingering && c->ops) {
        if (buf_pending(&c->out) == 0) {
            take_out(c);
            if (c->ops->fill(c->front) != 0) {
                close_conn(c, "protocol error");
                break;
            }
            if (buf_pending(&c->out) == 0) {
                give_out(c);
                c->write_blocked = false;
                set_events(c, EV_READ);
                if (c->ops->finished(c->front) && c->ops->unread_input(c->front))
                    start_linger(c);
                else if (c->ops->finished(c->front))
                    close_conn(c, "front end finished");
                break;
            }
        }
        bool want_read;
        ssize_t n = io_write(c, &want_read);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            metrics_add(&c->env->stats.bytes_written, n);
            continue;
        }
        if (n == 0) {
            /* Soft limit: no new requests are read until the peer drains this. */
            c->write_blocked = true;
            set_events(c, want_read ? EV_READ : EV_WRITE);
        }
        break;
    }
    if (c->closing)
        conn_free(c);
}

void conn_drain_notice(struct conn *c)
{
    if (!c->ops || c->lingering) {
        close_conn(c, "draining");
        conn_free(c);
        return;
    }
    c->ops->shutdown_notice(c->front);
    mark_dirty(c);
}

void conn_drain_final(struct conn *c)
{
    if (c->lingering || !c->ops)
        return;
    c->ops->goaway(c->front);
    mark_dirty(c);
}
