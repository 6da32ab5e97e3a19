/*
 * callout: asks the operator's HTTP auth service whether a request may
 * go on (auth = callout), with nginx auth_request semantics, from one
 * worker's loop.
 *
 * The same question can go as a NATS request instead (auth-callout-subject,
 * for shops whose auth service lives on NATS): the POST JSON is the
 * request body, the reply body the same grant JSON, its Sluice-Status
 * header (401, 403, other) the status; no header means 200. Replies come
 * back as worker mail; the deadline is an ev_timer per question.
 *
 * One struct callout per worker, driven by that worker's libev loop:
 * libcurl's multi interface (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION
 * become ev_io / ev_timer watchers), so no call ever blocks the loop.
 * Connections to the service are reused by the multi handle's cache.
 * At most max_inflight transfers run at once per worker; further
 * questions wait in a queue of at most max_queue, and past that they are
 * answered "unavailable" at once (counted as refused).
 *
 * Decisions are cached per worker, keyed by a salted SHA-256 of what the
 * service is shown (the action, the subjects, the client address and the
 * allow-listed header values), so that the cookie itself is not a map key
 * an attacker could pick collisions for. A grant is kept for the answer's
 * "ttl", else cache_ttl_s, never past its "expires"; a 401/403 for
 * negative_ttl_s; a failure (unreachable, timeout, 5xx, bad JSON) is not
 * kept. LRU past cache_entries. Questions with the same key while one is
 * in flight wait for that one transfer (a reconnect storm with one cookie
 * costs one callout). Rejected: a cache shared by all workers, which
 * would need a lock on every request for a hit rate that the per-worker
 * cache already reaches after one miss per worker.
 *
 * Lifetime: callout_ask() either answers at once (a cache hit, or a
 * refusal) or returns a wait handle and calls done later from the loop,
 * never from inside callout_ask(). callout_cancel() detaches a waiter
 * (its request went away); the transfer goes on and its answer still
 * fills the cache, so cancelling never touches freed memory.
 */
#ifndef SLUICE_CALLOUT_H
#define SLUICE_CALLOUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/metrics.h"

struct ev_loop;
struct auth_grant;
struct callout;
struct callout_wait;

#define CALLOUT_HEADERS_MAX 8 /* allow-listed request headers passed on */

struct callout_params {
    const char *url;          /* http:// or https:// URL of the service; NULL with subject */
    const char *subject;      /* or: the NATS subject of the service (the POST JSON as body) */
    bool post;                /* POST the JSON description; else GET with headers only */
    int timeout_ms;           /* whole transfer */
    int connect_timeout_ms;
    size_t max_inflight;      /* transfers at once (per worker) */
    size_t max_queue;         /* questions waiting for a transfer slot (per worker) */
    size_t cache_entries;     /* decisions kept (per worker); 0: no cache */
    int cache_ttl_s;          /* a grant without "ttl" is kept this long */
    int negative_ttl_s;       /* a 401/403 is kept this long */
};

/* How a question was answered. */
enum callout_result {
    CALLOUT_GRANTED,     /* 2xx with a valid grant */
    CALLOUT_DENIED_401,  /* passed to the client as 401 */
    CALLOUT_DENIED_403,  /* passed to the client as 403 */
    CALLOUT_ERROR,       /* the service answered another status (5xx, 3xx, 404 …) */
    CALLOUT_BAD_ANSWER,  /* 2xx whose body is not a valid grant (or too large) */
    CALLOUT_TIMEOUT,     /* no whole answer within timeout_ms */
    CALLOUT_UNREACHABLE, /* no connection */
    CALLOUT_REFUSED,     /* max_inflight busy and max_queue full: not asked */
    CALLOUT_RESULT_COUNT
};

/* The metric label of a result: "granted", "denied_401", … */
const char *callout_result_label(enum callout_result r);

/* Counters of one worker's callouts; one writer, read from any thread. */
struct callout_stats {
    atomic_uint_fast64_t results[CALLOUT_RESULT_COUNT]; /* transfers (and refusals) by result */
    atomic_uint_fast64_t cache_hits;   /* answered from the cache */
    atomic_uint_fast64_t cache_misses; /* needed a transfer (or joined one: coalesced) */
    atomic_uint_fast64_t coalesced;    /* of the misses, joined one already in flight */
    atomic_uint_fast64_t evicted;      /* cached decisions dropped at cache_entries */
    atomic_uint_fast64_t revoked;      /* cached decisions dropped by a revocation */
    atomic_uint_fast64_t cached;       /* gauge: decisions held */
    atomic_uint_fast64_t queued;       /* gauge: questions waiting for a transfer slot */
    struct metrics_histogram latency;  /* transfer time, by any result */
};

/* What the service is shown. Everything is borrowed for the call. */
struct callout_query {
    const char *method;       /* the client's */
    const char *path;         /* the client's, query included */
    const char *action;       /* "subscribe", "publish" or "read" */
    const char *const *subjects;
    size_t nsubjects;
    const char *client;       /* the client's address (no port) */
    const char *headers[2 * CALLOUT_HEADERS_MAX]; /* name (lower case), value, … */
    size_t nheaders;          /* pairs */
};

/* An answer. grant is one reference for the receiver (GRANTED only). */
struct callout_answer {
    enum callout_result result;
    struct auth_grant *grant;
    const char *reason;       /* static, one line: for logs and 401/403 bodies */
};

/* Called from the loop with the answer to a pending question (see callout_ask). */
typedef void callout_done_fn(void *ctx, struct callout_answer *answer);

/*
 * A worker's callout on loop (borrowed for its life). Copies p. stats is
 * the worker's, borrowed. 0, or ERR_INVALID with a reason in err.
 */
int callout_new(struct callout **out, struct ev_loop *loop, const struct callout_params *p,
                struct callout_stats *stats, char *err, size_t errlen);
/* Stops every transfer; waiters must have been cancelled. NULL is a no-op. */
void callout_free(struct callout *co);
/* libcurl's process-wide set-up: once, before any worker thread starts. 0 or ERR_IO. */
int callout_global_init(void);
struct bus;
struct bus_answer;
/* The bus the NATS variant asks through (worker's index); before the first question. */
void callout_attach_bus(struct callout *co, struct bus *bus, size_t worker);
/*
 * A NATS reply (BUS_MAIL_ANSWER) for this worker's callout: the question
 * it answers is decided (a late one, after its deadline, is dropped).
 * Takes nothing from a. May call done callbacks.
 */
void callout_nats_answer(struct callout *co, const struct bus_answer *a);

/*
 * Asks about q at now_ms (stream_now_ms() clock). Returns 0 with *answer
 * filled (a cache hit, or CALLOUT_REFUSED), or ERR_AGAIN with *wait set:
 * done(ctx, answer) is called later from the loop, exactly once, unless
 * callout_cancel(*wait) is called first. Never calls done from inside.
 */
int callout_ask(struct callout *co, const struct callout_query *q, int64_t now_ms,
                struct callout_answer *answer, callout_done_fn *done, void *ctx,
                struct callout_wait **wait);
/* Detaches a waiter whose done has not been called; NULL is a no-op. */
void callout_cancel(struct callout_wait *w);
/*
 * Drops cached grants of principal (non-NULL) and those whose patterns
 * overlap subject (non-NULL); answers still in flight for them are
 * delivered but not cached. Returns how many were dropped.
 */
size_t callout_forget(struct callout *co, const char *principal, const char *subject);

#endif
