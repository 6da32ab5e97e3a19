/*
 * cl_conn: see cl_conn.h for the states and the write rule.
 */
#include "cl_conn.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cl_net.h"
#include "cl_tls.h"

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

void cl_conn_init(struct cl_conn *c, struct ev_loop *loop, const struct cl_conn_callbacks *cb,
                  SSL_CTX *tls, const char *tls_name, bool tls_verify)
{
    *c = (struct cl_conn){
        .loop = loop,
        .cb = cb,
        .tls = tls,
        .tls_name = tls_name,
        .tls_verify = tls_verify,
        .fd = -1,
    };
}

void cl_conn_watch(struct cl_conn *c, int events)
{
    if (events == c->io_events)
        return;
    ev_io_stop(c->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(c->loop, &c->io);
    c->io_events = events;
}

static void open_done(struct cl_conn *c)
{
    c->state = CL_CONN_OPEN;
    c->cb->on_open(c);
}

static void handshake(struct cl_conn *c)
{
    bool want_write = false;
    const char *why = NULL;
    int r = cl_tls_handshake(c->ssl, &want_write, &why);
    if (r == CL_TLS_AGAIN)
        cl_conn_watch(c, want_write ? EV_WRITE : EV_READ);
    else if (r != 1)
        c->cb->on_fail(c, "TLS handshake", why);
    else
        open_done(c);
}

static void connect_done(struct cl_conn *c)
{
    int err = cl_net_connect_result(c->fd);
    if (err != 0) {
        c->cb->on_fail(c, "connect", strerror(err));
        return;
    }
    if (c->cb->on_connected)
        c->cb->on_connected(c);
    if (!c->tls) {
        open_done(c);
        return;
    }
    c->ssl = cl_tls_new(c->tls, c->fd, c->tls_name, c->tls_verify);
    if (!c->ssl) {
        c->cb->on_fail(c, "TLS", cl_tls_error());
        return;
    }
    c->state = CL_CONN_HANDSHAKE;
    handshake(c);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    struct cl_conn *c = container_of(w, struct cl_conn, io);
    (void)loop;
    switch (c->state) {
    case CL_CONN_CONNECTING: connect_done(c); break;
    case CL_CONN_HANDSHAKE: handshake(c); break;
    case CL_CONN_OPEN: c->cb->on_ready(c, revents); break;
    case CL_CONN_IDLE: break;
    }
}

int cl_conn_start(struct cl_conn *c, const struct addrinfo *ai)
{
    c->fd = cl_net_connect(ai);
    if (c->fd < 0)
        return -1;
    c->state = CL_CONN_CONNECTING;
    c->io_events = EV_WRITE;
    ev_io_init(&c->io, on_io, c->fd, EV_WRITE);
    ev_io_start(c->loop, &c->io);
    return 0;
}

ssize_t cl_conn_read(struct cl_conn *c)
{
    char buf[CL_CONN_READ_CHUNK];
    c->read_wants_write = false;
    /* Bytes OpenSSL already holds do not make the socket readable again,
     * so the per-wake bound only applies once they are drained. */
    for (int i = 0; i < CL_CONN_READS_PER_WAKE || (c->ssl && SSL_has_pending(c->ssl)); i++) {
        ssize_t n = cl_tls_read(c->ssl, c->fd, buf, sizeof buf, &c->read_wants_write);
        if (n <= 0)
            return n;
        if (!c->cb->on_read(c, buf, (size_t)n))
            return CL_CONN_STOPPED;
    }
    return CL_TLS_AGAIN;
}

int cl_conn_send(struct cl_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = cl_tls_write(c->ssl, c->fd, c->out.p + c->out_off, c->out.len - c->out_off);
        if (n == CL_TLS_AGAIN)
            return 0;
        if (n < 0)
            return CL_TLS_ERROR;
        c->out_off += (uint32_t)n;
    }
    c->out.len = c->out_off = 0;
    return 0;
}

bool cl_conn_pending(const struct cl_conn *c) { return c->out_off < c->out.len; }

const char *cl_conn_error(const struct cl_conn *c)
{
    return c->ssl ? cl_tls_error() : errno ? strerror(errno) : "connection closed";
}

void cl_conn_close(struct cl_conn *c, bool notify_peer)
{
    if (c->state == CL_CONN_IDLE && c->fd < 0)
        return;
    ev_io_stop(c->loop, &c->io);
    c->io_events = 0;
    if (c->ssl) {
        if (notify_peer && c->state == CL_CONN_OPEN)
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->out.len = c->out_off = 0;
    c->read_wants_write = false;
    c->state = CL_CONN_IDLE;
}

void cl_conn_dispose(struct cl_conn *c)
{
    if (c->loop)
        cl_conn_close(c, false);
    cl_buf_dispose(&c->out);
}
