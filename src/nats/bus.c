/*
 * bus: NATS connection and shared subscriptions (see bus.h; the
 * JetStream consumers are in bus_js.c, replay jobs in bus_replay.c,
 * what they share in bus_int.h).
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
 * holds one reference, its core NATS subscription one (dropped in
 * cnats's on-complete callback, which runs after its last message
 * callback has returned), and so does every replay job, and the flusher
 * while it works on it. A JetStream-backed pattern has no NATS
 * subscription of its own: its stream's feed (bus_js.c) routes to it
 * under the feed's lock, and forgets it before the table lets go. It is
 * confirmed once the feed has a position (at once, or by the JetStream
 * thread when the feed's first consumer is made), not by the flusher.
 *
 * Shutdown never waits for NATS beyond one API call per thread: consumers
 * are not deleted then (they expire on the server).
 */
#include "sluice/bus.h"

#include <inttypes.h>
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

/* bus_free() has begun: long JetStream retries give up. */
bool bus_stopping(struct bus *bus) { return atomic_load(&bus->closing); }

void bus_pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int64_t bus_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bus_sub_unref(struct bus_sub *bs)
{
    if (atomic_fetch_sub(&bs->refs, 1) != 1)
        return;
    history_free(bs->history);
    pthread_mutex_destroy(&bs->lock);
    free(bs->pattern);
    free(bs);
}

void bus_on_sub_complete(void *closure) { bus_sub_unref(closure); }

/* The message's Sse-Event header, or NULL. */
static const char *event_name(natsMsg *msg)
{
    const char *name = NULL;
    return natsMsgHeader_Get(msg, "Sse-Event", &name) == NATS_OK ? name : NULL;
}

bool bus_msg_ends(natsMsg *msg)
{
    const char *v = NULL;
    return natsMsgHeader_Get(msg, "Sse-End", &v) == NATS_OK;
}

/*
 * msg encoded once as event seq of bs, stored at time_ns. An Sse-End
 * message ends the subject it was published on: only a pattern that is
 * that subject carries the end (a wildcard's streams watch many subjects
 * and get its body, if any, as an ordinary event). An empty end is a
 * marker with no event.
 */
struct sse_event *bus_event_of(const struct bus_sub *bs, natsMsg *msg, uint64_t seq,
                               int64_t time_ns)
{
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    /* A request's "no responders" comes to its reply subject as a 503 status with no body. */
    bool refused = natsMsg_IsNoResponders(msg);
    bool ends = refused || bus_msg_ends(msg);
    struct sse_event *ev = ends && len == 0
                               ? sse_event_new_end(bs->id, seq)
                               : sse_event_new(bs->id, seq, event_name(msg),
                                               natsMsg_GetData(msg), len);
    ev->end = ends && strcmp(natsMsg_GetSubject(msg), bs->pattern) == 0;
    ev->refused = refused && ev->end;
    ev->time_ns = time_ns;
    return ev;
}

/*
 * Why an ended subscription is destroyed later: cnats 3.4 (Debian's)
 * looks a message's subscription up under the connection's lock, lets go
 * of the lock, and only then locks the subscription, without holding a
 * reference (natsConn_processMsg; newer cnats retains it). A subscription
 * destroyed in that window is used after it is freed: an ASan run of the
 * JetStream test crashed there once, with replay consumers ending while
 * their last messages arrived. Unsubscribed at once, it is out of the
 * lookup; its memory waits BUS_GRAVE_MS, far longer than the reader
 * thread holds a stale pointer, and bus_free() destroys the rest once
 * the connection (and its reader thread) is gone.
 */
#define BUS_GRAVE_MS 2000

void bus_end_sub(struct bus *bus, natsSubscription *ns)
{
    if (!ns)
        return;
    natsSubscription_Unsubscribe(ns);
    pthread_mutex_lock(&bus->grave_lock);
    if (bus->ngraves == bus->graves_cap) {
        bus->graves_cap = bus->graves_cap ? bus->graves_cap * 2 : 16;
        bus->graves = mem_realloc(bus->graves, bus->graves_cap * sizeof(*bus->graves));
    }
    bus->graves[bus->ngraves++] = (struct bus_grave){ns, bus_now_ms()};
    pthread_mutex_unlock(&bus->grave_lock);
}

/* Destroys the ended subscriptions ended at or before cutoff_ms (bus_now_ms clock). */
static void bury(struct bus *bus, int64_t cutoff_ms)
{
    pthread_mutex_lock(&bus->grave_lock);
    size_t n = 0;
    while (n < bus->ngraves && bus->graves[n].at_ms <= cutoff_ms)
        n++;
    if (n == 0) { /* the common case, and graves may still be NULL */
        pthread_mutex_unlock(&bus->grave_lock);
        return;
    }
    natsSubscription **dead = mem_alloc(n * sizeof(*dead));
    for (size_t i = 0; i < n; i++)
        dead[i] = bus->graves[i].ns;
    memmove(bus->graves, bus->graves + n, (bus->ngraves - n) * sizeof(*bus->graves));
    bus->ngraves -= n;
    pthread_mutex_unlock(&bus->grave_lock);
    for (size_t i = 0; i < n; i++)
        natsSubscription_Destroy(dead[i]);
    free(dead);
}

/*
 * Numbers (core NATS: seq 0 takes the next process-wide number), encodes
 * and records one message of bs, noting the workers to hand it to; under
 * bs->lock. NULL: a JetStream sequence at or below history's newest (a
 * remade consumer's redelivery), dropped.
 */
struct sse_event *bus_push_locked(struct bus_sub *bs, natsMsg *msg, uint64_t seq,
                                  int64_t time_ns, size_t *targets, size_t *ntargets)
{
    struct bus *bus = bs->bus;
    atomic_fetch_add_explicit(&bus->messages, 1, memory_order_relaxed);
    /*
     * The first end wins: an end after an end (a gateway ending a
     * cancelled request its service had just ended) changes nothing for
     * anyone and is not numbered.
     */
    if (history_end(bs->history) && bus_msg_ends(msg))
        return NULL;
    if (seq == 0)
        seq = atomic_fetch_add_explicit(&bus->seq, 1, memory_order_relaxed) + 1;
    else if (seq <= history_last(bs->history))
        return NULL;
    struct sse_event *ev = bus_event_of(bs, msg, seq, time_ns);
    history_push(bs->history, sse_event_ref(ev));
    *ntargets = 0;
    for (size_t w = 0; w < bus->p.nworkers; w++) {
        if (bs->counts[w])
            targets[(*ntargets)++] = w;
    }
    return ev;
}

/* Hands ev to its workers, outside the lock; drops the caller's reference. */
void bus_hand_out(struct bus *bus, struct sse_event *ev, const size_t *targets,
                  size_t ntargets)
{
    for (size_t i = 0; i < ntargets; i++)
        bus->p.post(bus->p.worker_ctxs[targets[i]],
                    (struct bus_mail){.kind = BUS_MAIL_EVENT, .ev = sse_event_ref(ev)});
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
bool bus_reserved_leak(struct bus_sub *bs, natsMsg *msg)
{
    if (!subject_reserved(natsMsg_GetSubject(msg)) || subject_reserved(bs->pattern))
        return false;
    atomic_fetch_add_explicit(&bs->bus->reserved_dropped, 1, memory_order_relaxed);
    return true;
}

void bus_answer_free(struct bus_answer *a)
{
    if (!a)
        return;
    free(a->data);
    free(a);
}

/* A reply to bus_ask(): to the asking worker, by the id in its subject's last token. */
static void on_ask_reply(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus_asker *k = closure;
    const char *subject = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subject, '.');
    char *end = NULL;
    unsigned long long id = dot ? strtoull(dot + 1, &end, 10) : 0;
    if (!dot || !end || *end || id == 0) {
        natsMsg_Destroy(msg);
        return;
    }
    struct bus_answer *a = mem_calloc(1, sizeof(*a));
    a->id = id;
    a->status = 200;
    const char *v = NULL;
    if (natsMsg_IsNoResponders(msg))
        a->status = 503;
    else if (natsMsgHeader_Get(msg, "Sluice-Status", &v) == NATS_OK && v) {
        long st = strtol(v, &end, 10);
        a->status = (*end || st < 100 || st > 599) ? 500 : (int)st;
    }
    int len = natsMsg_GetDataLength(msg);
    a->len = len > 0 ? (size_t)len : 0;
    a->data = mem_alloc(a->len + 1);
    memcpy(a->data, natsMsg_GetData(msg), a->len);
    a->data[a->len] = '\0';
    natsMsg_Destroy(msg);
    struct bus_mail m = {.kind = BUS_MAIL_ANSWER};
    m.answer = a;
    k->bus->p.post(k->bus->p.worker_ctxs[k->worker], m);
}

int bus_ask(struct bus *bus, size_t worker, const char *subject, uint64_t id, const void *data,
            size_t len)
{
    if (!bus->askers || worker >= bus->p.nworkers)
        return ERR_NATS;
    char reply[256];
    snprintf(reply, sizeof(reply), "%s.%" PRIu64, bus->askers[worker].inbox, id);
    natsStatus s = natsConnection_PublishRequest(bus->nc, subject, reply, data, (int)len);
    return s == NATS_OK ? 0 : ERR_NATS;
}

/* A control message (revocation): its body goes to the process as it is, parsed there. */
static void on_control_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus *bus = closure;
    int len = natsMsg_GetDataLength(msg);
    bus->p.control(bus->p.control_ctx, natsMsg_GetData(msg), len > 0 ? (size_t)len : 0);
    natsMsg_Destroy(msg);
}

static void on_nats_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus_sub *bs = closure;
    if (bus_reserved_leak(bs, msg)) {
        natsMsg_Destroy(msg);
        return;
    }
    size_t targets[BUS_MAX_WORKERS], ntargets = 0;
    pthread_mutex_lock(&bs->lock);
    struct sse_event *ev = bus_push_locked(bs, msg, 0, wall_ns(), targets, &ntargets);
    pthread_mutex_unlock(&bs->lock);
    if (ev)
        bus_hand_out(bs->bus, ev, targets, ntargets);
    natsMsg_Destroy(msg);
}

/*
 * The probe of a JetStream-backed reply subject. nats-server answers a
 * request nobody takes with a 503 status sent only to the requester's own
 * subscription on the reply subject (2.9: subForReply), never through
 * JetStream: a reply subject read from a consumer would never hear it,
 * and the POST would wait for its 504. So such a subject also gets a core
 * subscription that passes on that notice alone; every real reply comes
 * through the consumer. The notice is numbered just above history's
 * newest: nothing else arrives on a subject nobody answers.
 */
static void on_probe_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus_sub *bs = closure;
    if (!natsMsg_IsNoResponders(msg)) {
        natsMsg_Destroy(msg);
        return;
    }
    size_t targets[BUS_MAX_WORKERS], ntargets = 0;
    pthread_mutex_lock(&bs->lock);
    struct sse_event *ev = bus_push_locked(bs, msg, history_last(bs->history) + 1, wall_ns(),
                                           targets, &ntargets);
    pthread_mutex_unlock(&bs->lock);
    if (ev)
        bus_hand_out(bs->bus, ev, targets, ntargets);
    natsMsg_Destroy(msg);
}

/* Whether pattern is a request stream's reply subject (under bus_params.reply_prefix). */
static bool is_reply_subject(const struct bus *bus, const char *pattern)
{
    const char *p = bus->p.reply_prefix;
    size_t n = p ? strlen(p) : 0;
    return n && strncmp(pattern, p, n) == 0 && pattern[n] == '.' && !strpbrk(pattern, "*>");
}

/* Removes bs from the table and ends its NATS subscription; under bus->lock. */
void bus_drop_sub(struct bus *bus, struct bus_sub *bs)
{
    map_del(bus->subs, bs->pattern, strlen(bs->pattern));
    list_remove(&bs->node);
    list_remove(&bs->confirm_node);
    list_remove(&bs->idle_node);
    bs->dropped = true;
    log_debug("nats: unsubscribed from %s", bs->pattern);
    bus_end_sub(bus, bs->ns);
    bs->ns = NULL;
    bus_end_sub(bus, bs->probe);
    bs->probe = NULL;
    if (bs->stream)
        bus_js_drop(bus, bs);
    bus_sub_unref(bs); /* the table's */
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
    int64_t now = bus_now_ms() - BUS_JS_STALL_MS + BUS_JS_REJOIN_MS;
    pthread_mutex_lock(&bus->lock);
    bus_js_rejoin(bus, now);
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
void bus_confirm(struct bus *bus, struct bus_sub *bs)
{
    list_remove(&bs->confirm_node);
    pthread_mutex_lock(&bs->lock);
    bs->confirmed = true;
    bs->failed = bs->stream && !bs->has_floor; /* the feed has no position for it */
    struct bus_mail m = {.kind = bs->failed ? BUS_MAIL_FAILED : BUS_MAIL_READY, .sub_id = bs->id};
    for (size_t w = 0; w < bus->p.nworkers; w++) {
        if (bs->counts[w])
            bus->p.post(bus->p.worker_ctxs[w], m);
    }
    pthread_mutex_unlock(&bs->lock);
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
                bus_confirm(bus, batch[i]);
            bus_sub_unref(batch[i]);
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
    pthread_mutex_init(&bus->grave_lock, NULL);
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
#ifdef SLUICE_TEST_HOOKS
    const char *drop = getenv("SLUICE_TEST_REPLAY_DROP");
    if (drop && (bus->test_replay_drop = strtoull(drop, NULL, 10)) > 0)
        log_warn("test hook: every JetStream replay consumer loses its message %llu",
                 (unsigned long long)bus->test_replay_drop);
#endif
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
    if (p->control_subject && *p->control_subject && p->control) {
        s = natsConnection_Subscribe(&bus->control, bus->nc, p->control_subject, on_control_msg,
                                     bus);
        if (s != NATS_OK) {
            snprintf(err, errlen, "cannot subscribe to %s: %s", p->control_subject,
                     natsStatus_GetText(s));
            bus_free(bus);
            return ERR_NATS;
        }
    }
    if (p->ask_inboxes) {
        bus->askers = mem_calloc(p->nworkers, sizeof(*bus->askers));
        for (size_t i = 0; i < p->nworkers && s == NATS_OK; i++) {
            struct bus_asker *k = &bus->askers[i];
            k->bus = bus;
            k->worker = i;
            natsInbox *inbox = NULL;
            s = natsInbox_Create(&inbox);
            if (s == NATS_OK) {
                char wild[256];
                k->inbox = mem_strdup(inbox);
                snprintf(wild, sizeof(wild), "%s.*", k->inbox);
                s = natsConnection_Subscribe(&k->sub, bus->nc, wild, on_ask_reply, k);
            }
            natsInbox_Destroy(inbox);
        }
        if (s != NATS_OK) {
            snprintf(err, errlen, "cannot subscribe the auth callout's reply inboxes: %s",
                     natsStatus_GetText(s));
            bus_free(bus);
            return ERR_NATS;
        }
    }
    if (p->ds_stream && *p->ds_stream && bus_ds_open(bus, p, err, errlen) != 0) {
        bus_free(bus);
        return ERR_NATS;
    }
    if (p->jetstream && *p->jetstream) {
        if (bus_load_streams(bus, p->jetstream, err, errlen) != 0) {
            bus_free(bus);
            return ERR_NATS;
        }
        size_t n = p->replays ? p->replays : 1;
        /* Each replay thread holds at most one consumer at a time: theirs come first. */
        size_t max = p->max_consumers ? p->max_consumers : SIZE_MAX;
        bus->js_live_max = max > n ? max - n : 1;
        if (pthread_create(&bus->jsthread, NULL, bus_run_jetstream, bus) != 0) {
            snprintf(err, errlen, "cannot start the JetStream thread");
            bus_free(bus);
            return ERR_NATS;
        }
        bus->js_running = true;
        bus->replayers = mem_calloc(n, sizeof(*bus->replayers));
        for (; bus->nreplayers < n; bus->nreplayers++) {
            if (pthread_create(&bus->replayers[bus->nreplayers], NULL, bus_run_replays, bus) != 0) {
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
    /* The same for a DS job: its calls end within one wait, then fail at once. */
    bus_ds_stop(bus);
    while (!list_empty(&bus->jobs)) { /* queued, never run: nobody reads the answers now */
        struct bus_job *job = container_of(bus->jobs.next, struct bus_job, node);
        list_remove(&job->node);
        while (job->waiters) {
            struct bus_replay *r = job->waiters;
            job->waiters = r->next;
            bus_replay_free(r);
        }
        bus_sub_unref(job->bs);
        free(job);
    }
    pthread_mutex_lock(&bus->lock);
    while (!list_empty(&bus->all))
        bus_drop_sub(bus, container_of(bus->all.next, struct bus_sub, node));
    pthread_mutex_unlock(&bus->lock);
    if (bus->control) {
        natsSubscription_Unsubscribe(bus->control);
        natsSubscription_Destroy(bus->control);
    }
    for (size_t i = 0; bus->askers && i < bus->p.nworkers; i++) {
        if (bus->askers[i].sub) {
            natsSubscription_Unsubscribe(bus->askers[i].sub);
            natsSubscription_Destroy(bus->askers[i].sub);
        }
    }
    if (bus->nc) {
        natsConnection_Close(bus->nc);
        natsConnection_Destroy(bus->nc);
    }
    bury(bus, INT64_MAX); /* no reader thread is left to hold a stale pointer */
    free(bus->graves);
    /* Waits for the delivery threads, so every on-complete callback has run. */
    jsCtx_Destroy(bus->js);
    bus_ds_close(bus);
    natsStatus s = nats_CloseAndWait(2000);
    log_debug("nats: library closed: %s", natsStatus_GetText(s));
    /* After the delivery threads: a reply callback may have been running until then. */
    for (size_t i = 0; bus->askers && i < bus->p.nworkers; i++)
        free(bus->askers[i].inbox);
    free(bus->askers);
    bus_js_dispose(bus);
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
    pthread_mutex_destroy(&bus->grave_lock);
    free(bus);
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
        int64_t now = bus_now_ms();
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
        bus_drop_sub(bus, container_of(bus->idle.next, struct bus_sub, idle_node));
    }
    if (!bs) {
        struct bus_jstream *js = bus_covering_stream(bus, pattern);
        if (js && !bus_js_admit(bus, js, pattern)) {
            rc = ERR_NATS;
            goto out;
        }
        bs = mem_calloc(1, sizeof(*bs) + bus->p.nworkers * sizeof(bs->counts[0]));
        bs->bus = bus;
        atomic_init(&bs->refs, 1); /* the table's */
        bs->id = ++bus->next_id;
        bs->pattern = mem_strdup(pattern);
        bs->stream = js ? js->name : NULL;
        bs->js = js;
        list_init(&bs->confirm_node);
        list_init(&bs->idle_node);
        list_init(&bs->feed_node);
        list_init(&bs->wild_node);
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
                (s = natsSubscription_SetOnCompleteCB(bs->ns, bus_on_sub_complete, bs)) == NATS_OK;
            /* No silent drops at cnats's default 65k pending: the workers' caps bound memory. */
            if (s == NATS_OK)
                s = natsSubscription_SetPendingLimits(bs->ns, -1, -1);
            if (s != NATS_OK) {
                log_error("nats: cannot subscribe to %s: %s", pattern, natsStatus_GetText(s));
                bus_end_sub(bus, bs->ns);
                if (!completes)
                    bus_sub_unref(bs);
                bus_sub_unref(bs);
                rc = ERR_NATS;
                goto out;
            }
        }
        if (bs->stream && is_reply_subject(bus, pattern)) {
            /* Sent before the consumer is asked for: nats-server has it when that answers. */
            atomic_fetch_add(&bs->refs, 1); /* the probe's, dropped on complete */
            natsStatus s = natsConnection_Subscribe(&bs->probe, bus->nc, pattern, on_probe_msg, bs);
            bool completes = s == NATS_OK && (s = natsSubscription_SetOnCompleteCB(
                                                  bs->probe, bus_on_sub_complete, bs)) == NATS_OK;
            if (s != NATS_OK) {
                /* Without it a refused request is a 504, not a 503: worse, not wrong. */
                log_warn("nats: no responders probe on %s: %s", pattern, natsStatus_GetText(s));
                bus_end_sub(bus, bs->probe);
                bs->probe = NULL;
                if (!completes)
                    bus_sub_unref(bs);
            }
        }
        map_put(bus->subs, pattern, plen, bs);
        list_insert_tail(&bus->all, &bs->node);
        if (bs->stream)
            bus_js_follow(bus, bs);
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
            bs->idle_since_ms = bus_now_ms();
            list_insert_tail(&bus->idle, &bs->idle_node);
        }
        bool failed = bs->failed; /* nothing to keep: the next stream tries afresh */
        pthread_mutex_unlock(&bs->lock);
        if (idle && (bus->p.keep_ms <= 0 || failed))
            bus_drop_sub(bus, bs);
    }
    pthread_mutex_unlock(&bus->lock);
}

/* Fills out from history alone; under the subscription's lock. False: a replay job must. */
static bool resume_from_history(const struct bus_sub *bs, const struct bus_start *start,
                                struct bus_resume *out)
{
    const struct history *h = bs->history;
    out->last = out->before = history_last(h);
    out->end = history_end(h);
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
            bus_add_waiter(bus, bs, r);
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
    int64_t now = bus_now_ms();
    bury(bus, now - BUS_GRAVE_MS);
    pthread_mutex_lock(&bus->lock);
    /* Lingering subscriptions are kept in the order they lapsed: stop at the first still young. */
    while (!list_empty(&bus->idle)) {
        struct bus_sub *bs = container_of(bus->idle.next, struct bus_sub, idle_node);
        pthread_mutex_lock(&bs->lock);
        bool expired = now - bs->idle_since_ms >= bus->p.keep_ms;
        pthread_mutex_unlock(&bs->lock);
        if (!expired)
            break;
        bus_drop_sub(bus, bs);
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
    out->replay_failures = atomic_load(&bus->replay_failures);
    out->replay_losses = atomic_load(&bus->replay_losses);
    out->replay_requests = atomic_load(&bus->replay_requests);
    out->replays_active = atomic_load(&bus->replays_active);
    out->replayed_events = atomic_load(&bus->replayed_events);
    pthread_mutex_lock(&bus->lock);
    out->js_consumers = bus->js_live + (size_t)atomic_load(&bus->js_replaying);
    pthread_mutex_unlock(&bus->lock);
    out->js_resets = atomic_load(&bus->js_resets);
    out->js_limit_hits = atomic_load(&bus->js_limit_hits);
    out->js_gaps = atomic_load(&bus->js_gaps);
    out->js_gap_filled = atomic_load(&bus->js_gap_filled);
    out->ds_jobs = bus_ds_jobs(bus);
}

int bus_send(struct bus *bus, const char *subject, const char *reply,
             const char *const *headers, size_t nheaders, const void *data, size_t len)
{
    if (!atomic_load(&bus->connected))
        return ERR_NATS;
    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, subject, reply, data, (int)len);
    /* An empty value is left out: cnats 3.4 reads the next header line as its value. */
    for (size_t i = 0; s == NATS_OK && i + 1 < 2 * nheaders; i += 2) {
        if (headers[i + 1] && *headers[i + 1])
            s = natsMsgHeader_Add(msg, headers[i], headers[i + 1]);
    }
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(bus->nc, msg);
    natsMsg_Destroy(msg);
    if (s != NATS_OK) {
        log_warn("nats: publish to %s failed: %s", subject, natsStatus_GetText(s));
        return ERR_NATS;
    }
    return 0;
}

bool bus_subject_ended(struct bus *bus, const char *subject)
{
    bool ended = false;
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, subject, strlen(subject));
    if (bs) {
        pthread_mutex_lock(&bs->lock);
        ended = history_end(bs->history) != 0;
        pthread_mutex_unlock(&bs->lock);
    }
    pthread_mutex_unlock(&bus->lock);
    return ended;
}
