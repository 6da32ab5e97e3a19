/*
 * h2: the HTTP/2 front end, nghttp2 server session glue (see
 * h2_conn.h; named like h1_conn.c, its calls keep the h2_ prefix).
 *
 * Each request is a `struct req` hung on the nghttp2 stream as user data,
 * around the protocol-neutral `struct request` that the request pipeline
 * serves (request.h). It is handed over as soon as its headers are
 * complete: a request body on GET is never waited for, and nghttp2 keeps
 * consuming (and crediting) whatever DATA still arrives. A req is freed
 * only in on_stream_close, the one place nghttp2 promises never to touch
 * the stream again. What is h2's own stays here: stream ids (HEADERS on
 * skipped ids), the stream-rate bucket, max-requests, frame floods, flow
 * control, and turning the pipeline's heads into nghttp2_nv.
 *
 * Output is bounded by out_max: the send callbacks answer
 * NGHTTP2_ERR_WOULDBLOCK when the connection's buffer is full, and nghttp2
 * keeps the frame for the next fill. A DATA frame is sized (by
 * stream_pending(), in on_read_events) before it may be written, so the
 * bytes it promised survive a slow-consumer cut until they are copied.
 * Bodies are never copied into nghttp2 (NGHTTP2_DATA_FLAG_NO_COPY): SSE
 * straight from the stream queue, whole bodies from the shared file or
 * the request's own block. Waking a deferred stream never sends anything
 * by itself; it marks the connection dirty and the worker's pre-sleep
 * flush does the writing, once per loop iteration.
 */
#include "sluice/h2_conn.h"

#include <inttypes.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/filecache.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/rate.h"
#include "sluice/mem.h"
#include "sluice/request.h"
#include "sluice/slab.h"
#include "sluice/stream.h"

struct req {
    struct h2 *h2;
    struct list node;      /* h2->reqs */
    struct request s;
    bool streaming;        /* the body is s.stream's (SSE); else a whole body below */
    char *text;            /* a whole body's own block, or NULL; text_off <= text_len */
    struct filecache_entry *file; /* or the shared file it lies in, referenced */
    const char *body;      /* the whole body: in text or file */
    size_t text_len, text_off;
};

/*
 * Client stream ids skipped over (RFC 9113 5.1.1: opening a stream closes
 * every idle one below it): a HEADERS on one of them is a connection error.
 * The most recent ranges are kept; a client that skips ids more often than
 * this has older skips forgotten (nghttp2 then ignores such HEADERS).
 */
#define SKIPPED_MAX 16

struct h2 {
    nghttp2_session *session;
    int32_t max_client_id;        /* highest stream id a client HEADERS used; 0 before */
    struct {
        int32_t lo, hi;           /* odd ids lo..hi, inclusive, never opened */
    } skipped[SKIPPED_MAX];
    unsigned nskipped;            /* ranges in skipped; the oldest first */
    bool bad_preface;             /* the client's preface was wrong: its input is ignored */
    struct front_io io;
    struct request_quota quota;      /* bytes and subject patterns held by this connection */
    struct rate_bucket streams;  /* stream-rate: new streams per second, burst of the same */
    unsigned refused_burst;      /* streams refused by the rate limit with no quiet second between */
    double refused_at;           /* the last refusal, monotonic seconds; 0: never */
    uint64_t requests;
    struct list reqs;            /* every req not yet closed */
    size_t nstreams;
};

static struct req *req_of(struct request *s) { return container_of(s, struct req, s); }

static bool has_room(const struct h2 *h2, size_t n)
{
    /* An empty buffer takes any one frame, so a frame larger than out_max still goes. */
    size_t pending = buf_pending(h2->io.out);
    return pending == 0 || pending + n <= h2->io.out_max;
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    (void)session;
    (void)flags;
    struct h2 *h2 = user;
    if (!has_room(h2, len))
        return NGHTTP2_ERR_WOULDBLOCK;
    buf_append(h2->io.out, data, len);
    return (ssize_t)len;
}

static int on_send_data(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user)
{
    (void)session;
    struct h2 *h2 = user;
    struct req *r = source->ptr;
    /* No select_padding callback is set, so frames never carry padding. */
    (void)frame;
    if (!has_room(h2, 9 + length))
        return NGHTTP2_ERR_WOULDBLOCK;
    buf_append(h2->io.out, framehd, 9);
    uint8_t *dst = buf_reserve(h2->io.out, length);
    if (r->streaming) {
        stream_copy(r->s.stream, dst, length);
    } else {
        memcpy(dst, r->body + r->text_off, length);
        r->text_off += length;
        r->s.body_bytes = r->text_off;
    }
    h2->io.out->len += length;
    return 0;
}

static ssize_t on_read_events(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                              uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)session;
    (void)id;
    (void)buf;
    (void)user;
    struct req *r = source->ptr;
    bool eof;
    size_t n = stream_pending(r->s.stream, length, &eof);
    if (n == 0 && !eof)
        return NGHTTP2_ERR_DEFERRED;
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (eof)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static ssize_t on_read_text(nghttp2_session *session, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)session;
    (void)id;
    (void)user;
    (void)buf;
    struct req *r = source->ptr;
    size_t n = r->text_len - r->text_off;
    if (n > length)
        n = length;
    /* Copied by on_send_data once the frame goes out: no copy into nghttp2's buffer. */
    if (n)
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (r->text_off + n == r->text_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Submits head (as nghttp2_nv, nghttp2 copies them) with dp's body, or none. */
static int submit(struct req *r, const struct request_head *head, nghttp2_data_provider *dp)
{
    nghttp2_nv nv[REQUEST_HEAD_MAX + 1];
    char status[4];
    snprintf(status, sizeof(status), "%d", head->status);
    nv[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status),
                         NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < head->n; i++)
        nv[i + 1] = (nghttp2_nv){(uint8_t *)head->f[i].name, (uint8_t *)head->f[i].value,
                                 head->f[i].name_len, head->f[i].value_len, NGHTTP2_NV_FLAG_NONE};
    return nghttp2_submit_response(r->h2->session, r->s.stream_id, nv, head->n + 1, dp);
}

static int on_respond(struct request *s, const struct request_head *head,
                      struct request_body *body)
{
    struct req *r = req_of(s);
    if (!body)
        return submit(r, head, NULL);
    r->text = body->owned;
    r->file = body->file;
    r->body = body->data;
    r->text_len = body->len;
    nghttp2_data_provider dp = {.source.ptr = r, .read_callback = on_read_text};
    return submit(r, head, &dp);
}

static int on_start_stream(struct request *s, const struct request_head *head)
{
    struct req *r = req_of(s);
    nghttp2_data_provider dp = {.source.ptr = r, .read_callback = on_read_events};
    r->streaming = true;
    return submit(r, head, &dp);
}

static int on_reset(struct request *s, enum request_reset why)
{
    struct req *r = req_of(s);
    return nghttp2_submit_rst_stream(r->h2->session, NGHTTP2_FLAG_NONE, s->stream_id,
                                     why == REQUEST_RESET_PROTOCOL ? NGHTTP2_PROTOCOL_ERROR
                                                                   : NGHTTP2_INTERNAL_ERROR);
}

static void on_wake(struct request *s)
{
    struct req *r = req_of(s);
    struct h2 *h2 = r->h2;
    if (!r->streaming) {
        /* A response waiting for its stream (the 200 held for NATS, a poll): nghttp2 queues. */
        if (request_resume(s) != 0)
            on_reset(s, REQUEST_RESET_INTERNAL);
    } else if (stream_ended(s->stream) != STREAM_END_NONE &&
               (nghttp2_session_get_stream_remote_window_size(h2->session, s->stream_id) <= 0 ||
                nghttp2_session_get_remote_window_size(h2->session) <= 0)) {
        /*
         * A stream ended while its client keeps its window shut can never
         * send its final comment: reset it instead, which an EventSource
         * also takes as "reconnect", so that nothing of it lingers.
         */
        log_debug("conn %" PRIu64 " stream %d: window shut; resetting ended stream",
                  h2->io.conn_id, (int)s->stream_id);
        nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
    } else {
        nghttp2_session_resume_data(h2->session, s->stream_id);
    }
    h2->io.dirty(h2->io.dirty_ctx);
}

static const struct request_front front = {
    .protocol = "h2",
    .respond = on_respond,
    .start_stream = on_start_stream,
    .wake = on_wake,
    .reset = on_reset,
};

/* Token bucket: stream-rate per second, bursting up to the same number. */
static bool take_stream_token(struct h2 *h2)
{
    double rate = h2->io.env->cfg->stream_rate;
    return rate_take(&h2->streams, rate, rate, stream_now_s(), 1);
}

static bool was_skipped(const struct h2 *h2, int32_t id)
{
    for (unsigned i = 0; i < h2->nskipped; i++) {
        if (id >= h2->skipped[i].lo && id <= h2->skipped[i].hi)
            return true;
    }
    return false;
}

/*
 * Stream ids, before nghttp2 looks at the frame: libnghttp2 silently
 * ignores a HEADERS on a numerically lower stream that was never opened,
 * where RFC 9113 5.1.1 demands a connection error (h2spec http2/5.1.1/2).
 * Only ids the client skipped are refused: a HEADERS on a stream that was
 * opened (trailers, or one sent before our RST_STREAM reached the client)
 * stays nghttp2's to judge, and PRIORITY frames on idle streams are legal.
 */
static int on_begin_frame(nghttp2_session *session, const nghttp2_frame_hd *hd, void *user)
{
    struct h2 *h2 = user;
    int32_t id = hd->stream_id;
    if (hd->type != NGHTTP2_HEADERS || id <= 0 || (id & 1) == 0)
        return 0;
    if (id > h2->max_client_id) {
        int32_t lo = h2->max_client_id + 2 - (h2->max_client_id == 0 ? 1 : 0);
        if (lo < id) {
            if (h2->nskipped == SKIPPED_MAX) {
                memmove(&h2->skipped[0], &h2->skipped[1],
                        (SKIPPED_MAX - 1) * sizeof(h2->skipped[0]));
                h2->nskipped--;
            }
            h2->skipped[h2->nskipped].lo = lo;
            h2->skipped[h2->nskipped].hi = id - 2;
            h2->nskipped++;
        }
        h2->max_client_id = id;
    } else if (was_skipped(h2, id)) {
        /* on_frame_send logs the GOAWAY; this says why. */
        log_debug("conn %" PRIu64 " %s: HEADERS on stream %d, below %d and never opened",
                 h2->io.conn_id, h2->io.peer, (int)id, (int)h2->max_client_id);
        nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2 *h2 = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    int32_t id = frame->hd.stream_id;
    if (!take_stream_token(h2)) {
        metrics_add(&h2->io.env->stats->stream_rate, 1);
        /*
         * A burst ends only with a quiet second, not with the odd stream a
         * refilled token lets through: a client opening streams just above
         * the rate (or a slow gateway refilling between its frames) would
         * otherwise never trip the cut. One log line per burst.
         */
        double now = stream_now_s();
        if (now - h2->refused_at >= 1.0)
            h2->refused_burst = 0;
        h2->refused_at = now;
        if (++h2->refused_burst == 1)
            log_info("conn %" PRIu64 ": more than %d new streams per second; refusing",
                     h2->io.conn_id, h2->io.env->cfg->stream_rate);
        /* A client that keeps opening streams into a closed bucket is not a browser. */
        if (h2->refused_burst > 1000) {
            /* Counted and logged where the GOAWAY is sent (on_frame_send). */
            nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
            return 0;
        }
        /* No req is hung on it: its headers are ignored, and the client may retry it. */
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    if (++h2->requests == (uint64_t)h2->io.env->cfg->max_requests) {
        /* This one is served; the client opens a new connection for the next. */
        log_info("conn %" PRIu64 ": %d requests; GOAWAY", h2->io.conn_id, h2->io.env->cfg->max_requests);
        metrics_add(&h2->io.env->stats->requests, 1);
        nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR, NULL, 0);
    }
    struct req *r = mem_calloc(1, sizeof(*r));
    r->h2 = h2;
    request_init(&r->s, &front, &h2->io, &h2->quota, id);
    list_insert_tail(&h2->reqs, &r->node);
    nghttp2_session_set_stream_user_data(session, id, r);
    h2->nstreams++;
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    (void)flags;
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct req *r = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (r)
        request_header(&r->s, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *user)
{
    (void)flags;
    (void)user;
    struct req *r = nghttp2_session_get_stream_user_data(session, id);
    /* A body on anything but a pending publish (a GET with a body) is dropped. */
    if (r)
        request_body(&r->s, data, len);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    struct h2 *h2 = user;
    bool request = frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
    bool body_end = (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
                    (frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
    struct req *r = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!r || (!request && !body_end))
        return 0;
    int rv = 0;
    if (request)
        rv = request_process(&r->s);
    if (rv == 0 && body_end)
        rv = request_body_end(&r->s);
    if (rv != 0) {
        log_warn("conn %" PRIu64 " stream %d: cannot respond: %s", h2->io.conn_id,
                 (int)r->s.stream_id, nghttp2_strerror(rv));
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/*
 * A GOAWAY with an error is where nghttp2's own defences (SETTINGS and ACK
 * floods, rapid reset) and ours end a connection: count and log it once,
 * here, whichever decided it.
 */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    (void)session;
    struct h2 *h2 = user;
    if (frame->hd.type != NGHTTP2_GOAWAY || frame->goaway.error_code == NGHTTP2_NO_ERROR)
        return 0;
    uint32_t code = frame->goaway.error_code;
    log_info("conn %" PRIu64 " %s: GOAWAY %s", h2->io.conn_id, h2->io.peer,
             nghttp2_http2_strerror(code));
    if (code == NGHTTP2_ENHANCE_YOUR_CALM || code == NGHTTP2_INTERNAL_ERROR)
        metrics_add(&h2->io.env->stats->flood, 1);
    return 0;
}

static void free_req(struct h2 *h2, struct req *r)
{
    list_remove(&r->node);
    request_dispose(&r->s);
    free(r->text);
    filecache_unref(h2->io.env->files, r->file);
    free(r);
    h2->nstreams--;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code, void *user)
{
    struct h2 *h2 = user;
    struct req *r = nghttp2_session_get_stream_user_data(session, id);
    if (!r)
        return 0;
    log_debug("conn %" PRIu64 " stream %d: closed (%s)", h2->io.conn_id, (int)id,
              nghttp2_http2_strerror(error_code));
    free_req(h2, r);
    return 0;
}

/*
 * nghttp2's memory: malloc, except its one large block per session, the
 * 16 KiB frame buffer, which comes from a slab slot (slab.h). An SSE
 * session serializes only frame headers and HEADERS into it (DATA goes
 * out NO_COPY), so of its five pages one is ever written: 12 KiB less per
 * idle connection than a malloc'd block in recycled, dirty heap.
 */
#define H2_SLAB_MIN 8192 /* bytes; smaller blocks are malloc's */

static void *on_mem_malloc(size_t size, void *user)
{
    (void)user;
    void *p = size >= H2_SLAB_MIN && size <= SLAB_SLOT_BYTES ? slab_alloc() : NULL;
    return p ? p : malloc(size);
}

static void on_mem_free(void *ptr, void *user)
{
    (void)user;
    if (slab_owns(ptr))
        slab_free(ptr);
    else
        free(ptr);
}

static void *on_mem_calloc(size_t n, size_t size, void *user)
{
    (void)user;
    /* A slot is zero pages already: no memset to make them resident. */
    void *p = n && size <= SLAB_SLOT_BYTES / n && n * size >= H2_SLAB_MIN ? slab_alloc() : NULL;
    return p ? p : calloc(n, size);
}

static void *on_mem_realloc(void *ptr, size_t size, void *user)
{
    if (!ptr)
        return on_mem_malloc(size, user); /* how nghttp2 allocates its frame buffer */
    if (!slab_owns(ptr))
        return realloc(ptr, size);
    if (size <= SLAB_SLOT_BYTES)
        return ptr;
    void *p = malloc(size);
    if (p) {
        memcpy(p, ptr, SLAB_SLOT_BYTES);
        slab_free(ptr);
    }
    return p;
}

static nghttp2_mem h2_mem = {
    .malloc = on_mem_malloc,
    .free = on_mem_free,
    .calloc = on_mem_calloc,
    .realloc = on_mem_realloc,
};

static void *h2_new(const struct front_io *io)
{
    const struct request_env *env = io->env;
    struct h2 *h2 = mem_calloc(1, sizeof(*h2));
    h2->io = *io;
    rate_init(&h2->streams, env->cfg->stream_rate, stream_now_s());
    request_quota_init(&h2->quota, env, io->conn_id);
    list_init(&h2->reqs);

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_send_data_callback(cbs, on_send_data);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);

    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* Bounds against SETTINGS and PING floods; the rest of the limits are in config. */
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
#ifdef SLUICE_HAVE_NGHTTP2_RESET_RATE_LIMIT
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
#endif
#ifdef SLUICE_HAVE_NGHTTP2_MAX_CONTINUATIONS
    nghttp2_option_set_max_continuations(opt, 8);
#endif
    nghttp2_session_server_new3(&h2->session, cbs, h2, opt, &h2_mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);

    /* Sent explicitly: browsers assume 100 concurrent streams until they see it. */
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)env->cfg->max_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)env->cfg->max_header_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    return h2;
}

static void h2_free(void *f)
{
    struct h2 *h2 = f;
    if (!h2)
        return;
    /* nghttp2_session_del() calls no callbacks: streams still open are freed here. */
    while (!list_empty(&h2->reqs))
        free_req(h2, container_of(h2->reqs.next, struct req, node));
    request_quota_dispose(&h2->quota);
    nghttp2_session_del(h2->session);
    free(h2);
}

static int h2_recv(void *f, const uint8_t *data, size_t len)
{
    struct h2 *h2 = f;
    if (h2->bad_preface)
        return 0;
    ssize_t n = nghttp2_session_mem_recv(h2->session, data, len);
    if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
        /*
         * RFC 9113 3.4: an invalid preface is a connection error of type
         * PROTOCOL_ERROR. nghttp2 only reports it; the GOAWAY goes out after
         * our SETTINGS, and then the session is finished.
         */
        log_debug("conn %" PRIu64 " %s: invalid HTTP/2 connection preface", h2->io.conn_id,
                  h2->io.peer);
        h2->bad_preface = true;
        nghttp2_session_terminate_session(h2->session, NGHTTP2_PROTOCOL_ERROR);
        return 0;
    }
    if (n < 0) {
        log_info("conn %" PRIu64 ": closing: %s", h2->io.conn_id, nghttp2_strerror((int)n));
        if (n == NGHTTP2_ERR_FLOODED || n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
            metrics_add(&h2->io.env->stats->flood, 1);
        return ERR_PROTO;
    }
    return 0;
}

static int h2_fill(void *f)
{
    struct h2 *h2 = f;
    int rv = nghttp2_session_send(h2->session);
    if (rv != 0) {
        log_info("conn %" PRIu64 ": closing: %s", h2->io.conn_id, nghttp2_strerror(rv));
        return ERR_PROTO;
    }
    return 0;
}

static bool h2_finished(const void *f)
{
    const struct h2 *h2 = f;
    return !nghttp2_session_want_read(h2->session) && !nghttp2_session_want_write(h2->session);
}

static bool h2_unread_input(const void *f)
{
    (void)f; /* nghttp2 reads every frame to its end */
    return false;
}

static size_t h2_streams(const void *f) { return ((const struct h2 *)f)->nstreams; }

static void h2_shutdown_notice(void *f)
{
    nghttp2_submit_shutdown_notice(((struct h2 *)f)->session);
}

static void h2_goaway(void *f)
{
    struct h2 *h2 = f;
    nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h2->session), NGHTTP2_NO_ERROR,
                          NULL, 0);
}

const struct front_ops h2_front_ops = FRONT_OPS(h2, "h2");
