/*
 * callout: the auth service, asked through libcurl's multi interface on a
 * worker's libev loop (see callout.h for the contract and the cache).
 *
 * Shape of one question: a cache key is made (salted SHA-256 of what the
 * service is shown); a cached, unexpired decision answers at once; a key
 * already in flight gets one more waiter; otherwise a new entry is made
 * and either started (below max_inflight) or queued (below max_queue).
 * When its transfer completes, the entry's answer is decided once
 * (status, body -> auth_grant_from_callout), handed to every waiter still
 * attached, and the entry is kept in the LRU (a grant or a 401/403) or
 * dropped (a failure).
 *
 * The loop glue is libcurl's documented event-driven pattern (its
 * hiperfifo example): libcurl tells us which sockets to watch
 * (on_curl_socket -> ev_io) and when to call it back (on_curl_timer ->
 * ev_timer); each wake calls curl_multi_socket_action() and then reaps
 * finished transfers. libcurl's timer callback is called from inside
 * libcurl calls, so it only arms the ev_timer and never calls back into
 * libcurl itself.
 *
 * Hostile input: the service's body is read into a buffer of at most
 * AUTH_CALLOUT_BODY_MAX bytes (a longer one aborts the transfer: a bad
 * answer); client header values holding CR, LF or NUL never reach it
 * (the request pipeline refuses them first).
 */
#include "sluice/callout.h"

#include <curl/curl.h>
#include <ev.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/auth.h"
#include "sluice/buf.h"
#include "sluice/bus.h"
#include "sluice/err.h"
#include "sluice/json.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "sluice/map.h"
#include "sluice/mem.h"
#include "sluice/stream.h"
#include "sluice/subject.h"

#define KEY_LEN 32 /* SHA-256 */

/* E_ORPHAN: answered and not kept, in no list and not in the map; freed by its completion. */
enum entry_state { E_QUEUED, E_FLIGHT, E_DONE, E_ORPHAN };

struct entry {
    struct callout *co;
    unsigned char key[KEY_LEN];
    enum entry_state state;
    struct list node;          /* in co->queue, co->flight or co->lru by state; E_ORPHAN: none */
    struct list waiters;       /* struct callout_wait.node, until answered */
    CURL *easy;                /* E_FLIGHT over HTTP */
    uint64_t ask_id;           /* E_FLIGHT over NATS: the bus_ask() id; 0 otherwise */
    ev_timer deadline;         /* over NATS: timeout_ms after the ask (0 s: the ask failed) */
    bool ask_failed;           /* over NATS: bus_ask() refused (NATS down): unreachable */
    struct curl_slist *headers;
    char *body;                /* POST body, NUL-terminated; NULL with GET */
    struct buf answer;         /* the service's body so far; <= AUTH_CALLOUT_BODY_MAX + 1 */
    bool too_long;
    double started_s;
    int64_t expires_ms;        /* E_DONE: stream_now_ms() clock */
    bool nocache;              /* revoked while in flight: deliver, do not keep */
    struct callout_answer result; /* E_DONE: grant is the entry's own reference */
};

struct callout_wait {
    struct list node; /* in entry.waiters, or in complete()'s list while it answers */
    struct entry *e;  /* NULL once complete() has taken the waiter off its entry */
    callout_done_fn *done;
    void *ctx;
};

struct sock {
    struct callout *co;
    ev_io io;
};

struct callout {
    struct callout_params p;   /* url copied */
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;
    struct callout_stats *stats;
    struct map *entries;       /* key -> struct entry *, every state */
    struct list lru;           /* E_DONE entries, least recently used first */
    size_t ndone;
    struct list queue;         /* E_QUEUED entries, oldest first */
    size_t nqueued;
    struct list flight;        /* E_FLIGHT entries */
    size_t inflight;
    unsigned char salt[16];    /* keys are unguessable: no chosen collisions in the map */
    struct bus *bus;           /* NATS variant: asked through; NULL over HTTP */
    size_t worker;
    uint64_t next_ask;         /* last bus_ask() id */
    int64_t logged_ms;         /* last failure logged (stream_now_ms()); 0: none yet */
    uint64_t unlogged;         /* failures since, not logged */
};

static const char *const result_labels[CALLOUT_RESULT_COUNT] = {
    "granted", "denied_401", "denied_403", "error", "bad_answer", "timeout", "unreachable",
    "refused",
};

const char *callout_result_label(enum callout_result r)
{
    return r < CALLOUT_RESULT_COUNT ? result_labels[r] : "unknown";
}

int callout_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == 0 ? 0 : ERR_IO; }

/* ---- the cache ---- */

static void make_key(const struct callout *co, const struct callout_query *q,
                     unsigned char key[KEY_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, co->salt, sizeof(co->salt));
    /* Each part with its length and a separator: "a" + "bc" never equals "ab" + "c". */
#define PART(s)                                                                                    \
    do {                                                                                           \
        const char *part_ = (s) ? (s) : "";                                                        \
        uint64_t n_ = strlen(part_);                                                               \
        EVP_DigestUpdate(md, &n_, sizeof(n_));                                                     \
        EVP_DigestUpdate(md, part_, n_);                                                           \
    } while (0)
    PART(q->action);
    PART(q->client);
    for (size_t i = 0; i < q->nsubjects; i++)
        PART(q->subjects[i]);
    PART("|");
    for (size_t i = 0; i < 2 * q->nheaders; i++)
        PART(q->headers[i]);
#undef PART
    EVP_DigestFinal_ex(md, key, NULL);
    EVP_MD_CTX_free(md);
}

static void entry_free(struct entry *e)
{
    struct callout *co = e->co;
    if (e->state != E_ORPHAN) {
        map_del(co->entries, e->key, KEY_LEN);
        list_remove(&e->node);
    }
    if (e->state == E_DONE) {
        co->ndone--;
        metrics_add(&co->stats->cached, -1);
    } else if (e->state == E_QUEUED) {
        co->nqueued--;
        metrics_add(&co->stats->queued, -1);
    }
    ev_timer_stop(co->loop, &e->deadline);
    if (e->easy) {
        if (e->state == E_FLIGHT) {
            curl_multi_remove_handle(co->multi, e->easy);
            co->inflight--;
        }
        curl_easy_cleanup(e->easy);
    }
    else if (e->state == E_FLIGHT && e->ask_id)
        co->inflight--;
    curl_slist_free_all(e->headers);
    free(e->body);
    buf_dispose(&e->answer);
    auth_grant_free(e->result.grant);
    free(e);
}

/* The least recently used decisions go until there is room for one more. */
static void make_room(struct callout *co)
{
    while (co->ndone > 0 && co->ndone >= co->p.cache_entries) {
        entry_free(container_of(co->lru.next, struct entry, node));
        metrics_add(&co->stats->evicted, 1);
    }
}

/* A copy of e's answer for one receiver (its own grant reference). */
static void copy_answer(const struct entry *e, struct callout_answer *out)
{
    *out = e->result;
    out->grant = auth_grant_ref(e->result.grant);
}

/* ---- the transfer ---- */

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    struct entry *e = user;
    size_t len = size * n;
    if (e->answer.len + len > AUTH_CALLOUT_BODY_MAX) {
        e->too_long = true;
        return 0; /* libcurl aborts the transfer (CURLE_WRITE_ERROR) */
    }
    buf_append(&e->answer, data, len);
    return len;
}

/* "name: value" into list; false when it holds a byte a header line cannot. */
static bool add_header(struct curl_slist **list, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = mem_alloc(n);
    snprintf(line, n, "%s: %s", name, value);
    bool ok = !strpbrk(line, "\r\n");
    if (ok)
        *list = curl_slist_append(*list, line);
    free(line);
    return ok;
}

/* The JSON description that POST sends (and the NATS variant would). */
static char *describe(const struct callout_query *q)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "{\"method\":", 10);
    json_put_string(&b, q->method, strlen(q->method));
    buf_append(&b, ",\"path\":", 8);
    json_put_string(&b, q->path, strlen(q->path));
    buf_append(&b, ",\"action\":", 10);
    json_put_string(&b, q->action, strlen(q->action));
    buf_append(&b, ",\"subjects\":[", 13);
    for (size_t i = 0; i < q->nsubjects; i++) {
        if (i)
            buf_append(&b, ",", 1);
        json_put_string(&b, q->subjects[i], strlen(q->subjects[i]));
    }
    buf_append(&b, "],\"client\":", 11);
    json_put_string(&b, q->client, strlen(q->client));
    buf_append(&b, ",\"headers\":{", 12);
    for (size_t i = 0; i < q->nheaders; i++) {
        if (i)
            buf_append(&b, ",", 1);
        json_put_string(&b, q->headers[2 * i], strlen(q->headers[2 * i]));
        buf_append(&b, ":", 1);
        json_put_string(&b, q->headers[2 * i + 1], strlen(q->headers[2 * i + 1]));
    }
    buf_append(&b, "}}", 3); /* NUL included, not counted below */
    return (char *)b.data;
}

/* Sets e up for its transfer: the URL, the headers that carry q, the timeouts. */
static void prepare(struct entry *e, const struct callout_query *q)
{
    struct callout *co = e->co;
    if (co->p.subject) {
        e->body = describe(q);
        return;
    }
    char subjects[2048] = "";
    size_t used = 0;
    for (size_t i = 0; i < q->nsubjects; i++) {
        int k = snprintf(subjects + used, sizeof(subjects) - used, "%s%s", i ? "," : "",
                         q->subjects[i]);
        if (k < 0 || (size_t)k >= sizeof(subjects) - used)
            break;
        used += (size_t)k;
    }
    /* nginx auth_request's names for what the subrequest stands for. */
    add_header(&e->headers, "X-Original-Method", q->method);
    add_header(&e->headers, "X-Original-URI", q->path);
    add_header(&e->headers, "X-Real-IP", q->client);
    add_header(&e->headers, "X-Sluice-Action", q->action);
    add_header(&e->headers, "X-Sluice-Subjects", subjects);
    for (size_t i = 0; i < q->nheaders; i++)
        add_header(&e->headers, q->headers[2 * i], q->headers[2 * i + 1]);
    /* No "Expect: 100-continue" round trip for a small POST body. */
    e->headers = curl_slist_append(e->headers, "Expect:");
    CURL *h = e->easy = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, co->p.url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->headers);
    curl_easy_setopt(h, CURLOPT_PRIVATE, e);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, e);
    /* Signals would hit any thread; libcurl's threaded resolver keeps DNS off the loop. */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)co->p.timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)co->p.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    /* The service is internal: an http_proxy in the environment must not reroute credentials. */
    curl_easy_setopt(h, CURLOPT_PROXY, "");
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice-callout");
    if (co->p.post) {
        e->body = describe(q);
        e->headers = curl_slist_append(e->headers, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->headers);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, e->body);
    }
}

static void start(struct entry *e)
{
    struct callout *co = e->co;
    e->state = E_FLIGHT;
    e->started_s = stream_now_s();
    co->inflight++;
    list_insert_tail(&co->flight, &e->node);
    if (co->p.subject) {
        e->ask_id = ++co->next_ask;
        e->ask_failed = !co->bus || bus_ask(co->bus, co->worker, co->p.subject, e->ask_id,
                                            e->body, strlen(e->body)) != 0;
        /* A refused ask is answered from the loop too: never from inside callout_ask(). */
        ev_timer_set(&e->deadline, e->ask_failed ? 0 : co->p.timeout_ms / 1000.0, 0);
        ev_timer_start(co->loop, &e->deadline);
        return;
    }
    /* Never called from inside a libcurl callback, so this cannot be a recursive call. */
    CURLMcode rc = curl_multi_add_handle(co->multi, e->easy);
    if (rc != CURLM_OK)
        log_error("auth callout: cannot start a transfer: %s", curl_multi_strerror(rc));
}

/* Starts queued questions while there is a free transfer slot. */
static void start_queued(struct callout *co)
{
    while (co->inflight < co->p.max_inflight && !list_empty(&co->queue)) {
        struct entry *e = container_of(co->queue.next, struct entry, node);
        list_remove(&e->node);
        co->nqueued--;
        metrics_add(&co->stats->queued, -1);
        start(e);
    }
}

static enum callout_result classify(struct entry *e, CURLcode rc, long status, int64_t *ttl_s)
{
    *ttl_s = -1;
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return CALLOUT_TIMEOUT;
    if (rc == CURLE_WRITE_ERROR && e->too_long) {
        e->result.reason = "callout answer too large";
        return CALLOUT_BAD_ANSWER;
    }
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST || status == 0)
        return CALLOUT_UNREACHABLE;
    if (rc != CURLE_OK)
        return CALLOUT_ERROR;
    if (status == 401)
        return CALLOUT_DENIED_401;
    if (status == 403)
        return CALLOUT_DENIED_403;
    if (status < 200 || status > 299)
        return CALLOUT_ERROR;
    const char *why = NULL;
    if (auth_grant_from_callout((const char *)e->answer.data, e->answer.len,
                                (int64_t)time(NULL), &e->result.grant, ttl_s, &why) != 0) {
        e->result.reason = why;
        return CALLOUT_BAD_ANSWER;
    }
    return CALLOUT_GRANTED;
}

static const char *const reasons[CALLOUT_RESULT_COUNT] = {
    "granted",
    "the auth service refused the credential (401)",
    "the auth service refused the request (403)",
    "the auth service failed",
    "the auth service's answer is invalid",
    "the auth service did not answer in time",
    "the auth service is unreachable",
    "too many authorizations waiting",
};

/* How long e's decision may be cached, in ms; 0: not at all. */
static int64_t keep_ms(const struct callout *co, const struct entry *e, int64_t ttl_s)
{
    if (e->nocache || co->p.cache_entries == 0)
        return 0;
    if (e->result.result == CALLOUT_DENIED_401 || e->result.result == CALLOUT_DENIED_403)
        return (int64_t)co->p.negative_ttl_s * 1000;
    if (e->result.result != CALLOUT_GRANTED)
        return 0;
    int64_t ttl = ttl_s >= 0 ? ttl_s : co->p.cache_ttl_s;
    int64_t expires = auth_grant_expires(e->result.grant);
    if (expires > 0) {
        int64_t left = expires - (int64_t)time(NULL);
        if (left < ttl)
            ttl = left > 0 ? left : 0;
    }
    return ttl * 1000;
}

/*
 * One warning a second at most, naming how many failures it stands for:
 * a dead service under a reconnect storm must not flood the log.
 */
static void log_failure(struct callout *co, const char *reason, const char *detail, long status,
                        double took)
{
    int64_t now = stream_now_ms();
    if (co->logged_ms && now - co->logged_ms < 1000) {
        co->unlogged++;
        return;
    }
    log_warn("auth callout: %s (%s, status %ld, %.0f ms; %" PRIu64 " more failures since the "
             "last line)", reason, detail, status, took * 1000, co->unlogged);
    co->logged_ms = now;
    co->unlogged = 0;
}

/* e's answer is r: count it, answer every waiter, keep or drop the decision. */
static void finish(struct entry *e, enum callout_result r, int64_t ttl_s, const char *detail,
                   long status)
{
    struct callout *co = e->co;
    double took = stream_now_s() - e->started_s;
    ev_timer_stop(co->loop, &e->deadline);
    co->inflight--;
    e->ask_id = 0;
    e->result.result = r;
    if (!e->result.reason)
        e->result.reason = reasons[r];
    metrics_add(&co->stats->results[r], 1);
    metrics_observe(&co->stats->latency, took);
    if (r != CALLOUT_GRANTED && r != CALLOUT_DENIED_401 && r != CALLOUT_DENIED_403)
        log_failure(co, e->result.reason, detail, status, took);
    curl_slist_free_all(e->headers);
    e->headers = NULL;
    buf_dispose(&e->answer);
    buf_init(&e->answer);
    free(e->body);
    e->body = NULL;
    int64_t keep = keep_ms(co, e, ttl_s);
    list_remove(&e->node); /* from co->flight */
    /* Kept before the waiters hear: one of them may ask again at once and should hit. */
    if (keep > 0) {
        e->state = E_DONE;
        e->expires_ms = stream_now_ms() + keep;
        make_room(co);
        list_insert_tail(&co->lru, &e->node);
        co->ndone++;
        metrics_add(&co->stats->cached, 1);
    } else {
        map_del(co->entries, e->key, KEY_LEN);
        e->state = E_ORPHAN;
    }
    /*
     * The waiters move to a list of our own and the answer to a copy
     * before anyone hears: a receiver may ask or cancel again, which may
     * evict e from the cache, and nothing below reads e after that.
     */
    struct list waiters;
    list_init(&waiters);
    if (!list_empty(&e->waiters)) {
        waiters.next = e->waiters.next;
        waiters.prev = e->waiters.prev;
        waiters.next->prev = &waiters;
        waiters.prev->next = &waiters;
        list_init(&e->waiters);
    }
    /* Detached: a waiter cancelled meanwhile (another's answer freed its request) leaves e be. */
    for (struct list *n = waiters.next; n != &waiters; n = n->next)
        container_of(n, struct callout_wait, node)->e = NULL;
    struct callout_answer shared;
    copy_answer(e, &shared);
    if (keep == 0)
        entry_free(e);
    while (!list_empty(&waiters)) {
        struct callout_wait *w = container_of(waiters.next, struct callout_wait, node);
        list_remove(&w->node);
        struct callout_answer a = shared;
        a.grant = auth_grant_ref(shared.grant);
        callout_done_fn *done = w->done;
        void *ctx = w->ctx;
        free(w);
        done(ctx, &a);
    }
    auth_grant_free(shared.grant);
}

/* An HTTP transfer ended. */
static void complete(struct entry *e, CURLcode rc)
{
    struct callout *co = e->co;
    long status = 0;
    curl_easy_getinfo(e->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(co->multi, e->easy);
    curl_easy_cleanup(e->easy);
    e->easy = NULL;
    int64_t ttl_s;
    enum callout_result r = classify(e, rc, status, &ttl_s);
    finish(e, r, ttl_s, rc == CURLE_OK ? "answered" : curl_easy_strerror(rc), status);
}

/* A NATS reply: the same rules as an HTTP status and body. */
static enum callout_result classify_nats(struct entry *e, const struct bus_answer *a,
                                         int64_t *ttl_s)
{
    *ttl_s = -1;
    if (a->status == 503)
        return CALLOUT_UNREACHABLE; /* no responders */
    if (a->status == 401)
        return CALLOUT_DENIED_401;
    if (a->status == 403)
        return CALLOUT_DENIED_403;
    if (a->status < 200 || a->status > 299)
        return CALLOUT_ERROR;
    const char *why = NULL;
    if (auth_grant_from_callout(a->data, a->len, (int64_t)time(NULL), &e->result.grant, ttl_s,
                                &why) != 0) {
        e->result.reason = why;
        return CALLOUT_BAD_ANSWER;
    }
    return CALLOUT_GRANTED;
}

void callout_nats_answer(struct callout *co, const struct bus_answer *a)
{
    /* At most max_inflight questions in flight: a scan is cheaper than a second index. */
    for (struct list *n = co->flight.next; n != &co->flight; n = n->next) {
        struct entry *e = container_of(n, struct entry, node);
        if (e->ask_id == a->id) {
            int64_t ttl_s;
            enum callout_result r = classify_nats(e, a, &ttl_s);
            finish(e, r, ttl_s, "NATS reply", a->status);
            start_queued(co);
            return;
        }
    }
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct entry *e = container_of(t, struct entry, deadline);
    struct callout *co = e->co; /* e may be gone after finish() */
    if (e->ask_failed)
        finish(e, CALLOUT_UNREACHABLE, -1, "NATS unavailable", 0);
    else
        finish(e, CALLOUT_TIMEOUT, -1, "no NATS reply", 0);
    start_queued(co);
}

void callout_attach_bus(struct callout *co, struct bus *bus, size_t worker)
{
    co->bus = bus;
    co->worker = worker;
}

static void reap(struct callout *co)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(co->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct entry *e = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&e);
        complete(e, m->data.result);
    }
    start_queued(co);
}

/* ---- the loop glue ---- */

static void on_sock_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct sock *k = container_of(io, struct sock, io);
    struct callout *co = k->co;
    int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
                 (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    /* k may be freed inside (CURL_POLL_REMOVE): nothing of it is read after. */
    curl_multi_socket_action(co->multi, io->fd, action, &running);
    reap(co);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct callout *co = container_of(t, struct callout, timer);
    int running;
    curl_multi_socket_action(co->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    reap(co);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *user, void *sockp)
{
    (void)easy;
    struct callout *co = user;
    struct sock *k = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            ev_io_stop(co->loop, &k->io);
            free(k);
        }
        curl_multi_assign(co->multi, fd, NULL);
        return 0;
    }
    if (!k) {
        k = mem_calloc(1, sizeof(*k));
        k->co = co;
        curl_multi_assign(co->multi, fd, k);
    } else {
        ev_io_stop(co->loop, &k->io);
    }
    int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    ev_io_init(&k->io, on_sock_io, fd, events);
    ev_io_start(co->loop, &k->io);
    return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *user)
{
    (void)multi;
    struct callout *co = user;
    /* Called from inside libcurl: only arm the watcher (0 runs it on the next loop turn). */
    ev_timer_stop(co->loop, &co->timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&co->timer, (double)timeout_ms / 1000.0, 0);
        ev_timer_start(co->loop, &co->timer);
    }
    return 0;
}

/* ---- the interface ---- */

int callout_new(struct callout **out, struct ev_loop *loop, const struct callout_params *p,
                struct callout_stats *stats, char *err, size_t errlen)
{
    *out = NULL;
    if (!p->subject &&
        (!p->url || (strncmp(p->url, "http://", 7) != 0 && strncmp(p->url, "https://", 8) != 0))) {
        snprintf(err, errlen, "auth-callout-url must be an http:// or https:// URL");
        return ERR_INVALID;
    }
    struct callout *co = mem_calloc(1, sizeof(*co));
    co->p = *p;
    co->p.url = p->url ? mem_strdup(p->url) : NULL;
    co->p.subject = p->subject ? mem_strdup(p->subject) : NULL;
    if (co->p.max_inflight == 0)
        co->p.max_inflight = 1;
    co->loop = loop;
    co->stats = stats;
    co->entries = map_new();
    list_init(&co->lru);
    list_init(&co->queue);
    list_init(&co->flight);
    if (RAND_bytes(co->salt, sizeof(co->salt)) != 1) {
        /* Still per process and per worker: the clock and the heap address. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(co->salt, &ts, sizeof(ts) < sizeof(co->salt) ? sizeof(ts) : sizeof(co->salt));
        memcpy(co->salt + 8, &co, sizeof(co) < 8 ? sizeof(co) : 8);
    }
    co->multi = curl_multi_init();
    curl_multi_setopt(co->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(co->multi, CURLMOPT_SOCKETDATA, co);
    curl_multi_setopt(co->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(co->multi, CURLMOPT_TIMERDATA, co);
    /* Connections kept for reuse: one per transfer slot. */
    curl_multi_setopt(co->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)co->p.max_inflight);
    curl_multi_setopt(co->multi, CURLMOPT_MAXCONNECTS, (long)co->p.max_inflight);
    ev_init(&co->timer, on_timer);
    *out = co;
    return 0;
}

void callout_free(struct callout *co)
{
    if (!co)
        return;
    while (!list_empty(&co->lru))
        entry_free(container_of(co->lru.next, struct entry, node));
    while (!list_empty(&co->queue))
        entry_free(container_of(co->queue.next, struct entry, node));
    while (!list_empty(&co->flight)) {
        struct entry *e = container_of(co->flight.next, struct entry, node);
        /* Their requests were freed first and cancelled them: this is only a safety net. */
        while (!list_empty(&e->waiters)) {
            struct callout_wait *w = container_of(e->waiters.next, struct callout_wait, node);
            list_remove(&w->node);
            free(w);
        }
        entry_free(e);
    }
    ev_timer_stop(co->loop, &co->timer);
    curl_multi_cleanup(co->multi);
    map_free(co->entries);
    free((char *)co->p.url);
    free((char *)co->p.subject);
    free(co);
}

static struct callout_wait *wait_on(struct entry *e, callout_done_fn *done, void *ctx)
{
    struct callout_wait *w = mem_calloc(1, sizeof(*w));
    w->e = e;
    w->done = done;
    w->ctx = ctx;
    list_insert_tail(&e->waiters, &w->node);
    return w;
}

int callout_ask(struct callout *co, const struct callout_query *q, int64_t now_ms,
                struct callout_answer *answer, callout_done_fn *done, void *ctx,
                struct callout_wait **wait)
{
    unsigned char key[KEY_LEN];
    make_key(co, q, key);
    *wait = NULL;
    struct entry *e = map_get(co->entries, key, KEY_LEN);
    if (e && e->state == E_DONE && now_ms >= e->expires_ms) {
        entry_free(e);
        e = NULL;
    }
    if (e && e->state == E_DONE) {
        metrics_add(&co->stats->cache_hits, 1);
        list_remove(&e->node);
        list_insert_tail(&co->lru, &e->node);
        copy_answer(e, answer);
        return 0;
    }
    metrics_add(&co->stats->cache_misses, 1);
    if (e) {
        metrics_add(&co->stats->coalesced, 1);
        *wait = wait_on(e, done, ctx);
        return ERR_AGAIN;
    }
    if (co->inflight >= co->p.max_inflight && co->nqueued >= co->p.max_queue) {
        metrics_add(&co->stats->results[CALLOUT_REFUSED], 1);
        log_failure(co, reasons[CALLOUT_REFUSED], "auth-callout-max-queue full", 0, 0);
        *answer = (struct callout_answer){CALLOUT_REFUSED, NULL, reasons[CALLOUT_REFUSED]};
        return 0;
    }
    e = mem_calloc(1, sizeof(*e));
    e->co = co;
    ev_init(&e->deadline, on_deadline);
    memcpy(e->key, key, KEY_LEN);
    list_init(&e->node);
    list_init(&e->waiters);
    buf_init(&e->answer);
    map_put(co->entries, key, KEY_LEN, e);
    prepare(e, q);
    *wait = wait_on(e, done, ctx);
    if (co->inflight < co->p.max_inflight) {
        start(e);
    } else {
        e->state = E_QUEUED;
        list_insert_tail(&co->queue, &e->node);
        co->nqueued++;
        metrics_add(&co->stats->queued, 1);
    }
    return ERR_AGAIN;
}

void callout_cancel(struct callout_wait *w)
{
    if (!w)
        return;
    struct entry *e = w->e;
    list_remove(&w->node);
    free(w);
    /* Nobody waits for a question not yet asked: it need not be asked at all. */
    if (e && e->state == E_QUEUED && list_empty(&e->waiters))
        entry_free(e);
}

/* Whether g is principal's, or grants a subscription that overlaps subject. */
static bool affected(const struct auth_grant *g, const char *principal, const char *subject)
{
    if (!g)
        return false;
    const char *p = auth_grant_subject(g);
    if (principal && p && strcmp(p, principal) == 0)
        return true;
    if (!subject)
        return false;
    const char *const *list;
    size_t n = auth_grant_patterns(g, AUTH_SUBSCRIBE, &list);
    for (size_t i = 0; i < n; i++)
        if (subject_overlaps(list[i], subject))
            return true;
    n = auth_grant_defaults(g, &list);
    for (size_t i = 0; i < n; i++)
        if (subject_overlaps(list[i], subject))
            return true;
    return false;
}

size_t callout_forget(struct callout *co, const char *principal, const char *subject)
{
    size_t dropped = 0;
    for (struct list *n = co->lru.next, *next; n != &co->lru; n = next) {
        next = n->next;
        struct entry *e = container_of(n, struct entry, node);
        if (affected(e->result.grant, principal, subject)) {
            entry_free(e);
            dropped++;
        }
    }
    /*
     * Answers in flight cannot be matched (their principal is not known
     * yet): none of them is cached, so a revocation cannot be undone by
     * an answer the service gave before it.
     */
    for (struct list *n = co->flight.next; n != &co->flight; n = n->next)
        container_of(n, struct entry, node)->nocache = true;
    for (struct list *n = co->queue.next; n != &co->queue; n = n->next)
        container_of(n, struct entry, node)->nocache = true;
    metrics_add(&co->stats->revoked, (int64_t)dropped);
    return dropped;
}
