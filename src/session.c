/*
 * session: request state shared by the h2 and http1 front ends (see
 * session.h), so that both read the same headers, open streams the same
 * way, publish the same way and write the same access log line.
 */
#include "sluice/session.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/access.h"
#include "sluice/bus.h"
#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/http.h"
#include "sluice/mem.h"

#define LAST_EVENT_ID_MAX 1024
#define REQUEST_ID_MAX 128

double session_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void session_req_init(struct session_req *r)
{
    memset(r, 0, sizeof(*r));
    r->started = session_now();
    buf_init(&r->body);
}

static void log_access(const struct session_req *r, const char *protocol, const char *peer)
{
    struct access_entry e = {
        .request_id = r->request_id ? r->request_id : "-",
        .traceparent = r->traceparent,
        .client = peer,
        .protocol = protocol,
        .method = r->method,
        .path = r->path ? r->path : "",
        .status = r->status,
        .duration_s = session_now() - r->started,
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
}

void session_req_dispose(struct session_req *r, const char *protocol, const char *peer)
{
    if (r->method)
        log_access(r, protocol, peer);
    stream_free(r->stream);
    free(r->method);
    free(r->path);
    free(r->last_event_id);
    free(r->request_id);
    free(r->traceparent);
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
        state = (uint64_t)(session_now() * 1e9) ^ (uint64_t)(uintptr_t)&state ^ 0x2545f4914f6cdd1dULL;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    char id[17];
    snprintf(id, sizeof(id), "%016" PRIx64, state);
    r->request_id = mem_strdup(id);
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
        .retry_ms = (unsigned)cfg->retry_ms,
        .jitter_pct = (unsigned)cfg->retry_jitter_pct,
        .queue_max = cfg->stream_queue_bytes,
        .wake = wake,
        .wake_ctx = wake_ctx,
        .conn_id = conn_id,
        .stream_id = stream_id,
    };
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
