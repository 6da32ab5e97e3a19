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
 * bus_send), an SSE stream or a long poll (the stream is opened with
 * the process's and the connection's admission; its 200 or its answer
 * waits until NATS has the subscription; poll.c turns a poll's queue into
 * its JSON, charged here to the connection), or a request stream (a POST
 * whose body goes to a NATS service once the stream on its fresh reply
 * subject is subscribed; its 200 waits for the first reply: see "Request
 * streams" below, names in reply.c). Every answer leaves through the
 * front end's table (struct request_front) as a head of fields and a
 * body; nothing here knows how those become bytes.
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
#include "sluice/callout.h"
#include "sluice/config.h"
#include "sluice/ds_route.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/forwarded.h"
#include "sluice/guard.h"
#include "sluice/host.h"
#include "sluice/route.h"
#include "sluice/json.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/metrics.h"
#include "sluice/poll.h"
#include "sluice/principal.h"
#include "sluice/sse.h"
#include "sluice/static_file.h"
#include "sluice/subject.h"
#include "sluice/mem.h"
#include "sluice/reply.h"

#define LAST_EVENT_ID_MAX 1024
#define REPLY_URL "/streams/r/" /* + "<tag>.<id>": a request stream's URL */
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
    snprintf(r->client, sizeof(r->client), "%s", io->address ? io->address : "");
    buf_init(&r->body);
}

const char *request_client_address(const struct request *r) { return r->client; }

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
        .client = r->forwarded_client ? r->client : r->io->peer,
        .via = r->forwarded_client ? r->io->peer : r->io->via,
        .protocol = r->front->protocol,
        .method = r->method,
        .path = path,
        .status = r->status,
        .duration_s = stream_now_s() - r->started,
        .bytes = r->body_bytes,
        .reason = "complete",
        .stream = r->token ? r->token + sizeof(REPLY_URL) - 1 : NULL,
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

/*
 * The methods sluice serves, shared rather than copied: an open SSE stream
 * keeps its method for the access log, and a 4-byte copy is a 32-byte
 * block in each of a million streams. Never written through.
 */
static char method_get[] = "GET", method_head[] = "HEAD", method_post[] = "POST",
            method_put[] = "PUT", method_delete[] = "DELETE", method_options[] = "OPTIONS";
static char *const methods[] = {method_get,    method_head,   method_post,
                                method_put,    method_delete, method_options};

static bool method_shared(const char *m)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (m == methods[i])
            return true;
    return false;
}

static void free_method(char *m)
{
    if (!method_shared(m))
        free(m);
}

void request_dispose(struct request *r)
{
    if (r->method)
        log_access(r);
    if (r->token && r->stream && r->status == 200 &&
        stream_ended(r->stream) == STREAM_END_FINISHED)
        metrics_add(&r->io->env->stats->req_finished, 1);
    if (r->counted)
        forget_patterns(r->quota, r->stream);
    uncharge(r, r->charged);
    stream_free(r->stream);
    if (r->slot)
        admission_put(r->slot);
    if (r->address_held)
        guard_drop(r->io->env->guard, r->client);
    if (r->principal)
        principal_put(r->io->env->principals, r->principal, stream_now_s());
    free(r->principal);
    free(r->forwarded);
    free(r->xff);
    free_method(r->method);
    free(r->path);
    free(r->last_event_id);
    free(r->request_id);
    free(r->traceparent);
    free(r->tracestate);
    for (size_t i = 0; i < r->nfwd; i++)
        free(r->fwd[i]);
    free(r->fwd);
    free(r->service);
    free(r->token);
    free(r->authority);
    free(r->origin);
    free(r->authorization);
    free(r->cookie);
    /* A question still in flight forgets r: its answer will only fill the cache. */
    callout_cancel(r->callout_wait);
    auth_grant_free(r->answer.grant);
    for (size_t i = 0; i < r->ncallout_fields; i++)
        free(r->callout_fields[i]);
    free(r->callout_fields);
    auth_grant_free(r->grant);
    ds_request_dispose(r);
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

static void keep_method(struct request *r, const char *value, size_t len)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (is(value, len, methods[i])) {
            free_method(r->method);
            r->method = methods[i];
            return;
        }
    if (len > 16) {
        r->header_too_long = true;
        return;
    }
    free_method(r->method);
    r->method = mem_strndup(value, len);
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

/*
 * Appends one field of a list header to *slot, joined with ", " as RFC 9110
 * 5.3 combines repeated fields. Past FORWARDED_HEADER_MAX the header is
 * dropped and not believed (fwd_too_long): a cut list would name the
 * wrong hop.
 */
static void join_field(struct request *r, char **slot, const char *value, size_t vlen)
{
    size_t have = *slot ? strlen(*slot) : 0;
    if (r->fwd_too_long || have + vlen + 2 > FORWARDED_HEADER_MAX || memchr(value, '\0', vlen)) {
        r->fwd_too_long = true;
        return;
    }
    *slot = mem_realloc(*slot, have + vlen + 3);
    if (have) {
        memcpy(*slot + have, ", ", 2);
        have += 2;
    }
    memcpy(*slot + have, value, vlen);
    (*slot)[have + vlen] = '\0';
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
    if (is(name, nlen, "forwarded"))
        join_field(r, &r->forwarded, value, vlen);
    else if (is(name, nlen, "x-forwarded-for"))
        join_field(r, &r->xff, value, vlen);
    if (is(name, nlen, ":method"))
        keep_method(r, value, vlen);
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
    else if (is(name, nlen, "tracestate") && vlen <= 512)
        keep(r, &r->tracestate, value, vlen, 512);
    else if (env->callout && r->ncallout_fields < 2 * CALLOUT_HEADERS_MAX &&
             reply_header_listed(env->cfg->auth_callout_headers, name, nlen)) {
        /* Bounded by max-header-bytes like every field; checked before it is passed on. */
        if (!r->callout_fields)
            r->callout_fields = mem_alloc(2 * CALLOUT_HEADERS_MAX * sizeof(*r->callout_fields));
        r->callout_fields[r->ncallout_fields++] = mem_strndup(name, nlen);
        r->callout_fields[r->ncallout_fields++] = mem_strndup(value, vlen);
        r->callout_bad |= !reply_header_value_ok(value, vlen);
    } else if (r->nfwd < 2 * REQUEST_FORWARD_MAX &&
               reply_header_listed(env->cfg->request_forward_headers, name, nlen)) {
        /* Bounded by max-header-bytes like every field; checked before it is forwarded. */
        if (!r->fwd)
            r->fwd = mem_alloc(2 * REQUEST_FORWARD_MAX * sizeof(*r->fwd));
        r->fwd[r->nfwd++] = mem_strndup(name, nlen);
        r->fwd[r->nfwd++] = mem_strndup(value, vlen);
        r->fwd_bad |= !reply_header_value_ok(value, vlen);
    } else if (is(name, nlen, "content-length")) {
        r->no_body = vlen == 1 && value[0] == '0';
    } else if (r->path && ds_route_match(env->cfg, r->path)) {
        /* Pseudo-headers (h2) and the request line (HTTP/1.1) come first: the path is known. */
        ds_request_header(r, name, nlen, value, vlen);
    }
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

static int respond_error(struct request *r, int status, const char *type, const char *message);

int request_fail(struct request *r, int status, const char *text)
{
    /* A request stream's client reads JSON errors (the OpenAI shape), whoever refuses. */
    if (r->route && r->route->kind == HTTP_REQUEST)
        return respond_error(r, status, status == 413 ? "request_too_large" : "invalid_request",
                             text);
    return respond_text(r, status, text, NULL);
}

/* The answer to a CORS preflight: 204 with the preflight headers only, or 403. */
static int respond_preflight(struct request *r)
{
    if (cors_of(r) == CORS_DENIED)
        return respond_text(r, 403, "origin not allowed", NULL);
    struct request_head h = {.status = 204};
    add(&h, "x-request-id", r->request_id);
    bool ds = ds_route_match(r->io->env->cfg, r->path);
    add_cors(r, &h, ds ? CORS_DS_PREFLIGHT : CORS_PREFLIGHT);
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
    /* Where a client that lost the connection resumes, from any gateway. */
    if (r->token)
        add(&h, "content-location", r->token);
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
 * Whether a client's subject (pattern) reaches the reply or cancel
 * subjects of request streams. Those are read only through /streams/r/,
 * by their owner. With a reserved prefix (the default, "$SLUICE…") a
 * client's wildcard never sees them (the bus drops reserved subjects from
 * patterns that do not name them), so only a pattern inside the prefix
 * is refused; with a plain prefix, any pattern that could match one is.
 */
static bool in_reply_space(const struct config *cfg, const char *subject)
{
    const char *prefixes[2] = {cfg->request_reply_prefix, cfg->request_cancel_prefix};
    for (size_t i = 0; i < 2; i++) {
        char space[REPLY_PREFIX_MAX + 3];
        snprintf(space, sizeof(space), "%s.>", prefixes[i]);
        if (subject_overlaps(subject, space) &&
            (subject_reserved(subject) || !subject_reserved(prefixes[i])))
            return true;
    }
    return false;
}

/* max-subjects, reserved subjects and the request streams' space for r's subjects: 0 or 400/403. */
static int check_subjects(struct request *r, const char **text)
{
    const struct request_env *env = r->io->env;
    const struct http_route *route = r->route;
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
        if (in_reply_space(env->cfg, route->subjects[i])) {
            metrics_add(&env->stats->reserved, 1);
            *text = "request stream subjects are read only through /streams/r/";
            return 403;
        }
    }
    return 0;
}

/* r writes (needs publish permission): a publish, a request stream, a Durable Streams write. */
static bool publishes(const struct request *r)
{
    const struct http_route *route = r->route;
    return route->kind == HTTP_PUBLISH || route->kind == HTTP_REQUEST ||
           (route->kind == HTTP_DS && strcmp(r->method, "GET") != 0 &&
            strcmp(r->method, "HEAD") != 0);
}

/* r is answered once its whole body is here (body_complete()). */
static bool takes_body(const struct request *r)
{
    const struct http_route *route = r->route;
    return route->kind == HTTP_PUBLISH || route->kind == HTTP_REQUEST ||
           (route->kind == HTTP_DS &&
            (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0));
}

/*
 * What r's grant allows: `GET /events` with no subject takes the grant's
 * default subjects (server-chosen: the client cannot name more), then
 * every subject must be covered. 0, or 400/403 with *text.
 */
static int check_grant(struct request *r, const char **text)
{
    struct http_route *route = r->route;
    if (route->kind == HTTP_EVENTS && route->nsubjects == 0) {
        const char *const *defaults;
        size_t n = auth_grant_defaults(r->grant, &defaults);
        if (n == 0) {
            *text = "no subject: use /events/<subject> or /events?subject=<subject> "
                    "(no default subjects granted)";
            return 400;
        }
        for (size_t i = 0; i < n && i < HTTP_MAX_SUBJECTS; i++)
            route->subjects[route->nsubjects++] = mem_strdup(defaults[i]);
        int status = check_subjects(r, text);
        if (status != 0)
            return status;
    }
    for (size_t i = 0; i < route->nsubjects; i++) {
        bool pub = publishes(r);
        bool ok = pub ? auth_can_publish(r->grant, route->subjects[i])
                      : auth_can_subscribe(r->grant, route->subjects[i]);
        if (!ok) {
            *text = pub ? "token does not allow publishing there"
                        : "token does not allow that subject";
            return 403;
        }
    }
    return 0;
}

#define ADMIT_CALLOUT (-1) /* admit(): ask the callout, then go on (ask_callout) */

/*
 * Host (with auth none), CORS, max-subjects, reserved subjects and
 * authorization for a routed request. 0 to serve it; ADMIT_CALLOUT to
 * ask the auth service first; otherwise the status to answer (400, 401,
 * 403, 421) with *text, and for a 401 the www-authenticate value in www.
 * Keeps the grant in r for its expiry.
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
    int status = check_subjects(r, text);
    if (status != 0)
        return status;
    if (!auth_required(env->auth)) {
        if (route->kind == HTTP_EVENTS && route->nsubjects == 0)
            return check_grant(r, text); /* no grant, no defaults: 400 */
        return 0; /* no grant to keep: nothing expires */
    }
    if (env->callout) {
        if (r->callout_bad) {
            *text = "a header passed to the auth service holds CR, LF or NUL";
            return 400;
        }
        return ADMIT_CALLOUT;
    }
    char token[AUTH_TOKEN_MAX + 1];
    size_t len = 0;
    const char *why = "no token";
    int rc = find_token(r, env, token, sizeof(token), &len);
    if (rc == ERR_LIMIT)
        why = "token too long";
    else if (rc == ERR_INVALID)
        why = "malformed access_token";
    if (rc == 0 && auth_verify(env->auth, token, len, (int64_t)time(NULL), &r->grant, &why) == 0) {
        status = check_grant(r, text);
        if (status != 0)
            return status;
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
 * A refusal's retry: for the client's own limits, drawn like the
 * process's capacity refusal (overload-retry-min-ms to -max-ms).
 */
static unsigned refusal_retry_ms(const struct request *r)
{
    const struct request_env *env = r->io->env;
    return env->admission ? admission_retry_ms(env->admission)
                          : (unsigned)env->cfg->overload_retry_min_ms;
}

/*
 * The client's own shares of one more stream or poll, before the
 * process's: through a trusted proxy (whose connections are not charged
 * per address at accept, since one carries many clients), one unit of
 * max-connections-per-address for the forwarded client, held while r
 * lives; with principal_limits, max-streams-per-principal and
 * principal-stream-rate for the grant's principal. NULL when admitted
 * (what was taken is given back when r is disposed); else the refusal's
 * reason, counted and logged at most once a second.
 */
static const char *admit_client(struct request *r, bool principal_limits)
{
    const struct request_env *env = r->io->env;
    double now = stream_now_s();
    if (r->io->trusted && env->guard) {
        if (!guard_hold(env->guard, r->client)) {
            metrics_add(&env->stats->per_address, 1);
            static _Thread_local double last_log = -1e9;
            if (now - last_log >= 1.0) {
                last_log = now;
                log_info("conn %" PRIu64 " %s: client %s: stream refused: "
                         "max-connections-per-address reached (at most one line a second)",
                         r->io->conn_id, r->io->peer, r->client);
            }
            return "too many streams from this address, reconnect later";
        }
        r->address_held = true;
    }
    const char *principal = r->grant ? auth_grant_subject(r->grant) : NULL;
    if (!principal_limits || !principal || !*principal || !principal_enabled(env->principals))
        return NULL;
    enum principal_verdict v = principal_take(env->principals, principal, now);
    if (v == PRINCIPAL_OK) {
        r->principal = mem_strdup(principal);
        return NULL;
    }
    if (principal_log_due(env->principals, now)) {
        const struct principal_stats *st = principal_stats(env->principals);
        log_info("principal %s: stream refused: %s; refused so far: %" PRIu64
                 " at max-streams-per-principal, %" PRIu64 " at principal-stream-rate "
                 "(at most one line a second)",
                 principal,
                 v == PRINCIPAL_FULL ? "max-streams-per-principal reached" : "principal-stream-rate",
                 (uint64_t)atomic_load(&st->full), (uint64_t)atomic_load(&st->rate));
    }
    return v == PRINCIPAL_FULL ? "too many streams for this principal, reconnect later"
                               : "too many new streams for this principal, reconnect later";
}

/*
 * The SSE body of a refused stream: `retry: retry_ms`, the comment why, and
 * nothing else (no id: line, so the client keeps its Last-Event-ID).
 * malloc'ed; its length in *len.
 */
static char *refusal(unsigned retry_ms, const char *why, size_t *len)
{
    char line[SSE_LINE_MAX];
    struct buf b;
    buf_init(&b);
    buf_append(&b, line, sse_format_retry(line, retry_ms));
    buf_append(&b, line, sse_format_comment(line, why));
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

static void on_stream_renew(void *ctx);

static void on_stream_wake(void *ctx)
{
    struct request *r = ctx;
    if (r->ds)
        ds_wake(r);
    r->front->wake(r);
}

/* When r's token expires, on the streams' monotonic clock; 0: never. */
static int64_t token_end_ms(const struct request *r)
{
    int64_t expires = r->grant ? auth_grant_expires(r->grant) : 0;
    if (expires <= 0)
        return 0;
    /* The token's wall-clock end, on the streams' monotonic clock. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t left_ms = expires * 1000 - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    return stream_now_ms() + (left_ms > 0 ? left_ms : 0);
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
static int open_stream_as(struct request *r, const char **text, const struct request_wait *w)
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
        .queue_max = w && w->queue_max ? w->queue_max : cfg->stream_queue_bytes,
        .wake = on_stream_wake,
        .wake_ctx = r,
        .conn_id = r->io->conn_id,
        .stream_id = r->stream_id,
    };
    p.expires_ms = token_end_ms(r);
    p.expire_end = STREAM_END_TOKEN_EXPIRED;
    p.principal = r->grant ? auth_grant_subject(r->grant) : NULL;
    int wait_ms = w ? w->timeout_ms : 0;
    if (w) {
        p.notify = w->notify;
        p.last_event_id = w->last_event_id;
        p.trailer = w->trailer;
        p.trailer_ctx = w->trailer_ctx;
        p.prologue = w->prologue;
        p.prologue_len = w->prologue_len;
    }
    if (route->kind == HTTP_POLL)
        wait_ms = route->timeout_ms;
    /* A callout's grant is asked for again at its expiry; a poll or a wait simply ends (and is asked anew). */
    if (auth_grant_renewable(r->grant) && wait_ms == 0)
        p.renew = on_stream_renew;
    if (wait_ms > 0) {
        int64_t deadline = stream_now_ms() + wait_ms;
        if (!p.expires_ms || deadline < p.expires_ms) {
            p.expires_ms = deadline;
            p.expire_end = STREAM_END_TIMEOUT;
        }
    }
    r->stream = stream_new(&p);
    return 0;
}

static int open_stream(struct request *r, const char **text)
{
    return open_stream_as(r, text, NULL);
}

/* Parses r's route once. */
static void route(struct request *r)
{
    if (r->route)
        return;
    r->route = mem_alloc(sizeof(*r->route));
    const struct config *cfg = r->io->env->cfg;
    if (ds_route_match(cfg, r->path)) {
        ds_route(cfg, r->route, r->path);
        r->route_index = REQUEST_ROUTES_MAX;
        return;
    }
    http_route(r->route, r->method, strlen(r->method), r->path, strlen(r->path));
    r->route_index = REQUEST_ROUTES_MAX; /* the generic POST /streams/<subject> */
    const char *routes = r->io->env->cfg->request_routes;
    char service[256];
    int i;
    if (*routes && strcmp(r->method, "POST") == 0 &&
        (i = reply_route_find(routes, r->path, strcspn(r->path, "?"), service,
                              sizeof(service))) >= 0) {
        http_route_request(r->route, service);
        r->route_index = i < REQUEST_ROUTES_MAX ? i : REQUEST_ROUTES_MAX;
    }
}

/*
 * Request streams: POST to a request route -> serve_request() once the
 * body is complete: a fresh id, the reply subject joined (subscribed
 * first), then, once nats-server has the subscription, the body
 * published to the service with the reply subject and the Sse-* headers
 * (resume_request()). The 200 waits for the first reply: a "no
 * responders" before it is a 503, no reply within request-first-event-ms
 * a 504, both as JSON before any stream byte. GET /streams/r/<token>
 * reads the same subject (resumable), DELETE sends a cancel notice; both
 * only for the owner (reply.h).
 */

static int serve_events(struct request *r);

/* A JSON error in the OpenAI shape, which the openai client and others show as it is. */
static int respond_error(struct request *r, int status, const char *type, const char *message)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "{\"error\":{\"message\":", 20);
    json_put_string(&b, message, strlen(message));
    buf_append(&b, ",\"type\":", 8);
    json_put_string(&b, type, strlen(type));
    buf_append(&b, ",\"code\":", 8);
    json_put_string(&b, type, strlen(type));
    buf_append(&b, "}}\n", 3);
    charge(r, b.len, true);
    r->waiting = false;
    struct request_body body = {(const char *)b.data, b.len, (char *)b.data, NULL};
    return respond(r, status, "application/json", &body, NULL);
}

/* The authenticated principal (the token's sub), or "" without auth. */
static const char *principal_of(const struct request *r)
{
    const char *p = r->grant ? auth_grant_subject(r->grant) : NULL;
    return p ? p : "";
}

/* "<prefix>.<tag>.<id>" for r's token ("/streams/r/<tag>.<id>"), malloc'ed. */
static char *subject_of(const char *prefix, const char *token)
{
    const char *name = token + sizeof(REPLY_URL) - 1;
    size_t n = strlen(prefix) + 1 + strlen(name) + 1;
    char *out = mem_alloc(n);
    snprintf(out, n, "%s.%s", prefix, name);
    return out;
}

/* r's route now reads the request stream's reply subject. */
static void read_reply(struct request *r)
{
    struct http_route *rt = r->route;
    for (size_t i = 0; i < rt->nsubjects; i++)
        free(rt->subjects[i]);
    rt->subjects[0] = subject_of(r->io->env->cfg->request_reply_prefix, r->token);
    rt->nsubjects = 1;
}

static int serve_request(struct request *r)
{
    const struct request_env *env = r->io->env;
    const char *principal = principal_of(r);
    r->publishing = false;
    if (!env->bus)
        return respond_error(r, 503, "unavailable", "NATS unavailable, try again");
    if (auth_required(env->auth) && !*principal)
        return respond_error(r, 403, "forbidden", "request streams need a token with a sub claim");
    if (r->fwd_bad || (r->traceparent && !reply_header_value_ok(r->traceparent,
                                                                 strlen(r->traceparent))) ||
        (r->tracestate && !reply_header_value_ok(r->tracestate, strlen(r->tracestate))))
        return respond_error(r, 400, "invalid_request", "a forwarded header holds CR, LF or NUL");
    char id[REPLY_ID_LEN + 1], tag[REPLY_TAG_LEN + 1];
    if (reply_new_id(id) != 0)
        return respond_error(r, 503, "unavailable", "no randomness for a stream id, retry");
    reply_owner_tag(principal, tag);
    size_t n = sizeof(REPLY_URL) + REPLY_TAG_LEN + 1 + REPLY_ID_LEN;
    r->token = mem_alloc(n);
    snprintf(r->token, n, "%s%s.%s", REPLY_URL, tag, id);
    r->service = r->route->subjects[0];
    r->route->subjects[0] = NULL;
    read_reply(r);
    const char *why = admit_client(r, true);
    if (why)
        return respond_error(r, 429, "limit", why);
    unsigned retry_ms;
    if (!admit_stream(r, &retry_ms))
        return respond_error(r, 503, "overloaded", "over capacity, retry later");
    const char *text;
    int status = open_stream(r, &text);
    if (status != 0)
        return respond_error(r, status, "limit", text);
    stream_set_expiry(r->stream, stream_now_ms() + env->cfg->request_first_event_ms,
                      STREAM_END_TIMEOUT);
    log_debug("conn %" PRIu64 " stream %d: request stream %s for %s", r->io->conn_id,
              (int)r->stream_id, r->token + sizeof(REPLY_URL) - 1, r->service);
    r->asking = true;
    r->waiting = true;
    unroute(r);
    return request_resume(r);
}

/* Publishes r's body to its service, the reply subject subscribed; 0 or ERR_NATS. */
static int publish_request(struct request *r)
{
    const struct request_env *env = r->io->env;
    const char *name = r->token + sizeof(REPLY_URL) - 1;
    char *cancel = subject_of(env->cfg->request_cancel_prefix, r->token);
    size_t ns;
    const char *reply = stream_subjects(r->stream, &ns)[0];
    const char *h[2 * (REQUEST_FORWARD_MAX + 5)];
    size_t n = 0;
    h[n++] = "Sse-Stream-Id";
    h[n++] = name + REPLY_TAG_LEN + 1;
    h[n++] = "Sse-Principal";
    h[n++] = principal_of(r);
    h[n++] = "Sse-Cancel";
    h[n++] = cancel;
    if (r->traceparent) {
        h[n++] = "traceparent";
        h[n++] = r->traceparent;
    }
    if (r->tracestate) {
        h[n++] = "tracestate";
        h[n++] = r->tracestate;
    }
    for (size_t i = 0; i < r->nfwd; i++)
        h[n++] = r->fwd[i];
    int rc = bus_send(env->bus, r->service, reply, h, n / 2, r->body.data, r->body.len);
    free(cancel);
    return rc;
}

static int resume_request(struct request *r)
{
    const struct request_env *env = r->io->env;
    struct stream *s = r->stream;
    if (!stream_ready(s))
        return 0;
    enum stream_end end = stream_ended(s);
    if (!r->asked) {
        if (end != STREAM_END_NONE)
            return respond_error(r, 503, "unavailable", "reply subscription unavailable, retry");
        int rc = publish_request(r);
        /* The body is in cnats's buffer now. */
        buf_dispose(&r->body);
        buf_init(&r->body);
        uncharge(r, r->charged);
        r->asked = true;
        if (rc != 0)
            return respond_error(r, 503, "unavailable", "NATS unavailable, try again");
        metrics_add(&env->stats->req_started, 1);
        return 0;
    }
    if (stream_refused(s)) {
        metrics_add(&env->stats->req_no_responders, 1);
        return respond_error(r, 503, "no_responders", "no service answers on that subject");
    }
    if (stream_dispatchable(s) == 0) {
        if (end == STREAM_END_NONE)
            return 0;
        if (end == STREAM_END_TIMEOUT) {
            metrics_add(&env->stats->req_timeouts, 1);
            return respond_error(r, 504, "timeout",
                                 "no reply from the service within request-first-event-ms");
        }
    }
    metrics_observe(&env->stats->req_first[r->route_index], stream_now_s() - r->started);
    stream_set_expiry(s, token_end_ms(r), STREAM_END_TOKEN_EXPIRED);
    return start_stream(r);
}

/* GET or DELETE /streams/r/<token>: only its owner may. */
static int serve_reply(struct request *r)
{
    const struct request_env *env = r->io->env;
    const char *principal = principal_of(r);
    if (auth_required(env->auth) && !*principal)
        return respond_error(r, 403, "forbidden", "request streams need a token with a sub claim");
    if (!reply_owner_is(r->route->stream, principal))
        return respond_error(r, 403, "forbidden", "not your stream");
    size_t n = sizeof(REPLY_URL) + HTTP_STREAM_TOKEN_LEN;
    r->token = mem_alloc(n);
    snprintf(r->token, n, "%s%s", REPLY_URL, r->route->stream);
    read_reply(r);
    if (r->route->kind == HTTP_REPLY)
        return serve_events(r);
    if (!env->bus)
        return respond_error(r, 503, "unavailable", "NATS unavailable, try again");
    const char *name = r->token + sizeof(REPLY_URL) - 1;
    char *cancel = subject_of(env->cfg->request_cancel_prefix, r->token);
    const char *h[] = {"Sse-Stream-Id", name + REPLY_TAG_LEN + 1, "Sse-Principal", principal};
    int rc = bus_send(env->bus, cancel, NULL, h, 2, NULL, 0);
    free(cancel);
    if (rc != 0)
        return respond_error(r, 503, "unavailable", "NATS unavailable, try again");
    metrics_add(&env->stats->req_cancelled, 1);
    struct request_cancels *c = env->cancels;
    if (c && c->n < REQUEST_CANCELS_MAX) {
        c->item[c->n++] = (struct request_cancel){
            stream_now_ms() + env->cfg->request_cancel_wait_ms, r->route->subjects[0]};
        r->route->subjects[0] = NULL;
        r->route->nsubjects = 0;
    } else {
        log_warn("conn %" PRIu64 ": %d cancels pending on this worker; %s is left to its "
                 "service", r->io->conn_id, REQUEST_CANCELS_MAX, name);
    }
    struct request_body body = {"{\"cancelled\":true}\n", 19, NULL, NULL};
    return respond(r, 202, "application/json", &body, NULL);
}

void request_env_tick(struct request_env *env, int64_t now_ms)
{
    struct request_cancels *c = env->cancels;
    size_t done = 0;
    static const char why[] = "{\"reason\":\"cancelled\"}";
    static const char *const h[] = {"Sse-End", "cancelled", "Sse-Event", "error"};
    while (c && done < c->n && c->item[done].due_ms <= now_ms) {
        struct request_cancel *k = &c->item[done++];
        /* The service ended it meanwhile (as far as this process can tell): first end wins. */
        if (env->bus && !bus_subject_ended(env->bus, k->reply) &&
            bus_send(env->bus, k->reply, NULL, h, 2, why, sizeof(why) - 1) == 0)
            metrics_add(&env->stats->req_cancel_forced, 1);
        free(k->reply);
    }
    if (done) {
        memmove(c->item, c->item + done, (c->n - done) * sizeof(c->item[0]));
        c->n -= done;
    }
}

void request_env_dispose(struct request_env *env)
{
    struct request_cancels *c = env->cancels;
    for (size_t i = 0; c && i < c->n; i++)
        free(c->item[i].reply);
    free(c);
    env->cancels = NULL;
}

bool request_wants_body(struct request *r, uint64_t *max)
{
    if (!r->method || !r->path)
        return false;
    route(r);
    const struct config *cfg = r->io->env->cfg;
    bool ds = r->route->kind == HTTP_DS &&
              (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0);
    *max = r->route->kind == HTTP_PUBLISH   ? cfg->max_publish_bytes
           : r->route->kind == HTTP_REQUEST ? cfg->max_request_body_bytes
           : ds                             ? cfg->ds_max_body_bytes
                                            : 0;
    return r->route->kind == HTTP_PUBLISH || r->route->kind == HTTP_REQUEST || ds;
}

bool request_publishing(const struct request *r) { return r->publishing && r->status == 0; }

int request_body(struct request *r, const void *data, size_t len)
{
    if (!request_publishing(r))
        return 0;
    if (r->route->kind == HTTP_REQUEST &&
        r->body.len + len > r->io->env->cfg->max_request_body_bytes) {
        metrics_add(&r->io->env->stats->request_body, 1);
        respond_error(r, 413, "request_too_large", "body larger than max-request-body-bytes");
        return ERR_LIMIT;
    }
    if (r->route->kind == HTTP_DS && r->body.len + len > r->io->env->cfg->ds_max_body_bytes) {
        respond_text(r, 413, "body larger than ds-max-body-bytes", NULL);
        return ERR_LIMIT;
    }
    if (r->route->kind != HTTP_DS && r->body.len + len > r->io->env->cfg->max_publish_bytes) {
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

static int publish_body(struct request *r);
static int body_complete(struct request *r);
static int after_answer(struct request *r);

int request_body_end(struct request *r)
{
    if (!request_publishing(r))
        return 0;
    if (r->authorizing || r->answered) {
        /* The body is whole before the auth service has answered (or been heard): hold it. */
        r->body_done = true;
        r->publishing = false;
        r->waiting = true;
        if (!r->answered)
            return 0;
        r->answered = false;
        return after_answer(r);
    }
    return body_complete(r);
}

/* r's whole body is here: answered by its route. */
static int body_complete(struct request *r)
{
    if (r->route->kind == HTTP_REQUEST)
        return serve_request(r);
    if (r->route->kind == HTTP_DS) {
        r->publishing = false;
        return ds_write(r);
    }
    return publish_body(r);
}

/* Publishes r's whole body on its subject and answers 202 (or 503). */
static int publish_body(struct request *r)
{
    const struct request_env *env = r->io->env;
    const struct http_route *rt = r->route;
    const char *h[4];
    size_t n = 0;
    if (rt->event) {
        h[n++] = "Sse-Event";
        h[n++] = rt->event;
    }
    if (rt->end) {
        h[n++] = "Sse-End";
        h[n++] = "1";
    }
    int rc = env->bus ? bus_send(env->bus, rt->subjects[0], NULL, h, n / 2, r->body.data,
                                 r->body.len)
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

/*
 * A stream or poll on subjects that had all ended where it starts: 204,
 * the one answer that makes an EventSource stop reconnecting for good.
 * No content-length (RFC 9110 15.3.5), nothing to type.
 */
static int respond_finished(struct request *r)
{
    struct request_head h = {.status = 204};
    add(&h, "cache-control", "no-store");
    add(&h, "x-request-id", r->request_id);
    add_cors(r, &h, CORS_ACTUAL);
    r->waiting = false;
    r->status = 204;
    log_answer(r, 204);
    return r->front->respond(r, &h, NULL);
}

int request_resume(struct request *r)
{
    if (r->answered) {
        r->answered = false;
        return after_answer(r);
    }
    if (!r->waiting || r->authorizing)
        return 0;
    if (r->ds && (r->stream || ds_job_waiting(r)))
        return ds_resume(r);
    if (r->asking)
        return resume_request(r);
    if (stream_ready(r->stream) && stream_over(r->stream))
        return respond_finished(r);
    if (r->poll)
        return poll_ready(r->stream) ? answer_poll(r) : 0;
    return stream_ready(r->stream) ? start_stream(r) : 0;
}

static int serve_events(struct request *r)
{
    unsigned retry_ms = 0;
    bool sse = r->route->kind == HTTP_EVENTS || r->route->kind == HTTP_REPLY;
    const char *why = admit_client(r, sse);
    if (why && !sse)
        return respond_text(r, 429, why, NULL);
    if (why)
        retry_ms = refusal_retry_ms(r);
    else if (sse && !admit_stream(r, &retry_ms))
        why = "over capacity, reconnect later";
    if (why) {
        /* 200, a long retry: and the end; any other status stops an EventSource. */
        struct request_body body = {NULL, 0, NULL, NULL};
        body.owned = refusal(retry_ms, why, &body.len);
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

/*
 * The client behind a trusted proxy: the address its Forwarded or
 * X-Forwarded-For names (forwarded.h), once per request, since a proxy's
 * keep-alive connection carries different clients' requests one after
 * the other. From any other peer the headers are ignored, and counted.
 */
static void resolve_client(struct request *r)
{
    const struct request_env *env = r->io->env;
    if (!r->forwarded && !r->xff && !r->fwd_too_long)
        return;
    if (!r->io->trusted) {
        metrics_add(&env->stats->fwd_untrusted, 1);
        return;
    }
    char client[FORWARDED_ADDRESS_MAX];
    int rc = r->fwd_too_long ? ERR_INVALID
                             : forwarded_client(env->trusted, r->forwarded, r->xff, client,
                                                sizeof(client));
    if (rc == 0) {
        snprintf(r->client, sizeof(r->client), "%s", client);
        r->forwarded_client = true;
        metrics_add(&env->stats->fwd_applied, 1);
        return;
    }
    metrics_add(rc == ERR_INVALID ? &env->stats->fwd_malformed : &env->stats->fwd_unusable, 1);
    static _Thread_local double last_log;
    double now = stream_now_s();
    if (now - last_log >= 1.0) {
        last_log = now;
        log_info("conn %" PRIu64 " %s: %s %s header ignored; the client is the proxy's address "
                 "(at most one line a second)", r->io->conn_id, r->io->peer,
                 rc == ERR_INVALID ? "malformed" : "addressless",
                 r->forwarded ? "Forwarded" : "X-Forwarded-For");
    }
}
static int ask_callout(struct request *r);
static int dispatch(struct request *r);

int request_process(struct request *r)
{
    ensure_id(r);
    resolve_client(r);
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
        if (status == ADMIT_CALLOUT)
            return ask_callout(r);
        if (status != 0)
            return respond_text(r, status, text, status == 401 ? www : NULL);
    }
    return dispatch(r);
}

/*
 * A write (publish, request stream, Durable Streams PUT/POST) takes its
 * body: answered once it is complete (request_body_end), or now when it
 * ended while the auth service was deciding.
 */
static int take_body(struct request *r)
{
    if (r->body_done) {
        r->body_done = false;
        r->waiting = false;
        r->publishing = true;
        return body_complete(r);
    }
    r->publishing = true;
    /* undici's h2 sends END_STREAM on an empty body only after the answer. */
    return r->route->kind == HTTP_DS && r->no_body ? request_body_end(r) : 0;
}

/* Serves an admitted (or refused by routing) request by its kind. */
static int dispatch(struct request *r)
{
    switch (r->route->kind) {
    case HTTP_FILE:
        return serve_file(r);
    case HTTP_PUBLISH:
    case HTTP_REQUEST:
        return take_body(r);
    case HTTP_EVENTS:
    case HTTP_POLL:
        return serve_events(r);
    case HTTP_REPLY:
    case HTTP_CANCEL:
        return serve_reply(r);
    case HTTP_DS:
        return takes_body(r) ? take_body(r) : ds_serve(r);
    default:
        return respond_text(r, r->route->status, r->route->reason, NULL);
    }
}

/*
 * Callout (auth = callout; callout.h). admit() says ADMIT_CALLOUT after
 * the checks that need no grant; ask_callout() asks the worker's callout
 * with what the service is shown. A cached answer is applied at once;
 * otherwise r waits (an SSE or poll: waiting, its head held; a publish or
 * request stream: still taking its body, which is held if it ends first)
 * and on_callout_answer() keeps the answer and wakes the front end, which
 * applies it through request_resume() (or request_body_end()) where it
 * may answer. Applying: a grant goes through check_grant() and dispatch()
 * like a token's; 401 and 403 are passed on as such; any failure of the
 * service is auth_unavailable(): an EventSource's GET gets 200 with a
 * retry: and its end (a 5xx would stop it for good), everything else 503.
 *
 * An open stream with a callout's grant is asked about again at the
 * grant's "expires" (on_stream_renew): a grant that still covers its
 * subjects renews it, a 401/403 or a narrower grant ends it with `event:
 * revoked`, a failure ends it with retry: (reconnect and be asked again).
 */

/* Fills q from r: its method, path, subjects, client and allow-listed headers (borrowed). */
static void query_of(const struct request *r, struct callout_query *q)
{
    const struct request_env *env = r->io->env;
    memset(q, 0, sizeof(*q));
    q->method = r->method;
    q->path = r->path;
    q->client = request_client_address(r); /* the forwarded client behind a trusted proxy */
    if (r->stream) {
        q->action = "subscribe";
        q->subjects = (const char *const *)stream_subjects(r->stream, &q->nsubjects);
    } else {
        const struct http_route *route = r->route;
        q->action = publishes(r) ? "publish"
                    : route->kind == HTTP_EVENTS || route->kind == HTTP_POLL ||
                            route->kind == HTTP_DS
                        ? "subscribe"
                                                                              : "read";
        q->subjects = (const char *const *)route->subjects;
        q->nsubjects = route->nsubjects;
    }
    const char *list = env->cfg->auth_callout_headers;
    if (r->cookie && reply_header_listed(list, "cookie", 6)) {
        q->headers[2 * q->nheaders] = "cookie";
        q->headers[2 * q->nheaders++ + 1] = r->cookie;
    }
    if (r->authorization && reply_header_listed(list, "authorization", 13)) {
        q->headers[2 * q->nheaders] = "authorization";
        q->headers[2 * q->nheaders++ + 1] = r->authorization;
    }
    for (size_t i = 0; i + 1 < r->ncallout_fields && q->nheaders < CALLOUT_HEADERS_MAX; i += 2) {
        q->headers[2 * q->nheaders] = r->callout_fields[i];
        q->headers[2 * q->nheaders++ + 1] = r->callout_fields[i + 1];
    }
}

static void apply_renewal(struct request *r, struct callout_answer *a);

static void on_callout_answer(void *ctx, struct callout_answer *a)
{
    struct request *r = ctx;
    r->callout_wait = NULL;
    r->authorizing = false;
    if (r->renewing) {
        apply_renewal(r, a);
        return;
    }
    r->answer = *a;
    r->answered = true;
    r->front->wake(r);
}

static int ask_callout(struct request *r)
{
    const struct request_env *env = r->io->env;
    struct callout_query q;
    query_of(r, &q);
    int rc = callout_ask(env->callout, &q, stream_now_ms(), &r->answer, on_callout_answer, r,
                         &r->callout_wait);
    if (rc == ERR_AGAIN) {
        r->authorizing = true;
        /* A body is taken (and charged) while the service decides; anything else waits. */
        if (takes_body(r))
            r->publishing = true;
        else
            r->waiting = true;
        return 0;
    }
    return after_answer(r);
}

/*
 * The auth service could not decide (unreachable, slow, failing, or too
 * many waiting): never a 5xx for an EventSource, which would stop it for
 * good. Counted.
 */
static int auth_unavailable(struct request *r, const char *reason)
{
    const struct request_env *env = r->io->env;
    metrics_add(&env->stats->auth_unavailable, 1);
    enum http_kind kind = r->route->kind;
    if (kind == HTTP_EVENTS || kind == HTTP_REPLY) {
        const struct config *cfg = env->cfg;
        unsigned spread = (unsigned)(cfg->overload_retry_max_ms - cfg->overload_retry_min_ms);
        unsigned retry = (unsigned)cfg->overload_retry_min_ms +
                         (spread ? (unsigned)(stream_now_ms() % (spread + 1)) : 0);
        char line[SSE_LINE_MAX];
        struct buf b;
        buf_init(&b);
        buf_append(&b, line, sse_format_retry(line, retry));
        buf_append(&b, line, sse_format_comment(line, "authorization unavailable, reconnect later"));
        struct request_body body = {(const char *)b.data, b.len, (char *)b.data, NULL};
        charge(r, b.len, true);
        return respond(r, 200, "text/event-stream", &body, NULL);
    }
    if (kind == HTTP_REQUEST || kind == HTTP_CANCEL)
        return respond_error(r, 503, "unavailable", reason);
    return respond_text(r, 503, reason, NULL);
}

/* Applies r->answer (taken): serves r, or answers 401/403/503 or 200 + retry:. */
static int after_answer(struct request *r)
{
    struct callout_answer a = r->answer;
    memset(&r->answer, 0, sizeof(r->answer));
    r->waiting = false;
    bool json = r->route->kind == HTTP_REQUEST || r->route->kind == HTTP_CANCEL;
    switch (a.result) {
    case CALLOUT_GRANTED: {
        r->grant = a.grant;
        const char *text;
        int status = check_grant(r, &text);
        if (status != 0)
            return json ? respond_error(r, status, "forbidden", text)
                        : respond_text(r, status, text, NULL);
        return dispatch(r);
    }
    case CALLOUT_DENIED_401:
        return json ? respond_error(r, 401, "unauthorized", a.reason)
                    : respond_text(r, 401, a.reason, "Bearer realm=\"sluice\"");
    case CALLOUT_DENIED_403:
        return json ? respond_error(r, 403, "forbidden", a.reason)
                    : respond_text(r, 403, a.reason, NULL);
    default:
        auth_grant_free(a.grant);
        return auth_unavailable(r, a.reason);
    }
}

/* Whether g covers every subject of s. */
static bool grant_covers(const struct auth_grant *g, const struct stream *s)
{
    size_t n;
    char *const *subjects = stream_subjects(s, &n);
    for (size_t i = 0; i < n; i++)
        if (!auth_can_subscribe(g, subjects[i]))
            return false;
    return true;
}

/* The renewal's answer for r's open stream (a: taken). */
static void apply_renewal(struct request *r, struct callout_answer *a)
{
    const struct request_env *env = r->io->env;
    r->renewing = false;
    if (a->result == CALLOUT_GRANTED && grant_covers(a->grant, r->stream)) {
        auth_grant_free(r->grant);
        r->grant = a->grant;
        metrics_add(&env->stats->auth_renewed, 1);
        stream_set_expiry(r->stream, token_end_ms(r), STREAM_END_TOKEN_EXPIRED);
        return;
    }
    if (a->result == CALLOUT_GRANTED || a->result == CALLOUT_DENIED_401 ||
        a->result == CALLOUT_DENIED_403) {
        const char *why = a->result == CALLOUT_GRANTED ? "permission withdrawn" : a->reason;
        log_info("conn %" PRIu64 " stream %d: re-authorization refused: %s", r->io->conn_id,
                 (int)r->stream_id, why);
        stream_end_event(r->stream, STREAM_END_REVOKED, "revoked", why);
    } else {
        metrics_add(&env->stats->auth_unavailable, 1);
        stream_end_retry(r->stream, STREAM_END_AUTH_UNAVAILABLE,
                         (unsigned)env->cfg->overload_retry_min_ms);
    }
    auth_grant_free(a->grant);
}

/* An open stream's callout grant expired: ask again (stream_renew_fn). */
static void on_stream_renew(void *ctx)
{
    struct request *r = ctx;
    const struct request_env *env = r->io->env;
    if (!env->callout || r->callout_wait || !r->stream)
        return;
    struct callout_query q;
    query_of(r, &q);
    struct callout_answer a;
    r->renewing = true;
    if (callout_ask(env->callout, &q, stream_now_ms(), &a, on_callout_answer, r,
                    &r->callout_wait) == 0)
        apply_renewal(r, &a);
}

void request_head_add(struct request_head *h, const char *name, const char *value)
{
    add(h, name, value);
}

int request_answer(struct request *r, struct request_head *h, struct request_body *body)
{
    ensure_id(r);
    if (h->status != 204 && h->status != 304) {
        snprintf(h->length, sizeof(h->length), "%zu", body->len);
        add(h, "content-length", h->length);
    }
    add(h, "x-request-id", r->request_id);
    add_cors(r, h, CORS_DS_ACTUAL);
    r->status = h->status;
    r->publishing = false;
    r->waiting = false;
    unroute(r);
    log_answer(r, h->status);
    if (h->status == 204 || h->status == 304)
        return r->front->respond(r, h, NULL);
    return r->front->respond(r, h, body);
}

void request_charge(struct request *r, size_t n) { charge(r, n, true); }

int request_open(struct request *r, const struct request_wait *w, const char **text)
{
    unsigned retry_ms;
    if (!admit_stream(r, &retry_ms)) {
        *text = "over capacity, retry later (max-streams-total)";
        return 503;
    }
    int status = open_stream_as(r, text, w);
    if (status != 0)
        return status;
    r->waiting = true;
    unroute(r);
    return 0;
}

int request_start_stream(struct request *r, struct request_head *h)
{
    add(h, "x-request-id", r->request_id);
    add_cors(r, h, CORS_DS_ACTUAL);
    r->waiting = false;
    r->status = 200;
    log_answer(r, 200);
    return r->front->start_stream(r, h);
}
