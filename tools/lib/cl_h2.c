/*
 * cl_h2: see cl_h2.h.
 */
#include "cl_h2.h"

#include <stdlib.h>
#include <string.h>

#include "cl_conn.h"
#include "cl_mem.h"
#include "cl_opt.h"

/* A callbacks object with h's handlers; NULL when out of memory. */
static nghttp2_session_callbacks *callbacks_new(const struct cl_h2_handlers *h)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    if (h->on_header)
        nghttp2_session_callbacks_set_on_header_callback(cb, h->on_header);
    if (h->on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, h->on_frame_recv);
    if (h->on_data_chunk_recv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, h->on_data_chunk_recv);
    if (h->on_stream_close)
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, h->on_stream_close);
    if (h->on_frame_not_send)
        nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, h->on_frame_not_send);
    return cb;
}

int cl_h2_session_new(nghttp2_session **session, const struct cl_h2_handlers *h,
                      void *user_data, const struct cl_h2_settings *s)
{
    nghttp2_option *opt;
    nghttp2_settings_entry iv[2] = {
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, s->window_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    int rv = nghttp2_option_new(&opt);
    if (rv != 0)
        return rv;
    if (s->manual_window)
        nghttp2_option_set_no_auto_window_update(opt, 1);
    /* nghttp2 assumes 100 until the server's SETTINGS arrive; a server with
     * a lower limit would refuse the excess, so hold every request until
     * its real limit is known (one round trip, already under way). */
    if (s->wait_peer_settings)
        nghttp2_option_set_peer_max_concurrent_streams(opt, 0);
    nghttp2_session_callbacks *callbacks = callbacks_new(h);
    rv = callbacks ? nghttp2_session_client_new2(session, callbacks, user_data, opt)
                   : NGHTTP2_ERR_NOMEM;
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_option_del(opt);
    if (rv != 0) {
        *session = NULL;
        return rv;
    }
    rv = nghttp2_submit_settings(*session, NGHTTP2_FLAG_NONE, iv, 2);
    if (rv == 0 && s->conn_window)
        rv = nghttp2_session_set_local_window_size(*session, NGHTTP2_FLAG_NONE, 0,
                                                   (int32_t)s->conn_window);
    if (rv != 0) {
        nghttp2_session_del(*session);
        *session = NULL;
    }
    return rv;
}


int cl_h2_pull(nghttp2_session *session, struct cl_buf *out, size_t soft_max)
{
    while (out->len < soft_max) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(session, &data);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return 0;
        cl_buf_append(out, data, (size_t)n);
    }
    return 0;
}

int cl_h2_status(const uint8_t *value, size_t len)
{
    int st = 0;
    for (size_t i = 0; i < len && i < 3; i++)
        st = st * 10 + (value[i] - '0');
    return st;
}

bool cl_h2_name_is(const uint8_t *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

nghttp2_nv cl_h2_nv(const char *name, const char *value)
{
    return cl_h2_nv_len(name, value, strlen(value));
}

nghttp2_nv cl_h2_nv_len(const char *name, const char *value, size_t vlen)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), vlen,
                        NGHTTP2_NV_FLAG_NONE};
}

static ssize_t on_body_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct cl_h2_body *b = source->ptr;
    (void)session;
    (void)stream_id;
    (void)user_data;
    size_t n = b->len - b->off;
    if (n > length)
        n = length;
    memcpy(buf, b->data + b->off, n);
    b->off += n;
    if (b->off == b->len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

nghttp2_data_provider cl_h2_body_provider(struct cl_h2_body *b)
{
    b->off = 0;
    return (nghttp2_data_provider){.source.ptr = b, .read_callback = on_body_read};
}

bool cl_h2_headers_add(void *headers, const char *value)
{
    struct cl_h2_headers *h = headers;
    char *name, *v;
    if ((h->max && h->n == h->max) || !cl_opt_header(value, &name, &v))
        return false;
    h->nv = cl_mem_realloc(h->nv, (h->n + 1) * sizeof *h->nv);
    h->nv[h->n++] = cl_h2_nv(name, v);
    return true;
}

void cl_h2_headers_dispose(struct cl_h2_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->nv[i].name);
        free(h->nv[i].value);
    }
    free(h->nv);
    h->nv = NULL;
    h->n = 0;
}

const char *cl_h2_flush(nghttp2_session *s, struct cl_conn *c, size_t soft_max)
{
    if (c->state != CL_CONN_OPEN)
        return NULL;
    for (;;) {
        if (c->out.len == 0 && s) {
            int rv = cl_h2_pull(s, &c->out, soft_max);
            if (rv != 0)
                return nghttp2_strerror(rv);
        }
        if (c->out.len == 0)
            break;
        if (cl_conn_send(c) < 0)
            return cl_conn_error(c);
        if (cl_conn_pending(c))
            break; /* the socket is full: the rest goes when it is writable */
    }
    cl_conn_watch(c, EV_READ | (c->out.len > 0 || c->read_wants_write ? EV_WRITE : 0));
    return NULL;
}
