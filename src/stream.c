/*
 * stream: one SSE response (see stream.h for the contract).
 *
 * The queue is a ring of items. An item is `head` bytes of the stream's
 * own (an id line, a retry hint or a comment, kept in order in `own`)
 * followed by the body of a shared event, if any. `off` counts what has
 * been sent of the first item. Own bytes are appended when an item is
 * queued, and consumed in the same order, so `own` is a plain FIFO.
 */
#include "sluice/stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/buf.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/sse.h"

struct item {
    struct sse_event *ev; /* NULL for own bytes only */
    uint32_t head;        /* own bytes in front of the body */
};

struct stream {
    struct stream_clock *clock;
    struct list clock_node;   /* in clock->streams */
    int64_t active_ms;        /* last activity, monotonic */
    struct fanout *fanout;
    stream_wake_fn *wake;
    void *wake_ctx;
    uint64_t conn_id;
    int32_t stream_id;
    unsigned retry_ms;
    enum stream_end end;      /* set once; no new items after it */

    struct item *items;       /* ring; capacity a power of two */
    size_t cap, first, count;
    size_t off;               /* bytes of items[first] already sent */
    size_t queued;            /* bytes in all items, minus off */
    size_t queue_max;
    struct buf own;

    size_t nsubjects;
    char **subjects;
    uint64_t *seqs;           /* last sequence queued, per subject */
    struct fanout_link *links;
};

static _Thread_local uint64_t rng_state;

static uint64_t next_random(void)
{
    if (!rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15ULL;
    }
    /* xorshift64*: jitter only needs to spread reconnects, not to be secret. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

int64_t stream_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void no_wake(void *ctx) { (void)ctx; }

static size_t item_len(const struct item *it) { return it->head + (it->ev ? it->ev->len : 0); }

static void touch(struct stream *s)
{
    s->active_ms = stream_now_ms();
    list_remove(&s->clock_node);
    list_insert_tail(&s->clock->streams, &s->clock_node);
}

/* Appends an item whose own bytes are already in s->own; wakes on empty -> non-empty. */
static void push(struct stream *s, struct sse_event *ev, size_t head)
{
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct item *items = mem_alloc(cap * sizeof(*items));
        for (size_t i = 0; i < s->count; i++)
            items[i] = s->items[(s->first + i) & (s->cap - 1)];
        free(s->items);
        s->items = items;
        s->cap = cap;
        s->first = 0;
    }
    struct item *it = &s->items[(s->first + s->count++) & (s->cap - 1)];
    it->ev = ev;
    it->head = (uint32_t)head;
    s->queued += item_len(it);
    if (s->count == 1)
        s->wake(s->wake_ctx);
}

static void push_own(struct stream *s, const char *bytes, size_t n)
{
    buf_append(&s->own, bytes, n);
    push(s, NULL, n);
}

/* Drops every item not yet started. */
static void drop_unsent(struct stream *s)
{
    size_t keep = s->off ? 1 : 0;
    size_t own_keep = keep ? s->items[s->first].head : 0;
    for (size_t i = keep; i < s->count; i++) {
        struct item *it = &s->items[(s->first + i) & (s->cap - 1)];
        s->queued -= item_len(it);
        sse_event_unref(it->ev);
    }
    s->count = keep;
    /* Own bytes of the kept item are its head minus what of it was sent. */
    size_t own_left = own_keep > s->off ? own_keep - s->off : 0;
    s->own.len = s->own.off + own_left;
}

struct stream *stream_new(const struct stream_params *p)
{
    struct stream *s = mem_calloc(1, sizeof(*s));
    s->clock = p->clock;
    list_init(&s->clock_node);
    s->fanout = p->fanout;
    s->wake = p->wake;
    s->wake_ctx = p->wake_ctx;
    s->conn_id = p->conn_id;
    s->stream_id = p->stream_id;
    s->queue_max = p->queue_max;
    buf_init(&s->own);

    long spread = (long)p->retry_ms * (long)p->jitter_pct / 100;
    long jitter = spread ? (long)(next_random() % (uint64_t)(2 * spread + 1)) - spread : 0;
    s->retry_ms = (unsigned)((long)p->retry_ms + jitter);

    s->nsubjects = p->nsubjects;
    s->subjects = mem_calloc(p->nsubjects, sizeof(*s->subjects));
    s->seqs = mem_calloc(p->nsubjects, sizeof(*s->seqs));
    s->links = mem_calloc(p->nsubjects, sizeof(*s->links));

    /* The caller resumes the stream itself; no wake from inside this call. */
    stream_wake_fn *wake = s->wake;
    s->wake = no_wake;
    char line[SSE_LINE_MAX];
    push_own(s, line, sse_format_retry(line, s->retry_ms));
    touch(s);

    for (size_t i = 0; i < p->nsubjects; i++) {
        s->subjects[i] = mem_strdup(p->subjects[i]);
        list_init(&s->links[i].node);
        s->links[i].owner = s;
        s->links[i].index = (unsigned)i;
        if (fanout_join(s->fanout, s->subjects[i], &s->links[i]) != 0) {
            stream_end(s, STREAM_END_UNAVAILABLE);
            break;
        }
    }
    s->wake = wake;
    return s;
}

void stream_free(struct stream *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nsubjects; i++) {
        fanout_leave(s->fanout, &s->links[i]);
        free(s->subjects[i]);
    }
    for (size_t i = 0; i < s->count; i++)
        sse_event_unref(s->items[(s->first + i) & (s->cap - 1)].ev);
    list_remove(&s->clock_node);
    buf_dispose(&s->own);
    free(s->items);
    free(s->subjects);
    free(s->seqs);
    free(s->links);
    free(s);
}

static const char *end_text(enum stream_end why)
{
    switch (why) {
    case STREAM_END_SLOW_CONSUMER: return "slow consumer, reconnect to resume";
    case STREAM_END_UNAVAILABLE: return "subscription unavailable, reconnect later";
    case STREAM_END_SHUTDOWN: return "server shutting down, reconnect";
    case STREAM_END_NONE: break;
    }
    return "end";
}

void stream_end(struct stream *s, enum stream_end why)
{
    if (s->end != STREAM_END_NONE)
        return;
    s->end = why;
    drop_unsent(s);
    char line[SSE_LINE_MAX];
    push_own(s, line, sse_format_comment(line, end_text(why)));
    for (size_t i = 0; i < s->nsubjects; i++)
        fanout_leave(s->fanout, &s->links[i]);
    list_remove(&s->clock_node);
}

/* Writes "id: a-b-c\n" for the stream's sequences into own; returns its length. */
static size_t append_id(struct stream *s)
{
    size_t need = 5 + s->nsubjects * 21;
    char *o = (char *)buf_reserve(&s->own, need), *start = o;
    memcpy(o, "id: ", 4);
    o += 4;
    for (size_t i = 0; i < s->nsubjects; i++) {
        if (i)
            *o++ = '-';
        o += snprintf(o, 21, "%" PRIu64, s->seqs[i]);
    }
    *o++ = '\n';
    s->own.len += (size_t)(o - start);
    return (size_t)(o - start);
}

void stream_on_event(struct fanout_link *link, struct sse_event *ev)
{
    struct stream *s = link->owner;
    if (s->end != STREAM_END_NONE)
        return;
    s->seqs[link->index] = ev->seq;
    size_t before = s->own.len;
    size_t head = append_id(s);
    /* An empty queue takes any one event, so a large message alone never cuts a stream. */
    if (s->queued > 0 && s->queued + head + ev->len > s->queue_max) {
        s->own.len = before;
        log_info("conn %" PRIu64 " stream %d: slow consumer, %zu bytes queued; ending stream",
                 s->conn_id, (int)s->stream_id, s->queued);
        stream_end(s, STREAM_END_SLOW_CONSUMER);
        return;
    }
    push(s, sse_event_ref(ev), head);
    touch(s);
}

size_t stream_pending(const struct stream *s, size_t max, bool *eof)
{
    size_t n = s->queued < max ? s->queued : max;
    *eof = s->end != STREAM_END_NONE && n == s->queued;
    return n;
}

void stream_copy(struct stream *s, uint8_t *dst, size_t n)
{
    while (n > 0) {
        struct item *it = &s->items[s->first];
        size_t len = item_len(it);
        while (n > 0 && s->off < len) {
            size_t chunk;
            if (s->off < it->head) {
                chunk = it->head - s->off;
                chunk = chunk < n ? chunk : n;
                memcpy(dst, s->own.data + s->own.off, chunk);
                buf_consume(&s->own, chunk);
            } else {
                chunk = len - s->off;
                chunk = chunk < n ? chunk : n;
                memcpy(dst, it->ev->body + (s->off - it->head), chunk);
            }
            dst += chunk;
            n -= chunk;
            s->off += chunk;
            s->queued -= chunk;
        }
        if (s->off == len) {
            sse_event_unref(it->ev);
            s->first = (s->first + 1) & (s->cap - 1);
            s->count--;
            s->off = 0;
        }
    }
}

size_t stream_queued(const struct stream *s) { return s->queued; }
unsigned stream_retry_ms(const struct stream *s) { return s->retry_ms; }

void stream_clock_init(struct stream_clock *c, int64_t interval_ms)
{
    list_init(&c->streams);
    c->interval_ms = interval_ms;
}

void stream_clock_tick(struct stream_clock *c, int64_t now_ms)
{
    static const char beat[] = ":\n\n";
    while (!list_empty(&c->streams)) {
        struct stream *s = container_of(c->streams.next, struct stream, clock_node);
        if (now_ms - s->active_ms < c->interval_ms)
            break;
        /* A stream with bytes still queued is not idle, only blocked. */
        if (s->count == 0)
            push_own(s, beat, sizeof(beat) - 1);
        touch(s);
    }
}
