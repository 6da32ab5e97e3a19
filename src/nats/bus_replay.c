/*
 * bus_replay: replay jobs for resumes that history cannot serve (part of
 * the bus, see bus.c and bus_int.h).
 *
 * A replay job fetches from the resume position with a consumer of its
 * own, read synchronously on its replay thread (the same checks: a lost
 * message or silence makes a new consumer from the last one fetched),
 * until a message says nothing more is pending (so it has everything up
 * to at least the floor) and history has evicted nothing above the last
 * message fetched; then, under the subscription lock, it hands each
 * waiting request the fetched events after its position plus history's
 * newer ones. Events delivered live after that hand-off are newer, or
 * duplicates the stream drops by sequence.
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
 * above f->upto (both for status OK, else NULL).
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
            if (nhist) {
                out->events = mem_alloc(nhist * sizeof(*out->events));
                for (size_t i = 0; i < nhist; i++)
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
 * Answers job's waiters if history has every event above f->upto: the
 * check and the answers under one hold of the subscription's lock, so
 * that nothing is evicted in between. The fetched events move into one
 * batch that every answer shares.
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
    bool done = history_after(bs->history, f->upto, &hist, &nhist);
    struct bus_batch *batch = NULL;
    if (done) {
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

/*
 * One consumer of ours from where f stands, read until history holds the
 * rest and the waiters are answered (NATS_OK, f->status OK), or there is
 * too much (NATS_OK, f->status LIMIT). Another status: the consumer
 * failed, lost a message (NATS_MISMATCH) or went silent; f keeps what was
 * fetched, and a new call goes on from there. Not cnats's ordered
 * consumer: that one remakes itself on a new thread per reset.
 */
static natsStatus consume(struct bus *bus, struct bus_job *job, struct bus_fetch *f,
                          int64_t give_up, jsErrCode *jerr)
{
    struct bus_sub *bs = job->bs;
    natsInbox *inbox = NULL;
    natsSubscription *sub = NULL;
    jsConsumerInfo *ci = NULL;
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
    log_debug("jetstream: replay of %s: consumer %s after %llu, %llu pending", bs->pattern,
              ci->Name, (unsigned long long)ci->Delivered.Stream,
              (unsigned long long)ci->NumPending);
    bool caught_up = ci->NumPending == 0;
    uint64_t cseq = 0;
    if (f->nevents + ci->NumPending > bus->p.replay_max) {
        f->status = BUS_RESUME_LIMIT;
        goto out;
    }
    /* No match from the start to the stream's end when the consumer was made. */
    if (caught_up && f->last > f->upto)
        f->upto = f->last;
    while (!caught_up || !try_finish(bus, job, f)) {
        natsMsg *msg = NULL;
        s = bus_now_ms() < give_up ? next_msg(bus, sub, &msg) : NATS_TIMEOUT;
        if (s != NATS_OK)
            goto out;
        uint64_t said = 0;
        jsMsgMetaData *meta = NULL;
        if (bus_js_status(msg, &said)) {
            if (said > cseq)
                s = NATS_MISMATCH;
        } else if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
            if (meta->Sequence.Consumer != ++cseq) {
                s = NATS_MISMATCH;
            } else {
                uint64_t seq = meta->Sequence.Stream;
                if (seq > f->upto) {
                    f->events = mem_realloc(f->events, (f->nevents + 1) * sizeof(*f->events));
                    f->events[f->nevents++] = bus_event_of(bs, msg, seq, meta->Timestamp);
                    atomic_fetch_add(&bus->replayed_events, 1);
                    f->upto = seq;
                }
                caught_up = meta->NumPending == 0;
            }
            jsMsgMetaData_Destroy(meta);
        }
        natsMsg_Destroy(msg);
        if (s != NATS_OK)
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
        if (s == NATS_OK && (s = consume(bus, job, f, give_up, &jerr)) == NATS_OK)
            return;
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
