/*
 * cl_h1: see cl_h1.h. A head may end in CRLF CRLF or, from lax peers,
 * LF LF; both are accepted. Transfer-Encoding is chunked when "chunked"
 * appears in it (proxies list codings); Content-Length is its leading
 * digits. A response to a HEAD request is never parsed here.
 */
#include "cl_h1.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

void cl_h1_init(struct cl_h1 *h, const struct cl_h1_callbacks *cb, void *ctx, size_t head_max)
{
    *h = (struct cl_h1){.cb = cb, .ctx = ctx, .head_max = head_max};
}

static bool header_is(const char *name, size_t nlen, const char *want, size_t wlen)
{
    return nlen == wlen && strncasecmp(name, want, wlen) == 0;
}

/* Parses the complete head in h->head; false when it is malformed. */
static bool parse_head(struct cl_h1 *h)
{
    const char *s = h->head.p;
    size_t n = h->head.len;
    const char *eol = memchr(s, '\n', n);
    if (!eol || n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
        return false;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        status = status * 10 + (s[i] - '0');
    }
    h->status = status;
    if (h->cb->on_status)
        h->cb->on_status(h->ctx, status);
    bool chunked = false, have_len = false;
    uint64_t clen = 0;
    const char *line = eol + 1;
    while (line < s + n) {
        const char *end = memchr(line, '\n', (size_t)(s + n - line));
        if (!end)
            break;
        size_t len = (size_t)(end - line);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len == 0)
            break;
        const char *colon = memchr(line, ':', len);
        if (colon) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vlen = len - nlen - 1;
            while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
            }
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (h->cb->on_header)
                h->cb->on_header(h->ctx, status, line, nlen, v, vlen);
            if (header_is(line, nlen, "transfer-encoding", 17)) {
                for (size_t i = 0; i + 7 <= vlen; i++)
                    if (strncasecmp(v + i, "chunked", 7) == 0)
                        chunked = true;
            } else if (header_is(line, nlen, "content-length", 14)) {
                clen = 0;
                for (size_t i = 0; i < vlen && isdigit((unsigned char)v[i]); i++)
                    clen = clen * 10 + (uint64_t)(v[i] - '0');
                have_len = true;
            }
        }
        line = end + 1;
    }
    if (status < 200 || status == 204 || status == 304) {
        h->state = status < 200 ? CL_H1_HEAD : CL_H1_DONE;
    } else if (chunked) {
        h->state = CL_H1_CHUNK_SIZE;
    } else if (have_len) {
        h->state = clen ? CL_H1_BODY_LEN : CL_H1_DONE;
        h->remaining = clen;
    } else {
        h->state = CL_H1_BODY_EOF;
    }
    if (h->cb->on_head)
        h->cb->on_head(h->ctx, status);
    return true;
}

/* Head bytes; returns bytes consumed or an error. */
static ssize_t feed_head(struct cl_h1 *h, const char *s, size_t n)
{
    size_t old = h->head.len;
    size_t take = n;
    if (old + take > h->head_max)
        take = h->head_max - old;
    cl_buf_append(&h->head, s, take);
    const char *p = h->head.p;
    size_t end = 0;
    for (size_t i = old >= 3 ? old - 3 : 0; i + 1 < h->head.len; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i + 1] == '\n') {
            end = i + 2;
            break;
        }
        if (i + 2 < h->head.len && p[i + 1] == '\r' && p[i + 2] == '\n') {
            end = i + 3;
            break;
        }
    }
    if (end == 0)
        return h->head.len >= h->head_max ? CL_H1_E_HEAD_SIZE : (ssize_t)take;
    h->head.len = (uint32_t)end;
    if (!parse_head(h))
        return CL_H1_E_HEAD;
    h->head.len = 0;
    return (ssize_t)(end - old);
}

static uint64_t hex_value(char c)
{
    return (uint64_t)(isdigit((unsigned char)c) ? c - '0' : tolower((unsigned char)c) - 'a' + 10);
}

/* One complete chunk-size, chunk-end or trailer line (without its end). */
static int end_line(struct cl_h1 *h, const char *line, size_t len)
{
    if (h->state == CL_H1_CHUNK_END) {
        if (len != 0)
            return CL_H1_E_CHUNK_END;
        h->state = CL_H1_CHUNK_SIZE;
    } else if (h->state == CL_H1_TRAILERS) {
        if (len == 0)
            h->state = CL_H1_DONE;
    } else {
        uint64_t size = 0;
        size_t i = 0;
        /* Chunk extensions after the digits are ignored; sizes beyond 1 TiB stop growing. */
        for (; i < len && isxdigit((unsigned char)line[i]) && size < (1ull << 40); i++)
            size = size * 16 + hex_value(line[i]);
        if (i == 0)
            return CL_H1_E_CHUNK_SIZE;
        h->remaining = size;
        h->state = size ? CL_H1_CHUNK_DATA : CL_H1_TRAILERS;
    }
    return 0;
}

/* Chunk framing bytes up to the next line end; returns bytes consumed or an error. */
static ssize_t feed_line(struct cl_h1 *h, const char *s, size_t n)
{
    const char *nl = memchr(s, '\n', n);
    size_t take = nl ? (size_t)(nl - s) + 1 : n;
    cl_buf_append(&h->line, s, take);
    if (h->line.len > CL_H1_LINE_MAX)
        return CL_H1_E_LINE_SIZE;
    if (!nl)
        return (ssize_t)take;
    size_t len = h->line.len - 1;
    if (len > 0 && h->line.p[len - 1] == '\r')
        len--;
    h->line.len = 0;
    int rc = end_line(h, h->line.p, len);
    return rc < 0 ? rc : (ssize_t)take;
}

/* Body bytes of a known length; returns bytes consumed. */
static size_t feed_counted(struct cl_h1 *h, const char *s, size_t n, enum cl_h1_state next)
{
    size_t take = n < h->remaining ? n : (size_t)h->remaining;
    if (h->cb->on_body && take > 0)
        h->cb->on_body(h->ctx, s, take);
    h->remaining -= take;
    if (h->remaining == 0)
        h->state = next;
    return take;
}

ssize_t cl_h1_feed(struct cl_h1 *h, const char *s, size_t n)
{
    size_t used = 0;
    while (used < n && h->state != CL_H1_DONE) {
        ssize_t k;
        switch (h->state) {
        case CL_H1_HEAD: k = feed_head(h, s + used, n - used); break;
        case CL_H1_BODY_LEN: k = (ssize_t)feed_counted(h, s + used, n - used, CL_H1_DONE); break;
        case CL_H1_CHUNK_DATA:
            k = (ssize_t)feed_counted(h, s + used, n - used, CL_H1_CHUNK_END);
            break;
        case CL_H1_BODY_EOF:
            if (h->cb->on_body)
                h->cb->on_body(h->ctx, s + used, n - used);
            k = (ssize_t)(n - used);
            break;
        case CL_H1_CHUNK_SIZE:
        case CL_H1_CHUNK_END:
        case CL_H1_TRAILERS: k = feed_line(h, s + used, n - used); break;
        case CL_H1_DONE:
        default: k = 0; break;
        }
        if (k < 0)
            return k;
        used += (size_t)k;
    }
    return (ssize_t)used;
}

bool cl_h1_eof(struct cl_h1 *h)
{
    if (h->state == CL_H1_BODY_EOF)
        h->state = CL_H1_DONE;
    return h->state == CL_H1_DONE;
}

bool cl_h1_done(const struct cl_h1 *h) { return h->state == CL_H1_DONE; }

void cl_h1_reset(struct cl_h1 *h)
{
    h->state = CL_H1_HEAD;
    h->head.len = h->line.len = 0;
    h->remaining = 0;
}

void cl_h1_dispose(struct cl_h1 *h)
{
    cl_buf_dispose(&h->head);
    cl_buf_dispose(&h->line);
    cl_h1_reset(h);
    h->status = 0;
}

const char *cl_h1_strerror(int err)
{
    switch (err) {
    case CL_H1_E_HEAD_SIZE: return "HTTP/1.1 response head too long";
    case CL_H1_E_HEAD: return "malformed HTTP/1.1 response head";
    case CL_H1_E_LINE_SIZE: return "HTTP/1.1 chunk line over 4 KiB";
    case CL_H1_E_CHUNK_END: return "HTTP/1.1 chunk not followed by CRLF";
    case CL_H1_E_CHUNK_SIZE: return "malformed HTTP/1.1 chunk size";
    default: return "malformed HTTP/1.1 response";
    }
}
