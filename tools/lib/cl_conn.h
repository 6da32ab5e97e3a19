/*
 * cl_conn: one client connection on a libev loop: the TCP connect, the
 * TLS handshake (or none, for cleartext), then reads and writes of an
 * open connection. The client programs embed one per connection and keep
 * their protocol (nghttp2 session, HTTP/1.1 parser) beside it.
 *
 * States: IDLE -> CONNECTING (socket writable: connect done) ->
 * HANDSHAKE (TLS only) -> OPEN -> IDLE again at cl_conn_close(). While
 * connecting and handshaking, the connection drives itself from its io
 * watcher; once OPEN, readiness goes to the owner's on_ready, which reads
 * with cl_conn_read() and writes with cl_conn_send().
 *
 * Output: the owner appends to `out` only when it is empty, and
 * cl_conn_send() writes what is left of it; after SSL_ERROR_WANT_WRITE
 * the next call passes the same pointer and length (the rule OpenSSL
 * sets), because nothing moves until bytes have gone.
 *
 * Callbacks are the last thing a cl_conn call does, so a callback may
 * close the connection, or close and start it again.
 *
 * Rejected alternative: each program's own copy of this state machine,
 * which is what there was: three copies that had drifted apart.
 */
#ifndef SLUICE_CL_CONN_H
#define SLUICE_CL_CONN_H

#include <netdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <openssl/ssl.h>

#include "cl_buf.h"

#define CL_CONN_READ_CHUNK 16384  /* bytes per read; one TLS record */
#define CL_CONN_READS_PER_WAKE 16 /* bounds one connection's turn */
#define CL_CONN_STOPPED (-4)      /* cl_conn_read: on_read asked to stop */

enum cl_conn_state { CL_CONN_IDLE, CL_CONN_CONNECTING, CL_CONN_HANDSHAKE, CL_CONN_OPEN };

struct cl_conn;

struct cl_conn_callbacks {
    /* Optional: TCP is connected; TLS, if any, starts next. */
    void (*on_connected)(struct cl_conn *c);
    /* The connection is OPEN (TLS handshake done, if any). */
    void (*on_open)(struct cl_conn *c);
    /* Connecting failed: what is "connect", "TLS" or "TLS handshake", why
     * a message (static storage). The state is still the failing one; the
     * owner closes the connection (or closes and starts it again). */
    void (*on_fail)(struct cl_conn *c, const char *what, const char *why);
    /* OPEN, and the socket is ready (revents), or a read waits for it. */
    void (*on_ready)(struct cl_conn *c, int revents);
    /* Bytes read by cl_conn_read(); false stops reading (closed inside). */
    bool (*on_read)(struct cl_conn *c, const char *buf, size_t n);
};

struct cl_conn {
    ev_io io;
    struct ev_loop *loop;               /* borrowed */
    const struct cl_conn_callbacks *cb; /* borrowed */
    SSL_CTX *tls;                       /* borrowed; NULL: cleartext */
    const char *tls_name;               /* SNI and verified name; borrowed */
    bool tls_verify;
    int fd;        /* -1 unless connecting or connected */
    int io_events; /* what io watches: EV_READ and/or EV_WRITE; 0: stopped */
    enum cl_conn_state state;
    bool read_wants_write; /* SSL_read wants the socket writable */
    SSL *ssl;              /* owned; NULL before the handshake and for cleartext */
    struct cl_buf out;     /* pending output; out_off <= out.len */
    uint32_t out_off;      /* bytes of out already written */
};

/* An IDLE connection; every pointer is borrowed and must outlive it. */
void cl_conn_init(struct cl_conn *c, struct ev_loop *loop, const struct cl_conn_callbacks *cb,
                  SSL_CTX *tls, const char *tls_name, bool tls_verify);
/* Starts connecting to ai: 0, or -1 with errno set (still IDLE). Never
 * calls back from inside. */
int cl_conn_start(struct cl_conn *c, const struct addrinfo *ai);
/* Makes the watcher watch events (EV_READ and/or EV_WRITE). */
void cl_conn_watch(struct cl_conn *c, int events);
/*
 * Reads what the socket has (CL_CONN_READS_PER_WAKE reads at most, more
 * while OpenSSL holds decrypted bytes, which make no socket event),
 * handing each piece to on_read. Returns CL_TLS_AGAIN when it stopped
 * for now, CL_CONN_STOPPED when on_read said so, 0 at a clean end,
 * CL_TLS_EOF_UNCLEAN or CL_TLS_ERROR (cl_conn_error() says why).
 */
ssize_t cl_conn_read(struct cl_conn *c);
/* Writes the pending output: 0 (out is empty afterwards unless the
 * socket is full), or CL_TLS_ERROR (cl_conn_error() says why). */
int cl_conn_send(struct cl_conn *c);
/* Whether output is waiting for the socket. */
bool cl_conn_pending(const struct cl_conn *c);
/* Why the last read or send failed: the TLS error or errno. */
const char *cl_conn_error(const struct cl_conn *c);
/* Back to IDLE: watcher stopped, close_notify sent first when
 * notify_peer and OPEN, SSL freed, socket closed, output dropped (its
 * memory kept for reuse). Does nothing to an IDLE connection. */
void cl_conn_close(struct cl_conn *c, bool notify_peer);
/* cl_conn_close(), then frees the output buffer. */
void cl_conn_dispose(struct cl_conn *c);

#endif
