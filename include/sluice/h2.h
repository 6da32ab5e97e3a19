/*
 * h2: one HTTP/2 server session over nghttp2 (no I/O of its own).
 *
 * Bytes in through h2_recv(); frames out through h2_fill(), which appends
 * them to the connection's output buffer until it holds out_max bytes.
 * SSE bodies are not copied into nghttp2: DATA frames use
 * NGHTTP2_DATA_FLAG_NO_COPY and are written straight from the stream
 * queues into that buffer. A stream with nothing to send is deferred and
 * resumed when its queue wakes it.
 */
#ifndef SLUICE_H2_H
#define SLUICE_H2_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/session.h"

struct h2;

/*
 * A session wired as io says (copied): it writes frames into io->out and
 * queues the server's SETTINGS.
 */
struct h2 *h2_new(const struct session_io *io);
/* Frees every stream of the session. h2_free(NULL) is a no-op. */
void h2_free(struct h2 *h2);
/* Feeds received bytes. 0, or ERR_PROTO when the connection must close. */
int h2_recv(struct h2 *h2, const uint8_t *data, size_t len);
/* Appends ready frames to out. 0, or ERR_PROTO when the connection must close. */
int h2_fill(struct h2 *h2);
/* True when neither side has anything left to say: close the connection. */
bool h2_finished(const struct h2 *h2);
/* Queues the GOAWAY shutdown notice (drain, step one). */
void h2_shutdown_notice(struct h2 *h2);
/* Queues the final GOAWAY: no new streams; the session finishes with its last stream. */
void h2_goaway(struct h2 *h2);
/* Streams open right now. */
size_t h2_streams(const struct h2 *h2);

#endif
