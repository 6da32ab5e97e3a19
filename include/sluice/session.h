/*
 * session: what the protocol front ends (h2, http1) share — the worker's
 * environment they serve requests in, and the limits they count.
 *
 * What one connection holds is counted in its session_conn, whatever the
 * protocol: the distinct subject patterns of its open streams
 * (max-subjects-per-connection), the patterns new to the process it may
 * subscribe per second (subscribe-rate), and the bytes of private bodies
 * (poll answers, texts, publish bodies being received), charged with live
 * stream bytes to conn-queue-bytes and the worker's share of
 * process-queue-bytes. A request charges its connection and gives all
 * back when it is disposed, so a connection's counts are exactly what its
 * open requests hold.
 */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/cors.h"
#include "sluice/rate.h"
#include "sluice/stream.h"

struct admission;
struct auth;
struct auth_grant;
struct bus;
struct config;
struct filecache;
struct filecache_entry;
struct http_route;
struct map;

/* Limits a session enforces, counted; one writer (the worker), read from any thread. */
struct session_stats {
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
};

/* What every session of one worker shares; borrowed for the session's life. */
struct session_env {
    const struct config *cfg;
    const struct auth *auth;    /* token checks; mode none allows all */
    const struct cors *cors;    /* allowed cross-origin callers; NULL: none */
    struct bus *bus;            /* for POST /publish; may be NULL (answers 503) */
    struct stream_env *streams;
    struct session_stats *stats;
    struct filecache *files;    /* static files shared by this worker's responses */
    struct admission *admission; /* the process's stream capacity; NULL: unlimited */
};

/*
 * What one connection holds, whatever its protocol: embedded in h2 and
 * http1, initialised by session_conn_init(), and charged by the requests
 * on it until each is disposed.
 */
struct session_conn {
    struct stream_budget budget;   /* conn-queue-bytes: live stream bytes and private bodies */
    struct stream_budget *worker;  /* the worker's share of process-queue-bytes, borrowed */
    struct map *patterns;          /* pattern -> open streams and polls on it; NULL until one */
    struct rate_bucket subscribes; /* subscribe-rate: patterns new to the process */
    bool logged;                   /* a refusal was logged: one line per connection */
    uint64_t id;                   /* the connection's, for log lines */
    struct session_stats *stats;   /* the worker's, borrowed */
};

void session_conn_init(struct session_conn *c, const struct session_env *env, uint64_t conn_id);
/* After every request on c has been disposed. */
void session_conn_dispose(struct session_conn *c);

/* Called when a session has output ready (from a wake outside its recv/fill calls). */
typedef void session_dirty_fn(void *ctx);

/* How a protocol session is wired to its connection; copied in by h2_new/http1_new. */
struct session_io {
    const struct session_env *env; /* borrowed for the session's life */
    struct buf *out;               /* the connection's output buffer, borrowed */
    size_t out_max;                /* bytes the session fills out to */
    session_dirty_fn *dirty;
    void *dirty_ctx;
    uint64_t conn_id;              /* labels log lines */
    const char *peer;              /* "ip:port" for the access log, borrowed */
    bool secure;                   /* TLS: an https:// Origin is then same-origin */
};

/*
 * One request, whatever the protocol: the headers sluice reads, what it
 * answered, and the stream or publish body it owns. Embedded in the
 * protocol's own per-request state; session_req_dispose() logs it to the
 * access log and frees what it owns.
 */
struct session_req {
    char *method;
    char *path;
    char *last_event_id;
    char *request_id;           /* the client's x-request-id, or one made up */
    char *traceparent;
    double started;             /* monotonic seconds */
    size_t header_bytes;        /* name + value + 32 per field */
    bool header_too_long;       /* answer 431 */
    int status;                 /* answered; 0 before */
    uint64_t body_bytes;        /* of a plain response */
    char *authority;            /* :authority or Host, for same-origin checks */
    char *origin;               /* the first Origin */
    unsigned origins;           /* Origin fields seen (more than one is refused) */
    bool preflight_method;      /* Access-Control-Request-Method was sent */
    char *authorization;
    char *cookie;               /* every Cookie field, joined with "; " */
    struct auth_grant *grant;   /* after session_admit() with auth jwt; NULL with none */
    struct stream *stream;      /* SSE responses */
    struct http_route *publish; /* a POST /publish waiting for its body */
    struct buf body;            /* that body so far */
    struct session_conn *conn;  /* what patterns and charged are counted in; NULL: nothing */
    bool counted;               /* stream's subjects are counted in conn->patterns */
    size_t charged;             /* bytes counted in conn->budget and its worker's */
    struct admission *slot;     /* holds one admission slot until disposed; NULL: none */
};

void session_req_init(struct session_req *r);
/* Writes the access log line (if the request got as far as a method) and frees. */
void session_req_dispose(struct session_req *r, const char *protocol, const char *peer);
/*
 * Counts a request header and keeps those sluice uses (name lower-case).
 * Sets header_too_long past max-header-bytes or a field's own bound.
 */
void session_req_header(struct session_req *r, const struct session_env *env, const char *name,
                        size_t nlen, const char *value, size_t vlen);
/* Makes up a request id unless the client sent one. */
void session_req_ensure_id(struct session_req *r);
/*
 * Whether r is a CORS preflight (OPTIONS with Origin and
 * Access-Control-Request-Method); if so, the status to answer (204 or 403).
 */
bool session_preflight(const struct session_req *r, const struct session_env *env, bool secure,
                       int *status);
/*
 * Host (with auth none), CORS, max-subjects, reserved subjects and
 * authorization for a routed request. 0 to serve it; otherwise the status
 * to answer (400, 401, 403, 421) with *text, and for a 401 the
 * www-authenticate value in www. Keeps the grant in r for its expiry.
 */
int session_admit(struct session_req *r, const struct session_env *env,
                  const struct http_route *route, bool secure, char *www, size_t wlen,
                  const char **text);
/* The CORS response headers for r (none for a request without a foreign Origin). */
size_t session_cors(const struct session_req *r, const struct session_env *env, bool secure,
                    enum cors_kind kind, struct cors_header out[CORS_HEADERS_MAX]);
/*
 * The process's capacity for one more SSE stream (max-streams-total,
 * stream-admission-rate). true: admitted, and r holds a slot until
 * session_req_dispose(). false: refused, counted and logged (at most once
 * a second); answer 200 with session_refusal(*retry_ms) as the body.
 */
bool session_admit_stream(struct session_req *r, const struct session_env *env, unsigned *retry_ms);
/*
 * The SSE body of a refused stream: `retry: retry_ms`, a comment, and
 * nothing else (no id: line, so the client keeps its Last-Event-ID).
 * malloc'ed; its length in *len.
 */
char *session_refusal(unsigned retry_ms, size_t *len);
/*
 * Opens r->stream for an HTTP_EVENTS or HTTP_POLL route, its subject
 * patterns counted in conn until r is disposed. 0, or the status to answer
 * instead with *text: 403 when conn would hold more distinct patterns than
 * max-subjects-per-connection (more streams on a pattern it holds are
 * free: max-streams bounds those), 429 when
 * conn's subscribe-rate bucket lacks a token per pattern new to the
 * process (joining a pattern already subscribed is free). Each refusal is
 * counted; the first on a connection is logged. Never calls wake from inside.
 */
int session_open_stream(struct session_req *r, const struct session_env *env,
                        struct session_conn *conn, const struct http_route *route,
                        stream_wake_fn *wake, void *wake_ctx, uint64_t conn_id,
                        int32_t stream_id, const char **text);
/*
 * Charges n bytes of a private body of r (a response text, a publish body
 * being received) to conn and its worker until r is disposed. False, with
 * nothing charged, when that would pass conn-queue-bytes or the worker's
 * share of process-queue-bytes, unless force (a short text that must go);
 * a refusal is counted (queue_bytes) and the first on a connection logged.
 */
bool session_charge(struct session_req *r, struct session_conn *conn, size_t n, bool force);
/*
 * The static file route->file from the configured directory, as a shared
 * entry of env->files (one reference, for filecache_unref()). 0, or
 * ERR_NOTFOUND for anything but a regular file inside the directory
 * (symbolic links leading out of it included) or past 4 MiB, or ERR_AGAIN
 * when the file cache is full of files being sent (answer 503; counted).
 */
int session_file(const struct session_env *env, const char *file,
                 struct filecache_entry **out);
/* For an HTTP_POLL stream: true when it has its answer (an event, a reset, or its end). */
bool session_poll_ready(const struct session_req *r);
/*
 * Drains r->stream into the JSON answer {"events":[{id,event,data}…],"next":"<id>"},
 * at most max-poll-bytes and what r->conn can still be charged, and
 * charges it to r->conn. Whole events only: past the cap the answer ends
 * with the last event that fits (the first always goes) and next is its
 * id, so that polling again from next continues without loss or
 * duplicate. 0, or ERR_LIMIT (json left empty) when not even the first
 * event fits the connection's or worker's room (answer 503; counted).
 */
int session_poll_answer(struct session_req *r, const struct session_env *env, struct buf *json);
/*
 * The poll JSON of SSE text sse (len bytes), ending before the first
 * event that would take json past max bytes (the first event always
 * goes). whole: sse is everything the stream had, so its last id is the
 * position to continue from; else (or when cut) next is the id of the
 * last event included. Appends to json; returns the events included and
 * sets *cut when events were left out. Pure.
 */
size_t session_poll_json(const char *sse, size_t len, bool whole, size_t max, struct buf *json,
                         bool *cut);
/*
 * Publishes r->body per r->publish and frees the body (and its charge);
 * returns the status to answer (202 or 503) and its text.
 */
int session_publish(struct session_req *r, const struct session_env *env, const char **text);

#endif
