/*
 * conn: one accepted TCP connection — TLS or cleartext, bytes in and out,
 * and the protocol front end on top, h2 or HTTP/1.1 (single-threaded, owned
 * by its worker).
 *
 * Producers never write to the socket: they mark the connection dirty,
 * and the worker calls conn_flush() on every dirty connection once per
 * loop iteration, before the loop sleeps. A flush gathers every frame
 * ready into one buffer of up to CONN_OUT_MAX bytes and hands it to
 * OpenSSL in one SSL_write, which cuts it into full-size TLS records.
 */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <ev.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "sluice/request.h"
#include "sluice/list.h"
#include "sluice/metrics.h"

#define CONN_OUT_MAX (64 * 1024)
/*
 * Drained output buffers a worker keeps for its next flush. A connection
 * holds its buffer only while bytes are pending: an idle one holds none,
 * whatever a burst made it allocate.
 */
#define CONN_OUT_POOL 16

/* Counters of one worker's connections; one writer, read from any thread. */
struct conn_stats {
    struct request_stats requests;      /* limits the front ends and the pipeline enforce */
    atomic_uint_fast64_t refused;       /* connections refused at accept (max-connections…) */
    atomic_uint_fast64_t refused_per_address;
    atomic_uint_fast64_t handshake_timeouts;
    atomic_uint_fast64_t idle_timeouts;
    atomic_uint_fast64_t open;          /* gauge, handshakes included */
    atomic_uint_fast64_t open_h2;       /* gauge */
    atomic_uint_fast64_t open_h1;       /* gauge */
    atomic_uint_fast64_t accepted;
    atomic_uint_fast64_t tls_failures;  /* handshakes that failed */
    atomic_uint_fast64_t bytes_written; /* TLS payload bytes */
    /* PROXY protocol listeners: headers taken, and connections closed for a bad one. */
    atomic_uint_fast64_t proxy_headers;
    atomic_uint_fast64_t proxy_missing;   /* the first bytes were no PROXY header */
    atomic_uint_fast64_t proxy_malformed; /* a broken or cut-short header */
    atomic_uint_fast64_t proxy_oversized; /* longer than PROXY_HEADER_MAX (v1: 107) */
    atomic_uint_fast64_t proxy_timeout;   /* not complete within handshake-timeout-ms */
    atomic_uint_fast64_t proxy_untrusted; /* the peer is not in trusted-proxies */
    struct metrics_histogram age;       /* at close */
};

/* What a worker's connections share; owned by the worker. */
struct conn_env {
    struct conn_stats stats;
    struct ev_loop *loop;
    struct tls *tls;
    struct guard *guard;
    struct request_env requests;
    struct list all;   /* conn.node */
    struct list dirty; /* conn.dirty_node: to flush before sleeping */
    uint8_t *out_pool[CONN_OUT_POOL]; /* drained buffers of CONN_OUT_MAX bytes */
    size_t out_pooled;                /* entries in out_pool */
};

struct conn;
struct guard;
struct tls;

/*
 * Takes ownership of fd (non-blocking) and admits it through env->guard
 * (address: the peer's IP); with proxied (a proxy-protocol listener)
 * first reads the PROXY header that names the client; starts the TLS
 * handshake (tls) or waits for the first bytes (cleartext: HTTP/1.1 or h2
 * with prior knowledge), or closes fd and returns NULL when a connection
 * limit is reached or a proxied peer is not in trusted-proxies (when
 * that list is set). A peer in trusted-proxies counts only in
 * max-connections: its requests are charged to their forwarded clients.
 */
struct conn *conn_new(struct conn_env *env, int fd, bool tls, bool proxied, const char *address,
                      const char *peer);
/* Closes the socket and frees everything. conn_free(NULL) is a no-op. */
void conn_free(struct conn *c);
/* Writes what is ready. May free c (when it finishes or fails). */
void conn_flush(struct conn *c);
/*
 * Drain, step one: tells the client that no new streams will be taken soon
 * (GOAWAY shutdown notice). A connection still in its handshake is closed.
 * May free c.
 */
void conn_drain_notice(struct conn *c);
/* Drain, step two: the final GOAWAY; the connection closes when its streams are done. */
void conn_drain_final(struct conn *c);
/* Frees the pooled output buffers (after every connection of env is freed). */
void conn_env_dispose(struct conn_env *env);
/* The conn of a conn.dirty_node or conn.node. */
struct conn *conn_of_dirty(struct list *node);
struct conn *conn_of_node(struct list *node);

#endif
