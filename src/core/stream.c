/*
 * stream: one SSE response (see stream.h for the contract).
 *
 * The queue is a ring of items. An item is `head` bytes of the stream's
 * own (an id line, a retry hint, a reset or a comment, kept in order in
 * `own`) followed by the body of a shared event, if any. `off` counts what
 * has been sent of the first item. Own bytes are appended when an item is
 * queued and consumed in the same order, so `own` is a plain FIFO.
 *
 * The first item is `retry: N` plus an `id:` with the stream's starting
 * positions and no data: a browser records the id without firing an
 * event, so even a client that saw no event before it reconnected resumes
 * from where it joined instead of losing what was published meanwhile.
 */
#include "sluice/stream.h"

#include <assert.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/buf.h"
#include "sluice/err.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/resume.h"
#include "sluice/sse.h"
#include "sluice/subject.h"

#define ID_PART_MAX 20 /* digits of a uint64_t */
#define ITEMS_KEEP 4   /* ring slots an empty queue keeps (shrink_drained) */
#define OWN_KEEP 128   /* bytes of own an empty queue keeps */

/* What an item is counted against. */
enum charge {
    CHARGE_NONE,   /* own bytes only: retry, start id, reset, comments */
    CHARGE_LIVE,   /* its bytes, against the stream, connection and worker caps */
    CHARGE_REPLAY, /* its slot and id line, against the worker cap (the body is shared) */
};

struct item {
    struct sse_event *ev; /* NULL for own bytes only */
    uint32_t head;        /* own bytes in front of the body */
    uint8_t charge;       /* enum charge */
    bool dispatch;        /* an event a client sees: ev, or a reset */
};

struct stream {
    /* Widest first, the small fields together at the end: one per open stream. */
    struct stream_env *env;
    struct list idle_node;    /* in env->idle, or detached once ended */
    int64_t active_ms;        /* last activity, monotonic */
    struct stream_budget *conn_budget;
    stream_wake_fn *wake;
    void *wake_ctx;
    uint64_t conn_id;
    double opened_s;          /* monotonic seconds, precise */
    int64_t expires_ms;       /* stream_now_ms() clock; 0: never */
    stream_renew_fn *renew;   /* NULL: a token expiry ends the stream */
    char *principal;          /* owned; NULL when none */
    size_t dispatchable;      /* items with dispatch set */
    struct list expiry_node;  /* in env->expiring while expires_ms is set */
    uint64_t events_sent;     /* events fully written */
    uint64_t bytes_sent;

    struct item *items;       /* ring; capacity a power of two */
    size_t cap, first, count;
    size_t off;               /* bytes of items[first] already sent */
    size_t queued;            /* bytes in all items, minus off */
    size_t promised;          /* bytes stream_pending() offered and stream_copy() has not taken */
    size_t charged;           /* bytes of charged items (whole items) */
    size_t queue_max;
    struct buf own;

    size_t nsubjects;
    char **subjects;
    uint64_t *seqs;           /* position per subject: last sequence queued */
    struct fanout_link *links;
    bool *done;               /* per subject: its end was queued or predates the start */
    size_t ndone;             /* subjects done; == nsubjects: the stream has finished */

    /* Until started: where the client asked to start, and the answers so far. */
    char *start_id;           /* Last-Event-ID, "earliest", or NULL */
    int64_t since_ns;         /* ?since=, 0: none */
    stream_trailer_fn *trailer; /* own bytes after each event (stream_params); NULL: none */
    void *trailer_ctx;
    char *prologue;           /* queued after the start (stream_params); freed once queued */
    size_t prologue_len;
    size_t pending;           /* starts a replay job still has to answer */
    struct bus_resume *starts;/* per subject, while begun and not started */

    int32_t stream_id;
    unsigned retry_ms;
    enum stream_end end;      /* set once; nothing is queued after the final comment */
    enum stream_end expire_end;
    bool over;                /* finished at its start with no event: answer 204 */
    bool refused;             /* a "no responders" notice ended it */
    bool bad_id;              /* start_id is malformed: every subject resets, ended or not */
    bool begun;               /* starts asked for */
    bool started;             /* start queued: live events count from now on */
    bool notify;              /* queues nothing of its own: events only wake (stream_params) */
};

static _Thread_local uint64_t rng_state;

static uint64_t next_random(void)
{
    if (!rng_state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rng_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&rng_state ^
                    0x9e3779b97f4a7c15ULL;
    }
    /* xorshift64*: jitter only needs to spread reconnects, not to be secret. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

double stream_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int64_t stream_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void no_wake(void *ctx) { (void)ctx; }

static size_t item_len(const struct item *it) { return it->head + (it->ev ? it->ev->len : 0); }

static void charge(struct stream *s, int64_t n)
{
    /* A release of more than was charged would wrap a budget and lift its cap for everyone. */
    assert(n >= 0 || ((size_t)-n <= s->charged && (size_t)-n <= s->conn_budget->used &&
                      (size_t)-n <= s->env->budget.used));
    s->charged += (size_t)n;
    s->conn_budget->used += (size_t)n;
    s->env->budget.used += (size_t)n;
    metrics_add(&s->env->stats.bytes_queued, n);
}

bool stream_budget_take(struct stream_budget *conn, struct stream_budget *worker, size_t n,
                        bool force)
{
    if (!force && n > stream_budget_room(conn, worker))
        return false;
    conn->used += n;
    worker->used += n;
    return true;
}

void stream_budget_give(struct stream_budget *conn, struct stream_budget *worker, size_t n)
{
    conn->used -= n;
    worker->used -= n;
}

size_t stream_budget_room(const struct stream_budget *conn, const struct stream_budget *worker)
{
    size_t a = conn->used < conn->max ? conn->max - conn->used : 0;
    size_t b = worker->used < worker->max ? worker->max - worker->used : 0;
    return a < b ? a : b;
}

static void touch(struct stream *s, int64_t now_ms)
{
    /*
     * Touched at this instant already: it is among the last of the list,
     * which stays in order without the move (a move writes two
     * neighbours' cache lines, per stream per event of an inbox batch).
     */
    if (s->active_ms == now_ms && !list_empty(&s->idle_node))
        return;
    s->active_ms = now_ms;
    list_remove(&s->idle_node);
    list_insert_tail(&s->env->idle, &s->idle_node);
}

/* What a replayed item costs the worker: its queue slot and its id line. */
static size_t replay_cost(size_t head) { return sizeof(struct item) + head; }

/* Appends an item whose own bytes are already in s->own; wakes on empty -> non-empty. */
static void push(struct stream *s, struct sse_event *ev, size_t head, enum charge how)
{
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : ITEMS_KEEP;
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
    it->charge = (uint8_t)how;
    it->dispatch = ev != NULL;
    s->dispatchable += ev != NULL;
    s->queued += item_len(it);
    if (how == CHARGE_LIVE)
        charge(s, (int64_t)item_len(it));
    else if (how == CHARGE_REPLAY)
        s->env->budget.used += replay_cost(head);
    if (ev)
        metrics_add(&s->env->stats.events_queued, 1);
    /* The first event also wakes: a long-poll waits for one behind its unsent start. */
    if (s->count == 1 || (ev && s->dispatchable == 1))
        s->wake(s->wake_ctx);
}

static void push_own(struct stream *s, const char *bytes, size_t n)
{
    buf_append(&s->own, bytes, n);
    push(s, NULL, n, CHARGE_NONE);
}

/* The owner's bytes after an event of seq (end: it ends its subject; empty: no data). */
static void push_trailer(struct stream *s, uint64_t seq, bool end, bool empty)
{
    if (!s->trailer)
        return;
    char out[STREAM_TRAILER_MAX];
    size_t n = s->trailer(s->trailer_ctx, seq, end, empty, out, sizeof(out));
    if (n)
        push_own(s, out, n);
}

static void release(struct stream *s, struct item *it)
{
    s->dispatchable -= it->dispatch;
    if (it->charge == CHARGE_LIVE)
        charge(s, -(int64_t)item_len(it));
    else if (it->charge == CHARGE_REPLAY) {
        assert(s->env->budget.used >= replay_cost(it->head));
        s->env->budget.used -= replay_cost(it->head);
    }
    sse_refs_drop(&s->env->refs, it->ev);
}

/*
 * Drops every event not yet started. Kept: the item partly sent, the items
 * holding bytes already promised to the protocol (h2 may have framed them
 * and be waiting to write the frame), and the own-only items (retry, start
 * id, reset) ahead of the first dropped event, so that a client cut before
 * it saw anything still learns its starting id.
 */
static void drop_unsent(struct stream *s)
{
    size_t keep = 0, own_keep = 0, promised = s->off + s->promised;
    while (keep < s->count) {
        struct item *it = &s->items[(s->first + keep) & (s->cap - 1)];
        if (it->ev && !(keep == 0 && s->off > 0) && promised == 0)
            break;
        size_t len = item_len(it);
        promised = promised > len ? promised - len : 0;
        own_keep += it->head;
        keep++;
    }
    for (size_t i = keep; i < s->count; i++) {
        struct item *it = &s->items[(s->first + i) & (s->cap - 1)];
        s->queued -= item_len(it);
        release(s, it);
    }
    s->count = keep;
    /* Own bytes left are the kept heads minus what of the first was sent. */
    size_t sent = keep ? (s->off < s->items[s->first].head ? s->off : s->items[s->first].head) : 0;
    s->own.len = s->own.off + own_keep - sent;
}

/* Appends "id: a-b-c\n" for the stream's positions to own; returns its length. */
static size_t append_id(struct stream *s)
{
    size_t need = 5 + s->nsubjects * (ID_PART_MAX + 1);
    char *o = (char *)buf_reserve(&s->own, need), *start = o;
    memcpy(o, "id: ", 4);
    o += 4;
    struct stream_env *env = s->env;
    for (size_t i = 0; i < s->nsubjects; i++) {
        if (i)
            *o++ = '-';
        if (env->id_len == 0 || env->id_seq != s->seqs[i]) {
            env->id_len = (uint8_t)sse_format_u64(env->id_text, s->seqs[i]);
            env->id_seq = s->seqs[i];
        }
        /* All of id_text, a constant size the compiler inlines: need has room past each part. */
        memcpy(o, env->id_text, sizeof(env->id_text));
        o += env->id_len;
    }
    *o++ = '\n';
    s->own.len += (size_t)(o - start);
    return (size_t)(o - start);
}

/* Parses "a-b-c" into n positions; false when malformed or of another length. */
static bool parse_id(const char *id, size_t n, uint64_t *out)
{
    const char *p = id;
    for (size_t i = 0; i < n; i++) {
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > ID_PART_MAX)
            return false;
        char *end;
        out[i] = strtoull(p, &end, 10);
        p += digits;
        if (*p != (i + 1 < n ? '-' : '\0'))
            return false;
        p++;
    }
    return true;
}

static void push_reset(struct stream *s, const bool *reset, const char *reason)
{
    size_t start = s->own.len;
    append_id(s);
    static const char head[] = "event: reset\ndata: {\"reason\":\"";
    buf_append(&s->own, head, sizeof(head) - 1);
    buf_append(&s->own, reason, strlen(reason));
    buf_append(&s->own, "\",\"subjects\":[", 14);
    bool first = true;
    for (size_t i = 0; i < s->nsubjects; i++) {
        if (!reset[i])
            continue;
        if (!first)
            buf_append(&s->own, ",", 1);
        json_put_string(&s->own, s->subjects[i], strlen(s->subjects[i]));
        first = false;
    }
    buf_append(&s->own, "]}\n\n", 4);
    push(s, NULL, s->own.len - start, CHARGE_NONE);
    s->items[(s->first + s->count - 1) & (s->cap - 1)].dispatch = true;
    s->dispatchable++;
    metrics_add(&s->env->stats.resets, 1);
}

struct replay {
    struct sse_event *ev;
    size_t index;
};

static int by_seq(const void *a, const void *b)
{
    uint64_t x = ((const struct replay *)a)->ev->seq, y = ((const struct replay *)b)->ev->seq;
    return x < y ? -1 : x > y;
}

/* True when nats-server has (or refused) every subscription of the stream. */
static bool all_ready(const struct stream *s)
{
    for (size_t i = 0; i < s->nsubjects; i++) {
        if (!fanout_ready(&s->links[i]))
            return false;
    }
    return true;
}

static const char *reset_reason(enum bus_status st)
{
    switch (st) {
    case BUS_RESUME_GONE: return "history-expired";
    case BUS_RESUME_LIMIT: return "replay-limit";
    case BUS_RESUME_FAILED: return "replay-failed";
    case BUS_RESUME_UNKNOWN:
    case BUS_RESUME_OK:
    case BUS_RESUME_PENDING: break;
    }
    return "unknown-id";
}

static void drop_starts(struct stream *s)
{
    if (!s->starts)
        return;
    for (size_t i = 0; i < s->nsubjects; i++)
        bus_resume_dispose(&s->starts[i]);
    free(s->starts);
    s->starts = NULL;
}

/* An ended stream leaves its subjects and the idle and expiry lists, and wakes once. */
static void leave(struct stream *s)
{
    for (size_t i = 0; i < s->nsubjects; i++)
        fanout_leave(s->env->fanout, &s->links[i]);
    list_remove(&s->idle_node);
    list_remove(&s->expiry_node);
    s->wake(s->wake_ctx);
}

/*
 * Every subject has ended: the stream ends after what is queued, adding
 * nothing (no comment: a finished stream is not an error). May be called
 * while the fan-out delivers to the stream.
 */
static void finish_subjects(struct stream *s)
{
    if (s->end != STREAM_END_NONE)
        return;
    s->end = STREAM_END_FINISHED;
    leave(s);
}

static void mark_done(struct stream *s, size_t i)
{
    if (!s->done[i]) {
        s->done[i] = true;
        s->ndone++;
    }
}

/*
 * An end with no event: only "id: …" and a blank line, which moves a
 * client's Last-Event-ID to the end without dispatching anything. Once
 * per subject, so it is not charged.
 */
static void push_end_id(struct stream *s)
{
    size_t head = append_id(s);
    buf_append(&s->own, "\n", 1);
    push(s, NULL, head + 1, CHARGE_NONE);
}

/*
 * Every start has answered: sets every position and queues the start —
 * retry + id, any reset, the replay merged in sequence order. A resume
 * from an id that JetStream could not answer ends the stream, keeping the
 * client's position so that its reconnect resumes. A failed `earliest` or
 * `since=` start has no position to keep (an id of "now" would make the
 * reconnect skip what it asked for, silently): it is a reset
 * (`replay-failed`), then live.
 */
static void finish(struct stream *s)
{
    bool *reset = mem_calloc(s->nsubjects, sizeof(*reset));
    const char *reason = NULL;
    bool failed = false;
    bool by_id = s->start_id && strcmp(s->start_id, "earliest") != 0;
    struct replay *replay = NULL;
    size_t nreplay = 0;

    for (size_t i = 0; i < s->nsubjects; i++) {
        struct bus_resume *r = &s->starts[i];
        s->seqs[i] = r->last;
        if (r->status == BUS_RESUME_OK) {
            s->seqs[i] = r->before;
            size_t nbatch = r->batch ? r->batch->n - r->batch_from : 0;
            replay = mem_realloc(replay, (nreplay + nbatch + r->nevents) * sizeof(*replay));
            for (size_t k = 0; k < nbatch; k++)
                replay[nreplay++] =
                    (struct replay){sse_event_ref(r->batch->events[r->batch_from + k]), i};
            for (size_t k = 0; k < r->nevents; k++)
                replay[nreplay++] = (struct replay){r->events[k], i};
            free(r->events); /* these references move to the queue below */
            r->events = NULL;
            r->nevents = 0;
        } else if (r->status == BUS_RESUME_FAILED && by_id) {
            s->seqs[i] = r->before;
            failed = true;
        } else if (r->status == BUS_RESUME_UNKNOWN && by_id && !s->bad_id && r->end) {
            /*
             * An id past the end of a finished subject (newer than anything
             * stored, and the newest is the end): the client is at or past the
             * end, so nothing is missing and nothing follows. No reset, so a
             * stream with every subject like this is over: 204, and the
             * EventSource stops instead of reconnecting forever.
             */
            s->seqs[i] = r->last;
        } else if (!reset[i]) {
            reset[i] = true;
            reason = reset_reason(r->status);
        }
    }
    /* A replay the worker's queue cap cannot take is refused whole: reset and go live. */
    size_t cost = nreplay * replay_cost(5 + s->nsubjects * (ID_PART_MAX + 1));
    if (nreplay && s->env->budget.used + cost > s->env->budget.max) {
        log_info("conn %" PRIu64 " stream %d: replay of %zu events refused: worker queue full",
                 s->conn_id, (int)s->stream_id, nreplay);
        for (size_t k = 0; k < nreplay; k++) {
            size_t i = replay[k].index;
            if (!reset[i]) {
                reset[i] = true;
                s->seqs[i] = s->starts[i].last;
            }
            sse_event_unref(replay[k].ev);
        }
        nreplay = 0;
        reason = reset_reason(BUS_RESUME_LIMIT);
    }
    /* A subject whose end is at or before where the stream starts has nothing more. */
    for (size_t i = 0; i < s->nsubjects; i++) {
        if (s->starts[i].end && s->seqs[i] >= s->starts[i].end)
            mark_done(s, i);
    }
    drop_starts(s);

    if (s->notify) {
        for (size_t k = 0; k < nreplay; k++)
            sse_event_unref(replay[k].ev);
        free(replay);
        free(reset);
        free(s->start_id);
        s->start_id = NULL;
        s->started = true;
        s->wake(s->wake_ctx);
        return;
    }
    char line[SSE_LINE_MAX];
    size_t n = sse_format_retry(line, s->retry_ms);
    size_t mark = s->own.len;
    buf_append(&s->own, line, n - 1); /* the blank line comes after the id */
    append_id(s);
    buf_append(&s->own, "\n", 1);
    push(s, NULL, s->own.len - mark, CHARGE_NONE);
    if (s->prologue) {
        buf_append(&s->own, s->prologue, s->prologue_len);
        push(s, NULL, s->prologue_len, CHARGE_NONE);
        free(s->prologue);
        s->prologue = NULL;
    }

    if (reason)
        push_reset(s, reset, reason);
    if (nreplay > 1)
        qsort(replay, nreplay, sizeof(*replay), by_seq);
    size_t dispatched = s->dispatchable;
    for (size_t k = 0; k < nreplay; k++) {
        size_t i = replay[k].index;
        if (s->done[i] || (replay[k].ev->len == 0 && !replay[k].ev->end)) {
            sse_event_unref(replay[k].ev); /* after its subject's end, or no event at all */
            continue;
        }
        s->seqs[i] = replay[k].ev->seq;
        bool end = replay[k].ev->end;
        uint64_t seq = replay[k].ev->seq;
        bool empty = replay[k].ev->len == 0;
        if (empty) {
            push_end_id(s);
            sse_event_unref(replay[k].ev);
        } else {
            push(s, replay[k].ev, append_id(s), CHARGE_REPLAY);
        }
        push_trailer(s, seq, end, empty);
        if (end)
            mark_done(s, i);
    }
    if (s->start_id && strcmp(s->start_id, "earliest") != 0 && !reason)
        metrics_add(&s->env->stats.resumes, 1);
    metrics_add(&s->env->stats.replayed_events, (int64_t)nreplay);
    free(replay);
    free(reset);
    free(s->start_id);
    s->start_id = NULL;
    s->started = true;
    if (s->ndone == s->nsubjects) {
        s->over = s->dispatchable == dispatched && !reason;
        finish_subjects(s);
    } else if (failed) {
        stream_end(s, STREAM_END_UNAVAILABLE);
    }
}

/*
 * All subjects are confirmed: asks each where to start. Replays that
 * JetStream must answer come back through stream_on_replayed().
 */
static void begin(struct stream *s)
{
    s->begun = true;
    for (size_t i = 0; i < s->nsubjects; i++) {
        if (fanout_failed(&s->links[i])) {
            char line[SSE_LINE_MAX];
            push_own(s, line, sse_format_retry(line, s->retry_ms));
            stream_end(s, STREAM_END_UNAVAILABLE);
            return;
        }
    }
    struct bus_start start = {.from = BUS_FROM_NOW};
    uint64_t *after = mem_calloc(s->nsubjects, sizeof(*after));
    bool bad_id = false;
    if (s->start_id && strcmp(s->start_id, "earliest") == 0) {
        start.from = BUS_FROM_EARLIEST;
    } else if (s->start_id) {
        start.from = BUS_FROM_ID;
        bad_id = s->bad_id = !parse_id(s->start_id, s->nsubjects, after);
        metrics_add(&s->env->stats.with_last_id, 1);
    } else if (s->since_ns) {
        start.from = BUS_FROM_TIME;
        start.since_ns = s->since_ns;
    }
    s->starts = mem_calloc(s->nsubjects, sizeof(*s->starts));
    for (size_t i = 0; i < s->nsubjects; i++) {
        struct bus_start one = start;
        one.after = after[i];
        if (bad_id)
            one.from = BUS_FROM_NOW;
        fanout_resume(s->env->fanout, &s->links[i], &one, &s->starts[i]);
        if (bad_id)
            s->starts[i].status = BUS_RESUME_UNKNOWN;
        s->pending += s->starts[i].status == BUS_RESUME_PENDING;
    }
    free(after);
    if (!s->pending)
        finish(s);
}

void stream_on_replayed(struct fanout_link *link, struct bus_resume *r)
{
    struct stream *s = link->owner;
    s->starts[link->index] = *r; /* takes the events and the batch */
    r->events = NULL;
    r->nevents = 0;
    r->batch = NULL;
    if (--s->pending == 0) {
        finish(s);
        s->wake(s->wake_ctx);
    }
}

struct stream *stream_new(const struct stream_params *p)
{
    struct stream *s = mem_calloc(1, sizeof(*s));
    s->env = p->env;
    list_init(&s->idle_node);
    s->conn_budget = p->conn_budget;
    s->wake = no_wake; /* the caller resumes the stream itself; no wake from inside */
    s->wake_ctx = p->wake_ctx;
    s->conn_id = p->conn_id;
    s->stream_id = p->stream_id;
    s->queue_max = p->queue_max;
    s->opened_s = stream_now_s();
    s->expires_ms = p->expires_ms;
    s->notify = p->notify;
    s->trailer = p->trailer;
    s->trailer_ctx = p->trailer_ctx;
    if (p->prologue_len) {
        s->prologue = mem_alloc(p->prologue_len);
        memcpy(s->prologue, p->prologue, p->prologue_len);
        s->prologue_len = p->prologue_len;
    }
    s->expire_end = p->expire_end ? p->expire_end : STREAM_END_TOKEN_EXPIRED;
    s->renew = p->renew;
    s->principal = p->principal ? mem_strdup(p->principal) : NULL;
    list_init(&s->expiry_node);
    if (s->expires_ms)
        list_insert_tail(&s->env->expiring, &s->expiry_node);
    buf_init(&s->own);

    long spread = (long)p->retry_ms * (long)p->jitter_pct / 100;
    long jitter = spread ? (long)(next_random() % (uint64_t)(2 * spread + 1)) - spread : 0;
    s->retry_ms = (unsigned)((long)p->retry_ms + jitter);

    s->nsubjects = p->nsubjects;
    /*
     * One block for the per-subject arrays and the subject strings: a
     * stream is mostly idle memory, and each allocation costs its header.
     */
    size_t strings = 0;
    for (size_t i = 0; i < p->nsubjects; i++)
        strings += strlen(p->subjects[i]) + 1;
    char *block = mem_calloc(1, p->nsubjects * (sizeof(*s->links) + sizeof(*s->seqs) +
                                                sizeof(*s->subjects) + sizeof(*s->done)) +
                                    strings);
    s->links = (struct fanout_link *)(void *)block;
    s->seqs = (uint64_t *)(void *)(block + p->nsubjects * sizeof(*s->links));
    s->subjects = (char **)(void *)((char *)s->seqs + p->nsubjects * sizeof(*s->seqs));
    s->done = (bool *)(s->subjects + p->nsubjects);
    char *text = (char *)(s->done + p->nsubjects);
    metrics_add(&s->env->stats.opened, 1);
    metrics_add(&s->env->stats.open, 1);
    touch(s, stream_now_ms());

    int joined = 0;
    for (size_t i = 0; i < p->nsubjects; i++) {
        /* Two links of one stream on one topic would get every event twice (the router de-duplicates). */
        for (size_t k = 0; k < i; k++)
            assert(strcmp(p->subjects[k], p->subjects[i]) != 0);
        size_t n = strlen(p->subjects[i]) + 1;
        s->subjects[i] = memcpy(text, p->subjects[i], n);
        text += n;
        list_init(&s->links[i].node);
        s->links[i].owner = s;
        s->links[i].index = (unsigned)i;
        if (joined == 0)
            joined = fanout_join(s->env->fanout, s->subjects[i], &s->links[i]);
    }
    if (joined == 0) {
        s->start_id = p->last_event_id ? mem_strdup(p->last_event_id) : NULL;
        s->since_ns = p->since_ns;
        if (all_ready(s))
            begin(s);
    } else {
        char line[SSE_LINE_MAX];
        push_own(s, line, sse_format_retry(line, s->retry_ms));
        /* A process full of watched subscriptions is not the client's fault: retry later. */
        stream_end(s, joined == ERR_LIMIT ? STREAM_END_LIMIT : STREAM_END_UNAVAILABLE);
    }
    s->wake = p->wake;
    return s;
}

void stream_free(struct stream *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nsubjects; i++)
        fanout_leave(s->env->fanout, &s->links[i]);
    for (size_t i = 0; i < s->count; i++)
        release(s, &s->items[(s->first + i) & (s->cap - 1)]);
    metrics_add(&s->env->stats.open, -1);
    metrics_add(&s->env->stats.ended[s->end], 1);
    list_remove(&s->expiry_node);
    metrics_observe(&s->env->stats.duration, stream_now_s() - s->opened_s);
    list_remove(&s->idle_node);
    buf_dispose(&s->own);
    drop_starts(s);
    free(s->principal);
    free(s->start_id);
    free(s->prologue);
    free(s->items);
    free(s->links); /* the block that also holds seqs and subjects */
    free(s);
}

static const char *end_text(enum stream_end why)
{
    switch (why) {
    case STREAM_END_SLOW_CONSUMER: return "slow consumer, reconnect to resume";
    case STREAM_END_UNAVAILABLE: return "subscription unavailable, reconnect later";
    case STREAM_END_DRAIN: return "server shutting down, reconnect";
    case STREAM_END_TOKEN_EXPIRED: return "token expired, reconnect with a fresh one";
    case STREAM_END_LIMIT: return "limit reached, reconnect later";
    case STREAM_END_TIMEOUT: return "no events";
    case STREAM_END_REVOKED: return "revoked";
    case STREAM_END_AUTH_UNAVAILABLE: return "authorization unavailable, reconnect later";
    case STREAM_END_FINISHED:
    case STREAM_END_NONE:
    case STREAM_END_COUNT: break;
    }
    return "end";
}

const char *stream_end_label(enum stream_end why)
{
    static const char *const labels[STREAM_END_COUNT] = {
        "client", "slow_consumer", "unavailable", "drain", "token_expired", "limit", "timeout",
        "finished", "revoked", "auth_unavailable",
    };
    return why < STREAM_END_COUNT ? labels[why] : "unknown";
}

char *const *stream_subjects(const struct stream *s, size_t *n)
{
    *n = s->nsubjects;
    return s->subjects;
}

void stream_info(const struct stream *s, struct stream_info *out)
{
    out->duration_s = stream_now_s() - s->opened_s;
    out->events = s->events_sent;
    out->bytes = s->bytes_sent;
    out->end = s->end;
}

void stream_end(struct stream *s, enum stream_end why) { stream_end_retry(s, why, 0); }

static const char *over_cap(const struct stream *s, size_t n);

bool stream_push_text(struct stream *s, const char *bytes, size_t n)
{
    if (s->end != STREAM_END_NONE)
        return false;
    const char *cap = over_cap(s, n);
    if (cap) {
        log_info("conn %" PRIu64 " stream %d: slow consumer: %s full (%zu bytes queued); "
                 "ending stream",
                 s->conn_id, (int)s->stream_id, cap, s->charged);
        metrics_add(&s->env->stats.cut_slow, 1);
        stream_end(s, STREAM_END_SLOW_CONSUMER);
        return false;
    }
    buf_append(&s->own, bytes, n);
    push(s, NULL, n, CHARGE_LIVE);
    touch(s, stream_now_ms());
    return true;
}


/*
 * Ends s for why: drops what is not yet started, queues `retry:` (when
 * retry_ms) and last (n bytes), leaves the fan-out, and wakes once.
 */
static void end_with(struct stream *s, enum stream_end why, unsigned retry_ms, const char *last,
                     size_t n)
{
    if (s->end != STREAM_END_NONE)
        return;
    s->end = why;
    drop_unsent(s);
    char line[SSE_LINE_MAX];
    /* One wake, below, whether or not the queue was empty. */
    stream_wake_fn *wake = s->wake;
    s->wake = no_wake;
    if (retry_ms)
        push_own(s, line, sse_format_retry(line, retry_ms));
    push_own(s, last, n);
    s->wake = wake;
    leave(s);
}

void stream_end_retry(struct stream *s, enum stream_end why, unsigned retry_ms)
{
    char line[SSE_LINE_MAX];
    end_with(s, why, retry_ms, line, sse_format_comment(line, end_text(why)));
}

void stream_end_event(struct stream *s, enum stream_end why, const char *event,
                      const char *data)
{
    /* Both are ours or checked (revoke.h: one line, at most 200 bytes); cut, never split. */
    char text[sizeof("event: \ndata: \n\n") + 64 + 200];
    int n = snprintf(text, sizeof(text), "event: %.64s\ndata: %.200s\n\n", event, data);
    if (n > 0 && (size_t)n < sizeof(text))
        end_with(s, why, 0, text, (size_t)n);
}

const char *stream_principal(const struct stream *s) { return s->principal; }

/* Whether s is principal's or has a subject overlapping subject. */
static bool revoked(const struct stream *s, const char *principal, const char *subject)
{
    if (principal && s->principal && strcmp(principal, s->principal) == 0)
        return true;
    for (size_t i = 0; subject && i < s->nsubjects; i++)
        if (subject_overlaps(s->subjects[i], subject))
            return true;
    return false;
}

size_t stream_env_revoke(struct stream_env *env, const char *principal, const char *subject,
                         const char *reason)
{
    size_t n = 0;
    /* Ending a stream unlinks it from env->idle: walk with the next node saved. */
    for (struct list *l = env->idle.next, *next; l != &env->idle; l = next) {
        next = l->next;
        struct stream *s = container_of(l, struct stream, idle_node);
        if (revoked(s, principal, subject)) {
            stream_end_event(s, STREAM_END_REVOKED, "revoked", reason);
            n++;
        }
    }
    return n;
}

enum stream_end stream_ended(const struct stream *s) { return s->end; }

bool stream_over(const struct stream *s) { return s->over; }

bool stream_refused(const struct stream *s) { return s->refused; }

void stream_set_expiry(struct stream *s, int64_t expires_ms, enum stream_end why)
{
    if (s->end != STREAM_END_NONE)
        return;
    list_remove(&s->expiry_node);
    s->expires_ms = expires_ms;
    s->expire_end = why;
    if (expires_ms)
        list_insert_tail(&s->env->expiring, &s->expiry_node);
}

bool stream_ready(const struct stream *s) { return s->end != STREAM_END_NONE || s->started; }

/* The worker, not the client, fell behind: the same end and resume as a slow consumer's. */
void stream_on_lost(struct fanout_link *link)
{
    stream_end((struct stream *)link->owner, STREAM_END_SLOW_CONSUMER);
}

void stream_on_ready(struct fanout_link *link)
{
    struct stream *s = link->owner;
    if (!s->begun && s->end == STREAM_END_NONE && all_ready(s))
        begin(s);
    if (stream_ready(s))
        s->wake(s->wake_ctx);
}

/* The cap that taking n more live bytes would break, or NULL. */
static const char *over_cap(const struct stream *s, size_t n)
{
    /* An empty queue takes any one event, so a large message alone never cuts a stream. */
    if (s->charged > 0 && s->charged + n > s->queue_max)
        return "stream queue";
    if (s->conn_budget->used + n > s->conn_budget->max)
        return "connection queue";
    if (s->env->budget.used + n > s->env->budget.max)
        return "worker queue";
    return NULL;
}

/* A live end was queued for subject i: the stream finishes once every subject has. */
static void end_subject(struct stream *s, size_t i)
{
    mark_done(s, i);
    if (s->ndone == s->nsubjects)
        finish_subjects(s);
}

void stream_on_event(struct fanout_link *link, struct sse_event *ev)
{
    struct stream *s = link->owner;
    /*
     * Before the start: in the start's history snapshot or replay already.
     * At or below the position: already replayed, or from before this
     * stream joined.
     */
    if (s->end != STREAM_END_NONE || !s->started || ev->seq <= s->seqs[link->index] ||
        s->done[link->index])
        return;
    if (s->notify) {
        /* Its owner reads what is new itself, and decides when it ends. */
        s->seqs[link->index] = ev->seq;
        s->wake(s->wake_ctx);
        return;
    }
    if (ev->len == 0) { /* an end with no event, or an empty end on a wildcard: no event */
        s->refused |= ev->refused;
        if (ev->end) {
            s->seqs[link->index] = ev->seq;
            push_end_id(s);
            push_trailer(s, ev->seq, true, true);
            end_subject(s, link->index);
        }
        return;
    }
    uint64_t was = s->seqs[link->index];
    s->seqs[link->index] = ev->seq;
    size_t before = s->own.len;
    size_t head = append_id(s);
    const char *cap = over_cap(s, head + ev->len);
    if (cap) {
        s->own.len = before;
        s->seqs[link->index] = was;
        log_info("conn %" PRIu64 " stream %d: slow consumer: %s full (%zu bytes queued); "
                 "ending stream",
                 s->conn_id, (int)s->stream_id, cap, s->charged);
        metrics_add(&s->env->stats.cut_slow, 1);
        stream_end(s, STREAM_END_SLOW_CONSUMER);
        return;
    }
    sse_refs_take(&s->env->refs, ev); /* the caller holds one: the inbox mail's */
    push(s, ev, head, CHARGE_LIVE);
    push_trailer(s, ev->seq, ev->end, false);
    touch(s, s->env->now_ms);
    if (ev->end)
        end_subject(s, link->index);
}

/*
 * An empty queue gives back what a burst made it grow: an idle stream
 * keeps the first ring (ITEMS_KEEP slots) and no own bytes, whatever it
 * once held. Steady traffic of one event at a time never grows past the
 * first ring, so this frees nothing on the usual path.
 */
static void shrink_drained(struct stream *s)
{
    if (s->cap > ITEMS_KEEP) {
        mem_note_released(s->cap * sizeof(*s->items));
        free(s->items);
        s->items = NULL;
        s->cap = s->first = 0;
    }
    if (s->own.cap > OWN_KEEP && buf_pending(&s->own) == 0) {
        mem_note_released(s->own.cap);
        buf_dispose(&s->own);
    }
}

size_t stream_pending(struct stream *s, size_t max, bool *eof)
{
    size_t n = s->queued < max ? s->queued : max;
    *eof = s->end != STREAM_END_NONE && n == s->queued;
    s->promised = n;
    return n;
}

void stream_copy(struct stream *s, uint8_t *dst, size_t n)
{
    s->promised = s->promised > n ? s->promised - n : 0;
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
            s->bytes_sent += chunk;
            metrics_add(&s->env->stats.bytes_written, (int64_t)chunk);
        }
        if (s->off == len) {
            if (it->ev) {
                if (s->events_sent++ == 0)
                    metrics_observe(&s->env->stats.first_event, stream_now_s() - s->opened_s);
                metrics_add(&s->env->stats.delivered, 1);
            }
            release(s, it);
            s->first = (s->first + 1) & (s->cap - 1);
            s->count--;
            s->off = 0;
        }
    }
    if (s->count == 0)
        shrink_drained(s);
}

size_t stream_queued(const struct stream *s) { return s->queued; }
size_t stream_dispatchable(const struct stream *s) { return s->dispatchable; }
unsigned stream_retry_ms(const struct stream *s) { return s->retry_ms; }

void stream_env_init(struct stream_env *env, struct fanout *fanout, int64_t heartbeat_ms,
                     size_t budget_max)
{
    memset(env, 0, sizeof(*env));
    env->fanout = fanout;
    list_init(&env->idle);
    list_init(&env->expiring);
    env->heartbeat_ms = heartbeat_ms;
    env->budget.max = budget_max;
    env->now_ms = stream_now_ms();
}

void stream_env_tick(struct stream_env *env, int64_t now_ms)
{
    static const char beat[] = ":\n\n";
    env->now_ms = now_ms;
    /* Tokens end at different times; the list is short-lived and walked whole. */
    for (struct list *n = env->expiring.next, *next; n != &env->expiring; n = next) {
        next = n->next;
        struct stream *s = container_of(n, struct stream, expiry_node);
        if (now_ms < s->expires_ms)
            continue;
        if (s->renew && s->expire_end == STREAM_END_TOKEN_EXPIRED) {
            stream_set_expiry(s, 0, STREAM_END_TOKEN_EXPIRED);
            s->renew(s->wake_ctx);
        } else {
            stream_end(s, s->expire_end);
        }
    }
    while (!list_empty(&env->idle)) {
        struct stream *s = container_of(env->idle.next, struct stream, idle_node);
        if (now_ms - s->active_ms < env->heartbeat_ms)
            break;
        /* A stream with bytes still queued is not idle, only blocked. */
        if (s->count == 0)
            push_own(s, beat, sizeof(beat) - 1);
        touch(s, now_ms);
    }
}

size_t stream_env_end_some(struct stream_env *env, size_t n, enum stream_end why,
                           unsigned retry_min_ms, unsigned retry_max_ms)
{
    unsigned spread = retry_max_ms > retry_min_ms ? retry_max_ms - retry_min_ms : 0;
    /* stream_end() unlinks the stream from env->idle, so the head moves on. */
    for (size_t i = 0; i < n && !list_empty(&env->idle); i++) {
        struct stream *s = container_of(env->idle.next, struct stream, idle_node);
        unsigned retry = retry_min_ms + (spread ? (unsigned)(next_random() % (spread + 1u)) : 0);
        stream_end_retry(s, why, retry ? retry : 1);
    }
    return stream_env_open(env);
}

void stream_env_flush(struct stream_env *env) { sse_refs_flush(&env->refs); }

size_t stream_env_open(const struct stream_env *env)
{
    size_t n = 0;
    for (const struct list *l = env->idle.next; l != &env->idle; l = l->next)
        n++;
    return n;
}
