/*
 * libFuzzer target: HTTP/1.1 request heads and chunked bodies.
 *
 * Input: one flags byte (limits, body limit), then the bytes a client sent.
 * They go through the head parser, and then through the chunked decoder:
 * the bytes after the head when the head asks for chunked, the whole input
 * otherwise. Properties checked, beyond ASan's "never reads past the input":
 *   - a finished head lies within the input, ends in CRLF CRLF, and every
 *     part of it obeys the grammar the parser promises;
 *   - an error carries one of the documented statuses and a one-line reason;
 *   - feeding the bytes one at a time, or in uneven pieces, gives exactly
 *     the result of feeding them at once; the bytes not yet "received" are
 *     poisoned, so even a read inside the buffer but past len is caught;
 *   - the chunked decoder agrees with itself the same way, in place too,
 *     never writes more than it reads, and stays within the body limit;
 *   - a connection's worth of pipelined requests, heads and bodies read the
 *     way the HTTP/1.1 front end reads them (every body through
 *     h1_body_read, dropped in place, before the next head): the requests
 *     found, where they start and where their bodies end, are the same
 *     whatever pieces the bytes arrive in, and no request starts inside
 *     the bytes of a head or a body before it;
 *   - a head from the input followed by a body framed as it declares
 *     (content made of the rest of the input, which may itself look like
 *     requests) and then "GET /second": exactly two requests are found, and
 *     the second is /second (request smuggling through a body).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/h1_parse.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) __asan_poison_memory_region((p), (n))
#define UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(struct h1_str s)
{
    if (!s.p || s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (!is_tchar((unsigned char)s.p[i]))
            return false;
    }
    return true;
}

static bool inside(struct h1_str s, const char *buf, size_t len)
{
    return s.p >= buf && s.len <= len && (size_t)(s.p - buf) <= len - s.len;
}

static void check_status(int rc, int status, const char *reason)
{
    CHECK(reason && reason[0] && !strpbrk(reason, "\r\n"));
    if (rc == ERR_PROTO)
        CHECK(status == 400 || status == 501 || status == 505);
    else
        CHECK(rc == ERR_LIMIT && (status == 413 || status == 414 || status == 431));
}

static void check_request(const struct h1_request *r, const char *buf, size_t len)
{
    size_t n = r->head_len;
    CHECK(n >= 4 && n <= len && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
    CHECK(is_token(r->method) && inside(r->method, buf, n));
    CHECK(r->minor == 0 || r->minor == 1);
    CHECK(r->target.len > 0);
    if (!(r->target.len == 1 && r->target.p[0] == '/' && !inside(r->target, buf, n))) {
        CHECK(inside(r->target, buf, n));
        for (size_t i = 0; i < r->target.len; i++)
            CHECK((unsigned char)r->target.p[i] > 0x20 && (unsigned char)r->target.p[i] < 0x7f);
    }
    CHECK(r->target.p[0] == '/' || (r->target.len == 1 && r->target.p[0] == '*'));
    if (r->authority.p)
        CHECK(r->authority.len > 0 && inside(r->authority, buf, n));
    if (r->minor == 1)
        CHECK(r->host.p != NULL);
    if (r->host.p)
        CHECK(inside(r->host, buf, n));
    CHECK(r->nheaders <= H1_HEADERS_MAX);
    for (size_t k = 0; k < r->nheaders; k++) {
        const struct h1_header *h = &r->headers[k];
        CHECK(is_token(h->name) && inside(h->name, buf, n) && inside(h->value, buf, n));
        CHECK(h->name.p[h->name.len] == ':');
        for (size_t i = 0; i < h->value.len; i++) {
            unsigned char c = (unsigned char)h->value.p[i];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (h->value.len)
            CHECK(h->value.p[0] != ' ' && h->value.p[0] != '\t' &&
                  h->value.p[h->value.len - 1] != ' ' && h->value.p[h->value.len - 1] != '\t');
        /* Lookup finds the first header of each name. */
        char name[64];
        if (h->name.len < sizeof name) {
            memcpy(name, h->name.p, h->name.len);
            name[h->name.len] = '\0';
            const struct h1_header *first = h1_header_next(r, name, NULL);
            CHECK(first && first <= h);
        }
    }
    /* Framing is never ambiguous. */
    if (r->body == H1_BODY_CHUNKED)
        CHECK(r->minor == 1 && !h1_header(r, "content-length"));
    if (r->body != H1_BODY_LENGTH)
        CHECK(r->content_length == 0);
    if (r->body == H1_BODY_NONE)
        CHECK(!h1_header(r, "content-length") && !h1_header(r, "transfer-encoding"));
    if (r->upgrade_h2c)
        CHECK(r->minor == 1 && r->upgrade.p && r->http2_settings.p);
    if (r->expect_continue)
        CHECK(r->minor == 1);
}

struct head_result {
    int rc, status;
    const char *reason;
    struct h1_request req;
};

/* Feeds buf[0..size) to a fresh parser one byte at a time, or in pseudo-random pieces. */
static void parse_pieces(char *buf, size_t size, const struct h1_limits *lim, uint32_t seed,
                         bool one_byte, struct head_result *out)
{
    struct h1_parser p;
    h1_parser_init(&p, lim);
    POISON(buf, size);
    size_t len = 0;
    int rc = ERR_AGAIN;
    while (rc == ERR_AGAIN) {
        size_t step = 1;
        if (!one_byte) {
            seed = seed * 1103515245u + 12345u;
            step = (seed >> 16) % 97;
        }
        if (step > size - len)
            step = size - len;
        UNPOISON(buf + len, step);
        len += step;
        rc = h1_parse(&p, buf, len, &out->req);
        if (len == size)
            break;
    }
    UNPOISON(buf, size);
    out->rc = rc;
    out->status = rc == ERR_PROTO || rc == ERR_LIMIT ? p.status : 0;
    out->reason = rc == ERR_PROTO || rc == ERR_LIMIT ? p.reason : NULL;
}

static bool same_head(const struct head_result *a, const struct head_result *b)
{
    if (a->rc != b->rc || a->status != b->status || a->reason != b->reason)
        return false;
    return a->rc != 0 || memcmp(&a->req, &b->req, sizeof(a->req)) == 0;
}

static struct head_result fuzz_head(char *buf, size_t size, uint8_t flags)
{
    static const struct h1_limits small = {
        .head_max = 200, .request_line_max = 60, .headers_max = 4};
    const struct h1_limits *lim = (flags & 1) ? &small : NULL;
    struct head_result once, other;
    struct h1_parser p;

    h1_parser_init(&p, lim);
    once.rc = h1_parse(&p, buf, size, &once.req);
    once.status = once.rc == ERR_PROTO || once.rc == ERR_LIMIT ? p.status : 0;
    once.reason = once.rc == ERR_PROTO || once.rc == ERR_LIMIT ? p.reason : NULL;
    if (once.rc == 0)
        check_request(&once.req, buf, size);
    else if (once.rc == ERR_AGAIN)
        CHECK(size < (lim ? small.head_max : H1_HEAD_MAX));
    else
        check_status(once.rc, once.status, once.reason);

    parse_pieces(buf, size, lim, 0, true, &other);
    CHECK(same_head(&once, &other));
    parse_pieces(buf, size, lim, (uint32_t)size, false, &other);
    CHECK(same_head(&once, &other));
    return once;
}

struct body_result {
    int rc, status;
    size_t consumed, produced;
};

/* Decodes in[0..size) in pieces (step 0: at once) into out, which has room for size bytes. */
static struct body_result decode_pieces(char *in, size_t size, uint64_t body_max, size_t step,
                                        char *out)
{
    struct h1_chunked c;
    struct body_result r = {ERR_AGAIN, 0, 0, 0};
    h1_chunked_init(&c, body_max);
    POISON(in, size);
    size_t at = 0;
    do {
        size_t piece = step && step < size - at ? step : size - at;
        UNPOISON(in + at, piece);
        size_t used = 0, made = 0;
        r.rc = h1_chunked_decode(&c, in + at, piece, &used, out + r.produced, &made);
        CHECK(used <= piece && made <= used);
        CHECK(r.rc != ERR_AGAIN || used == piece);
        at += used;
        r.produced += made;
    } while (r.rc == ERR_AGAIN && at < size);
    UNPOISON(in, size);
    r.consumed = at;
    CHECK(c.total == r.produced && c.total <= body_max);
    if (r.rc == ERR_PROTO || r.rc == ERR_LIMIT) {
        r.status = c.status;
        check_status(r.rc, c.status, c.reason);
    } else if (r.rc == 0) {
        CHECK(r.consumed >= 5 && memcmp(in + r.consumed - 2, "\r\n", 2) == 0);
    }
    return r;
}

static void fuzz_chunked(const char *in, size_t size, uint8_t flags)
{
    static const uint64_t maxes[4] = {0, 64, 1 << 20, UINT64_MAX};
    uint64_t body_max = maxes[(flags >> 1) & 3];
    char *buf = malloc(size ? size : 1);
    char *out1 = malloc(size ? size : 1);
    char *out2 = malloc(size ? size : 1);
    if (!buf || !out1 || !out2)
        abort();
    if (size)
        memcpy(buf, in, size);

    struct body_result once = decode_pieces(buf, size, body_max, 0, out1);
    static const size_t steps[] = {1, 3};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        struct body_result other = decode_pieces(buf, size, body_max, steps[s], out2);
        CHECK(other.rc == once.rc && other.status == once.status &&
              other.produced == once.produced && memcmp(out1, out2, once.produced) == 0);
        CHECK(once.rc != 0 || other.consumed == once.consumed);
    }

    /* In place: out is in itself. */
    struct h1_chunked c;
    size_t used, made;
    h1_chunked_init(&c, body_max);
    int rc = h1_chunked_decode(&c, buf, size, &used, buf, &made);
    CHECK(rc == once.rc && made == once.produced && memcmp(buf, out1, made) == 0);
    free(out2);
    free(out1);
    free(buf);
}

/* Bytes of a body the simulated connection reads and drops; as HTTP1_DISCARD_MAX. */
#define DISCARD_MAX 65536
#define REQUESTS_MAX 64

struct pipeline {
    size_t n;                    /* requests found */
    size_t start[REQUESTS_MAX];  /* stream offset of each head */
    size_t end[REQUESTS_MAX];    /* stream offset after its body */
    bool second[REQUESTS_MAX];   /* its target is "/second" */
    int last;                    /* how the stream ended: ERR_AGAIN, or the error */
};

/*
 * Reads stream[0..size) as one connection, in pieces (step 0: at once),
 * the way src/proto/h1_conn.c does: a growing input buffer, each head parsed from
 * its start, each body read through h1_body_read and dropped in place
 * before the next head is looked at. Stops at the first error, or at a
 * body too large to drop (the front end closes the connection there).
 */
static void pipeline(const char *stream, size_t size, uint32_t seed, bool one_byte,
                     struct pipeline *out)
{
    char *in = malloc(size ? size : 1);
    if (!in)
        abort();
    size_t off = 0, len = 0, at = 0; /* in[off..len) pending; at: stream offset of in[off] */
    struct h1_parser p;
    struct h1_body_reader body;
    bool in_body = false;
    int rc = ERR_AGAIN;
    h1_parser_init(&p, NULL);
    memset(out, 0, sizeof(*out));
    size_t fed = 0;
    while (fed < size || rc != ERR_AGAIN) {
        if (rc == ERR_AGAIN) {
            size_t step = size - fed;
            if (one_byte) {
                step = 1;
            } else if (seed) {
                seed = seed * 1103515245u + 12345u;
                step = 1 + (seed >> 16) % 300;
            }
            if (step > size - fed)
                step = size - fed;
            /* The front end's buffer moves what is pending to its start. */
            if (off) {
                memmove(in, in + off, len - off);
                len -= off;
                off = 0;
            }
            memcpy(in + len, stream + fed, step);
            len += step;
            fed += step;
        }
        if (in_body) {
            size_t used = 0, made = 0;
            rc = h1_body_read(&body, in + off, len - off, &used, in + off, &made);
            CHECK(used <= len - off && made <= used);
            off += used;
            at += used;
            if (rc == ERR_AGAIN)
                continue;
            if (rc != 0)
                break;
            in_body = false;
            out->end[out->n - 1] = at;
            h1_parser_init(&p, NULL);
            rc = len > off ? 0 : ERR_AGAIN;
            continue;
        }
        struct h1_request rq;
        rc = h1_parse(&p, in + off, len - off, &rq);
        if (rc == ERR_AGAIN)
            continue;
        if (rc != 0 || out->n == REQUESTS_MAX)
            break;
        out->start[out->n] = at;
        out->second[out->n] = rq.target.len == 7 && memcmp(rq.target.p, "/second", 7) == 0;
        out->n++;
        off += rq.head_len;
        at += rq.head_len;
        if (h1_body_reader_init(&body, &rq, DISCARD_MAX) != 0) {
            rc = ERR_LIMIT;
            break;
        }
        in_body = true;
        rc = 0; /* go on with what is buffered, even nothing: an empty body completes */
    }
    out->last = rc;
    free(in);
}

static void check_pipeline(const struct pipeline *a, size_t size)
{
    for (size_t i = 0; i < a->n; i++) {
        /* Each request starts where the one before it ended, never inside its bytes. */
        CHECK(a->start[i] < size);
        if (i > 0)
            CHECK(a->start[i] >= a->end[i - 1] && a->end[i - 1] > a->start[i - 1]);
        if (i + 1 < a->n)
            CHECK(a->end[i] > a->start[i] && a->end[i] <= a->start[i + 1]);
    }
}

static bool same_pipeline(const struct pipeline *a, const struct pipeline *b)
{
    if (a->n != b->n || a->last != b->last)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (a->start[i] != b->start[i] || a->second[i] != b->second[i])
            return false;
        /* The last request's body may be unfinished: its end is unset then. */
        if (i + 1 < a->n && a->end[i] != b->end[i])
            return false;
    }
    return true;
}

static void fuzz_pipeline(const char *buf, size_t size)
{
    struct pipeline once, other;
    pipeline(buf, size, 0, false, &once);
    check_pipeline(&once, size);
    if (size <= 8192) { /* byte by byte: the cost of a long input is not worth it */
        pipeline(buf, size, 0, true, &other);
        CHECK(same_pipeline(&once, &other));
    }
    pipeline(buf, size, (uint32_t)size | 1, false, &other);
    CHECK(same_pipeline(&once, &other));
}

static const char SECOND[] = "GET /second HTTP/1.1\r\nHost: x\r\n\r\n";

/*
 * head (a parsed request with a body), then a body framed as it declares,
 * made of content (the rest of the input, repeated as needed), then
 * SECOND: a connection must find exactly the head's request and /second.
 */
static void fuzz_framed(const char *buf, const struct h1_request *rq, const char *content,
                        size_t clen, uint8_t flags)
{
    if (rq->body == H1_BODY_NONE || rq->expect_continue)
        return;
    if (rq->body == H1_BODY_LENGTH && rq->content_length > DISCARD_MAX)
        return;
    size_t body_len = rq->body == H1_BODY_LENGTH ? (size_t)rq->content_length : clen;
    /* Chunked framing: at most 10 bytes of size line and CRLF per data byte, plus the end. */
    size_t cap = rq->head_len + (rq->body == H1_BODY_CHUNKED ? 12 * body_len + 16 : body_len) +
                 sizeof(SECOND);
    char *s = malloc(cap);
    if (!s)
        abort();
    memcpy(s, buf, rq->head_len);
    size_t n = rq->head_len;
    if (rq->body == H1_BODY_LENGTH) {
        for (size_t i = 0; i < body_len; i++)
            s[n++] = clen ? content[i % clen] : 'x';
    } else {
        /* Chunks of sizes from the flags: 1, 2, 7 or 300 bytes, the last one shorter. */
        static const size_t sizes[4] = {1, 2, 7, 300};
        size_t piece = sizes[(flags >> 3) & 3];
        for (size_t i = 0; i < body_len; i += piece) {
            size_t k = body_len - i < piece ? body_len - i : piece;
            n += (size_t)snprintf(s + n, cap - n, "%zx\r\n", k);
            memcpy(s + n, content + i, k);
            n += k;
            s[n++] = '\r';
            s[n++] = '\n';
        }
        memcpy(s + n, "0\r\n\r\n", 5);
        n += 5;
    }
    memcpy(s + n, SECOND, sizeof(SECOND) - 1);
    n += sizeof(SECOND) - 1;
    CHECK(n <= cap);

    struct pipeline a, b;
    pipeline(s, n, 0, false, &a);
    check_pipeline(&a, n);
    /* The body cannot be too large to read here, so both requests are found, no more. */
    CHECK(a.n == 2 && !a.second[0] && a.second[1]);
    CHECK(a.start[1] == n - (sizeof(SECOND) - 1));
    pipeline(s, n, (uint32_t)n | 1, false, &b);
    CHECK(same_pipeline(&a, &b));
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    uint8_t flags = data[0];
    size--;
    char *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    if (size)
        memcpy(buf, data + 1, size);

    struct head_result head = fuzz_head(buf, size, flags);
    if (head.rc == 0 && head.req.body == H1_BODY_CHUNKED)
        fuzz_chunked(buf + head.req.head_len, size - head.req.head_len, flags);
    else
        fuzz_chunked(buf, size, flags);

    fuzz_pipeline(buf, size);
    if (head.rc == 0 && !(flags & 1))
        fuzz_framed(buf, &head.req, buf + head.req.head_len, size - head.req.head_len, flags);

    /* The response formatter never lets a value split the head. */
    if (head.rc == 0 && head.req.nheaders > 0) {
        char name[64], value[256], out[512];
        const struct h1_header *h = &head.req.headers[0];
        if (h->name.len < sizeof name && h->value.len < sizeof value) {
            memcpy(name, h->name.p, h->name.len);
            name[h->name.len] = '\0';
            memcpy(value, h->value.p, h->value.len);
            value[h->value.len] = '\0';
            const char *fields[] = {name, value, NULL};
            int n = h1_format_head(out, sizeof out, 200, fields);
            /* Whatever the parser accepts, the formatter takes, and it stays one head. */
            CHECK(n > 0 && memmem(out, (size_t)n, "\r\n\r\n", 4) == out + n - 4);
        }
    }
    free(buf);
    return 0;
}
