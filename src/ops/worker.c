/*
 * worker: event loop thread (see worker.h).
 *
 * Watchers: the listener (accept), the inbox (ev_async), the heartbeat
 * tick (ev_timer) and the flush (ev_prepare, run just before the loop
 * sleeps: every connection made dirty during this iteration is written
 * once, with everything it has ready, instead of once per event).
 *
 * Liveness: the flush also stamps the time (alive_ms) on every loop
 * iteration, so another thread can tell a loop that still turns from one
 * stuck inside a callback; the signal thread feeds systemd's watchdog
 * only while every worker's stamp is fresh (server.c). The lag timer
 * (every 250 ms) keeps an idle loop turning, so a fresh stamp never
 * needs traffic.
 */
#include "sluice/worker.h"

#include <errno.h>
#include <ev.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sluice/bus.h"
#include "sluice/callout.h"
#include "sluice/config.h"
#include "sluice/conn.h"
#include "sluice/ds_route.h"
#include "sluice/err.h"
#include "sluice/fanout.h"
#include "sluice/filecache.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/mem.h"
#include "sluice/net.h"
#include "sluice/revoke.h"
#include "sluice/stream.h"

#define ACCEPT_BUDGET 64 /* connections per wake-up */

struct worker {
    size_t index;
    const struct config *cfg;
    pthread_t thread;
    bool started;
    struct ev_loop *loop;
    int listen_fd;
    ev_io accept_io;
    int plain_fd;             /* -1 when there is no cleartext listener */
    bool proxy_tls, proxy_plain; /* proxy-protocol marks the listener */
    ev_io plain_io;
    ev_async inbox_async;
    ev_async stop_async;
    ev_prepare flush;
    ev_timer tick;
    ev_timer lag_timer;
    ev_tstamp lag_expected;   /* when lag_timer should fire */
    atomic_uint_fast64_t lag_us;
    atomic_uint_fast64_t alive_ms; /* stream_now_ms() of the last iteration; 0 before the first */
#ifdef SLUICE_TEST_HOOKS
    ev_async stall_async;
    atomic_bool stall_release; /* a drain or stop ends a test stall */
    atomic_bool stalled;       /* SIGUSR2 toggles it */
#endif
    ev_async drain_async;
    atomic_int drain_ms;      /* set before drain_async is sent */
    ev_timer drain_timer;
    ev_tstamp drain_start;
    ev_tstamp drain_end;      /* streams all ended by then */
    size_t drain_open;        /* streams open when the drain began */
    size_t drain_done;        /* streams the drain has ended so far */
    ev_tstamp drain_deadline; /* give up waiting for connections */
    bool drain_final_sent;
    atomic_bool drained;
    struct fanout *fanout;
    struct stream_env streams;
    struct conn_env env;

    pthread_mutex_t inbox_lock;
    struct bus_mail *inbox; /* under inbox_lock */
    size_t inbox_len, inbox_cap;
    size_t inbox_bytes;     /* under inbox_lock: what its events hold, up to worker-inbox-bytes */
    struct map *inbox_lost; /* under inbox_lock: sub ids with a BUS_MAIL_LOST in the inbox */
    atomic_uint_fast64_t inbox_drops;  /* events dropped past worker-inbox-bytes */
    atomic_int_fast64_t inbox_told_ms; /* the last log line about it, for one a second */
    struct bus_mail *draining; /* loop thread only: the swapped-out inbox */
    size_t draining_cap;
};

static void accept_some(struct worker *w, int listen_fd, bool tls, bool proxied)
{
    for (int i = 0; i < ACCEPT_BUDGET; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn("worker %zu: accept: %s", w->index, strerror(errno));
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        char peer[64], address[48];
        net_name((struct sockaddr *)&ss, peer, sizeof(peer));
        net_ip((struct sockaddr *)&ss, address, sizeof(address));
        conn_new(&w->env, fd, tls, proxied, address, peer);
    }
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(io, struct worker, accept_io);
    accept_some(w, w->listen_fd, true, w->proxy_tls);
}

static void on_accept_plain(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(io, struct worker, plain_io);
    accept_some(w, w->plain_fd, false, w->proxy_plain);
}

/* Ends this worker's matching streams and forgets its matching callout decisions. */
static void revoke_here(struct worker *w, const struct revoke *rv)
{
    /* The cache first: a client woken by its stream's end must be asked again. */
    size_t forgotten = w->env.requests.callout
                           ? callout_forget(w->env.requests.callout, rv->principal, rv->subject)
                           : 0;
    size_t ended = stream_env_revoke(&w->streams, rv->principal, rv->subject, rv->reason);
    if (ended || forgotten)
        log_info("worker %zu: revoked (principal %s, subject %s, reason %s): %zu streams ended, "
                 "%zu cached decisions dropped",
                 w->index, rv->principal ? rv->principal : "-", rv->subject ? rv->subject : "-",
                 rv->reason, ended, forgotten);
}

static void on_inbox(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, inbox_async);
    pthread_mutex_lock(&w->inbox_lock);
    struct bus_mail *mail = w->inbox;
    size_t n = w->inbox_len, cap = w->inbox_cap;
    w->inbox = w->draining;
    w->inbox_cap = w->draining_cap;
    w->inbox_len = 0;
    w->inbox_bytes = 0;
    if (map_count(w->inbox_lost)) {
        map_free(w->inbox_lost);
        w->inbox_lost = map_new();
    }
    pthread_mutex_unlock(&w->inbox_lock);
    w->draining = mail;
    w->draining_cap = cap;
    w->streams.now_ms = stream_now_ms(); /* once for the batch, not per stream */
    for (size_t i = 0; i < n; i++) {
        switch (mail[i].kind) {
        case BUS_MAIL_EVENT:
            fanout_deliver(w->fanout, mail[i].ev);
            sse_refs_drop(&w->streams.refs, mail[i].ev);
            break;
        case BUS_MAIL_READY:
        case BUS_MAIL_FAILED:
            fanout_confirm(w->fanout, mail[i].sub_id, mail[i].kind == BUS_MAIL_FAILED);
            break;
        case BUS_MAIL_REPLAY:
            fanout_replayed(w->fanout, mail[i].replay);
            break;
        case BUS_MAIL_REVOKE:
            revoke_here(w, mail[i].revoke);
            revoke_free(mail[i].revoke);
            break;
        case BUS_MAIL_ANSWER:
            if (w->env.requests.callout)
                callout_nats_answer(w->env.requests.callout, mail[i].answer);
            bus_answer_free(mail[i].answer);
            break;
        case BUS_MAIL_DS:
            ds_job_done(mail[i].ds_job);
            break;
        case BUS_MAIL_LOST:
            fanout_each(w->fanout, mail[i].sub_id, stream_on_lost);
            break;
        }
    }
    stream_env_flush(&w->streams);
}

static void on_flush(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(p, struct worker, flush);
    atomic_store_explicit(&w->alive_ms, (uint64_t)stream_now_ms(), memory_order_relaxed);
    while (!list_empty(&w->env.dirty))
        conn_flush(conn_of_dirty(w->env.dirty.next));
    /* Every iteration ends here: what the streams released is freed now, not later. */
    stream_env_flush(&w->streams);
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(t, struct worker, tick);
    stream_env_tick(&w->streams, stream_now_ms());
    request_env_tick(&w->env.requests, stream_now_ms());
    mem_trim(stream_now_s()); /* after a burst, or connections closing: free pages back to the kernel */
}

#define LAG_INTERVAL 0.25
#define DRAIN_TICK 0.1
#define WORKER_DRAIN_GRACE_S 3.0 /* connections may take this long past the window to close */

static void on_lag(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = container_of(t, struct worker, lag_timer);
    ev_tstamp now = ev_time();
    double lag = now > w->lag_expected ? now - w->lag_expected : 0;
    atomic_store_explicit(&w->lag_us, (uint64_t)(lag * 1e6), memory_order_relaxed);
    w->lag_expected = now + LAG_INTERVAL;
    ev_timer_set(t, LAG_INTERVAL, 0);
    ev_timer_start(loop, t);
}

static void on_drain_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = container_of(t, struct worker, drain_timer);
    ev_tstamp now = ev_now(loop);
    size_t open = stream_env_open(&w->streams);
    if (open && now < w->drain_end) {
        /*
         * Evenly over the window: by now, this share of the streams open at
         * the start should have ended (streams opened since go at the end).
         */
        double share = (now - w->drain_start) / (w->drain_end - w->drain_start);
        size_t due = (size_t)((double)w->drain_open * share + 0.999);
        if (due > w->drain_done) {
            int window = atomic_load(&w->drain_ms);
            size_t batch = due - w->drain_done;
            stream_env_end_some(&w->streams, batch, STREAM_END_DRAIN, 1000,
                                window > 1000 ? (unsigned)window : 1000);
            w->drain_done += batch;
        }
    } else if (open) {
        stream_env_end_some(&w->streams, open, STREAM_END_DRAIN, 1000, 1000);
    }
    if (!w->drain_final_sent && stream_env_open(&w->streams) == 0) {
        w->drain_final_sent = true;
        for (struct list *n = w->env.all.next; n != &w->env.all; n = n->next)
            conn_drain_final(conn_of_node(n));
    }
    if (list_empty(&w->env.all) || now >= w->drain_deadline) {
        atomic_store(&w->drained, true);
        ev_timer_stop(loop, t);
    }
}

static void on_drain(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct worker *w = container_of(a, struct worker, drain_async);
    if (w->listen_fd < 0)
        return;
    ev_io_stop(loop, &w->accept_io);
    close(w->listen_fd);
    w->listen_fd = -1;
    if (w->plain_fd >= 0) {
        ev_io_stop(loop, &w->plain_io);
        close(w->plain_fd);
        w->plain_fd = -1;
    }
    for (struct list *n = w->env.all.next, *next; n != &w->env.all; n = next) {
        next = n->next;
        conn_drain_notice(conn_of_node(n));
    }
    double window = atomic_load(&w->drain_ms) / 1000.0;
    w->drain_start = ev_now(loop);
    w->drain_end = w->drain_start + (window > 0 ? window : 0.001);
    w->drain_open = stream_env_open(&w->streams);
    /* Before the process's own exit deadline (window + 5 s), leaving it time to tear down. */
    w->drain_deadline = w->drain_end + WORKER_DRAIN_GRACE_S;
    ev_timer_init(&w->drain_timer, on_drain_tick, 0, DRAIN_TICK);
    ev_timer_start(loop, &w->drain_timer);
}

#ifdef SLUICE_TEST_HOOKS
/* Test hook: the loop stops turning, as if a callback were stuck, until a drain or stop. */
static void on_stall(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = container_of(a, struct worker, stall_async);
    log_warn("worker %zu: stalled by the test hook (SIGUSR2) until the next one or a stop signal",
             w->index);
    while (atomic_load(&w->stalled) && !atomic_load(&w->stall_release))
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    log_warn("worker %zu: the test hook's stall ends", w->index);
}

void worker_stall(struct worker *w)
{
    if (!atomic_exchange(&w->stalled, true))
        ev_async_send(w->loop, &w->stall_async);
    else
        atomic_store(&w->stalled, false); /* the second SIGUSR2 lets the loop go on */
}
#endif

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct worker *w = container_of(a, struct worker, stop_async);
    while (!list_empty(&w->env.all))
        conn_free(conn_of_node(w->env.all.next));
    ev_break(loop, EVBREAK_ALL);
}

/* Counts an event dropped past worker-inbox-bytes; says so at most once a second. */
static void dropped(struct worker *w, uint64_t sub_id, size_t waiting)
{
    atomic_fetch_add_explicit(&w->inbox_drops, 1, memory_order_relaxed);
    int_fast64_t now = stream_now_ms(), told = atomic_load(&w->inbox_told_ms);
    if (now - told >= 1000 && atomic_compare_exchange_strong(&w->inbox_told_ms, &told, now))
        log_warn("worker %zu: %zu bytes of NATS events wait for its loop (worker-inbox-bytes): "
                 "dropping those of subscription %" PRIu64 " here; its streams end and resume "
                 "from history",
                 w->index, waiting, sub_id);
}

/*
 * Appends one piece of mail; the first of a batch wakes the loop. An
 * event that would take the inbox past worker-inbox-bytes (a loop that
 * cannot keep up with NATS, or stalled) is dropped instead, never
 * silently: the first drop of a subscription in a batch is mail of its
 * own (BUS_MAIL_LOST), after every event of it the inbox holds, which
 * ends its streams here; their clients resume from history, which the
 * bus filled before handing the event out. An inbox without events takes
 * any one event, however large.
 */
void worker_post(void *ctx, struct bus_mail m)
{
    struct worker *w = ctx;
    size_t cost = m.kind == BUS_MAIL_EVENT ? sizeof(*m.ev) + m.ev->len : 0;
    uint64_t lost = 0;
    size_t waiting = 0;
    pthread_mutex_lock(&w->inbox_lock);
    if (cost && w->inbox_bytes && w->inbox_bytes + cost > w->cfg->worker_inbox_bytes) {
        lost = m.ev->sub_id;
        waiting = w->inbox_bytes;
        sse_event_unref(m.ev);
        if (map_get(w->inbox_lost, &lost, sizeof(lost))) {
            pthread_mutex_unlock(&w->inbox_lock);
            dropped(w, lost, waiting);
            return; /* its BUS_MAIL_LOST is in the inbox already */
        }
        map_put(w->inbox_lost, &lost, sizeof(lost), w);
        m = (struct bus_mail){.kind = BUS_MAIL_LOST, .sub_id = lost};
        cost = 0;
    }
    w->inbox_bytes += cost;
    if (w->inbox_len == w->inbox_cap) {
        w->inbox_cap = w->inbox_cap ? w->inbox_cap * 2 : 256;
        w->inbox = mem_realloc(w->inbox, w->inbox_cap * sizeof(*w->inbox));
    }
    w->inbox[w->inbox_len++] = m;
    bool first = w->inbox_len == 1;
    pthread_mutex_unlock(&w->inbox_lock);
    if (lost)
        dropped(w, lost, waiting);
    /* One wake per batch: ev_async_send coalesces, but skipping the call is cheaper still. */
    if (first)
        ev_async_send(w->loop, &w->inbox_async);
}

struct worker *worker_new(size_t index, const struct config *cfg, struct tls *tls,
                          struct guard *guard, const struct auth *auth, const struct cors *cors,
                          struct admission *admission, const struct forwarded_nets *trusted,
                          struct principals *principals, int listen_fd, int plain_fd,
                          size_t queue_bytes)
{
    struct worker *w = mem_calloc(1, sizeof(*w));
    w->index = index;
    w->cfg = cfg;
    w->listen_fd = listen_fd;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    pthread_mutex_init(&w->inbox_lock, NULL);
    w->inbox_lost = map_new();
    stream_env_init(&w->streams, NULL, cfg->heartbeat_ms, queue_bytes);
    w->env.loop = w->loop;
    w->env.tls = tls;
    w->env.guard = guard;
    w->env.requests.auth = auth;
    w->env.requests.cors = cors;
    w->env.requests.stats = &w->env.stats.requests;
    w->env.requests.worker = index;
    w->env.requests.admission = admission;
    w->env.requests.trusted = trusted;
    w->env.requests.guard = guard;
    w->env.requests.principals = principals;
    /* Checked by config_check() before any worker exists. */
    config_proxy_protocol(cfg, &w->proxy_tls, &w->proxy_plain);
    list_init(&w->env.all);
    list_init(&w->env.dirty);
    w->env.requests.cfg = cfg;
    w->env.requests.streams = &w->streams;
    w->env.requests.files = filecache_new(cfg->file_cache_bytes);
    w->env.requests.cancels = mem_calloc(1, sizeof(*w->env.requests.cancels));
    if (strcmp(cfg->auth, "callout") == 0) {
        struct callout_params cp = {
            .url = *cfg->auth_callout_url ? cfg->auth_callout_url : NULL,
            .subject = *cfg->auth_callout_subject ? cfg->auth_callout_subject : NULL,
            .post = strcmp(cfg->auth_callout_method, "POST") == 0,
            .timeout_ms = cfg->auth_callout_timeout_ms,
            .connect_timeout_ms = cfg->auth_callout_connect_timeout_ms,
            .max_inflight = (size_t)cfg->auth_callout_max_inflight,
            .max_queue = (size_t)cfg->auth_callout_max_queue,
            .cache_entries = (size_t)cfg->auth_callout_cache_entries,
            .cache_ttl_s = cfg->auth_callout_cache_ttl_s,
            .negative_ttl_s = cfg->auth_callout_negative_ttl_s,
        };
        char err[256];
        /* The URL was checked at start-up (server.c): this cannot fail then. */
        if (callout_new(&w->env.requests.callout, w->loop, &cp, &w->env.stats.requests.callout,
                        err, sizeof(err)) != 0)
            log_error("worker %zu: auth callout: %s", index, err);
    }

    ev_io_init(&w->accept_io, on_accept, listen_fd, EV_READ);
    ev_io_start(w->loop, &w->accept_io);
    w->plain_fd = plain_fd;
    if (plain_fd >= 0) {
        ev_io_init(&w->plain_io, on_accept_plain, plain_fd, EV_READ);
        ev_io_start(w->loop, &w->plain_io);
    }
    ev_async_init(&w->inbox_async, on_inbox);
    ev_async_start(w->loop, &w->inbox_async);
    ev_async_init(&w->stop_async, on_stop);
    ev_async_start(w->loop, &w->stop_async);
    ev_prepare_init(&w->flush, on_flush);
    ev_prepare_start(w->loop, &w->flush);
    /*
     * A tenth of the heartbeat, and at most 250 ms: heartbeats go out at
     * most 10% late, token expiries and poll timeouts within a quarter second.
     */
    double tick = cfg->heartbeat_ms / 10000.0;
    if (tick > 0.25)
        tick = 0.25;
    ev_timer_init(&w->tick, on_tick, tick, tick);
    ev_timer_start(w->loop, &w->tick);
    ev_timer_init(&w->lag_timer, on_lag, LAG_INTERVAL, 0);
    ev_timer_start(w->loop, &w->lag_timer);
    w->lag_expected = ev_time() + LAG_INTERVAL;
    ev_async_init(&w->drain_async, on_drain);
    ev_async_start(w->loop, &w->drain_async);
#ifdef SLUICE_TEST_HOOKS
    ev_async_init(&w->stall_async, on_stall);
    ev_async_start(w->loop, &w->stall_async);
#endif
    return w;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    ev_run(w->loop, 0);
    return NULL;
}

int worker_start(struct worker *w, struct bus *bus)
{
    /* The fan-out reaches NATS only through this interface: the core never calls the bus. */
    struct fanout_source src;
    if (bus)
        bus_fanout_source(bus, &src);
    w->fanout = fanout_new(bus ? &src : NULL, w->index, stream_on_event, stream_on_ready,
                           stream_on_replayed);
    w->env.requests.bus = bus;
    if (w->env.requests.callout)
        callout_attach_bus(w->env.requests.callout, bus, w->index);
    w->streams.fanout = w->fanout;
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
        log_error("worker %zu: cannot start thread: %s", w->index, strerror(errno));
        return ERR_IO;
    }
    w->started = true;
    return 0;
}

void worker_stop(struct worker *w)
{
    if (!w->started)
        return;
#ifdef SLUICE_TEST_HOOKS
    atomic_store(&w->stall_release, true);
#endif
    ev_async_send(w->loop, &w->stop_async);
    pthread_join(w->thread, NULL);
    w->started = false;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    while (!list_empty(&w->env.all))
        conn_free(conn_of_node(w->env.all.next));
    stream_env_flush(&w->streams); /* the loop thread has ended: this thread owns it now */
    for (size_t i = 0; i < w->inbox_len; i++) {
        if (w->inbox[i].kind == BUS_MAIL_EVENT)
            sse_event_unref(w->inbox[i].ev);
        else if (w->inbox[i].kind == BUS_MAIL_REPLAY)
            bus_replay_free(w->inbox[i].replay);
        else if (w->inbox[i].kind == BUS_MAIL_REVOKE)
            revoke_free(w->inbox[i].revoke);
        else if (w->inbox[i].kind == BUS_MAIL_ANSWER)
            bus_answer_free(w->inbox[i].answer);
        else if (w->inbox[i].kind == BUS_MAIL_DS)
            ds_job_done(w->inbox[i].ds_job); /* its request went with the connections above */
    }
    conn_env_dispose(&w->env);
    free(w->inbox);
    free(w->draining);
    map_free(w->inbox_lost);
    fanout_free(w->fanout);
    request_env_dispose(&w->env.requests);
    callout_free(w->env.requests.callout); /* after the connections: their requests cancelled */
    filecache_free(w->env.requests.files); /* after the connections: their responses held entries */
    ev_loop_destroy(w->loop);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    if (w->plain_fd >= 0)
        close(w->plain_fd);
    pthread_mutex_destroy(&w->inbox_lock);
    free(w);
}

const struct stream_stats *worker_stream_stats(const struct worker *w) { return &w->streams.stats; }
const struct conn_stats *worker_conn_stats(const struct worker *w) { return &w->env.stats; }

size_t worker_inbox_bytes(struct worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    size_t n = w->inbox_bytes;
    pthread_mutex_unlock(&w->inbox_lock);
    return n;
}

uint64_t worker_inbox_drops(const struct worker *w)
{
    return atomic_load_explicit(&w->inbox_drops, memory_order_relaxed);
}

double worker_lag(const struct worker *w)
{
    return (double)atomic_load_explicit(&w->lag_us, memory_order_relaxed) / 1e6;
}

void worker_drain(struct worker *w, int drain_ms)
{
#ifdef SLUICE_TEST_HOOKS
    atomic_store(&w->stall_release, true);
#endif
    atomic_store(&w->drain_ms, drain_ms);
    ev_async_send(w->loop, &w->drain_async);
}

bool worker_drained(const struct worker *w) { return atomic_load(&w->drained); }

uint64_t worker_alive_ms(const struct worker *w)
{
    return atomic_load_explicit(&w->alive_ms, memory_order_relaxed);
}
