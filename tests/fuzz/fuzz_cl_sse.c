/*
 * libFuzzer target: the client library's incremental SSE parser (cl_sse),
 * the one parser sluice-client, sluice-bench and sluice-probe read
 * streams with.
 *
 * Input: the bytes of a response body. Properties checked, beyond ASan's
 * "never reads past the input" (each piece is fed from its own exact-size
 * copy):
 *   - any split gives exactly the callbacks of feeding it at once: events
 *     (data, type, last event id), comments and retry values, and the last
 *     event id at the end; splits tried are one byte at a time and uneven
 *     pieces drawn from the input itself;
 *   - the events agree with the server's own WHATWG parser (sse_parse in
 *     src/core/sse.c, which sees the body without the byte-order mark that a
 *     browser drops);
 *   - restart keeps the last event id and forgets the partial event.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cl_buf.h"
#include "cl_sse.h"
#include "sluice/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct record {
    struct cl_buf all;    /* every callback, serialised */
    struct cl_buf events; /* events only, in sse_parse's terms */
};

static void put_field(struct cl_buf *b, char tag, const char *p, size_t n)
{
    uint32_t len = (uint32_t)n;
    cl_buf_append(b, &tag, 1);
    cl_buf_append(b, &len, sizeof len);
    cl_buf_append(b, p, n);
}

static void on_event(void *ctx, const struct cl_sse_event *ev)
{
    struct record *r = ctx;
    struct cl_buf *bufs[2] = {&r->all, &r->events};
    for (int i = 0; i < 2; i++) {
        put_field(bufs[i], 'D', ev->data, ev->data_len);
        put_field(bufs[i], 'T', ev->type, ev->type_len);
        put_field(bufs[i], 'I', ev->id, ev->id_len);
    }
    if (!ev->has_id && ev->id_len != 0)
        __builtin_trap();
}

static void on_comment(void *ctx, const char *text, size_t len)
{
    put_field(&((struct record *)ctx)->all, 'C', text, len);
}

static void on_retry(void *ctx, const char *value, size_t len)
{
    uint32_t ms = 0;
    struct record *r = ctx;
    put_field(&r->all, 'R', value, len);
    if (cl_sse_retry_ms(value, len, &ms))
        put_field(&r->all, 'M', (const char *)&ms, sizeof ms);
}

static const struct cl_sse_callbacks callbacks = {on_event, on_comment, on_retry};

/* Feeds data in pieces: lens[i] bytes each, cycling; 0 means all at once. */
static void run(const uint8_t *data, size_t size, const uint8_t *lens, size_t nlens,
                struct record *r)
{
    struct cl_sse p;
    cl_sse_init(&p, &callbacks, r);
    for (size_t off = 0, k = 0; off < size; k++) {
        size_t n = nlens ? (size_t)lens[k % nlens] % 17 + 1 : size;
        if (n > size - off)
            n = size - off;
        char *piece = malloc(n);
        memcpy(piece, data + off, n);
        cl_sse_feed(&p, piece, n);
        free(piece);
        off += n;
    }
    size_t len = 0;
    const char *last = cl_sse_last_id(&p, &len);
    put_field(&r->all, 'L', last ? last : "-", last ? len : 1);
    cl_sse_dispose(&p);
}

static bool same(const struct cl_buf *a, const struct cl_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static void dispose(struct record *r)
{
    cl_buf_dispose(&r->all);
    cl_buf_dispose(&r->events);
}

static void on_parsed(void *ctx, const struct sse_parsed *ev)
{
    struct cl_buf *b = ctx;
    put_field(b, 'D', ev->data, ev->data_len);
    put_field(b, 'T', ev->event, ev->event_len);
    put_field(b, 'I', ev->id, ev->id_len);
}

/* After a restart, what the first response left half-parsed is gone, and
 * its last event id stays. */
static void check_restart(const uint8_t *data, size_t size)
{
    struct record a = {0};
    struct cl_sse p;
    size_t half = size / 2;
    cl_sse_init(&p, &callbacks, &a);
    cl_sse_feed(&p, (const char *)data, half);
    size_t len = 0;
    const char *last = cl_sse_last_id(&p, &len);
    char *kept = last ? strndup(last, len) : NULL;
    cl_sse_restart(&p);
    const char *again = cl_sse_last_id(&p, &len);
    if ((kept == NULL) != (again == NULL) ||
        (kept && (strlen(kept) != len || memcmp(kept, again, len) != 0)))
        __builtin_trap();
    /* A blank line right after a restart dispatches nothing. */
    size_t before = a.events.len;
    cl_sse_feed(&p, "\n", 1);
    if (a.events.len != before)
        __builtin_trap();
    free(kept);
    cl_sse_dispose(&p);
    dispose(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct record whole = {0}, bytes = {0}, pieces = {0};
    static const uint8_t one[1] = {0};
    run(data, size, NULL, 0, &whole);
    run(data, size, one, 1, &bytes);
    run(data, size, data, size < 64 ? size : 64, &pieces);
    if (!same(&whole.all, &bytes.all) || !same(&whole.all, &pieces.all))
        __builtin_trap();

    struct cl_buf server = {0};
    size_t skip = size >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    sse_parse((const char *)data + skip, size - skip, on_parsed, &server, NULL);
    if (!same(&whole.events, &server))
        __builtin_trap();

    check_restart(data, size);
    cl_buf_dispose(&server);
    dispose(&whole);
    dispose(&bytes);
    dispose(&pieces);
    return 0;
}
