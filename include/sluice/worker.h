/*
 * worker: one thread, one libev loop, one SO_REUSEPORT listener, and the
 * connections, streams and fan-out that live on it.
 *
 * Nothing of a connection is touched by another thread. The only way in
 * from outside is worker_post(): the bus appends typed mail (an event,
 * a subscription confirmed or failed, a replay's answer) to the inbox
 * under a short lock and wakes the loop with ev_async; the loop drains
 * the inbox in one swap and hands each piece to the fan-out.
 */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/sse.h"

struct bus;
struct stream_stats;
struct conn_stats;
struct tls;
struct guard;
struct auth;
struct cors;
struct admission;
struct config;
struct forwarded_nets;
struct principals;
struct worker;

/*
 * A stopped worker. Takes ownership of listen_fd (TLS) and plain_fd
 * (cleartext, or -1); cfg, tls, guard, auth, cors, admission (the
 * process's stream capacity, may be NULL), trusted (trusted-proxies, may
 * be NULL) and principals (per-principal limits, may be NULL) are borrowed.
 * queue_bytes: this worker's share of the process queue cap.
 */
struct worker *worker_new(size_t index, const struct config *cfg, struct tls *tls,
                          struct guard *guard, const struct auth *auth, const struct cors *cors,
                          struct admission *admission, const struct forwarded_nets *trusted,
                          struct principals *principals, int listen_fd, int plain_fd,
                          size_t queue_bytes);
/* The counters of this worker's streams and connections; read from any thread. */
const struct stream_stats *worker_stream_stats(const struct worker *w);
const struct conn_stats *worker_conn_stats(const struct worker *w);
/* What NATS events waiting for the loop hold, in bytes (worker-inbox-bytes caps it). */
size_t worker_inbox_bytes(struct worker *w);
/* Events dropped past worker-inbox-bytes (their streams ended to resume); any thread. */
uint64_t worker_inbox_drops(const struct worker *w);
/* How late the loop last ran a 250 ms timer, in seconds; read from any thread. */
double worker_lag(const struct worker *w);
/*
 * Starts the graceful drain (thread-safe): the listener closes, every
 * connection gets the GOAWAY shutdown notice, open streams are ended in
 * batches spread evenly over drain_ms, each with a `retry:` jittered
 * across the window, then the final GOAWAY. worker_drained() turns true
 * once every connection has closed or the window plus 3 s has passed
 * (the process exits by the window plus 5 s; see server.c).
 */
void worker_drain(struct worker *w, int drain_ms);
bool worker_drained(const struct worker *w);
/*
 * stream_now_ms() when the loop last went round (it stamps every
 * iteration, at least every 250 ms when idle); 0 before its first.
 * Read from any thread.
 */
uint64_t worker_alive_ms(const struct worker *w);
#ifdef SLUICE_TEST_HOOKS
/*
 * Test hook: the loop blocks inside a callback until the next call,
 * worker_drain() or worker_stop().
 */
void worker_stall(struct worker *w);
#endif
/* Starts the thread. bus (borrowed) may be NULL. 0 or ERR_IO. */
int worker_start(struct worker *w, struct bus *bus);
/* Closes every connection, ends the thread and joins it. Call from another thread. */
void worker_stop(struct worker *w);
/* Frees a stopped worker. worker_free(NULL) is a no-op. */
void worker_free(struct worker *w);
struct bus_mail;
/*
 * bus_post_fn: queues m (taking what it carries) for worker ctx, behind
 * the mail posted before it. Thread-safe.
 */
void worker_post(void *ctx, struct bus_mail m);

#endif
