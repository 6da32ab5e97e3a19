/*
 * request: the request pipeline (see request.h) — routes, Host, CORS,
 * reserved subjects, authorization, admission, dispatch, the response
 * heads of every kind of answer, and the access log line, for h2 and
 * HTTP/1.1 alike.
 *
 * A request goes: headers (request_header) -> request_process: 431, then
 * a preflight's answer, then route -> admit (Host, CORS, subjects, auth)
 * -> dispatch: a file (static_file.c: a shared, reference-counted cache
 * entry, never copied per request), a publish (wait for the body, then
 * bus_publish), an SSE stream or a long poll (the stream is opened with
 * the process's and the connection's admission; its 200 or its answer
 * waits until NATS has the subscription; poll.c turns a poll's queue into
 * its JSON, charged here to the connection). Every answer leaves through the front end's
 * table (struct request_front) as a head of fields and a body; nothing
 * here knows how those become bytes.
 *
 * Preflight answer, chosen once for both protocols: 204 with x-request-id
 * and the CORS preflight headers only. No content-type, content-length or
 * cache-control: RFC 9110 15.3.5 forbids content-length on a 204, and
 * there is no content to type or cache (HTTP/1.1 adds only its
 * connection header).
 */
#include "sluice/request.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/access.h"
#include "sluice/admission.h"
#include "sluice/auth.h"
#include "sluice/bus.h"
#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/host.h"
#include "sluice/route.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/metrics.h"
#include "sluice/poll.h"
#include "sluice/sse.h"
#include "sluice/static_file.h"
#include "sluice/subject.h"
#include "sluice/mem.h"

#define LAST_EVENT_ID_MAX 1024
#define REQUEST_ID_MAX 128

void request_init(struct request *r, const struct request_front *front,
                  const struct front_io *io, struct request_quota *quota, int32_t stream_id)
{
    memset(r, 0, sizeof(*r));
    r->front = front;
    r->io = io;
    r->quota = quota;
    r->stream_id = stream_id;
    r->started = stream_now_s();
    buf_init(&r->body);
}

/* The path with any access_token value replaced, so tokens never reach the logs. */
static char *redact(const char *path)
{
    char *out = mem_strdup(path);
    for (char *p = strstr(out, "access_token="); p; p = strstr(p, "access_token=")) {
        if (p != out && p[-1] != '?' && p[-1] != '&') {
            p++;
            continue;
        }
        p += 13;
        size_t n = strcspn(p, "&");
        memset(p, 'x', n < 8 ? n : 8);
        memmove(p + (n < 8 ? n : 8), p + n, strlen(p + n) + 1);
    }
    return out;
}

static void log_access(const struct request *r)
{
    char *path = redact(r->path ? r->path : "");
    struct access_entry e = {
        .request_id = r->request_id ? r->request_id : "-",
        .traceparent = r->traceparent,
        .client = r->io->peer,
        .protocol = r->front->protocol,
        .method = r->method,
        .path = path,
        .status = r->status,
        .duration_s = stream_now_s() - r->started,
        .bytes = r->body_bytes,
        .reason = "complete",
    };
    if (r->stream) {
        struct stream_info info;
        stream_info(r->stream, &info);
        e.subjects = stream_subjects(r->stream, &e.nsubjects);
        e.events = info.events;
        e.bytes = info.bytes;
        e.reason = stream_end_label(info.end);
    }
    access_write(&e);
    free(path);
}

void request_quota_init(struct request_quota *c, const struct request_env *env, uint64_t conn_id)
{
    memset(c, 0, sizeof(*c));
    c->id = conn_id;
    c->budget.max = env->cfg->conn_queue_bytes;
    c->worker = &env->streams->budget;
    c->stats = env->stats;
    rate_init(&c->subscribes, env->cfg->subscribe_rate, stream_now_s());
}

static void refuse(struct request_quota *conn, atomic_uint_fast64_t *counter, const char *why);

/*
 * Charges n bytes of a private body of r (a response text, a publish body
 * being received) to its connection and worker until r is disposed.
 * False, with nothing charged, when that would pass conn-queue-bytes or
 * the worker's share of process-queue-bytes, unless force (a short text
 * that must go); a refusal is counted and the first on a connection logged.
 */
static bool charge(struct request *r, size_t n, bool force)
{
    struct request_quota *q = r->quota;
    if (!stream_budget_take(&q->budget, q->worker, n, force)) {
        refuse(q, &q->stats->queue_bytes, "conn-queue-bytes or process-queue-bytes full");
        return false;
    }
    r->charged += n;
    return true;
}

void request_quota_dispose(struct request_quota *c)
{
    map_free(c->patterns);
    c->patterns = NULL;
}

/* Streams on pattern held by c. */
static uintptr_t holders(const struct request_quota *c, const char *pattern)
{
    return c->patterns ? (uintptr_t)map_get(c->patterns, pattern, strlen(pattern)) : 0;
}

/* Counts s's subjects in c (values are counts stored as pointers). */
static void hold_patterns(struct request_quota *c, char *const *subjects, size_t n)
{
    if (!c->patterns)
        c->patterns = map_new();
    for (size_t i = 0; i < n; i++) {
        uintptr_t k = holders(c, subjects[i]);
        map_put(c->patterns, subjects[i], strlen(subjects[i]), (void *)(k + 1));
    }
}

static void forget_patterns(struct request_quota *c, const struct stream *s)
{
    size_t n;
    char *const *subjects = stream_subjects(s, &n);
    for (size_t i = 0; i < n; i++) {
        uintptr_t k = holders(c, subjects[i]);
        if (k > 1)
            map_put(c->patterns, subjects[i], strlen(subjects[i]), (void *)(k - 1));
        else
            map_del(c->patterns, subjects[i], strlen(subjects[i]));
    }
}

/* Gives back n of the bytes r has charged. */
static void uncharge(struct request *r, size_t n)
{
    if (n)
        stream_budget_give(&r->quota->budget, r->quota->worker, n);
    r->charged -= n;
}

void request_dispose(struct request *r)
{
    if (r->method)
        log_access(r);
    if (r->counted)
        forget_patterns(r->quota, r->stream);
    uncharge(r, r->charged);
    stream_free(r->stream);
    if (r->slot)
        admission_put(r->slot);
    free(r->method);
    free(r->path);
    free(r->last_event_id);
    free(r->request_id);
    free(r->traceparent);
    free(r->authority);
    free(r->origin);
    free(r->authorization);
    free(r->cookie);
    auth_grant_free(r->grant);
    if (r->route) {
        http_route_dispose(r->route);
        free(r->route);
    }
    buf_dispose(&r->body);
    memset(r, 0, sizeof(*r));
}

static bool is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && memcmp(name, want, nlen) == 0;
}

static void keep(struct request *r, char **slot, const char *value, size_t len, size_t max)
{
    if (len > max) {
        r->header_too_long = true;
        return;
    }
    free(*slot);
    *slot = mem_strndup(value, len);
}

void request_header(struct request *r, const char *name, size_t nlen, const char *value,
                    size_t vlen)
{
    const struct request_env *env = r->io->env;
    r->header_bytes += nlen + vlen + 32;
    if (r->header_bytes > (size_t)env->cfg->max_header_bytes) {
        r->header_too_long = true;
        return;
    }
    if (is(name, nlen, ":method"))
        keep(r, &r->method, value, vlen, 16);
    else if (is(name, nlen, ":path"))
        keep(r, &r->path, value, vlen, HTTP_PATH_MAX);
    else if (is(name, nlen, "last-event-id"))
        keep(r, &r->last_event_id, value, vlen, LAST_EVENT_ID_MAX);
    else if (is(name, nlen, ":authority") || is(name, nlen, "host"))
        keep(r, &r->authority, value, vlen, 256);
    else if (is(name, nlen, "origin")) {
        if (r->origins++ == 0)
            keep(r, &r->origin, value, vlen, 256);
    } else if (is(name, nlen, "access-control-request-method"))
        r->preflight_method = true;
    else if (is(name, nlen, "authorization"))
        keep(r, &r->authorization, value, vlen, AUTH_TOKEN_MAX + 16);
    else if (is(name, nlen, "cookie")) {
        /* h2 may split cookies over several fields; join them as one header would be. */
        size_t have = r->cookie ? strlen(r->cookie) : 0;
        if (have + vlen + 2 > AUTH_TOKEN_MAX * 2) {
            r->header_too_long = true;
            return;
        }
        r->cookie = mem_realloc(r->cookie, have + vlen + 3);
        if (have) {
            memcpy(r->cookie + have, "; ", 2);
            have += 2;
        }
        memcpy(r->cookie + have, value, vlen);
        r->cookie[have + vlen] = '\0';
    }
    /* Optional ones: an oversized value is ignored rather than refused. */
    else if (is(name, nlen, "x-request-id") && vlen > 0 && vlen <= REQUEST_ID_MAX)
        keep(r, &r->request_id, value, vlen, REQUEST_ID_MAX);
    else if (is(name, nlen, "traceparent") && vlen <= REQUEST_ID_MAX)
        keep(r, &r->traceparent, value, vlen, REQUEST_ID_MAX);
}

/* Makes up a request id unless the client sent one. */
static void ensure_id(struct request *r)
{
    /* 16 hex digits: unique enough to find one request in the logs, not a secret. */
    static _Thread_local uint64_t state;
    if (r->request_id)
        return;
    if (!state)
        state = (uint64_t)(stream_now_s() * 1e9) ^ (uint64_t)(uintptr_t)&state ^ 0x2545f4914f6cdd1dULL;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    char id[17];
    snprintf(id, sizeof(id), "%016" PRIx64, state);
    r->request_id = mem_strdup(id);
}

/* A browser's Origin for its own page's origin is not cross-origin (POSTs always carry one). */
static bool same_origin(const struct request *r)
{
    if (!r->origin || !r->authority)
        return false;
    const char *scheme = r->io->secure ? "https://" : "http://";
    size_t sl = strlen(scheme);
    return strncmp(r->origin, scheme, sl) == 0 && strcmp(r->origin + sl, r->authority) == 0;
}

static enum cors_result cors_of(const struct request *r)
{
    if (!r->origin || same_origin(r))
        return r->origins > 1 ? CORS_DENIED : CORS_NO_ORIGIN;
    if (r->origins > 1)
        return CORS_DENIED;
    return cors_check(r->io->env->cors, r->origin, strlen(r->origin));
}

/* Whether r is a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method). */
static bool is_preflight(const struct request *r)
{
    return strcmp(r->method, "OPTIONS") == 0 && r->origin && r->preflight_method;
}

/* Every response head is made by these: the one place that decides header fields. */

static void add(struct request_head *h, const char *name, const char *value)
{
    if (h->n < REQUEST_HEAD_MAX)
        h->f[h->n++] = (struct request_field){name, value, strlen(name), strlen(value)};
}

/* The CORS headers for r (none for a request without a foreign Origin); values point into r. */
static void add_cors(const struct request *r, struct request_head *h, enum cors_kind kind)
{
    if (!r->origin || same_origin(r) || r->origins > 1)
        return;
    struct cors_header ch[CORS_HEADERS_MAX];
    size_t k = cors_headers(r->io->env->cors, kind, r->origin, strlen(r->origin), ch);
    for (size_t i = 0; i < k && h->n < REQUEST_HEAD_MAX; i++)
        h->f[h->n++] = (struct request_field){ch[i].name, ch[i].value, ch[i].name_len,
                                              ch[i].value_len};
}

/* A route no longer needed once r is answered: a long stream should not hold it. */
static void unroute(struct request *r)
{
    if (r->route && !r->publishing) {
        http_route_dispose(r->route);
        free(r->route);
        r->route = NULL;
    }
}

static void log_answer(const struct request *r, int status)
{
    /* Paths without their query: it may carry an access_token. */
    const char *path = r->path ? r->path : "-";
    log_debug("conn %" PRIu64 " stream %d: %s %.*s -> %d", r->io->conn_id, (int)r->stream_id,
              r->method ? r->method : "-", (int)strcspn(path, "?"), path, status);
}

/*
 * A whole response: status, ctype, and body (taken; see struct
 * request_body); www (may be NULL) becomes www-authenticate. Returns what
 * the front end did: r may be gone after it.
 */
static int respond(struct request *r, int status, const char *ctype, struct request_body *body,
                   const char *www)
{
    struct request_head h = {.status = status};
    ensure_id(r);
    snprintf(h.length, sizeof(h.length), "%zu", body->len);
    add(&h, "content-type", ctype);
    add(&h, "content-length", h.length);
    add(&h, "cache-control", "no-store");
    add(&h, "x-request-id", r->request_id);
    if (www)
        add(&h, "www-authenticate", www);
    add_cors(r, &h, CORS_ACTUAL);
    r->status = status;
    r->publishing = false;
    unroute(r);
    log_answer(r, status);
    return r->front->respond(r, &h, body);
}

/* A text/plain response of one line; www (may be NULL) becomes www-authenticate. */
static int respond_text(struct request *r, int status, const char *text, const char *www)
{
    size_t n = (size_t)snprintf(NULL, 0, "%s\n", text);
    char *line = mem_alloc(n + 1);
    snprintf(line, n + 1, "%s\n", text);
    /* Charged, but never refused: one short line per request, and max-streams bounds those. */
    charge(r, n + 1, true);
    struct request_body body = {line, n, line, NULL};
    return respond(r, status, "text/plain; charset=utf-8", &body, www);
}

int request_fail(struct request *r, int status, const char *text)
{
    return respond_text(r, status, text, NULL);
}

/* The answer to a CORS preflight: 204 with the preflight headers only, or 403. */
static int respond_preflight(struct request *r)
{
    if (cors_of(r) == CORS_DENIED)
        return respond_text(r, 403, "origin not allowed", NULL);
    struct request_head h = {.status = 204};
    add(&h, "x-request-id", r->request_id);
    add_cors(r, &h, CORS_PREFLIGHT);
    r->status = 204;
    unroute(r);
    log_answer(r, 204);
    return r->front->respond(r, &h, NULL);
}

/* The head of an SSE response; its body is r->stream's. */
static int start_stream(struct request *r)
{
    struct request_head h = {.status = 200};
    add(&h, "content-type", "text/event-stream");
    add(&h, "cache-control", "no-cache");
    add(&h, "x-accel-buffering", "no");
    add(&h, "x-request-id", r->request_id);
    add_cors(r, &h, CORS_ACTUAL);
    r->waiting = false;
    r->status = 200;
    return r->front->start_stream(r, &h);
}

/* Copies tok (n bytes) into out, NUL-terminated; 0 or ERR_LIMIT. */
static int copy_token(const char *tok, size_t n, char *out, size_t outsz, size_t *len)
{
    if (n >= outsz)
        return ERR_LIMIT;
    memcpy(out, tok, n);
    out[n] = '\0';
    *len = n;
    return 0;
}

/* The token, from Authorization: Bearer, the cookie, or ?access_token=, in that order. */
static int find_token(const struct request *r, const struct request_env *env, char *out,
                      size_t outsz, size_t *len)
{
    const char *tok;
    size_t n;
    if (r->authorization &&
        auth_token_from_bearer(r->authorization, strlen(r->authorization), &tok, &n))
        return copy_token(tok, n, out, outsz, len);
    if (r->cookie &&
        auth_token_from_cookie(r->cookie, strlen(r->cookie), env->cfg->auth_cookie, &tok, &n))
        return copy_token(tok, n, out, outsz, len);
    const char *q = r->path ? strchr(r->path, '?') : NULL;
    return q ? auth_token_from_query(q + 1, strlen(q + 1), out, outsz, len) : ERR_NOTFOUND;
}

/*
 * Host (with auth none), CORS, max-subjects, reserved subjects and
 * authorization for a routed request. 0 to serve it; otherwise the status
 * to answer (400, 401, 403, 421) with *text, and for a 401 the
 * www-authenticate value in www. Keeps the grant in r for its expiry.
 */
static int admit(struct request *r, char *www, size_t wlen, const char **text)
{
    const struct request_env *env = r->io->env;
    const struct http_route *route = r->route;
    /* Without a token, a rebound DNS name is the only thing between a web page and us. */
    if (!auth_required(env->auth) && r->authority &&
        !host_allowed(r->authority, strlen(r->authority), env->cfg->allowed_hosts)) {
        metrics_add(&env->stats->host, 1);
        *text = "Host is not a name of this gateway (allowed-hosts)";
        return 421;
    }
    if (cors_of(r) == CORS_DENIED) {
        *text = "origin not allowed";
        return 403;
    }
    if (route->nsubjects > (size_t)env->cfg->max_subjects) {
        *text = "too many subjects for one stream (max-subjects)";
        return 400;
    }
    for (size_t i = 0; i < route->nsubjects; i++) {
        if (!subject_allowed(env->cfg->allow_subjects, route->subjects[i])) {
            metrics_add(&env->stats->reserved, 1);
            *text = "reserved NATS subject ($... or _INBOX) not allowed (allow-subjects)";
            return 403;
        }
    }
    if (!auth_required(env->auth))
        return 0; /* no grant to keep: nothing expires */
    char token[AUTH_TOKEN_MAX + 1];
    size_t len = 0;
    const char *why = "no token";
    int rc = find_token(r, env, token, sizeof(token), &len);
    if (rc == ERR_LIMIT)
        why = "token too long";
    else if (rc == ERR_INVALID)
        why = "malformed access_token";
    if (rc == 0 && auth_verify(env->auth, token, len, (int64_t)time(NULL), &r->grant, &why) == 0) {
        for (size_t i = 0; i < route->nsubjects; i++) {
            bool ok = route->kind == HTTP_PUBLISH ? auth_can_publish(r->grant, route->subjects[i])
                                                  : auth_can_subscribe(r->grant, route->subjects[i]);
            if (!ok) {
                *text = route->kind == HTTP_PUBLISH ? "token does not allow publishing there"
                                                    : "token does not allow that subject";
                return 403;
            }
        }
        /* What only admission needed goes now: a long stream should not hold it. */
        free(r->authorization);
        free(r->cookie);
        r->authorization = r->cookie = NULL;
        return 0;
    }
    auth_www_authenticate(www, wlen, why);
    *text = why;
    return 401;
}

/*
 * The process's capacity for one more SSE stream (max-streams-total,
 * stream-admission-rate). true: admitted, and r holds a slot until
 * disposed. false: refused, counted and logged (at most once a second);
 * answer 200 with refusal(*retry_ms) as the body.
 */
static bool admit_stream(struct request *r, unsigned *retry_ms)
{
    struct admission *a = r->io->env->admission;
    if (!a)
        return true;
    double now = stream_now_s();
    enum admission_verdict v = admission_take(a, now);
    if (v == ADMISSION_OK) {
        r->slot = a;
        return true;
    }
    *retry_ms = admission_retry_ms(a);
    if (admission_log_due(a, now)) {
        const struct admission_stats *st = admission_stats(a);
        log_warn("overload: refusing new streams (%s); %zu open; refused so far: %" PRIu64
                 " at max-streams-total, %" PRIu64 " at stream-admission-rate; "
                 "clients retry in %u ms (this one)",
                 v == ADMISSION_FULL ? "max-streams-total reached" : "stream-admission-rate",
                 admission_open(a), (uint64_t)atomic_load(&st->full),
                 (uint64_t)atomic_load(&st->rate), *retry_ms);
    }
    return false;
}

/*
 * The SSE body of a refused stream: `retry: retry_ms`, a comment, and
 * nothing else (no id: line, so the client keeps its Last-Event-ID).
 * malloc'ed; its length in *len.
 */
static char *refusal(unsigned retry_ms, size_t *len)
{
    char line[SSE_LINE_MAX];
    struct buf b;
    buf_init(&b);
    buf_append(&b, line, sse_format_retry(line, retry_ms));
    buf_append(&b, line, sse_format_comment(line, "over capacity, reconnect later"));
    buf_append(&b, "", 1); /* a NUL after the body; not counted in len */
    *len = b.len - 1;
    return (char *)b.data;
}

/* Counts a refusal of a connection's caps; logs the first of the connection only. */
static void refuse(struct request_quota *conn, atomic_uint_fast64_t *counter, const char *why)
{
    metrics_add(counter, 1);
    if (!conn->logged)
        log_info("conn %" PRIu64 ": %s; refusing (logged once per connection)", conn->id, why);
    conn->logged = true;
}

/*
 * Whether conn may hold the route's patterns: within
 * max-subjects-per-connection, and a subscribe-rate token for each
 * pattern the process does not hold yet (those cost a NATS SUB and a
 * PING round trip; joining one held is a table lookup). 0 or a status.
 */
static int admit_patterns(const struct request_env *env, struct request_quota *conn,
                          const struct http_route *route, const char **text)
{
    const struct config *cfg = env->cfg;
    size_t held = conn->patterns ? map_count(conn->patterns) : 0, added = 0;
    for (size_t i = 0; i < route->nsubjects; i++)
        added += holders(conn, route->subjects[i]) == 0;
    if (held + added > (size_t)cfg->max_subjects_per_connection) {
        refuse(conn, &env->stats->subjects, "max-subjects-per-connection reached");
        *text = "too many subjects open on this connection (max-subjects-per-connection)";
        return 403;
    }
    size_t fresh = 0;
    for (size_t i = 0; env->bus && i < route->nsubjects; i++)
        fresh += !bus_subscribed(env->bus, route->subjects[i]);
    if (fresh && !rate_take(&conn->subscribes, cfg->subscribe_rate, cfg->subscribe_rate,
                            stream_now_s(), (double)fresh)) {
        refuse(conn, &env->stats->subscribe_rate, "subscribe-rate reached");
        *text = "too many new subjects per second (subscribe-rate), retry later";
        return 429;
    }
    return 0;
}

static void on_stream_wake(void *ctx)
{
    struct request *r = ctx;
    r->front->wake(r);
}

/*
 * Opens r->stream for an HTTP_EVENTS or HTTP_POLL route, its subject
 * patterns counted in r's connection until r is disposed. 0, or the
 * status to answer instead with *text: 403 when the connection would hold
 * more distinct patterns than max-subjects-per-connection (more streams on
 * a pattern it holds are free: max-streams bounds those), 429 when its
 * subscribe-rate bucket lacks a token per pattern new to the process
 * (joining a pattern already subscribed is free). Each refusal is
 * counted; the first on a connection is logged. Never wakes from inside.
 */
static int open_stream(struct request *r, const char **text)
{
    const struct request_env *env = r->io->env;
    const struct config *cfg = env->cfg;
    struct request_quota *conn = r->quota;
    const struct http_route *route = r->route;
    int status = admit_patterns(env, conn, route, text);
    if (status != 0)
        return status;
    r->counted = true;
    hold_patterns(conn, route->subjects, route->nsubjects);
    struct stream_params p = {
        .env = env->streams,
        .conn_budget = &conn->budget,
        .subjects = route->subjects,
        .nsubjects = route->nsubjects,
        /* The header is what a reconnecting EventSource sends; the query is for a first connect. */
        .last_event_id = r->last_event_id ? r->last_event_id : route->last_event_id,
        .since_ns = route->since_ns,
        .retry_ms = (unsigned)cfg->retry_ms,
        .jitter_pct = (unsigned)cfg->retry_jitter_pct,
        .queue_max = cfg->stream_queue_bytes,
        .wake = on_stream_wake,
        .wake_ctx = r,
        .conn_id = r->io->conn_id,
        .stream_id = r->stream_id,
    };
    int64_t expires = r->grant ? auth_grant_expires(r->grant) : 0;
    if (expires > 0) {
        /* The token's wall-clock end, on the streams' monotonic clock. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t left_ms = expires * 1000 - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        p.expires_ms = stream_now_ms() + (left_ms > 0 ? left_ms : 0);
        p.expire_end = STREAM_END_TOKEN_EXPIRED;
    }
    if (route->kind == HTTP_POLL) {
        int64_t deadline = stream_now_ms() + route->timeout_ms;
        if (!p.expires_ms || deadline < p.expires_ms) {
            p.expires_ms = deadline;
            p.expire_end = STREAM_END_TIMEOUT;
        }
    }
    r->stream = stream_new(&p);
    return 0;
}

/* Parses r's route once. */
static void route(struct request *r)
{
    if (r->route)
        return;
    r->route = mem_alloc(sizeof(*r->route));
    http_route(r->route, r->method, strlen(r->method), r->path, strlen(r->path));
}

bool request_wants_body(struct request *r, uint64_t *max)
{
    if (!r->method || !r->path)
        return false;
    route(r);
    *max = r->route->kind == HTTP_PUBLISH ? r->io->env->cfg->max_publish_bytes : 0;
    return r->route->kind == HTTP_PUBLISH;
}

bool request_publishing(const struct request *r) { return r->publishing && r->status == 0; }

int request_body(struct request *r, const void *data, size_t len)
{
    if (!request_publishing(r))
        return 0;
    if (r->body.len + len > r->io->env->cfg->max_publish_bytes) {
        respond_text(r, 413, "body larger than max-publish-bytes", NULL);
        return ERR_LIMIT;
    }
    /* Bodies being received on many streams at once share the connection's and worker's caps. */
    if (!charge(r, len, false)) {
        respond_text(r, 503, "too many bytes buffered on this connection, retry", NULL);
        return ERR_LIMIT;
    }
    buf_append(&r->body, data, len);
    return 0;
}

int request_body_end(struct request *r)
{
    if (!request_publishing(r))
        return 0;
    const struct request_env *env = r->io->env;
    const struct http_route *rt = r->route;
    int rc = env->bus ? bus_publish(env->bus, rt->subjects[0], rt->event, r->body.data, r->body.len)
                      : ERR_NATS;
    /* The body is in cnats's buffer now; the response may wait long for the client's window. */
    buf_dispose(&r->body);
    buf_init(&r->body);
    uncharge(r, r->charged);
    r->publishing = false;
    return rc == 0 ? respond_text(r, 202, "published", NULL)
                   : respond_text(r, 503, "NATS unavailable, try again", NULL);
}

/*
 * Drains r->stream into the JSON answer {"events":[{id,event,data}…],"next":"<id>"},
 * at most max-poll-bytes and what r's connection can still be charged, and
 * charges it there. Whole events only: past the cap the answer ends with
 * the last event that fits (the first always goes) and next is its id, so
 * that polling again from next continues without loss or duplicate. 0, or
 * ERR_LIMIT (json left empty) when not even the first event fits the
 * connection's or worker's room (answer 503; counted).
 */
static int poll_answer(struct request *r, struct buf *json)
{
    const struct request_env *env = r->io->env;
    struct request_quota *conn = r->quota;
    size_t room = stream_budget_room(&conn->budget, conn->worker);
    size_t max = env->cfg->max_poll_bytes < room ? env->cfg->max_poll_bytes : room;
    bool partial = false;
    poll_drain(r->stream, max, json, &partial);
    if (partial)
        metrics_add(&env->stats->poll_bytes, 1);
    if (!charge(r, json->len, false)) {
        json->len = 0;
        return ERR_LIMIT;
    }
    return 0;
}

/* The long poll's JSON answer, from what its stream has queued. */
static int answer_poll(struct request *r)
{
    struct buf json;
    buf_init(&json);
    r->waiting = false;
    if (poll_answer(r, &json) != 0) {
        buf_dispose(&json);
        return respond_text(r, 503, "too many bytes queued on this connection, retry", NULL);
    }
    /* The buffer's bytes become the body, taken by the front end. */
    struct request_body body = {(const char *)json.data, json.len, (char *)json.data, NULL};
    return respond(r, 200, "application/json", &body, NULL);
}

bool request_waiting(const struct request *r) { return r->waiting; }

int request_resume(struct request *r)
{
    if (!r->waiting)
        return 0;
    if (r->poll)
        return poll_ready(r->stream) ? answer_poll(r) : 0;
    return stream_ready(r->stream) ? start_stream(r) : 0;
}

static int serve_events(struct request *r)
{
    unsigned retry_ms;
    if (r->route->kind == HTTP_EVENTS && !admit_stream(r, &retry_ms)) {
        /* Over capacity: 200, a long retry: and the end; any other status stops an EventSource. */
        struct request_body body = {NULL, 0, NULL, NULL};
        body.owned = refusal(retry_ms, &body.len);
        body.data = body.owned;
        charge(r, body.len + 1, true);
        return respond(r, 200, "text/event-stream", &body, NULL);
    }
    const char *text;
    int status = open_stream(r, &text);
    if (status != 0)
        return respond_text(r, status, text, NULL);
    log_debug("conn %" PRIu64 " stream %d: GET %.*s -> 200 (%zu subjects)", r->io->conn_id,
              (int)r->stream_id, (int)strcspn(r->path, "?"), r->path, r->route->nsubjects);
    /* Held until nats-server has the subscriptions: a 200 promises that nothing is missed. */
    r->waiting = true;
    r->poll = r->route->kind == HTTP_POLL;
    unroute(r);
    return request_resume(r);
}

static int serve_file(struct request *r)
{
    struct request_body body = {NULL, 0, NULL, NULL};
    int rc = static_file_open(r->io->env, r->route->file, &body.file);
    if (rc == ERR_AGAIN)
        return respond_text(r, 503, "busy, retry", NULL);
    if (rc != 0)
        return respond_text(r, 404, "not found", NULL);
    /* Sent from the worker's shared copy: nothing of it is this request's own. */
    body.data = (const char *)body.file->data;
    body.len = body.file->len;
    return respond(r, 200, http_content_type(r->route->file), &body, NULL);
}

int request_process(struct request *r)
{
    ensure_id(r);
    if (r->header_too_long) {
        metrics_add(&r->io->env->stats->header_bytes, 1);
        return respond_text(r, 431, "request header too large", NULL);
    }
    if (!r->method || !r->path)
        return r->front->reset(r, REQUEST_RESET_PROTOCOL);
    if (is_preflight(r))
        return respond_preflight(r);
    route(r);
    if (r->route->kind != HTTP_ERROR) {
        char www[256];
        const char *text;
        int status = admit(r, www, sizeof(www), &text);
        if (status != 0)
            return respond_text(r, status, text, status == 401 ? www : NULL);
    }
    switch (r->route->kind) {
    case HTTP_FILE:
        return serve_file(r);
    case HTTP_PUBLISH:
        /* Answered when the body is complete (request_body_end). */
        r->publishing = true;
        return 0;
    case HTTP_EVENTS:
    case HTTP_POLL:
        return serve_events(r);
    default:
        return respond_text(r, r->route->status, r->route->reason, NULL);
    }
}
