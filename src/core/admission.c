/*
 * admission: process-wide stream capacity (see admission.h).
 *
 * The open count is taken with a compare-and-swap, so two workers
 * admitting at once can never both take the last slot: the cap is exact,
 * not "about" (summing the workers' stream gauges was rejected for that
 * reason — it lags and overshoots by up to one stream per worker). The
 * rate is the shared token bucket (rate.h) of `rate` tokens, under a
 * mutex: it is touched once per new stream, never per event.
 */
#include "sluice/admission.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "sluice/mem.h"
#include "sluice/rate.h"

struct admission {
    struct admission_params p;
    atomic_size_t open;       /* slots held; <= p.max_open when it is set */
    pthread_mutex_t lock;     /* guards bucket */
    struct rate_bucket bucket; /* p.rate a second, burst p.rate */
    _Atomic double logged_at; /* monotonic s of the last refusal log line */
    struct admission_stats stats;
};

struct admission *admission_new(const struct admission_params *p)
{
    struct admission *a = mem_calloc(1, sizeof(*a));
    a->p = *p;
    if (a->p.retry_max_ms < a->p.retry_min_ms)
        a->p.retry_max_ms = a->p.retry_min_ms;
    rate_init(&a->bucket, p->rate, 0); /* full; the first take refills from 0, clamped */
    atomic_init(&a->logged_at, -1e9);
    pthread_mutex_init(&a->lock, NULL);
    return a;
}

void admission_free(struct admission *a)
{
    if (!a)
        return;
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static bool take_token(struct admission *a, double now_s)
{
    if (!a->p.rate)
        return true;
    pthread_mutex_lock(&a->lock);
    bool ok = rate_take(&a->bucket, a->p.rate, a->p.rate, now_s, 1);
    pthread_mutex_unlock(&a->lock);
    return ok;
}

enum admission_verdict admission_take(struct admission *a, double now_s)
{
    size_t open = atomic_load(&a->open);
    do {
        if (a->p.max_open && open >= a->p.max_open) {
            atomic_fetch_add_explicit(&a->stats.full, 1, memory_order_relaxed);
            return ADMISSION_FULL;
        }
    } while (!atomic_compare_exchange_weak(&a->open, &open, open + 1));
    /* The slot first, then the token: a stream refused for the cap spends no token. */
    if (!take_token(a, now_s)) {
        atomic_fetch_sub(&a->open, 1);
        atomic_fetch_add_explicit(&a->stats.rate, 1, memory_order_relaxed);
        return ADMISSION_RATE;
    }
    return ADMISSION_OK;
}

void admission_put(struct admission *a) { atomic_fetch_sub(&a->open, 1); }

unsigned admission_retry_ms(struct admission *a)
{
    /* Per thread, so that no lock is needed; seeded apart by the thread's own address. */
    static _Thread_local uint64_t state;
    if (!state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&state ^ 0x9e3779b97f4a7c15ULL;
    }
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    unsigned spread = a->p.retry_max_ms - a->p.retry_min_ms;
    return a->p.retry_min_ms + (spread ? (unsigned)(state % ((uint64_t)spread + 1)) : 0);
}

size_t admission_open(const struct admission *a) { return atomic_load(&a->open); }
size_t admission_max(const struct admission *a) { return a->p.max_open; }

bool admission_headroom(const struct admission *a)
{
    if (!a->p.max_open)
        return true;
    /* open / max <= pct / 100, in doubles so that no product overflows. */
    return (double)atomic_load(&a->open) * 100.0 <= (double)a->p.max_open * a->p.high_water_pct;
}

const struct admission_stats *admission_stats(const struct admission *a) { return &a->stats; }

bool admission_log_due(struct admission *a, double now_s)
{
    double last = atomic_load(&a->logged_at);
    return now_s - last >= 1.0 && atomic_compare_exchange_strong(&a->logged_at, &last, now_s);
}
