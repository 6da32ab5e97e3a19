/*
 * session: request state shared by the h2 and http1 front ends (see
 * session.h), so that both read the same headers, open streams the same
 * way, publish the same way and write the same access log line.
 */
#include "sluice/session.h"

#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sluice/access.h"
#include "sluice/admission.h"
#include "sluice/auth.h"
#include "sluice/bus.h"
#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/host.h"
#include "sluice/http.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/metrics.h"
#include "sluice/sse.h"
#include "sluice/subject.h"
#include "sluice/mem.h"

#define LAST_EVENT_ID_MAX 1024
#define REQUEST_ID_MAX 128

void session_req_init(struct session_req *r)
{
    memset(r, 0, sizeof(*r));
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

static void log_access(const struct session_req *r, const char *protocol, const char *peer)
{
    char *path = redact(r->path ? r->path : "");
    struct access_entry e = {
        .request_id = r->request_id ? r->request_id : "-",
        .traceparent = r->traceparent,
        .client = peer,
        .protocol = protocol,
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

void session_conn_init(struct session_conn *c, const struct session_env *env, uint64_t conn_id)
{
    memset(c, 0, sizeof(*c));
    c->id = conn_id;
    c->budget.max = env->cfg->conn_queue_bytes;
    c->worker = &env->streams->budget;
    c->stats = env->stats;
    rate_init(&c->subscribes, env->cfg->subscribe_rate, stream_now_s());
}

static void refuse(struct session_conn *conn, atomic_uint_fast64_t *counter, const char *why);

bool session_charge(struct session_req *r, struct session_conn *conn, size_t n, bool force)
{
    if (!stream_budget_take(&conn->budget, conn->worker, n, force)) {
        refuse(conn, &conn->stats->queue_bytes, "conn-queue-bytes or process-queue-bytes full");
        return false;
    }
    r->conn = conn;
    r->charged += n;
    return true;
}

void session_conn_dispose(struct session_conn *c)
{
    map_free(c->patterns);
    c->patterns = NULL;
}

/* Streams on pattern held by c. */
static uintptr_t holders(const struct session_conn *c, const char *pattern)
{
    return c->patterns ? (uintptr_t)map_get(c->patterns, pattern, strlen(pattern)) : 0;
}

/* Counts s's subjects in c (values are counts stored as pointers). */
static void hold_patterns(struct session_conn *c, char *const *subjects, size_t n)
{
    if (!c->patterns)
        c->patterns = map_new();
    for (size_t i = 0; i < n; i++) {
        uintptr_t k = holders(c, subjects[i]);
        map_put(c->patterns, subjects[i], strlen(subjects[i]), (void *)(k + 1));
    }
}

static void forget_patterns(struct session_conn *c, const struct stream *s)
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
static void uncharge(struct session_req *r, size_t n)
{
    if (n)
        stream_budget_give(&r->conn->budget, r->conn->worker, n);
    r->charged -= n;
}

void session_req_dispose(struct session_req *r, const char *protocol, const char *peer)
{
    if (r->method)
        log_access(r, protocol, peer);
    if (r->conn) {
        if (r->counted)
            forget_patterns(r->conn, r->stream);
        uncharge(r, r->charged);
    }
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
    if (r->publish) {
        http_route_dispose(r->publish);
        free(r->publish);
    }
    buf_dispose(&r->body);
    memset(r, 0, sizeof(*r));
}

static bool is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && memcmp(name, want, nlen) == 0;
}

static void keep(struct session_req *r, char **slot, const char *value, size_t len, size_t max)
{
    if (len > max) {
        r->header_too_long = true;
        return;
    }
    free(*slot);
    *slot = mem_strndup(value, len);
}

void session_req_header(struct session_req *r, const struct session_env *env, const char *name,
                        size_t nlen, const char *value, size_t vlen)
{
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

void session_req_ensure_id(struct session_req *r)
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
static bool same_origin(const struct session_req *r, bool secure)
{
    if (!r->origin || !r->authority)
        return false;
    const char *scheme = secure ? "https://" : "http://";
    size_t sl = strlen(scheme);
    return strncmp(r->origin, scheme, sl) == 0 && strcmp(r->origin + sl, r->authority) == 0;
}

static enum cors_result cors_of(const struct session_req *r, const struct session_env *env,
                                bool secure)
{
    if (!r->origin || same_origin(r, secure))
        return r->origins > 1 ? CORS_DENIED : CORS_NO_ORIGIN;
    if (r->origins > 1)
        return CORS_DENIED;
    return cors_check(env->cors, r->origin, strlen(r->origin));
}

bool session_preflight(const struct session_req *r, const struct session_env *env, bool secure,
                       int *status)
{
    if (!r->method || strcmp(r->method, "OPTIONS") != 0 || !r->origin || !r->preflight_method)
        return false;
    *status = cors_of(r, env, secure) == CORS_DENIED ? 403 : 204;
    return true;
}

size_t session_cors(const struct session_req *r, const struct session_env *env, bool secure,
                    enum cors_kind kind, struct cors_header out[CORS_HEADERS_MAX])
{
    if (!r->origin || same_origin(r, secure) || r->origins > 1)
        return 0;
    return cors_headers(env->cors, kind, r->origin, strlen(r->origin), out);
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
static int find_token(const struct session_req *r, const struct session_env *env, char *out,
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

int session_admit(struct session_req *r, const struct session_env *env,
                  const struct http_route *route, bool secure, char *www, size_t wlen,
                  const char **text)
{
    /* Without a token, a rebound DNS name is the only thing between a web page and us. */
    if (!auth_required(env->auth) && r->authority &&
        !host_allowed(r->authority, strlen(r->authority), env->cfg->allowed_hosts)) {
        metrics_add(&env->stats->host, 1);
        *text = "Host is not a name of this gateway (allowed-hosts)";
        return 421;
    }
    if (cors_of(r, env, secure) == CORS_DENIED) {
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

bool session_admit_stream(struct session_req *r, const struct session_env *env, unsigned *retry_ms)
{
    struct admission *a = env->admission;
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

char *session_refusal(unsigned retry_ms, size_t *len)
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
static void refuse(struct session_conn *conn, atomic_uint_fast64_t *counter, const char *why)
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
static int admit_patterns(const struct session_env *env, struct session_conn *conn,
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

int session_open_stream(struct session_req *r, const struct session_env *env,
                        struct session_conn *conn, const struct http_route *route,
                        stream_wake_fn *wake, void *wake_ctx, uint64_t conn_id,
                        int32_t stream_id, const char **text)
{
    const struct config *cfg = env->cfg;
    int status = admit_patterns(env, conn, route, text);
    if (status != 0)
        return status;
    r->conn = conn;
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
        .wake = wake,
        .wake_ctx = wake_ctx,
        .conn_id = conn_id,
        .stream_id = stream_id,
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

int session_publish(struct session_req *r, const struct session_env *env, const char **text)
{
    const struct http_route *route = r->publish;
    int rc = env->bus ? bus_publish(env->bus, route->subjects[0], route->event, r->body.data,
                                    r->body.len)
                      : ERR_NATS;
    *text = rc == 0 ? "published" : "NATS unavailable, try again";
    /* The body is in cnats's buffer now; the response may wait long for the client's window. */
    buf_dispose(&r->body);
    buf_init(&r->body);
    if (r->conn)
        uncharge(r, r->charged);
    return rc == 0 ? 202 : 503;
}

bool session_poll_ready(const struct session_req *r)
{
    return stream_ready(r->stream) &&
           (stream_dispatchable(r->stream) > 0 || stream_ended(r->stream) != STREAM_END_NONE);
}

/* What closes the JSON after an event of id length n: `],"next":"<id>"}` and a newline. */
#define POLL_TAIL(n) (6 * (n) + 16)

struct poll_json {
    struct buf *out;
    size_t n;      /* events included */
    size_t max;    /* json bytes */
    bool cut;      /* an event did not fit: the rest are left out */
    char *last_id; /* of the last event included */
};

static void on_poll_event(void *ctx, const struct sse_parsed *ev)
{
    struct poll_json *pj = ctx;
    if (pj->cut)
        return;
    size_t mark = pj->out->len;
    if (pj->n)
        buf_append(pj->out, ",", 1);
    buf_append(pj->out, "{\"id\":", 6);
    json_string(pj->out, ev->id, ev->id_len);
    buf_append(pj->out, ",\"event\":", 9);
    json_string(pj->out, ev->event_len ? ev->event : "message", ev->event_len ? ev->event_len : 7);
    buf_append(pj->out, ",\"data\":", 8);
    json_string(pj->out, ev->data, ev->data_len);
    buf_append(pj->out, "}", 1);
    /* Whole events only, and never none: one event larger than the cap goes alone. */
    if (pj->n && pj->out->len + POLL_TAIL(ev->id_len) > pj->max) {
        pj->out->len = mark;
        pj->cut = true;
        return;
    }
    pj->n++;
    free(pj->last_id);
    pj->last_id = mem_strndup(ev->id, ev->id_len);
}

size_t session_poll_json(const char *sse, size_t len, bool whole, size_t max, struct buf *json,
                         bool *cut)
{
    size_t start = json->len;
    struct poll_json pj = {json, 0, start + max, false, NULL};
    char *next = NULL;
    buf_append(json, "{\"events\":[", 11);
    sse_parse(sse, len, on_poll_event, &pj, &next);
    /*
     * Cut, or from a partial copy of the queue, the position is the last
     * event included: an id line of an event left out (or not complete)
     * must not move it past that event.
     */
    const char *pos = (pj.cut || !whole) && pj.last_id ? pj.last_id : next;
    buf_append(json, "],\"next\":", 9);
    json_string(json, pos, strlen(pos));
    buf_append(json, "}\n", 2);
    free(next);
    free(pj.last_id);
    *cut = pj.cut;
    return pj.n;
}

static void on_count(void *ctx, const struct sse_parsed *ev)
{
    (void)ev;
    ++*(size_t *)ctx;
}

/* Whether sse holds one whole event (retry and comment blocks are not events). */
static bool has_event(const char *sse, size_t len)
{
    size_t n = 0;
    sse_parse(sse, len, on_count, &n, NULL);
    return n > 0;
}

int session_poll_answer(struct session_req *r, const struct session_env *env, struct buf *json)
{
    struct session_conn *conn = r->conn;
    size_t room = stream_budget_room(&conn->budget, conn->worker);
    size_t max = env->cfg->max_poll_bytes < room ? env->cfg->max_poll_bytes : room;
    /*
     * The queue is this stream's SSE text; parsing it back keeps one
     * encoder for both. Only about as much as the answer can hold is
     * copied out (more while not one event is whole): the rest is left
     * for the next poll, and dropped with the stream.
     */
    struct buf sse;
    buf_init(&sse);
    size_t want = max > 4096 ? max : 4096;
    bool eof = false, whole = false;
    for (;;) {
        size_t n = stream_pending(r->stream, want - sse.len, &eof);
        stream_copy(r->stream, buf_reserve(&sse, n), n);
        sse.len += n;
        whole = eof || stream_pending(r->stream, 1, &eof) == 0;
        if (whole || has_event((const char *)sse.data, sse.len))
            break;
        want *= 2;
    }
    bool cut = false;
    session_poll_json((const char *)sse.data, sse.len, whole, max, json, &cut);
    buf_dispose(&sse);
    if (cut || !whole)
        metrics_add(&env->stats->poll_bytes, 1);
    if (!session_charge(r, conn, json->len, false)) {
        json->len = 0;
        return ERR_LIMIT;
    }
    return 0;
}

#define FILE_MAX (4 * 1024 * 1024)

int session_file(const struct session_env *env, const char *file, struct filecache_entry **out)
{
    char root[PATH_MAX], path[PATH_MAX], real[PATH_MAX];
    if (!realpath(env->cfg->www, root))
        return ERR_NOTFOUND;
    int n = snprintf(path, sizeof(path), "%s/%s", root, file);
    if (n < 0 || (size_t)n >= sizeof(path))
        return ERR_NOTFOUND;
    size_t rl = strlen(root);
    /* Resolved, the file must still be inside the directory. */
    if (!realpath(path, real) || strncmp(real, root, rl) != 0 || real[rl] != '/')
        return ERR_NOTFOUND;
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ERR_NOTFOUND;
    struct stat st;
    int rc = ERR_NOTFOUND;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= FILE_MAX) {
        rc = filecache_get(env->files, real, fd, &st, out);
        if (rc == ERR_LIMIT) {
            static _Thread_local int64_t logged_ms; /* one line a second per worker */
            metrics_add(&env->stats->file_cache, 1);
            if (stream_now_ms() - logged_ms >= 1000) {
                logged_ms = stream_now_ms();
                log_warn("static file %s: file-cache-bytes full of files being sent; 503", file);
            }
            rc = ERR_AGAIN;
        } else if (rc != 0) {
            rc = ERR_NOTFOUND;
        }
    }
    close(fd);
    return rc;
}
