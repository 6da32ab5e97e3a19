/*
 * bus_replay: replay jobs for resumes that history cannot serve (part of
 * the bus, see bus.c and bus_int.h).
 *
 * A replay job fetches from the resume position with consumers of its
 * own, filtered on the pattern and read synchronously on its replay
 * thread, then, under the subscription lock, hands each waiting request
 * the fetched events after its position plus history's newer ones.
 * Events delivered live after that hand-off are newer, or duplicates the
 * stream drops by sequence.
 *
 * What is trusted where. A filtered push consumer can lose messages
 * silently (nats-server 2.9.10 skips some under a burst while reporting
 * consecutive consumer sequences and nothing pending; see bus_js.c), so:
 * - Above history_lost() (the floor, or the newest event history
 *   evicted) every event comes from history, which the unfiltered,
 *   gap-checked live feed filled; fetched ones up there are dropped. The
 *   floor is at or below the stream's end when any replay consumer is
 *   made, so what is published during a replay is taken from history, or,
 *   if history evicted it meanwhile, counted by a later consumer.
 * - At or below it, a consumer is trusted only for the matches stored
 *   when it was made, which it counts (delivered + pending in its info).
 *   Once it has delivered that many, history must hold the rest; if
 *   history evicted past them meanwhile, another consumer starts from
 *   there (a burst longer than history). A consumer that says nothing is
 *   pending short of its count lost messages (a skip, or the stream's
 *   limits or a purge removing them): it is made again once from where
 *   it began, and if that one is short too the job fails with GONE, a
 *   reset (history-expired) for every waiter, counted in
 *   sluice_jetstream_replay_losses_total — retrying cannot bring them
 *   back, so it is not ended like other failures for the client to
 *   resume again. What a consumer fetched short of its count (it failed,
 *   lost a consumer sequence or went silent) is dropped, and a new one
 *   starts where that one began. Not seen: a skipped stored message whose
 *   place in the count a message published after the consumer was made
 *   took (a skip of stored messages was never observed).
 */
#include "sluice/bus.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/err.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/mem.h"
#include "sluice/subject.h"

#include "bus_int.h"

/* What a job found. */
struct bus_fetch {
    enum bus_status status;
    uint64_t first, last;      /* the stream's, when the job began */
    struct sse_event **events; /* fetched, oldest first */
    size_t nevents;
    uint64_t upto;             /* every match up to here is fetched, or there is none */
    bool positioned;           /* BUS_FROM_TIME: what is wanted starts after upto */
    bool lost_once;            /* a consumer came up short of its count already */
};

/* The index of the first fetched event that waiter r asked for. */
static size_t first_wanted(const struct bus_replay *r, struct sse_event *const *events, size_t n)
{
    size_t lo = 0, hi = n;
    switch (r->start.from) {
    case BUS_FROM_ID: /* binary search: sequences increase */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (events[mid]->seq <= r->start.after)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    case BUS_FROM_TIME: /* linear: stored times may step back */
        while (lo < n && events[lo]->time_ns < r->start.since_ns)
            lo++;
        return lo;
    case BUS_FROM_EARLIEST:
    case BUS_FROM_NOW: break;
    }
    return 0;
}

/* Takes job's waiters; no request joins it from now on. */
static struct bus_replay *take_waiters(struct bus *bus, struct bus_job *job)
{
    pthread_mutex_lock(&bus->lock);
    struct bus_replay *ws = job->waiters;
    job->waiters = NULL;
    job->closed = true;
    pthread_mutex_unlock(&bus->lock);
    return ws;
}

/* Gives waiters back to job, which takes joins again: it has more to fetch. */
static void return_waiters(struct bus *bus, struct bus_job *job, struct bus_replay *ws)
{
    pthread_mutex_lock(&bus->lock);
    while (ws) {
        struct bus_replay *r = ws;
        ws = r->next;
        r->next = job->waiters;
        job->waiters = r;
    }
    job->closed = false;
    pthread_mutex_unlock(&bus->lock);
}

/*
 * Completes and posts every answer; under the subscription's lock, so
 * that live events not in an answer reach the worker after it. batch:
 * the fetched events, shared by every answer; hist: history's events
 * above the last of them (both for status OK, else NULL). Each waiter
 * gets the events of both after its own position.
 */
static void post_answers(struct bus *bus, struct bus_sub *bs, struct bus_replay *ws,
                         const struct bus_fetch *f, struct bus_batch *batch,
                         struct sse_event **hist, size_t nhist)
{
    uint64_t last = history_last(bs->history);
    if (f->upto > last)
        last = f->upto;
    while (ws) {
        struct bus_replay *r = ws;
        ws = r->next;
        r->next = NULL;
        struct bus_resume *out = &r->result;
        out->status = f->status;
        out->last = last;
        out->end = history_end(bs->history);
        out->before = r->start.from == BUS_FROM_ID ? r->start.after : last;
        if (f->status == BUS_RESUME_OK && r->start.from == BUS_FROM_ID) {
            if (f->first > 1 && r->start.after + 1 < f->first)
                out->status = BUS_RESUME_GONE;
            else if (r->start.after > last)
                out->status = BUS_RESUME_UNKNOWN;
        }
        if (out->status == BUS_RESUME_OK) {
            out->batch_from = first_wanted(r, batch->events, batch->n);
            if (out->batch_from < batch->n) {
                atomic_fetch_add(&batch->refs, 1);
                out->batch = batch;
            }
            /* Once a fetched event is wanted, so is every newer one (since= times step back). */
            size_t from = out->batch ? 0 : first_wanted(r, hist, nhist);
            if (from < nhist) {
                out->events = mem_alloc((nhist - from) * sizeof(*out->events));
                for (size_t i = from; i < nhist; i++)
                    out->events[out->nevents++] = sse_event_ref(hist[i]);
            }
            /* Start just before the first event, so the start id resumes all of them. */
            if (r->start.from != BUS_FROM_ID) {
                const struct sse_event *first = out->batch ? batch->events[out->batch_from]
                                                : out->nevents ? out->events[0] : NULL;
                out->before = first ? first->seq - 1 : last;
            }
        }
        bus->p.post(bus->p.worker_ctxs[r->worker],
                    (struct bus_mail){.kind = BUS_MAIL_REPLAY, .replay = r});
    }
}

/* Answers every waiter of job with f's failure. */
static void fail_waiters(struct bus *bus, struct bus_job *job, const struct bus_fetch *f)
{
    struct bus_replay *ws = take_waiters(bus, job);
    pthread_mutex_lock(&job->bs->lock);
    post_answers(bus, job->bs, ws, f, NULL, NULL, 0);
    pthread_mutex_unlock(&job->bs->lock);
}

/*
 * Answers job's waiters if history holds every event above f->upto: the
 * check and the answers under one hold of the subscription's lock, so
 * that nothing is evicted in between. Above history_lost() the events
 * come from history, which the complete live feed filled, not from our
 * filtered consumer (see the top); the fetched ones at or below it move
 * into one batch that every answer shares.
 */
static bool try_finish(struct bus *bus, struct bus_job *job, struct bus_fetch *f)
{
    struct bus_sub *bs = job->bs;
    struct bus_replay *ws = take_waiters(bus, job);
    struct sse_event **hist = NULL;
    size_t nhist = 0;
    pthread_mutex_lock(&bs->lock);
    /* Caught up after the live consumer began: nothing matched up to its floor either. */
    if (f->upto < history_floor(bs->history))
        f->upto = history_floor(bs->history);
    uint64_t held = history_lost(bs->history);
    bool done = f->upto >= held;
    struct bus_batch *batch = NULL;
    if (done) {
        history_since(bs->history, held, &hist, &nhist); /* OK: held is at or above lost */
        while (f->nevents && f->events[f->nevents - 1]->seq > held)
            sse_event_unref(f->events[--f->nevents]);
        f->status = BUS_RESUME_OK;
        batch = mem_alloc(sizeof(*batch));
        atomic_init(&batch->refs, 1);
        batch->events = f->events;
        batch->n = f->nevents;
        f->events = NULL;
        f->nevents = 0;
        post_answers(bus, bs, ws, f, batch, hist, nhist);
    }
    pthread_mutex_unlock(&bs->lock);
    bus_batch_unref(batch);
    if (!done)
        return_waiters(bus, job, ws);
    for (size_t i = 0; i < nhist; i++)
        sse_event_unref(hist[i]);
    free(hist);
    return done;
}

/* The next message of a replay's inbox, waiting up to BUS_REPLAY_NEXT_MS; quits on bus_free(). */
static natsStatus next_msg(struct bus *bus, natsSubscription *sub, natsMsg **msg)
{
    int64_t give_up = bus_now_ms() + BUS_REPLAY_NEXT_MS;
    for (;;) {
        if (bus_stopping(bus))
            return NATS_CONNECTION_CLOSED;
        int64_t left = give_up - bus_now_ms();
        if (left <= 0)
            return NATS_TIMEOUT;
        natsStatus s = natsSubscription_NextMsg(msg, sub, left < 250 ? left : 250);
        if (s != NATS_TIMEOUT)
            return s;
    }
}

/* Drops what f fetched after its first `had` events; f stands at `from` again. */
static void drop_fetched(struct bus_fetch *f, size_t had, uint64_t from)
{
    while (f->nevents > had)
        sse_event_unref(f->events[--f->nevents]);
    f->upto = from;
}

/*
 * Test hook (SLUICE_TEST_REPLAY_DROP=N): the Nth message of every replay
 * consumer is lost the way nats-server's skip loses one: never seen, the
 * next message taking its consumer sequence (*skew).
 */
static bool test_dropped(const struct bus *bus, const jsMsgMetaData *meta, uint64_t *skew)
{
#ifdef SLUICE_TEST_HOOKS
    if (bus->test_replay_drop && meta->Sequence.Consumer == bus->test_replay_drop) {
        *skew = 1;
        return true;
    }
#else
    (void)bus;
    (void)meta;
    (void)skew;
#endif
    return false;
}

/*
 * One consumer of ours from where f stands, trusted for the matches
 * stored when it was made, which it counts (see the top). Once it has
 * delivered that many, the waiters are answered if history holds the
 * rest (NATS_OK, f->status OK); if history moved past them meanwhile,
 * NATS_OK with f->status still FAILED: the caller makes another from
 * there. One that says nothing is pending short of its count lost
 * messages: NATS_OK, the first time to be made again from where it
 * began, then f->status GONE. Too much: NATS_OK, f->status LIMIT.
 * Another status: the consumer failed, skipped a consumer sequence
 * (NATS_MISMATCH) or went silent. Whatever a consumer fetched short of
 * its count is dropped: a skip in it could not be seen. Not cnats's
 * ordered consumer: that one remakes itself on a new thread per reset.
 */
static natsStatus consume(struct bus *bus, struct bus_job *job, struct bus_fetch *f,
                          int64_t give_up, jsErrCode *jerr)
{
    struct bus_sub *bs = job->bs;
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    jsConsumerInfo *ci = NULL;
    uint64_t from = f->upto, stored = 0, cseq = 0, skew = 0;
    size_t had = f->nevents;
    bool lost = false;
    natsStatus s = natsInbox_Create(&inbox);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&sub, bus->nc, inbox);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(sub, -1, -1);
    if (s != NATS_OK)
        goto out;
    jsConsumerConfig cc;
    bus_consumer_config(&cc, bs->pattern, inbox);
    if (job->start.from == BUS_FROM_ID || f->nevents > 0 || f->positioned) {
        cc.DeliverPolicy = js_DeliverByStartSequence;
        cc.OptStartSeq = f->upto + 1;
    } else if (job->start.from == BUS_FROM_TIME) {
        cc.DeliverPolicy = js_DeliverByStartTime;
        cc.OptStartTime = job->start.since_ns;
    } else {
        cc.DeliverPolicy = js_DeliverAll;
    }
    s = js_AddConsumer(&ci, bus->js, bs->stream, &cc, NULL, jerr);
    if (s != NATS_OK)
        goto out;
    atomic_fetch_add(&bus->js_replaying, 1);
    /* What it had sent when it answered, and what was pending then. */
    stored = ci->Delivered.Consumer + ci->NumPending;
    log_debug("jetstream: replay of %s: consumer %s after %llu, %llu stored", bs->pattern,
              ci->Name, (unsigned long long)from, (unsigned long long)stored);
    if (f->nevents + stored > bus->p.replay_max) {
        f->status = BUS_RESUME_LIMIT;
        goto out;
    }
    /* No match from the start to the stream's end when the consumer was made. */
    if (stored == 0 && f->last > f->upto)
        f->upto = f->last;
    while (cseq < stored || !try_finish(bus, job, f)) {
        if (cseq >= stored)
            goto out; /* history evicted past it meanwhile */
        natsMsg *msg = NULL;
        s = bus_now_ms() < give_up ? next_msg(bus, sub, &msg) : NATS_TIMEOUT;
        if (s != NATS_OK)
            goto out;
        uint64_t said = 0;
        jsMsgMetaData *meta = NULL;
        if (bus_js_status(msg, &said)) {
            if (said > cseq + skew)
                s = NATS_MISMATCH;
        } else if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
            if (test_dropped(bus, meta, &skew)) {
                /* as if never sent */
            } else if (meta->Sequence.Consumer - skew != ++cseq) {
                s = NATS_MISMATCH;
            } else {
                uint64_t seq = meta->Sequence.Stream;
                if (seq > f->upto) {
                    f->events = mem_realloc(f->events, (f->nevents + 1) * sizeof(*f->events));
                    f->events[f->nevents++] = bus_event_of(bs, msg, seq, meta->Timestamp);
                    atomic_fetch_add(&bus->replayed_events, 1);
                    f->upto = seq;
                }
                lost = meta->NumPending == 0 && cseq < stored;
            }
            jsMsgMetaData_Destroy(meta);
        }
        natsMsg_Destroy(msg);
        if (s != NATS_OK || lost)
            goto out;
        if (f->nevents > bus->p.replay_max) {
            f->status = BUS_RESUME_LIMIT;
            goto out;
        }
    }
out:
    bus_end_sub(bus, sub);
    if (ci) {
        atomic_fetch_sub(&bus->js_replaying, 1);
        pthread_mutex_lock(&bus->lock);
        bus_js_forget(bus, bs->stream, mem_strdup(ci->Name));
        pthread_mutex_unlock(&bus->lock);
    }
    jsConsumerInfo_Destroy(ci);
    natsInbox_Destroy(inbox);
    if (f->status == BUS_RESUME_FAILED && cseq < stored)
        drop_fetched(f, had, from);
    if (lost) {
        if (!f->lost_once) {
            f->lost_once = true;
            log_info("jetstream: replay of %s: %llu of the %llu messages stored after %llu "
                     "came, then nothing was pending; trying once more",
                     bs->pattern, (unsigned long long)cseq, (unsigned long long)stored,
                     (unsigned long long)from);
        } else {
            f->status = BUS_RESUME_GONE;
            atomic_fetch_add(&bus->replay_losses, 1);
            log_warn("jetstream: replay of %s lost messages: twice only %llu of the %llu stored "
                     "after %llu came (removed by the stream's limits or a purge, or skipped by "
                     "the server); its streams get event: reset (history-expired)",
                     bs->pattern, (unsigned long long)cseq, (unsigned long long)stored,
                     (unsigned long long)from);
        }
    }
    return f->status == BUS_RESUME_LIMIT ? NATS_OK : s;
}

/*
 * The first sequence of stream in [first, last] stored at or after
 * since_ns (last + 1: none), by binary search over stored times (a
 * server assigns them in order). Not nats-server's own start-by-time:
 * 2.9's GetSeqFromTime skips any message whose lookup fails (its cache
 * under load), seen as a since= replay that got only the newest event.
 * NATS_NOT_FOUND: a sequence in the way was deleted; the caller falls
 * back to the server's.
 */
static natsStatus seq_from_time(struct bus *bus, const char *stream, int64_t since_ns,
                                uint64_t first, uint64_t last, uint64_t *out, jsErrCode *jerr)
{
    uint64_t lo = first ? first : 1, hi = last + 1;
    while (lo < hi && !bus_stopping(bus)) {
        uint64_t mid = lo + (hi - lo) / 2;
        natsMsg *msg = NULL;
        natsStatus s = js_GetMsg(&msg, bus->js, stream, mid, NULL, jerr);
        if (s != NATS_OK)
            return *jerr == JSNoMessageFoundErr ? NATS_NOT_FOUND : s;
        if (natsMsg_GetTime(msg) >= since_ns)
            hi = mid;
        else
            lo = mid + 1;
        natsMsg_Destroy(msg);
    }
    *out = lo;
    return bus_stopping(bus) ? NATS_CONNECTION_CLOSED : NATS_OK;
}

/*
 * A resume by id from a little past the stream's end as JetStream tells
 * it now: another gateway may have delivered messages that a stream
 * leader elected meanwhile has not applied yet (test_chaos once saw a
 * client come back at 3517 to a gateway whose leader said 3512 for a
 * while; the reset that followed sent it 3513-3517 again). So the end is
 * asked again for up to BUS_REPLAY_AHEAD_MS before the id is called
 * unknown (a reset). An id far past the end, or on a subject that has
 * ended, is unknown at once. Only waiters at or past this job's start
 * join it while it runs, so older resumes are not held up by it.
 */
static natsStatus wait_for_end(struct bus *bus, const struct bus_job *job, struct bus_fetch *f,
                               jsErrCode *jerr)
{
    struct bus_sub *bs = job->bs;
    uint64_t after = job->start.after;
    int64_t until = bus_now_ms() + BUS_REPLAY_AHEAD_MS;
    natsStatus s = NATS_OK;
    while (s == NATS_OK && after > f->last && after - f->last <= BUS_REPLAY_AHEAD_MAX &&
           bus_now_ms() < until && !bus_stopping(bus)) {
        pthread_mutex_lock(&bs->lock);
        bool ended = history_end(bs->history) != 0;
        pthread_mutex_unlock(&bs->lock);
        if (ended)
            break;
        bus_pause_ms(100);
        s = bus_stream_bounds(bus, bs->stream, &f->first, &f->last, jerr);
    }
    return s;
}

/*
 * Fetches what job asks from JetStream until history holds the rest, and
 * answers (see the top). A consumer that fails (a NATS node or the
 * stream's leader going away; right after a node dies, nats-server may
 * still place a new consumer on it) is made again from where it stopped,
 * for up to BUS_REPLAY_BUDGET_MS. On failure f->status says why and
 * nobody is answered yet.
 */
static void fetch(struct bus *bus, struct bus_job *job, struct bus_fetch *f)
{
    struct bus_sub *bs = job->bs;
    char why[256];
    f->status = BUS_RESUME_FAILED;
    f->upto = job->start.from == BUS_FROM_ID ? job->start.after : 0;
    bool have_info = false;
    int64_t give_up = bus_now_ms() + BUS_REPLAY_BUDGET_MS;
    for (;;) {
        jsErrCode jerr = 0;
        natsStatus s = NATS_OK;
        if (!have_info) {
            s = bus_stream_bounds(bus, bs->stream, &f->first, &f->last, &jerr);
            uint64_t seq = 0;
            if (s == NATS_OK && job->start.from == BUS_FROM_TIME) {
                s = seq_from_time(bus, bs->stream, job->start.since_ns, f->first, f->last, &seq,
                                  &jerr);
                if (s == NATS_OK) {
                    f->upto = seq - 1;
                    f->positioned = true;
                } else if (s == NATS_NOT_FOUND) {
                    log_debug("jetstream: replay of %s: a hole in the stream; starting by time",
                              bs->pattern);
                    s = NATS_OK;
                }
            }
            if (s == NATS_OK && job->start.from == BUS_FROM_ID)
                s = wait_for_end(bus, job, f, &jerr);
            if (s == NATS_OK) {
                have_info = true;
                if (job->start.from == BUS_FROM_ID && f->upto >= f->last) {
                    /* Nothing stored after it: history has the rest, or it is an unknown id. */
                    f->upto = f->last;
                    try_finish(bus, job, f); /* unanswered: history evicted meanwhile, FAILED */
                    return;
                }
            }
        }
        if (s == NATS_OK)
            s = consume(bus, job, f, give_up, &jerr);
        if (s == NATS_OK && f->status != BUS_RESUME_FAILED)
            return; /* answered, or LIMIT or GONE for run_job to answer */
        /* History moved past that consumer's messages, or it lost some: another, at once. */
        if (s == NATS_OK && bus_now_ms() < give_up && !bus_stopping(bus))
            continue;
        if (s == NATS_OK)
            s = NATS_TIMEOUT;
        if (s == NATS_MISMATCH)
            snprintf(why, sizeof(why), "%s: a message was lost", bs->stream);
        else
            bus_js_why(why, sizeof(why), bs->stream, s, jerr);
        if (bus_now_ms() >= give_up || bus_stopping(bus)) {
            log_warn("jetstream: replay of %s failed: %s", bs->pattern, why);
            return;
        }
        log_info("jetstream: replay of %s: %s; trying again after sequence %llu", bs->pattern,
                 why, (unsigned long long)f->upto);
        bus_pause_ms(BUS_JS_PAUSE_MS);
    }
}

/* Runs one job and answers its waiters, whatever happens. */
static void run_job(struct bus *bus, struct bus_job *job)
{
    struct bus_fetch f = {0};
    atomic_fetch_add(&bus->replays, 1);
    fetch(bus, job, &f);
    if (f.status != BUS_RESUME_OK) { /* not answered: a failure, for all of them */
        atomic_fetch_add(&bus->replay_failures, 1);
        fail_waiters(bus, job, &f);
    }
    pthread_mutex_lock(&bus->lock);
    list_remove(&job->node);
    pthread_mutex_unlock(&bus->lock);
    for (size_t i = 0; i < f.nevents; i++)
        sse_event_unref(f.events[i]);
    free(f.events);
    bus_sub_unref(job->bs);
    free(job);
    atomic_fetch_sub(&bus->replays_active, 1);
}

void *bus_run_replays(void *arg)
{
    struct bus *bus = arg;
    pthread_mutex_lock(&bus->lock);
    while (!bus->stopping) {
        struct bus_job *job = NULL;
        for (struct list *n = bus->jobs.next; n != &bus->jobs && !job; n = n->next) {
            struct bus_job *j = container_of(n, struct bus_job, node);
            if (!j->running)
                job = j;
        }
        if (!job) {
            pthread_cond_wait(&bus->wake_replays, &bus->lock);
            continue;
        }
        job->running = true;
        pthread_mutex_unlock(&bus->lock);
        run_job(bus, job);
        pthread_mutex_lock(&bus->lock);
    }
    pthread_mutex_unlock(&bus->lock);
    return NULL;
}

/*
 * Whether a request starting at `start` can wait on job: same kind of
 * start, and for ids a nearby position that the job covers (or will,
 * once lowered before it runs). Under bus->lock.
 */
static bool joinable(const struct bus *bus, const struct bus_job *job,
                     const struct bus_start *start)
{
    if (job->start.from != start->from)
        return false;
    switch (start->from) {
    case BUS_FROM_ID: {
        uint64_t a = job->start.after, b = start->after;
        uint64_t gap = a > b ? a - b : b - a;
        return gap <= bus->p.replay_max && (!job->running || b >= a);
    }
    case BUS_FROM_TIME:
        return !job->running || start->since_ns >= job->start.since_ns;
    case BUS_FROM_EARLIEST:
    case BUS_FROM_NOW: break;
    }
    return true;
}

/* Queues r on a job for bs: a joinable one, or a new one. Under bus->lock. */
void bus_add_waiter(struct bus *bus, struct bus_sub *bs, struct bus_replay *r)
{
    struct bus_job *job = NULL;
    for (struct list *n = bus->jobs.next; n != &bus->jobs && !job; n = n->next) {
        struct bus_job *j = container_of(n, struct bus_job, node);
        if (j->bs == bs && !j->closed && joinable(bus, j, &r->start))
            job = j;
    }
    if (!job) {
        job = mem_calloc(1, sizeof(*job));
        job->bs = bs;
        atomic_fetch_add(&bs->refs, 1);
        job->start = r->start;
        list_insert_tail(&bus->jobs, &job->node);
        atomic_fetch_add(&bus->replays_active, 1);
        pthread_cond_signal(&bus->wake_replays);
    } else if (!job->running) {
        if (r->start.after < job->start.after)
            job->start.after = r->start.after;
        if (r->start.since_ns < job->start.since_ns)
            job->start.since_ns = r->start.since_ns;
    }
    r->next = job->waiters;
    job->waiters = r;
    atomic_fetch_add(&bus->replay_requests, 1);
}
