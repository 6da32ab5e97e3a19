/*
 * http1: the HTTP/1.1 front end, one server connection (no I/O of its
 * own), the fallback for clients, proxies and load balancers that do not
 * speak h2; driven by its connection through http1_front_ops (front.h);
 * src/proto/h1_conn.c, prefix http1_.
 *
 * Bytes in with recv, response bytes appended to the connection's output
 * buffer by fill. Requests go to the request pipeline (request.h) one at
 * a time, in order; its answers become a status line, the pipeline's
 * fields and this connection's own (connection, transfer-encoding). An
 * SSE response streams with chunked encoding and keeps the connection
 * alive afterwards. Everything a stream is — heartbeats, caps, resume, the
 * 200 held until NATS confirms — is the same stream module as on h2; only
 * the framing differs. TCP is the flow control here: when the socket
 * stops draining, the output buffer stops taking chunks and the stream's
 * queue grows to its cap.
 *
 * Request bodies are always consumed through their framing, kept for a
 * publish and dropped otherwise, or, past HTTP1_DISCARD_MAX, not read and
 * the connection closed after the response: a body is never parsed as the
 * next request. unread_input is then true (the close lingers); goaway
 * finishes the response in progress, then closes; streams is 0 or 1.
 */
#ifndef SLUICE_H1_CONN_H
#define SLUICE_H1_CONN_H

#include "sluice/front.h"

/*
 * Bytes of a request body that a route does not want and that is still read
 * and dropped so that the connection can go on; a larger one is not read
 * (the response says connection: close).
 */
#define HTTP1_DISCARD_MAX 65536

extern const struct front_ops http1_front_ops;

#endif
