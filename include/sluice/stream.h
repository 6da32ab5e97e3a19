/*
 * stream: one SSE response — its subjects, its bounded queue, its id,
 * heartbeat and end (pure: no I/O, no library headers).
 *
 * The queue holds references to shared event bodies plus a few bytes of
 * the stream's own (id lines, retry, comments) in one FIFO, so the
 * protocol front end reads a single byte sequence with stream_pending()
 * and stream_copy() and writes it straight into its frames.
 *
 * Ids: one subject gives `id: <seq>`; several give one sequence per
 * subject in request order joined by '-', e.g. `id: 41-0-7`.
 *
 * Slow-consumer policy (the one place it lives): when queued bytes would
 * pass queue_max, the stream drops what it has not started to send,
 * queues a final `: slow consumer` comment and ends — a clean end, never
 * an HTTP error, because an EventSource that sees one stops reconnecting.
 */
#ifndef SLUICE_STREAM_H
#define SLUICE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/fanout.h"
#include "sluice/list.h"

struct stream;

/* Per-worker heartbeat clock: streams ordered by last activity. */
struct stream_clock {
    struct list streams;  /* least recently active first */
    int64_t interval_ms;  /* heartbeat after this much idleness */
};

/* Called when the stream goes from nothing to send to something. */
typedef void stream_wake_fn(void *ctx);

enum stream_end {
    STREAM_END_NONE,
    STREAM_END_SLOW_CONSUMER,
    STREAM_END_UNAVAILABLE,
    STREAM_END_SHUTDOWN,
};

struct stream_params {
    struct fanout *fanout;
    struct stream_clock *clock;
    char *const *subjects;  /* borrowed; copied */
    size_t nsubjects;
    unsigned retry_ms;      /* hint before jitter */
    unsigned jitter_pct;    /* +- percent, drawn per stream */
    size_t queue_max;       /* bytes */
    stream_wake_fn *wake;
    void *wake_ctx;
    uint64_t conn_id;       /* for log lines */
    int32_t stream_id;
};

/*
 * A new stream with `retry:` queued, joined to its subjects. If joining
 * fails (NATS closed) the stream is returned already ending with
 * STREAM_END_UNAVAILABLE. Never calls wake from inside this call.
 */
struct stream *stream_new(const struct stream_params *p);
/* Leaves the fanout and drops every queued reference. NULL is a no-op. */
void stream_free(struct stream *s);

/* fanout_event_fn for stream links: queues ev, or ends a slow consumer. */
void stream_on_event(struct fanout_link *link, struct sse_event *ev);
/* Ends the stream after what is already partly sent, with a final comment. */
void stream_end(struct stream *s, enum stream_end why);

/*
 * Bytes ready to send, at most max. *eof is set when those bytes are the
 * last of the stream.
 */
size_t stream_pending(const struct stream *s, size_t max, bool *eof);
/* Copies n bytes (n <= stream_pending()) to dst and consumes them. */
void stream_copy(struct stream *s, uint8_t *dst, size_t n);
/* Bytes queued and not yet sent. */
size_t stream_queued(const struct stream *s);
/* The `retry:` value this stream announced. */
unsigned stream_retry_ms(const struct stream *s);

void stream_clock_init(struct stream_clock *c, int64_t interval_ms);
/*
 * Queues a `:` heartbeat on every stream idle for interval_ms at now_ms
 * (monotonic milliseconds). May call wake.
 */
void stream_clock_tick(struct stream_clock *c, int64_t now_ms);
/* Monotonic milliseconds, cheap (coarse clock). */
int64_t stream_now_ms(void);

#endif
