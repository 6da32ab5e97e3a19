/*
 * http1: one HTTP/1.1 server connection (no I/O of its own), the fallback
 * for clients, proxies and load balancers that do not speak h2.
 *
 * The same interface as h2: bytes in with http1_recv(), response bytes
 * appended to the connection's output buffer by http1_fill(). Requests are
 * served one at a time, in order; an SSE response streams with chunked
 * encoding and keeps the connection alive afterwards. Everything a stream
 * is — heartbeats, caps, resume, the 200 held until NATS confirms — is the
 * same stream module as on h2; only the framing differs. TCP is the flow
 * control here: when the socket stops draining, the output buffer stops
 * taking chunks and the stream's queue grows to its cap.
 *
 * Request bodies are always consumed through their framing, kept for a
 * publish and dropped otherwise, or, past HTTP1_DISCARD_MAX, not read and
 * the connection closed after the response: a body is never parsed as the
 * next request.
 */
#ifndef SLUICE_HTTP1_H
#define SLUICE_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/session.h"

/*
 * Bytes of a request body that a route does not want and that is still read
 * and dropped so that the connection can go on; a larger one is not read
 * (the response says connection: close).
 */
#define HTTP1_DISCARD_MAX 65536

struct http1;

/* A session wired as io says (copied); see h2_new(). */
struct http1 *http1_new(const struct session_io *io);
/* Frees the request in progress. http1_free(NULL) is a no-op. */
void http1_free(struct http1 *h);
/* Feeds received bytes. 0, or ERR_PROTO when the connection must close. */
int http1_recv(struct http1 *h, const uint8_t *data, size_t len);
/* Appends ready response bytes to out. 0 always. */
int http1_fill(struct http1 *h);
/* True when the connection should close once out is written. */
bool http1_finished(const struct http1 *h);
/*
 * True when a request body was left unread (too large, or announced with
 * Expect: 100-continue, or malformed) or is still being read: the client
 * may still be sending it, so the close should linger (see conn.c).
 */
bool http1_unread_input(const struct http1 *h);
/* Streams open right now: 0 or 1. */
size_t http1_streams(const struct http1 *h);
/* Drain: finish the response in progress, then close. */
void http1_goaway(struct http1 *h);

#endif
