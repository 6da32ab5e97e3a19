/*
 * bus: NATS connection and shared subscriptions (see bus.h).
 *
 * Locking: `lock` guards the pattern table; each subscription has its own
 * lock for its counts, sequence and history, so message callbacks of
 * different subjects never contend. Order: table lock, then subscription
 * lock. A message is numbered, encoded, recorded in history and its
 * targets noted under the subscription lock, all as one step: a stream
 * that joins takes its history snapshot under the same lock, so every
 * event is either in its snapshot or delivered to its worker afterwards
 * (or both; streams drop what they have already seen by sequence).
 *
 * Sequence numbers come from one process-wide counter that starts at the
 * wall clock in microseconds. They increase within a subscription, and a
 * restarted gateway starts above the ids its predecessor handed out, so
 * an old id reads as "older than history" and is answered with a reset.
 *
 * Confirmation: a NATS SUB is only a buffered line until nats-server has
 * read it; a message published before then is not delivered. A flusher
 * thread batches new subscriptions, does one PING round trip
 * (natsConnection_FlushTimeout) for the whole batch and then notifies the
 * interested workers, which answer their waiting requests. The round trip
 * never runs on a worker thread.
 *
 * Lifetime: a subscription's record is reference-counted: the table
 * holds one reference, each of its NATS subscriptions one (dropped in
 * cnats's on-complete callback, which runs after its last message
 * callback has returned; a JetStream pattern's old inbox may still be
 * completing when the next is made), and so does every replay job, and
 * the flusher or the JetStream thread while it works on it. A
 * JetStream-backed pattern is confirmed by the JetStream thread once its
 * consumer exists, not by the flusher.
 *
 * JetStream: the live consumer of a JetStream-backed pattern is ours, not
 * cnats's ordered consumer (which remakes itself on a new thread per
 * reset: an outage with 10,000 patterns made 10,000 threads). It is an
 * ephemeral push consumer (no acks, idle heartbeat, an inactivity
 * threshold so that nats-server deletes one we abandon) delivering to a
 * fresh inbox that a plain subscription reads on cnats's delivery pool.
 * Only the current inbox's messages count (bs->live). A consumer sequence
 * that skips, a heartbeat that says more was sent, or silence past
 * BUS_JS_STALL_MS (BUS_JS_REJOIN_MS after a NATS reconnect: a restarted
 * server restores consumers, so they are not remade blindly)
 * mean the consumer is remade on a new inbox after the last stream
 * sequence recorded; redeliveries at or below it are dropped. The first consumer of a pattern starts at the
 * stream's end, the floor: history holds every matching event above it.
 *
 * One JetStream thread makes, remakes and deletes every consumer, one API
 * call at a time, from a FIFO queue in which a pattern appears once
 * (coalesced): no thread per consumer or per reset, and a call that fails
 * makes every call pause (growing to BUS_JS_PAUSE_MAX_MS), so an outage
 * costs a call per pause. A new pattern not followed within
 * BUS_JS_FOLLOW_MS fails (BUS_NOTICE_FAILED); a followed one is remade
 * until it works. Patterns that hold a consumer are capped
 * (max_consumers less one per replay thread): at the cap, a new
 * JetStream-backed pattern takes the slot of the one unwatched longest,
 * and when every slot is watched, bus_subscribe() refuses it.
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
 *
 * Shutdown never waits for NATS beyond one API call per thread: consumers
 * are not deleted then (they expire on the server).
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

#define BUS_MAX_WORKERS 64
#define BUS_JS_WAIT_MS 1000            /* one JetStream API request */
#define BUS_JS_FOLLOW_MS 8000          /* a new pattern's first consumer gives up after */
#define BUS_JS_PAUSE_MS 250            /* first pause after a failed JetStream call */
#define BUS_JS_PAUSE_MAX_MS 2000       /* longest pause between failing calls */
#define BUS_JS_START_MS 15000          /* start-up waits this long for a stream's answer */
#define BUS_JS_HEARTBEAT_NS 1000000000 /* consumer idle heartbeat */
#define BUS_JS_STALL_MS 3500           /* no message nor heartbeat for this long: remade */
#define BUS_JS_CHECK_MS 1000           /* how often the JetStream thread looks for stalls */
#define BUS_JS_REJOIN_MS 2000          /* after a reconnect, silence this long is a stall */
#define BUS_JS_INACTIVE_NS 10000000000LL /* nats-server deletes a consumer nobody hears after */
#define BUS_JS_GONE_MAX 1024           /* abandoned consumers queued for deletion */
#define BUS_REPLAY_NEXT_MS 3000        /* a replay waits this long for its next message */
#define BUS_REPLAY_BUDGET_MS 30000     /* a replay gives up making new consumers after */

/* A JetStream stream whose subjects are served from it. */
struct bus_jstream {
    char *name;
    char **subjects;
    size_t nsubjects;
};

struct bus_sub {
    struct bus *bus;
    natsSubscription *ns; /* under bus->lock once made */
    atomic_uint refs;
    const char *stream;   /* JetStream stream (bus->streams'), or NULL for core NATS */
    bool dropped;         /* out of the table; under bus->lock */
    bool failed;          /* the JetStream consumer could not be made; under lock */
    struct list node;   /* bus->all; under bus->lock */
    struct list confirm_node; /* bus->unconfirmed or the flusher's batch; under bus->lock */
    struct list idle_node;    /* bus->idle while nobody watches; under bus->lock */
    bool confirmed;     /* under lock */
    uint64_t id;
    char *pattern;
    pthread_mutex_t lock;
    struct history *history; /* under lock */
    size_t interested;       /* workers with count > 0; under lock */
    int64_t idle_since_ms;   /* when interested fell to 0; under lock */
    /* JetStream (stream != NULL): the consumer feeding ns, see the top. */
    natsSubscription *live;  /* the inbox whose messages count (NULL: none); under lock */
    uint64_t cseq;           /* consumer sequence last taken from live; under lock */
    int64_t seen_ms;         /* last message or heartbeat on live; under lock */
    bool has_floor;          /* history's floor is set; under lock */
    struct list js_node;     /* bus->js_todo while queued; under bus->lock */
    bool js_queued;          /* in bus->js_todo; under bus->lock */
    bool js_slot;            /* counted in bus->js_live; under bus->lock */
    int64_t js_due_ms;       /* not tried before; under bus->lock */
    int64_t js_give_up_ms;   /* not confirmed by then: fails; under bus->lock */
    unsigned js_tries;       /* failures in a row; under bus->lock */
    char *consumer;          /* name of the consumer feeding ns; under bus->lock */
    unsigned counts[];       /* per worker; under lock */
};

/* One replay from JetStream, shared by the requests that joined it. */
struct bus_job {
    struct list node;           /* bus->jobs; under bus->lock */
    struct bus_sub *bs;         /* referenced */
    struct bus_start start;     /* lowered as earlier requests join, until it runs */
    bool running;
    bool closed;                /* answering: joins make a new job */
    struct bus_replay *waiters; /* under bus->lock */
};

/* A consumer we no longer listen to, deleted when NATS is idle (else it expires). */
struct bus_gone {
    struct list node;   /* bus->js_gone; under bus->lock */
    const char *stream; /* bus->streams' */
    char *name;
};

struct bus {
    natsConnection *nc;
    jsCtx *js;                   /* NULL without JetStream streams */
    struct bus_jstream *streams;
    size_t nstreams;
    struct list jobs;            /* bus_job.node, oldest first; under lock */
    pthread_cond_t wake_replays;
    pthread_t *replayers;
    size_t nreplayers;
    atomic_uint_fast64_t replays, replay_requests, replays_active, replayed_events;
    pthread_mutex_t lock;
    struct map *subs; /* pattern -> bus_sub; under lock */
    struct list all;  /* bus_sub.node; under lock */
    struct list unconfirmed; /* bus_sub.confirm_node; under lock */
    struct list idle;        /* bus_sub.idle_node, oldest first; under lock */
    pthread_cond_t wake_flusher;
    pthread_t flusher;
    bool flusher_running;
    /* The JetStream thread: makes, remakes and deletes every consumer, one at a time. */
    struct list js_todo;      /* bus_sub.js_node, oldest first; under lock */
    struct list js_gone;      /* bus_gone.node; under lock */
    size_t js_ngone;          /* under lock */
    pthread_cond_t wake_js;
    pthread_t jsthread;
    bool js_running;
    size_t js_live;           /* subscriptions holding a consumer slot; under lock */
    size_t js_live_max;       /* jetstream-max-consumers less the replays' */
    int64_t js_pause_ms;      /* after the last failure; under lock */
    int64_t js_resume_ms;     /* no JetStream call before; under lock */
    uint64_t js_failures;     /* consumers not made, in all; under lock */
    int64_t js_fail_logged_ms; /* under lock */
    atomic_uint_fast64_t js_replaying; /* replay consumers in use */
    atomic_uint_fast64_t js_resets, js_limit_hits;
    atomic_int_fast64_t js_limit_logged_ms;
    bool stopping;    /* under lock */
    uint64_t next_id;
    struct bus_params p;
    struct history_budget budget;
    atomic_uint_fast64_t seq; /* last sequence handed out */
    atomic_bool connected;
    atomic_uint_fast64_t reconnects;
    atomic_uint_fast64_t messages;
    atomic_uint_fast64_t reserved_dropped; /* reserved subjects a wildcard matched */
    atomic_uint_fast64_t subs_evicted; /* lingering subscriptions dropped early at max_subs */
    atomic_uint_fast64_t subs_refused; /* subscriptions refused at max_subs, nothing to evict */
    int64_t cap_logged_ms;             /* last max_subs log line; under lock */
    atomic_bool closing; /* bus_free() has begun: disconnects are expected */
};

/* bus_free() has begun: long JetStream retries give up. */
static bool stopping(struct bus *bus) { return atomic_load(&bus->closing); }

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sub_unref(struct bus_sub *bs)
{
    if (atomic_fetch_sub(&bs->refs, 1) != 1)
        return;
    history_free(bs->history);
    pthread_mutex_destroy(&bs->lock);
    free(bs->consumer);
    free(bs->pattern);
    free(bs);
}

static void on_sub_complete(void *closure) { sub_unref(closure); }

/* The message's Sse-Event header, or NULL. */
static const char *event_name(natsMsg *msg)
{
    const char *name = NULL;
    return natsMsgHeader_Get(msg, "Sse-Event", &name) == NATS_OK ? name : NULL;
}

/* msg encoded once as event seq of bs, stored at time_ns. */
static struct sse_event *event_of(const struct bus_sub *bs, natsMsg *msg, uint64_t seq,
                                  int64_t time_ns)
{
    struct sse_event *ev = sse_event_new(bs->id, seq, event_name(msg), natsMsg_GetData(msg),
                                         (size_t)natsMsg_GetDataLength(msg));
    ev->time_ns = time_ns;
    return ev;
}

/* Ends a NATS subscription of ours; NULL is a no-op. */
static void end_sub(natsSubscription *ns)
{
    if (!ns)
        return;
    natsSubscription_Unsubscribe(ns);
    natsSubscription_Destroy(ns);
}

/*
 * Numbers (core NATS: seq 0 takes the next process-wide number), encodes
 * and records one message of bs, noting the workers to hand it to; under
 * bs->lock. NULL: a JetStream sequence at or below history's newest (a
 * remade consumer's redelivery), dropped.
 */
static struct sse_event *push_locked(struct bus_sub *bs, natsMsg *msg, uint64_t seq,
                                     int64_t time_ns, size_t *targets, size_t *ntargets)
{
    struct bus *bus = bs->bus;
    atomic_fetch_add_explicit(&bus->messages, 1, memory_order_relaxed);
    if (seq == 0)
        seq = atomic_fetch_add_explicit(&bus->seq, 1, memory_order_relaxed) + 1;
    else if (seq <= history_last(bs->history))
        return NULL;
    struct sse_event *ev = event_of(bs, msg, seq, time_ns);
    history_push(bs->history, sse_event_ref(ev));
    *ntargets = 0;
    for (size_t w = 0; w < bus->p.nworkers; w++) {
        if (bs->counts[w])
            targets[(*ntargets)++] = w;
    }
    return ev;
}

/* Hands ev to its workers, outside the lock; drops the caller's reference. */
static void hand_out(struct bus *bus, struct sse_event *ev, const size_t *targets,
                     size_t ntargets)
{
    for (size_t i = 0; i < ntargets; i++)
        bus->p.deliver(bus->p.worker_ctxs[targets[i]], sse_event_ref(ev));
    sse_event_unref(ev);
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * NATS's '>' and '*' match "$JS.API.X" and "_INBOX.x" too: a client's ">"
 * must not see JetStream API traffic or anyone's replies. Only a pattern
 * that names a reserved token itself (allow-subjects) may carry them.
 */
static bool reserved_leak(struct bus_sub *bs, natsMsg *msg)
{
    if (!subject_reserved(natsMsg_GetSubject(msg)) || subject_reserved(bs->pattern))
        return false;
    atomic_fetch_add_explicit(&bs->bus->reserved_dropped, 1, memory_order_relaxed);
    return true;
}

static void on_nats_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus_sub *bs = closure;
    if (reserved_leak(bs, msg)) {
        natsMsg_Destroy(msg);
        return;
    }
    size_t targets[BUS_MAX_WORKERS], ntargets = 0;
    pthread_mutex_lock(&bs->lock);
    struct sse_event *ev = push_locked(bs, msg, 0, wall_ns(), targets, &ntargets);
    pthread_mutex_unlock(&bs->lock);
    if (ev)
        hand_out(bs->bus, ev, targets, ntargets);
    natsMsg_Destroy(msg);
}

static void js_lost(struct bus *bus, struct bus_sub *bs);

/*
 * A consumer's status message: true, and *last the newest consumer
 * sequence it says was sent. An idle heartbeat (100) carries it; any
 * other status (409: the consumer was deleted) sets it to UINT64_MAX, so
 * that the consumer counts as lost at once.
 */
static bool js_status(natsMsg *msg, uint64_t *last)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, "Status", &v) != NATS_OK)
        return false;
    if (!v || strcmp(v, "100") != 0) {
        *last = UINT64_MAX;
        return true;
    }
    *last = 0;
    if (natsMsgHeader_Get(msg, "Nats-Last-Consumer", &v) == NATS_OK && v)
        *last = strtoull(v, NULL, 10);
    return true;
}

/*
 * A message on a consumer's inbox. Only the current consumer's count
 * (bs->live); a consumer sequence that skips, or a heartbeat that says
 * more was sent than we got, means a message was lost: the consumer is
 * remade after the last one recorded, on the JetStream thread.
 */
static void on_js_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    struct bus_sub *bs = closure;
    size_t targets[BUS_MAX_WORKERS], ntargets = 0;
    struct sse_event *ev = NULL;
    jsMsgMetaData *meta = NULL;
    uint64_t said = 0;
    bool status = js_status(msg, &said);
    if (!status && natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg); /* not from a consumer: someone published on our inbox */
        return;
    }
    bool lost = false;
    pthread_mutex_lock(&bs->lock);
    if (ns == bs->live) {
        bs->seen_ms = now_ms();
        if (status) {
            lost = said > bs->cseq;
        } else if (meta->Sequence.Consumer != bs->cseq + 1) {
            lost = true;
        } else {
            bs->cseq = meta->Sequence.Consumer;
            uint64_t seq = meta->Sequence.Stream;
            /* A first consumer: nothing matched between where it began and its first message. */
            if (!bs->has_floor) {
                history_set_floor(bs->history, seq - 1);
                bs->has_floor = true;
            }
            /* Counted in the consumer's sequence, but never shown to a wildcard's streams. */
            if (!reserved_leak(bs, msg))
                ev = push_locked(bs, msg, seq, meta->Timestamp, targets, &ntargets);
        }
        if (lost)
            bs->live = NULL;
    }
    pthread_mutex_unlock(&bs->lock);
    if (ev)
        hand_out(bs->bus, ev, targets, ntargets);
    if (lost)
        js_lost(bs->bus, bs);
    if (meta)
        jsMsgMetaData_Destroy(meta);
    natsMsg_Destroy(msg);
}

static void js_drop(struct bus *bus, struct bus_sub *bs);

/* Removes bs from the table and ends its NATS subscription; under bus->lock. */
static void drop_sub(struct bus *bus, struct bus_sub *bs)
{
    map_del(bus->subs, bs->pattern, strlen(bs->pattern));
    list_remove(&bs->node);
    list_remove(&bs->confirm_node);
    list_remove(&bs->idle_node);
    bs->dropped = true;
    log_debug("nats: unsubscribed from %s", bs->pattern);
    end_sub(bs->ns);
    bs->ns = NULL;
    if (bs->stream)
        js_drop(bus, bs);
    sub_unref(bs); /* the table's */
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct bus *bus = closure;
    atomic_store(&bus->connected, false);
    if (!atomic_load(&bus->closing))
        log_warn("nats: disconnected; streams stay open, reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    struct bus *bus = closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof(url));
    atomic_store(&bus->connected, true);
    atomic_fetch_add(&bus->reconnects, 1);
    log_info("nats: reconnected to %s", url);
    /*
     * Consumers usually survive (a restarted nats-server restores them
     * from disk) and go on where they stopped; one that was lost falls
     * silent and one that sent into the void skips a sequence: both are
     * remade then. Remaking all of them here would double the consumers on
     * the server after every reconnect. A live one speaks within a
     * heartbeat: silence is judged BUS_JS_REJOIN_MS from now.
     */
    int64_t now = now_ms() - BUS_JS_STALL_MS + BUS_JS_REJOIN_MS;
    pthread_mutex_lock(&bus->lock);
    for (struct list *n = bus->all.next; n != &bus->all; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, node);
        if (!bs->stream)
            continue;
        pthread_mutex_lock(&bs->lock);
        bs->seen_ms = now;
        pthread_mutex_unlock(&bs->lock);
    }
    bus->js_resume_ms = 0;
    pthread_cond_signal(&bus->wake_js);
    pthread_mutex_unlock(&bus->lock);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    struct bus *bus = closure;
    atomic_store(&bus->connected, false);
    log_debug("nats: connection closed");
}

static void on_async_error(natsConnection *nc, natsSubscription *ns, natsStatus s, void *closure)
{
    (void)nc;
    (void)ns; /* may be freed already: cnats reports errors of closing subscriptions late */
    struct bus *bus = closure;
    if (!atomic_load(&bus->closing))
        log_warn("nats: asynchronous error: %s", natsStatus_GetText(s));
}

/* Sends the confirmation (or failure) notice to every worker interested in bs; under bus->lock. */
static void confirm(struct bus *bus, struct bus_sub *bs)
{
    list_remove(&bs->confirm_node);
    pthread_mutex_lock(&bs->lock);
    bs->confirmed = true;
    bs->failed = bs->stream && !bs->ns;
    uint64_t notice = bs->failed ? BUS_NOTICE_FAILED : BUS_NOTICE_READY;
    for (size_t w = 0; w < bus->p.nworkers; w++) {
        if (bs->counts[w])
            bus->p.deliver(bus->p.worker_ctxs[w], sse_event_new(bs->id, notice, NULL, NULL, 0));
    }
    pthread_mutex_unlock(&bs->lock);
}

/* "stream X: reason" for a failed JetStream call. */
static void js_why(char *out, size_t len, const char *what, natsStatus s, jsErrCode jerr)
{
    const char *text = nats_GetLastError(NULL);
    if (s == NATS_NO_RESPONDERS)
        text = "JetStream not available (is nats-server running with -js?)";
    else if (s == NATS_TIMEOUT)
        text = "JetStream did not answer in time";
    else if (jerr == JSStreamNotFoundErr)
        text = "stream not found";
    snprintf(out, len, "%s: %s", what, text && *text ? text : natsStatus_GetText(s));
}

/* The first and last sequence of stream; NATS_OK or why not. */
static natsStatus stream_bounds(struct bus *bus, const char *stream, uint64_t *first,
                                uint64_t *last, jsErrCode *jerr)
{
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, bus->js, stream, NULL, jerr);
    if (s == NATS_OK) {
        *first = si->State.FirstSeq;
        *last = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return s;
}

/*
 * A push consumer of bs's pattern in its stream delivering to inbox:
 * no acks, an idle heartbeat (so a lost consumer shows), and an
 * inactivity threshold, so that nats-server deletes one we abandoned
 * without asking (a NATS outage, a killed gateway). The caller sets
 * where it starts.
 */
static void consumer_config(jsConsumerConfig *cc, const struct bus_sub *bs, const char *inbox)
{
    jsConsumerConfig_Init(cc);
    cc->DeliverSubject = inbox;
    cc->FilterSubject = bs->pattern;
    cc->AckPolicy = js_AckNone;
    cc->Heartbeat = BUS_JS_HEARTBEAT_NS;
    cc->InactiveThreshold = BUS_JS_INACTIVE_NS;
}

/* Queues bs to get a consumer (again) from due_ms on; under bus->lock. */
static void js_queue(struct bus *bus, struct bus_sub *bs, int64_t due_ms)
{
    if (bs->js_queued || bs->dropped || bs->failed)
        return;
    bs->js_queued = true;
    bs->js_due_ms = due_ms;
    list_insert_tail(&bus->js_todo, &bs->js_node);
    pthread_cond_signal(&bus->wake_js);
}

/* bs's consumer lost a message or went silent: remade. Not under a lock. */
static void js_lost(struct bus *bus, struct bus_sub *bs)
{
    pthread_mutex_lock(&bus->lock);
    if (!bs->js_queued && !bs->dropped)
        atomic_fetch_add(&bus->js_resets, 1);
    js_queue(bus, bs, 0);
    pthread_mutex_unlock(&bus->lock);
}

/* Queues consumer name (taken) of stream for deletion; under bus->lock. */
static void js_forget(struct bus *bus, const char *stream, char *name)
{
    if (!name)
        return;
    /* Past the bound, or shutting down: the inactivity threshold deletes it. */
    if (bus->stopping || bus->js_ngone >= BUS_JS_GONE_MAX) {
        free(name);
        return;
    }
    struct bus_gone *g = mem_calloc(1, sizeof(*g));
    g->stream = stream;
    g->name = name;
    list_insert_tail(&bus->js_gone, &g->node);
    bus->js_ngone++;
    pthread_cond_signal(&bus->wake_js);
}

/* bs leaves the table: its consumer goes, its slot is free; under bus->lock. */
static void js_drop(struct bus *bus, struct bus_sub *bs)
{
    if (bs->js_queued) {
        list_remove(&bs->js_node);
        bs->js_queued = false;
    }
    if (bs->js_slot) {
        bs->js_slot = false;
        bus->js_live--;
    }
    js_forget(bus, bs->stream, bs->consumer);
    bs->consumer = NULL;
}

/* bs's first consumer could not be made: its streams are told; under bus->lock. */
static void js_fail(struct bus *bus, struct bus_sub *bs, const char *why)
{
    log_warn("jetstream: cannot subscribe to %s: %s", bs->pattern, why);
    if (bs->js_queued) {
        list_remove(&bs->js_node);
        bs->js_queued = false;
    }
    if (bs->js_slot) {
        bs->js_slot = false;
        bus->js_live--;
    }
    confirm(bus, bs); /* no ns: BUS_NOTICE_FAILED, and bs->failed */
}

/*
 * Makes a consumer for bs on a fresh inbox: the first one from the
 * stream's end (its floor becomes history's), a later one after the last
 * sequence recorded. From here on only the new inbox's messages count.
 * On the JetStream thread, no lock held. True with *out and *name set,
 * else why says why.
 */
static bool js_make(struct bus *bus, struct bus_sub *bs, natsSubscription **out, char **name,
                    char *why, size_t whylen)
{
    natsInbox *inbox = NULL;
    natsSubscription *ns = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsInbox_Create(&inbox);
    if (s == NATS_OK) {
        atomic_fetch_add(&bs->refs, 1); /* the subscription's, dropped on complete */
        s = natsConnection_Subscribe(&ns, bus->nc, inbox, on_js_msg, bs);
        bool completes = s == NATS_OK && (s = natsSubscription_SetOnCompleteCB(
                                              ns, on_sub_complete, bs)) == NATS_OK;
        if (!completes)
            sub_unref(bs);
    }
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(ns, -1, -1);
    if (s != NATS_OK) {
        snprintf(why, whylen, "%s: inbox: %s", bs->stream, natsStatus_GetText(s));
        goto out;
    }
    pthread_mutex_lock(&bs->lock);
    bs->live = ns;
    bs->cseq = 0;
    bs->seen_ms = now_ms();
    bool first = !bs->has_floor;
    uint64_t from = history_last(bs->history) + 1;
    pthread_mutex_unlock(&bs->lock);

    jsConsumerConfig cc;
    consumer_config(&cc, bs, inbox);
    cc.DeliverPolicy = first ? js_DeliverNew : js_DeliverByStartSequence;
    if (!first)
        cc.OptStartSeq = from;
    s = js_AddConsumer(&ci, bus->js, bs->stream, &cc, NULL, &jerr);
    if (s == NATS_OK) {
        pthread_mutex_lock(&bs->lock);
        /* Where a new consumer begins: every match above it reaches history. */
        if (!bs->has_floor) {
            history_set_floor(bs->history, ci->Delivered.Stream);
            bs->has_floor = true;
        }
        pthread_mutex_unlock(&bs->lock);
        *name = mem_strdup(ci->Name);
        *out = ns;
        ns = NULL;
    } else {
        js_why(why, whylen, bs->stream, s, jerr);
        pthread_mutex_lock(&bs->lock);
        if (bs->live == ns)
            bs->live = NULL;
        pthread_mutex_unlock(&bs->lock);
    }
out:
    jsConsumerInfo_Destroy(ci);
    end_sub(ns);
    natsInbox_Destroy(inbox);
    return s == NATS_OK;
}

/* The pause after a failed call: doubled each time, up to BUS_JS_PAUSE_MAX_MS. */
static int64_t next_pause(int64_t pause)
{
    pause = pause ? pause * 2 : BUS_JS_PAUSE_MS;
    return pause > BUS_JS_PAUSE_MAX_MS ? BUS_JS_PAUSE_MAX_MS : pause;
}

/* Takes what js_make() did for bs; under bus->lock. */
static void js_made(struct bus *bus, struct bus_sub *bs, natsSubscription *ns, char *name,
                    const char *why)
{
    int64_t now = now_ms();
    if (ns && (bs->dropped || bus->stopping)) {
        end_sub(ns);
        js_forget(bus, bs->stream, name);
        return;
    }
    if (ns) {
        natsSubscription *old = bs->ns;
        bs->ns = ns;
        end_sub(old);
        js_forget(bus, bs->stream, bs->consumer);
        bs->consumer = name;
        bs->js_tries = 0;
        bus->js_pause_ms = 0;
        if (!bs->confirmed) {
            confirm(bus, bs);
            log_debug("jetstream: %s follows stream %s (consumer %s)", bs->pattern, bs->stream,
                      name);
        } else {
            log_debug("jetstream: %s: consumer remade (%s)", bs->pattern, name);
        }
        return;
    }
    /* Every call waits while NATS fails: one client's subjects cannot keep the thread busy. */
    bus->js_pause_ms = next_pause(bus->js_pause_ms);
    bus->js_resume_ms = now + bus->js_pause_ms;
    if (bs->dropped)
        return;
    if (!bs->confirmed && now >= bs->js_give_up_ms) {
        js_fail(bus, bs, why);
        return;
    }
    int64_t pause = BUS_JS_PAUSE_MS;
    for (unsigned i = 0; i < bs->js_tries && pause < BUS_JS_PAUSE_MAX_MS; i++)
        pause *= 2;
    bs->js_tries++;
    /* One line a second at most: after a reconnect every pattern may fail once. */
    bus->js_failures++;
    if (now - bus->js_fail_logged_ms >= 1000) {
        log_info("jetstream: %s: no consumer yet (%s), trying again (%llu failed calls)",
                 bs->pattern, why, (unsigned long long)bus->js_failures);
        bus->js_fail_logged_ms = now;
    }
    js_queue(bus, bs, now + (pause > BUS_JS_PAUSE_MAX_MS ? BUS_JS_PAUSE_MAX_MS : pause));
}

/* New patterns that waited past their give-up time (NATS away) fail; under bus->lock. */
static void js_expire(struct bus *bus, int64_t now)
{
    for (struct list *n = bus->js_todo.next, *next; n != &bus->js_todo; n = next) {
        next = n->next;
        struct bus_sub *bs = container_of(n, struct bus_sub, js_node);
        if (!bs->confirmed && now >= bs->js_give_up_ms)
            js_fail(bus, bs, "NATS unavailable");
    }
}

/* Queues every followed pattern whose consumer went silent; under bus->lock. */
static void js_check(struct bus *bus, int64_t now)
{
    for (struct list *n = bus->all.next; n != &bus->all; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, node);
        if (!bs->stream || !bs->ns || bs->js_queued)
            continue;
        pthread_mutex_lock(&bs->lock);
        bool stalled = !bs->live || now - bs->seen_ms > BUS_JS_STALL_MS;
        pthread_mutex_unlock(&bs->lock);
        if (stalled) {
            atomic_fetch_add(&bus->js_resets, 1);
            js_queue(bus, bs, now);
        }
    }
}

/* The first queued pattern that is due, or NULL with *wake lowered to the next due time. */
static struct bus_sub *js_next(struct bus *bus, int64_t now, int64_t *wake)
{
    for (struct list *n = bus->js_todo.next; n != &bus->js_todo; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, js_node);
        if (bs->js_due_ms <= now)
            return bs;
        if (bs->js_due_ms < *wake)
            *wake = bs->js_due_ms;
    }
    return NULL;
}

static void wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *lock, int64_t wake_ms)
{
    int64_t left = wake_ms - now_ms();
    if (left <= 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(cond, lock, &ts);
}

/*
 * The JetStream thread: the one place consumers are made, remade and
 * deleted, in queue order, one API call at a time. While NATS is away it
 * only waits (new patterns fail after BUS_JS_FOLLOW_MS); when a call
 * fails, every call waits a growing pause, so an outage costs a call
 * per pause, not one per pattern, and never a thread.
 */
static void *run_jetstream(void *arg)
{
    struct bus *bus = arg;
    int64_t next_check = 0;
    pthread_mutex_lock(&bus->lock);
    while (!bus->stopping) {
        int64_t now = now_ms();
        bool up = atomic_load(&bus->connected);
        js_expire(bus, now);
        if (up && now >= next_check) {
            js_check(bus, now);
            next_check = now + BUS_JS_CHECK_MS;
        }
        int64_t wake = up ? next_check : now + BUS_JS_PAUSE_MS;
        struct bus_sub *bs = NULL;
        struct bus_gone *g = NULL;
        if (up && now < bus->js_resume_ms) {
            if (bus->js_resume_ms < wake)
                wake = bus->js_resume_ms;
        } else if (up) {
            bs = js_next(bus, now, &wake);
            if (!bs && !list_empty(&bus->js_gone)) {
                g = container_of(bus->js_gone.next, struct bus_gone, node);
                list_remove(&g->node);
                bus->js_ngone--;
            }
        }
        if (g) {
            pthread_mutex_unlock(&bus->lock);
            jsErrCode jerr = 0;
            natsStatus s = js_DeleteConsumer(bus->js, g->stream, g->name, NULL, &jerr);
            bool failed = s != NATS_OK && jerr != JSConsumerNotFoundErr;
            if (failed)
                log_debug("jetstream: consumer %s not deleted: %s", g->name,
                          natsStatus_GetText(s));
            free(g->name);
            free(g);
            pthread_mutex_lock(&bus->lock);
            if (failed) { /* it expires anyway; a slow server is not asked again at once */
                bus->js_pause_ms = next_pause(bus->js_pause_ms);
                bus->js_resume_ms = now_ms() + bus->js_pause_ms;
            }
            continue;
        }
        if (!bs) {
            wait_until_ms(&bus->wake_js, &bus->lock, wake);
            continue;
        }
        list_remove(&bs->js_node);
        bs->js_queued = false;
        atomic_fetch_add(&bs->refs, 1);
        pthread_mutex_unlock(&bus->lock);
        natsSubscription *ns = NULL;
        char *name = NULL;
        char why[256] = "";
        js_make(bus, bs, &ns, &name, why, sizeof(why));
        pthread_mutex_lock(&bus->lock);
        js_made(bus, bs, ns, name, why);
        sub_unref(bs);
    }
    while (!list_empty(&bus->js_gone)) {
        struct bus_gone *g = container_of(bus->js_gone.next, struct bus_gone, node);
        list_remove(&g->node);
        free(g->name);
        free(g);
    }
    bus->js_ngone = 0;
    pthread_mutex_unlock(&bus->lock);
    return NULL;
}

static void drop_sub(struct bus *bus, struct bus_sub *bs);

/*
 * Whether one more JetStream-backed pattern may have a consumer. At the
 * cap, the one unwatched the longest (lingering for a reconnect) gives
 * its slot up: a resume on it is then served by a replay. Only when every
 * slot is watched is the pattern refused, counted and logged (once a
 * second). Under bus->lock.
 */
static bool js_admit(struct bus *bus, const char *pattern)
{
    if (bus->js_live < bus->js_live_max)
        return true;
    for (struct list *n = bus->idle.next; n != &bus->idle; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, idle_node);
        if (bs->js_slot) {
            log_debug("jetstream: %s gives its consumer up to %s", bs->pattern, pattern);
            drop_sub(bus, bs);
            return true;
        }
    }
    atomic_fetch_add(&bus->js_limit_hits, 1);
    int64_t now = now_ms(), logged = atomic_load(&bus->js_limit_logged_ms);
    if (now - logged >= 1000 && atomic_compare_exchange_strong(&bus->js_limit_logged_ms,
                                                               &logged, now))
        log_warn("jetstream: %zu consumers (jetstream-max-consumers less the replays'): "
                 "refusing %s", bus->js_live, pattern);
    return false;
}

/* Adds one stream's subjects to the table; 0 or ERR_NATS with err set. */
static int load_stream(struct bus *bus, const char *name, char *err, size_t errlen)
{
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s;
    /* A stream whose leader just died is not answered for until another is elected (~5 s). */
    int64_t give_up = now_ms() + BUS_JS_START_MS;
    while ((s = js_GetStreamInfo(&si, bus->js, name, NULL, &jerr)) == NATS_TIMEOUT &&
           now_ms() < give_up)
        log_info("jetstream: stream %s: no answer yet, asking again", name);
    if (s != NATS_OK) {
        char what[160];
        snprintf(what, sizeof(what), "JetStream stream %s", name);
        js_why(err, errlen, what, s, jerr);
        return ERR_NATS;
    }
    struct bus_jstream *js = &bus->streams[bus->nstreams++];
    js->name = mem_strdup(name);
    js->nsubjects = (size_t)si->Config->SubjectsLen;
    js->subjects = mem_calloc(js->nsubjects ? js->nsubjects : 1, sizeof(*js->subjects));
    for (size_t i = 0; i < js->nsubjects; i++)
        js->subjects[i] = mem_strdup(si->Config->Subjects[i]);
    if (js->nsubjects == 0) /* a mirror or sourced stream: its messages keep other subjects */
        log_warn("jetstream: stream %s listens on no subjects (a mirror?); nothing is served "
                 "from it", name);
    else
        log_info("jetstream: serving %s%s from stream %s (%llu messages, last sequence %llu)",
                 js->subjects[0], js->nsubjects > 1 ? " and more" : "", name,
                 (unsigned long long)si->State.Msgs, (unsigned long long)si->State.LastSeq);
    jsStreamInfo_Destroy(si);
    return 0;
}

/* Reads the subjects of the streams in list ("A,B" or "*"); 0 or ERR_NATS. */
static int load_streams(struct bus *bus, const char *list, char *err, size_t errlen)
{
    /* Every JetStream call waits this long unless it says otherwise. */
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = BUS_JS_WAIT_MS;
    natsStatus s = natsConnection_JetStream(&bus->js, bus->nc, &jo);
    if (s != NATS_OK) {
        snprintf(err, errlen, "JetStream: %s", natsStatus_GetText(s));
        return ERR_NATS;
    }
    if (strcmp(list, "*") == 0) {
        jsErrCode jerr = 0;
        jsStreamNamesList *names = NULL;
        s = js_StreamNames(&names, bus->js, NULL, &jerr);
        if (s == NATS_NOT_FOUND) /* no streams at all */
            return 0;
        if (s != NATS_OK) {
            js_why(err, errlen, "JetStream stream list", s, jerr);
            return ERR_NATS;
        }
        bus->streams = mem_calloc((size_t)names->Count + 1, sizeof(*bus->streams));
        int rc = 0;
        for (int i = 0; i < names->Count && rc == 0; i++)
            rc = load_stream(bus, names->List[i], err, errlen);
        jsStreamNamesList_Destroy(names);
        return rc;
    }
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == ',';
    bus->streams = mem_calloc(n, sizeof(*bus->streams));
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        char name[256];
        if (len == 0 || len >= sizeof(name)) {
            snprintf(err, errlen, "jetstream-streams: bad stream name in \"%s\"", list);
            return ERR_NATS;
        }
        memcpy(name, p, len);
        name[len] = '\0';
        int rc = load_stream(bus, name, err, errlen);
        if (rc != 0)
            return rc;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* The JetStream stream with a subject covering pattern, or NULL: core NATS. */
static const char *covering_stream(const struct bus *bus, const char *pattern)
{
    for (size_t i = 0; i < bus->nstreams; i++) {
        for (size_t k = 0; k < bus->streams[i].nsubjects; k++) {
            if (subject_covers(bus->streams[i].subjects[k], pattern))
                return bus->streams[i].name;
        }
    }
    return NULL;
}

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
        bus->p.replayed(bus->p.worker_ctxs[r->worker], r);
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
    int64_t give_up = now_ms() + BUS_REPLAY_NEXT_MS;
    for (;;) {
        if (stopping(bus))
            return NATS_CONNECTION_CLOSED;
        int64_t left = give_up - now_ms();
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
    consumer_config(&cc, bs, inbox);
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
        s = now_ms() < give_up ? next_msg(bus, sub, &msg) : NATS_TIMEOUT;
        if (s != NATS_OK)
            goto out;
        uint64_t said = 0;
        jsMsgMetaData *meta = NULL;
        if (js_status(msg, &said)) {
            if (said > cseq)
                s = NATS_MISMATCH;
        } else if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
            if (meta->Sequence.Consumer != ++cseq) {
                s = NATS_MISMATCH;
            } else {
                uint64_t seq = meta->Sequence.Stream;
                if (seq > f->upto) {
                    f->events = mem_realloc(f->events, (f->nevents + 1) * sizeof(*f->events));
                    f->events[f->nevents++] = event_of(bs, msg, seq, meta->Timestamp);
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
    end_sub(sub);
    if (ci) {
        atomic_fetch_sub(&bus->js_replaying, 1);
        pthread_mutex_lock(&bus->lock);
        js_forget(bus, bs->stream, mem_strdup(ci->Name));
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
    while (lo < hi && !stopping(bus)) {
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
    return stopping(bus) ? NATS_CONNECTION_CLOSED : NATS_OK;
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
    int64_t give_up = now_ms() + BUS_REPLAY_BUDGET_MS;
    for (;;) {
        jsErrCode jerr = 0;
        natsStatus s = NATS_OK;
        if (!have_info) {
            s = stream_bounds(bus, bs->stream, &f->first, &f->last, &jerr);
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
            js_why(why, sizeof(why), bs->stream, s, jerr);
        if (now_ms() >= give_up || stopping(bus)) {
            log_warn("jetstream: replay of %s failed: %s", bs->pattern, why);
            return;
        }
        log_info("jetstream: replay of %s: %s; trying again after sequence %llu", bs->pattern,
                 why, (unsigned long long)f->upto);
        pause_ms(BUS_JS_PAUSE_MS);
    }
}

/* Runs one job and answers its waiters, whatever happens. */
static void run_job(struct bus *bus, struct bus_job *job)
{
    struct bus_fetch f = {0};
    atomic_fetch_add(&bus->replays, 1);
    fetch(bus, job, &f);
    if (f.status != BUS_RESUME_OK) /* not answered: a failure, for all of them */
        fail_waiters(bus, job, &f);
    pthread_mutex_lock(&bus->lock);
    list_remove(&job->node);
    pthread_mutex_unlock(&bus->lock);
    for (size_t i = 0; i < f.nevents; i++)
        sse_event_unref(f.events[i]);
    free(f.events);
    sub_unref(job->bs);
    free(job);
    atomic_fetch_sub(&bus->replays_active, 1);
}

static void *run_replays(void *arg)
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
static void add_waiter(struct bus *bus, struct bus_sub *bs, struct bus_replay *r)
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

static void *run_flusher(void *arg)
{
    struct bus *bus = arg;
    pthread_mutex_lock(&bus->lock);
    for (;;) {
        while (list_empty(&bus->unconfirmed) && !bus->stopping)
            pthread_cond_wait(&bus->wake_flusher, &bus->lock);
        if (bus->stopping)
            break;
        /* Take the whole batch: one round trip confirms every SUB sent before it. */
        size_t n = 0;
        for (struct list *l = bus->unconfirmed.next; l != &bus->unconfirmed; l = l->next)
            n++;
        struct bus_sub **batch = mem_alloc(n * sizeof(*batch));
        for (size_t i = 0; i < n; i++) {
            struct bus_sub *bs = container_of(bus->unconfirmed.next, struct bus_sub, confirm_node);
            list_remove(&bs->confirm_node);
            atomic_fetch_add(&bs->refs, 1);
            batch[i] = bs;
        }
        pthread_mutex_unlock(&bus->lock);
        natsStatus s = natsConnection_FlushTimeout(bus->nc, 2000);
        if (s != NATS_OK)
            log_debug("nats: subscription round trip: %s; answering anyway",
                      natsStatus_GetText(s));
        pthread_mutex_lock(&bus->lock);
        for (size_t i = 0; i < n; i++) {
            if (!batch[i]->dropped)
                confirm(bus, batch[i]);
            sub_unref(batch[i]);
        }
        free(batch);
    }
    pthread_mutex_unlock(&bus->lock);
    return NULL;
}

/* One URL, or a comma-separated list of them (the nodes of a cluster). */
static natsStatus set_servers(natsOptions *opts, const char *urls)
{
    char *copy = mem_strdup(urls);
    const char *list[64];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok && n < 64;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok)
            list[n++] = tok;
    }
    natsStatus s = n ? natsOptions_SetServers(opts, list, n) : NATS_INVALID_ARG;
    free(copy);
    return s;
}

int bus_new(struct bus **out, const struct bus_params *p, char *err, size_t errlen)
{
    if (p->nworkers > BUS_MAX_WORKERS) {
        snprintf(err, errlen, "at most %d workers", BUS_MAX_WORKERS);
        return ERR_INVALID;
    }
    struct bus *bus = mem_calloc(1, sizeof(*bus));
    natsOptions *opts = NULL;
    natsStatus s;

    pthread_mutex_init(&bus->lock, NULL);
    bus->subs = map_new();
    list_init(&bus->all);
    list_init(&bus->unconfirmed);
    list_init(&bus->idle);
    list_init(&bus->jobs);
    list_init(&bus->js_todo);
    list_init(&bus->js_gone);
    pthread_cond_init(&bus->wake_js, NULL);
    pthread_cond_init(&bus->wake_flusher, NULL);
    pthread_cond_init(&bus->wake_replays, NULL);
    bus->p = *p;
    bus->budget.max = p->history_total_bytes;
    atomic_init(&bus->seq, (uint64_t)wall_ns() / 1000u);

    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = set_servers(opts, p->url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, "sluice");
    if (s == NATS_OK)
        s = natsOptions_UseGlobalMessageDelivery(opts, true);
    /* Forever: the gateway outlives any NATS outage; streams wait it out. */
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(opts, 250, 1000);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(opts, on_disconnected, bus);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_reconnected, bus);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(opts, on_closed, bus);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(opts, on_async_error, bus);
    if (s == NATS_OK)
        s = natsConnection_Connect(&bus->nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        snprintf(err, errlen, "cannot connect to NATS at %s: %s", p->url, natsStatus_GetText(s));
        bus->nc = NULL;
        bus_free(bus);
        return ERR_NATS;
    }
    atomic_store(&bus->connected, true);
    if (pthread_create(&bus->flusher, NULL, run_flusher, bus) != 0) {
        snprintf(err, errlen, "cannot start the NATS flusher thread");
        bus_free(bus);
        return ERR_NATS;
    }
    bus->flusher_running = true;
    if (p->jetstream && *p->jetstream) {
        if (load_streams(bus, p->jetstream, err, errlen) != 0) {
            bus_free(bus);
            return ERR_NATS;
        }
        size_t n = p->replays ? p->replays : 1;
        /* Each replay thread holds at most one consumer at a time: theirs come first. */
        size_t max = p->max_consumers ? p->max_consumers : SIZE_MAX;
        bus->js_live_max = max > n ? max - n : 1;
        if (pthread_create(&bus->jsthread, NULL, run_jetstream, bus) != 0) {
            snprintf(err, errlen, "cannot start the JetStream thread");
            bus_free(bus);
            return ERR_NATS;
        }
        bus->js_running = true;
        bus->replayers = mem_calloc(n, sizeof(*bus->replayers));
        for (; bus->nreplayers < n; bus->nreplayers++) {
            if (pthread_create(&bus->replayers[bus->nreplayers], NULL, run_replays, bus) != 0) {
                snprintf(err, errlen, "cannot start the JetStream replay threads");
                bus_free(bus);
                return ERR_NATS;
            }
        }
    }
    *out = bus;
    return 0;
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    atomic_store(&bus->closing, true);
    pthread_mutex_lock(&bus->lock);
    bus->stopping = true;
    pthread_cond_signal(&bus->wake_flusher);
    pthread_cond_broadcast(&bus->wake_replays);
    pthread_cond_signal(&bus->wake_js);
    pthread_mutex_unlock(&bus->lock);
    /* Each ends within one JetStream wait: no consumer is deleted now (they expire). */
    if (bus->flusher_running)
        pthread_join(bus->flusher, NULL);
    if (bus->js_running)
        pthread_join(bus->jsthread, NULL);
    /* A running job ends within one JetStream wait and answers its waiters. */
    for (size_t i = 0; i < bus->nreplayers; i++)
        pthread_join(bus->replayers[i], NULL);
    free(bus->replayers);
    while (!list_empty(&bus->jobs)) { /* queued, never run: nobody reads the answers now */
        struct bus_job *job = container_of(bus->jobs.next, struct bus_job, node);
        list_remove(&job->node);
        while (job->waiters) {
            struct bus_replay *r = job->waiters;
            job->waiters = r->next;
            bus_replay_free(r);
        }
        sub_unref(job->bs);
        free(job);
    }
    pthread_mutex_lock(&bus->lock);
    while (!list_empty(&bus->all))
        drop_sub(bus, container_of(bus->all.next, struct bus_sub, node));
    pthread_mutex_unlock(&bus->lock);
    if (bus->nc) {
        natsConnection_Close(bus->nc);
        natsConnection_Destroy(bus->nc);
    }
    /* Waits for the delivery threads, so every on-complete callback has run. */
    jsCtx_Destroy(bus->js);
    natsStatus s = nats_CloseAndWait(2000);
    log_debug("nats: library closed: %s", natsStatus_GetText(s));
    for (size_t i = 0; i < bus->nstreams; i++) {
        for (size_t k = 0; k < bus->streams[i].nsubjects; k++)
            free(bus->streams[i].subjects[k]);
        free(bus->streams[i].subjects);
        free(bus->streams[i].name);
    }
    free(bus->streams);
    map_free(bus->subs);
    pthread_cond_destroy(&bus->wake_replays);
    pthread_cond_destroy(&bus->wake_flusher);
    pthread_cond_destroy(&bus->wake_js);
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

/* Queues a new JetStream-backed pattern's first consumer, holding a slot; under bus->lock. */
static void js_follow(struct bus *bus, struct bus_sub *bs)
{
    bs->js_slot = true;
    bus->js_live++;
    bs->js_give_up_ms = now_ms() + BUS_JS_FOLLOW_MS;
    js_queue(bus, bs, 0);
}

int bus_subscribe(struct bus *bus, size_t worker, const char *pattern, uint64_t *sub_id,
                  bool *confirmed)
{
    int rc = 0;
    size_t plen = strlen(pattern);
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, plen);
    if (!bs && bus->p.max_subs && map_count(bus->subs) >= bus->p.max_subs) {
        /*
         * Full: the subscription that lapsed longest ago makes room (the
         * idle list is in lapse order, so its head is the least recently
         * used); one that somebody watches is never taken away.
         */
        bool none = list_empty(&bus->idle);
        int64_t now = now_ms();
        if (now - bus->cap_logged_ms >= 1000) { /* a churn storm logs once a second */
            bus->cap_logged_ms = now;
            log_warn("nats: %zu subscriptions (max-subscriptions): %s", bus->p.max_subs,
                     none ? "refusing new subject patterns" : "evicting lingering ones");
        }
        if (none) {
            atomic_fetch_add(&bus->subs_refused, 1);
            rc = ERR_LIMIT;
            goto out;
        }
        atomic_fetch_add(&bus->subs_evicted, 1);
        drop_sub(bus, container_of(bus->idle.next, struct bus_sub, idle_node));
    }
    if (!bs) {
        const char *stream = covering_stream(bus, pattern);
        if (stream && !js_admit(bus, pattern)) {
            rc = ERR_NATS;
            goto out;
        }
        bs = mem_calloc(1, sizeof(*bs) + bus->p.nworkers * sizeof(bs->counts[0]));
        bs->bus = bus;
        atomic_init(&bs->refs, 1); /* the table's */
        bs->id = ++bus->next_id;
        bs->pattern = mem_strdup(pattern);
        bs->stream = stream;
        list_init(&bs->confirm_node);
        list_init(&bs->idle_node);
        list_init(&bs->js_node);
        pthread_mutex_init(&bs->lock, NULL);
        /*
         * A fresh number for the floor: the last id of an earlier, lapsed
         * subscription on this pattern is below it, so resuming from it
         * reads as expired even when nothing else was numbered meanwhile
         * (messages published while nobody subscribed are lost to us).
         * A JetStream subscription sets its floor when its consumer is made.
         */
        bs->history = history_new(bus->p.history_events, bus->p.history_bytes, &bus->budget,
                                  bs->stream ? 0 : atomic_fetch_add(&bus->seq, 1) + 1);
        if (!bs->stream) {
            atomic_fetch_add(&bs->refs, 1); /* the subscription's, dropped on complete */
            natsStatus s = natsConnection_Subscribe(&bs->ns, bus->nc, pattern, on_nats_msg, bs);
            bool completes =
                s == NATS_OK &&
                (s = natsSubscription_SetOnCompleteCB(bs->ns, on_sub_complete, bs)) == NATS_OK;
            /* No silent drops at cnats's default 65k pending: the workers' caps bound memory. */
            if (s == NATS_OK)
                s = natsSubscription_SetPendingLimits(bs->ns, -1, -1);
            if (s != NATS_OK) {
                log_error("nats: cannot subscribe to %s: %s", pattern, natsStatus_GetText(s));
                end_sub(bs->ns);
                if (!completes)
                    sub_unref(bs);
                sub_unref(bs);
                rc = ERR_NATS;
                goto out;
            }
        }
        map_put(bus->subs, pattern, plen, bs);
        list_insert_tail(&bus->all, &bs->node);
        if (bs->stream)
            js_follow(bus, bs);
        else {
            list_insert_tail(&bus->unconfirmed, &bs->confirm_node);
            pthread_cond_signal(&bus->wake_flusher);
        }
        log_debug("nats: subscribed to %s (sub %llu%s%s)", pattern, (unsigned long long)bs->id,
                  bs->stream ? ", JetStream stream " : "", bs->stream ? bs->stream : "");
    }
    pthread_mutex_lock(&bs->lock);
    if (bs->failed) {
        pthread_mutex_unlock(&bs->lock);
        rc = ERR_NATS;
        goto out;
    }
    if (bs->counts[worker]++ == 0 && bs->interested++ == 0)
        list_remove(&bs->idle_node); /* watched again: no longer lingering */
    *confirmed = bs->confirmed;
    pthread_mutex_unlock(&bs->lock);
    *sub_id = bs->id;
out:
    pthread_mutex_unlock(&bus->lock);
    return rc;
}

void bus_unsubscribe(struct bus *bus, size_t worker, const char *pattern)
{
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, strlen(pattern));
    if (bs) {
        pthread_mutex_lock(&bs->lock);
        bool idle = bs->counts[worker] > 0 && --bs->counts[worker] == 0 && --bs->interested == 0;
        if (idle) {
            bs->idle_since_ms = now_ms();
            list_insert_tail(&bus->idle, &bs->idle_node);
        }
        bool failed = bs->failed; /* nothing to keep: the next stream tries afresh */
        pthread_mutex_unlock(&bs->lock);
        if (idle && (bus->p.keep_ms <= 0 || failed))
            drop_sub(bus, bs);
    }
    pthread_mutex_unlock(&bus->lock);
}

/* Fills out from history alone; under the subscription's lock. False: a replay job must. */
static bool resume_from_history(const struct bus_sub *bs, const struct bus_start *start,
                                struct bus_resume *out)
{
    const struct history *h = bs->history;
    out->last = out->before = history_last(h);
    enum history_resume st = HISTORY_RESUME_OK;
    switch (start->from) {
    case BUS_FROM_NOW: return true;
    case BUS_FROM_ID:
        st = history_since(h, start->after, &out->events, &out->nevents);
        out->before = start->after;
        break;
    case BUS_FROM_EARLIEST:
    case BUS_FROM_TIME:
        /* JetStream holds more than memory does. */
        if (bs->stream)
            return false;
        history_since_time(h, start->from == BUS_FROM_TIME ? start->since_ns : INT64_MIN,
                           &out->events, &out->nevents);
        if (out->nevents)
            out->before = out->events[0]->seq - 1;
        break;
    }
    if (st == HISTORY_RESUME_OK)
        return true;
    if (bs->stream) /* older than memory, or newer: JetStream knows */
        return false;
    out->status = st == HISTORY_RESUME_GONE ? BUS_RESUME_GONE : BUS_RESUME_UNKNOWN;
    return true;
}

int bus_resume(struct bus *bus, size_t worker, const char *pattern,
               const struct bus_start *start, struct bus_resume *out,
               struct bus_replay **pending)
{
    memset(out, 0, sizeof(*out));
    *pending = NULL;
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, strlen(pattern));
    if (bs) {
        pthread_mutex_lock(&bs->lock);
        bool done = resume_from_history(bs, start, out);
        pthread_mutex_unlock(&bs->lock);
        if (!done) {
            struct bus_replay *r = mem_calloc(1, sizeof(*r));
            r->worker = worker;
            r->sub_id = bs->id;
            r->start = *start;
            add_waiter(bus, bs, r);
            out->status = BUS_RESUME_PENDING;
            *pending = r;
        }
    }
    pthread_mutex_unlock(&bus->lock);
    return bs ? 0 : ERR_NOTFOUND;
}

static int on_source_subscribe(void *ctx, size_t worker, const char *pattern, uint64_t *sub_id,
                               bool *confirmed)
{
    return bus_subscribe(ctx, worker, pattern, sub_id, confirmed);
}

static void on_source_unsubscribe(void *ctx, size_t worker, const char *pattern)
{
    bus_unsubscribe(ctx, worker, pattern);
}

static int on_source_resume(void *ctx, size_t worker, const char *pattern,
                            const struct bus_start *start, struct bus_resume *out,
                            struct bus_replay **pending)
{
    return bus_resume(ctx, worker, pattern, start, out, pending);
}

static const struct fanout_source_ops source_ops = {
    .subscribe = on_source_subscribe,
    .unsubscribe = on_source_unsubscribe,
    .resume = on_source_resume,
};

void bus_fanout_source(struct bus *bus, struct fanout_source *out)
{
    out->ops = &source_ops;
    out->ctx = bus;
}

void bus_sweep(struct bus *bus)
{
    int64_t now = now_ms();
    pthread_mutex_lock(&bus->lock);
    /* Lingering subscriptions are kept in the order they lapsed: stop at the first still young. */
    while (!list_empty(&bus->idle)) {
        struct bus_sub *bs = container_of(bus->idle.next, struct bus_sub, idle_node);
        pthread_mutex_lock(&bs->lock);
        bool expired = now - bs->idle_since_ms >= bus->p.keep_ms;
        pthread_mutex_unlock(&bs->lock);
        if (!expired)
            break;
        drop_sub(bus, bs);
    }
    pthread_mutex_unlock(&bus->lock);
}

bool bus_connected(const struct bus *bus) { return atomic_load(&bus->connected); }

bool bus_subscribed(struct bus *bus, const char *pattern)
{
    pthread_mutex_lock(&bus->lock);
    bool found = map_get(bus->subs, pattern, strlen(pattern)) != NULL;
    pthread_mutex_unlock(&bus->lock);
    return found;
}

size_t bus_subscriptions(struct bus *bus)
{
    pthread_mutex_lock(&bus->lock);
    size_t n = map_count(bus->subs);
    pthread_mutex_unlock(&bus->lock);
    return n;
}

void bus_stats(struct bus *bus, struct bus_stats *out)
{
    out->connected = atomic_load(&bus->connected);
    out->reconnects = atomic_load(&bus->reconnects);
    out->messages = atomic_load(&bus->messages);
    out->reserved_dropped = atomic_load(&bus->reserved_dropped);
    out->subscriptions = bus_subscriptions(bus);
    out->history_bytes = atomic_load(&bus->budget.used);
    out->subs_evicted = atomic_load(&bus->subs_evicted);
    out->subs_refused = atomic_load(&bus->subs_refused);
    out->replays = atomic_load(&bus->replays);
    out->replay_requests = atomic_load(&bus->replay_requests);
    out->replays_active = atomic_load(&bus->replays_active);
    out->replayed_events = atomic_load(&bus->replayed_events);
    pthread_mutex_lock(&bus->lock);
    out->js_consumers = bus->js_live + (size_t)atomic_load(&bus->js_replaying);
    pthread_mutex_unlock(&bus->lock);
    out->js_resets = atomic_load(&bus->js_resets);
    out->js_limit_hits = atomic_load(&bus->js_limit_hits);
}

int bus_publish(struct bus *bus, const char *subject, const char *event, const void *data,
                size_t len)
{
    if (!atomic_load(&bus->connected))
        return ERR_NATS;
    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, subject, NULL, data, (int)len);
    if (s == NATS_OK && event)
        s = natsMsgHeader_Set(msg, "Sse-Event", event);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(bus->nc, msg);
    natsMsg_Destroy(msg);
    if (s != NATS_OK) {
        log_warn("nats: publish to %s failed: %s", subject, natsStatus_GetText(s));
        return ERR_NATS;
    }
    return 0;
}
