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
 * Lifetime: a subscription's record is freed in cnats's on-complete
 * callback, which runs after its last message callback has returned;
 * freeing it at unsubscribe would race a callback already in flight.
 */
#include "sluice/bus.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/err.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/mem.h"

#define BUS_MAX_WORKERS 64

struct bus_sub {
    struct bus *bus;
    natsSubscription *ns;
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
    unsigned counts[];       /* per worker; under lock */
};

struct bus {
    natsConnection *nc;
    pthread_mutex_t lock;
    struct map *subs; /* pattern -> bus_sub; under lock */
    struct list all;  /* bus_sub.node; under lock */
    struct list unconfirmed; /* bus_sub.confirm_node; under lock */
    struct list idle;        /* bus_sub.idle_node, oldest first; under lock */
    pthread_cond_t wake_flusher;
    pthread_t flusher;
    bool flusher_running;
    bool stopping;    /* under lock */
    uint64_t next_id;
    struct bus_params p;
    struct history_budget budget;
    atomic_uint_fast64_t seq; /* last sequence handed out */
    atomic_bool connected;
    atomic_uint_fast64_t reconnects;
    atomic_uint_fast64_t messages;
    atomic_bool closing; /* bus_free() has begun: disconnects are expected */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_nats_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus_sub *bs = closure;
    struct bus *bus = bs->bus;
    size_t targets[BUS_MAX_WORKERS];
    size_t ntargets = 0;
    const char *name = NULL;
    if (natsMsgHeader_Get(msg, "Sse-Event", &name) != NATS_OK)
        name = NULL;

    atomic_fetch_add_explicit(&bus->messages, 1, memory_order_relaxed);
    pthread_mutex_lock(&bs->lock);
    uint64_t seq = atomic_fetch_add_explicit(&bus->seq, 1, memory_order_relaxed) + 1;
    struct sse_event *ev = sse_event_new(bs->id, seq, name, natsMsg_GetData(msg),
                                         (size_t)natsMsg_GetDataLength(msg));
    history_push(bs->history, sse_event_ref(ev));
    for (size_t w = 0; w < bus->p.nworkers; w++) {
        if (bs->counts[w])
            targets[ntargets++] = w;
    }
    pthread_mutex_unlock(&bs->lock);

    for (size_t i = 0; i < ntargets; i++)
        bus->p.deliver(bus->p.worker_ctxs[targets[i]], sse_event_ref(ev));
    sse_event_unref(ev);
    natsMsg_Destroy(msg);
}

static void on_sub_complete(void *closure)
{
    struct bus_sub *bs = closure;
    history_free(bs->history);
    pthread_mutex_destroy(&bs->lock);
    free(bs->pattern);
    free(bs);
}

/* Removes bs from the table and ends its NATS subscription; under bus->lock. */
static void drop_sub(struct bus *bus, struct bus_sub *bs)
{
    map_del(bus->subs, bs->pattern, strlen(bs->pattern));
    list_remove(&bs->node);
    list_remove(&bs->confirm_node);
    list_remove(&bs->idle_node);
    log_debug("nats: unsubscribed from %s", bs->pattern);
    /* bs may be freed by on_sub_complete on a cnats thread as soon as this returns. */
    natsSubscription *ns = bs->ns;
    natsSubscription_Unsubscribe(ns);
    natsSubscription_Destroy(ns);
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
    (void)closure;
    log_warn("nats: asynchronous error on subject %s: %s",
             ns ? natsSubscription_GetSubject(ns) : "-", natsStatus_GetText(s));
}

/* Sends the confirmation notice to every worker interested in bs; under bus->lock. */
static void confirm(struct bus *bus, struct bus_sub *bs)
{
    list_remove(&bs->confirm_node);
    pthread_mutex_lock(&bs->lock);
    bs->confirmed = true;
    for (size_t w = 0; w < bus->p.nworkers; w++) {
        if (bs->counts[w])
            bus->p.deliver(bus->p.worker_ctxs[w], sse_event_new(bs->id, 0, NULL, NULL, 0));
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
        struct list batch;
        list_init(&batch);
        while (!list_empty(&bus->unconfirmed)) {
            struct list *n = bus->unconfirmed.next;
            list_remove(n);
            list_insert_tail(&batch, n);
        }
        pthread_mutex_unlock(&bus->lock);
        natsStatus s = natsConnection_FlushTimeout(bus->nc, 2000);
        if (s != NATS_OK)
            log_debug("nats: subscription round trip: %s; answering anyway",
                      natsStatus_GetText(s));
        pthread_mutex_lock(&bus->lock);
        while (!list_empty(&batch))
            confirm(bus, container_of(batch.next, struct bus_sub, confirm_node));
    }
    pthread_mutex_unlock(&bus->lock);
    return NULL;
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
    struct timespec ts;

    pthread_mutex_init(&bus->lock, NULL);
    bus->subs = map_new();
    list_init(&bus->all);
    list_init(&bus->unconfirmed);
    list_init(&bus->idle);
    pthread_cond_init(&bus->wake_flusher, NULL);
    bus->p = *p;
    bus->budget.max = p->history_total_bytes;
    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_init(&bus->seq, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);

    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, p->url);
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
    pthread_mutex_unlock(&bus->lock);
    if (bus->flusher_running)
        pthread_join(bus->flusher, NULL);
    pthread_mutex_lock(&bus->lock);
    while (!list_empty(&bus->all))
        drop_sub(bus, container_of(bus->all.next, struct bus_sub, node));
    pthread_mutex_unlock(&bus->lock);
    if (bus->nc) {
        natsConnection_Close(bus->nc);
        natsConnection_Destroy(bus->nc);
    }
    /* Waits for the delivery threads, so every on-complete callback has run. */
    natsStatus s = nats_CloseAndWait(2000);
    log_debug("nats: library closed: %s", natsStatus_GetText(s));
    map_free(bus->subs);
    pthread_cond_destroy(&bus->wake_flusher);
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

int bus_subscribe(struct bus *bus, size_t worker, const char *pattern, uint64_t *sub_id,
                  bool *confirmed)
{
    int rc = 0;
    size_t plen = strlen(pattern);
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, plen);
    if (!bs) {
        bs = mem_calloc(1, sizeof(*bs) + bus->p.nworkers * sizeof(bs->counts[0]));
        bs->bus = bus;
        bs->id = ++bus->next_id;
        bs->pattern = mem_strdup(pattern);
        list_init(&bs->confirm_node);
        list_init(&bs->idle_node);
        pthread_mutex_init(&bs->lock, NULL);
        /*
         * A fresh number for the floor: the last id of an earlier, lapsed
         * subscription on this pattern is below it, so resuming from it
         * reads as expired even when nothing else was numbered meanwhile
         * (messages published while nobody subscribed are lost to us).
         */
        bs->history = history_new(bus->p.history_events, bus->p.history_bytes, &bus->budget,
                                  atomic_fetch_add(&bus->seq, 1) + 1);
        natsStatus s = natsConnection_Subscribe(&bs->ns, bus->nc, pattern, on_nats_msg, bs);
        if (s == NATS_OK)
            s = natsSubscription_SetOnCompleteCB(bs->ns, on_sub_complete, bs);
        /* No silent drops at cnats's default 65k pending: the workers' caps bound memory. */
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(bs->ns, -1, -1);
        if (s != NATS_OK) {
            log_error("nats: cannot subscribe to %s: %s", pattern, natsStatus_GetText(s));
            if (bs->ns) {
                natsSubscription_Unsubscribe(bs->ns);
                natsSubscription_Destroy(bs->ns);
            } else {
                on_sub_complete(bs);
            }
            rc = ERR_NATS;
            goto out;
        }
        map_put(bus->subs, pattern, plen, bs);
        list_insert_tail(&bus->all, &bs->node);
        list_insert_tail(&bus->unconfirmed, &bs->confirm_node);
        pthread_cond_signal(&bus->wake_flusher);
        log_debug("nats: subscribed to %s (sub %llu)", pattern, (unsigned long long)bs->id);
    }
    pthread_mutex_lock(&bs->lock);
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
        pthread_mutex_unlock(&bs->lock);
        if (idle && bus->p.keep_ms <= 0)
            drop_sub(bus, bs);
    }
    pthread_mutex_unlock(&bus->lock);
}

int bus_resume(struct bus *bus, const char *pattern, bool resume, uint64_t after,
               struct bus_resume *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, strlen(pattern));
    if (bs) {
        pthread_mutex_lock(&bs->lock);
        out->last = history_last(bs->history);
        if (resume)
            out->status = history_since(bs->history, after, &out->events, &out->nevents);
        pthread_mutex_unlock(&bs->lock);
    }
    pthread_mutex_unlock(&bus->lock);
    return bs ? 0 : ERR_NOTFOUND;
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
    out->subscriptions = bus_subscriptions(bus);
    out->history_bytes = atomic_load(&bus->budget.used);
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
