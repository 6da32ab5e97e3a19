/*
 * admission: the process's capacity for SSE streams, shared by every
 * worker — how many may be open at once (max-streams-total) and how many
 * may start per second (stream-admission-rate).
 *
 * A stream past either is not an error: an EventSource that sees any
 * status but 200 stops for good, so the refusal is a 200 with the SSE
 * head, a long jittered `retry:` and the end of the body (see
 * the request pipeline's refusal()); the browser comes back later, spread out, with its
 * Last-Event-ID unchanged (the refusal has no `id:` line).
 *
 * Thread-safe: workers call admission_take()/admission_put() from their
 * loops, the admin thread reads the gauges. One short lock guards the
 * rate bucket; the open count is an atomic so that a read never waits.
 */
#ifndef SLUICE_ADMISSION_H
#define SLUICE_ADMISSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct admission;

struct admission_params {
    size_t max_open;       /* streams open at once; 0: no cap */
    unsigned rate;         /* new streams per second, burst of the same; 0: no limit */
    unsigned retry_min_ms; /* a refusal's retry: is drawn from [min, max] */
    unsigned retry_max_ms;
    unsigned high_water_pct; /* admission_headroom() is false above this share of max_open */
};

enum admission_verdict {
    ADMISSION_OK,   /* admitted: the caller holds one slot until admission_put() */
    ADMISSION_FULL, /* max_open streams are open */
    ADMISSION_RATE, /* more than rate streams started within the last second */
};

/* Refusals so far, by reason; read from any thread. */
struct admission_stats {
    atomic_uint_fast64_t full;
    atomic_uint_fast64_t rate;
};

struct admission *admission_new(const struct admission_params *p);
/* admission_free(NULL) does nothing. */
void admission_free(struct admission *a);
/* Decides a new stream at now_s (monotonic seconds) and counts a refusal. */
enum admission_verdict admission_take(struct admission *a, double now_s);
/* Gives back the slot of an admitted stream that has closed. */
void admission_put(struct admission *a);
/* A refusal's retry: in milliseconds, drawn uniformly from [retry_min_ms, retry_max_ms]. */
unsigned admission_retry_ms(struct admission *a);
/* Streams holding a slot now. */
size_t admission_open(const struct admission *a);
/* The cap (0: none). */
size_t admission_max(const struct admission *a);
/* False while more than high_water_pct of max_open are open: /readyz then says 503. */
bool admission_headroom(const struct admission *a);
const struct admission_stats *admission_stats(const struct admission *a);
/* True at most once a second (for one log line about refusals, whoever refuses). */
bool admission_log_due(struct admission *a, double now_s);

#endif
