/*
 * test_history: the per-subscription replay ring.
 *
 * Events are built with a chosen body length, so byte bounds are exact.
 * Every history_since() answer is compared with what a plain list of the
 * pushed sequences says it must be: the status from last and lost, and
 * the events above `after`, oldest first. Reference counts are read off
 * the events themselves, and a sanitizer build catches any leak or double
 * unref the ring makes when it evicts, grows or is freed.
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
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/history.h"
#include "sluice/sse.h"

#define BIG ((size_t)1 << 30)

/* An event of sequence seq whose body is exactly len bytes ("data: x…\n\n", len >= 8). */
static struct sse_event *mk(uint64_t seq, size_t len)
{
    assert_true(len >= 8);
    char *payload = malloc(len - 8 + 1);
    assert_non_null(payload);
    memset(payload, 'x', len - 8);
    struct sse_event *ev = sse_event_new(1, seq, NULL, payload, len - 8);
    free(payload);
    assert_non_null(ev);
    assert_int_equal(ev->len, len);
    assert_int_equal(ev->seq, seq);
    return ev;
}

static void budget_init(struct history_budget *b, size_t max)
{
    atomic_init(&b->used, 0);
    b->max = max;
}

static size_t used(struct history_budget *b) { return atomic_load(&b->used); }

static const char *status_name(enum history_resume r)
{
    switch (r) {
    case HISTORY_RESUME_OK: return "OK";
    case HISTORY_RESUME_GONE: return "GONE";
    case HISTORY_RESUME_UNKNOWN: return "UNKNOWN";
    }
    return "?";
}

/*
 * history_since(after) must answer want and, on OK, exactly the sequences
 * seqs[0..n) in that order; each returned event carries the extra reference.
 */
static void expect_since(const struct history *h, uint64_t after, enum history_resume want,
                         const uint64_t *seqs, size_t n)
{
    struct sse_event **out = NULL;
    size_t got = 0;
    enum history_resume r = history_since(h, after, &out, &got);
    if (r != want)
        fail_msg("since(%" PRIu64 "): %s, want %s", after, status_name(r), status_name(want));
    if (want != HISTORY_RESUME_OK) {
        assert_int_equal(got, 0);
        assert_null(out);
        return;
    }
    if (got != n)
        fail_msg("since(%" PRIu64 "): %zu events, want %zu", after, got, n);
    for (size_t i = 0; i < n; i++) {
        if (out[i]->seq != seqs[i])
            fail_msg("since(%" PRIu64 "): event %zu has seq %" PRIu64 ", want %" PRIu64, after, i,
                     out[i]->seq, seqs[i]);
        /* One reference held by the ring, one handed to us. */
        assert_int_equal(atomic_load(&out[i]->refs), 2);
    }
    for (size_t i = 0; i < got; i++)
        sse_event_unref(out[i]);
    free(out);
}

/* The sequences of `all` (ascending) above after, into want; returns their count. */
static size_t above(const uint64_t *all, size_t n, uint64_t after, uint64_t *want)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i] > after)
            want[k++] = all[i];
    return k;
}

/* What since(after) must answer, from the model: lost, last and the kept sequences. */
static void check_after(const struct history *h, uint64_t after, uint64_t lost,
                        const uint64_t *kept, size_t nkept, uint64_t *want)
{
    if (after > history_last(h)) {
        expect_since(h, after, HISTORY_RESUME_UNKNOWN, NULL, 0);
    } else if (after < lost) {
        expect_since(h, after, HISTORY_RESUME_GONE, NULL, 0);
    } else {
        size_t k = above(kept, nkept, after, want);
        expect_since(h, after, HISTORY_RESUME_OK, want, k);
    }
}

/*
 * Checks `after` around every boundary against the model: kept[0..nkept)
 * are the sequences the ring must still hold, lost the highest evicted (or
 * the floor). Small ranges are checked value by value.
 */
static void check_all_afters(const struct history *h, uint64_t lost, const uint64_t *kept,
                             size_t nkept)
{
    uint64_t last = history_last(h);
    uint64_t *want = malloc((nkept + 1) * sizeof(*want));
    assert_non_null(want);
    uint64_t from = lost > 2 ? lost - 2 : 0;
    if (last - from <= 64) {
        for (uint64_t after = from; after <= last + 2; after++)
            check_after(h, after, lost, kept, nkept, want);
    } else {
        for (size_t i = 0; i <= nkept; i++) {
            uint64_t x = i < nkept ? kept[i] : lost;
            if (x > 0)
                check_after(h, x - 1, lost, kept, nkept, want);
            check_after(h, x, lost, kept, nkept, want);
            check_after(h, x + 1, lost, kept, nkept, want);
        }
        check_after(h, 0, lost, kept, nkept, want);
        check_after(h, last + 1, lost, kept, nkept, want);
        check_after(h, UINT64_MAX, lost, kept, nkept, want);
    }
    free(want);
}

static void test_push_since_basic(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(10, BIG, &b, 0);
    assert_non_null(h);
    assert_int_equal(history_count(h), 0);
    assert_int_equal(history_bytes(h), 0);
    assert_int_equal(history_last(h), 0);

    history_push(h, mk(1, 10));
    history_push(h, mk(2, 20));
    history_push(h, mk(3, 30));
    assert_int_equal(history_count(h), 3);
    assert_int_equal(history_bytes(h), 60);
    assert_int_equal(used(&b), 60);
    assert_int_equal(history_last(h), 3);

    expect_since(h, 0, HISTORY_RESUME_OK, (const uint64_t[]){1, 2, 3}, 3);
    expect_since(h, 1, HISTORY_RESUME_OK, (const uint64_t[]){2, 3}, 2);
    expect_since(h, 2, HISTORY_RESUME_OK, (const uint64_t[]){3}, 1);
    expect_since(h, 3, HISTORY_RESUME_OK, NULL, 0);
    expect_since(h, 4, HISTORY_RESUME_UNKNOWN, NULL, 0);

    /* A query changes nothing. */
    assert_int_equal(history_count(h), 3);
    assert_int_equal(history_bytes(h), 60);

    history_free(h);
    assert_int_equal(used(&b), 0);
}

/* since() appends after what *out already holds and counts on from *n. */
static void test_since_appends(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h1 = history_new(10, BIG, &b, 0);
    struct history *h2 = history_new(10, BIG, &b, 0);
    history_push(h1, mk(1, 10));
    history_push(h1, mk(3, 10));
    history_push(h2, mk(2, 10));
    history_push(h2, mk(4, 10));

    struct sse_event **out = NULL;
    size_t n = 0;
    assert_int_equal(history_since(h1, 0, &out, &n), HISTORY_RESUME_OK);
    assert_int_equal(n, 2);
    assert_int_equal(history_since(h2, 0, &out, &n), HISTORY_RESUME_OK);
    assert_int_equal(n, 4);
    /* Nothing to add leaves both alone. */
    struct sse_event **keep = out;
    assert_int_equal(history_since(h2, 4, &out, &n), HISTORY_RESUME_OK);
    assert_int_equal(n, 4);
    assert_ptr_equal(out, keep);
    /* A refusal leaves both alone too. */
    assert_int_equal(history_since(h2, 5, &out, &n), HISTORY_RESUME_UNKNOWN);
    assert_int_equal(n, 4);
    assert_ptr_equal(out, keep);

    const uint64_t want[] = {1, 3, 2, 4};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i]->seq, want[i]);
        sse_event_unref(out[i]);
    }
    free(out);
    history_free(h1);
    history_free(h2);
    assert_int_equal(used(&b), 0);
}

/* after == floor: everything; after == last: nothing; above last: unknown; below floor: gone. */
static void test_boundaries_floor(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(10, BIG, &b, 100);
    assert_int_equal(history_last(h), 100);

    /* Empty: only the floor itself resumes (with nothing). */
    expect_since(h, 100, HISTORY_RESUME_OK, NULL, 0);
    expect_since(h, 101, HISTORY_RESUME_UNKNOWN, NULL, 0);
    expect_since(h, 99, HISTORY_RESUME_GONE, NULL, 0);
    expect_since(h, 0, HISTORY_RESUME_GONE, NULL, 0);

    history_push(h, mk(101, 10));
    history_push(h, mk(102, 10));
    history_push(h, mk(103, 10));
    assert_int_equal(history_last(h), 103);
    expect_since(h, 100, HISTORY_RESUME_OK, (const uint64_t[]){101, 102, 103}, 3);
    expect_since(h, 101, HISTORY_RESUME_OK, (const uint64_t[]){102, 103}, 2);
    expect_since(h, 103, HISTORY_RESUME_OK, NULL, 0);
    expect_since(h, 104, HISTORY_RESUME_UNKNOWN, NULL, 0);
    expect_since(h, UINT64_MAX, HISTORY_RESUME_UNKNOWN, NULL, 0);
    expect_since(h, 99, HISTORY_RESUME_GONE, NULL, 0);
    history_free(h);
    assert_int_equal(used(&b), 0);
}

/* after == lost is still OK (nothing after it is missing); lost - 1 is GONE. */
static void test_boundaries_lost(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(2, BIG, &b, 0);
    for (uint64_t s = 1; s <= 4; s++)
        history_push(h, mk(s, 10));
    /* Holds 3 and 4; 2 was the last evicted. */
    assert_int_equal(history_count(h), 2);
    expect_since(h, 2, HISTORY_RESUME_OK, (const uint64_t[]){3, 4}, 2);
    expect_since(h, 3, HISTORY_RESUME_OK, (const uint64_t[]){4}, 1);
    expect_since(h, 4, HISTORY_RESUME_OK, NULL, 0);
    expect_since(h, 1, HISTORY_RESUME_GONE, NULL, 0);
    expect_since(h, 0, HISTORY_RESUME_GONE, NULL, 0);
    expect_since(h, 5, HISTORY_RESUME_UNKNOWN, NULL, 0);
    history_free(h);
    assert_int_equal(used(&b), 0);
}

static void test_evict_by_count(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(3, BIG, &b, 0);
    for (uint64_t s = 1; s <= 5; s++) {
        history_push(h, mk(s, 10 + s));
        assert_int_equal(history_count(h), s < 3 ? s : 3);
    }
    assert_int_equal(history_bytes(h), 13 + 14 + 15);
    assert_int_equal(used(&b), 13 + 14 + 15);
    assert_int_equal(history_last(h), 5);
    expect_since(h, 2, HISTORY_RESUME_OK, (const uint64_t[]){3, 4, 5}, 3);
    expect_since(h, 1, HISTORY_RESUME_GONE, NULL, 0);
    history_free(h);
    assert_int_equal(used(&b), 0);
}

static void test_evict_by_bytes(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(100, 250, &b, 0);
    history_push(h, mk(1, 100));
    history_push(h, mk(2, 100));
    assert_int_equal(history_count(h), 2);
    assert_int_equal(history_bytes(h), 200);
    /* 300 > 250: the oldest goes. */
    history_push(h, mk(3, 100));
    assert_int_equal(history_count(h), 2);
    assert_int_equal(history_bytes(h), 200);
    expect_since(h, 1, HISTORY_RESUME_OK, (const uint64_t[]){2, 3}, 2);
    expect_since(h, 0, HISTORY_RESUME_GONE, NULL, 0);
    /* Exactly at the bound stays: 100 + 150 = 250. */
    history_push(h, mk(4, 150));
    assert_int_equal(history_count(h), 2);
    assert_int_equal(history_bytes(h), 250);
    expect_since(h, 2, HISTORY_RESUME_OK, (const uint64_t[]){3, 4}, 2);
    /* One big event evicts several at once: 100 + 150 + 240 -> 240. */
    history_push(h, mk(5, 240));
    assert_int_equal(history_count(h), 1);
    assert_int_equal(history_bytes(h), 240);
    assert_int_equal(used(&b), 240);
    expect_since(h, 4, HISTORY_RESUME_OK, (const uint64_t[]){5}, 1);
    expect_since(h, 3, HISTORY_RESUME_GONE, NULL, 0);
    history_free(h);
    assert_int_equal(used(&b), 0);
}

/* An event larger than every bound is still kept, alone, so it can be resumed right after. */
static void test_newest_always_kept(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, 50);
    struct history *h = history_new(5, 40, &b, 7);
    history_push(h, mk(8, 100));
    assert_int_equal(history_count(h), 1);
    assert_int_equal(history_bytes(h), 100);
    assert_int_equal(used(&b), 100);
    expect_since(h, 7, HISTORY_RESUME_OK, (const uint64_t[]){8}, 1);
    expect_since(h, 8, HISTORY_RESUME_OK, NULL, 0);

    /* The next one replaces it. */
    history_push(h, mk(9, 120));
    assert_int_equal(history_count(h), 1);
    assert_int_equal(history_bytes(h), 120);
    assert_int_equal(used(&b), 120);
    expect_since(h, 8, HISTORY_RESUME_OK, (const uint64_t[]){9}, 1);
    expect_since(h, 7, HISTORY_RESUME_GONE, NULL, 0);

    /* A small one after it fits under the bounds alone: the big one goes. */
    history_push(h, mk(10, 20));
    assert_int_equal(history_count(h), 1);
    assert_int_equal(history_bytes(h), 20);
    expect_since(h, 9, HISTORY_RESUME_OK, (const uint64_t[]){10}, 1);
    history_free(h);
    assert_int_equal(used(&b), 0);
}

/* Two histories share one budget; whichever pushes evicts its own oldest. */
static void test_evict_by_shared_budget(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, 300);
    struct history *h1 = history_new(100, BIG, &b, 0);
    struct history *h2 = history_new(100, BIG, &b, 0);
    history_push(h1, mk(1, 100));
    history_push(h2, mk(2, 100));
    history_push(h1, mk(3, 100));
    assert_int_equal(used(&b), 300);
    assert_int_equal(history_count(h1), 2);
    assert_int_equal(history_count(h2), 1);

    /* 400 > 300: h2 evicts its own oldest (2), h1 is untouched. */
    history_push(h2, mk(4, 100));
    assert_int_equal(used(&b), 300);
    assert_int_equal(history_count(h1), 2);
    assert_int_equal(history_count(h2), 1);
    expect_since(h2, 2, HISTORY_RESUME_OK, (const uint64_t[]){4}, 1);
    expect_since(h2, 1, HISTORY_RESUME_GONE, NULL, 0);
    expect_since(h1, 0, HISTORY_RESUME_OK, (const uint64_t[]){1, 3}, 2);

    /* h1 pushes 150: 450 -> evicts 1 (350) -> evicts 3 (250). */
    history_push(h1, mk(5, 150));
    assert_int_equal(used(&b), 250);
    assert_int_equal(history_count(h1), 1);
    assert_int_equal(history_bytes(h1), 150);
    expect_since(h1, 3, HISTORY_RESUME_OK, (const uint64_t[]){5}, 1);
    expect_since(h1, 2, HISTORY_RESUME_GONE, NULL, 0);

    /* The budget counts both; freeing one returns exactly its bytes. */
    assert_int_equal(used(&b), history_bytes(h1) + history_bytes(h2));
    history_free(h1);
    assert_int_equal(used(&b), 100);
    history_free(h2);
    assert_int_equal(used(&b), 0);
}

/* The ring holds one reference per event; history_free drops exactly those. */
static void test_refcounts(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(3, BIG, &b, 0);
    struct sse_event *held[6];
    for (uint64_t s = 1; s <= 6; s++) {
        held[s - 1] = mk(s, 16);
        sse_event_ref(held[s - 1]);   /* ours */
        history_push(h, held[s - 1]); /* the ring takes the first one */
    }
    /* Evicted ones: only ours left. Kept ones: ours and the ring's. */
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(atomic_load(&held[i]->refs), i < 3 ? 1 : 2);

    struct sse_event **out = NULL;
    size_t n = 0;
    assert_int_equal(history_since(h, 4, &out, &n), HISTORY_RESUME_OK);
    assert_int_equal(n, 2);
    assert_int_equal(atomic_load(&held[4]->refs), 3);
    assert_int_equal(atomic_load(&held[5]->refs), 3);

    history_free(h);
    assert_int_equal(used(&b), 0);
    /* Events outlive the history for whoever holds them. */
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(held[i]->seq, i + 1);
        assert_memory_equal(held[i]->body, "data: xxxxxxxx\n\n", 16);
    }
    assert_int_equal(atomic_load(&held[3]->refs), 1);
    assert_int_equal(atomic_load(&held[4]->refs), 2);
    assert_int_equal(atomic_load(&held[5]->refs), 2);
    for (size_t i = 0; i < n; i++)
        sse_event_unref(out[i]);
    free(out);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(atomic_load(&held[i]->refs), 1);
        sse_event_unref(held[i]);
    }
}

/* The end: set by an end marker, cleared by a later event; set_end only while empty. */
static void test_end(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(4, BIG, &b, 10);
    history_set_end(h, 7); /* JetStream: the subject ended before we began */
    assert_int_equal(history_end(h), 7);
    history_set_end(h, 11); /* above the floor: not something that came before us */
    assert_int_equal(history_end(h), 7);
    history_push(h, mk(12, 8));
    assert_int_equal(history_end(h), 0);
    struct sse_event *end = sse_event_new_end(1, 13);
    history_push(h, end);
    assert_int_equal(history_end(h), 13);
    history_set_end(h, 5); /* ignored once anything was pushed */
    assert_int_equal(history_end(h), 13);
    history_push(h, mk(14, 8)); /* the subject reused */
    assert_int_equal(history_end(h), 0);
    history_free(h);
    assert_int_equal(used(&b), 0);
}

static void test_free_null_and_empty(void **state)
{
    (void)state;
    history_free(NULL);
    struct history_budget b;
    budget_init(&b, BIG);
    history_free(history_new(4, BIG, &b, 0));
    assert_int_equal(used(&b), 0);
}

/*
 * Push `total` events with sequence step*i into a ring of max_events, and
 * after every push check every `after` around the window: this walks the
 * ring through growth and every wrap-around position.
 */
static void ring_walk(size_t max_events, uint64_t total, uint64_t step, uint64_t floor)
{
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(max_events, BIG, &b, floor);
    uint64_t *seqs = malloc(total * sizeof(*seqs));
    assert_non_null(seqs);
    for (uint64_t i = 0; i < total; i++) {
        seqs[i] = floor + step * (i + 1);
        history_push(h, mk(seqs[i], 8 + (size_t)(i % 5)));
        size_t n = i + 1;
        size_t kept = n < max_events ? n : max_events;
        const uint64_t *window = seqs + (n - kept);
        uint64_t lost = n > max_events ? seqs[n - kept - 1] : floor;
        assert_int_equal(history_count(h), kept);
        assert_int_equal(history_last(h), seqs[i]);
        size_t bytes = 0;
        for (size_t k = n - kept; k < n; k++)
            bytes += 8 + k % 5;
        assert_int_equal(history_bytes(h), bytes);
        assert_int_equal(used(&b), bytes);
        check_all_afters(h, lost, window, kept);
    }
    history_free(h);
    assert_int_equal(used(&b), 0);
    free(seqs);
}

static void test_ring_wraps(void **state)
{
    (void)state;
    ring_walk(7, 1000, 1, 0);
}

static void test_ring_wraps_power_of_two(void **state)
{
    (void)state;
    ring_walk(8, 100, 1, 0);
    ring_walk(1, 20, 1, 0);
}

/* Sequences skip values (one process-wide counter): the search must still split right. */
static void test_sparse_sequences(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(10, BIG, &b, 0);
    const uint64_t seqs[] = {10, 20, 30, 40, 50};
    for (size_t i = 0; i < 5; i++)
        history_push(h, mk(seqs[i], 10));
    expect_since(h, 0, HISTORY_RESUME_OK, seqs, 5);
    expect_since(h, 9, HISTORY_RESUME_OK, seqs, 5);
    expect_since(h, 10, HISTORY_RESUME_OK, seqs + 1, 4);
    expect_since(h, 15, HISTORY_RESUME_OK, seqs + 1, 4);
    expect_since(h, 29, HISTORY_RESUME_OK, seqs + 2, 3);
    expect_since(h, 30, HISTORY_RESUME_OK, seqs + 3, 2);
    expect_since(h, 49, HISTORY_RESUME_OK, seqs + 4, 1);
    expect_since(h, 50, HISTORY_RESUME_OK, NULL, 0);
    expect_since(h, 51, HISTORY_RESUME_UNKNOWN, NULL, 0);
    check_all_afters(h, 0, seqs, 5);
    history_free(h);
}

/* A JetStream history: floor set once, events above it, held above the floor or last evicted. */
static void test_set_floor_and_lost(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(3, BIG, &b, 0);
    history_set_floor(h, 100);
    assert_int_equal(history_floor(h), 100);
    assert_int_equal(history_last(h), 100);
    struct sse_event **out = NULL;
    size_t n = 0;
    /* Below the floor: history alone cannot say (JetStream must fetch up to it). */
    assert_int_equal(history_since(h, 50, &out, &n), HISTORY_RESUME_GONE);
    assert_int_equal(history_lost(h), 100);
    for (uint64_t seq = 101; seq <= 104; seq++)
        history_push(h, mk(seq, 10));
    history_set_floor(h, 500); /* not empty: ignored */
    assert_int_equal(history_floor(h), 100);
    /* 101 was evicted (3 kept): everything above it is held, not everything above the floor. */
    assert_int_equal(history_lost(h), 101);
    assert_int_equal(history_since(h, 100, &out, &n), HISTORY_RESUME_GONE);
    assert_int_equal(history_since(h, history_lost(h), &out, &n), HISTORY_RESUME_OK);
    assert_int_equal(n, 3);
    assert_int_equal(out[0]->seq, 102);
    assert_int_equal(out[2]->seq, 104);
    for (size_t i = 0; i < n; i++)
        sse_event_unref(out[i]);
    free(out);
    history_free(h);
}

static void test_since_time(void **state)
{
    (void)state;
    struct history_budget b;
    budget_init(&b, BIG);
    struct history *h = history_new(10, BIG, &b, 0);
    for (uint64_t seq = 1; seq <= 5; seq++) {
        struct sse_event *ev = mk(seq, 10);
        ev->time_ns = (int64_t)seq * 1000;
        history_push(h, ev);
    }
    struct sse_event **out = NULL;
    size_t n = 0;
    history_since_time(h, 3000, &out, &n);
    assert_int_equal(n, 3);
    assert_int_equal(out[0]->seq, 3);
    history_since_time(h, 5001, &out, &n);
    assert_int_equal(n, 3);
    history_since_time(h, INT64_MIN, &out, &n);
    assert_int_equal(n, 8);
    assert_int_equal(out[3]->seq, 1);
    for (size_t i = 0; i < n; i++)
        sse_event_unref(out[i]);
    free(out);
    history_free(h);
}

static void test_sparse_sequences_wrapping(void **state)
{
    (void)state;
    ring_walk(7, 150, 3, 1000);
    ring_walk(5, 60, 1000003, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_since_basic),   cmocka_unit_test(test_since_appends),
        cmocka_unit_test(test_boundaries_floor),   cmocka_unit_test(test_boundaries_lost),
        cmocka_unit_test(test_evict_by_count),     cmocka_unit_test(test_evict_by_bytes),
        cmocka_unit_test(test_newest_always_kept), cmocka_unit_test(test_evict_by_shared_budget),
        cmocka_unit_test(test_refcounts),          cmocka_unit_test(test_free_null_and_empty),        cmocka_unit_test(test_end),
        cmocka_unit_test(test_ring_wraps),         cmocka_unit_test(test_ring_wraps_power_of_two),
        cmocka_unit_test(test_sparse_sequences),   cmocka_unit_test(test_sparse_sequences_wrapping),
        cmocka_unit_test(test_set_floor_and_lost), cmocka_unit_test(test_since_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
