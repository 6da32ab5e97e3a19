/*
 * bus: NATS connection and shared subscriptions (see bus.h).
 *
 * Locking: one mutex guards the pattern table and the per-worker counts.
 * The message callback holds it only to take a sequence number and note
 * which workers want the event; encoding and hand-off happen outside it.
 * cnats runs one subscription's callbacks serially (one delivery-pool
 * thread per subscription), so sequence numbers and hand-off order agree.
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

#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/mem.h"

struct bus_sub {
    struct bus *bus;
    natsSubscription *ns;
    uint64_t id;
    uint64_t seq;       /* last sequence handed out; under bus->lock */
    size_t interested;  /* workers with count > 0 */
    char *pattern;
    unsigned counts[];  /* per worker */
};

struct bus {
    natsConnection *nc;
    pthread_mutex_t lock;
    struct map *subs; /* pattern -> bus_sub */
    uint64_t next_id;
    size_t nworkers;
    bus_deliver_fn *deliver;
    void *const *ctxs;
    atomic_bool connected;
    atomic_bool closing; /* bus_free() has begun: disconnects are expected */
};

static void on_nats_msg(natsConnection *nc, natsSubscription *ns, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)ns;
    struct bus_sub *bs = closure;
    struct bus *bus = bs->bus;
    size_t targets[64];
    size_t ntargets = 0;
    uint64_t seq;

    pthread_mutex_lock(&bus->lock);
    seq = ++bs->seq;
    for (size_t w = 0; w < bus->nworkers && ntargets < 64; w++) {
        if (bs->counts[w])
            targets[ntargets++] = w;
    }
    pthread_mutex_unlock(&bus->lock);

    if (ntargets) {
        const char *name = NULL;
        if (natsMsgHeader_Get(msg, "Sse-Event", &name) != NATS_OK)
            name = NULL;
        struct sse_event *ev = sse_event_new(bs->id, seq, name, natsMsg_GetData(msg),
                                             (size_t)natsMsg_GetDataLength(msg));
        for (size_t i = 1; i < ntargets; i++)
            bus->deliver(bus->ctxs[targets[i]], sse_event_ref(ev));
        bus->deliver(bus->ctxs[targets[0]], ev);
    }
    natsMsg_Destroy(msg);
}

static void on_sub_complete(void *closure)
{
    struct bus_sub *bs = closure;
    free(bs->pattern);
    free(bs);
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

int bus_new(struct bus **out, const char *url, size_t nworkers, bus_deliver_fn *deliver,
            void *const *worker_ctxs, char *err, size_t errlen)
{
    struct bus *bus = mem_calloc(1, sizeof(*bus));
    natsOptions *opts = NULL;
    natsStatus s;

    pthread_mutex_init(&bus->lock, NULL);
    bus->subs = map_new();
    bus->nworkers = nworkers;
    bus->deliver = deliver;
    bus->ctxs = worker_ctxs;

    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
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
    /* A slow worker must not make cnats drop messages silently at 65k. */
    if (s == NATS_OK)
        s = natsOptions_SetMaxPendingMsgs(opts, 1 << 20);
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
        snprintf(err, errlen, "cannot connect to NATS at %s: %s", url, natsStatus_GetText(s));
        bus->nc = NULL;
        bus_free(bus);
        return ERR_NATS;
    }
    atomic_store(&bus->connected, true);
    *out = bus;
    return 0;
}

void bus_free(struct bus *bus)
{
    if (!bus)
        return;
    atomic_store(&bus->closing, true);
    if (bus->nc) {
        natsConnection_Close(bus->nc);
        natsConnection_Destroy(bus->nc);
    }
    /* Waits for the delivery threads, so every on-complete callback has run. */
    nats_CloseAndWait(2000);
    map_free(bus->subs);
    pthread_mutex_destroy(&bus->lock);
    free(bus);
}

int bus_subscribe(struct bus *bus, size_t worker, const char *pattern, uint64_t *sub_id)
{
    int rc = 0;
    size_t plen = strlen(pattern);
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, plen);
    if (!bs) {
        bs = mem_calloc(1, sizeof(*bs) + bus->nworkers * sizeof(bs->counts[0]));
        bs->bus = bus;
        bs->id = ++bus->next_id;
        bs->pattern = mem_strdup(pattern);
        natsStatus s = natsConnection_Subscribe(&bs->ns, bus->nc, pattern, on_nats_msg, bs);
        if (s == NATS_OK)
            s = natsSubscription_SetOnCompleteCB(bs->ns, on_sub_complete, bs);
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(bs->ns, -1, -1);
        if (s != NATS_OK) {
            log_error("nats: cannot subscribe to %s: %s", pattern, natsStatus_GetText(s));
            if (bs->ns) {
                natsSubscription_Unsubscribe(bs->ns);
                natsSubscription_Destroy(bs->ns);
            }
            free(bs->pattern);
            free(bs);
            rc = ERR_NATS;
            goto out;
        }
        map_put(bus->subs, pattern, plen, bs);
        log_debug("nats: subscribed to %s (sub %llu)", pattern, (unsigned long long)bs->id);
    }
    if (bs->counts[worker]++ == 0)
        bs->interested++;
    *sub_id = bs->id;
out:
    pthread_mutex_unlock(&bus->lock);
    return rc;
}

void bus_unsubscribe(struct bus *bus, size_t worker, const char *pattern)
{
    size_t plen = strlen(pattern);
    pthread_mutex_lock(&bus->lock);
    struct bus_sub *bs = map_get(bus->subs, pattern, plen);
    if (bs && bs->counts[worker] > 0 && --bs->counts[worker] == 0 && --bs->interested == 0) {
        map_del(bus->subs, pattern, plen);
        log_debug("nats: unsubscribed from %s", pattern);
        /* bs may be freed by on_sub_complete on a cnats thread as soon as this returns. */
        natsSubscription *ns = bs->ns;
        natsSubscription_Unsubscribe(ns);
        natsSubscription_Destroy(ns);
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
