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

#include "sluice/sse.h"

struct bus;

/*
 * Called on a cnats thread, once per worker that subscribed to the
 * pattern that produced ev, in sequence order per pattern. Takes
 * ownership of one reference to ev. Must not block.
 */
typedef void bus_deliver_fn(void *worker_ctx, struct sse_event *ev);

/*
 * Connects to url (no retry at start: a gateway without NATS should fail
 * loudly). worker_ctxs has nworkers entries, borrowed for the bus's life.
 * 0, or ERR_NATS with a one-line reason in err.
 */
int bus_new(struct bus **out, const char *url, size_t nworkers, bus_deliver_fn *deliver,
            void *const *worker_ctxs, char *err, size_t errlen);
/* Closes the connection and waits for cnats's threads. bus_free(NULL) is a no-op. */
void bus_free(struct bus *bus);

/*
 * Adds worker's interest in pattern (validated by the caller); sets
 * *sub_id, which the events of this subscription carry. Thread-safe.
 * 0 or ERR_NATS.
 */
int bus_subscribe(struct bus *bus, size_t worker, const char *pattern, uint64_t *sub_id);
/* Drops one interest added by bus_subscribe(). Thread-safe; never calls back. */
void bus_unsubscribe(struct bus *bus, size_t worker, const char *pattern);
/* True while the NATS connection is up. Thread-safe. */
bool bus_connected(const struct bus *bus);
/* Distinct patterns subscribed right now. Thread-safe. */
size_t bus_subscriptions(struct bus *bus);

#endif
