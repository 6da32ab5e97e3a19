/*
 * test_sse: the SSE encoder, byte for byte.
 *
 * Every case compares the whole body against the exact bytes the SSE
 * grammar needs, and checks that sse_encoded_len() agrees with what
 * sse_event_new() produced. Payloads are copied into buffers of exactly
 * their length first, so a sanitizer build catches any read past len.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/sse.h"

#define ESC_MAX 512

/* Printable form of bytes for failure messages, cut at ESC_MAX. */
static const char *escape(char out[ESC_MAX], const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < ESC_MAX; i++) {
        if (s[i] == '\n') {
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\n");
        } else if (s[i] == '\r') {
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\r");
        } else if (s[i] < 0x20 || s[i] >= 0x7f) {
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\x%02x", s[i]);
        } else {
            out[o++] = (char)s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* A heap copy of exactly n bytes (at least one byte allocated). */
static void *exact_copy(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

static void check_body(const char *name, const void *data, size_t dlen, const char *want,
                       size_t wantlen)
{
    void *copy = exact_copy(data, dlen);
    struct sse_event *ev = sse_event_new(1, 1, name, copy, dlen);
    assert_non_null(ev);
    char e1[ESC_MAX], e2[ESC_MAX], e3[ESC_MAX];
    if (ev->len != wantlen || memcmp(ev->body, want, wantlen) != 0)
        fail_msg("payload \"%s\": body \"%s\" (len %u), want \"%s\" (len %zu)",
                 escape(e1, data, dlen), escape(e2, ev->body, ev->len), (unsigned)ev->len,
                 escape(e3, want, wantlen), wantlen);
    size_t enc = sse_encoded_len(name, copy, dlen);
    if (enc != wantlen)
        fail_msg("payload \"%s\": sse_encoded_len %zu, want %zu", escape(e1, data, dlen), enc,
                 wantlen);
    sse_event_unref(ev);
    free(copy);
}

/* Literal payload and expected body; sizeof keeps embedded NULs and CRs. */
#define CHECK(name, data, want)                                                                    \
    check_body((name), (data), sizeof(data) - 1, (want), sizeof(want) - 1)

static void test_plain_data(void **state)
{
    (void)state;
    CHECK(NULL, "hello", "data: hello\n\n");
}

static void test_event_name(void **state)
{
    (void)state;
    CHECK("price", "hello", "event: price\ndata: hello\n\n");
    CHECK("price", "a\nb", "event: price\ndata: a\ndata: b\n\n");
}

static void test_multiline_lf(void **state)
{
    (void)state;
    CHECK(NULL, "a\nb", "data: a\ndata: b\n\n");
    CHECK(NULL, "one\ntwo\nthree", "data: one\ndata: two\ndata: three\n\n");
}

static void test_multiline_crlf(void **state)
{
    (void)state;
    CHECK(NULL, "a\r\nb", "data: a\ndata: b\n\n");
}

static void test_multiline_lone_cr(void **state)
{
    (void)state;
    CHECK(NULL, "a\rb", "data: a\ndata: b\n\n");
    CHECK(NULL, "a\r", "data: a\ndata: \n\n");
}

static void test_mixed_line_ends(void **state)
{
    (void)state;
    /* CR then CRLF is two line ends; LF then CR is two as well. */
    CHECK(NULL, "a\r\r\nb", "data: a\ndata: \ndata: b\n\n");
    CHECK(NULL, "\n\r", "data: \ndata: \ndata: \n\n");
    CHECK(NULL, "a\n\rb", "data: a\ndata: \ndata: b\n\n");
}

static void test_trailing_lf(void **state)
{
    (void)state;
    CHECK(NULL, "a\n", "data: a\ndata: \n\n");
}

static void test_empty_payload(void **state)
{
    (void)state;
    CHECK(NULL, "", "data: \n\n");
    CHECK("tick", "", "event: tick\ndata: \n\n");
}

static void test_injection_stays_one_event(void **state)
{
    (void)state;
    CHECK(NULL, "a\n\nevent: x", "data: a\ndata: \ndata: event: x\n\n");
    CHECK(NULL, "\r\n\r\n", "data: \ndata: \ndata: \n\n");
    CHECK(NULL, "a\r\n\r\nid: 9\r\nretry: 1", "data: a\ndata: \ndata: id: 9\ndata: retry: 1\n\n");
}

static void test_data_uses_len_not_nul(void **state)
{
    (void)state;
    /* Only the first len bytes are the payload. */
    check_body(NULL, "hello world", 5, "data: hello\n\n", sizeof("data: hello\n\n") - 1);
}

static void test_unsafe_event_names_dropped(void **state)
{
    (void)state;
    CHECK("a\nb", "x", "data: x\n\n");
    CHECK("a\rb", "x", "data: x\n\n");
    CHECK("ab\n", "x", "data: x\n\n");
    CHECK("", "x", "data: x\n\n");
}

static void test_event_name_length_limit(void **state)
{
    (void)state;
    char name[SSE_EVENT_NAME_MAX + 2];
    char want[SSE_EVENT_NAME_MAX + 64];

    /* Exactly SSE_EVENT_NAME_MAX bytes is kept. */
    memset(name, 'n', SSE_EVENT_NAME_MAX);
    name[SSE_EVENT_NAME_MAX] = '\0';
    int n = snprintf(want, sizeof want, "event: %s\ndata: x\n\n", name);
    check_body(name, "x", 1, want, (size_t)n);

    /* One more is dropped. */
    memset(name, 'n', SSE_EVENT_NAME_MAX + 1);
    name[SSE_EVENT_NAME_MAX + 1] = '\0';
    check_body(name, "x", 1, "data: x\n\n", sizeof("data: x\n\n") - 1);
}

static void test_ids_and_len_stored(void **state)
{
    (void)state;
    struct sse_event *ev = sse_event_new(42, 7, "price", "hello", 5);
    assert_non_null(ev);
    assert_int_equal(ev->sub_id, 42);
    assert_int_equal(ev->seq, 7);
    assert_int_equal(ev->len, sizeof("event: price\ndata: hello\n\n") - 1);
    assert_int_equal(sse_encoded_len("price", "hello", 5), ev->len);
    sse_event_unref(ev);

    ev = sse_event_new(UINT64_MAX - 1, UINT64_MAX, NULL, "", 0);
    assert_non_null(ev);
    assert_true(ev->sub_id == UINT64_MAX - 1);
    assert_true(ev->seq == UINT64_MAX);
    sse_event_unref(ev);
}

/* A reference encoder straight from the SSE grammar, to compare against. */
static size_t ref_encode(const char *name, const char *d, size_t n, char *out)
{
    size_t o = 0;
    if (name) {
        memcpy(out + o, "event: ", 7);
        o += 7;
        memcpy(out + o, name, strlen(name));
        o += strlen(name);
        out[o++] = '\n';
    }
    memcpy(out + o, "data: ", 6);
    o += 6;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '\r' || d[i] == '\n') {
            if (d[i] == '\r' && i + 1 < n && d[i + 1] == '\n')
                i++;
            memcpy(out + o, "\ndata: ", 7);
            o += 7;
        } else {
            out[o++] = d[i];
        }
    }
    out[o++] = '\n';
    out[o++] = '\n';
    return o;
}

static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_random_payloads_match_reference(void **state)
{
    (void)state;
    static const char alphabet[] = {'a', 'b', '\r', '\n', ':', ' ', '\0', 'z'};
    char data[64];
    char want[64 * 7 + 64];
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = rng() % sizeof data;
        for (size_t i = 0; i < n; i++)
            data[i] = alphabet[rng() % sizeof alphabet];
        const char *name = (rng() % 3 == 0) ? "ev" : NULL;
        size_t wn = ref_encode(name, data, n, want);
        check_body(name, data, n, want, wn);
    }
}

static void test_large_payload(void **state)
{
    (void)state;
    size_t n = 200000;
    char *data = malloc(n);
    char *want = malloc(n * 7 + 64);
    assert_non_null(data);
    assert_non_null(want);
    for (size_t i = 0; i < n; i++)
        data[i] = (i % 97 == 96) ? '\n' : (i % 251 == 250) ? '\r' : (char)('a' + i % 26);
    size_t wn = ref_encode("bulk", data, n, want);
    check_body("bulk", data, n, want, wn);
    free(want);
    free(data);
}

static void test_refcount(void **state)
{
    (void)state;
    struct sse_event *ev = sse_event_new(1, 1, NULL, "x", 1);
    assert_non_null(ev);
    assert_int_equal(atomic_load(&ev->refs), 1);
    assert_ptr_equal(sse_event_ref(ev), ev);
    assert_int_equal(atomic_load(&ev->refs), 2);
    sse_event_unref(ev);
    assert_int_equal(atomic_load(&ev->refs), 1);
    /* Still readable after the first unref. */
    assert_memory_equal(ev->body, "data: x\n\n", 9);
    sse_event_unref(ev); /* frees; a leak or double free shows under ASan */
}

static void test_unref_null(void **state)
{
    (void)state;
    sse_event_unref(NULL);
}

#define REF_THREADS 4
#define REF_ROUNDS 20000

static void *ref_worker(void *arg)
{
    struct sse_event *ev = arg;
    for (int i = 0; i < REF_ROUNDS; i++) {
        sse_event_ref(ev);
        sse_event_unref(ev);
    }
    return NULL;
}

static void test_refcount_threads(void **state)
{
    (void)state;
    struct sse_event *ev = sse_event_new(1, 1, NULL, "x", 1);
    assert_non_null(ev);
    pthread_t t[REF_THREADS];
    for (int i = 0; i < REF_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, ref_worker, ev), 0);
    for (int i = 0; i < REF_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(atomic_load(&ev->refs), 1);
    sse_event_unref(ev);
}

/* Changes wait in the batch; a flush applies them with one atomic operation each. */
static void test_refs_batch(void **state)
{
    (void)state;
    struct sse_refs r = {0};
    struct sse_event *ev = sse_event_new(1, 1, NULL, "x", 1);
    sse_event_ref(ev); /* the test's own, to look at the count to the end */
    for (int i = 0; i < 5; i++)
        sse_refs_take(&r, ev);
    assert_int_equal(atomic_load(&ev->refs), 2);
    sse_refs_flush(&r);
    assert_int_equal(atomic_load(&ev->refs), 7);
    /* A take and a drop cancel out without touching the count. */
    sse_refs_take(&r, ev);
    sse_refs_drop(&r, ev);
    sse_refs_drop(&r, NULL);
    sse_refs_flush(&r);
    assert_int_equal(atomic_load(&ev->refs), 7);
    for (int i = 0; i < 6; i++)
        sse_refs_drop(&r, ev);
    assert_int_equal(atomic_load(&ev->refs), 7);
    sse_refs_flush(&r);
    assert_int_equal(atomic_load(&ev->refs), 1);
    /* The last reference dropped through a batch frees at the flush (ASan sees a leak if not). */
    sse_refs_drop(&r, ev);
    sse_refs_flush(&r);
    sse_refs_flush(&r); /* an empty batch is fine */
}

/* More events than slots: the oldest slot is applied early, and every count still adds up. */
static void test_refs_more_events_than_slots(void **state)
{
    (void)state;
    enum { N = 3 * SSE_REFS_SLOTS + 1 };
    struct sse_refs r = {0};
    struct sse_event *evs[N];
    for (int i = 0; i < N; i++)
        evs[i] = sse_event_new(1, (uint64_t)i, NULL, "x", 1);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++)
            sse_refs_take(&r, evs[(i * 7) % N]);
    }
    sse_refs_flush(&r);
    for (int i = 0; i < N; i++)
        assert_int_equal(atomic_load(&evs[i]->refs), 4);
    /* Drops from both ends in turn, each event three times. */
    for (int k = 0; k < 3; k++) {
        for (int j = 0; j < N; j++)
            sse_refs_drop(&r, evs[j % 2 ? N - 1 - j / 2 : j / 2]);
    }
    sse_refs_flush(&r);
    for (int i = 0; i < N; i++)
        assert_int_equal(atomic_load(&evs[i]->refs), 1);
    for (int i = 0; i < N; i++)
        sse_refs_drop(&r, evs[i]); /* the last references: freed by eviction or the flush */
    sse_refs_flush(&r);
}

struct refs_job {
    struct sse_event **evs;
    size_t n;
};

/* A worker: holds one reference to each event (its inbox mail's), fans out, releases. */
static void *refs_worker(void *arg)
{
    struct refs_job *job = arg;
    struct sse_refs r = {0};
    for (int round = 0; round < REF_ROUNDS / 10; round++) {
        for (size_t i = 0; i < job->n; i++) {
            for (int k = 0; k < 3; k++)
                sse_refs_take(&r, job->evs[i]);
        }
        if (round % 3 == 0)
            sse_refs_flush(&r);
        for (size_t i = 0; i < job->n; i++) {
            for (int k = 0; k < 3; k++)
                sse_refs_drop(&r, job->evs[(i + (size_t)round) % job->n]);
        }
        if (round % 5 == 0)
            sse_refs_flush(&r);
    }
    for (size_t i = 0; i < job->n; i++)
        sse_refs_drop(&r, job->evs[i]); /* the mail's */
    sse_refs_flush(&r);
    return NULL;
}

/* Threads batching changes to the same events: the counts meet exactly, no early free. */
static void test_refs_threads(void **state)
{
    (void)state;
    enum { N = SSE_REFS_SLOTS + 3 };
    struct sse_event *evs[N];
    for (int i = 0; i < N; i++) {
        evs[i] = sse_event_new(1, (uint64_t)i, NULL, "x", 1);
        for (int t = 0; t < REF_THREADS; t++)
            sse_event_ref(evs[i]); /* one mail per worker */
    }
    struct refs_job job = {evs, N};
    pthread_t t[REF_THREADS];
    for (int i = 0; i < REF_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, refs_worker, &job), 0);
    for (int i = 0; i < REF_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&evs[i]->refs), 1);
        sse_event_unref(evs[i]);
    }
}

static void test_format_retry(void **state)
{
    (void)state;
    char out[SSE_LINE_MAX];
    size_t n = sse_format_retry(out, 3000);
    assert_int_equal(n, sizeof("retry: 3000\n\n") - 1);
    assert_memory_equal(out, "retry: 3000\n\n", n);

    n = sse_format_retry(out, 0);
    assert_int_equal(n, sizeof("retry: 0\n\n") - 1);
    assert_memory_equal(out, "retry: 0\n\n", n);

    n = sse_format_retry(out, UINT_MAX);
    assert_int_equal(n, sizeof("retry: 4294967295\n\n") - 1);
    assert_memory_equal(out, "retry: 4294967295\n\n", n);
}

static void test_format_comment(void **state)
{
    (void)state;
    char out[SSE_LINE_MAX];
    size_t n = sse_format_comment(out, "hb");
    assert_int_equal(n, 6);
    assert_memory_equal(out, ": hb\n\n", 6);

    n = sse_format_comment(out, "0123456789");
    assert_int_equal(n, 14);
    assert_memory_equal(out, ": 0123456789\n\n", 14);
}

static void test_format_comment_truncates(void **state)
{
    (void)state;
    enum { GUARD = 32 };
    unsigned char out[SSE_LINE_MAX + GUARD];
    char text[300];
    memset(text, 'c', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    memset(out, 0x5a, sizeof out);

    size_t n = sse_format_comment((char *)out, text);
    assert_true(n < SSE_LINE_MAX);
    assert_true(n >= SSE_LINE_MAX / 2); /* truncated, not emptied */
    assert_memory_equal(out, ": ", 2);
    assert_memory_equal(out + n - 2, "\n\n", 2);
    for (size_t i = 2; i < n - 2; i++)
        assert_int_equal(out[i], 'c');
    /* Nothing written past the SSE_LINE_MAX room the caller promised. */
    for (size_t i = SSE_LINE_MAX; i < sizeof out; i++)
        assert_int_equal(out[i], 0x5a);
}

struct parsed {
    int n;
    char ids[4][32], events[4][32], data[4][64];
};

static void on_parsed(void *ctx, const struct sse_parsed *ev)
{
    struct parsed *p = ctx;
    if (p->n >= 4)
        return;
    snprintf(p->ids[p->n], 32, "%.*s", (int)ev->id_len, ev->id);
    snprintf(p->events[p->n], 32, "%.*s", (int)ev->event_len, ev->event);
    snprintf(p->data[p->n], 64, "%.*s", (int)ev->data_len, ev->data);
    p->n++;
}

static void expect_u64(uint64_t v)
{
    char want[32], got[SSE_U64_DIGITS_MAX + 1];
    int wn = snprintf(want, sizeof(want), "%" PRIu64, v);
    memset(got, 'x', sizeof(got));
    size_t n = sse_format_u64(got, v);
    assert_int_equal(n, (size_t)wn);
    assert_memory_equal(got, want, n);
    assert_int_equal(got[n], 'x'); /* nothing written past the digits, no NUL */
}

static void test_format_u64_matches_printf(void **state)
{
    (void)state;
    /* Every length and both sides of each power of ten, then random values. */
    uint64_t p = 1;
    for (int i = 0; i < 20; i++) {
        expect_u64(p - 1);
        expect_u64(p);
        expect_u64(p + 1);
        if (i < 19)
            p *= 10;
    }
    expect_u64(UINT64_MAX);
    expect_u64(UINT64_MAX - 1);
    expect_u64(1732432345123456ULL);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        expect_u64(x >> (x & 63));
    }
}

static void test_parse_whatwg(void **state)
{
    (void)state;
    static const char in[] = "retry: 3000\nid: 7\n\n: comment\r\n"
                             "id: 8\r\nevent: price\r\ndata: a\r\ndata:b\r\n\r\n"
                             "data\rdata: c\r\r"
                             "data: no blank line after this";
    struct parsed p = {0};
    char *last = NULL;
    sse_parse(in, sizeof(in) - 1, on_parsed, &p, &last);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.ids[0], "8");
    assert_string_equal(p.events[0], "price");
    assert_string_equal(p.data[0], "a\nb");
    assert_string_equal(p.ids[1], "8"); /* the last event ID carries over */
    assert_string_equal(p.events[1], "");
    assert_string_equal(p.data[1], "\nc");
    assert_string_equal(last, "8");
    free(last);
}

static void test_parse_reads_back_encoder(void **state)
{
    (void)state;
    static const char payload[] = "a\r\n\revent: evil\ndata: x";
    struct sse_event *ev = sse_event_new(1, 1, "price", payload, sizeof(payload) - 1);
    struct parsed p = {0};
    sse_parse(ev->body, ev->len, on_parsed, &p, NULL);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.events[0], "price");
    assert_string_equal(p.data[0], "a\n\nevent: evil\ndata: x");
    sse_event_unref(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_whatwg),
        cmocka_unit_test(test_parse_reads_back_encoder),
        cmocka_unit_test(test_plain_data),
        cmocka_unit_test(test_event_name),
        cmocka_unit_test(test_multiline_lf),
        cmocka_unit_test(test_multiline_crlf),
        cmocka_unit_test(test_multiline_lone_cr),
        cmocka_unit_test(test_mixed_line_ends),
        cmocka_unit_test(test_trailing_lf),
        cmocka_unit_test(test_empty_payload),
        cmocka_unit_test(test_injection_stays_one_event),
        cmocka_unit_test(test_data_uses_len_not_nul),
        cmocka_unit_test(test_unsafe_event_names_dropped),
        cmocka_unit_test(test_event_name_length_limit),
        cmocka_unit_test(test_ids_and_len_stored),
        cmocka_unit_test(test_random_payloads_match_reference),
        cmocka_unit_test(test_large_payload),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_unref_null),
        cmocka_unit_test(test_refcount_threads),
        cmocka_unit_test(test_format_retry),
        cmocka_unit_test(test_format_comment),
        cmocka_unit_test(test_format_comment_truncates),
        cmocka_unit_test(test_format_u64_matches_printf),
        cmocka_unit_test(test_refs_batch),
        cmocka_unit_test(test_refs_more_events_than_slots),
        cmocka_unit_test(test_refs_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
