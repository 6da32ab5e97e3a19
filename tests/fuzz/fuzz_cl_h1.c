/*
 * libFuzzer target: the client library's HTTP/1.1 response parser
 * (cl_h1), which reads the bench's and the probe's HTTP/1.1 streams and
 * the bench publisher's answers.
 *
 * Input: the bytes a server sent. Properties checked, beyond ASan's
 * "never reads past the input" (each piece is fed from its own exact-size
 * copy):
 *   - any split gives exactly the result of feeding it at once: the same
 *     heads, header fields and body bytes, the same error, the same number
 *     of bytes consumed when the response completes; splits tried are one
 *     byte at a time and uneven pieces drawn from the input itself;
 *   - a head never holds more than head_max bytes, and the consumed count
 *     never exceeds what was fed;
 *   - after the input, the connection's end completes exactly a response
 *     whose body runs until the close.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cl_buf.h"
#include "cl_h1.h"

#define HEAD_MAX 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct record {
    struct cl_buf log; /* every callback, serialised; body bytes merged */
    bool in_body;      /* the last entry is body bytes */
};

static void put(struct record *r, char tag, const void *p, size_t n)
{
    uint32_t len = (uint32_t)n;
    cl_buf_append(&r->log, &tag, 1);
    cl_buf_append(&r->log, &len, sizeof len);
    cl_buf_append(&r->log, p, n);
    r->in_body = false;
}

static void on_status(void *ctx, int status) { put(ctx, 'S', &status, sizeof status); }

static void on_header(void *ctx, int status, const char *name, size_t nlen, const char *value,
                      size_t vlen)
{
    (void)status;
    if (vlen > 0 &&
        (value[0] == ' ' || value[0] == '\t' || value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
        __builtin_trap(); /* values come trimmed */
    put(ctx, 'N', name, nlen);
    put(ctx, 'V', value, vlen);
}

static void on_head(void *ctx, int status) { put(ctx, 'H', &status, sizeof status); }

static void on_body(void *ctx, const char *p, size_t n)
{
    struct record *r = ctx;
    if (n == 0)
        __builtin_trap();
    /* Body pieces follow the feed's splits; only their bytes count. */
    if (!r->in_body)
        put(r, 'B', "", 0);
    cl_buf_append(&r->log, p, n);
    r->in_body = true;
}

static const struct cl_h1_callbacks callbacks = {on_status, on_header, on_head, on_body};

struct result {
    struct record rec;
    int err;         /* 0 or the CL_H1_E_* code */
    size_t consumed; /* bytes consumed up to the end of the response or the input */
    bool done, done_at_eof;
};

static void run(const uint8_t *data, size_t size, const uint8_t *lens, size_t nlens,
                struct result *res)
{
    struct cl_h1 h;
    cl_h1_init(&h, &callbacks, &res->rec, HEAD_MAX);
    for (size_t off = 0, k = 0; off < size && !res->err && !res->done; k++) {
        size_t n = nlens ? (size_t)lens[k % nlens] % 23 + 1 : size;
        if (n > size - off)
            n = size - off;
        char *piece = malloc(n);
        memcpy(piece, data + off, n);
        ssize_t used = cl_h1_feed(&h, piece, n);
        free(piece);
        if (used < 0) {
            res->err = (int)used;
            if (cl_h1_strerror(res->err)[0] == '\0')
                __builtin_trap();
            break;
        }
        if ((size_t)used > n || ((size_t)used < n && !cl_h1_done(&h)))
            __builtin_trap();
        if (h.head.len > HEAD_MAX)
            __builtin_trap();
        res->consumed += (size_t)used;
        res->done = cl_h1_done(&h);
        off += n;
    }
    if (!res->err) {
        bool was_eof_body = h.state == CL_H1_BODY_EOF;
        res->done_at_eof = cl_h1_eof(&h);
        if (was_eof_body != (res->done_at_eof && !res->done))
            __builtin_trap();
    }
    cl_h1_dispose(&h);
}

static bool same(const struct result *a, const struct result *b)
{
    if (a->err != b->err || a->done != b->done || a->done_at_eof != b->done_at_eof)
        return false;
    if (!a->err && a->consumed != b->consumed)
        return false;
    return a->rec.log.len == b->rec.log.len &&
           (a->rec.log.len == 0 || memcmp(a->rec.log.p, b->rec.log.p, a->rec.log.len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct result whole = {0}, bytes = {0}, pieces = {0};
    static const uint8_t one[1] = {0};
    run(data, size, NULL, 0, &whole);
    run(data, size, one, 1, &bytes);
    run(data, size, data, size < 64 ? size : 64, &pieces);
    if (!same(&whole, &bytes) || !same(&whole, &pieces))
        __builtin_trap();
    cl_buf_dispose(&whole.rec.log);
    cl_buf_dispose(&bytes.rec.log);
    cl_buf_dispose(&pieces.rec.log);
    return 0;
}
