/*
 * stream: one SSE response — its subjects, its bounded queue, its ids,
 * resume, heartbeat and end (pure: no I/O, no library headers).
 *
 * The queue holds references to shared event bodies plus a few bytes of
 * the stream's own (id lines, retry, comments) in one FIFO, so the
 * protocol front end reads a single byte sequence with stream_pending()
 * and stream_copy() and writes it straight into its frames.
 *
 * Ids: one subject gives `id: <seq>`; several give one sequence per
 * subject in request order joined by '-' (`id: 1732432345123456-1732432345120007`).
 * A stream's position on a subject is the sequence of the last event it
 * queued there, or the subscription's newest when it joined.
 *
 * Resume: with a Last-Event-ID the stream first replays, per subject,
 * every event after that subject's position that history still holds,
 * merged in sequence order, then goes live; live events at or below a
 * subject's position are dropped, so the seam has no gap and no
 * duplicate. When any subject cannot be resumed (id too old, from another
 * gateway process, or malformed), the stream begins with one
 * `event: reset` naming them and continues live.
 *
 * Finite streams: an event marked end (sse_event.end, the publisher's
 * Sse-End) ends its subject for the stream after it is queued (an end
 * without a body queues only its id line, so that a reconnect's
 * Last-Event-ID is at the end). Once every subject has ended, the stream
 * ends cleanly after what is queued, with nothing added: no comment, no
 * error (STREAM_END_FINISHED). A multi-subject stream goes on while any
 * subject is live; events of an ended subject are ignored. A start at or
 * past every subject's end with nothing to replay is stream_over().
 *
 * Slow-consumer policy (the one place it lives): live bytes queued are
 * charged to the stream, its connection and its worker; when any of the
 * three would pass its cap, the stream drops what it has not started to
 * send, queues a final comment naming the reason, and ends — a clean end,
 * never an HTTP error, because an EventSource that sees one stops
 * reconnecting. A replay's bodies are shared with history or with one
 * JetStream replay batch; what a stream adds per replayed event is its
 * queue slot and id line, charged to the worker cap only. The connection
 * and worker budgets are shared with the private bodies of plain
 * responses and request bodies (request.c's charge()), so that those and
 * live events together stay under conn-queue-bytes and
 * process-queue-bytes. A replay the
 * worker cap cannot take whole is refused with `event: reset`
 * (replay-limit), and the stream goes live.
 */
#ifndef SLUICE_STREAM_H
#define SLUICE_STREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/fanout.h"
#include "sluice/list.h"
#include "sluice/metrics.h"

struct stream;

enum stream_end {
    STREAM_END_NONE,          /* still open; at free: the client went away */
    STREAM_END_SLOW_CONSUMER, /* a queue cap was hit */
    STREAM_END_UNAVAILABLE,   /* the subscription could not be made */
    STREAM_END_DRAIN,         /* the gateway is shutting down */
    STREAM_END_TOKEN_EXPIRED, /* the client's token expired */
    STREAM_END_LIMIT,         /* a configured limit ended it */
    STREAM_END_TIMEOUT,       /* a long-poll's wait ran out */
    STREAM_END_FINISHED,      /* every subject was ended by its publisher (Sse-End) */
    STREAM_END_REVOKED,       /* an operator or service revoked it (event: revoked) */
    STREAM_END_AUTH_UNAVAILABLE, /* re-authorization failed for want of the auth service */
    STREAM_END_COUNT
};

/* The reason's metric label: "client", "slow_consumer", "drain", … */
const char *stream_end_label(enum stream_end why);

/* Bytes charged against a cap; single-threaded (one per connection, one per worker). */
struct stream_budget {
    size_t used;
    size_t max;
};

/*
 * Charges n bytes of a private response or request body to a connection
 * and its worker together, or to neither: false when either would pass
 * its max, unless force (a few bytes that must go, such as an error text).
 */
bool stream_budget_take(struct stream_budget *conn, struct stream_budget *worker, size_t n,
                        bool force);
/* Gives back n bytes taken by stream_budget_take(). */
void stream_budget_give(struct stream_budget *conn, struct stream_budget *worker, size_t n);
/* Bytes both can still take. */
size_t stream_budget_room(const struct stream_budget *conn, const struct stream_budget *worker);

/* Counters a worker's streams keep; one writer, read from any thread. */
struct stream_stats {
    atomic_uint_fast64_t open;            /* gauge */
    atomic_uint_fast64_t opened;          /* streams ever opened */
    atomic_uint_fast64_t with_last_id;    /* opened with a Last-Event-ID */
    atomic_uint_fast64_t events_queued;   /* events queued, live and replayed */
    atomic_uint_fast64_t bytes_queued;    /* gauge: live bytes waiting */
    atomic_uint_fast64_t replayed_events; /* events sent from history */
    atomic_uint_fast64_t resumes;         /* streams resumed from history */
    atomic_uint_fast64_t resets;          /* streams that began with event: reset */
    atomic_uint_fast64_t cut_slow;        /* ended by the slow-consumer policy */
    atomic_uint_fast64_t delivered;       /* events fully written to streams */
    atomic_uint_fast64_t bytes_written;   /* stream bytes handed to the protocol */
    atomic_uint_fast64_t ended[STREAM_END_COUNT]; /* at free, by reason; NONE = client */
    struct metrics_histogram duration;    /* stream lifetime */
    struct metrics_histogram first_event; /* open to first event written */
};

/* What one worker's streams share. */
struct stream_env {
    struct fanout *fanout;
    struct list idle;        /* streams, least recently active first */
    struct list expiring;    /* streams whose token ends (expires_ms) */
    int64_t heartbeat_ms;    /* heartbeat after this much idleness */
    /*
     * stream_now_ms() as of the current batch of deliveries: the worker
     * reads the clock once per inbox wake-up (and stream_env_tick() sets
     * it), not once per stream per event. Coarse milliseconds either way.
     */
    int64_t now_ms;
    struct stream_budget budget; /* the worker's share of the process cap */
    struct sse_refs refs;    /* the streams' references to shared events, batched */
    /*
     * The sequence formatted last for an id line, and its digits: an event
     * fanned out to a worker's streams is formatted once, not per stream.
     */
    uint64_t id_seq;
    uint8_t id_len;          /* digits in id_text; 0: none yet */
    char id_text[SSE_U64_DIGITS_MAX];
    struct stream_stats stats;
};

/* Called when the stream has something new to send, has become ready, or has ended. */
typedef void stream_wake_fn(void *ctx);
/*
 * Called (with wake_ctx) instead of ending the stream when its token
 * expiry comes and the grant is renewable: the owner re-authorizes and
 * then sets a new expiry or ends the stream. The expiry is cleared first.
 */
typedef void stream_renew_fn(void *ctx);


/*
 * Writes at most max bytes of its owner's to follow an event of seq (end:
 * the event ends its subject; empty: it has no data) into out; returns
 * how many. Called from inside the stream's queueing, never after its end.
 */
typedef size_t stream_trailer_fn(void *ctx, uint64_t seq, bool end, bool empty, char *out,
                                 size_t max);
#define STREAM_TRAILER_MAX 256

struct stream_params {
    struct stream_env *env;
    struct stream_budget *conn_budget;
    char *const *subjects;     /* borrowed; copied */
    size_t nsubjects;
    const char *last_event_id; /* NULL for a fresh start; "earliest": all stored */
    int64_t since_ns;          /* without last_event_id: replay from this time; 0: none */
    unsigned retry_ms;         /* hint before jitter */
    unsigned jitter_pct;       /* +- percent, drawn per stream */
    size_t queue_max;          /* live bytes */
    stream_wake_fn *wake;
    void *wake_ctx;
    uint64_t conn_id;          /* for log lines */
    int32_t stream_id;
    int64_t expires_ms;        /* stream_now_ms() clock; 0: never */
    enum stream_end expire_end;/* why it ends then: TOKEN_EXPIRED, or TIMEOUT for a poll */
    stream_renew_fn *renew;    /* NULL: a TOKEN_EXPIRED expiry ends the stream */
    const char *principal;     /* who it was granted to, for revocation; copied; may be NULL */
    /*
     * A notifier (the Durable Streams route's live reads): queues neither
     * the start nor events; it wakes once started and at each event after
     * that, and an Sse-End does not end it. Its owner reads the new data
     * itself and queues what to send with stream_push_text().
     */
    bool notify;
    /*
     * The Durable Streams route's SSE readers: bytes after every event
     * (their control events; NULL: none), and bytes queued right after the
     * start (the catch-up read before it; copied).
     */
    stream_trailer_fn *trailer;
    void *trailer_ctx;
    const char *prologue;
    size_t prologue_len;
};

/*
 * A new stream with `retry:`, any reset and replay queued, joined to its
 * subjects. If joining fails the stream is returned already ending:
 * STREAM_END_LIMIT when the process holds max-subscriptions patterns all
 * watched, else (NATS closed) STREAM_END_UNAVAILABLE. Never calls wake from inside.
 */
struct stream *stream_new(const struct stream_params *p);
/* Leaves the fanout and drops every queued reference. NULL is a no-op. */
void stream_free(struct stream *s);

/* fanout_event_fn for stream links: queues ev, or ends a slow consumer. */
void stream_on_event(struct fanout_link *link, struct sse_event *ev);
/*
 * fanout_ready_fn for stream links: once all its subjects are confirmed,
 * asks where each starts (history, or a JetStream replay) and wakes the
 * stream when it has started.
 */
void stream_on_ready(struct fanout_link *link);
/*
 * For fanout_each() when the worker dropped events of the link's
 * subscription (worker-inbox-bytes): ends the stream as a slow
 * consumer's, so that its client resumes from history after the last
 * event it got.
 */
void stream_on_lost(struct fanout_link *link);
/* fanout_replayed_fn for stream links: a replay answered; starts the stream after the last. */
void stream_on_replayed(struct fanout_link *link, struct bus_resume *r);
/*
 * True once the stream has started: nats-server has every subscription,
 * so that no message published from then on can miss it, and every
 * replay has answered. Its response may be sent then. An ended stream is
 * ready too (it has only its end left to send).
 */
bool stream_ready(const struct stream *s);
/* Ends the stream after what is already partly sent, with a final comment; wakes. */
void stream_end(struct stream *s, enum stream_end why);
/*
 * Like stream_end(), but first queues `retry: retry_ms`, so that the
 * client comes back after that long (drain spreads reconnects this way).
 */
void stream_end_retry(struct stream *s, enum stream_end why, unsigned retry_ms);
/*
 * True when every subject had already ended at the stream's start (the
 * client's position at or past each end, or a fresh start on ended
 * subjects) and there is no event to send: the answer is 204 No Content,
 * which stops an EventSource for good, not an empty stream.
 */
bool stream_over(const struct stream *s);
/* True when the stream's subject answered "no responders" (a request nobody took). */
bool stream_refused(const struct stream *s);
/* Sets when the stream ends by itself (0: never) and why; after it ended, nothing. */
void stream_set_expiry(struct stream *s, int64_t expires_ms, enum stream_end why);
/*
 * Ends the stream like stream_end(why) but with a final event instead of
 * a comment: `event: <event>` and `data: <data>` (one line, no CR/LF).
 */
void stream_end_event(struct stream *s, enum stream_end why, const char *event,
                      const char *data);
/*
 * Ends, with `event: revoked` and reason as its data, every open stream
 * of env granted to principal (non-NULL) or with a subject overlapping
 * subject (non-NULL). Returns how many. May call wake.
 */
size_t stream_env_revoke(struct stream_env *env, const char *principal, const char *subject,
                         const char *reason);
/* The principal given at stream_new(), or NULL; borrowed. */
const char *stream_principal(const struct stream *s);
/*
 * Queues n bytes of the owner's (a notifier's SSE text), charged as live
 * bytes. False when the stream has ended, or ends it now because they
 * would pass a cap (the slow-consumer policy).
 */
bool stream_push_text(struct stream *s, const char *bytes, size_t n);
/* Why the stream ended, or STREAM_END_NONE. */
enum stream_end stream_ended(const struct stream *s);

/*
 * Bytes ready to send, at most max. *eof is set when those bytes are the
 * last of the stream. The bytes are promised: an end before they are
 * copied keeps them (nghttp2 frames a DATA payload before it may write it).
 */
size_t stream_pending(struct stream *s, size_t max, bool *eof);
/* Copies n bytes (n <= stream_pending()) to dst and consumes them. */
void stream_copy(struct stream *s, uint8_t *dst, size_t n);
/* Events (and resets) queued and not yet fully sent: what a long-poll answers with. */
size_t stream_dispatchable(const struct stream *s);
/* Bytes queued and not yet sent, replay included. */
size_t stream_queued(const struct stream *s);
/* The `retry:` value this stream announced. */
unsigned stream_retry_ms(const struct stream *s);

/* The stream's subjects, in request order; borrowed. */
char *const *stream_subjects(const struct stream *s, size_t *n);

/* What the access log says of a stream. */
struct stream_info {
    double duration_s;
    uint64_t events; /* events fully written */
    uint64_t bytes;  /* bytes written */
    enum stream_end end;
};
void stream_info(const struct stream *s, struct stream_info *out);

void stream_env_init(struct stream_env *env, struct fanout *fanout, int64_t heartbeat_ms,
                     size_t budget_max);
/*
 * Ends the streams whose token has expired, and queues a `:` heartbeat on
 * every stream idle for heartbeat_ms, at now_ms (monotonic milliseconds).
 * May call wake.
 */
void stream_env_tick(struct stream_env *env, int64_t now_ms);
/*
 * Ends up to n of env's open streams (least recently active first), each
 * with `retry:` drawn from [retry_min_ms, retry_max_ms]. Returns how many
 * open streams remain. May call wake.
 */
size_t stream_env_end_some(struct stream_env *env, size_t n, enum stream_end why,
                           unsigned retry_min_ms, unsigned retry_max_ms);
/*
 * Applies the references to shared events that env's streams took and
 * dropped since the last call (sse_refs_flush): the worker calls it after
 * each inbox batch and each flush of its connections, and before it frees
 * env, so events are freed at most one loop iteration late.
 */
void stream_env_flush(struct stream_env *env);
/* Open (not yet ended) streams of env. */
size_t stream_env_open(const struct stream_env *env);
/* Monotonic milliseconds, cheap (coarse clock). */
int64_t stream_now_ms(void);
/* Monotonic seconds, precise (for durations that are measured, not scheduled). */
double stream_now_s(void);

#endif
