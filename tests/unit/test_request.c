/*
 * test_request: the long-poll answer's cut at max-poll-bytes.
 *
 * A poll answer stops at the last whole event that fits and names it in
 * `next`, so that polling again from there collects every event exactly
 * once. The SSE text is written here by hand, as a stream queues it.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/buf.h"
#include "sluice/request.h"

#define NEVENTS 50
#define PAYLOAD 300

/* SSE text of events after..NEVENTS (ids 1..NEVENTS), each PAYLOAD control characters. */
static void sse_after(struct buf *out, int after)
{
    buf_append(out, "retry: 3000\n\n", 13);
    for (int i = after + 1; i <= NEVENTS; i++) {
        char head[64];
        int n = snprintf(head, sizeof(head), "id: %d\ndata: ", i);
        buf_append(out, head, (size_t)n);
        for (int k = 0; k < PAYLOAD; k++)
            buf_append(out, "\x01", 1); /* six bytes each in JSON */
        buf_append(out, "\n\n", 2);
    }
}

/* Parses json; returns the events array size and copies next. */
static size_t parse(const struct buf *json, int *ids, char *next, size_t nextlen)
{
    json_error_t err;
    json_t *root = json_loadb((const char *)json->data, json->len, 0, &err);
    assert_non_null(root);
    json_t *events = json_object_get(root, "events");
    size_t n = json_array_size(events);
    for (size_t i = 0; i < n; i++)
        ids[i] = atoi(json_string_value(json_object_get(json_array_get(events, i), "id")));
    snprintf(next, nextlen, "%s", json_string_value(json_object_get(root, "next")));
    json_decref(root);
    return n;
}

static void test_whole_answer_when_it_fits(void **state)
{
    (void)state;
    struct buf sse, json;
    buf_init(&sse);
    buf_init(&json);
    sse_after(&sse, 0);
    bool cut = true;
    size_t n = request_poll_json((const char *)sse.data, sse.len, true, 1 << 20, &json, &cut);
    assert_int_equal(n, NEVENTS);
    assert_false(cut);
    int ids[NEVENTS];
    char next[32];
    assert_int_equal(parse(&json, ids, next, sizeof(next)), NEVENTS);
    assert_string_equal(next, "50");
    buf_dispose(&sse);
    buf_dispose(&json);
}

static void test_cut_at_last_whole_event(void **state)
{
    (void)state;
    struct buf sse, json;
    buf_init(&sse);
    buf_init(&json);
    sse_after(&sse, 0);
    size_t max = 8000; /* about four events of 1.8 KB of JSON */
    bool cut = false;
    size_t n = request_poll_json((const char *)sse.data, sse.len, true, max, &json, &cut);
    assert_true(cut);
    assert_true(n >= 1 && n < NEVENTS);
    assert_true(json.len <= max);
    int ids[NEVENTS];
    char next[32];
    assert_int_equal(parse(&json, ids, next, sizeof(next)), n);
    assert_int_equal(atoi(next), ids[n - 1]);
    buf_dispose(&sse);
    buf_dispose(&json);
}

static void test_one_event_always_goes(void **state)
{
    (void)state;
    struct buf sse, json;
    buf_init(&sse);
    buf_init(&json);
    sse_after(&sse, 0);
    bool cut = false;
    size_t n = request_poll_json((const char *)sse.data, sse.len, true, 100, &json, &cut);
    assert_int_equal(n, 1);
    assert_true(cut);
    int ids[NEVENTS];
    char next[32];
    assert_int_equal(parse(&json, ids, next, sizeof(next)), 1);
    assert_int_equal(ids[0], 1);
    assert_string_equal(next, "1");
    buf_dispose(&sse);
    buf_dispose(&json);
}

/* What the e2e test does against the gateway: poll from next until nothing is left. */
static void test_polling_from_next_collects_every_event_once(void **state)
{
    (void)state;
    int got[NEVENTS * 2];
    size_t ngot = 0;
    int after = 0;
    for (int round = 0; round < NEVENTS + 1 && after < NEVENTS; round++) {
        struct buf sse, json;
        buf_init(&sse);
        buf_init(&json);
        sse_after(&sse, after);
        bool cut;
        request_poll_json((const char *)sse.data, sse.len, true, 9000, &json, &cut);
        int ids[NEVENTS];
        char next[32];
        size_t n = parse(&json, ids, next, sizeof(next));
        assert_true(n > 0);
        for (size_t i = 0; i < n; i++)
            got[ngot++] = ids[i];
        after = atoi(next);
        buf_dispose(&sse);
        buf_dispose(&json);
    }
    assert_int_equal(ngot, NEVENTS);
    for (int i = 0; i < NEVENTS; i++)
        assert_int_equal(got[i], i + 1);
}

/* A partial copy of the queue ends inside an event: its id must not become next. */
static void test_partial_copy_keeps_next_at_last_whole_event(void **state)
{
    (void)state;
    const char *sse = "retry: 3000\n\nid: 7\ndata: a\n\nid: 8\ndata: b\n\nid: 9\ndata: c";
    struct buf json;
    buf_init(&json);
    bool cut;
    size_t n = request_poll_json(sse, strlen(sse), false, 1 << 20, &json, &cut);
    assert_int_equal(n, 2);
    int ids[4];
    char next[32];
    assert_int_equal(parse(&json, ids, next, sizeof(next)), 2);
    assert_string_equal(next, "8");
    buf_dispose(&json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_answer_when_it_fits),
        cmocka_unit_test(test_cut_at_last_whole_event),
        cmocka_unit_test(test_one_event_always_goes),
        cmocka_unit_test(test_polling_from_next_collects_every_event_once),
        cmocka_unit_test(test_partial_copy_keeps_next_at_last_whole_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
