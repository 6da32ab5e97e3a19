/*
 * server: start-up, signals and shutdown order (see server.h).
 *
 * Every worker binds its own SO_REUSEPORT socket to the listen address,
 * so the kernel spreads connections over workers without a shared accept
 * lock; net_listen() keeps another process out of that port unless
 * --reuse-port 1 says sharing is meant.
 *
 * Signals are blocked in every thread and taken by one thread of their
 * own with sigtimedwait(), so no handler ever runs inside a worker, and
 * a signal is taken even while the main thread is stuck in a library
 * call (an unsubscribe from a JetStream consumer waits for a NATS server
 * that may be gone). The main thread only sweeps lingering NATS
 * subscriptions and, once the drain is done, tears down in order.
 *
 * Drain: readiness turns false at once, then every worker closes its
 * listener and spreads the end of its streams over the drain window; the
 * process exits 0 when every worker reports its connections closed and
 * teardown is done. Two guarantees hold whatever NATS does: a second
 * signal exits at once, and the signal thread's watchdog _exit()s with a
 * log line when drain-ms + 5 s after the first signal the process is
 * still not gone (rejected: alarm(), whose handler would run on an
 * arbitrary thread, and a per-call timeout, which cannot cover calls made
 * inside libraries).
 *
 * systemd (Type=notify, notify.h): the signal thread also speaks to the
 * service manager, because it is the one thread that never blocks in a
 * library call. READY=1 goes once every listener is bound, NATS is
 * connected and every worker loop has gone round once (its accept
 * watcher is armed); STOPPING=1 as a drain begins; WATCHDOG=1 every
 * quarter of WATCHDOG_USEC, but only while every worker loop has gone
 * round within half of it, so one stuck worker loop lets systemd restart
 * the process. Rejected: pinging from the main thread, which may wait on
 * NATS inside bus_sweep() while every worker serves clients fine.
 */
#include "sluice/server.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sluice/access.h"
#include "sluice/admin.h"
#include "sluice/admission.h"
#include "sluice/auth.h"
#include "sluice/buf.h"
#include "sluice/bus.h"
#include "sluice/callout.h"
#include "sluice/config.h"
#include "sluice/ds.h"
#include "sluice/conn.h"
#include "sluice/cors.h"
#include "sluice/forwarded.h"
#include "sluice/err.h"
#include "sluice/guard.h"
#include "sluice/principal.h"
#include "sluice/log.h"
#include "sluice/reply.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/net.h"
#include "sluice/notify.h"
#include "sluice/revoke.h"
#include "sluice/stream.h"
#include "sluice/tls.h"
#include "sluice/worker.h"

struct server {
    const struct config *cfg;
    struct auth *auth;
    struct cors *cors;
    struct worker **workers;
    size_t nworkers;
    struct bus *bus;
    struct tls *tls;
    struct guard *guard;
    struct forwarded_nets *trusted;   /* trusted-proxies */
    struct principals *principals;    /* per-principal stream limits */
    struct admission *admission; /* SSE stream capacity, process-wide */
    enum log_level log_level; /* as set now (SIGHUP may change it) */
    atomic_bool draining;
    atomic_bool running; /* started: a stop signal drains; before, it exits */
    atomic_bool drained; /* every worker reported its connections closed */
    atomic_bool done;    /* teardown finished: the signal thread returns */
    pthread_t signals;
    bool signals_started;
    int argc;
    char **argv;
    int locks[2]; /* the listeners' port locks (net_listen), -1 when none */
    char ready_status[1024];            /* STATUS= sent with READY=1: the listeners */
    atomic_bool ready;                  /* /readyz's answer at the signal thread's last tick */
    atomic_uint_fast64_t ready_changes; /* times that answer flipped (flapping) */
};

/* Exit by drain-ms + this after the first stop signal, whatever a library call is doing. */
#define SERVER_EXIT_SLACK_MS 5000
/* The watchdog fires this much before the promise, for the kernel's teardown of the process. */
#define SERVER_EXIT_MARGIN_MS 1000
/* /readyz says 503 while open streams are above this share of max-streams-total. */
#define SERVER_READY_HIGH_WATER_PCT 90

static bool on_ready(void *ctx, const char **why)
{
    struct server *s = ctx;
    if (atomic_load(&s->draining)) {
        *why = "draining";
        return false;
    }
    if (!bus_connected(s->bus)) {
        *why = "NATS disconnected";
        return false;
    }
    if (!admission_headroom(s->admission)) {
        /* Load balancers steer new clients elsewhere; open streams stay served. */
        *why = "at capacity (open streams above 90% of max-streams-total)";
        return false;
    }
    return true;
}

/* Worker i's connection or stream counters, as bytes to take a field's offset in. */
static const char *stats_of(const struct server *s, size_t i, bool conn)
{
    return conn ? (const char *)worker_conn_stats(s->workers[i])
                : (const char *)worker_stream_stats(s->workers[i]);
}

/* The sum over workers of the counter at byte offset off in their stream or conn stats. */
static double sum_at(const struct server *s, bool conn, size_t off)
{
    double total = 0;
    for (size_t i = 0; i < s->nworkers; i++) {
        const void *field = stats_of(s, i, conn) + off;
        total +=
            (double)atomic_load_explicit((const atomic_uint_fast64_t *)field, memory_order_relaxed);
    }
    return total;
}

/* A metric with one unlabelled sample. */
static void metric(struct buf *out, const char *name, const char *type, const char *help,
                   double value)
{
    metrics_header(out, name, type, help);
    metrics_value(out, name, NULL, value);
}

/* The sum over workers of the histogram at byte offset off in their conn or stream stats. */
static void histogram(struct buf *out, const struct server *s, const char *name, const char *help,
                      bool conn, size_t off)
{
    const struct metrics_histogram *h[64];
    for (size_t i = 0; i < s->nworkers; i++)
        h[i] = (const struct metrics_histogram *)(const void *)(stats_of(s, i, conn) + off);
    metrics_header(out, name, "histogram", help);
    metrics_histogram_write(out, name, h, s->nworkers);
}

#define STREAMS(field) sum_at(s, false, offsetof(struct stream_stats, field))
#define CONNS(field) sum_at(s, true, offsetof(struct conn_stats, field))

/* One sample of a labelled counter: its labels and the conn_stats field it sums. */
struct labelled {
    const char *label;
    size_t off;
};

/* The samples of name: each label with its field summed over the workers. */
static void labelled_sums(struct buf *out, const struct server *s, const char *name,
                          const struct labelled *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        metrics_value(out, name, t[i].label, sum_at(s, true, t[i].off));
}

/* Request streams (POST to a request route): counters, and time to first reply per route. */
static void request_metrics(struct buf *out, const struct server *s)
{
    metrics_header(out, "sluice_request_streams_total", "counter",
                   "Request streams, by what happened: started (published to the service), "
                   "finished (ended by the service), cancelled (DELETE), cancel_forced (ended "
                   "by the gateway after request-cancel-wait-ms), no_responders (503), "
                   "timeout (504).");
    static const struct labelled what[] = {
        {"result=\"started\"", offsetof(struct conn_stats, requests.req_started)},
        {"result=\"finished\"", offsetof(struct conn_stats, requests.req_finished)},
        {"result=\"cancelled\"", offsetof(struct conn_stats, requests.req_cancelled)},
        {"result=\"cancel_forced\"", offsetof(struct conn_stats, requests.req_cancel_forced)},
        {"result=\"no_responders\"", offsetof(struct conn_stats, requests.req_no_responders)},
        {"result=\"timeout\"", offsetof(struct conn_stats, requests.req_timeouts)},
    };
    labelled_sums(out, s, "sluice_request_streams_total", what, sizeof(what) / sizeof(what[0]));
    metrics_header(out, "sluice_ds_requests_total", "counter",
                   "Durable Streams route requests answered, by operation (a refusal counts in "
                   "its operation too).");
    static const struct labelled ds_ops[] = {
        {"op=\"create\"", offsetof(struct conn_stats, requests.ds_create)},
        {"op=\"append\"", offsetof(struct conn_stats, requests.ds_append)},
        {"op=\"close\"", offsetof(struct conn_stats, requests.ds_close)},
        {"op=\"read\"", offsetof(struct conn_stats, requests.ds_read)},
        {"op=\"long_poll\"", offsetof(struct conn_stats, requests.ds_long_poll)},
        {"op=\"sse\"", offsetof(struct conn_stats, requests.ds_sse)},
        {"op=\"head\"", offsetof(struct conn_stats, requests.ds_head)},
        {"op=\"delete\"", offsetof(struct conn_stats, requests.ds_delete)},
    };
    labelled_sums(out, s, "sluice_ds_requests_total", ds_ops, sizeof(ds_ops) / sizeof(ds_ops[0]));
    metrics_header(out, "sluice_ds_answers_total", "counter",
                   "Durable Streams route answers that were not a success: refused (4xx), "
                   "unavailable (503: JetStream did not answer within ds-timeout-ms, or "
                   "ds-max-inflight operations were in progress).");
    static const struct labelled ds_res[] = {
        {"result=\"refused\"", offsetof(struct conn_stats, requests.ds_refused)},
        {"result=\"unavailable\"", offsetof(struct conn_stats, requests.ds_unavailable)},
    };
    labelled_sums(out, s, "sluice_ds_answers_total", ds_res, sizeof(ds_res) / sizeof(ds_res[0]));
    metric(out, "sluice_ds_append_races_total", "counter",
           "Durable Streams appends judged again on a newer tail: another writer (any gateway) "
           "appended between this one's read of the tail and its conditional publish.",
           sum_at(s, true, offsetof(struct conn_stats, requests.ds_races)));
    static const char name[] = "sluice_request_first_event_seconds";
    metrics_header(out, name, "histogram",
                   "From a request stream's POST to its first reply, by request route "
                   "(/streams: the generic POST /streams/<subject>).");
    for (int r = 0; r <= REQUEST_ROUTES_MAX; r++) {
        char path[256], label[300];
        if (r < REQUEST_ROUTES_MAX && !reply_route_path(s->cfg->request_routes, r, path,
                                                        sizeof(path)))
            r = REQUEST_ROUTES_MAX;
        if (r == REQUEST_ROUTES_MAX)
            snprintf(path, sizeof(path), "/streams");
        snprintf(label, sizeof(label), "route=\"%s\"", path);
        const struct metrics_histogram *h[64];
        for (size_t i = 0; i < s->nworkers; i++)
            h[i] = (const struct metrics_histogram *)(const void *)(
                stats_of(s, i, true) + offsetof(struct conn_stats, requests.req_first) +
                (size_t)r * sizeof(struct metrics_histogram));
        metrics_histogram_write_labelled(out, name, label, h, s->nworkers);
    }
}

/* PROXY protocol headers and Forwarded / X-Forwarded-For: what the gateway made of them. */
static void client_address_metrics(struct buf *out, const struct server *s)
{
    static const char proxy[] = "sluice_proxy_protocol_total";
    metrics_header(out, proxy, "counter",
                   "Connections on proxy-protocol listeners, by result: accepted (a valid "
                   "header), or closed for a missing, malformed, oversized or late header, or "
                   "a peer not in trusted-proxies.");
    static const struct labelled pp[] = {
        {"result=\"accepted\"", offsetof(struct conn_stats, proxy_headers)},
        {"result=\"missing\"", offsetof(struct conn_stats, proxy_missing)},
        {"result=\"malformed\"", offsetof(struct conn_stats, proxy_malformed)},
        {"result=\"oversized\"", offsetof(struct conn_stats, proxy_oversized)},
        {"result=\"timeout\"", offsetof(struct conn_stats, proxy_timeout)},
        {"result=\"untrusted\"", offsetof(struct conn_stats, proxy_untrusted)},
    };
    labelled_sums(out, s, proxy, pp, sizeof(pp) / sizeof(pp[0]));
    static const char fwd[] = "sluice_forwarded_headers_total";
    metrics_header(out, fwd, "counter",
                   "Requests with a Forwarded or X-Forwarded-For header, by result: applied "
                   "(its client used), untrusted (ignored: the peer is not in trusted-proxies), "
                   "malformed or unusable (ignored: the proxy's address is used).");
    static const struct labelled fw[] = {
        {"result=\"applied\"", offsetof(struct conn_stats, requests.fwd_applied)},
        {"result=\"untrusted\"", offsetof(struct conn_stats, requests.fwd_untrusted)},
        {"result=\"malformed\"", offsetof(struct conn_stats, requests.fwd_malformed)},
        {"result=\"unusable\"", offsetof(struct conn_stats, requests.fwd_unusable)},
    };
    labelled_sums(out, s, fwd, fw, sizeof(fw) / sizeof(fw[0]));
}

/* Hands a copy of rv to every worker: each ends its own matching streams. */
static void revoke_everywhere(struct server *s, const struct revoke *rv)
{
    for (size_t i = 0; i < s->nworkers; i++) {
        struct bus_mail m = {.kind = BUS_MAIL_REVOKE};
        m.revoke = revoke_copy(rv);
        worker_post(s->workers[i], m);
    }
}

/* A message on revoke-subject (a cnats thread): parsed here, handed to the workers. */
static void on_control(void *ctx, const char *data, size_t len)
{
    struct server *s = ctx;
    struct revoke rv;
    const char *why;
    if (revoke_from_json(data, len, &rv, &why) != 0) {
        log_warn("%s: revocation ignored: %s", s->cfg->revoke_subject, why);
        return;
    }
    log_info("%s: revoking principal %s subject %s: %s", s->cfg->revoke_subject,
             rv.principal ? rv.principal : "-", rv.subject ? rv.subject : "-", rv.reason);
    revoke_everywhere(s, &rv);
    revoke_dispose(&rv);
}

/* POST /revoke?… on the admin listener: 0, or ERR_INVALID with *why. */
static int on_admin_revoke(void *ctx, const char *query, size_t len, const char **why)
{
    struct server *s = ctx;
    struct revoke rv;
    if (revoke_from_query(query, len, &rv, why) != 0)
        return ERR_INVALID;
    log_info("admin: revoking principal %s subject %s: %s", rv.principal ? rv.principal : "-",
             rv.subject ? rv.subject : "-", rv.reason);
    revoke_everywhere(s, &rv);
    revoke_dispose(&rv);
    return 0;
}

/* auth = callout: results, latency, cache. */
static void callout_metrics(struct buf *out, const struct server *s)
{
    if (strcmp(s->cfg->auth, "callout") != 0)
        return;
    metrics_header(out, "sluice_auth_callout_requests_total", "counter",
                   "Auth callouts by result (refused: not asked, every slot and the queue full).");
    for (int r = 0; r < CALLOUT_RESULT_COUNT; r++) {
        char label[64];
        snprintf(label, sizeof(label), "result=\"%s\"", callout_result_label((enum callout_result)r));
        metrics_value(out, "sluice_auth_callout_requests_total", label,
                      sum_at(s, true, offsetof(struct conn_stats, requests.callout.results) +
                                          (size_t)r * sizeof(atomic_uint_fast64_t)));
    }
    histogram(out, s, "sluice_auth_callout_duration_seconds", "Auth callout transfer time.", true,
              offsetof(struct conn_stats, requests.callout.latency));
    metrics_header(out, "sluice_auth_callout_cache_total", "counter",
                   "Auth callout cache lookups: hit, miss (of which coalesced joined a callout "
                   "in flight), evicted at auth-callout-cache-entries, revoked.");
    static const struct labelled cache[] = {
        {"result=\"hit\"", offsetof(struct conn_stats, requests.callout.cache_hits)},
        {"result=\"miss\"", offsetof(struct conn_stats, requests.callout.cache_misses)},
        {"result=\"coalesced\"", offsetof(struct conn_stats, requests.callout.coalesced)},
        {"result=\"evicted\"", offsetof(struct conn_stats, requests.callout.evicted)},
        {"result=\"revoked\"", offsetof(struct conn_stats, requests.callout.revoked)},
    };
    labelled_sums(out, s, "sluice_auth_callout_cache_total", cache, sizeof(cache) / sizeof(cache[0]));
    metric(out, "sluice_auth_callout_cached", "gauge", "Auth callout decisions cached.",
           CONNS(requests.callout.cached));
    metric(out, "sluice_auth_callout_queued", "gauge",
           "Auth callout questions waiting for a transfer slot.", CONNS(requests.callout.queued));
    metric(out, "sluice_auth_unavailable_total", "counter",
           "Requests the auth callout could not decide: SSE GETs got 200 with retry:, others 503.",
           CONNS(requests.auth_unavailable));
    metric(out, "sluice_auth_renewed_total", "counter",
           "Open streams whose callout grant was renewed at its expiry.",
           CONNS(requests.auth_renewed));
}

static void on_metrics(void *ctx, struct buf *out)
{
    struct server *s = ctx;
    metrics_header(out, "sluice_connections_open", "gauge",
                   "Client connections open, by protocol.");
    metrics_value(out, "sluice_connections_open", "protocol=\"h2\"", CONNS(open_h2));
    metrics_value(out, "sluice_connections_open", "protocol=\"http/1.1\"", CONNS(open_h1));
    metric(out, "sluice_connections_accepted_total", "counter", "Client connections accepted.",
           CONNS(accepted));
    metric(out, "sluice_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed (including refused ALPN).", CONNS(tls_failures));
    metric(out, "sluice_bytes_written_total", "counter",
           "Bytes written to clients (TLS payload: frames and bodies).", CONNS(bytes_written));
    histogram(out, s, "sluice_connection_age_seconds", "Connection lifetime, at close.", true,
              offsetof(struct conn_stats, age));

    metrics_header(out, "sluice_limit_hits_total", "counter",
                   "Limit breaches, by limit: what was refused, reset or closed.");
    static const struct labelled limits[] = {
        {"limit=\"connections\"", offsetof(struct conn_stats, refused)},
        {"limit=\"handshake_timeout\"", offsetof(struct conn_stats, handshake_timeouts)},
        {"limit=\"idle_timeout\"", offsetof(struct conn_stats, idle_timeouts)},
        {"limit=\"stream_rate\"", offsetof(struct conn_stats, requests.stream_rate)},
        {"limit=\"max_requests\"", offsetof(struct conn_stats, requests.requests)},
        {"limit=\"header_bytes\"", offsetof(struct conn_stats, requests.header_bytes)},
        {"limit=\"flood\"", offsetof(struct conn_stats, requests.flood)},
        {"limit=\"reserved_subject\"", offsetof(struct conn_stats, requests.reserved)},
        {"limit=\"host\"", offsetof(struct conn_stats, requests.host)},
        {"limit=\"unread_body\"", offsetof(struct conn_stats, requests.unread_body)},
        {"limit=\"subjects_per_connection\"", offsetof(struct conn_stats, requests.subjects)},
        {"limit=\"subscribe_rate\"", offsetof(struct conn_stats, requests.subscribe_rate)},
        {"limit=\"queue_bytes\"", offsetof(struct conn_stats, requests.queue_bytes)},
        {"limit=\"poll_bytes\"", offsetof(struct conn_stats, requests.poll_bytes)},
        {"limit=\"file_cache\"", offsetof(struct conn_stats, requests.file_cache)},
        {"limit=\"request_body\"", offsetof(struct conn_stats, requests.request_body)},
    };
    labelled_sums(out, s, "sluice_limit_hits_total", limits, sizeof(limits) / sizeof(limits[0]));
    /* Connections closed at accept (or at their PROXY header), and streams through a trusted
       proxy refused for their forwarded client: one limit. */
    metrics_value(out, "sluice_limit_hits_total", "limit=\"connections_per_address\"",
                  sum_at(s, true, offsetof(struct conn_stats, refused_per_address)) +
                      sum_at(s, true, offsetof(struct conn_stats, requests.per_address)));
    struct bus_stats bs;
    bus_stats(s->bus, &bs);
    /* Process-wide, counted by the bus: new patterns refused with every subscription watched. */
    metrics_value(out, "sluice_limit_hits_total", "limit=\"subscriptions\"",
                  (double)bs.subs_refused);
    const struct admission_stats *as = admission_stats(s->admission);
    metrics_value(out, "sluice_limit_hits_total", "limit=\"streams_total\"",
                  (double)atomic_load(&as->full));
    metrics_value(out, "sluice_limit_hits_total", "limit=\"stream_admission_rate\"",
                  (double)atomic_load(&as->rate));
    metrics_value(out, "sluice_limit_hits_total", "limit=\"jetstream_consumers\"",
                  (double)bs.js_limit_hits);
    const struct principal_stats *ps = principal_stats(s->principals);
    metrics_value(out, "sluice_limit_hits_total", "limit=\"streams_per_principal\"",
                  (double)atomic_load(&ps->full));
    metrics_value(out, "sluice_limit_hits_total", "limit=\"principal_stream_rate\"",
                  (double)atomic_load(&ps->rate));
    double inbox_drops = 0;
    for (size_t i = 0; i < s->nworkers; i++)
        inbox_drops += (double)worker_inbox_drops(s->workers[i]);
    metrics_value(out, "sluice_limit_hits_total", "limit=\"worker_inbox\"", inbox_drops);
    client_address_metrics(out, s);
    metric(out, "sluice_stream_capacity", "gauge",
           "max-streams-total: SSE streams the process admits at once (0: no cap).",
           (double)admission_max(s->admission));
    metric(out, "sluice_streams_admitted", "gauge",
           "SSE streams holding an admission slot (what max-streams-total caps).",
           (double)admission_open(s->admission));

    request_metrics(out, s);
    callout_metrics(out, s);

    metric(out, "sluice_streams_open", "gauge", "SSE streams open.", STREAMS(open));
    metric(out, "sluice_streams_opened_total", "counter", "SSE streams opened.", STREAMS(opened));
    metric(out, "sluice_streams_last_event_id_total", "counter",
           "Streams opened with a Last-Event-ID (the reconnect rate).", STREAMS(with_last_id));
    metrics_header(out, "sluice_streams_ended_total", "counter", "Streams ended, by reason.");
    for (int r = 0; r < STREAM_END_COUNT; r++) {
        char label[64];
        snprintf(label, sizeof(label), "reason=\"%s\"", stream_end_label((enum stream_end)r));
        metrics_value(out, "sluice_streams_ended_total", label,
                      sum_at(s, false,
                             offsetof(struct stream_stats, ended) +
                                 (size_t)r * sizeof(atomic_uint_fast64_t)));
    }
    metrics_header(out, "sluice_resumes_total", "counter",
                   "Streams opened with a Last-Event-ID, by outcome.");
    metrics_value(out, "sluice_resumes_total", "result=\"replayed\"", STREAMS(resumes));
    metrics_value(out, "sluice_resumes_total", "result=\"reset\"", STREAMS(resets));
    metric(out, "sluice_replayed_events_total", "counter",
           "Events queued to resuming streams, from memory or JetStream.",
           STREAMS(replayed_events));
    metric(out, "sluice_slow_consumer_cuts_total", "counter",
           "Streams ended because a queue cap was hit.", STREAMS(cut_slow));
    metric(out, "sluice_events_queued_total", "counter", "Events queued to streams.",
           STREAMS(events_queued));
    metric(out, "sluice_events_delivered_total", "counter", "Events written to streams in full.",
           STREAMS(delivered));
    metric(out, "sluice_stream_bytes_written_total", "counter",
           "SSE bytes handed to the protocol layer.", STREAMS(bytes_written));
    metric(out, "sluice_queued_bytes", "gauge", "Live event bytes waiting in stream queues.",
           STREAMS(bytes_queued));
    histogram(out, s, "sluice_stream_duration_seconds", "Stream lifetime.", false,
              offsetof(struct stream_stats, duration));
    histogram(out, s, "sluice_time_to_first_event_seconds",
              "From a stream's request to its first event written.", false,
              offsetof(struct stream_stats, first_event));

    metric(out, "sluice_nats_connected", "gauge", "1 while the NATS connection is up.",
           bs.connected);
    metric(out, "sluice_nats_reconnects_total", "counter", "NATS reconnections.",
           (double)bs.reconnects);
    metric(out, "sluice_nats_subscriptions", "gauge",
           "NATS subscriptions (one per distinct subject pattern, lingering ones included).",
           (double)bs.subscriptions);
    metric(out, "sluice_nats_subscriptions_evicted_total", "counter",
           "Lingering subscriptions dropped early to make room at max-subscriptions.",
           (double)bs.subs_evicted);
    metric(out, "sluice_nats_messages_total", "counter", "Messages received from NATS.",
           (double)bs.messages);
    metric(out, "sluice_nats_reserved_dropped_total", "counter",
           "Messages on reserved subjects ($..., _INBOX) dropped from wildcard subscriptions.",
           (double)bs.reserved_dropped);
    metric(out, "sluice_history_bytes", "gauge", "Bytes held in resume history.",
           (double)bs.history_bytes);
    metric(out, "sluice_jetstream_replays_total", "counter",
           "Replays from JetStream run (each may answer many resuming streams).",
           (double)bs.replays);
    metric(out, "sluice_jetstream_replay_failures_total", "counter",
           "JetStream replays that failed (NATS gone, a lost message, past their time): "
           "their streams got event: reset or ended with their id.",
           (double)bs.replay_failures);
    metric(out, "sluice_jetstream_replay_losses_total", "counter",
           "JetStream replays whose consumer twice delivered fewer messages than were stored "
           "(removed meanwhile, or skipped by the server): their streams got event: reset.",
           (double)bs.replay_losses);
    metric(out, "sluice_ds_jobs", "gauge",
           "Durable Streams operations queued or running on the DS threads (at most "
           "ds-max-inflight).",
           (double)bs.ds_jobs);
    metric(out, "sluice_jetstream_replay_requests_total", "counter",
           "Stream starts answered by a JetStream replay.", (double)bs.replay_requests);
    metric(out, "sluice_jetstream_replays_active", "gauge",
           "JetStream replays queued or running.", (double)bs.replays_active);
    metric(out, "sluice_jetstream_replayed_events_total", "counter",
           "Events fetched from JetStream by replays.", (double)bs.replayed_events);
    metric(out, "sluice_jetstream_consumers", "gauge",
           "JetStream consumers held: one per followed stream (made or queued) and replays'.",
           (double)bs.js_consumers);
    metric(out, "sluice_jetstream_consumer_resets_total", "counter",
           "Live JetStream consumers remade after a lost message or silence.",
           (double)bs.js_resets);
    metric(out, "sluice_jetstream_gaps_total", "counter",
           "Stream-sequence jumps a live JetStream consumer made, each filled from the stream.",
           (double)bs.js_gaps);
    metric(out, "sluice_jetstream_gap_events_total", "counter",
           "Messages fetched one by one from JetStream to fill those jumps.",
           (double)bs.js_gap_filled);

    metrics_header(out, "sluice_event_loop_lag_seconds", "gauge",
                   "How late each worker's loop last ran a 250 ms timer.");
    for (size_t i = 0; i < s->nworkers; i++) {
        char label[32];
        snprintf(label, sizeof(label), "worker=\"%zu\"", i);
        metrics_value(out, "sluice_event_loop_lag_seconds", label, worker_lag(s->workers[i]));
    }
    metrics_header(out, "sluice_worker_inbox_bytes", "gauge",
                   "NATS events waiting for each worker's loop, in bytes (worker-inbox-bytes).");
    for (size_t i = 0; i < s->nworkers; i++) {
        char label[32];
        snprintf(label, sizeof(label), "worker=\"%zu\"", i);
        metrics_value(out, "sluice_worker_inbox_bytes", label,
                      (double)worker_inbox_bytes(s->workers[i]));
    }
    metric(out, "sluice_draining", "gauge", "1 while draining for shutdown.",
           atomic_load(&s->draining));
    /* The signal thread's view, so that the gauge and the flip count agree. */
    metric(out, "sluice_ready", "gauge", "1 while /readyz answers 200 (checked every 100 ms).",
           atomic_load(&s->ready));
    metric(out, "sluice_readiness_changes_total", "counter",
           "Times /readyz's answer flipped (checked every 100 ms; the first ready counts one).",
           (double)atomic_load(&s->ready_changes));
}

/* SIGHUP: the certificate and key, and the log level, from the same sources as at start. */
static void reload(struct server *s, int argc, char **argv)
{
    struct config c;
    enum config_action action;
    char err[512];
    config_init(&c);
    if (config_parse_args(&c, argc, argv, &action, err, sizeof(err)) != 0) {
        log_error("SIGHUP: configuration not reloaded: %s", err);
        goto out;
    }
    /* The level first: a line after the certificate's (what an operator waits for) is at it. */
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (c.log_level != s->log_level)
        log_warn("SIGHUP: log level %s -> %s", names[s->log_level], names[c.log_level]);
    s->log_level = c.log_level;
    log_set_level(c.log_level);
    SSL_CTX *ctx = tls_ctx_new(c.cert_file, c.key_file, err, sizeof(err));
    if (!ctx) {
        log_error("SIGHUP: keeping the old certificate: %s", err);
    } else {
        tls_replace(s->tls, ctx);
        log_info("SIGHUP: certificate %s reloaded; new connections use it", c.cert_file);
    }
out:
    config_dispose(&c);
}

/* True for 127.0.0.0/8, ::1 and localhost listeners. */
static bool loopback(const char *hostport)
{
    return strncmp(hostport, "127.", 4) == 0 || strncmp(hostport, "[::1]:", 6) == 0 ||
           strncmp(hostport, "localhost:", 10) == 0;
}

/* Splits "a,b,c" into a NULL-terminated array of copies. */
static char **split_list(const char *list, size_t *n)
{
    char **out = mem_calloc(strlen(list) / 2 + 2, sizeof(*out));
    *n = 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        while (len && *p == ' ') {
            p++;
            len--;
        }
        if (len)
            out[(*n)++] = mem_strndup(p, len);
        p += len;
        if (*p == ',')
            p++;
    }
    return out;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* auth and cors from the configuration; 0 or an error logged. */
static int make_access_control(struct server *s)
{
    const struct config *cfg = s->cfg;
    char err[512];
    bool jwt = strcmp(cfg->auth, "jwt") == 0, callout = strcmp(cfg->auth, "callout") == 0;
    if (!jwt && !callout && !cfg->allow_anonymous &&
        (!loopback(cfg->listen) ||
         (strcmp(cfg->listen_plain, "off") != 0 && !loopback(cfg->listen_plain)))) {
        log_error("auth = none on a non-loopback listener: anyone could subscribe to anything; "
                  "use --auth jwt, or --allow-anonymous 1 to mean it");
        return -1;
    }
    if (!jwt && !callout && cfg->allow_anonymous)
        log_warn("auth = none with --allow-anonymous: every client may subscribe and publish "
                 "to every subject");
    size_t nkeys = 0, norigins = 0;
    char **keys = split_list(cfg->jwt_keys, &nkeys);
    char **origins = split_list(cfg->cors_origins, &norigins);
    struct auth_key_file *files = mem_calloc(nkeys + 1, sizeof(*files));
    for (size_t i = 0; i < nkeys; i++) {
        /* "kid:file"; a path with a ':' and no kid cannot be told apart, so kids have none. */
        char *colon = strchr(keys[i], ':');
        files[i].path = colon ? colon + 1 : keys[i];
        if (colon) {
            *colon = '\0';
            files[i].kid = keys[i];
        }
    }
    struct auth_params ap = {
        .mode = jwt ? AUTH_JWT : callout ? AUTH_CALLOUT : AUTH_NONE,
        .hs_secret_file = *cfg->jwt_secret_file ? cfg->jwt_secret_file : NULL,
        .keys = files,
        .nkeys = nkeys,
        .leeway_s = cfg->jwt_leeway_s,
        .audience = *cfg->jwt_audience ? cfg->jwt_audience : NULL,
        .issuer = *cfg->jwt_issuer ? cfg->jwt_issuer : NULL,
    };
    int rc = auth_new(&s->auth, &ap, err, sizeof(err));
    if (rc != 0)
        log_error("auth: %s", err);
    if (rc == 0 && (rc = reply_init(cfg, err, sizeof(err))) != 0)
        log_error("request streams: %s", err);
    if (rc == 0 && (rc = cors_new(&s->cors, (const char *const *)origins, norigins,
                                  cfg->cors_credentials != 0, err, sizeof(err))) != 0)
        log_error("cors-origins: %s", err);
    free(files);
    free_list(keys, nkeys);
    free_list(origins, norigins);
    return rc == 0 ? 0 : -1;
}

/* The signals the main thread takes: stop, reload, reopen. */
static void control_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
#ifdef SLUICE_TEST_HOOKS
    sigaddset(set, SIGUSR2);
#endif
}

static const char *signame(int sig)
{
    return sig == SIGTERM  ? "SIGTERM"
           : sig == SIGINT ? "SIGINT"
           : sig == SIGHUP ? "SIGHUP"
                           : "SIGUSR1";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The first stop signal: readiness off, listeners and their locks closed, streams ended. */
static void start_drain(struct server *s, int sig)
{
    notify_stopping("draining");
    log_info("%s: draining over %d ms (send it again to exit at once; exit is forced "
             "%d ms after the window)",
             signame(sig), s->cfg->drain_ms, SERVER_EXIT_SLACK_MS);
    for (size_t i = 0; i < s->nworkers; i++)
        worker_drain(s->workers[i], s->cfg->drain_ms);
    /* The listeners close now: a replacement gateway may take the port. */
    for (size_t i = 0; i < 2; i++) {
        if (s->locks[i] >= 0)
            close(s->locks[i]);
        s->locks[i] = -1;
    }
    /*
     * Last: the main thread's serve() returns, and frees the workers, only
     * once it sees draining; set earlier, it freed a worker this thread was
     * still telling to drain (a data race TSan caught at shutdown).
     */
    atomic_store(&s->draining, true);
}

/* Watchdog pings and readiness for systemd (see the top of the file). */
struct liveness {
    uint64_t watchdog_ms;  /* WATCHDOG_USEC / 1000; 0: no watchdog */
    int64_t last_ping_ms;  /* stream_now_ms() of the last WATCHDOG=1 */
    bool ready_sent;
    size_t stuck_logged;   /* 1 + the worker last logged as stuck; 0: none */
    int64_t running_ms;    /* when this thread first saw the server running */
};

/*
 * The index + 1 of a worker whose loop last went round before `before`
 * (0: none). A loop that has not gone round yet counts as going round at
 * `started`: a slow first turn is not yet a stuck loop.
 */
static size_t stuck_worker(const struct server *s, int64_t before, int64_t started)
{
    for (size_t i = 0; i < s->nworkers; i++) {
        int64_t alive = (int64_t)worker_alive_ms(s->workers[i]);
        if ((alive ? alive : started) < before)
            return i + 1;
    }
    return 0;
}

/*
 * Called from the signal thread every tick. The workers may be read while
 * running and not draining: the main thread frees them only after a drain
 * (which this thread starts) or a failed start (running never set).
 */
static void tend_liveness(struct server *s, struct liveness *l)
{
    if (!atomic_load(&s->running))
        return;
    int64_t now = stream_now_ms();
    if (!l->running_ms)
        l->running_ms = now;
    bool draining = atomic_load(&s->draining);
    const char *why = NULL;
    bool ready = on_ready(s, &why);
    if (ready != atomic_load(&s->ready)) {
        atomic_store(&s->ready, ready);
        atomic_fetch_add(&s->ready_changes, 1);
    }
    if (!l->ready_sent && !draining && bus_connected(s->bus) &&
        stuck_worker(s, 1, 0) == 0) {
        notify_ready(s->ready_status);
        l->ready_sent = true;
    }
    if (!l->watchdog_ms || now - l->last_ping_ms < (int64_t)l->watchdog_ms / 4)
        return;
    /*
     * While draining the exit deadline bounds the process instead: a loop
     * busy ending streams is no reason to be killed mid-drain.
     */
    int64_t limit = (int64_t)l->watchdog_ms / 2 > 1000 ? (int64_t)l->watchdog_ms / 2 : 1000;
    size_t stuck = draining ? 0 : stuck_worker(s, now - limit, l->running_ms);
    if (stuck) {
        if (stuck != l->stuck_logged)
            log_error("watchdog: worker %zu's loop has not gone round for over %lld ms; "
                      "not telling systemd it is alive",
                      stuck - 1, (long long)limit);
        l->stuck_logged = stuck;
        return;
    }
    l->stuck_logged = 0;
    notify_watchdog();
    l->last_ping_ms = now;
}

/*
 * The signal thread: takes every control signal, and enforces the exit
 * deadline. _exit() is the point: a thread stuck in a library call
 * cannot be unwound, and the drain has already ended what clients see.
 */
static void *on_signals(void *arg)
{
    struct server *s = arg;
    sigset_t set;
    control_signals(&set);
    double deadline = 0; /* monotonic s; 0 until the first stop signal */
    struct liveness live = {.watchdog_ms = notify_watchdog_usec() / 1000};
    while (!atomic_load(&s->done)) {
        struct timespec tick = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &tick);
        tend_liveness(s, &live);
#ifdef SLUICE_TEST_HOOKS
        if (sig == SIGUSR2) {
            if (atomic_load(&s->running) && !atomic_load(&s->draining))
                worker_stall(s->workers[0]);
            continue;
        }
#endif
        if (sig < 0) {
            if (deadline > 0 && now_s() >= deadline) {
                bool drained = atomic_load(&s->drained);
                log_error("shutdown not finished %d ms after the drain window (%s); exiting "
                          "now, within drain-ms + %d ms",
                          SERVER_EXIT_SLACK_MS - SERVER_EXIT_MARGIN_MS,
                          drained ? "clients were all served; releasing NATS resources hung"
                                  : "connections still open",
                          SERVER_EXIT_SLACK_MS);
                _exit(drained ? 0 : 1);
            }
            continue;
        }
        if (sig == SIGHUP || sig == SIGUSR1) {
            if (!atomic_load(&s->running))
                log_warn("%s during start-up: ignored", signame(sig));
            else if (sig == SIGHUP)
                reload(s, s->argc, s->argv);
            else if (access_reopen() != 0)
                log_error("SIGUSR1: cannot reopen the access log");
        } else if (!atomic_load(&s->running)) {
            log_warn("%s during start-up: exiting", signame(sig));
            _exit(1);
        } else if (deadline > 0) {
            log_info("%s again: exiting without waiting", signame(sig));
            _exit(0);
        } else {
            deadline = now_s() +
                       (s->cfg->drain_ms + SERVER_EXIT_SLACK_MS - SERVER_EXIT_MARGIN_MS) / 1000.0;
            start_drain(s, sig);
        }
    }
    return NULL;
}

/* The main thread while serving: sweeps NATS subscriptions until the drain is done. */
static void serve(struct server *s)
{
    for (;;) {
        nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
        if (atomic_load(&s->draining)) {
            bool all = true;
            for (size_t i = 0; i < s->nworkers; i++)
                all = all && worker_drained(s->workers[i]);
            if (all) {
                atomic_store(&s->drained, true);
                log_info("drained; exiting");
                return;
            }
        }
        bus_sweep(s->bus);
    }
}

/* Joins the signal thread (within its 100 ms tick); after this no signal touches s. */
static void stop_signals(struct server *s)
{
    if (!s->signals_started)
        return;
    atomic_store(&s->done, true);
    pthread_join(s->signals, NULL);
    s->signals_started = false;
}

int server_run(const struct config *cfg, int argc, char **argv)
{
    int code = 1;
    struct server s = {
        .cfg = cfg, .log_level = cfg->log_level, .argc = argc, .argv = argv, .locks = {-1, -1}};
    char *js_list = NULL; /* the bus's JetStream stream list; outlives the bus */
    size_t n = cfg->workers > 0 ? (size_t)cfg->workers : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
    s.nworkers = n < 1 ? 1 : n > 64 ? 64 : n;
    s.workers = mem_calloc(s.nworkers, sizeof(*s.workers));
    int *fds = mem_calloc(s.nworkers, sizeof(*fds));
    int *plain = mem_calloc(s.nworkers, sizeof(*plain));
    struct admin *admin = NULL;
    char err[512], bound[300], plain_bound[300] = "off", admin_bound[300] = "off";
    bool has_plain = strcmp(cfg->listen_plain, "off") != 0;

    /* Blocked before any thread exists, so every thread inherits the mask. */
    sigset_t set;
    control_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* First, so that a stop signal ends a start-up that hangs too. */
    if (pthread_create(&s.signals, NULL, on_signals, &s) != 0) {
        log_error("cannot start the signal thread");
        goto out;
    }
    s.signals_started = true;

    if (make_access_control(&s) != 0)
        goto out;
    /* libcurl's global state, before any worker thread could touch it. */
    if (strcmp(cfg->auth, "callout") == 0 && callout_global_init() != 0) {
        log_error("auth callout: cannot initialise libcurl");
        goto out;
    }
    SSL_CTX *ssl_ctx = tls_ctx_new(cfg->cert_file, cfg->key_file, err, sizeof(err));
    if (!ssl_ctx) {
        log_error("%s", err);
        goto out;
    }
    s.tls = tls_new(ssl_ctx);
    s.guard = guard_new((size_t)cfg->max_connections, (size_t)cfg->max_connections_per_address,
                        (unsigned)cfg->ipv6_prefix_bits);
    forwarded_nets_parse(cfg->trusted_proxies, &s.trusted, err, sizeof(err)); /* checked */
    s.principals = principal_new(&(struct principal_params){
        .max_open = (size_t)cfg->max_streams_per_principal,
        .rate = (unsigned)cfg->principal_stream_rate,
    });
    s.admission = admission_new(&(struct admission_params){
        .max_open = (size_t)cfg->max_streams_total,
        .rate = (unsigned)cfg->stream_admission_rate,
        .retry_min_ms = (unsigned)cfg->overload_retry_min_ms,
        .retry_max_ms = (unsigned)cfg->overload_retry_max_ms,
        .high_water_pct = SERVER_READY_HIGH_WATER_PCT,
    });
    if (access_open(cfg->access_log, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out_tls;
    }
    bool share = cfg->reuse_port != 0;
    if (net_listen(cfg->listen, fds, s.nworkers, share, &s.locks[0], bound, sizeof(bound), err,
                   sizeof(err)) != 0) {
        log_error("listen: %s", err);
        goto out_access;
    }
    for (size_t i = 0; i < s.nworkers; i++)
        plain[i] = -1;
    if (has_plain && net_listen(cfg->listen_plain, plain, s.nworkers, share, &s.locks[1],
                                plain_bound, sizeof(plain_bound), err, sizeof(err)) != 0) {
        log_error("listen-plain: %s", err);
        for (size_t i = 0; i < s.nworkers; i++)
            close(fds[i]);
        goto out_access;
    }
    size_t memory = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    size_t queue_total = cfg->process_queue_bytes ? cfg->process_queue_bytes : memory / 4;
    for (size_t i = 0; i < s.nworkers; i++)
        s.workers[i] = worker_new(i, cfg, s.tls, s.guard, s.auth, s.cors, s.admission,
                                  s.trusted, s.principals, fds[i], plain[i],
                                  queue_total / s.nworkers);
    char ds_subjects[80];
    snprintf(ds_subjects, sizeof(ds_subjects), "%s.>", cfg->ds_subject_prefix);
    /*
     * The Durable Streams route's SSE readers follow its stream through the
     * JetStream feed, whose event sequences are its offsets: it is always
     * among the JetStream streams.
     */
    js_list = *cfg->ds_base_path ? ds_jetstream_list(cfg->jetstream_streams, cfg->ds_stream)
                                 : mem_strdup(cfg->jetstream_streams);
    struct bus_params bp = {
        .url = cfg->nats_url,
        .nworkers = s.nworkers,
        .post = worker_post,
        .worker_ctxs = (void *const *)s.workers,
        .history_events = (size_t)cfg->history_events,
        .history_bytes = cfg->history_bytes,
        .history_total_bytes = cfg->history_total_bytes ? cfg->history_total_bytes : memory / 8,
        .keep_ms = cfg->history_keep_ms,
        .max_subs = (size_t)cfg->max_subscriptions,
        .jetstream = js_list,
        .replays = (size_t)cfg->jetstream_replays,
        .replay_max = (size_t)cfg->jetstream_replay_max,
        .max_consumers = (size_t)cfg->jetstream_max_consumers,
        .reply_prefix = cfg->request_reply_prefix,
        .control_subject = cfg->revoke_subject,
        .control = on_control,
        .control_ctx = &s,
        .ask_inboxes = *cfg->auth_callout_subject != '\0',
        .ds_stream = *cfg->ds_base_path ? cfg->ds_stream : NULL,
        .ds_subjects = ds_subjects,
        .ds_timeout_ms = cfg->ds_timeout_ms,
        .ds_max_inflight = (size_t)cfg->ds_max_inflight,
    };
    if (bus_new(&s.bus, &bp, err, sizeof(err)) != 0) {
        log_error("%s", err);
        goto out_workers;
    }
    if (strcmp(cfg->admin, "off") != 0) {
        struct admin_params ap = {cfg->admin, on_metrics, on_ready, &s, cfg->allowed_hosts,
                                  on_admin_revoke};
        if (admin_new(&admin, &ap, admin_bound, sizeof(admin_bound), err, sizeof(err)) != 0) {
            log_error("admin: %s", err);
            goto out_bus;
        }
    }
    for (size_t i = 0; i < s.nworkers; i++) {
        if (worker_start(s.workers[i], s.bus) != 0)
            goto out_stop;
    }
    log_info("sluice %s listening on https://%s (h2), plain %s%s, admin %s%s, %zu workers, "
             "nats %s, auth %s, max-streams %d, heartbeat %d ms%s",
             SLUICE_VERSION, bound, has_plain ? "on http://" : "", plain_bound,
             admin ? "on http://" : "", admin_bound, s.nworkers, cfg->nats_url, cfg->auth,
             cfg->max_streams, cfg->heartbeat_ms,
             share ? ", port shared with other gateways (--reuse-port 1)" : "");
    snprintf(s.ready_status, sizeof(s.ready_status), "serving https://%s%s%s, admin %s", bound,
             has_plain ? ", http://" : "", has_plain ? plain_bound : "", admin_bound);
    if (getenv("NOTIFY_SOCKET") && !notify_supported())
        log_warn("NOTIFY_SOCKET is set but this build has no libsystemd: systemd will not "
                 "hear that sluice is ready (use Type=simple, or build with libsystemd-dev)");
    atomic_store(&s.running, true);
    serve(&s);
    code = 0;
out_stop:
    for (size_t i = 0; i < s.nworkers; i++)
        worker_stop(s.workers[i]);
    admin_free(admin);
out_bus:
    bus_free(s.bus);
out_workers:
    for (size_t i = 0; i < s.nworkers; i++)
        worker_free(s.workers[i]);
out_access:
    stop_signals(&s);
    access_close();
out_tls:
    guard_free(s.guard);
    admission_free(s.admission);
    principal_free(s.principals);
    forwarded_nets_free(s.trusted);
    tls_free(s.tls);
out:
    stop_signals(&s);
    for (size_t i = 0; i < 2; i++)
        if (s.locks[i] >= 0)
            close(s.locks[i]);
    auth_free(s.auth);
    cors_free(s.cors);
    free(s.workers);
    free(fds);
    free(plain);
    free(js_list);
    return code;
}
