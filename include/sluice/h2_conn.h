/*
 * h2: the HTTP/2 front end, one server session over nghttp2 (no I/O of
 * its own), driven by its connection through h2_front_ops (front.h);
 * src/proto/h2_conn.c, prefix h2_.
 *
 * Bytes in through recv; frames out through fill, which appends them to
 * the connection's output buffer until it holds out_max bytes. Requests
 * go to the request pipeline (request.h); its answers become HEADERS and
 * DATA. Bodies are not copied into nghttp2: DATA frames use
 * NGHTTP2_DATA_FLAG_NO_COPY and are written straight from the stream
 * queues (or the whole body) into that buffer. A stream with nothing to
 * send is deferred and resumed when its queue wakes it.
 */
#ifndef SLUICE_H2_CONN_H
#define SLUICE_H2_CONN_H

#include "sluice/front.h"

/*
 * new queues the server's SETTINGS; finished is true when neither side has
 * anything left to say; shutdown_notice queues the GOAWAY shutdown notice,
 * goaway the final GOAWAY (the session finishes with its last stream).
 */
extern const struct front_ops h2_front_ops;

#endif
