/*
 * bus_js: JetStream-backed patterns — the streams' subjects, the live
 * feeds and the JetStream thread (part of the bus, see bus.c and
 * bus_int.h).
 *
 * Feeds: each JetStream stream a pattern is served from has one live
 * feed per gateway, not one consumer per pattern: an ephemeral push
 * consumer on the whole stream (no filter, no acks, idle heartbeat, an
 * inactivity threshold so that nats-server deletes one we abandon)
 * delivering to a fresh inbox that a plain subscription reads on cnats's
 * delivery pool. Why unfiltered: nats-server 2.9.10 (Debian's) sometimes
 * skips messages on filtered push consumers under a burst while saying
 * they were delivered with nothing pending (6 of 11 bench runs lost 3–20 %
 * of a burst on 10 subjects), and on a filtered consumer the stream
 * sequence jumps anyway, so nothing could see the loss. On an unfiltered
 * one every stream sequence comes in turn: a jump is either a message
 * removed before it was sent (limits, purge, delete) or one skipped.
 * Routing: a literal pattern is found by the message's subject in a hash
 * map, a wildcard one by subject_match() over the feed's (few) wildcard
 * patterns; a message nobody watches costs a lookup and is dropped.
 * The cost: each gateway receives the whole stream.
 *
 * Checks, on the delivery thread: only the current inbox's messages count
 * (feed->live). A consumer sequence that skips, a heartbeat that says more
 * was sent, or silence past BUS_JS_STALL_MS (BUS_JS_REJOIN_MS after a
 * NATS reconnect: a restarted server restores consumers, so they are not
 * remade blindly) mean the consumer is remade on a new inbox after the
 * last stream sequence routed; redeliveries at or below a pattern's
 * newest are dropped. A stream sequence that jumps past last + 1 opens a
 * gap: that message and the ones after it are held (BUS_JS_HOLD_MAX,
 * BUS_JS_HOLD_BYTES; past that the inbox stops and the consumer is made
 * again after the gap) while the JetStream thread fetches each missing
 * sequence with STREAM.MSG.GET (at most BUS_JS_GAP_MAX per pass, so
 * other feeds are not held up; below the stream's first sequence nothing
 * is fetched) and routes, in order, what still exists — a removed one is
 * simply gone, as it is for a resume — then what was held. A heartbeat
 * whose stream sequence is past what was routed (a skip at the end)
 * stops the inbox, and the gap is filled before the next consumer. Never
 * a silent skip: a failed fetch is retried like a failed consumer. Counted in
 * sluice_jetstream_gaps_total and sluice_jetstream_gap_events_total.
 *
 * Floors: a feed's first consumer starts at the stream's end; a pattern
 * that joins takes the feed's position (the last sequence routed) as its
 * history's floor, so history holds every matching event above it. It is
 * confirmed at once when the feed has a position, else when the feed's
 * first consumer is made.
 *
 * One JetStream thread makes, remakes, fills and deletes every consumer,
 * one API call at a time, from a FIFO queue in which a feed appears once
 * (coalesced): no thread per consumer or per reset, and a call that fails
 * makes every call pause (growing to BUS_JS_PAUSE_MAX_MS), so an outage
 * costs a call per pause. A new pattern whose feed has no consumer within
 * BUS_JS_FOLLOW_MS fails (BUS_MAIL_FAILED); a feed with patterns is remade
 * until it works. Feeds are capped (max_consumers less one per replay
 * thread): at the cap, a pattern of a stream without a feed takes the slot
 * of a feed whose patterns are all unwatched, and otherwise
 * bus_subscribe() refuses it. A feed whose last pattern leaves is deleted.
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

static void feed_queue(struct bus *bus, struct bus_feed *f, int64_t due_ms);

/*
 * A consumer's status message: true, and *last the newest consumer
 * sequence it says was sent. An idle heartbeat (100) carries it; any
 * other status (409: the consumer was deleted) sets it to UINT64_MAX, so
 * that the consumer counts as lost at once.
 */
bool bus_js_status(natsMsg *msg, uint64_t *last)
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

/* An idle heartbeat's newest stream sequence the consumer has passed, or 0. */
static uint64_t heartbeat_stream(natsMsg *msg)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, "Nats-Last-Stream", &v) == NATS_OK && v)
        return strtoull(v, NULL, 10);
    return 0;
}

/* One message of stream sequence seq to bs; under its feed's lock. */
static void deliver(struct bus_sub *bs, natsMsg *msg, uint64_t seq, int64_t time_ns)
{
    size_t targets[BUS_MAX_WORKERS], ntargets = 0;
    struct sse_event *ev = NULL;
    pthread_mutex_lock(&bs->lock);
    /* Never shown to a wildcard's streams, but the feed's position passes it. */
    if (bs->has_floor && !bus_reserved_leak(bs, msg))
        ev = bus_push_locked(bs, msg, seq, time_ns, targets, &ntargets);
    pthread_mutex_unlock(&bs->lock);
    /* Under the feed's lock: one feed's events reach the workers in sequence order. */
    if (ev)
        bus_hand_out(bs->bus, ev, targets, ntargets);
}

/* Routes one message of the stream to every pattern matching its subject; under f->lock. */
static void route(struct bus_feed *f, natsMsg *msg, uint64_t seq, int64_t time_ns)
{
    const char *subject = natsMsg_GetSubject(msg);
    struct bus_sub *bs = map_get(f->exact, subject, strlen(subject));
    if (bs)
        deliver(bs, msg, seq, time_ns);
    for (struct list *n = f->wild.next; n != &f->wild; n = n->next) {
        bs = container_of(n, struct bus_sub, wild_node);
        if (subject_match(bs->pattern, subject))
            deliver(bs, msg, seq, time_ns);
    }
}

/* The feed's position becomes last: every pattern without a floor takes it; under f->lock. */
static void position(struct bus_feed *f, uint64_t last)
{
    f->last = last;
    f->has_pos = true;
    for (struct list *n = f->subs.next; n != &f->subs; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, feed_node);
        pthread_mutex_lock(&bs->lock);
        if (!bs->has_floor) {
            history_set_floor(bs->history, last);
            bs->has_floor = true;
        }
        pthread_mutex_unlock(&bs->lock);
    }
}

/* Drops what f holds (its consumer is remade after the gap: they come again); under f->lock. */
static void drop_held(struct bus_feed *f)
{
    for (size_t i = 0; i < f->nheld; i++)
        natsMsg_Destroy(f->held[i].msg);
    f->nheld = 0;
    f->held_bytes = 0;
}

/*
 * Holds msg (taken) until f's gap is filled; false when BUS_JS_HOLD_MAX
 * messages or BUS_JS_HOLD_BYTES are held. Under f->lock.
 */
static bool hold(struct bus_feed *f, natsMsg *msg, uint64_t seq, int64_t time_ns)
{
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    if (f->nheld >= BUS_JS_HOLD_MAX || f->held_bytes + len > BUS_JS_HOLD_BYTES)
        return false;
    f->held_bytes += len;
    if (f->nheld == f->held_cap) {
        f->held_cap = f->held_cap ? f->held_cap * 2 : 64;
        f->held = mem_realloc(f->held, f->held_cap * sizeof(*f->held));
    }
    f->held[f->nheld++] = (struct bus_held){msg, seq, time_ns};
    return true;
}

/*
 * Routes what f held once its gap is filled, in order, up to the next
 * jump among them (which becomes the gap, counted). True when nothing is
 * held any more. On the JetStream thread, under f->lock.
 */
static bool drain(struct bus *bus, struct bus_feed *f)
{
    size_t i = 0;
    for (; i < f->nheld; i++) {
        struct bus_held *h = &f->held[i];
        if (h->seq > f->last + 1) {
            f->gap_to = h->seq - 1;
            atomic_fetch_add(&bus->js_gaps, 1);
            break;
        }
        if (h->seq > f->last) {
            f->last = h->seq;
            route(f, h->msg, h->seq, h->time_ns);
        }
        f->held_bytes -= (size_t)natsMsg_GetDataLength(h->msg);
        natsMsg_Destroy(h->msg);
    }
    if (i > 0 && i < f->nheld) /* held is NULL until the first gap */
        memmove(f->held, f->held + i, (f->nheld - i) * sizeof(*f->held));
    f->nheld -= i;
    return f->nheld == 0;
}

/*
 * A message on a feed's inbox. Only the current consumer's count
 * (feed->live). A stream sequence that jumps starts a gap: what follows
 * is held (up to BUS_JS_HOLD_MAX) while the JetStream thread fills it,
 * and the consumer goes on. A lost message (consumer sequence), too much
 * held, or a heartbeat that says more was sent stops the inbox: the
 * JetStream thread fills and remakes it (see the top).
 */
static void on_feed_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    struct bus_jstream *js = closure;
    struct bus_feed *f = &js->feed;
    jsMsgMetaData *meta = NULL;
    uint64_t said = 0;
    bool status = bus_js_status(msg, &said);
    if (!status && natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg); /* not from a consumer: someone published on our inbox */
        return;
    }
    bool lost = false, gap = false;
    pthread_mutex_lock(&f->lock);
    if (ns == f->live) {
        f->seen_ms = bus_now_ms();
        bool filling = f->nheld > 0 || f->gap_to > f->last;
        if (status) {
            uint64_t passed = heartbeat_stream(msg);
            lost = said > f->cseq;
            /* Nothing more was sent, yet the consumer is past what we routed: a skip at the end. */
            if (!lost && !filling && f->has_pos && passed > f->last) {
                f->gap_to = passed;
                gap = lost = true;
            }
        } else if (meta->Sequence.Consumer != f->cseq + 1) {
            lost = true;
        } else {
            uint64_t seq = meta->Sequence.Stream;
            if (!f->has_pos) /* a first consumer: it began right before its first message */
                position(f, seq - 1);
            f->cseq = meta->Sequence.Consumer;
            if (!filling && seq > f->last + 1) { /* skipped, or removed before it was sent */
                f->gap_to = seq - 1;
                filling = gap = true;
            }
            if (!filling) {
                if (seq > f->last) {
                    f->last = seq;
                    route(f, msg, seq, meta->Timestamp);
                }
            } else if (hold(f, msg, seq, meta->Timestamp)) {
                msg = NULL;
            } else {
                lost = true; /* too much held: made again after the gap */
            }
        }
        if (lost) {
            f->live = NULL;
            drop_held(f);
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (lost || gap) {
        struct bus *bus = js->bus;
        pthread_mutex_lock(&bus->lock);
        if (gap)
            atomic_fetch_add(&bus->js_gaps, 1);
        else if (!f->js_queued)
            atomic_fetch_add(&bus->js_resets, 1);
        feed_queue(bus, f, 0);
        pthread_mutex_unlock(&bus->lock);
    }
    if (meta)
        jsMsgMetaData_Destroy(meta);
    if (msg)
        natsMsg_Destroy(msg);
}

/* "stream X: reason" for a failed JetStream call. */
void bus_js_why(char *out, size_t len, const char *what, natsStatus s, jsErrCode jerr)
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
natsStatus bus_stream_bounds(struct bus *bus, const char *stream, uint64_t *first,
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
 * A push consumer delivering to inbox, filtered on filter (NULL: the
 * whole stream): no acks, an idle heartbeat (so a lost consumer shows),
 * and an inactivity threshold, so that nats-server deletes one we
 * abandoned without asking (a NATS outage, a killed gateway). The caller
 * sets where it starts.
 */
void bus_consumer_config(jsConsumerConfig *cc, const char *filter, const char *inbox)
{
    jsConsumerConfig_Init(cc);
    cc->DeliverSubject = inbox;
    cc->FilterSubject = filter;
    cc->AckPolicy = js_AckNone;
    cc->Heartbeat = BUS_JS_HEARTBEAT_NS;
    cc->InactiveThreshold = BUS_JS_INACTIVE_NS;
}

/* Queues f to be filled and get a consumer (again) from due_ms on; under bus->lock. */
static void feed_queue(struct bus *bus, struct bus_feed *f, int64_t due_ms)
{
    if (f->js_queued || list_empty(&f->subs))
        return;
    f->js_queued = true;
    f->js_due_ms = due_ms;
    list_insert_tail(&bus->js_todo, &f->js_node);
    pthread_cond_signal(&bus->wake_js);
}

/* Queues consumer name (taken) of stream for deletion; under bus->lock. */
void bus_js_forget(struct bus *bus, const char *stream, char *name)
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

/* f's last pattern left: its consumer goes, its slot is free, its position forgotten. */
static void feed_release(struct bus *bus, struct bus_jstream *js)
{
    struct bus_feed *f = &js->feed;
    if (f->js_queued) {
        list_remove(&f->js_node);
        f->js_queued = false;
    }
    if (f->js_slot) {
        f->js_slot = false;
        bus->js_live--;
    }
    bus_end_sub(bus, f->ns);
    f->ns = NULL;
    bus_js_forget(bus, js->name, f->consumer);
    f->consumer = NULL;
    f->js_tries = 0;
    pthread_mutex_lock(&f->lock);
    f->live = NULL;
    drop_held(f);
    f->has_pos = false;
    f->last = f->gap_to = 0;
    pthread_mutex_unlock(&f->lock);
}

/* bs leaves the table and its feed; the feed's last pattern frees its consumer. Under bus->lock. */
void bus_js_drop(struct bus *bus, struct bus_sub *bs)
{
    struct bus_feed *f = &bs->js->feed;
    pthread_mutex_lock(&f->lock);
    list_remove(&bs->feed_node);
    if (list_empty(&bs->wild_node))
        map_del(f->exact, bs->pattern, strlen(bs->pattern));
    else
        list_remove(&bs->wild_node);
    pthread_mutex_unlock(&f->lock);
    if (list_empty(&f->subs))
        feed_release(bus, bs->js);
}

/* After a NATS reconnect: every feed's silence is judged from seen_ms on; under bus->lock. */
void bus_js_rejoin(struct bus *bus, int64_t seen_ms)
{
    for (size_t i = 0; i < bus->nstreams; i++) {
        struct bus_feed *f = &bus->streams[i].feed;
        pthread_mutex_lock(&f->lock);
        f->seen_ms = seen_ms;
        pthread_mutex_unlock(&f->lock);
    }
}

/* bs's feed got no consumer in time: its streams are told; under bus->lock. */
static void js_fail(struct bus *bus, struct bus_sub *bs, const char *why)
{
    log_warn("jetstream: cannot subscribe to %s: %s", bs->pattern, why);
    bus_confirm(bus, bs); /* no floor: BUS_MAIL_FAILED, and bs->failed */
}

/* Patterns of f still waiting for its first consumer past their give-up time fail; under bus->lock. */
static void feed_expire(struct bus *bus, struct bus_feed *f, int64_t now, const char *why)
{
    for (struct list *n = f->subs.next; n != &f->subs; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, feed_node);
        if (!bs->confirmed && now >= bs->js_give_up_ms)
            js_fail(bus, bs, why);
    }
}

/*
 * Moves f's position up to seq, routing msg (seq's, or NULL: removed)
 * first; on the JetStream thread. False: the feed was released or
 * restarted meanwhile (its position is not the one being filled).
 */
static bool advance(struct bus_feed *f, uint64_t seq, natsMsg *msg)
{
    pthread_mutex_lock(&f->lock);
    /* While the gap is open the delivery thread holds, never moves the position. */
    bool still = f->has_pos && f->last < seq && f->gap_to >= seq;
    if (still) {
        if (msg)
            route(f, msg, seq, natsMsg_GetTime(msg));
        f->last = seq;
    }
    pthread_mutex_unlock(&f->lock);
    return still;
}

/*
 * Fetches the messages js's feed is missing (its gap), at most
 * BUS_JS_GAP_MAX, routing in order what still exists. On the JetStream
 * thread, no lock held. 1: filled; 0: more left for the next pass; a
 * negative error with why set: a call failed (the position stays).
 */
static int fill(struct bus *bus, struct bus_jstream *js, char *why, size_t whylen)
{
    struct bus_feed *f = &js->feed;
    pthread_mutex_lock(&f->lock);
    uint64_t from = f->last + 1, to = f->gap_to;
    bool placed = f->has_pos;
    pthread_mutex_unlock(&f->lock);
    if (!placed || to < from)
        return 1;
    jsErrCode jerr = 0;
    uint64_t first = 0, end = 0;
    natsStatus s = bus_stream_bounds(bus, js->name, &first, &end, &jerr);
    if (s != NATS_OK) {
        bus_js_why(why, whylen, js->name, s, jerr);
        return ERR_NATS;
    }
    if (first > from) { /* removed by the stream's limits or a purge: nothing to fetch */
        from = first - 1 < to ? first : to + 1;
        if (!advance(f, from - 1, NULL))
            return 1;
    }
    size_t n = 0;
    for (; from <= to && n < BUS_JS_GAP_MAX && !bus_stopping(bus); from++, n++) {
        natsMsg *msg = NULL;
        jerr = 0;
        s = js_GetMsg(&msg, bus->js, js->name, from, NULL, &jerr);
        if (s != NATS_OK && jerr != JSNoMessageFoundErr) {
            bus_js_why(why, whylen, js->name, s, jerr);
            return ERR_NATS;
        }
        /* A missing one was removed (max-msgs-per-subject, a delete): only passed. */
        bool still = advance(f, from, msg);
        if (still && msg)
            atomic_fetch_add(&bus->js_gap_filled, 1);
        natsMsg_Destroy(msg);
        if (!still)
            return 1;
    }
    if (from <= to)
        return 0;
    log_debug("jetstream: stream %s: gap filled up to %llu", js->name,
              (unsigned long long)to);
    return 1;
}

/*
 * Makes a consumer for js's feed on a fresh inbox: the first one from
 * the stream's end, a later one after the last sequence routed. From here
 * on only the new inbox's messages count. On the JetStream thread, no
 * lock held. True with *out and *name set, else why says why.
 */
static bool js_make(struct bus *bus, struct bus_jstream *js, natsSubscription **out,
                    char **name, char *why, size_t whylen)
{
    struct bus_feed *f = &js->feed;
    natsInbox *inbox = NULL;
    natsSubscription *ns = NULL;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsInbox_Create(&inbox);
    /* The closure is the stream's record, which lives as long as the bus. */
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&ns, bus->nc, inbox, on_feed_msg, js);
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(ns, -1, -1);
    if (s != NATS_OK) {
        snprintf(why, whylen, "%s: inbox: %s", js->name, natsStatus_GetText(s));
        goto out;
    }
    pthread_mutex_lock(&f->lock);
    f->live = ns;
    drop_held(f); /* the old consumer's: the new one sends them again */
    f->cseq = 0;
    f->seen_ms = bus_now_ms();
    bool first = !f->has_pos;
    uint64_t from = f->last + 1;
    pthread_mutex_unlock(&f->lock);

    jsConsumerConfig cc;
    bus_consumer_config(&cc, NULL, inbox);
    cc.DeliverPolicy = first ? js_DeliverNew : js_DeliverByStartSequence;
    if (!first)
        cc.OptStartSeq = from;
    s = js_AddConsumer(&ci, bus->js, js->name, &cc, NULL, &jerr);
    if (s == NATS_OK) {
        pthread_mutex_lock(&f->lock);
        /* Where a first consumer begins: every message above it is routed. */
        if (!f->has_pos)
            position(f, ci->Delivered.Stream);
        pthread_mutex_unlock(&f->lock);
        *name = mem_strdup(ci->Name);
        *out = ns;
        ns = NULL;
    } else {
        bus_js_why(why, whylen, js->name, s, jerr);
        pthread_mutex_lock(&f->lock);
        if (f->live == ns)
            f->live = NULL;
        pthread_mutex_unlock(&f->lock);
    }
out:
    jsConsumerInfo_Destroy(ci);
    bus_end_sub(bus, ns);
    natsInbox_Destroy(inbox);
    return s == NATS_OK;
}

/*
 * A literal pattern that joins a placed feed may name a subject its
 * publisher ended (Sse-End) before this gateway followed it: that end is
 * not in history, so the subject would look live. Its last stored
 * message says; the JetStream thread looks it up (look_up_ends) before
 * the pattern is confirmed, which is when its streams read history.
 * Wildcards are confirmed at once, and so is every pattern while NATS is
 * away (its streams stay open for when it is back, as core ones do).
 * Under bus->lock.
 */
static void confirm_or_look_up(struct bus *bus, struct bus_feed *f, struct bus_sub *bs)
{
    if (strpbrk(bs->pattern, "*>") || !atomic_load(&bus->connected)) {
        bus_confirm(bus, bs);
        log_debug("jetstream: %s follows stream %s", bs->pattern, bs->stream);
    } else if (list_empty(&bs->confirm_node)) {
        list_insert_tail(&f->ends, &bs->confirm_node);
    }
}

/*
 * Looks up the end of up to BUS_JS_ENDS_MAX of f's waiting patterns (one
 * JetStream call each: history learns the end unless something newer
 * arrived meanwhile; a failure or no message leaves the subject live) and
 * confirms them. Called and returns under bus->lock, which it drops
 * around the calls; on the JetStream thread.
 */
static void look_up_ends(struct bus *bus, struct bus_jstream *js)
{
    struct bus_feed *f = &js->feed;
    struct bus_sub *batch[BUS_JS_ENDS_MAX];
    size_t n = 0;
    while (n < BUS_JS_ENDS_MAX && !list_empty(&f->ends)) {
        struct bus_sub *bs = container_of(f->ends.next, struct bus_sub, confirm_node);
        list_remove(&bs->confirm_node);
        atomic_fetch_add(&bs->refs, 1);
        batch[n++] = bs;
    }
    pthread_mutex_unlock(&bus->lock);
    for (size_t i = 0; i < n; i++) {
        natsMsg *msg = NULL;
        jsErrCode jerr = 0;
        if (js_GetLastMsg(&msg, bus->js, js->name, batch[i]->pattern, NULL, &jerr) != NATS_OK)
            continue;
        if (bus_msg_ends(msg)) {
            pthread_mutex_lock(&batch[i]->lock);
            history_set_end(batch[i]->history, natsMsg_GetSequence(msg));
            pthread_mutex_unlock(&batch[i]->lock);
        }
        natsMsg_Destroy(msg);
    }
    pthread_mutex_lock(&bus->lock);
    for (size_t i = 0; i < n; i++) {
        if (!batch[i]->dropped && !batch[i]->confirmed) {
            bus_confirm(bus, batch[i]);
            log_debug("jetstream: %s follows stream %s", batch[i]->pattern, js->name);
        }
        bus_sub_unref(batch[i]);
    }
}

/* The pause after a failed call: doubled each time, up to BUS_JS_PAUSE_MAX_MS. */
static int64_t next_pause(int64_t pause)
{
    pause = pause ? pause * 2 : BUS_JS_PAUSE_MS;
    return pause > BUS_JS_PAUSE_MAX_MS ? BUS_JS_PAUSE_MAX_MS : pause;
}

/* Takes what fill() and js_make() did for js's feed; under bus->lock. */
static void js_made(struct bus *bus, struct bus_jstream *js, natsSubscription *ns, char *name,
                    const char *why)
{
    struct bus_feed *f = &js->feed;
    int64_t now = bus_now_ms();
    if (ns && (list_empty(&f->subs) || bus->stopping)) { /* released meanwhile */
        bus_end_sub(bus, ns);
        bus_js_forget(bus, js->name, name);
        return;
    }
    if (ns) {
        natsSubscription *old = f->ns;
        f->ns = ns;
        bus_end_sub(bus, old);
        bus_js_forget(bus, js->name, f->consumer);
        f->consumer = name;
        f->js_tries = 0;
        bus->js_pause_ms = 0;
        log_debug("jetstream: stream %s: consumer %s%s", js->name, name,
                  old ? " remade" : " made");
        for (struct list *n = f->subs.next; n != &f->subs; n = n->next) {
            struct bus_sub *bs = container_of(n, struct bus_sub, feed_node);
            if (!bs->confirmed)
                confirm_or_look_up(bus, f, bs);
        }
        if (!list_empty(&f->ends))
            feed_queue(bus, f, 0);
        return;
    }
    /* Every call waits while NATS fails: one client's subjects cannot keep the thread busy. */
    bus->js_pause_ms = next_pause(bus->js_pause_ms);
    bus->js_resume_ms = now + bus->js_pause_ms;
    if (list_empty(&f->subs))
        return;
    feed_expire(bus, f, now, why);
    int64_t pause = BUS_JS_PAUSE_MS;
    for (unsigned i = 0; i < f->js_tries && pause < BUS_JS_PAUSE_MAX_MS; i++)
        pause *= 2;
    f->js_tries++;
    /* One line a second at most: after a reconnect every feed may fail once. */
    bus->js_failures++;
    if (now - bus->js_fail_logged_ms >= 1000) {
        log_info("jetstream: stream %s: no consumer yet (%s), trying again (%llu failed calls)",
                 js->name, why, (unsigned long long)bus->js_failures);
        bus->js_fail_logged_ms = now;
    }
    feed_queue(bus, f, now + (pause > BUS_JS_PAUSE_MAX_MS ? BUS_JS_PAUSE_MAX_MS : pause));
}

/* New patterns that waited past their give-up time (NATS away) fail; under bus->lock. */
static void js_expire(struct bus *bus, int64_t now)
{
    for (struct list *n = bus->js_todo.next; n != &bus->js_todo; n = n->next)
        feed_expire(bus, container_of(n, struct bus_feed, js_node), now, "NATS unavailable");
}

/* Queues every feed whose consumer went silent; under bus->lock. */
static void js_check(struct bus *bus, int64_t now)
{
    for (size_t i = 0; i < bus->nstreams; i++) {
        struct bus_feed *f = &bus->streams[i].feed;
        if (!f->ns || f->js_queued)
            continue;
        pthread_mutex_lock(&f->lock);
        bool stalled = !f->live || now - f->seen_ms > BUS_JS_STALL_MS;
        if (stalled) { /* made again after the last sequence routed */
            f->live = NULL;
            drop_held(f);
        }
        pthread_mutex_unlock(&f->lock);
        if (stalled) {
            atomic_fetch_add(&bus->js_resets, 1);
            feed_queue(bus, f, now);
        }
    }
}

/* The first queued feed that is due, or NULL with *wake lowered to the next due time. */
static struct bus_feed *js_next(struct bus *bus, int64_t now, int64_t *wake)
{
    for (struct list *n = bus->js_todo.next; n != &bus->js_todo; n = n->next) {
        struct bus_feed *f = container_of(n, struct bus_feed, js_node);
        if (f->js_due_ms <= now)
            return f;
        if (f->js_due_ms < *wake)
            *wake = f->js_due_ms;
    }
    return NULL;
}

static void wait_until_ms(pthread_cond_t *cond, pthread_mutex_t *lock, int64_t wake_ms)
{
    int64_t left = wake_ms - bus_now_ms();
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
void *bus_run_jetstream(void *arg)
{
    struct bus *bus = arg;
    int64_t next_check = 0;
    pthread_mutex_lock(&bus->lock);
    while (!bus->stopping) {
        int64_t now = bus_now_ms();
        bool up = atomic_load(&bus->connected);
        js_expire(bus, now);
        if (up && now >= next_check) {
            js_check(bus, now);
            next_check = now + BUS_JS_CHECK_MS;
        }
        int64_t wake = up ? next_check : now + BUS_JS_PAUSE_MS;
        struct bus_feed *f = NULL;
        struct bus_gone *g = NULL;
        if (up && now < bus->js_resume_ms) {
            if (bus->js_resume_ms < wake)
                wake = bus->js_resume_ms;
        } else if (up) {
            f = js_next(bus, now, &wake);
            if (!f && !list_empty(&bus->js_gone)) {
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
                bus->js_resume_ms = bus_now_ms() + bus->js_pause_ms;
            }
            continue;
        }
        if (!f) {
            wait_until_ms(&bus->wake_js, &bus->lock, wake);
            continue;
        }
        list_remove(&f->js_node);
        f->js_queued = false;
        /* The record outlives the thread; a feed released meanwhile drops what was made. */
        struct bus_jstream *js = container_of(f, struct bus_jstream, feed);
        if (!list_empty(&f->ends)) {
            look_up_ends(bus, js);
            if (!list_empty(&f->ends))
                feed_queue(bus, f, 0);
        }
        pthread_mutex_unlock(&bus->lock);
        natsSubscription *ns = NULL;
        char *name = NULL;
        char why[256] = "";
        int filled = fill(bus, js, why, sizeof(why));
        bool more = filled == 0, make = false;
        if (filled > 0) {
            pthread_mutex_lock(&f->lock);
            more = !drain(bus, f);
            /* A live consumer that only jumped goes on; a released feed needs none. */
            make = !more && !f->live && !list_empty(&f->subs);
            pthread_mutex_unlock(&f->lock);
        }
        if (make)
            js_make(bus, js, &ns, &name, why, sizeof(why));
        pthread_mutex_lock(&bus->lock);
        if (more) /* a long gap, or another among the held: after other feeds' turns */
            feed_queue(bus, f, 0);
        else if (filled < 0 || make)
            js_made(bus, js, ns, name, why);
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

/*
 * Whether one more JetStream-backed pattern may have a consumer. At the
 * cap, the one unwatched the longest (lingering for a reconnect) gives
 * its slot up: a resume on it is then served by a replay. Only when every
 * slot is watched is the pattern refused, counted and logged (once a
 * second). Under bus->lock.
 */
/* Whether every pattern f feeds is unwatched; under bus->lock. */
static bool feed_unwatched(struct bus_feed *f)
{
    bool idle = true;
    for (struct list *n = f->subs.next; n != &f->subs && idle; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, feed_node);
        pthread_mutex_lock(&bs->lock);
        idle = bs->interested == 0;
        pthread_mutex_unlock(&bs->lock);
    }
    return idle;
}

bool bus_js_admit(struct bus *bus, struct bus_jstream *js, const char *pattern)
{
    if (js->feed.js_slot || bus->js_live < bus->js_live_max)
        return true;
    for (struct list *n = bus->idle.next; n != &bus->idle; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, idle_node);
        struct bus_feed *f = bs->js ? &bs->js->feed : NULL;
        if (f && f->js_slot && feed_unwatched(f)) {
            log_debug("jetstream: stream %s gives its consumer up to %s", bs->stream, pattern);
            while (!list_empty(&f->subs)) /* the last one releases the feed */
                bus_drop_sub(bus, container_of(f->subs.next, struct bus_sub, feed_node));
            return true;
        }
    }
    atomic_fetch_add(&bus->js_limit_hits, 1);
    int64_t now = bus_now_ms(), logged = atomic_load(&bus->js_limit_logged_ms);
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
    int64_t give_up = bus_now_ms() + BUS_JS_START_MS;
    while ((s = js_GetStreamInfo(&si, bus->js, name, NULL, &jerr)) == NATS_TIMEOUT &&
           bus_now_ms() < give_up)
        log_info("jetstream: stream %s: no answer yet, asking again", name);
    if (s != NATS_OK) {
        char what[160];
        snprintf(what, sizeof(what), "JetStream stream %s", name);
        bus_js_why(err, errlen, what, s, jerr);
        return ERR_NATS;
    }
    struct bus_jstream *js = &bus->streams[bus->nstreams++];
    js->bus = bus;
    js->name = mem_strdup(name);
    struct bus_feed *f = &js->feed;
    pthread_mutex_init(&f->lock, NULL);
    f->exact = map_new();
    list_init(&f->wild);
    list_init(&f->subs);
    list_init(&f->js_node);
    list_init(&f->ends);
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
int bus_load_streams(struct bus *bus, const char *list, char *err, size_t errlen)
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
            bus_js_why(err, errlen, "JetStream stream list", s, jerr);
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
struct bus_jstream *bus_covering_stream(const struct bus *bus, const char *pattern)
{
    for (size_t i = 0; i < bus->nstreams; i++) {
        for (size_t k = 0; k < bus->streams[i].nsubjects; k++) {
            if (subject_covers(bus->streams[i].subjects[k], pattern))
                return &bus->streams[i];
        }
    }
    return NULL;
}

/*
 * Adds a new JetStream-backed pattern to its stream's feed: confirmed
 * when the feed has a position (a literal one after its end is looked
 * up), else when its consumer is made (the feed queued, holding a slot).
 * Under bus->lock.
 */
void bus_js_follow(struct bus *bus, struct bus_sub *bs)
{
    struct bus_feed *f = &bs->js->feed;
    bool wild = strpbrk(bs->pattern, "*>") != NULL;
    pthread_mutex_lock(&f->lock);
    list_insert_tail(&f->subs, &bs->feed_node);
    if (wild)
        list_insert_tail(&f->wild, &bs->wild_node);
    else
        map_put(f->exact, bs->pattern, strlen(bs->pattern), bs);
    /* The feed's position: every match above it is routed here from now on. */
    bool placed = f->has_pos;
    if (placed) {
        pthread_mutex_lock(&bs->lock);
        history_set_floor(bs->history, f->last);
        bs->has_floor = true;
        pthread_mutex_unlock(&bs->lock);
    }
    pthread_mutex_unlock(&f->lock);
    bs->js_give_up_ms = bus_now_ms() + BUS_JS_FOLLOW_MS;
    if (placed) {
        confirm_or_look_up(bus, f, bs);
        if (!list_empty(&f->ends))
            feed_queue(bus, f, 0);
        return;
    }
    if (!f->js_slot) {
        f->js_slot = true;
        bus->js_live++;
    }
    feed_queue(bus, f, 0);
}

/* Frees the feeds' own memory, once no NATS thread can call back. */
void bus_js_dispose(struct bus *bus)
{
    for (size_t i = 0; i < bus->nstreams; i++) {
        struct bus_feed *f = &bus->streams[i].feed;
        drop_held(f);
        free(f->held);
        free(f->consumer);
        map_free(f->exact);
        pthread_mutex_destroy(&f->lock);
    }
}
