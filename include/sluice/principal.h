/*
 * principal: per-principal stream limits, process-wide — how many SSE
 * streams one principal (the authenticated identity an auth grant names:
 * a JWT's "sub", or the callout's principal id) may hold open at once
 * (max-streams-per-principal), and how many it may start per second
 * (principal-stream-rate).
 *
 * Per-address limits are wrong behind NAT and CDNs (thousands of users
 * share one address) and useless against one user on many addresses; a
 * principal is who the gateway actually authorised. Requests without a
 * principal (auth none, or a grant with no id) are not counted here.
 *
 * A refusal answers like the process's own capacity refusal (admission.h):
 * 200 with the SSE head, a long jittered `retry:` and the end, because any
 * other status stops an EventSource for good.
 *
 * Thread-safe: workers call principal_take()/principal_put() under one
 * short lock (once per new stream, never per event); the admin thread
 * reads the counters. An entry lives while its principal holds a stream,
 * and one second after its last (until its rate bucket has refilled: to
 * drop it sooner would let a client reset its rate by closing its
 * streams), so the table is bounded by the principals active in the last
 * second.
 */
#ifndef SLUICE_PRINCIPAL_H
#define SLUICE_PRINCIPAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define PRINCIPAL_MAX 256 /* bytes of a principal id that are told apart */

struct principals;

struct principal_params {
    size_t max_open; /* streams open per principal at once; 0: no cap */
    unsigned rate;   /* new streams per second per principal, burst of the same; 0: no limit */
};

enum principal_verdict {
    PRINCIPAL_OK,   /* counted: the caller holds one until principal_put() */
    PRINCIPAL_FULL, /* max_open streams are open for this principal */
    PRINCIPAL_RATE, /* rate streams started within the last second */
};

/* Refusals so far, by reason; read from any thread. */
struct principal_stats {
    atomic_uint_fast64_t full;
    atomic_uint_fast64_t rate;
};

struct principals *principal_new(const struct principal_params *p);
/* principal_free(NULL) does nothing. */
void principal_free(struct principals *t);
/* True when either limit is set: otherwise callers need not take or put. */
bool principal_enabled(const struct principals *t);
/* Decides a new stream of principal (NUL-terminated) at now_s (monotonic seconds); counts a refusal. */
enum principal_verdict principal_take(struct principals *t, const char *principal, double now_s);
/* Gives back what an admitted stream of principal held, at now_s. */
void principal_put(struct principals *t, const char *principal, double now_s);
/* Principals tracked now (open streams, or a stream within the last second). */
size_t principal_count(struct principals *t);
const struct principal_stats *principal_stats(const struct principals *t);
/* True at most once a second (for one log line about refusals, whoever refuses). */
bool principal_log_due(struct principals *t, double now_s);

#endif
