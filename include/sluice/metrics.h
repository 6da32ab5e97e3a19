/*
 * metrics: histograms and the Prometheus text format (pure).
 *
 * Counters live where they are counted (per worker, one writer each, read
 * with relaxed atomics from the admin thread); this module only gives
 * them a histogram type and writes them out. Every histogram uses one
 * fixed set of buckets in seconds, wide enough for a TLS handshake and for
 * an hour-long stream, so histograms from all workers add up bucket by
 * bucket.
 */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"

#define METRICS_BUCKETS 18

struct metrics_histogram {
    atomic_uint_fast64_t counts[METRICS_BUCKETS + 1]; /* last: above every bound */
    atomic_uint_fast64_t sum_us;                      /* microseconds */
};

/* Upper bounds, seconds, increasing. */
extern const double metrics_bounds[METRICS_BUCKETS];

/* Adds n (may be negative) to a counter or gauge that has one writer. */
static inline void metrics_add(atomic_uint_fast64_t *c, int64_t n)
{
    /* One writer: a plain load and store, no locked instruction on the hot path. */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)n,
                          memory_order_relaxed);
}

/* Adds one observation. One writer per histogram. */
void metrics_observe(struct metrics_histogram *h, double seconds);

/* `# HELP` and `# TYPE` lines. type: "counter", "gauge" or "histogram". */
void metrics_header(struct buf *out, const char *name, const char *type, const char *help);
/* `name{labels} value`; labels may be NULL or "" for none, else `k="v",…`. */
void metrics_value(struct buf *out, const char *name, const char *labels, double value);
/* The _bucket, _sum and _count lines of the sum of n histograms. */
void metrics_histogram_write(struct buf *out, const char *name,
                             const struct metrics_histogram *const *hs, size_t n);
/* The same with labels (`k="v",…`, NULL or "" for none) on every line. */
void metrics_histogram_write_labelled(struct buf *out, const char *name, const char *labels,
                                      const struct metrics_histogram *const *hs, size_t n);

#endif
