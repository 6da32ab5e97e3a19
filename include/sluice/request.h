/*
 * request: the one request pipeline behind every front end (h2, http1).
 *
 * A front end turns bytes into a `struct request` (request_init(), then
 * request_header() per field), hands it over with request_process(), feeds
 * a publish body with request_body()/request_body_end(), and turns the
 * calls of its `struct request_front` into bytes. Everything between is
 * decided here, once, whatever the protocol: routes, the Host rule, CORS,
 * reserved subjects, authorization, admission (max-streams-total and the
 * overload refusal as 200 + retry:, the connection's subject caps,
 * subscribe-rate), dispatch (static files from the worker's shared cache,
 * publish, SSE streams, long-poll answers), the response head fields of
 * every kind of answer, and the access log line. A front end never
 * decides a route, an auth result or a limit; the pipeline never knows
 * which protocol carries it.
 *
 * Data flow: headers in -> request_process() -> one of
 *   front->respond(head, body)   a whole response (text, file, poll JSON);
 *   front->start_stream(head)    an SSE head, the body then read from
 *                                r->stream by the front end as it fills;
 *   front->reset()               no response possible (stream error).
 * The 200 of a stream and the answer of a poll wait for NATS: the stream's
 * wake calls front->wake(), and the front end calls request_resume() from
 * where it may write (h2: at once, as nghttp2 only queues; HTTP/1.1: from
 * its fill, never while a write is pending).
 *
 * What one connection holds is counted in its request_quota, whatever the
 * protocol: the distinct subject patterns of its open streams
 * (max-subjects-per-connection), the patterns new to the process it may
 * subscribe per second (subscribe-rate), and the bytes of private bodies
 * (poll answers, texts, publish bodies being received), charged with live
 * stream bytes to conn-queue-bytes and the worker's share of
 * process-queue-bytes. A request charges its connection and gives all
 * back when it is disposed.
 *
 * Rejected: a pipeline that writes protocol bytes itself (h2o's early
 * shape, with a switch on the protocol per response): every new header
 * had to be added per protocol, which is how the preflight answers of h2
 * and HTTP/1.1 drifted apart. Here the head is a list of fields made in
 * one place; the front ends only serialise it.
 */
#ifndef SLUICE_REQUEST_H
#define SLUICE_REQUEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/callout.h"
#include "sluice/cors.h"
#include "sluice/front.h"
#include "sluice/metrics.h"
#include "sluice/rate.h"
#include "sluice/stream.h"

struct admission;
struct auth;
struct auth_grant;
struct bus;
struct config;
struct filecache;
struct forwarded_nets;
struct guard;
struct principals;
struct filecache_entry;
struct http_route;
struct map;

#define REQUEST_ROUTES_MAX 16  /* request-route entries with their own metric */
#define REQUEST_CANCELS_MAX 1024 /* cancels one worker waits on at once */
#define REQUEST_FORWARD_MAX 16 /* request headers forwarded to a service */

/* A cancelled request stream the gateway ends itself unless its service does first. */
struct request_cancel {
    int64_t due_ms;          /* stream_now_ms() clock */
    char *reply;             /* the reply subject; owned */
};

/* One worker's pending cancels, oldest first (one cancel wait for all: due in order). */
struct request_cancels {
    size_t n;
    struct request_cancel item[REQUEST_CANCELS_MAX];
};

/* Limits the pipeline and front ends enforce, counted; one writer (the worker), any reader. */
struct request_stats {
    atomic_uint_fast64_t stream_rate;  /* streams refused: too many new ones per second */
    atomic_uint_fast64_t requests;     /* connections sent GOAWAY at max-requests */
    atomic_uint_fast64_t header_bytes; /* requests answered 431 */
    atomic_uint_fast64_t flood;        /* connections cut for a frame flood or protocol abuse */
    atomic_uint_fast64_t reserved;     /* requests refused for a reserved NATS subject (403) */
    atomic_uint_fast64_t host;         /* requests refused for a foreign Host (421) */
    atomic_uint_fast64_t unread_body;  /* HTTP/1.1 bodies not read (too large to drop…): closed */
    atomic_uint_fast64_t subjects;     /* streams refused (403) at max-subjects-per-connection */
    atomic_uint_fast64_t subscribe_rate; /* streams refused (429) at subscribe-rate */
    atomic_uint_fast64_t queue_bytes;  /* bodies refused (503): conn- or process-queue-bytes full */
    atomic_uint_fast64_t poll_bytes;   /* poll answers cut short at max-poll-bytes */
    atomic_uint_fast64_t file_cache;   /* static files refused (503): the file cache is in use */
    atomic_uint_fast64_t request_body; /* request stream bodies refused (413) */
    atomic_uint_fast64_t per_address;  /* requests through a trusted proxy refused at
                                          max-connections-per-address for their client */
    /* Forwarded / X-Forwarded-For: what became of a request that carried one. */
    atomic_uint_fast64_t fwd_applied;   /* its client address was used */
    atomic_uint_fast64_t fwd_untrusted; /* ignored: the peer is not a trusted proxy */
    atomic_uint_fast64_t fwd_malformed; /* ignored: malformed where it was read */
    atomic_uint_fast64_t fwd_unusable;  /* ignored: it named no usable address ("unknown") */
    /* Request streams (POST to a request route). */
    atomic_uint_fast64_t req_started;       /* requests published to a service */
    atomic_uint_fast64_t req_finished;      /* answered streams the service ended (Sse-End) */
    atomic_uint_fast64_t req_cancelled;     /* DELETEs accepted: cancel notices sent */
    atomic_uint_fast64_t req_cancel_forced; /* of those, ended by the gateway after the wait */
    atomic_uint_fast64_t req_no_responders; /* answered 503: nobody on the service subject */
    atomic_uint_fast64_t req_timeouts;      /* answered 504: no first reply in time */
    /* Time to first reply, per request-route (index in the config list), the last generic. */
    struct metrics_histogram req_first[REQUEST_ROUTES_MAX + 1];
    /* auth = callout */
    struct callout_stats callout;
    atomic_uint_fast64_t auth_unavailable; /* requests the callout could not decide: 200+retry or 503 */
    atomic_uint_fast64_t auth_renewed;     /* streams whose grant the callout renewed at expiry */
    /* The Durable Streams route (ds.c), answers by operation. */
    atomic_uint_fast64_t ds_create, ds_append, ds_close, ds_read, ds_long_poll, ds_sse, ds_head,
        ds_delete;
    atomic_uint_fast64_t ds_refused;     /* answered 4xx */
    atomic_uint_fast64_t ds_unavailable; /* answered 503: JetStream did not answer in time */
    atomic_uint_fast64_t ds_races;       /* appends retried on a newer tail (another writer) */
};

/* What every request of one worker is served with; borrowed for the worker's life. */
struct request_env {
    const struct config *cfg;
    const struct auth *auth;    /* token checks; mode none allows all */
    const struct cors *cors;    /* allowed cross-origin callers; NULL: none */
    struct bus *bus;            /* for POST /publish; may be NULL (answers 503) */
    struct stream_env *streams;
    struct request_stats *stats;
    struct filecache *files;    /* static files shared by this worker's responses */
    struct admission *admission; /* the process's stream capacity; NULL: unlimited */
    struct request_cancels *cancels; /* the worker's; request_env_dispose() frees */
    const struct forwarded_nets *trusted; /* trusted-proxies; NULL: none */
    struct guard *guard;        /* per-address counts, for requests through a trusted proxy */
    struct principals *principals; /* per-principal stream limits; NULL: none */
    struct callout *callout;    /* auth = callout: the worker's; NULL otherwise */
    size_t worker;              /* the worker's index (bus_ds_submit() answers there) */
};

/*
 * What one connection holds, whatever its protocol: embedded in the front
 * end's connection state, initialised by request_quota_init(), and charged by
 * the requests on it until each is disposed.
 */
struct request_quota {
    struct stream_budget budget;   /* conn-queue-bytes: live stream bytes and private bodies */
    struct stream_budget *worker;  /* the worker's share of process-queue-bytes, borrowed */
    struct map *patterns;          /* pattern -> open streams and polls on it; NULL until one */
    struct rate_bucket subscribes; /* subscribe-rate: patterns new to the process */
    bool logged;                   /* a refusal was logged: one line per connection */
    uint64_t id;                   /* the connection's, for log lines */
    struct request_stats *stats;   /* the worker's, borrowed */
};

void request_quota_init(struct request_quota *q, const struct request_env *env, uint64_t conn_id);
/* After every request charged to q has been disposed. */
void request_quota_dispose(struct request_quota *q);

#define REQUEST_HEAD_MAX 24 /* fields of a response head, CORS ones included */

/* One response header field; name lower case. Both point at storage that outlives the call. */
struct request_field {
    const char *name;
    const char *value;
    size_t name_len, value_len;
};

/*
 * A response head as the pipeline decided it: status and fields, every
 * one of them. A front end adds only what its framing needs (":status" on
 * h2; the status line, connection and transfer-encoding on HTTP/1.1).
 * content-length is among the fields for a whole response (none for 204).
 */
struct request_head {
    int status;
    size_t n;
    struct request_field f[REQUEST_HEAD_MAX];
    char length[24]; /* content-length's value */
};

/*
 * A whole response's body: len bytes at data. owned (may be NULL) is the
 * malloc'ed block data lies in, file (may be NULL) the shared file it lies
 * in (one reference); the front end takes both and lets go of them when
 * the body is sent. With neither, data is borrowed: copy it during the call.
 */
struct request_body {
    const char *data;
    size_t len;
    char *owned;
    struct filecache_entry *file;
};

struct request;

enum request_reset {
    REQUEST_RESET_PROTOCOL, /* the request itself is malformed */
    REQUEST_RESET_INTERNAL, /* we could not answer it */
};

/*
 * What a front end implements. The pipeline calls these from inside
 * request_process(), request_body*() and request_resume(), and returns at
 * once after respond, start_stream and reset: the front end may dispose r
 * inside them. Each returns 0 or a front-end error that the pipeline hands
 * back to the front end's caller.
 */
struct request_front {
    const char *protocol; /* for the access log: "h2", "http/1.1" */
    /* A whole response; takes body->owned and body->file. */
    int (*respond)(struct request *r, const struct request_head *head, struct request_body *body);
    /* The head of an SSE response; the body is r->stream's, sent as it fills. */
    int (*start_stream)(struct request *r, const struct request_head *head);
    /* r->stream has bytes, has ended, or its waiting response may go (request_resume()). */
    void (*wake)(struct request *r);
    /* No response: end the request as a stream error. */
    int (*reset)(struct request *r, enum request_reset why);
};

/*
 * One request, whatever the protocol: the headers sluice reads, what it
 * answered, and the stream or publish body it owns. Embedded in the front
 * end's per-request state; request_dispose() logs it to the access log
 * and frees what it owns. Front ends read the fields, never write them
 * (body_bytes excepted: the bytes of a whole body actually sent).
 */
struct request {
    /*
     * Laid out widest first, the flags together at the end: one struct per
     * open stream, so holes cost a million streams tens of megabytes.
     */
    const struct request_front *front;
    const struct front_io *io;
    struct request_quota *quota;   /* what patterns and charged are counted in */
    char *method;
    char *path;
    char *last_event_id;
    char *request_id;           /* the client's x-request-id, or one made up */
    char *traceparent;
    double started;             /* monotonic seconds */
    size_t header_bytes;        /* name + value + 32 per field */
    uint64_t body_bytes;        /* of a whole response */
    char *authority;            /* :authority or Host, for same-origin checks */
    char *origin;               /* the first Origin */
    char *authorization;
    char *cookie;               /* every Cookie field, joined with "; " */
    char *forwarded;            /* every Forwarded field, joined with ", "; NULL: none */
    char *xff;                  /* every X-Forwarded-For field, joined with ", "; NULL: none */
    char *principal;            /* the stream's principal, counted in env->principals; owned */
    struct auth_grant *grant;   /* after admission with auth jwt; NULL with none */
    struct http_route *route;   /* owned; from routing until answered (a publish: its body) */
    struct buf body;            /* that body so far (publishing) */
    struct stream *stream;      /* SSE responses and polls */
    size_t charged;             /* bytes counted in quota->budget and its worker's */
    struct admission *slot;     /* holds one admission slot until disposed; NULL: none */
    /* Request streams (HTTP_REQUEST, HTTP_REPLY, HTTP_CANCEL). */
    char *tracestate;
    /*
     * request-forward-headers seen: name, value, …; 2 * REQUEST_FORWARD_MAX
     * entries allocated at the first one (NULL before): a stream that
     * forwards nothing, every SSE GET, does not carry 256 idle bytes.
     */
    char **fwd;
    size_t nfwd;                /* entries used in fwd (twice the headers) */
    char *service;              /* HTTP_REQUEST: the service subject; owned */
    char *token;                /* "<tag>.<id>": the stream's name in /streams/r/; owned */
    /*
     * auth = callout (request.c "Callout"): allow-listed headers besides the
     * two above, name, value, …; 2 * CALLOUT_HEADERS_MAX entries allocated at
     * the first one (NULL before), as fwd.
     */
    char **callout_fields;
    size_t ncallout_fields;     /* entries used (twice the headers) */
    struct callout_wait *callout_wait; /* the question in flight; NULL when none */
    struct callout_answer answer; /* an answer not yet applied (answered) */
    struct ds_req *ds;          /* the Durable Streams route's state (ds.c); NULL: none */
    int32_t stream_id;          /* h2's; 0 on HTTP/1.1 */
    int status;                 /* answered; 0 before */
    unsigned origins;           /* Origin fields seen (more than one is refused) */
    int route_index;            /* its request-route, or REQUEST_ROUTES_MAX: generic */
    char client[48];            /* the client's IP (request_client_address) */
    bool header_too_long;       /* answer 431 */
    bool preflight_method;      /* Access-Control-Request-Method was sent */
    bool fwd_too_long;          /* one of those passed FORWARDED_HEADER_MAX: not believed */
    bool forwarded_client;      /* client came from a Forwarded / X-Forwarded-For header */
    bool address_held;          /* client is charged in env->guard until disposed */
    bool publishing;            /* route is a publish waiting for its body */
    bool waiting;               /* the response waits for the stream (NATS confirms, poll) */
    bool poll;                  /* the stream answers a long poll, once, as JSON */
    bool counted;               /* stream's subjects are counted in quota->patterns */
    bool fwd_bad;               /* a forwarded value holds CR, LF or NUL: 400 */
    bool asking;                /* a POST stream: 200 waits for the first reply */
    bool asked;                 /* its request was published */
    bool callout_bad;           /* an allow-listed value holds CR, LF or NUL: 400 */
    bool authorizing;           /* waiting for the callout's answer */
    bool answered;              /* answer is to be applied by request_resume() */
    bool body_done;             /* a publish body ended while authorizing */
    bool renewing;              /* the answer renews an open stream's grant */
    bool no_body;               /* content-length: 0 was sent: the body is complete at once */
};

/* Starts r for a request of io's connection; stream_id labels log lines (0: none). */
void request_init(struct request *r, const struct request_front *front,
                  const struct front_io *io, struct request_quota *quota, int32_t stream_id);
/*
 * The client's IP address (text, no port) as every decision about r sees
 * it: per-address limits, the access log, CORS, authorization and the
 * auth callout. It is the TCP peer's, or the client a PROXY protocol
 * header named for the connection, or — on a connection from a
 * trusted-proxies address — the client its Forwarded / X-Forwarded-For
 * header names (forwarded.h). Set by request_process() before routing;
 * the connection's address before that. Borrowed from r.
 */
const char *request_client_address(const struct request *r);
/* Writes the access log line (if the request got as far as a method) and frees. */
void request_dispose(struct request *r);
/*
 * Counts a request header and keeps those sluice uses (name lower-case,
 * pseudo-headers ":method", ":path", ":authority"). Sets header_too_long
 * past max-header-bytes or a field's own bound.
 */
void request_header(struct request *r, const char *name, size_t nlen, const char *value,
                    size_t vlen);
/*
 * Whether r's body is wanted (a publish route), and then at most how many
 * bytes in *max. Routes r if it is not yet: a front end that must frame
 * the body before it answers (HTTP/1.1) asks first.
 */
bool request_wants_body(struct request *r, uint64_t *max);
/*
 * Serves r once its head is complete: answers it (through r->front), or
 * opens its stream, or waits for its publish body. Returns what a front
 * call returned (0 when none failed).
 */
int request_process(struct request *r);
/*
 * Answers r with a one-line text/plain response (a front end's own
 * refusals: a malformed head, a body that breaks its framing).
 */
int request_fail(struct request *r, int status, const char *text);
/*
 * Takes len bytes of a publish body (ignored unless r is publishing and
 * unanswered). 0, or ERR_LIMIT when the body was refused (answered 413
 * past max-publish-bytes, 503 when the connection's or worker's bytes are
 * full): the rest of it is not wanted.
 */
int request_body(struct request *r, const void *data, size_t len);
/* The publish body is complete: publishes it and answers (202 or 503). 0 or a front error. */
int request_body_end(struct request *r);
/* True while r publishes and its body is still wanted. */
bool request_publishing(const struct request *r);
/* True while r's response waits for its stream. */
bool request_waiting(const struct request *r);
/*
 * Sends r's waiting response if its stream is ready now (the SSE head, or
 * the poll's answer). 0, or what the front call returned.
 */
int request_resume(struct request *r);

/*
 * For the protocol routes outside this file (src/proto/ds.c). They never
 * write protocol bytes: an answer is a head of fields and a body.
 */
/* Adds a field to h (ignored past REQUEST_HEAD_MAX); name and value must outlive the answer. */
void request_head_add(struct request_head *h, const char *name, const char *value);
/*
 * Answers r with h (x-request-id, CORS and, unless 204 or 304,
 * content-length added here) and body (taken). r may be gone after it.
 */
int request_answer(struct request *r, struct request_head *h, struct request_body *body);
/* Charges n bytes of a private body of r to its connection and worker (see charge()). */
void request_charge(struct request *r, size_t n);
/* How request_open() opens a stream for a protocol route. */
struct request_wait {
    int timeout_ms;            /* ends it then (STREAM_END_TIMEOUT); 0: never */
    size_t queue_max;          /* its queue cap; 0: stream-queue-bytes */
    bool notify;               /* a notifier (stream_params.notify) */
    const char *last_event_id; /* where it starts; NULL: now */
    stream_trailer_fn *trailer; /* see stream_params */
    void *trailer_ctx;
    const char *prologue;      /* copied */
    size_t prologue_len;
};
/*
 * Opens r->stream on r's route subjects as w says, admitted like an SSE
 * stream, and makes r wait for it (request_resume). 0, or the status to
 * answer with *text. r's route is gone after a 0.
 */
int request_open(struct request *r, const struct request_wait *w, const char **text);
/* Sends r's SSE head h (x-request-id and CORS added); the body is r->stream's. */
int request_start_stream(struct request *r, struct request_head *h);

/*
 * Ends the cancelled request streams whose service did not end them
 * within request-cancel-wait-ms (see README): on the worker's tick.
 */
void request_env_tick(struct request_env *env, int64_t now_ms);
/* Frees what env holds for pending cancels. */
void request_env_dispose(struct request_env *env);

#endif
