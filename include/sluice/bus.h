/*
 * bus: the one NATS connection of the process, and its subscriptions.
 *
 * Owns the only nats.h include and the threads cnats calls back on. One
 * NATS subscription per distinct subject pattern per process, counted per
 * worker: a worker's first stream on a pattern subscribes, the last one
 * everywhere unsubscribes. Each message is encoded once into an sse_event
 * on the cnats thread and handed to every interested worker through the
 * deliver callback; everything after that hand-off is single-threaded.
 *
 * Subscriptions use cnats's global delivery pool, not a thread per
 * subscription: 10,000 subjects must not mean 10,000 threads.
 */
#ifndef SLUICE_BUS_H
#define SLUICE_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/history.h"
#include "sluice/sse.h"

struct bus;

/*
 * Called on a cnats thread, once per worker that subscribed to the
 * pattern that produced ev, in sequence order per pattern. Takes
 * ownership of one reference to ev. Must not block.
 */
typedef void bus_deliver_fn(void *worker_ctx, struct sse_event *ev);

struct bus_params {
    const char *url;
    size_t nworkers;
    bus_deliver_fn *deliver;
    void *const *worker_ctxs;   /* nworkers entries, borrowed for the bus's life */
    size_t history_events;      /* per subscription */
    size_t history_bytes;       /* per subscription */
    size_t history_total_bytes; /* all subscriptions together */
    int64_t keep_ms;            /* how long an unwatched subscription (and its history) stays */
};

/*
 * Connects (no retry at start: a gateway without NATS should fail
 * loudly). 0, or ERR_NATS with a one-line reason in err.
 */
int bus_new(struct bus **out, const struct bus_params *p, char *err, size_t errlen);
/* Closes the connection and waits for cnats's threads. bus_free(NULL) is a no-op. */
void bus_free(struct bus *bus);

/*
 * Adds worker's interest in pattern (validated by the caller); sets
 * *sub_id, which the events of this subscription carry, and *confirmed,
 * whether nats-server is known to have the subscription. When it is not
 * yet, the worker is sent a notice — an event with seq 0 — once a PING
 * round trip has confirmed it (or failed, at most 2 s later), so that a
 * client is told it is subscribed only when a message published from then
 * on cannot miss it. Thread-safe. 0 or ERR_NATS.
 */
int bus_subscribe(struct bus *bus, size_t worker, const char *pattern, uint64_t *sub_id,
                  bool *confirmed);
/*
 * Drops one interest added by bus_subscribe(). The NATS subscription and
 * its history stay for keep_ms after the last interest, so that a client
 * reconnecting meanwhile is resumed. Thread-safe; never calls back.
 */
void bus_unsubscribe(struct bus *bus, size_t worker, const char *pattern);

/* What a stream joining a subscription starts from. */
struct bus_resume {
    uint64_t last;              /* newest sequence so far: the stream's starting position */
    enum history_resume status; /* of the requested resume */
    struct sse_event **events;  /* to replay, oldest first; the caller unrefs and frees */
    size_t nevents;
};

/*
 * For a worker already subscribed to pattern: fills out (zeroed first)
 * and, when resume is set, the events after `after`. Thread-safe.
 * 0, or ERR_NOTFOUND when pattern is not subscribed.
 */
int bus_resume(struct bus *bus, const char *pattern, bool resume, uint64_t after,
               struct bus_resume *out);
/* Ends the subscriptions unwatched for keep_ms. Call about once a second. Thread-safe. */
void bus_sweep(struct bus *bus);
/*
 * Publishes data on subject (literal, validated by the caller) with the
 * Sse-Event header set to event unless NULL. Buffered by cnats, never
 * blocks. Thread-safe. 0, or ERR_NATS when NATS is not connected or
 * refuses (the caller answers 503).
 */
int bus_publish(struct bus *bus, const char *subject, const char *event, const void *data,
                size_t len);
/* True while the NATS connection is up. Thread-safe. */
bool bus_connected(const struct bus *bus);
/* Distinct patterns subscribed right now, lingering ones included. Thread-safe. */
size_t bus_subscriptions(struct bus *bus);

struct bus_stats {
    bool connected;
    uint64_t reconnects;
    uint64_t messages;      /* received from NATS */
    size_t subscriptions;   /* as bus_subscriptions() */
    size_t history_bytes;   /* held by all histories */
};
/* A snapshot of the bus's counters. Thread-safe. */
void bus_stats(struct bus *bus, struct bus_stats *out);

#endif
