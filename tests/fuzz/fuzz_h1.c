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
 *     never writes more than it reads, and stays within the body limit.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/h1.h"

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
