/*
 * ds: the Durable Streams protocol route (see ds_route.h and the README's
 * "Durable Streams" section), on one JetStream stream (ds-stream).
 *
 * Mapping: a stream path under ds-base-path becomes one escaped subject
 * token T (ds_path_token). Its messages live on these subjects:
 *
 *   <prefix>.m.T        the stream's metadata: a JSON message written at
 *                       creation (content type, TTL, expiry; a fork's
 *                       source and offset), rewritten with "del" by a soft
 *                       delete; its first sequence is the empty stream's
 *                       tail offset
 *   <prefix>.d.T        the data: one message per append (JSON mode: its
 *                       messages, one level flattened, as one array), with
 *                       Sse-Event: data for text and JSON streams, the
 *                       closing one carrying Sse-End (so /events readers
 *                       see the end too); a close without data is an empty
 *                       message with Sse-End and Ds-Tail (the unchanged tail)
 *   <prefix>.p.T.<id>   an idempotent producer's state: "epoch seq"
 *   <prefix>.t.T        a TTL stream's last read (empty; see touch())
 *   <prefix>.r.S.T      fork T's reference to its source S (remove_stream())
 *
 * An offset is the stream sequence of the last data message read (16
 * digits). Every write is a publish conditioned on the data subject's last
 * sequence, read just before (JetStream refuses a stale one and the write
 * is retried on the new tail), so closure, Stream-Seq and appends are
 * ordered by nats-server across a fleet: no gateway holds writer state.
 * Stream-Seq is scoped per stream and carried on every data message
 * (Ds-Seq) so the last one is always on the last message. A fork's reads
 * stitch its sources' data up to each fork offset (chain_of()).
 *
 * Calls to JetStream are synchronous, each bounded by ds-timeout-ms
 * (bus_ds.c says why), and none is made on a worker's loop: an operation
 * runs as a job on a DS thread (bus_ds_submit) against a copy of the
 * request (struct ds_job: what the operation reads of it, the body moved
 * in), its answer kept there, and goes back to the worker as mail, which
 * answers the request if it is still there (ds_job_done, request_resume),
 * as the auth callout's answer does; a request that went meanwhile only
 * detaches (its job frees what it holds). A job may instead leave the
 * worker a next step (job->then) with what it read: so a live read
 * (long poll, SSE) starts as a job (find, fork chain, first read or
 * catch-up: read_stream) and opens its wait on the worker when it is back
 * (open_wait). Live reads do not hold a worker: an SSE reader of an open
 * text or JSON stream follows the data subject as an ordinary sluice
 * stream after its catch-up (the encode-once fan-out, the reader's
 * control event as the stream's trailer: sse_start()) and makes no call
 * after it; a long poll or a binary stream's SSE reader waits on a
 * notifier stream on the same shared subscription, and each wake reads
 * what is new in a job (poll_read, pump_read) that the worker then
 * answers or queues (poll_answer, sse_pumped). One job per request at a
 * time: a wake while it runs sets `again`, one more read once it is back,
 * so no append is missed. Past ds-max-inflight jobs: 503 with
 * Retry-After for a new operation or live read; an open reader's wake
 * ends it instead (pump_or_end() says why not a retry).
 * Rejected: a JetStream consumer per reader (the issue's explicit no), and
 * a per-reader direct-get pump for every live append (it was the first
 * version: one JetStream request per reader per append).
 */
#include "sluice/ds_route.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/bus.h"
#include "sluice/config.h"
#include "sluice/ds.h"
#include "sluice/err.h"
#include "sluice/log.h"
#include "sluice/mem.h"
#include "sluice/metrics.h"
#include "sluice/request.h"
#include "sluice/route.h"
#include "sluice/stream.h"

#define SUBJECT_MAX (64 + 3 + DS_TOKEN_MAX + 1 + DS_TOKEN_MAX + 1)
#define WRITE_TRIES 16   /* appends racing on one stream before we give up with 503 */
#define JSON_MAX_MESSAGES 100000

enum mode { MODE_CATCHUP, MODE_LONG_POLL, MODE_SSE };

/* The stream's configuration, from its metadata message. */
struct meta {
    uint64_t seq;         /* its sequence: the empty stream's tail */
    char ct[DS_HEADER_MAX + 1];
    uint64_t ttl_s;       /* 0: none */
    bool has_ttl;
    char expires[DS_HEADER_MAX + 1]; /* "" : none */
    int64_t expires_ns;
    int64_t active_ns;    /* with a TTL: the last write or read, JetStream's clock */
    char src[DS_TOKEN_MAX + 1]; /* a fork's source stream token; "" for none */
    uint64_t fo;          /* a fork's offset: it inherits the source's data up to it */
    uint64_t sub;         /* its Stream-Fork-Sub-Offset */
    bool deleted;         /* soft-deleted: forks still read it (410 to everyone else) */
};

/* One stretch of a stream's data as read: a data subject's messages up to limit. */
struct seg {
    char tok[DS_TOKEN_MAX + 1];
    uint64_t limit;       /* last sequence that belongs; UINT64_MAX: all */
};
#define FORK_DEPTH 16

/* The data subject's last message, as far as writers care. */
struct tail {
    uint64_t last;        /* its sequence; 0: no data message */
    uint64_t offset;      /* the tail offset */
    bool closed;
    char wseq[DS_HEADER_MAX + 1];     /* the last Stream-Seq, "" */
    char closer[2 * DS_HEADER_MAX + 48]; /* "epoch seq id" of the producer that closed it */
};

struct ds_req {
    struct ds_headers h;
    char token[DS_TOKEN_MAX + 1];
    /* A live read waiting on its notifier stream. */
    enum mode mode;
    uint64_t offset;      /* what it has read up to */
    char ct[DS_HEADER_MAX + 1];
    bool json;
    uint64_t cursor;
    bool pushing;         /* a pump's events are being queued (their wake is their own) */
    bool done;            /* the SSE reader has been sent the closure */
    /* Its SSE head went (a notifier reader's after its first pump); a pump reads it on its
     * DS thread, the worker sets it with no job running. */
    bool heading;
    bool shared;          /* an SSE reader on the shared subscription (sse_start) */
    bool granted;         /* r had a grant (auth jwt or callout): cached privately */
    struct seg *segs;     /* what a read stitches (forks: the sources first); NULL: own only */
    size_t nsegs;
    /* Worker only (a DS thread never reads these): */
    struct ds_job *job;   /* the job running r's operation; NULL when none */
    struct ds_job *result; /* that job, back with its answer for ds_resume() */
    bool again;            /* a wake came while job ran: one more read once it is back */
};

/* What a read found: the body and where it ends. */
struct chunk {
    struct buf body;
    uint64_t next;   /* Stream-Next-Offset */
    bool up_to_date; /* no more data after next, when read */
    bool closed;     /* and the stream ends there */
    size_t messages;
};

enum catch_up { CAUGHT_UP, CLOSED, MORE, FAILED };

/*
 * An operation run on a DS thread. The request it serves stays on the
 * worker; the operation sees shadow, a copy of what it reads of it.
 */
struct ds_job {
    struct request *owner;  /* worker only: the request; NULL once it went */
    int (*op)(struct request *r);
    struct request shadow;  /* front NULL: answer() keeps the answer here */
    struct front_io io;     /* shadow's: env and secure only */
    struct http_route route; /* shadow's: the data subject */
    bool orphan;            /* owner went: shadow.ds is this job's to free */
    bool answered;
    int status;             /* the answer, kept by answer() */
    size_t nfields;
    char *fields[2 * REQUEST_HEAD_MAX];
    char *body;             /* owned; NULL: none */
    size_t len;
    /*
     * Not answered: what the worker does next with r and this job, once
     * it is back (answer_job(); NULL: 503). A live read's job leaves here
     * what it read for it: a long poll's chunk, an SSE pump's events
     * (read.body, how), a shared SSE reader's catch-up (read.body).
     */
    int (*then)(struct request *r, struct ds_job *job);
    struct chunk read;
    enum catch_up how;
};

static int read_data(struct request *r, uint64_t offset, bool json, size_t max, struct chunk *c);
static int offload(struct request *r, int (*op)(struct request *r));
static int submit(struct request *r, int (*op)(struct request *r));
static int busy(struct request *r);
static int answer_job(struct request *r);
static struct seg *chain_of(struct request *r, const char *tok, const struct meta *m, size_t *nout);

static struct ds_req *req_of(struct request *r)
{
    if (!r->ds)
        r->ds = mem_calloc(1, sizeof(*r->ds));
    return r->ds;
}

bool ds_route_match(const struct config *cfg, const char *path)
{
    size_t n = strlen(cfg->ds_base_path);
    return n && strncmp(path, cfg->ds_base_path, n) == 0;
}

void ds_route(const struct config *cfg, struct http_route *route, const char *path)
{
    memset(route, 0, sizeof(*route));
    const char *p = path + strlen(cfg->ds_base_path);
    char token[DS_TOKEN_MAX + 1];
    int rc = ds_path_token(p, strcspn(p, "?#"), token);
    if (rc != 0) {
        route->kind = HTTP_ERROR;
        route->status = rc == ERR_LIMIT ? 414 : 400;
        snprintf(route->reason, sizeof(route->reason), "%s",
                 rc == ERR_LIMIT ? "stream path longer than 256 bytes"
                                 : "not a stream path (empty, '.' or '..' segment, bad escape)");
        return;
    }
    size_t n = strlen(cfg->ds_subject_prefix) + 3 + strlen(token) + 1;
    route->kind = HTTP_DS;
    route->status = 200;
    route->subjects[0] = mem_alloc(n);
    snprintf(route->subjects[0], n, "%s.d.%s", cfg->ds_subject_prefix, token);
    route->nsubjects = 1;
}

bool ds_request_header(struct request *r, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    /* Only names the protocol defines allocate: other requests pay nothing. */
    struct ds_headers probe;
    if (!r->ds) {
        memset(&probe, 0, sizeof(probe));
        if (!ds_header(&probe, name, nlen, value, vlen))
            return false;
    }
    return ds_header(&req_of(r)->h, name, nlen, value, vlen);
}

static void job_free(struct ds_job *job);

void ds_request_dispose(struct request *r)
{
    if (r->ds && r->ds->job) {
        /* Its job still runs with r->ds: that job frees it when it comes back (ds_job_done). */
        struct ds_job *job = r->ds->job;
        r->ds->job = NULL;
        job->owner = NULL;
        job->orphan = true;
        r->ds = NULL;
        return;
    }
    if (r->ds && r->ds->result)
        job_free(r->ds->result);
    if (r->ds)
        free(r->ds->segs);
    free(r->ds);
    r->ds = NULL;
}

/* The stream's token, from the data subject "<prefix>.d.<token>". */
static const char *token_of(struct request *r)
{
    struct ds_req *d = req_of(r);
    if (!d->token[0]) {
        const char *s = r->route->subjects[0];
        size_t pl = strlen(r->io->env->cfg->ds_subject_prefix);
        snprintf(d->token, sizeof(d->token), "%s", s + pl + 3);
    }
    return d->token;
}

static void subject(struct request *r, char kind, char *out)
{
    snprintf(out, SUBJECT_MAX, "%s.%c.%s", r->io->env->cfg->ds_subject_prefix, kind, token_of(r));
}

/* Adds the headers every answer of the route carries. */
static void security(struct request_head *h)
{
    request_head_add(h, "x-content-type-options", "nosniff");
    request_head_add(h, "cross-origin-resource-policy", "cross-origin");
}

static struct request_stats *stats(struct request *r) { return r->io->env->stats; }

/* The job whose copy r is (a DS thread), or NULL for a request on its worker. */
static struct ds_job *job_of(struct request *r)
{
    return r->front ? NULL : container_of(r, struct ds_job, shadow);
}

/* On a DS thread: r's worker goes on with then(r, job) once the job is back (answer_job()). */
static int later(struct request *r, int (*then)(struct request *r, struct ds_job *job))
{
    struct ds_job *job = job_of(r);
    assert(job);
    job->then = then;
    return 0;
}

static int answer(struct request *r, struct request_head *h, const char *ctype, char *body,
                  size_t len)
{
    if (h->status == 503)
        metrics_add(&stats(r)->ds_unavailable, 1);
    else if (h->status >= 400 && h->status < 500)
        metrics_add(&stats(r)->ds_refused, 1);
    security(h);
    if (ctype)
        request_head_add(h, "content-type", ctype);
    struct ds_job *job = job_of(r);
    if (job) {
        /* On a DS thread: copied, for the worker to send (answer_job()). */
        job->answered = true;
        job->status = h->status;
        for (size_t i = 0; i < h->n; i++) {
            job->fields[job->nfields++] = mem_strndup(h->f[i].name, h->f[i].name_len);
            job->fields[job->nfields++] = mem_strndup(h->f[i].value, h->f[i].value_len);
        }
        job->body = body;
        job->len = len;
        return 0;
    }
    struct request_body b = {body ? body : "", len, body, NULL};
    if (body)
        request_charge(r, len);
    return request_answer(r, h, &b);
}

/* A refusal: status and one line of text. */
static int fail(struct request *r, int status, const char *text)
{
    struct request_head h = {.status = status};
    request_head_add(&h, "cache-control", "no-store");
    size_t n = strlen(text);
    char *body = mem_alloc(n + 2);
    memcpy(body, text, n);
    body[n] = '\n';
    return answer(r, &h, "text/plain; charset=utf-8", body, n + 1);
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Reads the metadata of the stream with token tok; 0, ERR_NOTFOUND or ERR_NATS. */
static int read_meta_of(struct request *r, const char *tok, struct meta *m)
{
    char s[SUBJECT_MAX];
    snprintf(s, sizeof(s), "%s.m.%s", r->io->env->cfg->ds_subject_prefix, tok);
    struct bus_ds_msg msg;
    memset(m, 0, sizeof(*m));
    int rc = bus_ds_get(r->io->env->bus, s, 0, true, &msg);
    if (rc != 0)
        return rc;
    m->seq = msg.seq;
    json_t *j = json_loadb(msg.data, msg.len, 0, NULL);
    bus_ds_msg_dispose(&msg);
    if (!json_is_object(j)) {
        json_decref(j);
        return ERR_NATS;
    }
    const char *ct = json_string_value(json_object_get(j, "ct"));
    snprintf(m->ct, sizeof(m->ct), "%s", ct ? ct : "");
    json_t *ttl = json_object_get(j, "ttl");
    if (json_is_integer(ttl)) {
        m->has_ttl = true;
        m->ttl_s = (uint64_t)json_integer_value(ttl);
    }
    const char *exp = json_string_value(json_object_get(j, "exp"));
    if (exp) {
        snprintf(m->expires, sizeof(m->expires), "%s", exp);
        http_parse_time(exp, strlen(exp), &m->expires_ns);
    }
    const char *src = json_string_value(json_object_get(j, "src"));
    if (src && strlen(src) <= DS_TOKEN_MAX) {
        snprintf(m->src, sizeof(m->src), "%s", src);
        m->fo = (uint64_t)json_integer_value(json_object_get(j, "fo"));
        m->sub = (uint64_t)json_integer_value(json_object_get(j, "sub"));
    }
    m->deleted = json_is_true(json_object_get(j, "del"));
    json_decref(j);
    return 0;
}

static int read_meta(struct request *r, struct meta *m)
{
    return read_meta_of(r, token_of(r), m);
}

/* Reads the data subject's last message into t (m: the stream's metadata). 0 or ERR_NATS. */
static int read_tail_of(struct request *r, const char *tok, const struct meta *m, struct tail *t)
{
    char s[SUBJECT_MAX];
    snprintf(s, sizeof(s), "%s.d.%s", r->io->env->cfg->ds_subject_prefix, tok);
    memset(t, 0, sizeof(*t));
    t->offset = m->src[0] ? m->fo : m->seq; /* an empty fork ends where it forked */
    struct bus_ds_msg msg;
    int rc = bus_ds_get(r->io->env->bus, s, 0, true, &msg);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    t->last = msg.seq;
    t->offset = msg.seq;
    t->closed = bus_ds_header(&msg, "Sse-End") != NULL;
    const char *v = bus_ds_header(&msg, "Ds-Tail");
    if (v)
        t->offset = strtoull(v, NULL, 10);
    if ((v = bus_ds_header(&msg, "Ds-Seq")))
        snprintf(t->wseq, sizeof(t->wseq), "%s", v);
    if ((v = bus_ds_header(&msg, "Ds-Producer")))
        snprintf(t->closer, sizeof(t->closer), "%s", v);
    bus_ds_msg_dispose(&msg);
    return 0;
}

static int read_tail(struct request *r, const struct meta *m, struct tail *t)
{
    return read_tail_of(r, token_of(r), m, t);
}

/* Removes every message of the stream with token tok. */
static int purge_tok(struct request *r, const char *tok)
{
    char s[SUBJECT_MAX];
    const char *p = r->io->env->cfg->ds_subject_prefix;
    struct bus *bus = r->io->env->bus;
    static const char kinds[] = "dptrm";
    int rc = 0;
    /* The metadata last: while it is there, the stream still exists. */
    for (size_t i = 0; rc == 0 && kinds[i]; i++) {
        bool many = kinds[i] == 'p' || kinds[i] == 'r'; /* per producer, per fork */
        snprintf(s, sizeof(s), "%s.%c.%s%s", p, kinds[i], tok, many ? ".*" : "");
        rc = bus_ds_purge(bus, s, 0);
    }
    return rc;
}

/* Whether the stream with token tok still has forks (a message on <prefix>.r.<tok>.*). */
static bool has_forks(struct request *r, const char *tok)
{
    char s[SUBJECT_MAX];
    snprintf(s, sizeof(s), "%s.r.%s.*", r->io->env->cfg->ds_subject_prefix, tok);
    struct bus_ds_msg msg;
    if (bus_ds_get(r->io->env->bus, s, 1, false, &msg) != 0)
        return false;
    bus_ds_msg_dispose(&msg);
    return true;
}

/*
 * Deletes the stream with token tok whose metadata is m: soft (a new
 * metadata message with "del") while forks read it, else purged, and then
 * its own source, if this was the last fork of a soft-deleted one, and so
 * on up the chain. 0 or ERR_NATS.
 */
static int remove_stream(struct request *r, const char *tok, const struct meta *m)
{
    struct bus *bus = r->io->env->bus;
    const char *p = r->io->env->cfg->ds_subject_prefix;
    char s[SUBJECT_MAX], cur[DS_TOKEN_MAX + 1];
    struct meta cm = *m;
    snprintf(cur, sizeof(cur), "%s", tok);
    for (int depth = 0; depth < FORK_DEPTH; depth++) {
        if (has_forks(r, cur)) {
            if (cm.deleted)
                return 0;
            json_t *j = json_object();
            json_object_set_new(j, "ct", json_stringn(cm.ct, strlen(cm.ct)));
            if (cm.has_ttl)
                json_object_set_new(j, "ttl", json_integer((json_int_t)cm.ttl_s));
            if (cm.expires[0])
                json_object_set_new(j, "exp", json_stringn(cm.expires, strlen(cm.expires)));
            if (cm.src[0]) {
                json_object_set_new(j, "src", json_stringn(cm.src, strlen(cm.src)));
                json_object_set_new(j, "fo", json_integer((json_int_t)cm.fo));
            }
            json_object_set_new(j, "del", json_true());
            char *body = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            snprintf(s, sizeof(s), "%s.m.%s", p, cur);
            uint64_t seq;
            bool dup;
            int rc = bus_ds_publish(bus, s, NULL, 0, body, strlen(body), -1, NULL, &seq, &dup);
            free(body);
            return rc;
        }
        if (purge_tok(r, cur) != 0)
            return ERR_NATS;
        if (!cm.src[0])
            return 0;
        /* This was a fork: its source loses a reference, and goes too if it was deleted. */
        snprintf(s, sizeof(s), "%s.r.%s.%s", p, cm.src, cur);
        if (bus_ds_purge(bus, s, 0) != 0)
            return ERR_NATS;
        char src[DS_TOKEN_MAX + 1];
        snprintf(src, sizeof(src), "%s", cm.src);
        if (read_meta_of(r, src, &cm) != 0 || !cm.deleted)
            return 0;
        snprintf(cur, sizeof(cur), "%s", src);
    }
    return 0;
}

static int purge(struct request *r, const struct meta *m)
{
    return remove_stream(r, token_of(r), m);
}

/*
 * The stream's metadata, or an answer already given (*answered, its
 * return value returned): 404 for none or an expired one (purged then),
 * 503 without NATS.
 */
static int find(struct request *r, struct meta *m, struct tail *t, bool *answered)
{
    *answered = true;
    if (!r->io->env->bus)
        return fail(r, 503, "NATS unavailable, try again");
    int rc = read_meta(r, m);
    if (rc == ERR_NOTFOUND)
        return fail(r, 404, "no such stream");
    if (rc == 0 && t)
        rc = read_tail(r, m, t);
    if (rc != 0)
        return fail(r, 503, "JetStream unavailable, try again");
    if (m->deleted)
        return fail(r, 410, "stream deleted (its forks still read it)");
    int64_t now = wall_ns();
    bool expired = m->expires_ns && now >= m->expires_ns;
    if (!expired && m->has_ttl) {
        /* Idle since the last write or read: the latest of the three subjects' last messages. */
        int64_t last_ns = 0;
        const char kinds[] = {'m', 'd', 't'};
        for (size_t i = 0; i < sizeof(kinds); i++) {
            char s[SUBJECT_MAX];
            struct bus_ds_msg msg;
            subject(r, kinds[i], s);
            if (bus_ds_get(r->io->env->bus, s, 0, true, &msg) == 0) {
                if (msg.time_ns > last_ns)
                    last_ns = msg.time_ns;
                bus_ds_msg_dispose(&msg);
            }
        }
        m->active_ns = last_ns;
        expired = last_ns && now >= last_ns + (int64_t)m->ttl_s * 1000000000;
    }
    if (expired) {
        purge(r, m);
        return fail(r, 404, "no such stream (expired)");
    }
    *answered = false;
    return 0;
}

/*
 * A read renews a TTL stream: an empty message on <prefix>.t.T, the older
 * ones purged, so the renewal is JetStream's and every gateway sees it.
 * Skipped when the last activity is under a tenth of the TTL old.
 */
static void touch(struct request *r, const struct meta *m)
{
    if (!m->has_ttl || wall_ns() - m->active_ns < (int64_t)m->ttl_s * 100000000)
        return;
    char s[SUBJECT_MAX];
    subject(r, 't', s);
    uint64_t seq;
    bool dup;
    if (bus_ds_publish(r->io->env->bus, s, NULL, 0, NULL, 0, -1, NULL, &seq, &dup) == 0)
        bus_ds_purge(r->io->env->bus, s, 1);
}

static void add_offset(struct request_head *h, char *buf, uint64_t off)
{
    ds_offset_format(off, buf);
    request_head_add(h, "stream-next-offset", buf);
}

/*
 * A JSON-mode body as stored: its messages, one level flattened, as one
 * JSON array into out.
 * 0, or ERR_INVALID (not JSON: 400), ERR_NOTFOUND (an empty array).
 */
static int json_body(const char *data, size_t len, struct buf *out)
{
    json_error_t e;
    json_t *j = json_loadb(data, len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL,
                           &e);
    if (!j)
        return ERR_INVALID;
    json_decref(j);
    long n = ds_json_split(data, len, NULL, 0);
    if (n == 0)
        return ERR_NOTFOUND;
    if (n < 0 || n > JSON_MAX_MESSAGES)
        return ERR_INVALID;
    struct ds_span *sp = mem_alloc((size_t)n * sizeof(*sp));
    ds_json_split(data, len, sp, (size_t)n);
    /* Stored as an array: an SSE data event (and an /events reader) gets valid JSON. */
    buf_append(out, "[", 1);
    for (long i = 0; i < n; i++) {
        if (i)
            buf_append(out, ",", 1);
        buf_append(out, data + sp[i].off, sp[i].len);
    }
    buf_append(out, "]", 1);
    free(sp);
    return 0;
}

/* A fork being created: its source and where it diverges. */
struct fork {
    bool on;
    char src[DS_TOKEN_MAX + 1];
    struct meta sm;       /* the source's metadata */
    uint64_t fo;          /* the fork offset */
    uint64_t sub;         /* Stream-Fork-Sub-Offset */
    struct buf prefix;    /* the part of the next append the sub-offset inherits */
};

/* The metadata message's JSON for a new stream (fp: a fork, or off). */
static char *meta_json(const char *mt, const struct ds_headers *dh, const struct fork *fp)
{
    json_t *j = json_object();
    /* json_stringn: sluice's own json_string (util/json.c) shadows jansson's at link time. */
    json_object_set_new(j, "ct", json_stringn(mt, strlen(mt)));
    if (dh->has_ttl)
        json_object_set_new(j, "ttl", json_integer((json_int_t)strtoull(dh->ttl, NULL, 10)));
    if (dh->has_expires_at)
        json_object_set_new(j, "exp", json_stringn(dh->expires_at, strlen(dh->expires_at)));
    if (fp->on) {
        /* A fork without its own expiry takes its source's (the protocol's table). */
        if (!dh->has_ttl && !dh->has_expires_at && fp->sm.has_ttl)
            json_object_set_new(j, "ttl", json_integer((json_int_t)fp->sm.ttl_s));
        if (!dh->has_ttl && !dh->has_expires_at && fp->sm.expires[0])
            json_object_set_new(j, "exp", json_stringn(fp->sm.expires, strlen(fp->sm.expires)));
        json_object_set_new(j, "src", json_stringn(fp->src, strlen(fp->src)));
        json_object_set_new(j, "fo", json_integer((json_int_t)fp->fo));
        json_object_set_new(j, "sub", json_integer((json_int_t)fp->sub));
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* Whether an existing stream matches a PUT's configuration. */
static bool same_config(const struct meta *m, const struct tail *t, const char *mt,
                        const struct ds_headers *dh, const struct fork *fp)
{
    if (strcmp(m->src, fp->on ? fp->src : "") != 0 || (fp->on && (m->fo != fp->fo || m->sub != fp->sub)))
        return false;
    if (fp->on && !dh->has_ttl && !dh->has_expires_at)
        return strcmp(m->ct, mt) == 0 && t->closed == dh->closed; /* an inherited expiry */
    if (strcmp(m->ct, mt) != 0 || t->closed != dh->closed || m->has_ttl != dh->has_ttl)
        return false;
    if (dh->has_ttl && m->ttl_s != strtoull(dh->ttl, NULL, 10))
        return false;
    if (dh->has_expires_at != (m->expires[0] != 0))
        return false;
    int64_t a;
    return !dh->has_expires_at ||
           (http_parse_time(dh->expires_at, strlen(dh->expires_at), &a) && a == m->expires_ns);
}

/* The absolute URL of r's stream, for Location. */
static char *location(struct request *r)
{
    size_t plen = strcspn(r->path, "?#");
    const char *host = r->authority ? r->authority : "localhost";
    size_t n = strlen(host) + plen + 16;
    char *s = mem_alloc(n);
    snprintf(s, n, "%s://%s%.*s", r->io->secure ? "https" : "http", host, (int)plen, r->path);
    return s;
}


/*
 * The fork a PUT asks for (dh->has_fork), checked against its source:
 * 0 with fp filled, or the status to answer with *why.
 */
static int plan_fork(struct request *r, const struct ds_headers *dh, struct fork *fp,
                     const char **why)
{
    const struct config *cfg = r->io->env->cfg;
    size_t bl = strlen(cfg->ds_base_path);
    const char *from = dh->forked_from;
    /* The source's path, as a URL path on this server (the base path optional). */
    if (strncmp(from, cfg->ds_base_path, bl) == 0)
        from += bl;
    else if (bl > 1 && strncmp(from, cfg->ds_base_path, bl - 1) == 0 && from[bl - 1] == '\0')
        from += bl - 1;
    while (*from == '/')
        from++;
    *why = "Stream-Forked-From is not a stream path";
    if (ds_path_token(from, strcspn(from, "?#"), fp->src) != 0)
        return 400;
    int rc = read_meta_of(r, fp->src, &fp->sm);
    *why = "JetStream unavailable, try again";
    if (rc != 0 && rc != ERR_NOTFOUND)
        return 503;
    *why = "no such source stream";
    if (rc == ERR_NOTFOUND || (fp->sm.expires_ns && wall_ns() >= fp->sm.expires_ns))
        return 404;
    *why = "the source stream is deleted";
    if (fp->sm.deleted)
        return 409;
    struct tail st;
    *why = "JetStream unavailable, try again";
    if (read_tail_of(r, fp->src, &fp->sm, &st) != 0)
        return 503;
    fp->fo = st.offset;
    if (dh->has_fork_offset) {
        enum ds_offset_kind kind;
        uint64_t seq;
        *why = "malformed Stream-Fork-Offset";
        if (ds_offset_parse(dh->fork_offset, strlen(dh->fork_offset), &kind, &seq) != 0)
            return 400;
        fp->fo = kind == DS_OFFSET_SEQ ? seq : kind == DS_OFFSET_START ? 0 : st.offset;
        *why = "Stream-Fork-Offset is past the source's tail";
        if (fp->fo > st.offset)
            return 400;
    }
    if (dh->has_fork_sub_offset) {
        *why = "malformed Stream-Fork-Sub-Offset";
        if (ds_parse_uint(dh->fork_sub_offset, strlen(dh->fork_sub_offset), DS_JS_INT_MAX,
                          &fp->sub) != 0)
            return 400;
        *why = "Stream-Fork-Sub-Offset needs Stream-Fork-Offset";
        if (fp->sub && !dh->has_fork_offset)
            return 400;
    }
    if (fp->sub) {
        /* Materialised: the first sub bytes (JSON: messages) of the next append. */
        struct ds_req *d = req_of(r);
        struct seg *saved = d->segs;
        size_t nsaved = d->nsegs;
        d->segs = chain_of(r, fp->src, &fp->sm, &d->nsegs);
        struct chunk c;
        rc = read_data(r, fp->fo, false, 0, &c);
        free(d->segs);
        d->segs = saved;
        d->nsegs = nsaved;
        *why = "JetStream unavailable, try again";
        if (rc != 0)
            return 503;
        *why = "Stream-Fork-Sub-Offset is past the next append";
        if (!c.messages) {
            buf_dispose(&c.body);
            return 400;
        }
        if (ds_is_json(fp->sm.ct)) {
            long n = ds_json_split((const char *)c.body.data, c.body.len, NULL, 0);
            if (n < 0 || fp->sub > (uint64_t)n) {
                buf_dispose(&c.body);
                return 400;
            }
            struct ds_span *all = mem_alloc((size_t)n * sizeof(*all));
            ds_json_split((const char *)c.body.data, c.body.len, all, (size_t)n);
            buf_append(&fp->prefix, "[", 1);
            for (uint64_t i = 0; i < fp->sub; i++) {
                if (i)
                    buf_append(&fp->prefix, ",", 1);
                buf_append(&fp->prefix, c.body.data + all[i].off, all[i].len);
            }
            buf_append(&fp->prefix, "]", 1);
            free(all);
        } else {
            if (fp->sub > c.body.len) {
                buf_dispose(&c.body);
                return 400;
            }
            buf_append(&fp->prefix, c.body.data, fp->sub);
        }
        buf_dispose(&c.body);
    }
    fp->on = true;
    return 0;
}

static int create(struct request *r)
{
    struct ds_headers *dh = &req_of(r)->h;
    struct bus *bus = r->io->env->bus;
    char mt[DS_HEADER_MAX + 1];
    if (ds_media_type(dh->has_content_type ? dh->content_type : "", mt, sizeof(mt)) < 0)
        return fail(r, 400, "malformed Content-Type");
    if ((dh->has_fork_offset || dh->has_fork_sub_offset) && !dh->has_fork)
        return fail(r, 400, "Stream-Fork-Offset or -Sub-Offset without Stream-Forked-From");
    struct fork fp;
    memset(&fp, 0, sizeof(fp));
    buf_init(&fp.prefix);
    if (dh->has_fork) {
        const char *why;
        int st = plan_fork(r, dh, &fp, &why);
        if (st != 0) {
            buf_dispose(&fp.prefix);
            return fail(r, st, why);
        }
        if (dh->has_content_type && strcmp(mt, fp.sm.ct) != 0) {
            buf_dispose(&fp.prefix);
            return fail(r, 409, "Content-Type differs from the source stream's");
        }
        snprintf(mt, sizeof(mt), "%s", fp.sm.ct);
    }
    uint64_t ttl;
    int64_t exp_ns;
    if (dh->has_ttl && dh->has_expires_at)
        return fail(r, 400, "Stream-TTL and Stream-Expires-At together");
    if (dh->has_ttl && ds_parse_uint(dh->ttl, strlen(dh->ttl), DS_JS_INT_MAX, &ttl) != 0)
        return fail(r, 400, "Stream-TTL is not a non-negative integer");
    if (dh->has_expires_at && !http_parse_time(dh->expires_at, strlen(dh->expires_at), &exp_ns))
        return fail(r, 400, "Stream-Expires-At is not an RFC 3339 time");
    struct buf data;
    buf_init(&data);
    if (ds_is_json(mt) && r->body.len) {
        int rc = json_body((const char *)r->body.data, r->body.len, &data);
        if (rc == ERR_INVALID) {
            buf_dispose(&data);
            buf_dispose(&fp.prefix);
            return fail(r, 400, "body is not valid JSON");
        }
    } else if (r->body.len) {
        buf_append(&data, r->body.data, r->body.len);
    }
    if (!bus) {
        buf_dispose(&data);
        buf_dispose(&fp.prefix);
        return fail(r, 503, "NATS unavailable, try again");
    }
    char ms[SUBJECT_MAX], ds[SUBJECT_MAX], off[DS_OFFSET_LEN + 1];
    subject(r, 'm', ms);
    subject(r, 'd', ds);
    char *mj = meta_json(mt, dh, &fp);
    uint64_t seq = 0;
    bool dup;
    int rc = bus_ds_publish(bus, ms, NULL, 0, mj, strlen(mj), 0, NULL, &seq, &dup);
    free(mj);
    struct request_head h = {0};
    if (rc != 0 && rc != ERR_AGAIN)
        buf_dispose(&fp.prefix);
    if (rc == ERR_AGAIN) {
        /* It exists: the same configuration is an idempotent 200, another a 409. */
        struct meta m;
        struct tail t;
        bool answered;
        buf_dispose(&data);
        buf_dispose(&fp.prefix);
        if (read_meta(r, &m) == 0 && m.deleted)
            return fail(r, 409, "a deleted stream's path (its forks still read it)");
        int a = find(r, &m, &t, &answered);
        if (answered)
            return a;
        if (!same_config(&m, &t, mt, dh, &fp))
            return fail(r, 409, "the stream exists with another configuration");
        h.status = 200;
        request_head_add(&h, "cache-control", "no-store");
        request_head_add(&h, "content-type", m.ct);
        add_offset(&h, off, t.offset);
        if (t.closed)
            request_head_add(&h, "stream-closed", "true");
        return answer(r, &h, NULL, NULL, 0);
    }
    if (rc != 0) {
        buf_dispose(&data);
        return fail(r, 503, "JetStream unavailable, try again");
    }
    uint64_t tail = fp.on ? fp.fo : seq;
    int64_t expect = 0;
    if (fp.on) {
        /* The source's reference: it is soft-deleted, not purged, while this exists. */
        char rs[SUBJECT_MAX];
        snprintf(rs, sizeof(rs), "%s.r.%s.%s", r->io->env->cfg->ds_subject_prefix, fp.src,
                 token_of(r));
        uint64_t rseq;
        rc = bus_ds_publish(bus, rs, NULL, 0, NULL, 0, -1, NULL, &rseq, &dup);
        if (rc == 0 && fp.prefix.len) {
            const char *ph[] = {"Sse-Event", ds_sse_text(mt) ? "data" : NULL};
            rc = bus_ds_publish(bus, ds, ph, 1, fp.prefix.data, fp.prefix.len, 0, NULL, &tail,
                                &dup);
            expect = (int64_t)tail;
        }
        buf_dispose(&fp.prefix);
        if (rc != 0) {
            buf_dispose(&data);
            return fail(r, 503, "JetStream unavailable, try again");
        }
    }
    if (data.len || dh->closed) {
        char ts[24];
        snprintf(ts, sizeof(ts), "%" PRIu64, tail);
        const char *hd[] = {"Sse-End", dh->closed ? "1" : NULL, "Ds-Tail", data.len ? NULL : ts,
                            "Sse-Event", data.len && ds_sse_text(mt) ? "data" : NULL};
        uint64_t dseq;
        rc = bus_ds_publish(bus, ds, hd, 3, data.data, data.len, expect, NULL, &dseq, &dup);
        if (rc != 0) {
            buf_dispose(&data);
            return fail(r, 503, "JetStream unavailable, try again");
        }
        if (data.len)
            tail = dseq;
    }
    buf_dispose(&data);
    char *loc = location(r);
    h.status = 201;
    request_head_add(&h, "cache-control", "no-store");
    request_head_add(&h, "location", loc);
    request_head_add(&h, "content-type", mt);
    add_offset(&h, off, tail);
    if (dh->closed)
        request_head_add(&h, "stream-closed", "true");
    int ret = answer(r, &h, NULL, NULL, 0);
    free(loc);
    return ret;
}

/* A producer's state: "epoch seq" on its subject; found false when it has none. */
struct pstate {
    bool found;
    uint64_t msg_seq; /* of the state message, for the conditional update */
    uint64_t epoch, seq;
};

static int read_producer(struct request *r, const char *ps, struct pstate *st)
{
    struct bus_ds_msg msg;
    memset(st, 0, sizeof(*st));
    int rc = bus_ds_get(r->io->env->bus, ps, 0, true, &msg);
    if (rc == ERR_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)(msg.len < 63 ? msg.len : 63), msg.data);
    st->found = sscanf(tmp, "%" SCNu64 " %" SCNu64, &st->epoch, &st->seq) == 2;
    st->msg_seq = msg.seq;
    bus_ds_msg_dispose(&msg);
    return 0;
}

static void add_u64(struct request_head *h, const char *name, char *buf, uint64_t v)
{
    snprintf(buf, 24, "%" PRIu64, v);
    request_head_add(h, name, buf);
}

static int append(struct request *r)
{
    struct ds_req *d = req_of(r);
    struct ds_headers *dh = &d->h;
    struct bus *bus = r->io->env->bus;
    struct ds_producer pr;
    bool producer;
    if (dh->has_fork)
        return fail(r, 400, "Stream-Forked-From on an append");
    if (ds_producer_parse(dh, &pr, &producer) != 0)
        return fail(r, 400, "Producer-Id, Producer-Epoch and Producer-Seq: all three, integers");
    if (r->body.len == 0 && !dh->closed)
        return fail(r, 400, "empty append (only a close may be empty)");
    char mt[DS_HEADER_MAX + 1];
    if (r->body.len && (!dh->has_content_type || ds_media_type(dh->content_type, mt, sizeof(mt)) < 0))
        return fail(r, 400, "an append needs a Content-Type");
    struct meta m;
    struct tail t;
    bool answered;
    int a = find(r, &m, &t, &answered);
    if (answered)
        return a;
    char ds[SUBJECT_MAX], ps[SUBJECT_MAX] = "", off[DS_OFFSET_LEN + 1];
    char e1[24], e2[24], e3[24];
    subject(r, 'd', ds);
    if (producer) {
        snprintf(ps, sizeof(ps), "%s.p.%s.", r->io->env->cfg->ds_subject_prefix, token_of(r));
        size_t o = strlen(ps);
        for (const char *p = pr.id; *p && o + 4 < sizeof(ps); p++) {
            unsigned char c = (unsigned char)*p;
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-')
                ps[o++] = (char)c;
            else
                o += (size_t)snprintf(ps + o, 4, "~%02X", c);
        }
        ps[o] = '\0';
    }
    struct buf data;
    buf_init(&data);
    bool json = ds_is_json(m.ct);
    for (int tries = 0;; tries++) {
        struct request_head h = {0};
        request_head_add(&h, "cache-control", "no-store");
        char closer[sizeof(t.closer)] = "";
        if (producer)
            snprintf(closer, sizeof(closer), "%" PRIu64 " %" PRIu64 " %s", pr.epoch, pr.seq, pr.id);
        if (t.closed) {
            buf_dispose(&data);
            add_offset(&h, off, t.offset);
            request_head_add(&h, "stream-closed", "true");
            if (r->body.len == 0 || (producer && strcmp(closer, t.closer) == 0)) {
                h.status = 204;
                if (producer) {
                    add_u64(&h, "producer-epoch", e1, pr.epoch);
                    add_u64(&h, "producer-seq", e2, pr.seq);
                }
                return answer(r, &h, NULL, NULL, 0);
            }
            h.status = 409;
            return answer(r, &h, "text/plain; charset=utf-8", mem_strdup("stream is closed\n"), 17);
        }
        if (r->body.len && strcmp(mt, m.ct) != 0) {
            buf_dispose(&data);
            return fail(r, 409, "Content-Type differs from the stream's");
        }
        if (tries == 0 && r->body.len) {
            if (json) {
                int rc = json_body((const char *)r->body.data, r->body.len, &data);
                if (rc != 0) {
                    buf_dispose(&data);
                    return fail(r, 400, rc == ERR_NOTFOUND ? "empty JSON array"
                                                           : "body is not valid JSON");
                }
            } else {
                buf_append(&data, r->body.data, r->body.len);
            }
        }
        struct pstate st = {0};
        if (producer) {
            if (read_producer(r, ps, &st) != 0) {
                buf_dispose(&data);
                return fail(r, 503, "JetStream unavailable, try again");
            }
            if (st.found && pr.epoch < st.epoch) {
                buf_dispose(&data);
                h.status = 403;
                add_u64(&h, "producer-epoch", e1, st.epoch);
                return answer(r, &h, "text/plain; charset=utf-8", mem_strdup("stale epoch\n"), 12);
            }
            bool fresh = !st.found || pr.epoch > st.epoch;
            if (fresh && pr.seq != 0) {
                buf_dispose(&data);
                if (st.found)
                    return fail(r, 400, "a new Producer-Epoch starts at Producer-Seq 0");
                h.status = 409;
                add_u64(&h, "producer-expected-seq", e1, 0);
                add_u64(&h, "producer-received-seq", e2, pr.seq);
                return answer(r, &h, "text/plain; charset=utf-8", mem_strdup("sequence gap\n"), 13);
            }
            if (!fresh && pr.seq <= st.seq) {
                buf_dispose(&data);
                h.status = 204;
                add_u64(&h, "producer-epoch", e1, st.epoch);
                add_u64(&h, "producer-seq", e2, st.seq);
                add_offset(&h, off, t.offset);
                return answer(r, &h, NULL, NULL, 0);
            }
            if (!fresh && pr.seq > st.seq + 1) {
                buf_dispose(&data);
                h.status = 409;
                add_u64(&h, "producer-expected-seq", e1, st.seq + 1);
                add_u64(&h, "producer-received-seq", e2, pr.seq);
                return answer(r, &h, "text/plain; charset=utf-8", mem_strdup("sequence gap\n"), 13);
            }
        }
        if (dh->has_stream_seq && t.wseq[0] && strcmp(dh->stream_seq, t.wseq) <= 0) {
            buf_dispose(&data);
            return fail(r, 409, "Stream-Seq is not above the last one");
        }
        char ts[24];
        snprintf(ts, sizeof(ts), "%" PRIu64, t.offset);
        const char *hd[] = {
            "Sse-End",     dh->closed ? "1" : NULL,
            "Ds-Tail",     data.len ? NULL : ts,
            "Ds-Seq",      dh->has_stream_seq ? dh->stream_seq : t.wseq,
            "Ds-Producer", producer && dh->closed ? closer : NULL,
            /* SSE readers share the encoding of this message: it is their data event. */
            "Sse-Event",   data.len && ds_sse_text(m.ct) ? "data" : NULL,
        };
        uint64_t seq;
        bool dup;
        int rc = bus_ds_publish(bus, ds, hd, 5, data.data, data.len, (int64_t)t.last, NULL, &seq,
                                &dup);
        if (rc == ERR_AGAIN)
            metrics_add(&stats(r)->ds_races, 1);
        if (rc == ERR_AGAIN && tries + 1 < WRITE_TRIES) {
            /* Another writer got there first: judge the request again on the new tail. */
            if (read_tail(r, &m, &t) != 0)
                rc = ERR_NATS;
            else
                continue;
        }
        if (rc != 0) {
            buf_dispose(&data);
            return fail(r, 503, rc == ERR_AGAIN ? "too many concurrent appends, retry"
                                                : "JetStream unavailable, try again");
        }
        if (producer) {
            char body[48];
            int n = snprintf(body, sizeof(body), "%" PRIu64 " %" PRIu64, pr.epoch, pr.seq);
            uint64_t pseq;
            if (bus_ds_publish(bus, ps, NULL, 0, body, (size_t)n, st.found ? (int64_t)st.msg_seq : 0,
                               NULL, &pseq, &dup) != 0)
                log_warn("ds: producer state of %s on %s not updated after its append", pr.id,
                         token_of(r));
        }
        bool appended = data.len != 0;
        buf_dispose(&data);
        /* 200 says "new data from this producer"; a close without data is a 204 either way. */
        h.status = producer && appended ? 200 : 204;
        add_offset(&h, off, appended ? seq : t.offset);
        if (dh->closed)
            request_head_add(&h, "stream-closed", "true");
        if (producer) {
            add_u64(&h, "producer-epoch", e1, pr.epoch);
            add_u64(&h, "producer-seq", e3, pr.seq);
        }
        return answer(r, &h, NULL, NULL, 0);
    }
}

int ds_write(struct request *r)
{
    req_of(r);
    if (req_of(r)->h.too_long)
        return fail(r, 400, "a protocol header is longer than 256 bytes");
    /* One append is one NATS message: past nats-server's max_payload it cannot be stored. */
    size_t max = r->io->env->bus ? bus_ds_max_payload(r->io->env->bus) : 0;
    if (max && r->body.len + 1024 > max)
        return fail(r, 413, "body larger than one NATS message can be (nats-server max_payload)");
    if (strcmp(r->method, "PUT") == 0) {
        metrics_add(&stats(r)->ds_create, 1);
        return offload(r, create);
    }
    metrics_add(r->body.len || !req_of(r)->h.closed ? &stats(r)->ds_append : &stats(r)->ds_close,
                1);
    return offload(r, append);
}


/*
 * Reads the data after offset (at most max bytes, whole messages, at
 * least one). 0 or ERR_NATS.
 */
static int read_data(struct request *r, uint64_t offset, bool json, size_t max, struct chunk *c)
{
    struct ds_req *d = req_of(r);
    struct seg own;
    snprintf(own.tok, sizeof(own.tok), "%s", token_of(r));
    own.limit = UINT64_MAX;
    const struct seg *segs = d->segs ? d->segs : &own;
    size_t nsegs = d->segs ? d->nsegs : 1;
    buf_init(&c->body);
    c->next = offset;
    c->up_to_date = c->closed = false;
    c->messages = 0;
    if (json)
        buf_append(&c->body, "[", 1);
    bool full = false;
    for (size_t i = 0; i < nsegs && !full && !c->closed; i++) {
        char ds[SUBJECT_MAX];
        bool last = i + 1 == nsegs;
        if (c->next >= segs[i].limit)
            continue;
        snprintf(ds, sizeof(ds), "%s.d.%s", r->io->env->cfg->ds_subject_prefix, segs[i].tok);
        for (;;) {
            struct bus_ds_msg msg;
            int rc = bus_ds_get(r->io->env->bus, ds, c->next + 1, false, &msg);
            if (rc == ERR_NOTFOUND)
                break;
            if (rc != 0) {
                buf_dispose(&c->body);
                return rc;
            }
            if (msg.seq > segs[i].limit) {
                bus_ds_msg_dispose(&msg);
                break;
            }
            if (c->messages && c->body.len + msg.len > max) {
                bus_ds_msg_dispose(&msg);
                full = true;
                break;
            }
            /* A source's closure is not its fork's: only the stream's own data ends it. */
            bool end = last && bus_ds_header(&msg, "Sse-End") != NULL;
            if (msg.len) {
                if (json && c->messages)
                    buf_append(&c->body, ",", 1);
                /* A JSON append is stored as an array: its messages join the answer's. */
                if (json && msg.len >= 2 && msg.data[0] == '[')
                    buf_append(&c->body, msg.data + 1, msg.len - 2);
                else
                    buf_append(&c->body, msg.data, msg.len);
                c->messages++;
                c->next = msg.seq;
            }
            if (!last && msg.seq > c->next)
                c->next = msg.seq; /* an empty closing message of a source */
            bus_ds_msg_dispose(&msg);
            if (end) {
                c->closed = true;
                break;
            }
        }
    }
    if (!full)
        c->up_to_date = true;
    if (json)
        buf_append(&c->body, "]", 1);
    return 0;
}

/*
 * What a read of a fork stitches: its sources' data up to where each was
 * forked, oldest first, then its own (chain_of: malloc'ed, *nout entries).
 * chain() keeps it in d->segs; it stays NULL for a stream that is no fork.
 */
static struct seg *chain_of(struct request *r, const char *tok, const struct meta *m, size_t *nout)
{
    struct seg *segs = mem_calloc(FORK_DEPTH, sizeof(*segs));
    size_t n = 0;
    snprintf(segs[n].tok, sizeof(segs[n].tok), "%s", tok);
    segs[n++].limit = UINT64_MAX;
    struct meta cur = *m;
    uint64_t limit = UINT64_MAX;
    while (cur.src[0] && n < FORK_DEPTH) {
        limit = cur.fo < limit ? cur.fo : limit;
        snprintf(segs[n].tok, sizeof(segs[n].tok), "%s", cur.src);
        segs[n++].limit = limit;
        struct meta next;
        if (read_meta_of(r, cur.src, &next) != 0)
            break; /* a source purged after its last fork went: nothing more to stitch */
        cur = next;
    }
    /* Oldest first. */
    for (size_t i = 0; i < n / 2; i++) {
        struct seg t = segs[i];
        segs[i] = segs[n - 1 - i];
        segs[n - 1 - i] = t;
    }
    *nout = n;
    return segs;
}

static int chain(struct request *r, const struct meta *m)
{
    struct ds_req *d = req_of(r);
    if (!m->src[0] || d->segs)
        return 0;
    d->segs = chain_of(r, token_of(r), m, &d->nsegs);
    return 0;
}

static int head(struct request *r)
{
    struct meta m;
    struct tail t;
    bool answered;
    int a = find(r, &m, &t, &answered);
    if (answered)
        return a;
    char off[DS_OFFSET_LEN + 1], ttl[24];
    struct request_head h = {.status = 200};
    request_head_add(&h, "cache-control", "no-store");
    request_head_add(&h, "content-type", m.ct);
    add_offset(&h, off, t.offset);
    if (m.has_ttl)
        add_u64(&h, "stream-ttl", ttl, m.ttl_s);
    if (m.expires[0])
        request_head_add(&h, "stream-expires-at", m.expires);
    if (t.closed)
        request_head_add(&h, "stream-closed", "true");
    return answer(r, &h, NULL, NULL, 0);
}

static int delete_stream(struct request *r)
{
    struct meta m;
    bool answered;
    int a = find(r, &m, NULL, &answered);
    if (answered)
        return a;
    if (purge(r, &m) != 0)
        return fail(r, 503, "JetStream unavailable, try again");
    struct request_head h = {.status = 204};
    request_head_add(&h, "cache-control", "no-store");
    return answer(r, &h, NULL, NULL, 0);
}

/* The query's value of key, percent-decoded into out; false when absent or too long. */
static bool query(const struct request *r, const char *key, char *out, size_t outsz)
{
    const char *q = strchr(r->path, '?');
    const char *v;
    size_t n;
    if (!q || !ds_query(q + 1, strlen(q + 1), key, &v, &n) || n >= outsz)
        return false;
    memcpy(out, v, n);
    out[n] = '\0';
    long len = http_percent_decode(out, n);
    if (len < 0)
        return false;
    out[len] = '\0';
    return true;
}

static uint32_t rnd32(void)
{
    static _Thread_local uint32_t x;
    if (!x)
        x = (uint32_t)wall_ns() | 1;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

/* The answer of a read with chunk c (taken). */
static int answer_read(struct request *r, struct chunk *c, uint64_t start, bool now, bool live,
                       const char *ct)
{
    struct ds_req *d = req_of(r);
    char off[DS_OFFSET_LEN + 1], cur[24], etag[DS_TOKEN_MAX + 64];
    struct request_head h = {.status = 200};
    if (live && c->messages == 0)
        h.status = 204;
    add_offset(&h, off, c->next);
    if (c->up_to_date)
        request_head_add(&h, "stream-up-to-date", "true");
    if (c->closed)
        request_head_add(&h, "stream-closed", "true");
    if (live && !c->closed)
        add_u64(&h, "stream-cursor", cur, d->cursor);
    if (now || h.status == 204) {
        request_head_add(&h, "cache-control", "no-store");
    } else {
        snprintf(etag, sizeof(etag), "\"%s:%016" PRIu64 ":%016" PRIu64 "%s\"", d->token, start,
                 c->next, c->closed ? ":c" : "");
        request_head_add(&h, "etag", etag);
        request_head_add(&h, "cache-control", d->granted ? "private, max-age=60, stale-while-revalidate=300"
                                                       : "public, max-age=60, stale-while-revalidate=300");
        if (d->h.has_if_none_match && strcmp(d->h.if_none_match, etag) == 0) {
            buf_dispose(&c->body);
            h.status = 304;
            return answer(r, &h, NULL, NULL, 0);
        }
    }
    if (h.status == 204) {
        buf_dispose(&c->body);
        return answer(r, &h, NULL, NULL, 0);
    }
    size_t len = c->body.len;
    char *body = (char *)c->body.data;
    if (len == 0) {
        buf_dispose(&c->body);
        body = NULL;
    }
    return answer(r, &h, ct, body, len);
}


/* An SSE reader's queue: room for the largest append, base64-encoded, with its events. */
static size_t sse_queue_max(const struct config *cfg)
{
    size_t one = cfg->ds_max_body_bytes / 3 * 4 + 4096;
    return 2 * one > cfg->stream_queue_bytes ? 2 * one : cfg->stream_queue_bytes;
}

/* Standard base64 (RFC 4648) of n bytes at in, appended to out. */
static void base64(struct buf *out, const uint8_t *in, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        char q[4] = {t[v >> 18], t[(v >> 12) & 63], i + 1 < n ? t[(v >> 6) & 63] : '=',
                     i + 2 < n ? t[v & 63] : '='};
        buf_append(out, q, 4);
    }
}

/* "data: " lines for n bytes at p, split at CR, LF and CRLF so no byte ends the event early. */
static void data_lines(struct buf *out, const char *p, size_t n)
{
    for (size_t i = 0;;) {
        size_t e = i;
        while (e < n && p[e] != '\r' && p[e] != '\n')
            e++;
        /* "data:" alone, as readers of the protocol expect; a space would be eaten by the parser. */
        if (e > i && p[i] == ' ')
            buf_append(out, "data: ", 6);
        else
            buf_append(out, "data:", 5);
        buf_append(out, p + i, e - i);
        buf_append(out, "\n", 1);
        if (e == n)
            break;
        if (p[e] == '\r' && e + 1 < n && p[e + 1] == '\n')
            e++;
        i = e + 1;
    }
}

/* The control event after a chunk (or at the start). */
static void control(struct buf *out, const struct ds_req *d, uint64_t next, bool up_to_date,
                    bool closed)
{
    char off[DS_OFFSET_LEN + 1], line[160];
    ds_offset_format(next, off);
    int n = snprintf(line, sizeof(line), "event: control\ndata:{\"streamNextOffset\":\"%s\"", off);
    buf_append(out, line, (size_t)n);
    if (!closed) {
        n = snprintf(line, sizeof(line), ",\"streamCursor\":\"%" PRIu64 "\"", d->cursor);
        buf_append(out, line, (size_t)n);
    }
    if (up_to_date)
        buf_append(out, ",\"upToDate\":true", 16);
    if (closed)
        buf_append(out, ",\"streamClosed\":true", 20);
    buf_append(out, "}\n\n", 3);
}

/*
 * Appends the SSE events of what follows d->offset to out, at most about
 * budget bytes (the first append always goes), and moves d->offset on.
 * first: a control event even with no data.
 */
static enum catch_up catch_up(struct request *r, struct buf *out, bool first, size_t budget)
{
    struct ds_req *d = req_of(r);
    bool text = ds_sse_text(d->ct);
    size_t start = out->len;
    for (;;) {
        struct chunk c;
        size_t pushed = out->len - start;
        size_t room = pushed < budget ? (budget - pushed) * 3 / 4 : 0;
        if (read_data(r, d->offset, d->json, room, &c) != 0)
            return FAILED;
        if (!c.messages && !c.closed && !first) {
            buf_dispose(&c.body);
            return CAUGHT_UP;
        }
        if (c.messages) {
            buf_append(out, "event: data\n", 12);
            if (text) {
                data_lines(out, (const char *)c.body.data, c.body.len);
            } else {
                buf_append(out, "data:", 5);
                base64(out, c.body.data, c.body.len);
                buf_append(out, "\n", 1);
            }
            buf_append(out, "\n", 1);
        }
        buf_dispose(&c.body);
        d->offset = c.next;
        control(out, d, c.next, c.up_to_date, c.closed);
        first = false;
        if (c.closed)
            return CLOSED;
        if (c.up_to_date)
            return CAUGHT_UP;
        if (out->len - start >= budget)
            return MORE;
    }
}

/*
 * The control event after each event of a shared SSE reader (the stream's
 * trailer): the event's offset, or for an empty closing message the
 * unchanged one.
 */
static size_t on_trailer(void *ctx, uint64_t seq, bool end, bool empty, char *out, size_t max)
{
    struct ds_req *d = ctx;
    if (!empty)
        d->offset = seq;
    /*
     * The readers of one append on a worker mostly share its control event
     * (same offset, same cursor interval): the last one is kept formatted.
     */
    static _Thread_local struct {
        uint64_t offset, cursor;
        bool end;
        size_t len;
        char text[STREAM_TRAILER_MAX];
    } last;
    if (last.len && last.offset == d->offset && last.cursor == d->cursor && last.end == end) {
        memcpy(out, last.text, last.len);
        return last.len;
    }
    struct buf b;
    buf_init(&b);
    control(&b, d, d->offset, true, end);
    size_t n = b.len <= max && b.len <= sizeof(last.text) ? b.len : 0;
    memcpy(out, b.data, n);
    memcpy(last.text, b.data, n);
    last.len = n;
    last.offset = d->offset;
    last.cursor = d->cursor;
    last.end = end;
    buf_dispose(&b);
    return n;
}

static void sse_head(struct request_head *h, const struct ds_req *d)
{
    security(h);
    request_head_add(h, "content-type", "text/event-stream");
    request_head_add(h, "cache-control", "no-cache");
    request_head_add(h, "x-accel-buffering", "no");
    if (!ds_sse_text(d->ct))
        request_head_add(h, "stream-sse-data-encoding", "base64");
}

static int sse_pumped(struct request *r, struct ds_job *job);

/*
 * A pump, on a DS thread: reads what is new for an SSE reader on a
 * notifier (a binary stream, or a closed one) into its job's events, and
 * moves d->offset on by what they hold; sse_pumped() queues them on the
 * worker. The first (before the head) has a control event even with no
 * data.
 */
static int pump_read(struct request *r)
{
    struct ds_job *job = job_of(r);
    /* What one wake may queue: half the stream's queue. */
    job->how =
        catch_up(r, &job->read.body, !req_of(r)->heading, sse_queue_max(r->io->env->cfg) / 2);
    return later(r, sse_pumped);
}

/*
 * Starts a pump for an SSE reader on a notifier, unless the reader is
 * done or one runs already: then that one reads once more when it is
 * back, so no append is missed. 0, or ERR_LIMIT when no job slot is free.
 */
static int pump(struct request *r)
{
    struct ds_req *d = req_of(r);
    struct stream *s = r->stream;
    if (d->pushing || d->done || d->shared || !s || stream_ended(s) != STREAM_END_NONE)
        return 0;
    if (d->job || d->result) {
        d->again = true;
        return 0;
    }
    return submit(r, pump_read);
}

/*
 * No job slot for a wake of an SSE reader whose head went: its stream
 * ends after what it has queued, and the client reconnects from the last
 * control event's offset (its reconnect gets the 503 with Retry-After
 * while the slots stay taken). Not a retry: a timer per reader on the
 * worker would be a second mechanism beside the jobs, and waiting for the
 * next wake would leave the append that woke it unsent while the stream
 * stays quiet. The offset the client holds moves only by what it was
 * sent, so ending loses nothing.
 */
static void pump_or_end(struct request *r)
{
    if (pump(r) != 0) {
        log_debug("conn %" PRIu64 " stream %d: ds: no job slot for an SSE reader's wake; ending it",
                  r->io->conn_id, (int)r->stream_id);
        stream_set_expiry(r->stream, stream_now_ms(), STREAM_END_LIMIT);
    }
}

/*
 * A pump back on the worker: its events queued; at the closure, the
 * stream ends after the last control event on the next tick (not here:
 * a wake may come from inside the fan-out's delivery). The first one
 * sends the head after its events, as a reader expects its first control
 * event with it.
 */
static int sse_pumped(struct request *r, struct ds_job *job)
{
    struct ds_req *d = req_of(r);
    struct stream *s = r->stream;
    bool first = !d->heading;
    d->heading = true; /* the push below wakes r: no second head, no pump of its own */
    d->pushing = true;
    if (job->read.body.len)
        stream_push_text(s, (const char *)job->read.body.data, job->read.body.len);
    d->pushing = false;
    if (job->how == FAILED) {
        stream_set_expiry(s, stream_now_ms(), STREAM_END_UNAVAILABLE);
    } else if (job->how == CLOSED) {
        d->done = true;
        stream_set_expiry(s, stream_now_ms(), STREAM_END_FINISHED);
    } else if (job->how == MORE) {
        /*
         * A catch-up larger than the queue: this connection ends after what
         * is queued, and the client reconnects from the last control
         * event's offset, as it does every minute anyway.
         */
        stream_set_expiry(s, stream_now_ms(), STREAM_END_LIMIT);
    }
    if (d->again) {
        d->again = false;
        pump_or_end(r);
    }
    if (!first)
        return 0;
    struct request_head h = {.status = 200};
    sse_head(&h, d);
    return request_start_stream(r, &h);
}

void ds_wake(struct request *r)
{
    /* Before its head, sse_resume() starts the first pump. */
    if (r->ds && r->ds->mode == MODE_SSE && !r->ds->shared && r->ds->heading)
        pump_or_end(r);
}

static int sse_resume(struct request *r)
{
    struct ds_req *d = req_of(r);
    if (!stream_ready(r->stream) || d->heading)
        return 0;
    /* Its head goes with its first pump's events (sse_pumped), even on an ended stream. */
    if (!d->shared && (d->job || stream_ended(r->stream) == STREAM_END_NONE))
        return pump(r) == 0 ? 0 : busy(r);
    d->heading = true;
    struct request_head h = {.status = 200};
    sse_head(&h, d);
    return request_start_stream(r, &h);
}

/*
 * A live read's wait, opened on the worker once its start is back (its
 * job: read_stream()): a notifier for a long poll or for the SSE reader
 * of a binary or closed stream, or for a shared SSE reader its stream
 * with its catch-up (job->read.body) as the prologue.
 */
static int open_wait(struct request *r, struct ds_job *job)
{
    struct ds_req *d = req_of(r);
    const struct config *cfg = r->io->env->cfg;
    char id[24];
    /* Closed about once a minute, as the protocol asks, so that readers spread over a fleet. */
    struct request_wait w = {.timeout_ms = 60000, .queue_max = sse_queue_max(cfg), .notify = true};
    if (d->mode == MODE_LONG_POLL) {
        w = (struct request_wait){.timeout_ms = cfg->ds_long_poll_ms, .notify = true};
    } else if (d->shared) {
        snprintf(id, sizeof(id), "%" PRIu64, d->offset);
        w.notify = false;
        w.last_event_id = id;
        w.trailer = on_trailer;
        w.trailer_ctx = d;
        w.prologue = (const char *)job->read.body.data;
        w.prologue_len = job->read.body.len;
    }
    const char *text;
    int status = request_open(r, &w, &text);
    if (status != 0)
        return fail(r, status, text);
    return request_resume(r);
}

/*
 * An SSE reader's start, on a DS thread. An open text or JSON stream is
 * read by direct gets up to its tail (the catch-up, the stream's
 * prologue), then follows the data subject as an ordinary sluice stream
 * from that offset: live appends come from the worker's one subscription
 * (the JetStream feed), encoded once for every reader (the appends carry
 * Sse-Event: data), each followed by this reader's control event
 * (on_trailer). A binary stream (base64 per reader) or a closed one is
 * read on a notifier by pumps instead.
 */
static int sse_start(struct request *r, const struct tail *t)
{
    struct ds_req *d = req_of(r);
    if (!ds_sse_text(d->ct) || t->closed)
        return later(r, open_wait);
    struct buf pro;
    buf_init(&pro);
    enum catch_up how = catch_up(r, &pro, true, sse_queue_max(r->io->env->cfg) / 2);
    if (how == FAILED) {
        buf_dispose(&pro);
        return fail(r, 503, "JetStream unavailable, try again");
    }
    if (how != CAUGHT_UP) {
        /* Closed meanwhile, or more than one connection's worth: a whole answer. */
        struct request_head h = {.status = 200};
        sse_head(&h, d);
        size_t len = pro.len;
        return answer(r, &h, NULL, (char *)pro.data, len);
    }
    d->shared = true;
    job_of(r)->read.body = pro;
    return later(r, open_wait);
}

static int poll_answer(struct request *r, struct ds_job *job);

/* A long poll's read, on a DS thread: what follows its offset, for poll_answer(). */
static int poll_read(struct request *r)
{
    struct ds_req *d = req_of(r);
    if (read_data(r, d->offset, d->json, r->io->env->cfg->ds_max_read_bytes, &job_of(r)->read) != 0)
        return fail(r, 503, "JetStream unavailable, try again");
    return later(r, poll_answer);
}

/*
 * A long poll's wake (data, the closure, or the end of its wait): a read
 * of what is new, unless one runs (then it reads once more when back).
 * With no job slot free, the 503 with Retry-After the start gets: the
 * client polls again from the offset it holds (see pump_or_end() for why
 * not a retry here).
 */
static int resume_long_poll(struct request *r)
{
    struct ds_req *d = req_of(r);
    if (!stream_ready(r->stream))
        return 0;
    if (d->job) {
        d->again = true;
        return 0;
    }
    return submit(r, poll_read) == 0 ? 0 : busy(r);
}

/* A long poll's read back: answered when it found data or the closure, or its wait ended. */
static int poll_answer(struct request *r, struct ds_job *job)
{
    struct ds_req *d = req_of(r);
    struct chunk c = job->read;
    buf_init(&job->read.body); /* c has it now */
    if (c.messages || c.closed || stream_ended(r->stream) != STREAM_END_NONE) {
        r->waiting = false;
        return answer_read(r, &c, d->offset, false, true, d->ct);
    }
    buf_dispose(&c.body);
    if (!d->again) {
        log_debug("conn %" PRIu64 " stream %d: ds: long poll waits at offset %" PRIu64,
                  r->io->conn_id, (int)r->stream_id, d->offset);
        return 0; /* nothing new for this reader yet */
    }
    d->again = false;
    return resume_long_poll(r);
}

int ds_resume(struct request *r)
{
    if (r->ds && r->ds->result)
        return answer_job(r);
    if (!r->ds || !r->stream) /* a job still running wakes r when it is back */
        return 0;
    if (r->ds->mode == MODE_SSE)
        return sse_resume(r);
    return resume_long_poll(r);
}

static int read_stream(struct request *r)
{
    struct ds_req *d = req_of(r);
    char v[64], cursor[64];
    enum ds_offset_kind kind = DS_OFFSET_START;
    uint64_t offset = 0;
    bool has_offset = query(r, "offset", v, sizeof(v));
    if (has_offset && ds_offset_parse(v, strlen(v), &kind, &offset) != 0)
        return fail(r, 400, "malformed offset");
    const char *q = strchr(r->path, '?'), *lv;
    size_t ln;
    enum mode mode = MODE_CATCHUP;
    if (q && ds_query(q + 1, strlen(q + 1), "live", &lv, &ln)) {
        if (ln == 9 && memcmp(lv, "long-poll", 9) == 0)
            mode = MODE_LONG_POLL;
        else if (ln == 3 && memcmp(lv, "sse", 3) == 0)
            mode = MODE_SSE;
        else
            return fail(r, 400, "live must be long-poll or sse");
        if (!has_offset)
            return fail(r, 400, "a live read needs an offset");
    }
    metrics_add(mode == MODE_SSE         ? &stats(r)->ds_sse
                : mode == MODE_LONG_POLL ? &stats(r)->ds_long_poll
                                         : &stats(r)->ds_read,
                1);
    struct meta m;
    struct tail t;
    bool answered;
    int a = find(r, &m, &t, &answered);
    if (answered)
        return a;
    touch(r, &m);
    bool has_cursor = query(r, "cursor", cursor, sizeof(cursor));
    d->cursor = ds_cursor((int64_t)(wall_ns() / 1000000000), has_cursor ? cursor : NULL,
                          has_cursor ? strlen(cursor) : 0, rnd32());
    d->json = ds_is_json(m.ct);
    snprintf(d->ct, sizeof(d->ct), "%s", m.ct);
    token_of(r);
    chain(r, &m);
    if (kind == DS_OFFSET_NOW)
        offset = t.offset;
    else if (m.src[0] && kind == DS_OFFSET_START)
        offset = 0; /* a fork reads its sources from their start */
    else if (!m.src[0] && (kind == DS_OFFSET_START || offset < m.seq))
        offset = m.seq;
    d->offset = offset;
    d->mode = mode;
    if (mode == MODE_SSE)
        return sse_start(r, &t);
    struct chunk c;
    if (kind == DS_OFFSET_NOW && (mode == MODE_CATCHUP || t.closed)) {
        buf_init(&c.body);
        if (d->json)
            buf_append(&c.body, "[]", 2);
        c.next = t.offset;
        c.up_to_date = true;
        c.closed = t.closed;
        c.messages = 0;
        return answer_read(r, &c, offset, true, mode != MODE_CATCHUP, m.ct);
    }
    if (kind == DS_OFFSET_NOW)
        return later(r, open_wait);
    if (read_data(r, offset, d->json, r->io->env->cfg->ds_max_read_bytes, &c) != 0)
        return fail(r, 503, "JetStream unavailable, try again");
    if (mode == MODE_CATCHUP || c.messages || c.closed)
        return answer_read(r, &c, offset, false, mode != MODE_CATCHUP, m.ct);
    buf_dispose(&c.body);
    return later(r, open_wait);
}

int ds_serve(struct request *r)
{
    req_of(r)->granted = r->grant != NULL; /* what a read on a DS thread may know of the grant */
    if (req_of(r)->h.too_long)
        return fail(r, 400, "a protocol header is longer than 256 bytes");
    if (strcmp(r->method, "GET") == 0)
        return offload(r, read_stream); /* a live read's wait opens when it is back: open_wait() */
    if (strcmp(r->method, "HEAD") == 0) {
        metrics_add(&stats(r)->ds_head, 1);
        return offload(r, head);
    }
    if (strcmp(r->method, "DELETE") == 0) {
        metrics_add(&stats(r)->ds_delete, 1);
        return offload(r, delete_stream);
    }
    return fail(r, 405, "method not allowed on a stream");
}

/*
 * Jobs: an operation of r run on a DS thread (see the note at the top).
 * The copy holds what the operations read of a request: method, path,
 * authority, the connection's TLS, the data subject, the protocol
 * headers (r->ds, lent) and the body (moved). No grant: a read knows
 * only whether there was one (ds_req.granted).
 */
static void job_free(struct ds_job *job)
{
    for (size_t i = 0; i < job->nfields; i++)
        free(job->fields[i]);
    free(job->body);
    free(job->shadow.method);
    free(job->shadow.path);
    free(job->shadow.authority);
    free(job->route.subjects[0]);
    buf_dispose(&job->shadow.body);
    buf_dispose(&job->read.body);
    if (job->orphan) {
        job->orphan = false;
        struct request r = {.ds = job->shadow.ds};
        ds_request_dispose(&r);
    }
    free(job);
}

static void on_job(void *arg)
{
    struct ds_job *job = arg;
    job->op(&job->shadow);
}

/*
 * Runs op on a copy of r on a DS thread; r's worker hears back in
 * ds_job_done(). 0, or ERR_LIMIT / ERR_NATS (ds-max-inflight jobs
 * already, or no DS thread): then nothing runs.
 */
static int submit(struct request *r, int (*op)(struct request *r))
{
    const struct request_env *env = r->io->env;
    struct ds_job *job = mem_calloc(1, sizeof(*job));
    job->owner = r;
    job->op = op;
    job->io.env = env;
    job->io.secure = r->io->secure;
    job->route.kind = HTTP_DS;
    job->route.status = 200;
    if (r->route) { /* gone once a live read's wait is open: d->token names the stream then */
        job->route.subjects[0] = mem_strdup(r->route->subjects[0]);
        job->route.nsubjects = 1;
    }
    job->shadow.io = &job->io;
    job->shadow.route = &job->route;
    job->shadow.method = mem_strdup(r->method);
    job->shadow.path = mem_strdup(r->path);
    job->shadow.authority = r->authority ? mem_strdup(r->authority) : NULL;
    job->shadow.ds = req_of(r);
    job->shadow.body = r->body;
    buf_init(&r->body);
    int rc = env->bus ? bus_ds_submit(env->bus, env->worker, on_job, job) : ERR_NATS;
    if (rc != 0) {
        r->body = job->shadow.body;
        buf_init(&job->shadow.body);
        job_free(job);
        return rc;
    }
    r->ds->job = job;
    return 0;
}

/* The answer past ds-max-inflight jobs. */
static int busy(struct request *r)
{
    struct request_head h = {.status = 503};
    request_head_add(&h, "cache-control", "no-store");
    request_head_add(&h, "retry-after", "1");
    static const char text[] = "too many Durable Streams operations in progress, retry\n";
    return answer(r, &h, "text/plain; charset=utf-8", mem_strdup(text), sizeof(text) - 1);
}

static int offload(struct request *r, int (*op)(struct request *r))
{
    if (!r->io->env->bus)
        return op(r); /* no NATS: its 503 needs no call */
    if (submit(r, op) != 0)
        return busy(r);
    r->waiting = true;
    return 0;
}

void ds_job_done(void *arg)
{
    struct ds_job *job = arg;
    struct request *r = job->owner;
    if (!r) {
        job_free(job);
        return;
    }
    r->ds->job = NULL;
    if (r->ds->heading && !job->answered) {
        /*
         * A pump of an SSE reader whose head went: its front now resumes
         * its data, never the request (h2 and h1 alike), so its events are
         * queued here.
         */
        sse_pumped(r, job);
        job_free(job);
        return;
    }
    r->ds->result = job;
    r->front->wake(r);
}

bool ds_job_waiting(const struct request *r) { return r->ds && (r->ds->job || r->ds->result); }

/* Sends the answer r's job kept, or goes on as it said (job->then). */
static int answer_job(struct request *r)
{
    struct ds_job *job = r->ds->result;
    r->ds->result = NULL;
    if (!job->answered) {
        int rc = job->then ? job->then(r, job) : fail(r, 503, "JetStream unavailable, try again");
        job_free(job);
        return rc;
    }
    r->waiting = false;
    struct request_head h = {.status = job->status};
    for (size_t i = 0; i + 1 < job->nfields; i += 2)
        request_head_add(&h, job->fields[i], job->fields[i + 1]);
    if (job->body)
        request_charge(r, job->len);
    struct request_body b = {job->body ? job->body : "", job->len, job->body, NULL};
    job->body = NULL;
    int rc = request_answer(r, &h, &b);
    job_free(job);
    return rc;
}
