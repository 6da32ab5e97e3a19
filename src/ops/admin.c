/*
 * admin: operator endpoints on their own thread (see admin.h).
 *
 * Deliberately simple: the request head is read (at most 8 KiB, within
 * 5 s), answered with `connection: close`, and the socket closed after the
 * response is written. Scrapers and probes make one request per
 * connection anyway; keep-alive would only add state to get wrong.
 */
#include "sluice/admin.h"

#include <errno.h>
#include <ev.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/err.h"
#include "sluice/host.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/net.h"

#define ADMIN_HEAD_MAX 8192
#define ADMIN_TIMEOUT_S 5.0

struct admin {
    struct admin_params p;
    struct ev_loop *loop;
    pthread_t thread;
    int fd;
    ev_io accept_io;
    ev_async stop;
    struct list clients; /* client.node */
};

struct client {
    struct admin *a;
    struct list node;
    int fd;
    ev_io io;
    ev_timer timeout;
    struct buf in;
    struct buf out;
    bool replied;
};

static void client_free(struct client *c)
{
    list_remove(&c->node);
    ev_io_stop(c->a->loop, &c->io);
    ev_timer_stop(c->a->loop, &c->timeout);
    close(c->fd);
    buf_dispose(&c->in);
    buf_dispose(&c->out);
    free(c);
}

static void reply(struct client *c, int status, const char *ctype, const void *body, size_t len)
{
    const char *text = status == 200 ? "OK" : status == 202 ? "Accepted"
                     : status == 403 ? "Forbidden" : status == 404 ? "Not Found"
                     : status == 405 ? "Method Not Allowed" : status == 503 ? "Service Unavailable"
                     : status == 421 ? "Misdirected Request"
                     : "Bad Request";
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                     "cache-control: no-store\r\nconnection: close\r\n\r\n",
                     status, text, ctype, len);
    buf_append(&c->out, head, (size_t)n);
    buf_append(&c->out, body, len);
    c->replied = true;
}

static void reply_text(struct client *c, int status, const char *text)
{
    reply(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/*
 * The Host field's value in the NUL-terminated head: *len bytes at the
 * result, or NULL when there is none. Two Host fields are refused as one
 * bad one (a value of length 0).
 */
static const char *host_of(const char *head, size_t *len)
{
    const char *found = NULL;
    const char *end = strstr(head, "\n\r\n");
    if (!end)
        end = strstr(head, "\n\n");
    for (const char *p = strchr(head, '\n'); p && p < end; p = strchr(p + 1, '\n')) {
        if (strncasecmp(p + 1, "host:", 5) != 0)
            continue;
        if (found) {
            *len = 0;
            return found;
        }
        found = p + 6;
        found += strspn(found, " \t");
        *len = strcspn(found, "\r\n");
        while (*len && (found[*len - 1] == ' ' || found[*len - 1] == '\t'))
            (*len)--;
    }
    return found;
}

/* True when the head has an Origin field: a browser sent it. */
static bool has_origin(const char *head)
{
    for (const char *p = strchr(head, '\n'); p; p = strchr(p + 1, '\n'))
        if (strncasecmp(p + 1, "origin:", 7) == 0)
            return true;
    return false;
}

/* POST /revoke?principal=…&subject=…&reason=…: 202 once every worker has it in its inbox. */
static void serve_revoke(struct client *c, const char *method, const char *query)
{
    const char *why = NULL;
    if (strcmp(method, "POST") != 0)
        reply_text(c, 405, "method not allowed (use POST)\n");
    else if (has_origin((const char *)c->in.data))
        reply_text(c, 403, "a browser's request (Origin) cannot revoke\n");
    else if (c->a->p.revoke(c->a->p.ctx, query ? query : "", query ? strlen(query) : 0, &why) != 0) {
        char text[256];
        snprintf(text, sizeof(text), "%s\n", why);
        reply_text(c, 400, text);
    } else
        reply_text(c, 202, "revoking\n");
}

static void route(struct client *c)
{
    char method[8], path[256];
    if (sscanf((const char *)c->in.data, "%7s %255s HTTP/1.", method, path) != 2) {
        reply_text(c, 400, "bad request\n");
        return;
    }
    /* No Host is a probe (HTTP/1.0 health checks send none); a browser always sends one. */
    size_t hlen = 0;
    const char *host = host_of((const char *)c->in.data, &hlen);
    if (host && !host_allowed(host, hlen, c->a->p.allowed_hosts)) {
        reply_text(c, 421, "Host is not a name of this listener (allowed-hosts)\n");
        return;
    }
    char *q = strchr(path, '?');
    if (q)
        *q++ = '\0';
    if (strcmp(path, "/revoke") == 0 && c->a->p.revoke) {
        serve_revoke(c, method, q);
        return;
    }
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
        strcmp(path, "/readyz") == 0) {
        if (!get) {
            reply_text(c, 405, "method not allowed\n");
            return;
        }
    } else {
        reply_text(c, 404, "not found\n");
        return;
    }
    if (strcmp(path, "/healthz") == 0) {
        reply_text(c, 200, "ok\n");
    } else if (strcmp(path, "/readyz") == 0) {
        const char *why = NULL;
        char text[160];
        bool ready = c->a->p.ready(c->a->p.ctx, &why);
        snprintf(text, sizeof(text), ready ? "ready\n" : "not ready: %s\n", why ? why : "?");
        reply_text(c, ready ? 200 : 503, text);
    } else {
        struct buf body;
        buf_init(&body);
        c->a->p.metrics(c->a->p.ctx, &body);
        reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", body.data, body.len);
        buf_dispose(&body);
    }
    if (strcmp(method, "HEAD") == 0) {
        /* Same headers, no body: cut the buffer after the blank line. */
        uint8_t *end = memmem(c->out.data, c->out.len, "\r\n\r\n", 4);
        c->out.len = (size_t)(end + 4 - c->out.data);
    }
}

static void on_client_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct client *c = container_of(w, struct client, io);
    if (!c->replied) {
        ssize_t n = read(c->fd, buf_reserve(&c->in, 1024), 1024);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            client_free(c);
            return;
        }
        c->in.len += (size_t)n;
        *buf_reserve(&c->in, 1) = '\0';
        if (memmem(c->in.data, c->in.len, "\r\n\r\n", 4) || memmem(c->in.data, c->in.len, "\n\n", 2))
            route(c);
        else if (c->in.len > ADMIN_HEAD_MAX)
            reply_text(c, 431, "request header too large\n");
        if (!c->replied)
            return;
        ev_io_stop(c->a->loop, &c->io);
        ev_io_set(&c->io, c->fd, EV_WRITE);
        ev_io_start(c->a->loop, &c->io);
    }
    ssize_t n = write(c->fd, c->out.data + c->out.off, buf_pending(&c->out));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        buf_consume(&c->out, (size_t)n);
    if (n <= 0 || buf_pending(&c->out) == 0) {
        shutdown(c->fd, SHUT_WR);
        client_free(c);
    }
}

static void on_client_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    client_free(container_of(t, struct client, timeout));
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct admin *a = container_of(w, struct admin, accept_io);
    for (int i = 0; i < 16; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct client *c = mem_calloc(1, sizeof(*c));
        c->a = a;
        c->fd = fd;
        list_insert_tail(&a->clients, &c->node);
        buf_init(&c->in);
        buf_init(&c->out);
        ev_io_init(&c->io, on_client_io, fd, EV_READ);
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timeout, on_client_timeout, ADMIN_TIMEOUT_S, 0);
        ev_timer_start(loop, &c->timeout);
    }
}

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *run(void *arg)
{
    struct admin *a = arg;
    ev_run(a->loop, 0);
    return NULL;
}

int admin_new(struct admin **out, const struct admin_params *p, char *bound, size_t blen,
              char *err, size_t errlen)
{
    int fd;
    int rc = net_listen(p->listen, &fd, 1, false, NULL, bound, blen, err, errlen);
    if (rc != 0)
        return rc;
    struct admin *a = mem_calloc(1, sizeof(*a));
    a->p = *p;
    a->fd = fd;
    list_init(&a->clients);
    a->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    ev_io_init(&a->accept_io, on_accept, fd, EV_READ);
    ev_io_start(a->loop, &a->accept_io);
    ev_async_init(&a->stop, on_stop);
    ev_async_start(a->loop, &a->stop);
    if (pthread_create(&a->thread, NULL, run, a) != 0) {
        snprintf(err, errlen, "cannot start the admin thread");
        ev_loop_destroy(a->loop);
        close(fd);
        free(a);
        return ERR_IO;
    }
    *out = a;
    return 0;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    ev_async_send(a->loop, &a->stop);
    pthread_join(a->thread, NULL);
    while (!list_empty(&a->clients))
        client_free(container_of(a->clients.next, struct client, node));
    ev_loop_destroy(a->loop);
    close(a->fd);
    free(a);
}
