/*
 * bus_int: the bus's insides, shared by its three files (see bus.h for
 * the contract). Only these files include nats.h:
 *
 *   bus.c         the connection, the pattern table, core NATS
 *                 subscriptions and their confirmation (the flusher
 *                 thread), resume from history, publish, stats
 *   bus_js.c      JetStream: the streams' subjects, each stream's one
 *                 live feed (an unfiltered push consumer routed by
 *                 subject) and the one JetStream thread that makes,
 *                 remakes, fills and deletes them
 *   bus_replay.c  replay jobs: short-lived consumers from a resume
 *                 position, run on the replay threads
 *
 * Calls that cross files carry the bus_ prefix; each file's design note
 * says how its part works.
 */
#ifndef SLUICE_BUS_INT_H
#define SLUICE_BUS_INT_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/bus.h"
#include "sluice/history.h"
#include "sluice/list.h"
#include "sluice/map.h"

#define BUS_MAX_WORKERS 64
#define BUS_JS_WAIT_MS 1000            /* one JetStream API request */
#define BUS_JS_FOLLOW_MS 8000          /* a new pattern's first consumer gives up after */
#define BUS_JS_PAUSE_MS 250            /* first pause after a failed JetStream call */
#define BUS_JS_PAUSE_MAX_MS 2000       /* longest pause between failing calls */
#define BUS_JS_START_MS 15000          /* start-up waits this long for a stream's answer */
#define BUS_JS_HEARTBEAT_NS 1000000000 /* consumer idle heartbeat */
#define BUS_JS_STALL_MS 3500           /* no message nor heartbeat for this long: remade */
#define BUS_JS_CHECK_MS 1000           /* how often the JetStream thread looks for stalls */
#define BUS_JS_REJOIN_MS 2000          /* after a reconnect, silence this long is a stall */
#define BUS_JS_INACTIVE_NS 10000000000LL /* nats-server deletes a consumer nobody hears after */
#define BUS_JS_GONE_MAX 1024           /* abandoned consumers queued for deletion */
#define BUS_JS_ENDS_MAX 64            /* subjects' ends looked up per pass of the JetStream thread */
#define BUS_JS_GAP_MAX 1000           /* missing sequences fetched per pass of the JetStream thread */
#define BUS_JS_HOLD_MAX 4096          /* messages a feed holds after a gap while it is filled */
#define BUS_JS_HOLD_BYTES (8u << 20)  /* and their payload bytes */
#define BUS_REPLAY_NEXT_MS 3000        /* a replay waits this long for its next message */
#define BUS_REPLAY_BUDGET_MS 30000     /* a replay gives up making new consumers after */
#define BUS_REPLAY_AHEAD_MS 3000       /* a position past the stream's end is waited for this long */
#define BUS_REPLAY_AHEAD_MAX 100000    /* if at most this far past it; further is unknown at once */

/* A message a feed received after a gap, held until the gap is filled. */
struct bus_held {
    natsMsg *msg;
    uint64_t seq;
    int64_t time_ns;
};

/*
 * The live feed of one JetStream stream (see bus_js.c): one unfiltered
 * push consumer for every pattern the stream serves, routed by subject.
 * Lock order: bus->lock, then lock, then a bus_sub's lock.
 */
struct bus_feed {
    pthread_mutex_t lock;
    struct map *exact;       /* literal pattern -> bus_sub; under lock */
    struct list wild;        /* bus_sub.wild_node, wildcard patterns; under lock */
    struct list subs;        /* bus_sub.feed_node, every pattern; changed under bus->lock and lock */
    natsSubscription *live;  /* the inbox whose messages count (NULL: none); under lock */
    uint64_t cseq;           /* consumer sequence last taken from live; under lock */
    uint64_t last;           /* every stream message up to here was routed or is gone; under lock */
    bool has_pos;            /* last is set; under lock */
    uint64_t gap_to;         /* missing up to here: fetched by the JetStream thread; under lock */
    struct bus_held *held;   /* received after the gap, in order; under lock */
    size_t nheld, held_cap;  /* under lock */
    size_t held_bytes;       /* their payloads; under lock */
    int64_t seen_ms;         /* last message or heartbeat on live; under lock */
    natsSubscription *ns;    /* the current consumer's inbox; under bus->lock */
    char *consumer;          /* its name; under bus->lock */
    struct list js_node;     /* bus->js_todo while queued; under bus->lock */
    bool js_queued;          /* under bus->lock */
    bool js_slot;            /* counted in bus->js_live; under bus->lock */
    int64_t js_due_ms;       /* not tried before; under bus->lock */
    unsigned js_tries;       /* failures in a row; under bus->lock */
    struct list ends;        /* bus_sub.confirm_node: literal patterns to look up before confirming; under bus->lock */
};

/* A JetStream stream whose subjects are served from it. */
struct bus_jstream {
    struct bus *bus;
    char *name;
    char **subjects;
    size_t nsubjects;
    struct bus_feed feed;
};

struct bus_sub {
    struct bus *bus;
    natsSubscription *ns; /* core NATS only; under bus->lock once made */
    atomic_uint refs;
    const char *stream;   /* JetStream stream (bus->streams'), or NULL for core NATS */
    struct bus_jstream *js; /* the same stream's record, or NULL */
    bool dropped;         /* out of the table; under bus->lock */
    bool failed;          /* the JetStream consumer could not be made; under lock */
    struct list node;   /* bus->all; under bus->lock */
    struct list confirm_node; /* bus->unconfirmed, the flusher's batch or a feed's ends; under bus->lock */
    struct list idle_node;    /* bus->idle while nobody watches; under bus->lock */
    bool confirmed;     /* under lock */
    uint64_t id;
    char *pattern;
    pthread_mutex_t lock;
    struct history *history; /* under lock */
    size_t interested;       /* workers with count > 0; under lock */
    int64_t idle_since_ms;   /* when interested fell to 0; under lock */
    /* JetStream (stream != NULL): fed by js->feed, see bus_js.c. */
    bool has_floor;          /* history's floor is set: the feed routes to it; under lock */
    struct list feed_node;   /* js->feed.subs */
    struct list wild_node;   /* js->feed.wild, for a wildcard pattern */
    int64_t js_give_up_ms;   /* not confirmed by then: fails; under bus->lock */
    natsSubscription *probe; /* JetStream reply subject: a core subscription for "no responders" */
    unsigned counts[];       /* per worker; under lock */
};

/* One replay from JetStream, shared by the requests that joined it. */
struct bus_job {
    struct list node;           /* bus->jobs; under bus->lock */
    struct bus_sub *bs;         /* referenced */
    struct bus_start start;     /* lowered as earlier requests join, until it runs */
    bool running;
    bool closed;                /* answering: joins make a new job */
    struct bus_replay *waiters; /* under bus->lock */
};

/* A consumer we no longer listen to, deleted when NATS is idle (else it expires). */
struct bus_gone {
    struct list node;   /* bus->js_gone; under bus->lock */
    const char *stream; /* bus->streams' */
    char *name;
};

/* A subscription ended but not yet destroyed (see bus_end_sub). */
struct bus_grave {
    natsSubscription *ns;
    int64_t at_ms; /* when it was ended, bus_now_ms() */
};

/* One worker's reply inbox for bus_ask(): "<inbox>.<id>". */
struct bus_asker {
    struct bus *bus;
    size_t worker;
    char *inbox;              /* from natsInbox_Create */
    natsSubscription *sub;
};

struct bus {
    natsConnection *nc;
    natsSubscription *control;   /* the control subject's, or NULL */
    struct bus_asker *askers;    /* nworkers entries with bus_params.ask_inboxes, else NULL */
    pthread_mutex_t grave_lock;  /* a leaf lock: taken with or without bus->lock */
    struct bus_grave *graves;    /* ended subscriptions, oldest first; under grave_lock */
    size_t ngraves, graves_cap;
    jsCtx *js;                   /* NULL without JetStream streams */
    jsCtx *ds_js;                /* the Durable Streams route's; NULL without it */
    char *ds_stream;             /* its stream's name */
    int64_t ds_timeout_ms;
    /* The DS jobs (bus_ds_submit): a FIFO under ds_lock, run by ds_threads. */
    pthread_mutex_t ds_lock;
    pthread_cond_t ds_wake;
    struct list ds_queue;        /* bus_ds_task.node, oldest first */
    size_t ds_inflight;          /* queued or running */
    size_t ds_max_inflight;
    bool ds_stopping;
    pthread_t *ds_threads;
    size_t nds_threads;
    struct bus_jstream *streams;
    size_t nstreams;
    struct list jobs;            /* bus_job.node, oldest first; under lock */
    pthread_cond_t wake_replays;
    pthread_t *replayers;
    size_t nreplayers;
    atomic_uint_fast64_t replays, replay_requests, replays_active, replayed_events;
    atomic_uint_fast64_t replay_failures; /* jobs that answered their waiters with a failure */
    atomic_uint_fast64_t replay_losses;   /* of those, jobs whose consumers twice lost messages */
    uint64_t test_replay_drop; /* test hook: SLUICE_TEST_REPLAY_DROP (bus_replay.c); 0: off */
    pthread_mutex_t lock;
    struct map *subs; /* pattern -> bus_sub; under lock */
    struct list all;  /* bus_sub.node; under lock */
    struct list unconfirmed; /* bus_sub.confirm_node; under lock */
    struct list idle;        /* bus_sub.idle_node, oldest first; under lock */
    pthread_cond_t wake_flusher;
    pthread_t flusher;
    bool flusher_running;
    /* The JetStream thread: makes, remakes and deletes every consumer, one at a time. */
    struct list js_todo;      /* bus_sub.js_node, oldest first; under lock */
    struct list js_gone;      /* bus_gone.node; under lock */
    size_t js_ngone;          /* under lock */
    pthread_cond_t wake_js;
    pthread_t jsthread;
    bool js_running;
    size_t js_live;           /* feeds holding a consumer slot; under lock */
    size_t js_live_max;       /* jetstream-max-consumers less the replays' */
    int64_t js_pause_ms;      /* after the last failure; under lock */
    int64_t js_resume_ms;     /* no JetStream call before; under lock */
    uint64_t js_failures;     /* consumers not made, in all; under lock */
    int64_t js_fail_logged_ms; /* under lock */
    atomic_uint_fast64_t js_replaying; /* replay consumers in use */
    atomic_uint_fast64_t js_resets, js_limit_hits;
    atomic_uint_fast64_t js_gaps, js_gap_filled; /* sequence jumps seen; messages fetched for them */
    atomic_int_fast64_t js_limit_logged_ms;
    bool stopping;    /* under lock */
    uint64_t next_id;
    struct bus_params p;
    struct history_budget budget;
    atomic_uint_fast64_t seq; /* last sequence handed out */
    atomic_bool connected;
    atomic_uint_fast64_t reconnects;
    atomic_uint_fast64_t messages;
    atomic_uint_fast64_t reserved_dropped; /* reserved subjects a wildcard matched */
    atomic_uint_fast64_t subs_evicted; /* lingering subscriptions dropped early at max_subs */
    atomic_uint_fast64_t subs_refused; /* subscriptions refused at max_subs, nothing to evict */
    int64_t cap_logged_ms;             /* last max_subs log line; under lock */
    atomic_bool closing; /* bus_free() has begun: disconnects are expected */
};

/* bus.c */
/* bus_free() has begun: long JetStream retries give up. */
bool bus_stopping(struct bus *bus);
void bus_pause_ms(long ms);
int64_t bus_now_ms(void);
void bus_sub_unref(struct bus_sub *bs);
void bus_on_sub_complete(void *closure);
/* Whether msg carries the Sse-End header: its publisher ends its subject. */
bool bus_msg_ends(natsMsg *msg);
/* msg encoded once as event seq of bs, stored at time_ns (an end: see bus.c). */
struct sse_event *bus_event_of(const struct bus_sub *bs, natsMsg *msg, uint64_t seq,
                               int64_t time_ns);
/* Ends a NATS subscription of ours; NULL is a no-op. */
/*
 * Ends a NATS subscription of ours (NULL is a no-op): unsubscribed now,
 * its memory destroyed by bus_sweep() once BUS_GRAVE_MS have passed. Any
 * lock may be held.
 */
void bus_end_sub(struct bus *bus, natsSubscription *ns);
/*
 * Numbers (core NATS: seq 0 takes the next process-wide number), encodes
 * and records one message of bs, noting the workers to hand it to; under
 * bs->lock. NULL: a JetStream sequence at or below history's newest (a
 * remade consumer's redelivery), dropped.
 */
struct sse_event *bus_push_locked(struct bus_sub *bs, natsMsg *msg, uint64_t seq,
                                  int64_t time_ns, size_t *targets, size_t *ntargets);
/* Hands ev to its workers, outside the lock; drops the caller's reference. */
void bus_hand_out(struct bus *bus, struct sse_event *ev, const size_t *targets,
                  size_t ntargets);
/*
 * NATS's '>' and '*' match "$JS.API.X" and "_INBOX.x" too: a client's ">"
 * must not see JetStream API traffic or anyone's replies. Only a pattern
 * that names a reserved token itself (allow-subjects) may carry them.
 */
bool bus_reserved_leak(struct bus_sub *bs, natsMsg *msg);
/* Removes bs from the table and ends its NATS subscription; under bus->lock. */
void bus_drop_sub(struct bus *bus, struct bus_sub *bs);
/* Sends the confirmation (or failure) notice to every worker interested in bs; under bus->lock. */
void bus_confirm(struct bus *bus, struct bus_sub *bs);

/* bus_js.c */
/*
 * A consumer's status message: true, and *last the newest consumer
 * sequence it says was sent. An idle heartbeat (100) carries it; any
 * other status (409: the consumer was deleted) sets it to UINT64_MAX, so
 * that the consumer counts as lost at once.
 */
bool bus_js_status(natsMsg *msg, uint64_t *last);
/* "stream X: reason" for a failed JetStream call. */
void bus_js_why(char *out, size_t len, const char *what, natsStatus s, jsErrCode jerr);
/* The first and last sequence of stream; NATS_OK or why not. */
natsStatus bus_stream_bounds(struct bus *bus, const char *stream, uint64_t *first,
                             uint64_t *last, jsErrCode *jerr);
/*
 * A push consumer delivering to inbox, filtered on filter (NULL: the
 * whole stream): no acks, an idle heartbeat (so a lost consumer shows),
 * and an inactivity threshold, so that nats-server deletes one we
 * abandoned without asking (a NATS outage, a killed gateway). The caller
 * sets where it starts.
 */
void bus_consumer_config(jsConsumerConfig *cc, const char *filter, const char *inbox);
/* Queues consumer name (taken) of stream for deletion; under bus->lock. */
void bus_js_forget(struct bus *bus, const char *stream, char *name);
/* bs leaves the table and its feed; the feed's last pattern frees its consumer. Under bus->lock. */
void bus_js_drop(struct bus *bus, struct bus_sub *bs);
/* After a NATS reconnect: every feed's silence is judged from seen_ms on; under bus->lock. */
void bus_js_rejoin(struct bus *bus, int64_t seen_ms);
/* Frees the feeds' own memory, once no NATS thread can call back. */
void bus_js_dispose(struct bus *bus);
/*
 * The JetStream thread: the one place consumers are made, remade and
 * deleted, in queue order, one API call at a time. While NATS is away it
 * only waits (new patterns fail after BUS_JS_FOLLOW_MS); when a call
 * fails, every call waits a growing pause, so an outage costs a call
 * per pause, not one per pattern, and never a thread.
 */
void *bus_run_jetstream(void *arg);
/*
 * Whether a pattern of js may be followed: its stream's feed exists, or
 * one more feed fits the cap. At the cap, the feed whose patterns are
 * all unwatched (lingering for a reconnect), found from the one unwatched
 * longest, gives its slot up: resumes on them are then served by
 * replays. Otherwise the pattern is refused, counted and logged (once a
 * second). Under bus->lock.
 */
bool bus_js_admit(struct bus *bus, struct bus_jstream *js, const char *pattern);
/* Reads the subjects of the streams in list ("A,B" or "*"); 0 or ERR_NATS. */
int bus_load_streams(struct bus *bus, const char *list, char *err, size_t errlen);
/* The JetStream stream with a subject covering pattern, or NULL: core NATS. */
struct bus_jstream *bus_covering_stream(const struct bus *bus, const char *pattern);
/*
 * Adds a new JetStream-backed pattern to its stream's feed: confirmed at
 * once when the feed has a position, else when its consumer is made (the
 * feed queued, holding a slot). Under bus->lock.
 */
void bus_js_follow(struct bus *bus, struct bus_sub *bs);

/* bus_replay.c */
void *bus_run_replays(void *arg);
/* Queues r on a job for bs: a joinable one, or a new one. Under bus->lock. */
void bus_add_waiter(struct bus *bus, struct bus_sub *bs, struct bus_replay *r);

/* Makes the Durable Streams route's context and stream (bus_ds.c); 0 or ERR_NATS with err. */
int bus_ds_open(struct bus *bus, const struct bus_params *p, char *err, size_t errlen);
/* Runs what is queued (failing: bus->closing is set) and joins the DS threads. */
void bus_ds_stop(struct bus *bus);
void bus_ds_close(struct bus *bus);
/* Jobs queued or running (0 without the route). Not after bus_ds_stop(). */
size_t bus_ds_jobs(struct bus *bus);

#endif
