/*
 * conn: TLS connection I/O (see conn.h).
 *
 * One io watcher per connection. Reads are bounded per wake-up so one
 * busy client cannot starve the rest of the worker; when the socket will
 * not take more output, the connection stops reading (its peer gets no
 * new work done until it drains what it already asked for). After
 * SSL_ERROR_WANT_WRITE the very same bytes are offered again: the output
 * buffer is never touched while a write is pending.
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
#include <unistd.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/guard.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/tls.h"

#define READ_BUDGET (256 * 1024) /* bytes per wake-up */

struct conn {
    struct conn_env *env;
    struct list node;       /* env->all */
    struct list dirty_node; /* env->dirty, or detached */
    ev_io io;
    int fd;
    SSL *ssl;
    struct h2 *h2;          /* NULL until the handshake is done */
    struct buf out;         /* frames not yet accepted by SSL_write */
    uint64_t id;
    ev_tstamp opened;       /* ev_now at accept */
    ev_timer timer;         /* handshake deadline, then idle checks */
    ev_tstamp idle_since;   /* 0 while streams are open */
    bool write_blocked;     /* SSL_write wants the socket writable */
    bool closing;
    char peer[64];          /* "ip:port" */
    char address[48];       /* ip, for the guard */
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

static void do_read(struct conn *c)
{
    uint8_t data[16384];
    size_t budget = READ_BUDGET;
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, data, sizeof(data));
        if (n > 0) {
            if (h2_recv(c->h2, data, (size_t)n) != 0) {
                close_conn(c, "protocol error");
                return;
            }
            if (budget <= (size_t)n) {
                /* More may wait inside OpenSSL where the io watcher cannot see it. */
                ev_feed_event(c->env->loop, &c->io, EV_READ);
                break;
            }
            budget -= (size_t)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        close_conn(c, e == SSL_ERROR_ZERO_RETURN ? "peer closed" : ssl_reason(e));
        return;
    }
    mark_dirty(c);
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
    if (!tls_is_h2(c->ssl)) {
        close_conn(c, "ALPN did not select h2");
        return;
    }
    set_events(c, EV_READ);
    /* From now on the timer checks idleness instead of the handshake deadline. */
    c->idle_since = ev_now(c->env->loop);
    ev_timer_stop(c->env->loop, &c->timer);
    ev_timer_set(&c->timer, c->env->h2.cfg->idle_timeout_ms / 1000.0, 0);
    ev_timer_start(c->env->loop, &c->timer);
    c->h2 = h2_new(&c->env->h2, &c->out, CONN_OUT_MAX, mark_dirty, c, c->id, c->peer);
    mark_dirty(c);
    do_read(c);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct conn *c = container_of(w, struct conn, io);
    if (!c->h2)
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
 * for idle-timeout-ms (checked lazily, so between one and two timeouts)
 * is told GOAWAY and closes.
 */
static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct conn *c = container_of(t, struct conn, timer);
    double idle = c->env->h2.cfg->idle_timeout_ms / 1000.0;
    if (!c->h2) {
        log_info("conn %" PRIu64 " %s: TLS handshake timed out", c->id, c->peer);
        metrics_add(&c->env->stats.handshake_timeouts, 1);
        close_conn(c, "handshake timeout");
    } else if (h2_streams(c->h2) > 0) {
        c->idle_since = 0;
    } else if (c->idle_since == 0) {
        c->idle_since = ev_now(loop);
    } else if (ev_now(loop) - c->idle_since >= idle) {
        log_debug("conn %" PRIu64 " %s: idle; GOAWAY", c->id, c->peer);
        metrics_add(&c->env->stats.idle_timeouts, 1);
        h2_goaway(c->h2);
        mark_dirty(c);
        /* The flush closes it once the GOAWAY is out; this is only the backstop. */
        c->idle_since = ev_now(loop) - idle + 5.0;
    }
    if (c->closing) {
        conn_free(c);
        return;
    }
    ev_timer_set(t, idle, 0);
    ev_timer_start(loop, t);
}

struct conn *conn_new(struct conn_env *env, int fd, const char *address, const char *peer)
{
    const char *limit;
    if (!guard_admit(env->guard, address, &limit)) {
        log_debug("%s: refused: %s limit", peer, limit);
        metrics_add(strcmp(limit, "connections") == 0 ? &env->stats.refused
                                                       : &env->stats.refused_per_address,
                    1);
        close(fd);
        return NULL;
    }
    struct conn *c = mem_calloc(1, sizeof(*c));
    snprintf(c->address, sizeof(c->address), "%s", address);
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
    c->ssl = tls_ssl_new(env->tls);
    SSL_set_fd(c->ssl, fd);
    SSL_set_accept_state(c->ssl);
    ev_io_init(&c->io, on_io, fd, EV_READ);
    ev_io_start(env->loop, &c->io);
    ev_timer_init(&c->timer, on_timer, env->h2.cfg->handshake_timeout_ms / 1000.0, 0);
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
    guard_release(c->env->guard, c->address);
    metrics_add(&c->env->stats.open, -1);
    metrics_observe(&c->env->stats.age, ev_now(c->env->loop) - c->opened);
    list_remove(&c->node);
    list_remove(&c->dirty_node);
    /* close_notify, best effort: a clean end for the peer, not an unexpected EOF. */
    if (c->h2 && !c->write_blocked)
        SSL_shutdown(c->ssl);
    h2_free(c->h2);
    ERR_clear_error();
    SSL_free(c->ssl);
    close(c->fd);
    buf_dispose(&c->out);
    free(c);
}

void conn_flush(struct conn *c)
{
    list_remove(&c->dirty_node);
    while (!c->closing && c->h2) {
        if (buf_pending(&c->out) == 0) {
            if (h2_fill(c->h2) != 0) {
                close_conn(c, "protocol error");
                break;
            }
            if (buf_pending(&c->out) == 0) {
                c->write_blocked = false;
                set_events(c, EV_READ);
                if (h2_finished(c->h2))
                    close_conn(c, "session finished");
                break;
            }
        }
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out.data + c->out.off, (int)buf_pending(&c->out));
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            metrics_add(&c->env->stats.bytes_written, n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            /* Soft limit: no new requests are read until the peer drains this. */
            c->write_blocked = true;
            set_events(c, e == SSL_ERROR_WANT_WRITE ? EV_WRITE : EV_READ);
            break;
        }
        close_conn(c, ssl_reason(e));
    }
    if (c->closing)
        conn_free(c);
}

void conn_drain_notice(struct conn *c)
{
    if (!c->h2) {
        close_conn(c, "draining");
        conn_free(c);
        return;
    }
    h2_shutdown_notice(c->h2);
    mark_dirty(c);
}

void conn_drain_final(struct conn *c)
{
    if (c->h2) {
        h2_goaway(c->h2);
        mark_dirty(c);
    }
}
