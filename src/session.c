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
#include "sluice/http.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/sse.h"
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

void session_req_dispose(struct session_req *r, const char *protocol, const char *peer)
{
    if (r->method)
        log_access(r, protocol, peer);
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
    if (cors_of(r, env, secure) == CORS_DENIED) {
        *text = "origin not allowed";
        return 403;
    }
    if (route->nsubjects > (size_t)env->cfg->max_subjects) {
        *text = "too many subjects for one stream (max-subjects)";
        return 400;
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

void session_open_stream(struct session_req *r, const struct session_env *env,
                         struct stream_budget *budget, const struct http_route *route,
                         stream_wake_fn *wake, void *wake_ctx, uint64_t conn_id,
                         int32_t stream_id)
{
    const struct config *cfg = env->cfg;
    struct stream_params p = {
        .env = env->streams,
        .conn_budget = budget,
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
}

int session_publish(struct session_req *r, const struct session_env *env, const char **text)
{
    const struct http_route *route = r->publish;
    int rc = env->bus ? bus_publish(env->bus, route->subjects[0], route->event, r->body.data,
                                    r->body.len)
                      : ERR_NATS;
    *text = rc == 0 ? "published" : "NATS unavailable, try again";
    return rc == 0 ? 202 : 503;
}

bool session_poll_ready(const struct session_req *r)
{
    return stream_ready(r->stream) &&
           (stream_dispatchable(r->stream) > 0 || stream_ended(r->stream) != STREAM_END_NONE);
}

struct poll_json {
    struct buf *out;
    size_t n;
};

static void on_poll_event(void *ctx, const struct sse_parsed *ev)
{
    struct poll_json *pj = ctx;
    if (pj->n++)
        buf_append(pj->out, ",", 1);
    buf_append(pj->out, "{\"id\":", 6);
    json_string(pj->out, ev->id, ev->id_len);
    buf_append(pj->out, ",\"event\":", 9);
    json_string(pj->out, ev->event_len ? ev->event : "message", ev->event_len ? ev->event_len : 7);
    buf_append(pj->out, ",\"data\":", 8);
    json_string(pj->out, ev->data, ev->data_len);
    buf_append(pj->out, "}", 1);
}

void session_poll_answer(struct session_req *r, struct buf *json)
{
    /* The queue is this stream's SSE text; parsing it back keeps one encoder for both. */
    struct buf sse;
    buf_init(&sse);
    bool eof;
    size_t n = stream_pending(r->stream, SIZE_MAX, &eof);
    stream_copy(r->stream, buf_reserve(&sse, n), n);
    sse.len = n;
    struct poll_json pj = {json, 0};
    char *next = NULL;
    buf_append(json, "{\"events\":[", 11);
    sse_parse((const char *)sse.data, sse.len, on_poll_event, &pj, &next);
    buf_append(json, "],\"next\":", 9);
    json_string(json, next, strlen(next));
    buf_append(json, "}\n", 2);
    free(next);
    buf_dispose(&sse);
}

#define FILE_MAX (4 * 1024 * 1024)

int session_file(const struct session_env *env, const char *file, char **body, size_t *len)
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
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        rc = ERR_LIMIT;
        if (st.st_size <= FILE_MAX) {
            *body = mem_alloc((size_t)st.st_size + 1);
            ssize_t got = read(fd, *body, (size_t)st.st_size);
            rc = got == st.st_size ? 0 : ERR_NOTFOUND;
            *len = got > 0 ? (size_t)got : 0;
            if (rc != 0) {
                free(*body);
                *body = NULL;
            }
        }
    }
    close(fd);
    return rc;
}
