/*
 * history: per-subscription replay ring (see history.h).
 *
 * The ring grows by doubling up to max_events, so a quiet subject costs a
 * few slots, not a thousand. Eviction takes the oldest event first and
 * always keeps the newest one, so even a message larger than every bound
 * can be resumed right after it was sent.
 */
#include "sluice/history.h"

#include <stdlib.h>

#include "sluice/mem.h"

struct history {
    struct sse_event **ring; /* capacity cap, a power of two */
    size_t cap, first, count;
    size_t bytes;            /* body bytes held */
    size_t max_events, max_bytes;
    struct history_budget *budget;
    uint64_t floor;   /* live delivery is complete above it */
    uint64_t lost;    /* highest sequence that cannot be replayed: the floor or the newest evicted */
    uint64_t last;    /* newest sequence pushed, or the floor */
    uint64_t end;     /* the newest event's sequence if it ended the subject, else 0 */
};

struct history *history_new(size_t max_events, size_t max_bytes, struct history_budget *budget,
                            uint64_t floor)
{
    struct history *h = mem_calloc(1, sizeof(*h));
    h->max_events = max_events ? max_events : 1;
    h->max_bytes = max_bytes;
    h->budget = budget;
    h->floor = h->lost = h->last = floor;
    return h;
}

static struct sse_event *at(const struct history *h, size_t i)
{
    return h->ring[(h->first + i) & (h->cap - 1)];
}

static void evict_oldest(struct history *h)
{
    struct sse_event *ev = at(h, 0);
    h->first = (h->first + 1) & (h->cap - 1);
    h->count--;
    h->bytes -= ev->len;
    atomic_fetch_sub_explicit(&h->budget->used, ev->len, memory_order_relaxed);
    h->lost = ev->seq;
    sse_event_unref(ev);
}

void history_free(struct history *h)
{
    if (!h)
        return;
    while (h->count)
        evict_oldest(h);
    free(h->ring);
    free(h);
}

static bool over_bounds(const struct history *h)
{
    return h->count > h->max_events || h->bytes > h->max_bytes ||
           atomic_load_explicit(&h->budget->used, memory_order_relaxed) > h->budget->max;
}

void history_push(struct history *h, struct sse_event *ev)
{
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 4;
        struct sse_event **ring = mem_alloc(cap * sizeof(*ring));
        for (size_t i = 0; i < h->count; i++)
            ring[i] = at(h, i);
        free(h->ring);
        h->ring = ring;
        h->cap = cap;
        h->first = 0;
    }
    h->ring[(h->first + h->count++) & (h->cap - 1)] = ev;
    h->bytes += ev->len;
    atomic_fetch_add_explicit(&h->budget->used, ev->len, memory_order_relaxed);
    h->last = ev->seq;
    h->end = ev->end ? ev->seq : 0;
    while (h->count > 1 && over_bounds(h))
        evict_oldest(h);
}

uint64_t history_last(const struct history *h) { return h->last; }
size_t history_count(const struct history *h) { return h->count; }
size_t history_bytes(const struct history *h) { return h->bytes; }

void history_set_floor(struct history *h, uint64_t floor)
{
    if (h->count == 0)
        h->floor = h->lost = h->last = floor;
}

uint64_t history_floor(const struct history *h) { return h->floor; }

uint64_t history_lost(const struct history *h) { return h->lost; }

uint64_t history_end(const struct history *h) { return h->end; }

void history_set_end(struct history *h, uint64_t seq)
{
    if (h->count == 0 && seq <= h->last)
        h->end = seq;
}

/* Appends a reference to each event from ring index lo on. */
static void append_from(const struct history *h, size_t lo, struct sse_event ***out, size_t *n)
{
    size_t add = h->count - lo;
    if (!add)
        return;
    *out = mem_realloc(*out, (*n + add) * sizeof(**out));
    for (size_t i = lo; i < h->count; i++)
        (*out)[(*n)++] = sse_event_ref(at(h, i));
}

/* The ring index of the first event above seq. */
static size_t first_above(const struct history *h, uint64_t seq)
{
    /* Binary search: sequences increase along the ring. */
    size_t lo = 0, hi = h->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (at(h, mid)->seq <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

enum history_resume history_since(const struct history *h, uint64_t after,
                                  struct sse_event ***out, size_t *n)
{
    if (after > h->last)
        return HISTORY_RESUME_UNKNOWN;
    if (after < h->lost)
        return HISTORY_RESUME_GONE;
    append_from(h, first_above(h, after), out, n);
    return HISTORY_RESUME_OK;
}

void history_since_time(const struct history *h, int64_t since_ns, struct sse_event ***out,
                        size_t *n)
{
    /* Linear: wall-clock times may step back, sequences never do. */
    size_t lo = 0;
    while (lo < h->count && at(h, lo)->time_ns < since_ns)
        lo++;
    append_from(h, lo, out, n);
}
