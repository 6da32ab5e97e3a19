/*
 * bus: the one NATS connection of the process, and its subscriptions.
 *
 * Owns the only nats.h include and the threads cnats calls back on. One
 * NATS subscription per distinct subject pattern per process, counted per
 * worker: a worker's first stream on a pattern subscribes, the last one
 * everywhere unsubscribes. Each message is encoded once into an sse_event
 * on the cnats thread and handed to every interested worker through the
 * post callback (typed mail, struct bus_mail); everything after that hand-off is single-threaded.
 *
 * Subscriptions use cnats's global delivery pool, not a thread per
 * subscription: 10,000 subjects must not mean 10,000 threads.
 *
 * JetStream: a pattern covered by a subject of one of the configured
 * JetStream streams is served from that stream instead: one unfiltered
 * push consumer per stream per process, routed by subject (made and
 * remade on one JetStream thread, at most max_consumers with the
 * replays'), carries the live events, whose sequences are the stream's
 * own, so an id means the same on every gateway. A resume that memory cannot serve becomes a replay
 * job: a short-lived consumer from the resume position to where the live
 * consumer began, run by one of `replays` threads and shared by every
 * request on the same pattern from a nearby position.
 */
#ifndef SLUICE_BUS_H
#define SLUICE_BUS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/fanout.h"
#include "sluice/history.h"
#include "sluice/resume.h"
#include "sluice/sse.h"

struct bus;

/* What the bus hands a worker: typed mail, never a sentinel in an event. */
enum bus_mail_kind {
    BUS_MAIL_EVENT,  /* ev: a live event */
    BUS_MAIL_READY,  /* sub_id: nats-server has the subscription */
    BUS_MAIL_FAILED, /* sub_id: the subscription could not be made */
    BUS_MAIL_REPLAY, /* replay: a replay job's answer to one start */
    BUS_MAIL_REVOKE, /* revoke: end the matching streams (revoke.h); not from the bus itself */
    BUS_MAIL_ANSWER, /* answer: the reply to a bus_ask() (the auth callout over NATS) */
    BUS_MAIL_DS,     /* ds_job: a Durable Streams job bus_ds_submit() ran (ds_job_done()) */
    BUS_MAIL_LOST,   /* sub_id: the worker's inbox dropped events of it (worker-inbox-bytes) */
};

struct revoke;

/* The reply to one bus_ask(); freed with bus_answer_free(). */
struct bus_answer {
    uint64_t id;    /* bus_ask()'s */
    int status;     /* 200; the reply's Sluice-Status header (401, 403 …); 503: no responders */
    char *data;     /* the body, NUL-terminated; owned */
    size_t len;
};
void bus_answer_free(struct bus_answer *a);

struct bus_mail {
    enum bus_mail_kind kind;
    uint64_t sub_id;               /* BUS_MAIL_READY, BUS_MAIL_FAILED, BUS_MAIL_LOST */
    union {
        struct sse_event *ev;      /* BUS_MAIL_EVENT: one reference */
        struct bus_replay *replay; /* BUS_MAIL_REPLAY */
        struct revoke *revoke;     /* BUS_MAIL_REVOKE: owned (revoke_free) */
        struct bus_answer *answer; /* BUS_MAIL_ANSWER: owned (bus_answer_free) */
        void *ds_job;              /* BUS_MAIL_DS: the job bus_ds_submit() was given */
    };
};

/*
 * Hands m to a worker; takes ownership of what it carries. Must not
 * block. Events come on a cnats thread, once per worker that subscribed
 * to the pattern that produced them, in sequence order per pattern;
 * READY and FAILED once per interested worker when the subscription is
 * confirmed or fails; a REPLAY on a replay thread, under the
 * subscription's lock so that it is ordered with the live events: every
 * event not in the replay's result is handed over after it.
 */
typedef void bus_post_fn(void *worker_ctx, struct bus_mail m);

struct bus_params {
    const char *url;
    size_t nworkers;
    bus_post_fn *post;
    void *const *worker_ctxs;   /* nworkers entries, borrowed for the bus's life */
    size_t history_events;      /* per subscription */
    size_t history_bytes;       /* per subscription */
    size_t history_total_bytes; /* all subscriptions together */
    int64_t keep_ms;            /* how long an unwatched subscription (and its history) stays */
    size_t max_subs;            /* distinct patterns held at once, lingering included; 0: no cap */
    const char *jetstream;      /* stream names, comma-separated, or "*": all; NULL/"": none */
    size_t replays;             /* replay jobs run at once */
    size_t replay_max;          /* events one replay may send */
    size_t max_consumers;       /* JetStream consumers at once, live and replays; 0: no cap */
    const char *reply_prefix;   /* request streams' reply subjects (see probe in bus.c); NULL */
    /*
     * The control subject (revocations), or NULL/"" for none: each
     * message's body is handed to control(control_ctx, data, len) on a
     * cnats thread (must not block). Subscribed at connect, kept across
     * reconnects.
     */
    const char *control_subject;
    void (*control)(void *ctx, const char *data, size_t len);
    void *control_ctx;
    bool ask_inboxes;           /* one reply inbox per worker for bus_ask() */
    const char *ds_stream;      /* the Durable Streams route's stream (bus_ds.c); NULL: none */
    const char *ds_subjects;    /* its subjects, "<prefix>.>", when it must be made */
    int64_t ds_timeout_ms;      /* bound of each of its calls */
    size_t ds_max_inflight;     /* its jobs queued or running at once (bus_ds_submit) */
};

/*
 * Connects (no retry at start: a gateway without NATS should fail
 * loudly) and reads the subjects of the JetStream streams named. 0, or
 * ERR_NATS with a one-line reason in err.
 */
int bus_new(struct bus **out, const struct bus_params *p, char *err, size_t errlen);
/* Closes the connection and waits for cnats's threads. bus_free(NULL) is a no-op. */
void bus_free(struct bus *bus);

/*
 * Adds worker's interest in pattern (validated by the caller); sets
 * *sub_id, which the events of this subscription carry, and *confirmed,
 * whether nats-server is known to have the subscription. When it is not
 * yet, the worker is sent BUS_MAIL_READY once a PING round
 * trip has confirmed it (or failed, at most 2 s later), so that a client
 * is told it is subscribed only when a message published from then on
 * cannot miss it. A JetStream subscription is made on the JetStream
 * thread and may end in BUS_MAIL_FAILED. With max_subs patterns held, a
 * new pattern first evicts the lingering (unwatched) subscription that
 * lapsed longest ago; with none lingering it is refused. Thread-safe. 0,
 * ERR_NATS (also for a new JetStream-backed pattern past max_consumers),
 * or ERR_LIMIT (max_subs, nothing to evict).
 */
int bus_subscribe(struct bus *bus, size_t worker, const char *pattern, uint64_t *sub_id,
                  bool *confirmed);
/*
 * Drops one interest added by bus_subscribe(). The NATS subscription and
 * its history stay for keep_ms after the last interest, so that a client
 * reconnecting meanwhile is resumed. Thread-safe; never calls back.
 */
void bus_unsubscribe(struct bus *bus, size_t worker, const char *pattern);

/*
 * For a worker already subscribed (and confirmed) to pattern: fills out
 * (zeroed first) from history, or, when history cannot serve a JetStream
 * subscription, sets out->status to BUS_RESUME_PENDING and *pending to a
 * request that a replay job answers through bus_params.post (BUS_MAIL_REPLAY).
 * Thread-safe. 0, or ERR_NOTFOUND when pattern is not subscribed.
 */
int bus_resume(struct bus *bus, size_t worker, const char *pattern,
               const struct bus_start *start, struct bus_resume *out,
               struct bus_replay **pending);
/* r is freed with bus_replay_free() (resume.h). */
/*
 * The bus as the fan-out's source of subscriptions: fills out with ops
 * that call bus_subscribe(), bus_unsubscribe() and bus_resume() on bus.
 */
void bus_fanout_source(struct bus *bus, struct fanout_source *out);
/* Ends the subscriptions unwatched for keep_ms. Call about once a second. Thread-safe. */
void bus_sweep(struct bus *bus);
/*
 * Publishes data on subject with reply (NULL: none) and nheaders header
 * fields (headers: name, value, name, value, …; values checked by the
 * caller: no CR, LF or NUL). Buffered by cnats, never blocks.
 * Thread-safe. 0, or ERR_NATS.
 */
int bus_send(struct bus *bus, const char *subject, const char *reply,
             const char *const *headers, size_t nheaders, const void *data, size_t len);
/*
 * True when the process holds a subscription on subject whose history
 * says it has ended (Sse-End, or no responders). Thread-safe.
 */
bool bus_subject_ended(struct bus *bus, const char *subject);
/*
 * Publishes data (len bytes) on subject as a request whose reply comes
 * back to worker as BUS_MAIL_ANSWER with this id (needs
 * bus_params.ask_inboxes). At most one answer per id; none when nobody
 * replies in time (the asker keeps its own deadline). Buffered by cnats,
 * never blocks. Thread-safe. 0, or ERR_NATS.
 */
int bus_ask(struct bus *bus, size_t worker, const char *subject, uint64_t id, const void *data,
            size_t len);
/* True while the NATS connection is up. Thread-safe. */
bool bus_connected(const struct bus *bus);
/*
 * Whether the process holds a subscription on pattern (watched or
 * lingering): joining it costs no NATS round trip. Thread-safe.
 */
bool bus_subscribed(struct bus *bus, const char *pattern);
/* Distinct patterns subscribed right now, lingering ones included. Thread-safe. */
size_t bus_subscriptions(struct bus *bus);

struct bus_stats {
    bool connected;
    uint64_t reconnects;
    uint64_t messages;      /* received from NATS */
    uint64_t reserved_dropped; /* on reserved subjects, dropped from wildcard patterns */
    size_t subscriptions;   /* as bus_subscriptions() */
    size_t history_bytes;   /* held by all histories */
    uint64_t subs_evicted;  /* lingering subscriptions evicted at max_subs */
    uint64_t subs_refused;  /* new patterns refused at max_subs */
    uint64_t replays;         /* JetStream replay jobs run */
    uint64_t replay_failures; /* replay jobs that failed their waiters (reset or ended) */
    uint64_t replay_losses;   /* of those, jobs that found messages missing: reset */
    uint64_t replay_requests; /* starts answered by a replay job */
    uint64_t replays_active;  /* jobs queued or running */
    uint64_t replayed_events; /* events fetched from JetStream by replays */
    size_t js_consumers;      /* JetStream consumers held: live (made or queued) and replays */
    uint64_t js_resets;       /* live consumers remade after a loss, silence or reconnect */
    uint64_t js_limit_hits;   /* JetStream-backed patterns refused at max_consumers */
    uint64_t js_gaps;         /* stream-sequence jumps a live feed saw (each filled) */
    uint64_t js_gap_filled;   /* messages fetched one by one to fill them */
    size_t ds_jobs;           /* Durable Streams jobs queued or running (bus_ds_submit) */
};
/* A snapshot of the bus's counters. Thread-safe. */
void bus_stats(struct bus *bus, struct bus_stats *out);

/*
 * The Durable Streams route's JetStream calls (bus_ds.c). Each is one
 * request to nats-server that blocks its caller up to ds_timeout_ms: the
 * route makes them in jobs on the bus's DS threads (bus_ds_submit), never
 * on a worker's loop. Once the bus is closing they fail at once (ERR_NATS).
 */
typedef void bus_ds_run_fn(void *job);
/*
 * Queues run(job) for one of the DS threads; once it has returned, job
 * goes back to worker as BUS_MAIL_DS. 0, or ERR_LIMIT when ds_max_inflight
 * jobs are queued or running (job not taken), ERR_NATS without the route.
 */
int bus_ds_submit(struct bus *bus, size_t worker, bus_ds_run_fn *run, void *job);
struct bus_ds_msg {
    uint64_t seq;       /* stream sequence */
    int64_t time_ns;    /* when JetStream stored it, since 1970 */
    const char *data;   /* len bytes, valid until bus_ds_msg_dispose */
    size_t len;
    void *handle;       /* the message; NULL when none */
};
/*
 * The first message on subject at or after sequence from (last: the last
 * message on subject, from ignored). 0, ERR_NOTFOUND (none), or ERR_NATS.
 */
int bus_ds_get(struct bus *bus, const char *subject, uint64_t from, bool last,
               struct bus_ds_msg *out);
/* A header of m, or NULL. */
const char *bus_ds_header(const struct bus_ds_msg *m, const char *name);
void bus_ds_msg_dispose(struct bus_ds_msg *m);
/*
 * Publishes to the stream and waits for its ack. expect_last: -1 for no
 * condition, 0 for "subject holds nothing", else the subject's last
 * sequence (JetStream refuses otherwise: ERR_AGAIN). msg_id (may be NULL)
 * is deduplicated by JetStream within its window (*duplicate set). Empty
 * header values are left out. 0 with *seq, ERR_AGAIN, or ERR_NATS.
 */
int bus_ds_publish(struct bus *bus, const char *subject, const char *const *headers,
                   size_t nheaders, const void *data, size_t len, int64_t expect_last,
                   const char *msg_id, uint64_t *seq, bool *duplicate);
/* The largest message nats-server takes (its max_payload); 0 when unknown. */
size_t bus_ds_max_payload(struct bus *bus);
/* Removes the messages on subject (wildcards allowed) but the last keep. 0 or ERR_NATS. */
int bus_ds_purge(struct bus *bus, const char *subject, uint64_t keep);

#endif

