/* metrics: histograms and Prometheus text output (see metrics.h). */
#include "sluice/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const double metrics_bounds[METRICS_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1,     2.5,    5,     10,   30,    60,   300, 1800, 3600,
};

void metrics_observe(struct metrics_histogram *h, double seconds)
{
    size_t i = 0;
    while (i < METRICS_BUCKETS && seconds > metrics_bounds[i])
        i++;
    metrics_add(&h->counts[i], 1);
    metrics_add(&h->sum_us, seconds > 0 ? (int64_t)(seconds * 1e6) : 0);
}

static void printf_buf(struct buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void printf_buf(struct buf *out, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_append(out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void metrics_header(struct buf *out, const char *name, const char *type, const char *help)
{
    printf_buf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_value(struct buf *out, const char *name, const char *labels, double value)
{
    if (labels && *labels)
        printf_buf(out, "%s{%s} %.17g\n", name, labels, value);
    else
        printf_buf(out, "%s %.17g\n", name, value);
}

void metrics_histogram_write(struct buf *out, const char *name,
                             const struct metrics_histogram *const *hs, size_t n)
{
    metrics_histogram_write_labelled(out, name, NULL, hs, n);
}

void metrics_histogram_write_labelled(struct buf *out, const char *name, const char *labels,
                                      const struct metrics_histogram *const *hs, size_t n)
{
    uint64_t cumulative = 0, sum_us = 0;
    const char *l = labels && *labels ? labels : "", *comma = *l ? "," : "";
    for (size_t b = 0; b <= METRICS_BUCKETS; b++) {
        for (size_t i = 0; i < n; i++)
            cumulative += atomic_load_explicit(&hs[i]->counts[b], memory_order_relaxed);
        if (b < METRICS_BUCKETS)
            printf_buf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, l, comma, metrics_bounds[b],
                       (unsigned long long)cumulative);
        else
            printf_buf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, l, comma,
                       (unsigned long long)cumulative);
    }
    for (size_t i = 0; i < n; i++)
        sum_us += atomic_load_explicit(&hs[i]->sum_us, memory_order_relaxed);
    if (*l)
        printf_buf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, l, (double)sum_us / 1e6,
                   name, l, (unsigned long long)cumulative);
    else
        printf_buf(out, "%s_sum %.6f\n%s_count %llu\n", name, (double)sum_us / 1e6, name,
                   (unsigned long long)cumulative);
}
