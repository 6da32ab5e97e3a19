/*
 * bus_js: JetStream-backed patterns — the streams' subjects, the live
 * consumers and the JetStream thread (part of the bus, see bus.c and
 * bus_int.h).
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
 * BUS_JS_FOLLOW_MS fails (BUS_MAIL_FAILED); a followed one is remade
 * until it works. Patterns that hold a consumer are capped
 * (max_consumers less one per replay thread): at the cap, a new
 * JetStream-backed pattern takes the slot of the one unwatched longest,
 * and when every slot is watched, bus_subscribe() refuses it.
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

static void js_lost(struct bus *bus, struct bus_sub *bs);

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
    bool status = bus_js_status(msg, &said);
    if (!status && natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg); /* not from a consumer: someone published on our inbox */
        return;
    }
    bool lost = false;
    pthread_mutex_lock(&bs->lock);
    if (ns == bs->live) {
        bs->seen_ms = bus_now_ms();
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
            if (!bus_reserved_leak(bs, msg))
                ev = bus_push_locked(bs, msg, seq, meta->Timestamp, targets, &ntargets);
        }
        if (lost)
            bs->live = NULL;
    }
    pthread_mutex_unlock(&bs->lock);
    if (ev)
        bus_hand_out(bs->bus, ev, targets, ntargets);
    if (lost)
        js_lost(bs->bus, bs);
    if (meta)
        jsMsgMetaData_Destroy(meta);
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
 * A push consumer of bs's pattern in its stream delivering to inbox:
 * no acks, an idle heartbeat (so a lost consumer shows), and an
 * inactivity threshold, so that nats-server deletes one we abandoned
 * without asking (a NATS outage, a killed gateway). The caller sets
 * where it starts.
 */
void bus_consumer_config(jsConsumerConfig *cc, const struct bus_sub *bs, const char *inbox)
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

/* Takes bs off the JetStream thread's queue and frees its consumer slot; under bus->lock. */
static void js_release(struct bus *bus, struct bus_sub *bs)
{
    if (bs->js_queued) {
        list_remove(&bs->js_node);
        bs->js_queued = false;
    }
    if (bs->js_slot) {
        bs->js_slot = false;
        bus->js_live--;
    }
}

/* bs leaves the table: its consumer goes, its slot is free; under bus->lock. */
void bus_js_drop(struct bus *bus, struct bus_sub *bs)
{
    js_release(bus, bs);
    bus_js_forget(bus, bs->stream, bs->consumer);
    bs->consumer = NULL;
}

/* bs's first consumer could not be made: its streams are told; under bus->lock. */
static void js_fail(struct bus *bus, struct bus_sub *bs, const char *why)
{
    log_warn("jetstream: cannot subscribe to %s: %s", bs->pattern, why);
    js_release(bus, bs);
    bus_confirm(bus, bs); /* no ns: BUS_MAIL_FAILED, and bs->failed */
}

/*
 * A literal pattern's first consumer begins at the stream's end: a subject
 * its publisher ended before then (Sse-End) would look live to us. Its
 * last stored message says; history learns the end unless something
 * newer arrived meanwhile. One JetStream call, on the JetStream thread; a
 * failure (or no message) leaves the subject live, as before.
 */
static void js_find_end(struct bus *bus, struct bus_sub *bs)
{
    if (strpbrk(bs->pattern, "*>"))
        return;
    natsMsg *msg = NULL;
    jsErrCode jerr = 0;
    if (js_GetLastMsg(&msg, bus->js, bs->stream, bs->pattern, NULL, &jerr) != NATS_OK)
        return;
    if (bus_msg_ends(msg)) {
        pthread_mutex_lock(&bs->lock);
        history_set_end(bs->history, natsMsg_GetSequence(msg));
        pthread_mutex_unlock(&bs->lock);
    }
    natsMsg_Destroy(msg);
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
                                              ns, bus_on_sub_complete, bs)) == NATS_OK;
        if (!completes)
            bus_sub_unref(bs);
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
    bs->seen_ms = bus_now_ms();
    bool first = !bs->has_floor;
    uint64_t from = history_last(bs->history) + 1;
    pthread_mutex_unlock(&bs->lock);

    jsConsumerConfig cc;
    bus_consumer_config(&cc, bs, inbox);
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
        if (first)
            js_find_end(bus, bs);
        *name = mem_strdup(ci->Name);
        *out = ns;
        ns = NULL;
    } else {
        bus_js_why(why, whylen, bs->stream, s, jerr);
        pthread_mutex_lock(&bs->lock);
        if (bs->live == ns)
            bs->live = NULL;
        pthread_mutex_unlock(&bs->lock);
    }
out:
    jsConsumerInfo_Destroy(ci);
    bus_end_sub(bus, ns);
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
    int64_t now = bus_now_ms();
    if (ns && (bs->dropped || bus->stopping)) {
        bus_end_sub(bus, ns);
        bus_js_forget(bus, bs->stream, name);
        return;
    }
    if (ns) {
        natsSubscription *old = bs->ns;
        bs->ns = ns;
        bus_end_sub(bus, old);
        bus_js_forget(bus, bs->stream, bs->consumer);
        bs->consumer = name;
        bs->js_tries = 0;
        bus->js_pause_ms = 0;
        if (!bs->confirmed) {
            bus_confirm(bus, bs);
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
                bus->js_resume_ms = bus_now_ms() + bus->js_pause_ms;
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
        bus_sub_unref(bs);
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
bool bus_js_admit(struct bus *bus, const char *pattern)
{
    if (bus->js_live < bus->js_live_max)
        return true;
    for (struct list *n = bus->idle.next; n != &bus->idle; n = n->next) {
        struct bus_sub *bs = container_of(n, struct bus_sub, idle_node);
        if (bs->js_slot) {
            log_debug("jetstream: %s gives its consumer up to %s", bs->pattern, pattern);
            bus_drop_sub(bus, bs);
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
const char *bus_covering_stream(const struct bus *bus, const char *pattern)
{
    for (size_t i = 0; i < bus->nstreams; i++) {
        for (size_t k = 0; k < bus->streams[i].nsubjects; k++) {
            if (subject_covers(bus->streams[i].subjects[k], pattern))
                return bus->streams[i].name;
        }
    }
    return NULL;
}

/* Queues a new JetStream-backed pattern's first consumer, holding a slot; under bus->lock. */
void bus_js_follow(struct bus *bus, struct bus_sub *bs)
{
    bs->js_slot = true;
    bus->js_live++;
    bs->js_give_up_ms = bus_now_ms() + BUS_JS_FOLLOW_MS;
    js_queue(bus, bs, 0);
}
