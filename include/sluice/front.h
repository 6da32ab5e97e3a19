/*
 * front: what a protocol front end (h2, http1) offers the connection that
 * carries it, and how it is wired to that connection.
 *
 * A connection (conn.c) learns its protocol once (ALPN, or the first
 * bytes in cleartext) and from then on drives the front end only through
 * its front_ops table: bytes in (recv), bytes out (fill, into the
 * connection's output buffer up to out_max), and the questions the
 * connection asks (finished, unread input, open streams, drain). A front
 * end turns bytes into requests for the request pipeline (request.h) and
 * its response calls back into bytes; it never touches the socket.
 *
 * Rejected: a switch on the protocol in each of the connection's helpers
 * (how conn.c began): every new question meant one more switch, and a
 * third protocol would have meant editing all of them.
 */
#ifndef SLUICE_FRONT_H
#define SLUICE_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"

struct request_env;

/* Called when a front end has output ready (from a wake outside its recv/fill calls). */
typedef void front_dirty_fn(void *ctx);

/* How a front end is wired to its connection; copied in by ops->new. */
struct front_io {
    const struct request_env *env; /* borrowed for the front end's life */
    struct buf *out;               /* the connection's output buffer, borrowed */
    size_t out_max;                /* bytes the front end fills out to */
    front_dirty_fn *dirty;
    void *dirty_ctx;
    uint64_t conn_id;              /* labels log lines */
    const char *peer;              /* "ip:port" for the access log, borrowed: the client's
                                      (a PROXY header's when one named it) */
    bool secure;                   /* TLS: an https:// Origin is then same-origin */
    const char *address;           /* the connection's client IP (no port), borrowed */
    const char *via;               /* the proxy's "ip:port" when a PROXY header named the
                                      client; NULL for a direct connection */
    bool trusted;                  /* address is a trusted proxy: its requests' Forwarded /
                                      X-Forwarded-For name the client, and each is charged
                                      to that client's per-address count (request.h) */
};

/* One protocol's front end; f is what new returned. Single-threaded, the worker's. */
struct front_ops {
    const char *name; /* "h2", "http/1.1" */
    /* A front end wired as io says (copied); h2 queues its SETTINGS. */
    void *(*new)(const struct front_io *io);
    /* Frees every request of f. free(NULL) is a no-op. */
    void (*free)(void *f);
    /* Feeds received bytes. 0, or ERR_PROTO when the connection must close. */
    int (*recv)(void *f, const uint8_t *data, size_t len);
    /* Appends ready output to io->out. 0, or ERR_PROTO when the connection must close. */
    int (*fill)(void *f);
    /* True when neither side has anything left to say: close once out is written. */
    bool (*finished)(const void *f);
    /*
     * True when the client may still be sending bytes that were not read
     * (an HTTP/1.1 body left unread): the close should linger (conn.c).
     */
    bool (*unread_input)(const void *f);
    /* Streams open right now. */
    size_t (*streams)(const void *f);
    /* Drain, step one: tell the client new streams will soon be refused (h2's notice). */
    void (*shutdown_notice)(void *f);
    /* Drain, step two: no new requests; finish with the ones in progress. */
    void (*goaway)(void *f);
};

/*
 * A front end's table, from functions named PREFIX_new, PREFIX_free, … after
 * the members above: a front end that lacks one does not compile.
 */
#define FRONT_OPS(prefix, label)                                                              \
    {                                                                                          \
        .name = (label), .new = prefix##_new, .free = prefix##_free, .recv = prefix##_recv,    \
        .fill = prefix##_fill, .finished = prefix##_finished,                                  \
        .unread_input = prefix##_unread_input, .streams = prefix##_streams,                    \
        .shutdown_notice = prefix##_shutdown_notice, .goaway = prefix##_goaway,                \
    }

#endif
