/*
 * test_stream: one SSE response's byte sequence, caps, wake-ups and end.
 *
 * Streams run on a fanout without a bus: topics are local, their sub ids
 * are 1, 2, … in the order patterns are first joined, and every resume
 * reports "unknown". Events are delivered the way the worker does it
 * (fanout_deliver), and every case reads the whole byte sequence back
 * with stream_pending()/stream_copy() and compares it with the exact
 * bytes a client must see. Wake-ups are counted per stream and the totals
 * asserted. A sanitizer build catches leaked or doubly dropped references.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sluice/fanout.h"
#include "sluice/sse.h"
#include "sluice/stream.h"

#define BIG ((size_t)1 << 30)
#define RETRY_MS 1000
#define HEARTBEAT_MS 1000
#define ESC_MAX 1024
#define READ_MAX 65536

#define START1 "retry: 1000\nid: 0\n\n"
#define SLOW ": slow consumer, reconnect to resume\n\n"
#define SHUTDOWN ": server shutting down, reconnect\n\n"
#define HELLO "data: hello\n\n" /* the body of an event with data "hello" */

/* One worker's world: a fanout without a bus, its env and one connection. */
struct fx {
    struct fanout *fanout;
    struct stream_env env;
    struct stream_budget conn;
};

/* A stream under test and the wake-ups it made. */
struct ts {
    struct stream *s;
    unsigned wakes;
};

static void on_wake(void *ctx) { ((struct ts *)ctx)->wakes++; }

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    fx->fanout = fanout_new(NULL, 0, stream_on_event, stream_on_ready, stream_on_replayed);
    stream_env_init(&fx->env, fx->fanout, HEARTBEAT_MS, BIG);
    fx->conn = (struct stream_budget){0, BIG};
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    /* Every test frees its streams: nothing may stay joined or counted. */
    size_t topics = fanout_topics(fx->fanout);
    uint64_t open = atomic_load(&fx->env.stats.open);
    stream_env_flush(&fx->env); /* frees what the streams released last */
    fanout_free(fx->fanout);
    free(fx);
    if (topics != 0 || open != 0) {
        fprintf(stderr, "teardown: %zu topics and %u streams left\n", topics, (unsigned)open);
        return -1;
    }
    return 0;
}

/* ev's references, once the streams' batched changes are applied. */
static unsigned refs_of(struct fx *fx, struct sse_event *ev)
{
    stream_env_flush(&fx->env);
    return atomic_load(&ev->refs);
}

/* Printable form of bytes for failure messages, cut at ESC_MAX. */
static const char *escape(char out[ESC_MAX], const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < ESC_MAX; i++) {
        if (s[i] == '\n')
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\n");
        else if (s[i] < 0x20 || s[i] >= 0x7f)
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\x%02x", s[i]);
        else
            out[o++] = (char)s[i];
    }
    out[o] = '\0';
    return out;
}

struct open_args {
    char *const *subjects;
    size_t nsubjects;
    const char *last_id;
    size_t queue_max;
    unsigned jitter_pct;
    struct stream_budget *conn; /* NULL: the fixture's */
};

static void open_with(struct fx *fx, struct ts *t, const struct open_args *a)
{
    t->wakes = 0;
    struct stream_params p = {
        .env = &fx->env,
        .conn_budget = a->conn ? a->conn : &fx->conn,
        .subjects = a->subjects,
        .nsubjects = a->nsubjects,
        .last_event_id = a->last_id,
        .retry_ms = RETRY_MS,
        .jitter_pct = a->jitter_pct,
        .queue_max = a->queue_max ? a->queue_max : BIG,
        .wake = on_wake,
        .wake_ctx = t,
        .conn_id = 1,
        .stream_id = 1,
    };
    t->s = stream_new(&p);
    assert_non_null(t->s);
    /* Never from inside stream_new. */
    assert_int_equal(t->wakes, 0);
}

/* A stream on one subject, fresh unless last_id is set. */
static void open1(struct fx *fx, struct ts *t, const char *subject, const char *last_id,
                  size_t queue_max)
{
    char *subs[] = {(char *)subject};
    open_with(fx, t, &(struct open_args){subs, 1, last_id, queue_max, 0, NULL});
}

/* Delivers one event of the topic with sub id `sub` the way the worker does. */
static void deliver(struct fx *fx, uint64_t sub, uint64_t seq, const char *name, const char *data)
{
    struct sse_event *ev = sse_event_new(sub, seq, name, data, strlen(data));
    fanout_deliver(fx->fanout, ev);
    sse_refs_drop(&fx->env.refs, ev); /* as the worker drops its inbox mail's reference */
    stream_env_flush(&fx->env);
}

/* Reads at most max bytes into out (room for READ_MAX); returns how many. */
static size_t read_some(struct ts *t, char *out, size_t max, bool *eof)
{
    size_t n = stream_pending(t->s, max, eof);
    assert_true(n <= max);
    assert_true(n <= READ_MAX);
    if (n)
        stream_copy(t->s, (uint8_t *)out, n);
    return n;
}

/* Everything queued must be exactly want, and eof must be want_eof afterwards. */
static void expect_bytes_n(struct ts *t, const char *want, size_t wantlen, bool want_eof)
{
    static char got[READ_MAX];
    bool eof;
    size_t queued = stream_queued(t->s);
    size_t n = read_some(t, got, READ_MAX, &eof);
    char e1[ESC_MAX], e2[ESC_MAX];
    if (n != wantlen || memcmp(got, want, n) != 0)
        fail_msg("read \"%s\" (%zu), want \"%s\" (%zu)", escape(e1, got, n), n,
                 escape(e2, want, wantlen), wantlen);
    assert_int_equal(n, queued);
    assert_int_equal(stream_queued(t->s), 0);
    if (eof != want_eof)
        fail_msg("eof %d after \"%s\", want %d", eof, escape(e1, want, wantlen), want_eof);
    /* Nothing left: a second look agrees. */
    assert_int_equal(stream_pending(t->s, READ_MAX, &eof), 0);
    assert_int_equal(eof, want_eof);
}

#define EXPECT(t, lit) expect_bytes_n((t), (lit), sizeof(lit) - 1, false)
#define EXPECT_END(t, lit) expect_bytes_n((t), (lit), sizeof(lit) - 1, true)

/* Reads exactly n bytes and checks them. */
static void expect_prefix(struct ts *t, const char *want, size_t n)
{
    char got[READ_MAX];
    bool eof;
    char e1[ESC_MAX], e2[ESC_MAX];
    assert_int_equal(read_some(t, got, n, &eof), n);
    if (memcmp(got, want, n) != 0)
        fail_msg("read \"%s\", want \"%s\"", escape(e1, got, n), escape(e2, want, n));
}

static uint64_t counter(atomic_uint_fast64_t *c) { return (uint64_t)atomic_load(c); }

/* ---- start ---- */

static void test_start_bytes(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    assert_int_equal(stream_retry_ms(t.s), RETRY_MS);
    assert_int_equal(stream_ended(t.s), STREAM_END_NONE);
    assert_int_equal(stream_queued(t.s), sizeof(START1) - 1);
    assert_int_equal(counter(&fx->env.stats.opened), 1);
    assert_int_equal(counter(&fx->env.stats.open), 1);
    assert_int_equal(counter(&fx->env.stats.with_last_id), 0);
    assert_int_equal(counter(&fx->env.stats.resets), 0);
    /* The start is the stream's own: never charged. */
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    EXPECT(&t, START1);
    assert_int_equal(fanout_topics(fx->fanout), 1);

    char *two[] = {"a", "b"}, *three[] = {"x", "y", "z"};
    struct ts t2, t3;
    open_with(fx, &t2, &(struct open_args){two, 2, NULL, 0, 0, NULL});
    open_with(fx, &t3, &(struct open_args){three, 3, NULL, 0, 0, NULL});
    EXPECT(&t2, "retry: 1000\nid: 0-0\n\n");
    EXPECT(&t3, "retry: 1000\nid: 0-0-0\n\n");
    assert_int_equal(fanout_topics(fx->fanout), 5);
    assert_int_equal(counter(&fx->env.stats.opened), 3);
    assert_int_equal(counter(&fx->env.stats.open), 3);
    assert_int_equal(t.wakes + t2.wakes + t3.wakes, 0);

    stream_free(t.s);
    stream_free(t2.s);
    stream_free(t3.s);
    assert_int_equal(counter(&fx->env.stats.open), 0);
    assert_int_equal(counter(&fx->env.stats.opened), 3);
    assert_int_equal(fanout_topics(fx->fanout), 0);
}

static void test_retry_jitter(void **state)
{
    struct fx *fx = *state;
    char *subs[] = {"a"};
    for (int i = 0; i < 50; i++) {
        struct ts t;
        open_with(fx, &t, &(struct open_args){subs, 1, NULL, 0, 10, NULL});
        unsigned r = stream_retry_ms(t.s);
        assert_in_range(r, 900, 1100);
        char want[64];
        int n = snprintf(want, sizeof want, "retry: %u\nid: 0\n\n", r);
        expect_bytes_n(&t, want, (size_t)n, false);
        stream_free(t.s);
    }
}

/* ---- live events ---- */

static void test_live_event_bytes(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    EXPECT(&t, START1);

    deliver(fx, 1, 1, NULL, "hello");
    assert_int_equal(stream_queued(t.s), 19);
    /* Live bytes, head and body, are charged to all three caps. */
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 19);
    assert_int_equal(fx->conn.used, 19);
    assert_int_equal(fx->env.budget.used, 19);
    deliver(fx, 1, 2, NULL, "a\nb");
    deliver(fx, 1, 12345678901234567890u, NULL, "");
    EXPECT(&t, "id: 1\n" HELLO "id: 2\ndata: a\ndata: b\n\n"
               "id: 12345678901234567890\ndata: \n\n");
    assert_int_equal(counter(&fx->env.stats.events_queued), 3);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);

    /* Another topic's events are not ours. */
    deliver(fx, 2, 99, NULL, "other");
    EXPECT(&t, "");
    stream_free(t.s);
}

static void test_event_name_line(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    EXPECT(&t, START1);
    deliver(fx, 1, 4, "tick", "x");
    deliver(fx, 1, 5, "bad\nname", "y"); /* unsafe name: left out */
    EXPECT(&t, "id: 4\nevent: tick\ndata: x\n\nid: 5\ndata: y\n\n");
    stream_free(t.s);
}

static void test_composite_ids(void **state)
{
    struct fx *fx = *state;
    char *ab[] = {"a", "b"}, *ba[] = {"b", "a"};
    struct ts t, u;
    open_with(fx, &t, &(struct open_args){ab, 2, NULL, 0, 0, NULL}); /* a = 1, b = 2 */
    EXPECT(&t, "retry: 1000\nid: 0-0\n\n");

    deliver(fx, 1, 5, NULL, "a5");
    deliver(fx, 2, 3, NULL, "b3");
    deliver(fx, 1, 7, NULL, "a7");
    deliver(fx, 2, 2, NULL, "b2"); /* at or below b's position */
    deliver(fx, 2, 9, NULL, "b9");
    EXPECT(&t, "id: 5-0\ndata: a5\n\n"
               "id: 5-3\ndata: b3\n\n"
               "id: 7-3\ndata: a7\n\n"
               "id: 7-9\ndata: b9\n\n");

    /* Positions are in each stream's own request order. */
    open_with(fx, &u, &(struct open_args){ba, 2, NULL, 0, 0, NULL});
    EXPECT(&u, "retry: 1000\nid: 0-0\n\n");
    assert_int_equal(fanout_topics(fx->fanout), 2);
    deliver(fx, 1, 11, NULL, "a11");
    deliver(fx, 2, 12, NULL, "b12");
    EXPECT(&t, "id: 11-9\ndata: a11\n\nid: 11-12\ndata: b12\n\n");
    EXPECT(&u, "id: 0-11\ndata: a11\n\nid: 12-11\ndata: b12\n\n");
    stream_free(t.s);
    stream_free(u.s);
}

/*
 * Id digits are formatted once per worker and copied whole (20 bytes) into
 * each id line: long and short parts in any order, the largest sequence,
 * and one value on both subjects still give exact lines.
 */
static void test_id_digits_of_any_length(void **state)
{
    struct fx *fx = *state;
    char *ab[] = {"a", "b"};
    struct ts t, one;
    open_with(fx, &t, &(struct open_args){ab, 2, NULL, 0, 0, NULL});
    open1(fx, &one, "a", NULL, 0);
    EXPECT(&t, "retry: 1000\nid: 0-0\n\n");
    EXPECT(&one, START1);
    deliver(fx, 1, 1732432345123456ULL, NULL, "x");
    deliver(fx, 2, 7, NULL, "y");
    deliver(fx, 2, UINT64_MAX, NULL, "z");
    deliver(fx, 1, UINT64_MAX, NULL, "w");
    EXPECT(&t, "id: 1732432345123456-0\ndata: x\n\n"
               "id: 1732432345123456-7\ndata: y\n\n"
               "id: 1732432345123456-18446744073709551615\ndata: z\n\n"
               "id: 18446744073709551615-18446744073709551615\ndata: w\n\n");
    EXPECT(&one, "id: 1732432345123456\ndata: x\n\nid: 18446744073709551615\ndata: w\n\n");
    stream_free(t.s);
    stream_free(one.s);
}

/* Delivers an end marker (Sse-End) of topic sub: with data, an event; without, none. */
static void deliver_end(struct fx *fx, uint64_t sub, uint64_t seq, const char *data)
{
    struct sse_event *ev = data ? sse_event_new(sub, seq, NULL, data, strlen(data))
                                : sse_event_new_end(sub, seq);
    ev->end = true;
    fanout_deliver(fx->fanout, ev);
    sse_refs_drop(&fx->env.refs, ev); /* as the worker drops its inbox mail's reference */
    stream_env_flush(&fx->env);
}

/* A finished subject ends its stream cleanly after the end: no comment, eof. */
static void test_end_finishes(void **state)
{
    struct fx *fx = *state;
    struct ts t, u;
    open1(fx, &t, "job", NULL, 0);
    open1(fx, &u, "job", NULL, 0);
    EXPECT(&t, START1);
    EXPECT(&u, START1);
    deliver(fx, 1, 4, "progress", "50%");
    deliver_end(fx, 1, 5, "done");
    deliver(fx, 1, 6, NULL, "after the end");
    EXPECT_END(&t, "id: 4\nevent: progress\ndata: 50%\n\nid: 5\ndata: done\n\n");
    assert_int_equal(stream_ended(t.s), STREAM_END_FINISHED);
    assert_false(stream_over(t.s));
    /* An end without a body moves the id only. */
    stream_free(t.s);
    EXPECT_END(&u, "id: 4\nevent: progress\ndata: 50%\n\nid: 5\ndata: done\n\n");
    stream_free(u.s);
    open1(fx, &t, "job2", NULL, 0);
    EXPECT(&t, START1);
    deliver_end(fx, 2, 9, NULL);
    EXPECT_END(&t, "id: 9\n\n");
    assert_int_equal(stream_dispatchable(t.s), 0);
    stream_free(t.s);
    assert_int_equal(counter(&fx->env.stats.ended[STREAM_END_FINISHED]), 3);
}

/* Two subjects: one end ends that subject only; the second end ends the stream. */
/* Revocation: by principal or by overlapping subject, with a final event naming the reason. */
static void test_revoke(void **state)
{
    struct fx *fx = *state;
    struct ts a, b, c;
    char *one[] = {"orders.eu"}, *two[] = {"news", "prices.x"};
    struct stream_params p = {
        .env = &fx->env, .conn_budget = &fx->conn, .subjects = one, .nsubjects = 1,
        .retry_ms = RETRY_MS, .queue_max = BIG, .wake = on_wake, .wake_ctx = &a,
        .principal = "alice",
    };
    a.wakes = 0;
    a.s = stream_new(&p);
    assert_string_equal(stream_principal(a.s), "alice");
    p.subjects = two;
    p.nsubjects = 2;
    p.principal = "bob";
    p.wake_ctx = &b;
    b.wakes = 0;
    b.s = stream_new(&p);
    open1(fx, &c, "orders.us", NULL, 0);
    assert_null(stream_principal(c.s));
    EXPECT(&a, START1);
    EXPECT(&b, "retry: 1000\nid: 0-0\n\n");
    EXPECT(&c, START1);
    assert_int_equal(stream_env_revoke(&fx->env, "carol", "other.>", "x"), 0);
    assert_int_equal(stream_env_revoke(&fx->env, "alice", NULL, "logout"), 1);
    EXPECT_END(&a, "event: revoked\ndata: logout\n\n");
    assert_int_equal(stream_ended(a.s), STREAM_END_REVOKED);
    assert_true(a.wakes > 0);
    /* A pattern overlapping one subject of several is enough; an ended stream is not counted. */
    assert_int_equal(stream_env_revoke(&fx->env, "alice", "prices.*", "moved"), 1);
    EXPECT_END(&b, "event: revoked\ndata: moved\n\n");
    /* The longest reason a revocation may carry (200 bytes) arrives whole. */
    char reason[201], want[300];
    memset(reason, 'r', 200);
    reason[200] = '\0';
    snprintf(want, sizeof(want), "event: revoked\ndata: %s\n\n", reason);
    assert_int_equal(stream_env_revoke(&fx->env, NULL, "orders.>", reason), 1);
    expect_bytes_n(&c, want, strlen(want), true);
    stream_free(a.s);
    stream_free(b.s);
    stream_free(c.s);
    assert_int_equal(counter(&fx->env.stats.ended[STREAM_END_REVOKED]), 3);
    assert_string_equal(stream_end_label(STREAM_END_REVOKED), "revoked");
}

static unsigned renewals;
static void on_renew(void *ctx)
{
    (void)ctx;
    renewals++;
}

/* A renewable grant's expiry asks the owner instead of ending the stream. */
static void test_renew_at_expiry(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    char *one[] = {"a"};
    struct stream_params p = {
        .env = &fx->env, .conn_budget = &fx->conn, .subjects = one, .nsubjects = 1,
        .retry_ms = RETRY_MS, .queue_max = BIG, .wake = on_wake, .wake_ctx = &t,
        .expires_ms = 1000, .expire_end = STREAM_END_TOKEN_EXPIRED, .renew = on_renew,
    };
    t.wakes = 0;
    renewals = 0;
    t.s = stream_new(&p);
    EXPECT(&t, START1);
    stream_env_tick(&fx->env, 999);
    assert_int_equal(renewals, 0);
    stream_env_tick(&fx->env, 1000);
    assert_int_equal(renewals, 1);
    assert_int_equal(stream_ended(t.s), STREAM_END_NONE);
    stream_env_tick(&fx->env, 5000); /* the expiry was cleared: no second call */
    assert_int_equal(renewals, 1);
    stream_set_expiry(t.s, 6000, STREAM_END_TOKEN_EXPIRED);
    stream_env_tick(&fx->env, 6000);
    assert_int_equal(renewals, 2);
    stream_free(t.s);
}

static void test_end_two_subjects(void **state)
{
    struct fx *fx = *state;
    char *ab[] = {"a", "b"};
    struct ts t;
    open_with(fx, &t, &(struct open_args){ab, 2, NULL, 0, 0, NULL});
    EXPECT(&t, "retry: 1000\nid: 0-0\n\n");
    deliver_end(fx, 1, 3, NULL);
    deliver(fx, 2, 4, NULL, "b4");
    deliver(fx, 1, 5, NULL, "a5, ignored");
    EXPECT(&t, "id: 3-0\n\nid: 3-4\ndata: b4\n\n");
    assert_int_equal(stream_ended(t.s), STREAM_END_NONE);
    deliver_end(fx, 2, 6, "b-end");
    EXPECT_END(&t, "id: 3-6\ndata: b-end\n\n");
    stream_free(t.s);
}

static void test_dedupe(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    EXPECT(&t, START1);
    deliver(fx, 1, 5, NULL, "five");
    deliver(fx, 1, 5, NULL, "again");
    deliver(fx, 1, 3, NULL, "older");
    deliver(fx, 1, 6, NULL, "six");
    deliver(fx, 1, 6, NULL, "six again");
    EXPECT(&t, "id: 5\ndata: five\n\nid: 6\ndata: six\n\n");
    assert_int_equal(counter(&fx->env.stats.events_queued), 2);
    /* A dropped duplicate on an empty queue wakes nobody. */
    unsigned wakes = t.wakes;
    deliver(fx, 1, 6, NULL, "late");
    assert_int_equal(t.wakes, wakes);
    EXPECT(&t, "");
    stream_free(t.s);
}

/* ---- resume without a bus: always a reset ---- */

static void test_reset_without_bus(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", "5", 0);
    EXPECT(&t, START1 "id: 0\nevent: reset\n"
                      "data: {\"reason\":\"unknown-id\",\"subjects\":[\"a\"]}\n\n");
    assert_int_equal(counter(&fx->env.stats.with_last_id), 1);
    assert_int_equal(counter(&fx->env.stats.resets), 1);
    assert_int_equal(counter(&fx->env.stats.resumes), 0);
    /* Then live, from the joined position. */
    deliver(fx, 1, 1, NULL, "hello");
    EXPECT(&t, "id: 1\n" HELLO);
    stream_free(t.s);
}

static void test_reset_escapes_subjects(void **state)
{
    struct fx *fx = *state;
    char *subs[] = {"a\"b", "c\\d"};
    struct ts t;
    open_with(fx, &t, &(struct open_args){subs, 2, "1-2", 0, 0, NULL});
    EXPECT(&t, "retry: 1000\nid: 0-0\n\nid: 0-0\nevent: reset\n"
               "data: {\"reason\":\"unknown-id\",\"subjects\":[\"a\\\"b\",\"c\\\\d\"]}\n\n");
    stream_free(t.s);
}

static void test_malformed_ids(void **state)
{
    struct fx *fx = *state;
    static const char *const one[] = {
        "abc", "1-2", "",   "-",    "1-", "-1",
        " 1",  "1 ",  "+1", "0x10", "1a", "123456789012345678901", /* 21 digits */
    };
    static const char *const two[] = {"1", "1-", "-1", "1-2-3", "1--2", "-1-2", "a-b", "1-2 ", ""};
    static const char reset1[] =
        START1 "id: 0\nevent: reset\n"
               "data: {\"reason\":\"unknown-id\",\"subjects\":[\"a\"]}\n\n";
    static const char reset2[] = "retry: 1000\nid: 0-0\n\nid: 0-0\nevent: reset\n"
                                 "data: {\"reason\":\"unknown-id\",\"subjects\":[\"a\",\"b\"]}\n\n";
    /* Keeps topic "a" (sub id 1) alive across the streams that come and go. */
    struct ts anchor;
    open1(fx, &anchor, "a", NULL, 0);
    size_t n = 0;
    for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++, n++) {
        struct ts t;
        open1(fx, &t, "a", one[i], 0);
        expect_bytes_n(&t, reset1, sizeof(reset1) - 1, false);
        /* Still live afterwards. */
        deliver(fx, 1, 3, NULL, "hello");
        EXPECT(&t, "id: 3\n" HELLO);
        stream_free(t.s);
    }
    char *ab[] = {"a", "b"};
    for (size_t i = 0; i < sizeof(two) / sizeof(two[0]); i++, n++) {
        struct ts t;
        open_with(fx, &t, &(struct open_args){ab, 2, two[i], 0, 0, NULL});
        expect_bytes_n(&t, reset2, sizeof(reset2) - 1, false);
        stream_free(t.s);
    }
    assert_int_equal(counter(&fx->env.stats.with_last_id), n);
    assert_int_equal(counter(&fx->env.stats.resets), n);
    stream_free(anchor.s);
}

/* ---- the slow-consumer policy ---- */

/* A cut with the first item's id line partly sent: that item finishes, then the comment. */
static void test_slow_cut_partly_sent_head(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 57); /* three 19-byte events fit exactly */
    EXPECT(&t, START1);
    deliver(fx, 1, 1, NULL, "hello");
    assert_int_equal(t.wakes, 1);
    expect_prefix(&t, "id:", 3);
    deliver(fx, 1, 2, NULL, "hello");
    deliver(fx, 1, 3, NULL, "hello");
    assert_int_equal(stream_ended(t.s), STREAM_END_NONE);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 57);
    deliver(fx, 1, 4, NULL, "hello");
    assert_int_equal(stream_ended(t.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(counter(&fx->env.stats.cut_slow), 1);
    assert_int_equal(counter(&fx->env.stats.events_queued), 3);
    /* Only the started item stays charged. */
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 19);
    assert_int_equal(fx->conn.used, 19);
    assert_int_equal(fx->env.budget.used, 19);
    /* Once more on the end, where the queue was not empty. */
    assert_int_equal(t.wakes, 2);
    /* The stream left its topic: later events go nowhere. */
    assert_int_equal(fanout_topics(fx->fanout), 0);
    deliver(fx, 1, 5, NULL, "hello");

    EXPECT_END(&t, " 1\n" HELLO SLOW);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    assert_int_equal(t.wakes, 2);
    stream_free(t.s);
}

/*
 * The worker's inbox dropped events of a subscription (worker-inbox-bytes):
 * its streams, and only they, end as slow consumers, to resume from history.
 */
static void test_lost_ends_the_topics_streams(void **state)
{
    struct fx *fx = *state;
    struct ts a1, a2, b;
    open1(fx, &a1, "a", NULL, 0);
    open1(fx, &a2, "a", NULL, 0);
    open1(fx, &b, "b", NULL, 0);
    assert_int_equal(fanout_topics(fx->fanout), 2);
    fanout_each(fx->fanout, 99, stream_on_lost); /* no such subscription: nothing */
    assert_int_equal(stream_ended(a1.s), STREAM_END_NONE);
    fanout_each(fx->fanout, 1, stream_on_lost);
    assert_int_equal(stream_ended(a1.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(stream_ended(a2.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(stream_ended(b.s), STREAM_END_NONE);
    assert_int_equal(fanout_topics(fx->fanout), 1);
    EXPECT_END(&a1, START1 SLOW);
    stream_free(a1.s);
    stream_free(a2.s);
    stream_free(b.s);
}

/* Same, with the first item's shared body partly sent. */
static void test_slow_cut_partly_sent_body(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 40);
    EXPECT(&t, START1);
    deliver(fx, 1, 1, NULL, "hello");
    deliver(fx, 1, 2, NULL, "world");
    expect_prefix(&t, "id: 1\ndata", 10);
    deliver(fx, 1, 3, NULL, "hello"); /* 38 + 19 > 40 */
    assert_int_equal(stream_ended(t.s), STREAM_END_SLOW_CONSUMER);
    EXPECT_END(&t, ": hello\n\n" SLOW);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    stream_free(t.s);
}

/* Nothing started: every queued item goes, even the unsent start, and only the comment stays. */
static void test_slow_cut_nothing_started(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 20);
    deliver(fx, 1, 1, NULL, "hello");
    deliver(fx, 1, 2, NULL, "hello");
    assert_int_equal(stream_ended(t.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    /* The unsent start (retry, id) is kept: the client still learns its position. */
    EXPECT_END(&t, START1 SLOW);
    stream_free(t.s);
}

/* The start partly read: it finishes, the live events after it go. */
static void test_slow_cut_partly_sent_start(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 20);
    expect_prefix(&t, "retry", 5);
    deliver(fx, 1, 1, NULL, "hello");
    deliver(fx, 1, 2, NULL, "hello");
    assert_int_equal(stream_ended(t.s), STREAM_END_SLOW_CONSUMER);
    EXPECT_END(&t, ": 1000\nid: 0\n\n" SLOW);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    stream_free(t.s);
}

/* One event larger than the stream cap is taken when nothing else is charged. */
static void test_oversized_event_alone_accepted(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 10);
    EXPECT(&t, START1);
    char big[101];
    memset(big, 'x', 100);
    big[100] = '\0';
    char want[200];
    int n = snprintf(want, sizeof want, "id: 1\ndata: %s\n\n", big);
    deliver(fx, 1, 1, NULL, big);
    assert_int_equal(stream_ended(t.s), STREAM_END_NONE);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), (uint64_t)n);
    expect_bytes_n(&t, want, (size_t)n, false);
    /* Read: the queue is empty again and takes the next one alone too. */
    deliver(fx, 1, 2, NULL, big);
    assert_int_equal(stream_ended(t.s), STREAM_END_NONE);
    /* A second one while the first waits is over the cap. */
    deliver(fx, 1, 3, NULL, "small");
    assert_int_equal(stream_ended(t.s), STREAM_END_SLOW_CONSUMER);
    EXPECT_END(&t, SLOW);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    stream_free(t.s);
}

static void test_cut_by_conn_budget(void **state)
{
    struct fx *fx = *state;
    fx->conn.max = 30;
    struct ts a, b;
    open1(fx, &a, "a", NULL, 0); /* 1 */
    open1(fx, &b, "b", NULL, 0); /* 2 */
    EXPECT(&a, START1);
    EXPECT(&b, START1);
    deliver(fx, 1, 1, NULL, "hello");
    assert_int_equal(fx->conn.used, 19);
    deliver(fx, 2, 2, NULL, "hello"); /* 19 + 19 > 30, though b's own queue is empty */
    assert_int_equal(stream_ended(a.s), STREAM_END_NONE);
    assert_int_equal(stream_ended(b.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(counter(&fx->env.stats.cut_slow), 1);
    assert_int_equal(fx->conn.used, 19);
    EXPECT_END(&b, SLOW);
    EXPECT(&a, "id: 1\n" HELLO);
    assert_int_equal(fx->conn.used, 0);
    /* a goes on: its connection has room again. */
    deliver(fx, 1, 3, NULL, "hello");
    EXPECT(&a, "id: 3\n" HELLO);
    stream_free(b.s);

    /* A first event that alone passes the connection cap cuts too. */
    fx->conn.max = 10;
    deliver(fx, 1, 4, NULL, "hello");
    assert_int_equal(stream_ended(a.s), STREAM_END_SLOW_CONSUMER);
    EXPECT_END(&a, SLOW);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    assert_int_equal(counter(&fx->env.stats.cut_slow), 2);
    stream_free(a.s);
}

static void test_cut_by_env_budget(void **state)
{
    struct fx *fx = *state;
    fx->env.budget.max = 30;
    struct stream_budget c1 = {0, BIG}, c2 = {0, BIG};
    char *subs[] = {"a"};
    struct ts a, b;
    open_with(fx, &a, &(struct open_args){subs, 1, NULL, 0, 0, &c1});
    open_with(fx, &b, &(struct open_args){subs, 1, NULL, 0, 0, &c2});
    EXPECT(&a, START1);
    EXPECT(&b, START1);
    deliver(fx, 1, 1, NULL, "hello"); /* a takes 19, b would make 38 > 30 */
    assert_int_equal(stream_ended(a.s), STREAM_END_NONE);
    assert_int_equal(stream_ended(b.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(c1.used, 19);
    assert_int_equal(c2.used, 0);
    assert_int_equal(fx->env.budget.used, 19);
    assert_int_equal(counter(&fx->env.stats.cut_slow), 1);
    EXPECT(&a, "id: 1\n" HELLO);
    EXPECT_END(&b, SLOW);
    assert_int_equal(fx->env.budget.used, 0);
    assert_int_equal(c1.used, 0);
    stream_free(a.s);
    stream_free(b.s);

    /* Every stream of a topic cut inside one delivery. */
    fx->env.budget.max = 10;
    struct ts c, d;
    char *xs[] = {"x"};
    open_with(fx, &c, &(struct open_args){xs, 1, NULL, 0, 0, &c1});
    open_with(fx, &d, &(struct open_args){xs, 1, NULL, 0, 0, &c2});
    EXPECT(&c, START1);
    EXPECT(&d, START1);
    deliver(fx, 2, 1, NULL, "hello"); /* "x" is the second topic ever joined */
    assert_int_equal(stream_ended(c.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(stream_ended(d.s), STREAM_END_SLOW_CONSUMER);
    assert_int_equal(fanout_topics(fx->fanout), 0);
    EXPECT_END(&c, SLOW);
    EXPECT_END(&d, SLOW);
    assert_int_equal(counter(&fx->env.stats.cut_slow), 3);
    assert_int_equal(fx->env.budget.used, 0);
    stream_free(c.s);
    stream_free(d.s);
}

/* ---- budgets and references on free ---- */

static void test_free_with_queued_items(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    struct sse_event *ev = sse_event_new(1, 1, "n", "shared", 6);
    fanout_deliver(fx->fanout, ev);
    for (uint64_t s = 2; s <= 40; s++) /* enough to grow the queue's ring */
        deliver(fx, 1, s, NULL, "hello");
    assert_int_equal(refs_of(fx, ev), 2);
    expect_prefix(&t, START1 "id: 1\nev", sizeof(START1) - 1 + 8);
    assert_true(counter(&fx->env.stats.bytes_queued) > 0);
    assert_true(fx->conn.used > 0);
    stream_free(t.s);
    assert_int_equal(refs_of(fx, ev), 1);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(counter(&fx->env.stats.open), 0);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    assert_int_equal(fanout_topics(fx->fanout), 0);
    sse_event_unref(ev);

    /* An ended stream with its final item partly read, freed before the rest. */
    open1(fx, &t, "a", NULL, 0);
    EXPECT(&t, START1);
    deliver(fx, 2, 1, NULL, "hello");
    expect_prefix(&t, "id: 1\nd", 7);
    stream_end(t.s, STREAM_END_DRAIN);
    stream_free(t.s);
    assert_int_equal(fx->conn.used, 0);
    assert_int_equal(fx->env.budget.used, 0);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);

    stream_free(NULL);
}

/* Two streams on one topic share the one event buffer; each holds one reference. */
static void test_shared_body(void **state)
{
    struct fx *fx = *state;
    struct ts a, b, c;
    open1(fx, &a, "a", NULL, 0);
    open1(fx, &b, "a", NULL, 0);
    open1(fx, &c, "c", NULL, 0);
    assert_int_equal(fanout_topics(fx->fanout), 2);
    EXPECT(&a, START1);
    EXPECT(&b, START1);
    EXPECT(&c, START1);

    struct sse_event *ev = sse_event_new(1, 1, NULL, "hello", 5);
    assert_int_equal(refs_of(fx, ev), 1);
    fanout_deliver(fx->fanout, ev);
    assert_int_equal(refs_of(fx, ev), 3);
    assert_int_equal(counter(&fx->env.stats.events_queued), 2);
    EXPECT(&c, "");

    char got[64];
    bool eof;
    assert_int_equal(read_some(&a, got, sizeof got, &eof), 19);
    assert_memory_equal(got + 6, ev->body, ev->len);
    assert_int_equal(refs_of(fx, ev), 2);
    /* b still has it queued; freeing b drops that reference. */
    stream_free(b.s);
    assert_int_equal(refs_of(fx, ev), 1);
    sse_event_unref(ev);
    stream_free(a.s);
    stream_free(c.s);
}

/* ---- wake-ups ---- */

static void test_wake_transitions(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    assert_int_equal(t.wakes, 0);
    /* The queue already holds the start, but the first event wakes (a long-poll waits for it). */
    deliver(fx, 1, 1, NULL, "hello");
    assert_int_equal(t.wakes, 1);
    EXPECT(&t, START1 "id: 1\n" HELLO);
    assert_int_equal(t.wakes, 1); /* reading never wakes */
    deliver(fx, 1, 2, NULL, "hello");
    assert_int_equal(t.wakes, 2);
    deliver(fx, 1, 3, NULL, "hello");
    assert_int_equal(t.wakes, 2);
    /* Partly read is still non-empty. */
    expect_prefix(&t, "id: 2\n" HELLO "id", 21);
    deliver(fx, 1, 4, NULL, "hello");
    assert_int_equal(t.wakes, 2);
    EXPECT(&t, ": 3\n" HELLO "id: 4\n" HELLO);
    deliver(fx, 1, 5, NULL, "hello");
    assert_int_equal(t.wakes, 3);
    EXPECT(&t, "id: 5\n" HELLO);
    assert_int_equal(t.wakes, 3);
    stream_free(t.s);
    assert_int_equal(t.wakes, 3); /* freeing never wakes */
}

/* Ending wakes the stream once, whatever its queue held. */
static void test_wake_once_on_end(void **state)
{
    struct fx *fx = *state;
    struct ts t;

    /* Empty queue. */
    open1(fx, &t, "a", NULL, 0);
    EXPECT(&t, START1);
    stream_end(t.s, STREAM_END_DRAIN);
    assert_int_equal(stream_ended(t.s), STREAM_END_DRAIN);
    unsigned empty = t.wakes;
    EXPECT_END(&t, SHUTDOWN);
    stream_end(t.s, STREAM_END_SLOW_CONSUMER); /* only the first end counts */
    assert_int_equal(stream_ended(t.s), STREAM_END_DRAIN);
    assert_int_equal(t.wakes, empty);
    stream_free(t.s);

    /* Items queued, none started: events dropped, the start kept. */
    open1(fx, &t, "a", NULL, 0);
    deliver(fx, 1, 1, NULL, "hello");
    stream_end(t.s, STREAM_END_DRAIN);
    unsigned unsent = t.wakes;
    EXPECT_END(&t, START1 SHUTDOWN);
    stream_free(t.s);

    /* An item partly sent: it stays. */
    open1(fx, &t, "a", NULL, 0);
    expect_prefix(&t, "re", 2);
    stream_end(t.s, STREAM_END_DRAIN);
    unsigned partly = t.wakes;
    EXPECT_END(&t, "try: 1000\nid: 0\n\n" SHUTDOWN);
    stream_free(t.s);

    if (empty != 1 || unsent != 1 || partly != 1)
        fail_msg("wakes on stream_end: %u with an empty queue, %u with unsent items, "
                 "%u with a partly sent item; want 1 each",
                 empty, unsent, partly);
}

/* ---- heartbeat ---- */

/*
 * Whether stream_env_tick(env, now_ms) returns within two seconds, run in a
 * child process so that a tick that never returns fails this test instead
 * of hanging the run. The child's queues are its own copy.
 */
static bool tick_returns(struct stream_env *env, int64_t now_ms)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        stream_env_tick(env, now_ms);
        _exit(0);
    }
    for (int i = 0; i < 200; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return false;
}

/* Idle, empty streams get `:`; a stream with bytes waiting gets none (it is blocked, not idle). */
static void test_heartbeat_idle_only(void **state)
{
    struct fx *fx = *state;
    struct ts idle, blocked;
    open1(fx, &idle, "a", NULL, 0);
    open1(fx, &blocked, "b", NULL, 0);
    EXPECT(&idle, START1);
    int64_t now = stream_now_ms();

    /* Not idle long enough yet. */
    stream_env_tick(&fx->env, now + HEARTBEAT_MS / 2);
    EXPECT(&idle, "");
    assert_int_equal(idle.wakes, 0);

    stream_env_tick(&fx->env, now + HEARTBEAT_MS);
    assert_int_equal(idle.wakes, 1);
    assert_int_equal(blocked.wakes, 0);
    EXPECT(&idle, ":\n\n");
    EXPECT(&blocked, START1);

    /* Both were touched by that tick: the same instant again gives nothing. */
    stream_env_tick(&fx->env, now + HEARTBEAT_MS);
    EXPECT(&idle, "");
    EXPECT(&blocked, "");
    assert_int_equal(idle.wakes, 1);
    assert_int_equal(blocked.wakes, 0);
    /* A heartbeat is not an event and not charged. */
    assert_int_equal(counter(&fx->env.stats.events_queued), 0);
    assert_int_equal(fx->conn.used, 0);

    /* An ended stream is no longer ticked. */
    stream_end(blocked.s, STREAM_END_DRAIN);
    EXPECT_END(&blocked, SHUTDOWN);
    stream_free(idle.s);
    stream_free(blocked.s);
}

/*
 * A tick far ahead of the coarse clock (any now_ms the caller passes)
 * heartbeats each idle stream once and returns; the streams are then
 * idle from now_ms.
 */
static void test_heartbeat_far_ahead(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    open1(fx, &t, "a", NULL, 0);
    EXPECT(&t, START1);
    int64_t now = stream_now_ms() + 100 * HEARTBEAT_MS;
    if (!tick_returns(&fx->env, now)) {
        stream_free(t.s);
        fail_msg("stream_env_tick(now + 100 heartbeats) did not return within 2 s");
    }
    stream_env_tick(&fx->env, now);
    assert_int_equal(t.wakes, 1);
    EXPECT(&t, ":\n\n");
    /* Touched at now: a heartbeat later, one more. */
    stream_env_tick(&fx->env, now + HEARTBEAT_MS - 1);
    EXPECT(&t, "");
    if (!tick_returns(&fx->env, now + HEARTBEAT_MS)) {
        stream_free(t.s);
        fail_msg("second stream_env_tick did not return within 2 s");
    }
    stream_env_tick(&fx->env, now + HEARTBEAT_MS);
    EXPECT(&t, ":\n\n");
    assert_int_equal(t.wakes, 2);
    stream_free(t.s);
}

/* ---- reading ---- */

/* Byte-at-a-time reads give exactly the bytes of one big read, through ring growth and wrap. */
static void test_tiny_reads(void **state)
{
    struct fx *fx = *state;
    struct ts a, b;
    char *ab[] = {"a", "b"};
    open_with(fx, &a, &(struct open_args){ab, 2, NULL, 0, 0, NULL});
    open_with(fx, &b, &(struct open_args){ab, 2, NULL, 0, 0, NULL});
    static char got_a[READ_MAX], got_b[READ_MAX];
    size_t na = 0, nb = 0;
    bool eof;
    uint64_t seq = 0;
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 3 + round * 5; i++) {
            char data[32];
            seq++;
            snprintf(data, sizeof data, "r%d\ni%d", round, i);
            deliver(fx, 1 + seq % 2, seq, i % 3 ? NULL : "name", data);
        }
        /* a: one byte at a time, and only part of what is queued. */
        size_t part = stream_queued(a.s) * 2 / 3;
        for (size_t k = 0; k < part; k++) {
            size_t before = stream_queued(a.s);
            assert_int_equal(stream_pending(a.s, 1, &eof), 1);
            assert_false(eof);
            stream_copy(a.s, (uint8_t *)got_a + na++, 1);
            assert_int_equal(stream_queued(a.s), before - 1);
        }
        nb += read_some(&b, got_b + nb, READ_MAX - nb, &eof);
    }
    while (stream_pending(a.s, 1, &eof) == 1)
        stream_copy(a.s, (uint8_t *)got_a + na++, 1);
    assert_int_equal(stream_queued(a.s), 0);
    assert_int_equal(stream_queued(b.s), 0);
    char e1[ESC_MAX], e2[ESC_MAX];
    if (na != nb || memcmp(got_a, got_b, na) != 0)
        fail_msg("byte reads \"%s\" (%zu) differ from one read \"%s\" (%zu)", escape(e1, got_a, na),
                 na, escape(e2, got_b, nb), nb);
    /* And both are what the grammar says: spot-check the ends. */
    static const char head[] =
        "retry: 1000\nid: 0-0\n\nid: 0-1\nevent: name\ndata: r0\ndata: i0\n\n";
    assert_memory_equal(got_a, head, sizeof(head) - 1);
    char tail[64];
    int n = snprintf(tail, sizeof tail, "id: %d-%d\nevent: name\ndata: r5\ndata: i27\n\n",
                     (int)seq - 1, (int)seq);
    assert_memory_equal(got_a + na - (size_t)n, tail, (size_t)n);
    assert_int_equal(counter(&fx->env.stats.bytes_queued), 0);
    assert_int_equal(fx->conn.used, 0);
    stream_free(a.s);
    stream_free(b.s);
}

/*
 * Events queued while a stream waits share DATA frames: one
 * stream_pending() offers everything queued up to the frame's room, and
 * the bytes a sequence of frames carries are the same whatever the frame
 * size (a frame may end inside an event; the next goes on from there).
 */
static void test_queued_events_share_one_frame(void **state)
{
    struct fx *fx = *state;
    struct ts a, b;
    open1(fx, &a, "a", NULL, 0);
    open1(fx, &b, "a", NULL, 0);
    EXPECT(&a, START1);
    EXPECT(&b, START1);
    for (uint64_t seq = 1; seq <= 5; seq++)
        deliver(fx, 1, seq, seq == 3 ? "n" : NULL, "hello");
    static const char want[] = "id: 1\n" HELLO "id: 2\n" HELLO "id: 3\nevent: n\n" HELLO
                               "id: 4\n" HELLO "id: 5\n" HELLO;
    bool eof;
    /* A 16 KiB frame takes all five events at once. */
    assert_int_equal(stream_pending(a.s, 16384, &eof), sizeof(want) - 1);
    char got[256];
    assert_int_equal(read_some(&a, got, 16384, &eof), sizeof(want) - 1);
    assert_memory_equal(got, want, sizeof(want) - 1);
    /* Frames of 7 bytes carry the same bytes, cut anywhere. */
    size_t n = 0, k;
    while ((k = read_some(&b, got + n, 7, &eof)) > 0)
        n += k;
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(got, want, n);
    assert_int_equal(counter(&fx->env.stats.delivered), 10);
    stream_free(a.s);
    stream_free(b.s);
}

static void test_pending_eof(void **state)
{
    struct fx *fx = *state;
    struct ts t;
    bool eof = true;
    open1(fx, &t, "a", NULL, 0);
    assert_int_equal(stream_pending(t.s, 0, &eof), 0);
    assert_false(eof);
    eof = true;
    assert_int_equal(stream_pending(t.s, 5, &eof), 5);
    assert_false(eof);
    assert_int_equal(stream_pending(t.s, SIZE_MAX, &eof), sizeof(START1) - 1);
    assert_false(eof); /* live: never eof */
    EXPECT(&t, START1);
    assert_int_equal(stream_pending(t.s, SIZE_MAX, &eof), 0);
    assert_false(eof);

    stream_end(t.s, STREAM_END_DRAIN);
    size_t len = sizeof(SHUTDOWN) - 1;
    assert_int_equal(stream_pending(t.s, 5, &eof), 5);
    assert_false(eof);
    assert_int_equal(stream_pending(t.s, len - 1, &eof), len - 1);
    assert_false(eof);
    assert_int_equal(stream_pending(t.s, len, &eof), len);
    assert_true(eof);
    assert_int_equal(stream_pending(t.s, SIZE_MAX, &eof), len);
    assert_true(eof);
    expect_prefix(&t, SHUTDOWN, 5);
    assert_int_equal(stream_pending(t.s, SIZE_MAX, &eof), len - 5);
    assert_true(eof);
    EXPECT_END(&t, "ver shutting down, reconnect\n\n");
    assert_int_equal(stream_pending(t.s, SIZE_MAX, &eof), 0);
    assert_true(eof);
    stream_free(t.s);
}

/* A callback that ends its owner: every link of the owner leaves its topic. */
struct two_links {
    struct fanout *f;
    struct fanout_link links[3];
    int calls;
};

static void on_event_leave_all(struct fanout_link *link, struct sse_event *ev)
{
    (void)ev;
    struct two_links *o = link->owner;
    o->calls++;
    for (size_t i = 0; i < 3; i++)
        fanout_leave(o->f, &o->links[i]);
}

static void on_ready_none(struct fanout_link *link) { (void)link; }

/*
 * fanout_deliver looped forever when one owner held two links on one
 * topic and left inside its callback: the saved next link was unlinked
 * and pointed at itself. Every order of leaving must end the walk.
 */
static void test_fanout_deliver_owner_leaves_two_links(void **state)
{
    (void)state;
    for (int shape = 0; shape < 3; shape++) {
        struct two_links o = {0};
        o.f = fanout_new(NULL, 0, on_event_leave_all, on_ready_none, NULL);
        for (size_t i = 0; i < 3; i++) {
            list_init(&o.links[i].node);
            o.links[i].owner = &o;
        }
        /* shape 0: a a b; 1: a b a; 2: a a a — all of one owner on topic "a" or "b". */
        const char *pat[3][3] = {{"a", "a", "b"}, {"a", "b", "a"}, {"a", "a", "a"}};
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(fanout_join(o.f, pat[shape][i], &o.links[i]), 0);
        struct sse_event *ev = sse_event_new(1, 1, NULL, "x", 1);
        fanout_deliver(o.f, ev);
        sse_event_unref(ev);
        assert_int_equal(o.calls, 1);
        assert_int_equal(fanout_topics(o.f), 0);
        fanout_free(o.f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_start_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queued_events_share_one_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_jitter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_event_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_name_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_composite_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_digits_of_any_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedupe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_finishes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_two_subjects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_without_bus, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_escapes_subjects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_cut_partly_sent_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_cut_partly_sent_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_cut_nothing_started, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_ends_the_topics_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_cut_partly_sent_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_event_alone_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_by_conn_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_by_env_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_queued_items, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_transitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wake_once_on_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_idle_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_far_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tiny_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_at_expiry, setup, teardown),
        cmocka_unit_test(test_fanout_deliver_owner_leaves_two_links),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
