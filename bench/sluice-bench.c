/*
 * sluice-bench: the load generator behind bench/. Grown from
 * tests/client/sluice-client.c; the same client drives sluice, nchan and
 * Pushpin so that figures from one run compare.
 *
 * One thread, one libev loop, C connections. Over TLS h2 each connection
 * carries S SSE streams; over HTTP/1.1 (TLS or cleartext) each carries one.
 * Input flows socket -> SSL_read/read -> nghttp2_session_mem_recv or the
 * HTTP/1.1 response and chunked decoder -> a per-stream WHATWG SSE parser.
 * Each dispatched event's data starts with "<CLOCK_REALTIME ns> <seq> ",
 * written by our own publisher: the difference to the clock on arrival is
 * the end-to-end latency (publisher -> broker -> gateway -> TLS -> parser),
 * recorded in a log-bucketed histogram (16 sub-buckets per power of two,
 * at most 6.25 % error); seq is per subject, so a stream sees gaps and
 * duplicates as jumps.
 *
 * A run is phases, driven by one 10 ms tick timer:
 *   opening  connect (a bounded number of handshakes in flight), open every
 *            stream; ends when all are open, or all have answered and none
 *            opened for 2 s (refusals are retried), or at --open-timeout
 *   settling --settle seconds, so peers that answer before they subscribe
 *            miss nothing
 *   window   the publisher thread publishes at --rate for --duration s;
 *            server CPU and RSS (from /proc, --server-pid) and our own
 *            CPU (getrusage) are sampled at its start
 *   drain    up to --drain s more, until every expected event arrived;
 *            then the end samples, one JSON line on stdout, exit
 * so the whole run is bounded by open-timeout + settle + duration + drain.
 *
 * Streams behave like an EventSource: one that the server ends or resets
 * is reopened after --reopen-ms with Last-Event-ID; a lost connection is
 * reconnected and all its streams reopened. --churn closes and reopens
 * streams at a fixed rate during the window, the same way.
 *
 * The publisher is a thread: NATS (cnats, SendAsap so that each message
 * leaves at once), or HTTP/1.1 POST over one keep-alive connection (nchan's
 * publisher location, Pushpin's /publish/ JSON). Message n goes to subject
 * n mod K with seq n div K; stream i listens on subject i mod K.
 *
 * TLS, the nghttp2 session glue, the SSE parser, the HTTP/1.1 response
 * parser (streams and publisher alike) and the option parser come from
 * the client library in tools/lib/ (cl_*), shared with sluice-client and
 * sluice-probe.
 *
 * Request streams (--post-body): each stream is a POST with that JSON body
 * (a request route, e.g. /v1/chat/completions answered by tools/sluice-llm)
 * instead of a GET; nothing needs publishing. The stamp then sits inside
 * the event (sluice-llm --stamp writes it as the token's text), so
 * --stamp-after names what precedes it, and ttfe_ms is the request -> first
 * stamped event (time to first token) of every POST, made in the opening
 * phase as much as in the window.
 *
 * Rejected alternatives: several client threads (on a 2-core machine a
 * second client thread competes with the server it measures; scenarios run
 * several processes when fds or CPU demand it and merge the histograms
 * printed by --hist); h2load (no SSE parsing, no latency from payload).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nats/nats.h>
#include <nghttp2/nghttp2.h>

#include "cl_buf.h"
#include "cl_conn.h"
#include "cl_file.h"
#include "cl_h1.h"
#include "cl_h2.h"
#include "cl_log.h"
#include "cl_nats.h"
#include "cl_mem.h"
#include "cl_net.h"
#include "cl_opt.h"
#include "cl_sse.h"
#include "cl_target.h"
#include "cl_time.h"
#include "cl_tls.h"

#define BENCH_OUT_SOFT_BYTES 65536   /* stop pulling frames from nghttp2 */
#define BENCH_CONN_WINDOW (16 << 20) /* bytes; h2 connection-level window */
#define BENCH_TICK_S 0.01            /* phase, churn, reopen and connect pump */
#define BENCH_H1_HEADER_MAX 16384    /* bytes of an HTTP/1.1 response head */
#define BENCH_PATH_MAX 512
#define BENCH_HEADERS_MAX 16         /* --header */
#define BENCH_PIDS_MAX 64            /* --server-pid */
#define BENCH_NAMES_MAX 8            /* distinct --server-pid names */
#define BENCH_PUB_SLEEP_MAX_NS 10000000ull /* the publisher rechecks stop this often */
#define BENCH_OPEN_STALL_NS 2000000000ull /* all answered, none newly open: stop waiting */
#define BENCH_CLIENT_LIMIT 0.9       /* main-thread CPU share that means "client-bound" */

#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Log-bucketed: values below HIST_SUB exact, then HIST_SUB buckets per
 * power of two. Values are nanoseconds. */
struct hist {
    uint64_t n, max;
    double sum;
    uint64_t b[HIST_BUCKETS];
};

enum proto { PROTO_H2, PROTO_H1 };
enum pub_kind { PUB_NONE, PUB_NATS, PUB_HTTP, PUB_PUSHPIN };
enum phase { PHASE_OPENING, PHASE_SETTLING, PHASE_WINDOW, PHASE_DRAIN, PHASE_DONE };

struct server_pid {
    char name[32];
    int pid;
};

struct opts {
    struct cl_target target; /* --connect and TLS: the server */
    bool plain, verbose, hist, no_resume;
    enum proto proto;
    unsigned connections, streams; /* streams per connection */
    unsigned subjects;             /* stream i listens on subject i mod subjects */
    const char *path_tmpl, *subject_tmpl;
    struct cl_h2_headers headers; /* --header; at most BENCH_HEADERS_MAX */
    double duration_s, open_timeout_s, settle_s, drain_s, reopen_s;
    double hold_s;     /* streams kept open after the drain, then RSS sampled again */
    double rate;       /* messages per second; 0: none */
    unsigned long long messages; /* --messages: the publisher stops after this many; 0: no cap */
    unsigned payload;  /* bytes per message */
    double churn_rate; /* streams closed and reopened per second */
    unsigned connect_inflight;
    struct cl_h2_settings h2; /* --window-size (a stream's), and the connection window */
    enum pub_kind pub;
    const char *pub_url;
    struct server_pid pids[BENCH_PIDS_MAX];
    unsigned npids;
    const char *ready_file, *label;
    const char *post_body;   /* --post-body: streams are POSTs of this; NULL: GETs */
    size_t post_len;
    const char *stamp_after; /* the stamp follows this in an event's data; NULL: data starts */
    size_t stamp_after_len;
};

struct client;
struct conn;

struct stream {
    struct conn *conn;
    uint32_t idx;     /* global slot index */
    uint32_t subject; /* idx mod subjects */
    int32_t id;       /* h2 stream id while active */
    uint16_t status;  /* last status; 0 before any */
    bool active;      /* a request is in flight */
    bool opened;      /* ever answered 200 */
    bool failed;      /* answered something else before ever opening */
    bool churning;    /* we closed it to reopen at once */
    bool queued;      /* in the reopen queue */
    bool got_event;   /* since this request */
    bool has_seq;
    uint64_t last_seq;
    uint64_t req_ns;  /* monotonic time the request was submitted */
    uint64_t events;
    struct cl_h2_body body; /* --post-body, as nghttp2 sends it for this request */
    struct cl_sse sse;  /* the WHATWG parser; its last event id is sent as Last-Event-ID */
};

struct conn {
    struct cl_conn net;    /* socket, TLS, pending output; net.state is the conn's */
    bool dirty;            /* on the dirty list: flush before sleeping */
    bool queued;           /* in the connect queue */
    struct client *client;
    uint32_t no;
    nghttp2_session *session;
    struct stream *streams; /* this connection's slice */
    unsigned nstreams;
    uint64_t retry_ns;      /* monotonic time a reconnect may start */
    struct cl_h1 h1;        /* the HTTP/1.1 response */
};

/* A FIFO of indices with due times; each index is in it at most once. */
struct queue {
    uint32_t *idx;
    uint64_t *due_ns;
    size_t cap, head, len;
};

struct pub {
    enum pub_kind kind;
    double rate;
    uint64_t messages; /* 0: no cap */
    unsigned payload, subjects;
    char **subjects_s;      /* rendered NATS subject, HTTP path or Pushpin channel */
    natsConnection *nc;
    int fd;                 /* HTTP */
    struct addrinfo *ai;
    char *authority;
    struct cl_h1 h1;        /* HTTP response parser */
    bool close_after;       /* the response said "Connection: close" */
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_uint_fast64_t published;
    uint64_t errors;
    uint64_t max_behind;    /* messages; the worst lag behind the schedule */
    double cpu_s;           /* the thread's own CPU */
    double elapsed_s;
    char error[200];
};

struct cpu_sample {
    double cpu_s[BENCH_PIDS_MAX];
    double sys_s[BENCH_PIDS_MAX]; /* the kernel's part of cpu_s */
    long rss_kb[BENCH_PIDS_MAX];
    bool ok[BENCH_PIDS_MAX];
};

struct client {
    struct opts o;
    struct ev_loop *loop;
    ev_timer tick, hard;
    ev_prepare prepare;
    struct conn *conns;
    struct stream *streams;
    size_t nstreams;
    struct conn **dirty; /* conns to flush; ndirty <= connections */
    size_t ndirty;
    struct queue connect_q, reopen_q;
    unsigned inflight;   /* connects and handshakes under way */
    enum phase phase;
    uint64_t start_ns, open_ns, window_ns, window_end_ns, drain_end_ns, done_ns;
    uint64_t window_real_ns;
    size_t opened, failed;      /* first answers: 200, or other */
    size_t opened_seen;         /* opened at the last tick */
    uint64_t progress_ns;       /* when opened last grew */
    uint32_t *open_per_subject; /* streams open at the window start */
    uint64_t expected;
    /* counted from the window start */
    uint64_t events, bytes, comments, no_ts, gaps, dups;
    uint64_t reopened, churned, server_ended, server_reset, conns_lost, connect_errors;
    uint64_t bytes_total;
    size_t status_counts[600];
    struct hist lat, ttfe, open_lat;
    double churn_due;
    size_t churn_cursor;
    struct pub pub;
    struct rusage ru0, ru1;
    struct timespec th0, th1; /* main thread CPU clock */
    struct cpu_sample srv0, srv_open, srv1, srv_held;
    uint64_t hold_end_ns; /* 0: not holding */
    bool timed_out, fatal;
};

/* ---------------------------------------------------------------- utils */

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static double ts_s(struct timespec ts)
{
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Expands {s} (subject index), {i} (stream index) and {c} (connection
 * index) in tmpl; the result is truncated to cap - 1 bytes. */
static size_t render(char *out, size_t cap, const char *tmpl, unsigned s, unsigned i, unsigned c)
{
    size_t n = 0;
    for (const char *p = tmpl; *p && n + 1 < cap; p++) {
        if (p[0] == '{' && p[1] && p[2] == '}' && strchr("sic", p[1])) {
            unsigned v = p[1] == 's' ? s : p[1] == 'i' ? i : c;
            int k = snprintf(out + n, cap - n, "%u", v);
            if (k < 0)
                break;
            n += (size_t)k < cap - n ? (size_t)k : cap - n - 1;
            p += 2;
            continue;
        }
        out[n++] = *p;
    }
    out[n] = '\0';
    return n;
}

/* ------------------------------------------------------------ histogram */

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return ((msb - HIST_SUB_BITS + 1) << HIST_SUB_BITS) + (unsigned)((v >> shift) & (HIST_SUB - 1));
}

/* The largest value that falls in bucket idx. */
static uint64_t hist_upper(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned shift = (idx >> HIST_SUB_BITS) - 1;
    uint64_t lower = (uint64_t)(HIST_SUB + (idx & (HIST_SUB - 1))) << shift;
    return lower + ((uint64_t)1 << shift) - 1;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

static void print_hist_ms(const char *name, const struct hist *h, bool raw)
{
    printf(",\"%s\":{\"n\":%" PRIu64, name, h->n);
    if (h->n > 0) {
        printf(",\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f",
               h->sum / (double)h->n / 1e6, (double)hist_quantile(h, 0.5) / 1e6,
               (double)hist_quantile(h, 0.9) / 1e6, (double)hist_quantile(h, 0.99) / 1e6,
               (double)hist_quantile(h, 0.999) / 1e6, (double)h->max / 1e6);
    }
    if (raw) {
        /* Sparse [bucket, count] pairs and the bucket rule, so that runs
         * from several processes merge exactly (bench/benchlib.py). */
        printf(",\"sub_bits\":%u,\"sum_ns\":%.0f,\"max_ns\":%" PRIu64 ",\"buckets\":[",
               HIST_SUB_BITS, h->sum, h->max);
        bool first = true;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
            if (h->b[i]) {
                printf("%s[%u,%" PRIu64 "]", first ? "" : ",", i, h->b[i]);
                first = false;
            }
        }
        putchar(']');
    }
    putchar('}');
}

/* ---------------------------------------------------------------- queue */

static void queue_init(struct queue *q, size_t cap)
{
    q->idx = cl_mem_calloc(cap, sizeof *q->idx);
    q->due_ns = cl_mem_calloc(cap, sizeof *q->due_ns);
    q->cap = cap;
}

static void queue_dispose(struct queue *q)
{
    free(q->idx);
    free(q->due_ns);
    *q = (struct queue){0};
}

static void queue_push(struct queue *q, uint32_t idx, uint64_t due_ns)
{
    if (q->len == q->cap)
        abort(); /* each index is queued at most once, so len <= cap */
    size_t at = (q->head + q->len) % q->cap;
    q->idx[at] = idx;
    q->due_ns[at] = due_ns;
    q->len++;
}

/* The head's index if it is due; -1 otherwise. Delays are equal, so FIFO
 * order is due order. */
static int64_t queue_pop_due(struct queue *q, uint64_t now)
{
    if (q->len == 0 || q->due_ns[q->head] > now)
        return -1;
    uint32_t idx = q->idx[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return idx;
}

/* ------------------------------------------------------------ /proc */

static bool proc_read(int pid, double *cpu_s, double *sys_s, long *rss_kb)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields start after
     * the last ')'. utime and stime are fields 14 and 15. */
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    *sys_s = (double)st / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    *rss_kb = 0;
    if (f) {
        while (fgets(buf, sizeof buf, f)) {
            if (strncmp(buf, "VmRSS:", 6) == 0) {
                *rss_kb = strtol(buf + 6, NULL, 10);
                break;
            }
        }
        fclose(f);
    }
    return true;
}

static void sample_servers(const struct client *cl, struct cpu_sample *out)
{
    for (unsigned i = 0; i < cl->o.npids; i++)
        out->ok[i] = proc_read(cl->o.pids[i].pid, &out->cpu_s[i], &out->sys_s[i], &out->rss_kb[i]);
}

/* ----------------------------------------------------------- SSE parser */

static void on_sse_event(void *ctx, const struct cl_sse_event *ev)
{
    struct stream *s = ctx;
    struct client *cl = s->conn->client;
    const char *p = ev->data;
    size_t n = ev->data_len, i = 0;
    uint64_t ts = 0, seq = 0;
    bool has_seq = false;
    uint64_t now_real = cl_time_real_ns();
    if (cl->o.stamp_after) {
        const char *at = memmem(p, n, cl->o.stamp_after, cl->o.stamp_after_len);
        size_t skip = at ? (size_t)(at - p) + cl->o.stamp_after_len : n;
        p += skip;
        n -= skip;
    }
    while (i < n && i < 20 && p[i] >= '0' && p[i] <= '9')
        ts = ts * 10 + (uint64_t)(p[i++] - '0');
    if (!s->got_event && cl->o.post_body) {
        /* A request stream's first token: its request was the POST itself,
         * in whichever phase it was made. */
        if (ts) {
            s->got_event = true;
            hist_add(&cl->ttfe, cl_time_mono_ns() - s->req_ns);
        }
    } else if (!s->got_event) {
        s->got_event = true;
        /* Only requests made during the window: an initial stream's first
         * event waits for the publisher to start. */
        if (cl->phase >= PHASE_WINDOW && s->req_ns >= cl->window_ns)
            hist_add(&cl->ttfe, cl_time_mono_ns() - s->req_ns);
    }
    if (i > 0 && i < n && p[i] == ' ') {
        size_t j = ++i;
        while (i < n && i - j < 20 && p[i] >= '0' && p[i] <= '9')
            seq = seq * 10 + (uint64_t)(p[i++] - '0');
        has_seq = i > j;
    }
    s->events++;
    if (cl->phase < PHASE_WINDOW)
        return;
    cl->events++;
    if (ts == 0)
        cl->no_ts++;
    else
        hist_add(&cl->lat, now_real > ts ? now_real - ts : 0);
    if (!has_seq)
        return;
    if (s->has_seq) {
        if (seq <= s->last_seq)
            cl->dups++;
        else if (seq > s->last_seq + 1)
            cl->gaps += seq - s->last_seq - 1;
    }
    if (!s->has_seq || seq > s->last_seq)
        s->last_seq = seq;
    s->has_seq = true;
}

static void on_sse_comment(void *ctx, const char *text, size_t len)
{
    struct stream *s = ctx;
    (void)text;
    (void)len;
    if (s->conn->client->phase >= PHASE_WINDOW)
        s->conn->client->comments++;
}

/* event: only names the DOM event; retry: is the server's reconnect
 * hint, which --reopen-ms replaces in a benchmark. */
static const struct cl_sse_callbacks sse_callbacks = {
    .on_event = on_sse_event,
    .on_comment = on_sse_comment,
};

static void feed_body(struct stream *s, const char *p, size_t n)
{
    struct client *cl = s->conn->client;
    if (cl->phase >= PHASE_WINDOW)
        cl->bytes += n;
    cl->bytes_total += n;
    cl_sse_feed(&s->sse, p, n);
}

/* A new response starts: the parser forgets the old one's partial state,
 * but not the last event id or seq, which a resume continues from. */
static void reset_parser(struct stream *s)
{
    cl_sse_restart(&s->sse);
    s->got_event = false;
    s->status = 0;
}

/* --------------------------------------------------- stream lifecycle */

static void mark_dirty(struct conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->client->dirty[c->client->ndirty++] = c;
    }
}

/* The first final status of a slot decides opened or failed; later ones
 * (reopens) are only counted. */
static void on_status(struct stream *s)
{
    struct client *cl = s->conn->client;
    cl->status_counts[s->status < 600 ? s->status : 0]++;
    if (s->status == 200 && !s->opened) {
        s->opened = true;
        cl->opened++;
        if (s->failed) {
            s->failed = false;
            cl->failed--;
        }
        hist_add(&cl->open_lat, cl_time_mono_ns() - s->req_ns);
    } else if (s->status != 200 && !s->opened && !s->failed) {
        s->failed = true;
        cl->failed++;
    }
}

/* A stream's response is over. A churned one comes back at once, one the
 * server ended after --reopen-ms, as an EventSource would. */
static void stream_over(struct stream *s, bool by_server, uint32_t code)
{
    struct client *cl = s->conn->client;
    s->active = false;
    s->id = 0;
    if (cl->phase == PHASE_DONE)
        return;
    if (by_server) {
        if (cl->phase >= PHASE_WINDOW) {
            cl->server_ended++;
            if (code != 0)
                cl->server_reset++;
        }
        cl_log_debug("stream %u ended by the server (status %u, code %u)", s->idx, s->status, code);
    }
    uint64_t delay = s->churning ? 0 : (uint64_t)(cl->o.reopen_s * 1e9);
    s->churning = false;
    if (!s->queued) {
        s->queued = true;
        queue_push(&cl->reopen_q, s->idx, cl_time_mono_ns() + delay);
    }
}

/* ------------------------------------------------------------- HTTP/2 */

static void h2_submit(struct conn *c, struct stream *s)
{
    struct client *cl = c->client;
    const struct opts *o = &cl->o;
    char path[BENCH_PATH_MAX];
    nghttp2_nv nv[8 + BENCH_HEADERS_MAX];
    char clen[24];
    size_t n = 0;
    size_t plen = render(path, sizeof path, o->path_tmpl, s->subject, s->idx, c->no);
    size_t last_len = 0;
    const char *last = cl_sse_last_id(&s->sse, &last_len);
    nv[n++] = cl_h2_nv(":method", o->post_body ? "POST" : "GET");
    nv[n++] = cl_h2_nv(":scheme", "https");
    nv[n++] = cl_h2_nv(":authority", o->target.authority);
    nv[n++] = cl_h2_nv_len(":path", path, plen);
    nv[n++] = cl_h2_nv("accept", "text/event-stream");
    if (!o->no_resume && last && last_len > 0 && !o->post_body)
        nv[n++] = cl_h2_nv_len("last-event-id", last, last_len);
    if (o->post_body) {
        snprintf(clen, sizeof clen, "%zu", o->post_len);
        nv[n++] = cl_h2_nv("content-type", "application/json");
        nv[n++] = cl_h2_nv("content-length", clen);
    }
    for (size_t i = 0; i < o->headers.n; i++)
        nv[n++] = o->headers.nv[i];
    reset_parser(s);
    s->req_ns = cl_time_mono_ns();
    cl->reopened += s->opened && cl->phase >= PHASE_WINDOW;
    s->body = (struct cl_h2_body){.data = o->post_body, .len = o->post_len};
    nghttp2_data_provider dp = cl_h2_body_provider(&s->body);
    int32_t id = nghttp2_submit_request(c->session, NULL, nv, n, o->post_body ? &dp : NULL, s);
    if (id < 0) {
        fprintf(stderr, "sluice-bench: conn %u stream %u: %s\n", c->no, s->idx, nghttp2_strerror(id));
        return;
    }
    s->id = id;
    s->active = true;
    mark_dirty(c);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (s && cl_h2_name_is(name, namelen, ":status"))
        s->status = (uint16_t)cl_h2_status(value, valuelen);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id) {
        struct stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
        if (s && s->status >= 200 && frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
            on_status(s);
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
        cl_log_debug("conn %u: GOAWAY last_stream_id=%d error=%s", c->no,
             frame->goaway.last_stream_id, nghttp2_http2_strerror(frame->goaway.error_code));
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s && s->active && s->id == stream_id)
        feed_body(s, (const char *)data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)user_data;
    struct stream *s = nghttp2_session_get_stream_user_data(session, stream_id);
    if (s && s->active && s->id == stream_id)
        stream_over(s, !s->churning, error_code);
    return 0;
}

static const struct cl_h2_handlers h2_handlers = {
    .on_header = on_header,
    .on_frame_recv = on_frame_recv,
    .on_data_chunk_recv = on_data_chunk_recv,
    .on_stream_close = on_stream_close,
};

/* ------------------------------------------------------------- HTTP/1.1 */

static void h1_request(struct conn *c)
{
    struct client *cl = c->client;
    const struct opts *o = &cl->o;
    struct stream *s = &c->streams[0];
    char path[BENCH_PATH_MAX];
    render(path, sizeof path, o->path_tmpl, s->subject, s->idx, c->no);
    struct cl_buf *out = &c->net.out;
    out->len = c->net.out_off = 0;
    char line[BENCH_PATH_MAX + 512];
    int n = snprintf(line, sizeof line,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n",
                     o->post_body ? "POST" : "GET", path, o->target.authority);
    cl_buf_append(out, line, (size_t)n);
    if (o->post_body) {
        n = snprintf(line, sizeof line,
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n", o->post_len);
        cl_buf_append(out, line, (size_t)n);
    }
    size_t last_len = 0;
    const char *last = cl_sse_last_id(&s->sse, &last_len);
    if (!o->no_resume && last && last_len > 0 && !o->post_body) {
        cl_buf_append(out, "Last-Event-ID: ", 15);
        cl_buf_append(out, last, last_len);
        cl_buf_append(out, "\r\n", 2);
    }
    for (size_t i = 0; i < o->headers.n; i++) {
        const nghttp2_nv *h = &o->headers.nv[i];
        cl_buf_append(out, h->name, h->namelen);
        cl_buf_append(out, ": ", 2);
        cl_buf_append(out, h->value, h->valuelen);
        cl_buf_append(out, "\r\n", 2);
    }
    cl_buf_append(out, "\r\n", 2);
    if (o->post_body)
        cl_buf_append(out, o->post_body, o->post_len);
    reset_parser(s);
    s->req_ns = cl_time_mono_ns();
    cl->reopened += s->opened && cl->phase >= PHASE_WINDOW;
    s->active = true;
    cl_h1_reset(&c->h1);
    mark_dirty(c);
}

/* An interim (1xx) head is not the response's status. */
static void on_h1_head(void *ctx, int status)
{
    struct stream *s = &((struct conn *)ctx)->streams[0];
    if (status < 200)
        return;
    s->status = (uint16_t)status;
    on_status(s);
}

static void on_h1_body(void *ctx, const char *data, size_t len)
{
    feed_body(&((struct conn *)ctx)->streams[0], data, len);
}

static const struct cl_h1_callbacks h1_callbacks = {
    .on_head = on_h1_head,
    .on_body = on_h1_body,
};

/* ---------------------------------------------------------- connections */

static void enqueue_connect(struct conn *c, uint64_t due_ns)
{
    if (!c->queued) {
        c->queued = true;
        queue_push(&c->client->connect_q, c->no, due_ns);
    }
}

static void conn_close(struct conn *c)
{
    struct client *cl = c->client;
    if (c->net.state == CL_CONN_IDLE)
        return;
    if (c->net.state == CL_CONN_CONNECTING || c->net.state == CL_CONN_HANDSHAKE)
        cl->inflight--;
    if (c->session) {
        nghttp2_session_del(c->session);
        c->session = NULL;
    }
    cl_conn_close(&c->net, false);
}

/* The connection is gone: its active streams are over, and it reconnects
 * after --reopen-ms (at once when we closed it to churn its stream). */
static void conn_down(struct conn *c, bool by_server, const char *why)
{
    struct client *cl = c->client;
    bool churn = false;
    bool was_open = c->net.state == CL_CONN_OPEN;
    if (c->net.state == CL_CONN_IDLE)
        return;
    conn_close(c);
    if (cl->phase == PHASE_DONE)
        return;
    for (unsigned i = 0; i < c->nstreams; i++) {
        struct stream *s = &c->streams[i];
        churn = churn || s->churning;
        if (s->active && cl->o.proto == PROTO_H1 && by_server && cl->phase >= PHASE_WINDOW) {
            cl->server_ended++;
        }
        s->active = false;
        s->churning = false;
        s->id = 0;
    }
    if (by_server && !(cl->o.proto == PROTO_H1 && was_open)) {
        if (was_open)
            cl->conns_lost++;
        else
            cl->connect_errors++;
        cl_log_debug("conn %u: %s", c->no, why);
    }
    enqueue_connect(c, cl_time_mono_ns() + (churn ? 0 : (uint64_t)(cl->o.reopen_s * 1e9)));
}

static void fill_h2_output(struct conn *c)
{
    int rv = cl_h2_pull(c->session, &c->net.out, BENCH_OUT_SOFT_BYTES);
    if (rv != 0)
        conn_down(c, true, nghttp2_strerror(rv));
}

static void flush_output(struct conn *c)
{
    const char *why = cl_h2_flush(c->session, &c->net, BENCH_OUT_SOFT_BYTES);
    if (why)
        conn_down(c, true, why);
    else if (c->session && c->net.out.len == 0 && !nghttp2_session_want_read(c->session) &&
             !nghttp2_session_want_write(c->session))
        conn_down(c, true, "session over");
}

static bool on_read(struct cl_conn *net, const char *buf, size_t n)
{
    struct conn *c = container_of(net, struct conn, net);
    if (c->session) {
        ssize_t rv = nghttp2_session_mem_recv(c->session, (const uint8_t *)buf, n);
        if (rv < 0) {
            conn_down(c, true, nghttp2_strerror((int)rv));
            return false;
        }
        return true;
    }
    if (cl_h1_feed(&c->h1, buf, n) < 0) {
        conn_down(c, true, "malformed HTTP/1.1 response");
        return false;
    }
    if (cl_h1_done(&c->h1)) {
        conn_down(c, true, "response complete");
        return false;
    }
    return true;
}

static void read_input(struct conn *c)
{
    ssize_t rc = cl_conn_read(&c->net);
    if (rc == CL_TLS_AGAIN || rc == CL_CONN_STOPPED)
        return;
    conn_down(c, true, rc == 0 ? "peer closed" : cl_conn_error(&c->net));
}

static void start_protocol(struct conn *c)
{
    struct client *cl = c->client;
    if (cl->o.proto == PROTO_H1) {
        h1_request(c);
        cl_conn_watch(&c->net, EV_READ);
        return;
    }
    int rv = cl_h2_session_new(&c->session, &h2_handlers, c, &cl->o.h2);
    if (rv != 0) {
        conn_down(c, true, nghttp2_strerror(rv));
        return;
    }
    for (unsigned i = 0; i < c->nstreams; i++) {
        struct stream *s = &c->streams[i];
        if (s->queued)
            continue; /* the reopen queue submits it when due */
        h2_submit(c, s);
    }
    mark_dirty(c);
    cl_conn_watch(&c->net, EV_READ);
}

static void on_open(struct cl_conn *net)
{
    struct conn *c = container_of(net, struct conn, net);
    char alpn[16];
    c->client->inflight--;
    if (net->ssl)
        cl_tls_alpn(net->ssl, alpn, sizeof alpn);
    if (net->ssl && c->client->o.proto == PROTO_H2 && strcmp(alpn, "h2") != 0) {
        fprintf(stderr, "sluice-bench: conn %u: server did not select h2\n", c->no);
        c->client->fatal = true;
        conn_close(c);
        ev_break(c->client->loop, EVBREAK_ALL);
        return;
    }
    start_protocol(c);
}

static void on_fail(struct cl_conn *net, const char *what, const char *why)
{
    (void)what;
    conn_down(container_of(net, struct conn, net), true, why);
}

static void on_ready(struct cl_conn *net, int revents)
{
    struct conn *c = container_of(net, struct conn, net);
    if ((revents & EV_READ) || net->read_wants_write)
        read_input(c);
    if (net->state == CL_CONN_OPEN && (c->session || (revents & EV_WRITE)))
        mark_dirty(c);
}

static const struct cl_conn_callbacks conn_callbacks = {
    .on_open = on_open,
    .on_fail = on_fail,
    .on_ready = on_ready,
    .on_read = on_read,
};

static void conn_start(struct conn *c)
{
    struct client *cl = c->client;
    if (cl_conn_start(&c->net, cl->o.target.addr) < 0) {
        cl_log_debug("conn %u: %s", c->no, strerror(errno));
        cl->connect_errors++;
        enqueue_connect(c, cl_time_mono_ns() + (uint64_t)(cl->o.reopen_s * 1e9));
        return;
    }
    cl->inflight++;
}

static void pump_connects(struct client *cl, uint64_t now)
{
    while (cl->inflight < cl->o.connect_inflight) {
        int64_t i = queue_pop_due(&cl->connect_q, now);
        if (i < 0)
            return;
        struct conn *c = &cl->conns[i];
        c->queued = false;
        if (c->net.state == CL_CONN_IDLE)
            conn_start(c);
    }
}

static void process_reopens(struct client *cl, uint64_t now)
{
    int64_t i;
    while ((i = queue_pop_due(&cl->reopen_q, now)) >= 0) {
        struct stream *s = &cl->streams[i];
        struct conn *c = s->conn;
        s->queued = false;
        if (s->active || c->net.state != CL_CONN_OPEN)
            continue; /* a reconnecting connection reopens its streams itself */
        if (cl->o.proto == PROTO_H2)
            h2_submit(c, s);
    }
}

/* Closes streams at --churn per second, round robin; each comes back at
 * once with Last-Event-ID. */
static void churn(struct client *cl)
{
    cl->churn_due += cl->o.churn_rate * BENCH_TICK_S;
    for (size_t tries = 0; cl->churn_due >= 1 && tries < cl->nstreams; tries++) {
        struct stream *s = &cl->streams[cl->churn_cursor++ % cl->nstreams];
        struct conn *c = s->conn;
        if (!s->active || s->churning || c->net.state != CL_CONN_OPEN || s->status != 200)
            continue;
        cl->churn_due -= 1;
        cl->churned++;
        s->churning = true;
        if (cl->o.proto == PROTO_H2) {
            nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
            mark_dirty(c);
        } else {
            conn_down(c, false, "churn");
        }
    }
    if (cl->churn_due > 1)
        cl->churn_due = 1; /* not enough open streams: do not build up a debt */
}

/* ------------------------------------------------------------ publisher */

static int http_connect(struct pub *p)
{
    struct timeval tv = {5, 0};
    int one = 1;
    p->fd = socket(p->ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->fd < 0)
        return -1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(p->fd, p->ai->ai_addr, p->ai->ai_addrlen) < 0) {
        close(p->fd);
        p->fd = -1;
        return -1;
    }
    return 0;
}

static int send_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void on_pub_header(void *ctx, int status, const char *name, size_t nlen, const char *value,
                          size_t vlen)
{
    struct pub *p = ctx;
    (void)status;
    if (nlen == 10 && strncasecmp(name, "connection", 10) == 0)
        p->close_after = vlen >= 5 && strncasecmp(value, "close", 5) == 0;
}

/* The answer's body is discarded: only its status counts. */
static const struct cl_h1_callbacks pub_h1_callbacks = {.on_header = on_pub_header};

/* Reads one response (its body discarded); returns its status, or -1.
 * Sets *close_after for "Connection: close". The socket has a receive
 * timeout (http_connect), so a silent peer cannot hold the thread. */
static int http_response(struct pub *p, bool *close_after)
{
    char buf[8192];
    cl_h1_reset(&p->h1);
    p->close_after = false;
    while (!cl_h1_done(&p->h1)) {
        ssize_t r = recv(p->fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0 && cl_h1_eof(&p->h1))
                break;
            return -1;
        }
        if (cl_h1_feed(&p->h1, buf, (size_t)r) < 0)
            return -1;
    }
    *close_after = p->close_after;
    return p->h1.status;
}

static int http_publish(struct pub *p, const char *path, const char *ctype, const char *body,
                        size_t blen)
{
    char head[1024];
    for (int attempt = 0; attempt < 2; attempt++) {
        if (p->fd < 0 && http_connect(p) < 0)
            continue;
        int n = snprintf(head, sizeof head,
                         "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         path, p->authority, ctype, blen);
        bool close_after = false;
        int st = -1;
        if (send_all(p->fd, head, (size_t)n) == 0 && send_all(p->fd, body, blen) == 0)
            st = http_response(p, &close_after);
        if (st < 0 || close_after) {
            close(p->fd);
            p->fd = -1;
        }
        if (st >= 0)
            return st;
    }
    return -1;
}

/* "<19-digit CLOCK_REALTIME ns> <seq> " padded with 'x' to the payload size. */
static size_t make_payload(char *buf, size_t size, uint64_t seq)
{
    int n = snprintf(buf, size + 64, "%019" PRIu64 " %" PRIu64 " ", cl_time_real_ns(), seq);
    size_t len = (size_t)n < size ? size : (size_t)n;
    if ((size_t)n < size)
        memset(buf + n, 'x', size - (size_t)n);
    buf[len] = '\0';
    return len;
}

static void publish_one(struct pub *p, uint64_t n, char *payload, char *body, size_t body_cap)
{
    unsigned k = (unsigned)(n % p->subjects);
    uint64_t seq = n / p->subjects;
    size_t len = make_payload(payload, p->payload, seq);
    int ok = 0;
    if (p->kind == PUB_NATS) {
        natsStatus st = natsConnection_Publish(p->nc, p->subjects_s[k], payload, (int)len);
        ok = st == NATS_OK;
        if (!ok && !p->error[0])
            snprintf(p->error, sizeof p->error, "NATS publish: %s", natsStatus_GetText(st));
    } else if (p->kind == PUB_HTTP) {
        int st = http_publish(p, p->subjects_s[k], "text/plain", payload, len);
        ok = st >= 200 && st < 300;
        if (!ok && !p->error[0])
            snprintf(p->error, sizeof p->error, "HTTP publish: status %d", st);
    } else if (p->kind == PUB_PUSHPIN) {
        /* Pushpin sends http-stream content verbatim: it is the SSE event.
         * The payload holds only digits, spaces and 'x', so no escaping. */
        int bl = snprintf(body, body_cap,
                          "{\"items\":[{\"channel\":\"%s\",\"formats\":{\"http-stream\":"
                          "{\"content\":\"id: %" PRIu64 "\\ndata: %s\\n\\n\"}}}]}",
                          p->subjects_s[k], seq, payload);
        int st = http_publish(p, "/publish/", "application/json", body, (size_t)bl);
        ok = st >= 200 && st < 300;
        if (!ok && !p->error[0])
            snprintf(p->error, sizeof p->error, "Pushpin publish: status %d", st);
    }
    if (!ok)
        p->errors++;
}

static void *pub_main(void *arg)
{
    struct pub *p = arg;
    struct timespec c0, c1;
    size_t body_cap = (size_t)p->payload + 512;
    char *payload = cl_mem_realloc(NULL, (size_t)p->payload + 64);
    char *body = cl_mem_realloc(NULL, body_cap);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    uint64_t t0 = cl_time_mono_ns(), n = 0;
    double ns_per_msg = 1e9 / p->rate;
    while (!atomic_load(&p->stop)) {
        uint64_t now = cl_time_mono_ns();
        uint64_t due = (uint64_t)((double)(now - t0) / ns_per_msg) + 1;
        if (due > n && due - n > p->max_behind)
            p->max_behind = due - n;
        if (p->messages && due > p->messages)
            due = p->messages; /* the cap reached: idle until the window ends */
        while (n < due && !atomic_load(&p->stop)) {
            publish_one(p, n++, payload, body, body_cap);
            atomic_store(&p->published, n);
        }
        uint64_t next = t0 + (uint64_t)((double)n * ns_per_msg);
        now = cl_time_mono_ns();
        if (next > now) {
            uint64_t until = next - now > BENCH_PUB_SLEEP_MAX_NS ? now + BENCH_PUB_SLEEP_MAX_NS : next;
            struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
    }
    p->elapsed_s = (double)(cl_time_mono_ns() - t0) / 1e9;
    if (p->kind == PUB_NATS)
        natsConnection_FlushTimeout(p->nc, 2000);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    p->cpu_s = ts_s(c1) - ts_s(c0);
    free(payload);
    free(body);
    return NULL;
}

static int pub_setup(struct client *cl)
{
    struct pub *p = &cl->pub;
    const struct opts *o = &cl->o;
    p->kind = o->pub;
    p->rate = o->rate;
    p->messages = o->messages;
    p->payload = o->payload;
    p->subjects = o->subjects;
    p->fd = -1;
    cl_h1_init(&p->h1, &pub_h1_callbacks, p, 65536);
    if (p->kind == PUB_NONE || p->rate <= 0)
        return 0;
    p->subjects_s = cl_mem_calloc(o->subjects, sizeof *p->subjects_s);
    for (unsigned k = 0; k < o->subjects; k++) {
        char b[BENCH_PATH_MAX];
        render(b, sizeof b, o->subject_tmpl, k, k, 0);
        p->subjects_s[k] = cl_mem_strndup(b, strlen(b));
    }
    if (p->kind == PUB_NATS) {
        /* SendAsap: each message leaves at once, so its timestamp is its send time. */
        p->nc = cl_nats_connect(o->pub_url, true);
        return p->nc ? 0 : -1;
    }
    /* http://HOST:PORT */
    const char *u = o->pub_url;
    if (strncmp(u, "http://", 7) != 0) {
        fprintf(stderr, "sluice-bench: --pub-url must be http://HOST:PORT for HTTP publishing\n");
        return -1;
    }
    u += 7;
    const char *slash = strchr(u, '/');
    size_t alen = slash ? (size_t)(slash - u) : strlen(u);
    p->authority = cl_mem_strndup(u, alen);
    char *colon = strrchr(p->authority, ':');
    if (!colon) {
        fprintf(stderr, "sluice-bench: --pub-url needs a port\n");
        return -1;
    }
    *colon = '\0';
    const char *why = cl_net_resolve(p->authority, colon + 1, &p->ai);
    *colon = ':';
    if (why) {
        cl_log_error("%s: %s", p->authority, why);
        return -1;
    }
    if (http_connect(p) < 0) {
        fprintf(stderr, "sluice-bench: publisher %s: %s\n", p->authority, strerror(errno));
        return -1;
    }
    return 0;
}

static void pub_start(struct client *cl)
{
    struct pub *p = &cl->pub;
    if (p->kind == PUB_NONE || p->rate <= 0)
        return;
    if (pthread_create(&p->thread, NULL, pub_main, p) != 0) {
        fputs("sluice-bench: cannot start the publisher thread\n", stderr);
        return;
    }
    p->started = true;
}

static void pub_stop(struct pub *p)
{
    if (!p->started)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->thread, NULL);
    p->started = false;
}

static void pub_dispose(struct pub *p)
{
    pub_stop(p);
    if (p->nc)
        natsConnection_Destroy(p->nc);
    if (p->fd >= 0)
        close(p->fd);
    if (p->ai)
        freeaddrinfo(p->ai);
    for (unsigned k = 0; p->subjects_s && k < p->subjects; k++)
        free(p->subjects_s[k]);
    free(p->subjects_s);
    free(p->authority);
    cl_h1_dispose(&p->h1);
}

/* ---------------------------------------------------------------- phases */

static void start_window(struct client *cl, uint64_t now)
{
    cl->phase = PHASE_WINDOW;
    cl->window_ns = now;
    cl->window_real_ns = cl_time_real_ns();
    cl->window_end_ns = now + (uint64_t)(cl->o.duration_s * 1e9);
    cl->open_per_subject = cl_mem_calloc(cl->o.subjects, sizeof *cl->open_per_subject);
    for (size_t i = 0; i < cl->nstreams; i++) {
        const struct stream *s = &cl->streams[i];
        if (s->active && s->status == 200)
            cl->open_per_subject[s->subject]++;
    }
    sample_servers(cl, &cl->srv0);
    getrusage(RUSAGE_SELF, &cl->ru0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cl->th0);
    if (cl->o.ready_file)
        cl_file_write_ready(cl->o.ready_file);
    pub_start(cl);
}

static void end_window(struct client *cl, uint64_t now)
{
    pub_stop(&cl->pub);
    uint64_t n = atomic_load(&cl->pub.published);
    unsigned k = cl->o.subjects;
    cl->expected = 0;
    for (unsigned j = 0; j < k; j++)
        cl->expected += (uint64_t)cl->open_per_subject[j] * (n / k + (j < n % k ? 1 : 0));
    cl->phase = PHASE_DRAIN;
    cl->drain_end_ns = cl_time_mono_ns() + (uint64_t)(cl->o.drain_s * 1e9);
    (void)now;
}

static void finish_run(struct client *cl)
{
    cl->phase = PHASE_DONE;
    cl->done_ns = cl_time_mono_ns();
    sample_servers(cl, &cl->srv1);
    getrusage(RUSAGE_SELF, &cl->ru1);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cl->th1);
    if (cl->o.hold_s > 0 && !cl->timed_out) {
        /* --hold: the streams stay open and idle; on_tick samples and ends. */
        cl->hold_end_ns = cl->done_ns + (uint64_t)(cl->o.hold_s * 1e9);
        return;
    }
    ev_break(cl->loop, EVBREAK_ALL);
}

/* The end of --hold: the servers' memory once the burst has long drained. */
static void end_hold(struct client *cl)
{
    sample_servers(cl, &cl->srv_held);
    cl->hold_end_ns = 0;
    ev_break(cl->loop, EVBREAK_ALL);
}

static void advance(struct client *cl, uint64_t now)
{
    switch (cl->phase) {
    case PHASE_OPENING:
        /* Streams refused at first are retried; the window waits for them
         * while they keep opening, up to --open-timeout. */
        if (cl->opened != cl->opened_seen) {
            cl->opened_seen = cl->opened;
            cl->progress_ns = now;
        }
        if (cl->opened == cl->nstreams ||
            (cl->opened + cl->failed >= cl->nstreams &&
             now - cl->progress_ns >= BENCH_OPEN_STALL_NS) ||
            now - cl->start_ns >= (uint64_t)(cl->o.open_timeout_s * 1e9)) {
            cl->open_ns = now;
            cl->phase = PHASE_SETTLING;
            sample_servers(cl, &cl->srv_open);
            cl_log_debug("%zu of %zu streams open after %.3f s", cl->opened, cl->nstreams,
                 (double)(now - cl->start_ns) / 1e9);
        }
        break;
    case PHASE_SETTLING:
        if (now - cl->open_ns >= (uint64_t)(cl->o.settle_s * 1e9))
            start_window(cl, now);
        break;
    case PHASE_WINDOW:
        /* --messages: the burst is out, so the drain (and its RSS sample) follows it at once. */
        if (now >= cl->window_end_ns ||
            (cl->o.messages && atomic_load(&cl->pub.published) >= cl->o.messages))
            end_window(cl, now);
        break;
    case PHASE_DRAIN:
        if (cl->events >= cl->expected || now >= cl->drain_end_ns)
            finish_run(cl);
        break;
    case PHASE_DONE:
        if (cl->hold_end_ns && now >= cl->hold_end_ns)
            end_hold(cl);
        break;
    }
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct client *cl = container_of(w, struct client, tick);
    uint64_t now = cl_time_mono_ns();
    (void)loop;
    (void)revents;
    pump_connects(cl, now);
    process_reopens(cl, now);
    if (cl->phase == PHASE_WINDOW && cl->o.churn_rate > 0)
        churn(cl);
    advance(cl, now);
}

static void on_hard_limit(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct client *cl = container_of(w, struct client, hard);
    (void)revents;
    (void)loop;
    if (cl->hold_end_ns) {
        end_hold(cl);
        return;
    }
    cl->timed_out = true;
    if (cl->phase < PHASE_WINDOW)
        start_window(cl, cl_time_mono_ns());
    if (cl->phase < PHASE_DRAIN)
        end_window(cl, cl_time_mono_ns());
    finish_run(cl);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct client *cl = container_of(w, struct client, prepare);
    (void)loop;
    (void)revents;
    /* A flush may take a connection down and requeue it; never another
     * onto the list, so the list only shrinks here. */
    while (cl->ndirty > 0) {
        struct conn *c = cl->dirty[--cl->ndirty];
        c->dirty = false;
        if (c->net.state == CL_CONN_OPEN)
            flush_output(c);
    }
    if (cl->phase == PHASE_DRAIN && cl->events >= cl->expected)
        finish_run(cl);
}

/* -------------------------------------------------------------- report */

static void print_report(const struct client *cl)
{
    const struct opts *o = &cl->o;
    double pub_s = cl->pub.elapsed_s > 0 ? cl->pub.elapsed_s : o->duration_s;
    double measured_s = (double)(cl->done_ns - cl->window_ns) / 1e9;
    uint64_t published = atomic_load(&cl->pub.published);
    double cpu_user = tv_s(cl->ru1.ru_utime) - tv_s(cl->ru0.ru_utime);
    double cpu_sys = tv_s(cl->ru1.ru_stime) - tv_s(cl->ru0.ru_stime);
    double main_cpu = ts_s(cl->th1) - ts_s(cl->th0);
    double main_share = measured_s > 0 ? main_cpu / measured_s : 0;
    bool pub_behind = published > 0 && (double)published < 0.97 * o->rate * pub_s;

    printf("{\"tool\":\"sluice-bench\"");
    if (o->label) {
        printf(",\"label\":\"");
        for (const char *p = o->label; *p; p++)
            if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
                putchar(*p);
        putchar('"');
    }
    printf(",\"proto\":\"%s\",\"tls\":%s,\"connections\":%u,\"streams\":%zu,\"subjects\":%u",
           o->proto == PROTO_H2 ? "h2" : "http/1.1", o->plain ? "false" : "true", o->connections,
           cl->nstreams, o->subjects);
    printf(",\"rate\":%.3f,\"payload\":%u,\"duration_s\":%.3f,\"churn_rate\":%.3f", o->rate,
           o->payload, o->duration_s, o->churn_rate);
    printf(",\"streams_open\":%zu,\"streams_failed\":%zu,\"open_s\":%.3f", cl->opened, cl->failed,
           (double)(cl->open_ns - cl->start_ns) / 1e9);
    printf(",\"status_counts\":{");
    bool first = true;
    for (unsigned st = 0; st < 600; st++) {
        if (cl->status_counts[st]) {
            printf("%s\"%u\":%zu", first ? "" : ",", st, cl->status_counts[st]);
            first = false;
        }
    }
    printf("}");
    printf(",\"published\":%" PRIu64 ",\"pub_rate\":%.1f,\"pub_errors\":%" PRIu64
           ",\"pub_max_behind\":%" PRIu64 ",\"pub_behind\":%s",
           published, pub_s > 0 ? (double)published / pub_s : 0.0, cl->pub.errors,
           cl->pub.max_behind, pub_behind ? "true" : "false");
    if (cl->pub.error[0])
        printf(",\"pub_error\":\"%s\"", cl->pub.error);
    printf(",\"expected\":%" PRIu64 ",\"events\":%" PRIu64 ",\"delivered_ratio\":%.4f", cl->expected,
           cl->events, cl->expected ? (double)cl->events / (double)cl->expected : 0.0);
    printf(",\"measured_s\":%.3f,\"events_per_s\":%.1f,\"bytes\":%" PRIu64 ",\"bytes_per_s\":%.1f",
           measured_s, pub_s > 0 ? (double)cl->events / pub_s : 0.0, cl->bytes,
           pub_s > 0 ? (double)cl->bytes / pub_s : 0.0);
    printf(",\"bytes_total\":%" PRIu64, cl->bytes_total);
    printf(",\"comments\":%" PRIu64 ",\"events_without_ts\":%" PRIu64 ",\"gaps\":%" PRIu64
           ",\"dups\":%" PRIu64,
           cl->comments, cl->no_ts, cl->gaps, cl->dups);
    printf(",\"churned\":%" PRIu64 ",\"reopened\":%" PRIu64 ",\"server_ended\":%" PRIu64
           ",\"server_reset\":%" PRIu64 ",\"connections_lost\":%" PRIu64 ",\"connect_errors\":%" PRIu64,
           cl->churned, cl->reopened, cl->server_ended, cl->server_reset, cl->conns_lost,
           cl->connect_errors);
    print_hist_ms("latency_ms", &cl->lat, o->hist);
    print_hist_ms("ttfe_ms", &cl->ttfe, o->hist);
    print_hist_ms("open_ms", &cl->open_lat, false);
    printf(",\"client\":{\"cpu_s\":%.3f,\"user_s\":%.3f,\"sys_s\":%.3f,\"main_thread_cpu_s\":%.3f,"
           "\"main_thread_share\":%.3f,\"pub_cpu_s\":%.3f,\"limited\":%s,\"maxrss_kb\":%ld}",
           cpu_user + cpu_sys, cpu_user, cpu_sys, main_cpu, main_share, cl->pub.cpu_s,
           main_share >= BENCH_CLIENT_LIMIT ? "true" : "false", cl->ru1.ru_maxrss);
    /* Servers: summed per name over their pids. */
    printf(",\"servers\":{");
    const char *names[BENCH_NAMES_MAX];
    unsigned nnames = 0;
    for (unsigned i = 0; i < o->npids; i++) {
        bool seen = false;
        for (unsigned j = 0; j < nnames; j++)
            seen = seen || strcmp(names[j], o->pids[i].name) == 0;
        if (!seen && nnames < BENCH_NAMES_MAX)
            names[nnames++] = o->pids[i].name;
    }
    for (unsigned j = 0; j < nnames; j++) {
        double cpu = 0, sys = 0;
        long rss_open = 0, rss0 = 0, rss1 = 0, rss_held = 0;
        bool ok = true;
        for (unsigned i = 0; i < o->npids; i++) {
            if (strcmp(o->pids[i].name, names[j]) != 0)
                continue;
            ok = ok && cl->srv0.ok[i] && cl->srv1.ok[i];
            cpu += cl->srv1.cpu_s[i] - cl->srv0.cpu_s[i];
            sys += cl->srv1.sys_s[i] - cl->srv0.sys_s[i];
            rss_open += cl->srv_open.rss_kb[i];
            rss0 += cl->srv0.rss_kb[i];
            rss1 += cl->srv1.rss_kb[i];
            rss_held += cl->srv_held.rss_kb[i];
        }
        printf("%s\"%s\":{\"ok\":%s,\"cpu_s\":%.3f,\"sys_s\":%.3f,\"cpu_share\":%.3f,"
               "\"cpu_s_per_M_events\":",
               j ? "," : "", names[j], ok ? "true" : "false", cpu, sys,
               measured_s > 0 ? cpu / measured_s : 0.0);
        if (cl->events > 0)
            printf("%.3f", cpu / (double)cl->events * 1e6);
        else
            printf("null");
        printf(",\"rss_kb_open\":%ld,\"rss_kb_window\":%ld,\"rss_kb_end\":%ld", rss_open, rss0, rss1);
        if (o->hold_s > 0)
            printf(",\"rss_kb_held\":%ld", rss_held);
        printf("}");
    }
    printf("}");
    printf(",\"timed_out\":%s,\"ok\":%s}\n", cl->timed_out ? "true" : "false",
           cl->opened == cl->nstreams ? "true" : "false");
    fflush(stdout);
}

/* ------------------------------------------------------------- options */

static bool on_opt_pid(void *ctx, const char *arg)
{
    struct opts *o = ctx;
    const char *eq = strchr(arg, '=');
    unsigned long long pid;
    if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof o->pids[0].name ||
        o->npids == BENCH_PIDS_MAX || !cl_opt_num(eq + 1, INT32_MAX, &pid))
        return false;
    memcpy(o->pids[o->npids].name, arg, (size_t)(eq - arg));
    o->pids[o->npids].name[eq - arg] = '\0';
    o->pids[o->npids++].pid = (int)pid;
    return true;
}

static bool on_opt_proto(void *ctx, const char *arg)
{
    struct opts *o = ctx;
    o->proto = strcmp(arg, "h1") == 0 ? PROTO_H1 : PROTO_H2;
    return strcmp(arg, "h2") == 0 || strcmp(arg, "h1") == 0;
}

static bool on_opt_pub(void *ctx, const char *arg)
{
    static const char *const names[] = {[PUB_NONE] = "none", [PUB_NATS] = "nats",
                                        [PUB_HTTP] = "http", [PUB_PUSHPIN] = "pushpin"};
    struct opts *o = ctx;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(arg, names[i]) == 0) {
            o->pub = (enum pub_kind)i;
            return true;
        }
    }
    return false;
}

/* 0, 1 after --help, -1 after a usage error (said on stderr). */
static int parse_options(struct opts *o, int argc, char **argv)
{
    double reopen_ms = 100;
    const struct cl_opt opts[] = {
        CL_OPT_GROUP("target"),
        CL_TARGET_OPTS(&o->target),
        CL_OPT_CALL("proto", on_opt_proto, o, "h2|h1",
                    "TLS h2 with S streams per connection (default), or\n"
                    "HTTP/1.1 with one stream per connection"),
        CL_OPT_FLAG("plain", &o->plain, "cleartext (HTTP/1.1 only)"),
        CL_OPT_UINT("connections", &o->connections, 1, 1000000, "C", "connections (default 1)"),
        CL_OPT_UINT("streams", &o->streams, 1, 1000000, "S",
                    "streams per connection (h2; default 1)"),
        CL_OPT_STR("path", &o->path_tmpl, "TEMPLATE",
                   "request path; {s} subject index, {i} stream index,\n"
                   "{c} connection index (default /events/bench.{s})"),
        CL_OPT_UINT("subjects", &o->subjects, 1, 10000000, "K",
                    "stream i listens on subject i mod K (default 1)"),
        CL_OPT_CALL("header", cl_h2_headers_add, &o->headers, "'name: value'",
                    "extra request header (repeatable)"),
        CL_OPT_UINT("window-size", &o->h2.window_size, 0, NGHTTP2_MAX_WINDOW_SIZE, "BYTES",
                    "h2 stream window (default 262144)"),
        CL_OPT_UINT("connect-inflight", &o->connect_inflight, 1, 100000, "N",
                    "handshakes under way at once (default 128)"),
        CL_OPT_GROUP("publisher"),
        CL_OPT_CALL("pub", on_opt_pub, o, "nats|http|pushpin|none", "(default none)"),
        CL_OPT_STR("pub-url", &o->pub_url, "URL", "nats://HOST:PORT, or http://HOST:PORT"),
        CL_OPT_STR("subject", &o->subject_tmpl, "TEMPLATE",
                   "NATS subject, HTTP path or Pushpin channel of\n"
                   "subject {s} (default bench.{s})"),
        CL_OPT_REAL("rate", &o->rate, 1e8, "R",
                    "messages per second, round robin over subjects\n"
                    "(0: nothing is published; streams are held idle)"),
        CL_OPT_ULL("messages", &o->messages, 0, ULLONG_MAX, "N",
                   "publish at most N messages, then end the window (a\n"
                   "burst: --rate high, --messages the burst's size)"),
        CL_OPT_UINT("payload", &o->payload, 40, 1 << 20, "BYTES",
                    "message size, at least 40 (default 100)"),
        CL_OPT_GROUP("run"),
        CL_OPT_REAL("duration", &o->duration_s, 86400, "S", "publishing window (default 10)"),
        CL_OPT_REAL("open-timeout", &o->open_timeout_s, 86400, "S",
                    "streams must open within this (default 30)"),
        CL_OPT_REAL("settle", &o->settle_s, 3600, "S",
                    "pause between open and publish (default 0.25)"),
        CL_OPT_REAL("drain", &o->drain_s, 3600, "S",
                    "wait for in-flight events after the window (default 2)"),
        CL_OPT_REAL("hold", &o->hold_s, 3600, "S",
                    "after the drain, keep every stream open S more seconds,\n"
                    "then sample the servers' RSS again (rss_kb_held)"),
        CL_OPT_REAL("churn", &o->churn_rate, 1e6, "R", "streams closed and reopened per second"),
        CL_OPT_REAL("reopen-ms", &reopen_ms, 600000, "N",
                    "delay before reopening a stream the server ended\n(default 100)"),
        CL_OPT_FLAG("no-resume", &o->no_resume, "reopen without Last-Event-ID"),
        CL_OPT_CALL("server-pid", on_opt_pid, o, "NAME=PID",
                    "sample CPU and RSS of PID (repeatable; summed per NAME)"),
        CL_OPT_STR("ready-file", &o->ready_file, "FILE",
                   "written when the window starts (all streams open)"),
        CL_OPT_STR("label", &o->label, "TEXT", "copied into the report"),
        CL_OPT_FLAG("hist", &o->hist, "include raw histogram buckets (for merging runs)"),
        CL_OPT_FLAG("verbose", &o->verbose, NULL),
        CL_OPT_GROUP("request streams"),
        CL_OPT_STR("post-body", &o->post_body, "JSON",
                   "each stream is a POST of JSON to --path (a request\n"
                   "route); a stream the server ends is POSTed again"),
        CL_OPT_STR("stamp-after", &o->stamp_after, "TEXT",
                   "the \"<ns> <seq> \" stamp follows TEXT in an event's\n"
                   "data (sluice-llm --stamp: '\"content\":\"')"),
    };
    const struct cl_opt_spec spec = {
        .synopsis = "usage: sluice-bench --connect HOST:PORT [options]\n",
        .opts = opts,
        .nopts = sizeof opts / sizeof opts[0],
        .epilogue = "Prints one JSON line. Exit 0 when every stream opened, 1 otherwise, 2 on\n"
                    "usage or setup errors.\n",
    };
    o->connections = o->streams = o->subjects = 1;
    o->path_tmpl = "/events/bench.{s}";
    o->subject_tmpl = "bench.{s}";
    o->headers.max = BENCH_HEADERS_MAX;
    o->h2 = (struct cl_h2_settings){
        .window_size = 262144, .conn_window = BENCH_CONN_WINDOW, .wait_peer_settings = true};
    o->connect_inflight = 128;
    o->duration_s = 10;
    o->open_timeout_s = 30;
    o->settle_s = 0.25;
    o->drain_s = 2;
    o->payload = 100;
    o->pub_url = "nats://127.0.0.1:4222";
    int rc = cl_opt_parse(&spec, argc, argv);
    if (rc != 0)
        return rc;
    o->reopen_s = reopen_ms / 1e3;
    o->post_len = o->post_body ? strlen(o->post_body) : 0;
    o->stamp_after_len = o->stamp_after ? strlen(o->stamp_after) : 0;
    if (o->stamp_after && o->stamp_after_len == 0)
        return cl_opt_fail(&spec, "--stamp-after wants some text");
    if (o->proto == PROTO_H1 && o->streams != 1)
        return cl_opt_fail(&spec, "HTTP/1.1 carries one stream per connection: --streams 1");
    if (o->proto == PROTO_H2 && o->plain)
        return cl_opt_fail(&spec, "--plain is for HTTP/1.1 (h2 here is TLS only)");
    if ((uint64_t)o->connections * o->streams > 10000000)
        return cl_opt_fail(&spec, "too many streams");
    return 0;
}

/* ---------------------------------------------------------------- setup */

static int setup(struct client *cl)
{
    struct opts *o = &cl->o;
    /* Thousands of connections: take the hard fd limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && o->connections + 64 > rl.rlim_cur) {
        fprintf(stderr, "sluice-bench: %u connections need more than the %llu open files allowed;"
                        " split across processes\n",
                o->connections, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    const char *alpn = o->plain ? NULL : o->proto == PROTO_H2 ? "\x02h2" : "\x08http/1.1";
    if (cl_target_open(&o->target, alpn) < 0 || pub_setup(cl) < 0)
        return -1;

    cl->nstreams = (size_t)o->connections * o->streams;
    cl->streams = cl_mem_calloc(cl->nstreams, sizeof *cl->streams);
    cl->conns = cl_mem_calloc(o->connections, sizeof *cl->conns);
    cl->dirty = cl_mem_calloc(o->connections, sizeof *cl->dirty);
    queue_init(&cl->connect_q, o->connections);
    queue_init(&cl->reopen_q, cl->nstreams);

    cl->loop = ev_default_loop(EVFLAG_AUTO);
    if (!cl->loop) {
        fputs("sluice-bench: cannot start libev\n", stderr);
        return -1;
    }
    cl->start_ns = cl_time_mono_ns();
    for (unsigned i = 0; i < o->connections; i++) {
        struct conn *c = &cl->conns[i];
        c->client = cl;
        c->no = i;
        cl_conn_init(&c->net, cl->loop, &conn_callbacks, o->target.tls,
                     cl_target_tls_name(&o->target), !o->target.insecure);
        cl_h1_init(&c->h1, &h1_callbacks, c, BENCH_H1_HEADER_MAX);
        c->nstreams = o->streams;
        c->streams = &cl->streams[(size_t)i * o->streams];
        for (unsigned j = 0; j < o->streams; j++) {
            struct stream *s = &c->streams[j];
            s->conn = c;
            s->idx = (uint32_t)((size_t)i * o->streams + j);
            s->subject = s->idx % o->subjects;
            cl_sse_init(&s->sse, &sse_callbacks, s);
        }
        enqueue_connect(c, 0);
    }
    double hard_s = o->open_timeout_s + o->settle_s + o->duration_s + o->drain_s + o->hold_s + 5;
    ev_timer_init(&cl->tick, on_tick, BENCH_TICK_S, BENCH_TICK_S);
    ev_timer_start(cl->loop, &cl->tick);
    ev_timer_init(&cl->hard, on_hard_limit, hard_s, 0.);
    ev_timer_start(cl->loop, &cl->hard);
    ev_prepare_init(&cl->prepare, on_prepare);
    ev_prepare_start(cl->loop, &cl->prepare);
    pump_connects(cl, cl->start_ns);
    return 0;
}

/* Closes what is open: a GOAWAY where one can be sent at once, no wait. */
static void teardown(struct client *cl)
{
    for (unsigned i = 0; cl->conns && i < cl->o.connections; i++) {
        struct conn *c = &cl->conns[i];
        if (c->net.state == CL_CONN_OPEN && c->session) {
            nghttp2_session_terminate_session(c->session, NGHTTP2_NO_ERROR);
            fill_h2_output(c);
            if (c->net.state == CL_CONN_OPEN)
                cl_conn_send(&c->net);
        }
        conn_close(c);
    }
}

static void dispose(struct client *cl)
{
    struct opts *o = &cl->o;
    teardown(cl);
    pub_dispose(&cl->pub);
    for (size_t i = 0; cl->streams && i < cl->nstreams; i++) {
        cl_sse_dispose(&cl->streams[i].sse);
    }
    for (unsigned i = 0; cl->conns && i < o->connections; i++) {
        cl_conn_dispose(&cl->conns[i].net);
        cl_h1_dispose(&cl->conns[i].h1);
    }
    free(cl->streams);
    free(cl->conns);
    free(cl->dirty);
    free(cl->open_per_subject);
    queue_dispose(&cl->connect_q);
    queue_dispose(&cl->reopen_q);
    if (cl->loop)
        ev_loop_destroy(cl->loop);
    cl_h2_headers_dispose(&o->headers);
    cl_target_dispose(&o->target);
}

/* Sets up, runs and reports: 0 when every stream opened, 1 when not, 2 on a set-up error. */
static int run(struct client *cl)
{
    cl_log_set_verbose(cl->o.verbose);
    signal(SIGPIPE, SIG_IGN);
    if (setup(cl) < 0)
        return 2;
    ev_run(cl->loop, 0);
    if (cl->fatal)
        return 2;
    print_report(cl);
    return cl->opened == cl->nstreams ? 0 : 1;
}

int main(int argc, char **argv)
{
    static struct client cl; /* large (histograms): not on the stack */
    cl_log_init("sluice-bench");
    int rc = parse_options(&cl.o, argc, argv);
    rc = rc == 0 ? run(&cl) : rc > 0 ? 0 : 2;
    bool nats_used = cl.pub.nc != NULL;
    dispose(&cl);
    if (nats_used)
        nats_Close();
    return rc;
}
