/*
 * session: what the protocol front ends (h2, http1) share — the worker's
 * environment they serve requests in, and the limits they count.
 */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/cors.h"
#include "sluice/stream.h"

struct admission;
struct auth;
struct auth_grant;
struct bus;
struct config;
struct http_route;

/* Limits a session enforces, counted; one writer (the worker), read from any thread. */
struct session_stats {
    atomic_uint_fast64_t stream_rate;  /* streams refused: too many new ones per second */
    atomic_uint_fast64_t requests;     /* connections sent GOAWAY at max-requests */
    atomic_uint_fast64_t header_bytes; /* requests answered 431 */
    atomic_uint_fast64_t flood;        /* connections cut for a frame flood or protocol abuse */
};

/* What every session of one worker shares; borrowed for the session's life. */
struct session_env {
    const struct config *cfg;
    const struct auth *auth;    /* token checks; mode none allows all */
    const struct cors *cors;    /* allowed cross-origin callers; NULL: none */
    struct bus *bus;            /* for POST /publish; may be NULL (answers 503) */
    struct stream_env *streams;
    struct session_stats *stats;
    struct admission *admission; /* the process's stream capacity; NULL: unlimited */
};

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
 * CORS, max-subjects and authorization for a routed request. 0 to serve
 * it; otherwise the status to answer (400, 401, 403) with *text, and for a 401 the
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
/* Opens r->stream for an HTTP_EVENTS route. Never calls wake from inside. */
void session_open_stream(struct session_req *r, const struct session_env *env,
                         struct stream_budget *budget, const struct http_route *route,
                         stream_wake_fn *wake, void *wake_ctx, uint64_t conn_id,
                         int32_t stream_id);
/*
 * Reads a static file (route->file) from the configured directory into
 * *body (malloc'ed). 0, or ERR_NOTFOUND for anything but a regular file
 * inside the directory (symbolic links leading out of it included), or
 * ERR_LIMIT past 4 MiB.
 */
int session_file(const struct session_env *env, const char *file, char **body, size_t *len);
/* For an HTTP_POLL stream: true when it has its answer (an event, a reset, or its end). */
bool session_poll_ready(const struct session_req *r);
/* Drains r->stream into the JSON answer {"events":[{id,event,data}…],"next":"<id>"}. */
void session_poll_answer(struct session_req *r, struct buf *json);
/* Publishes r->body per r->publish; returns the status to answer (202 or 503) and its text. */
int session_publish(struct session_req *r, const struct session_env *env, const char **text);

#endif
