/*
 * test_request: the request pipeline through a recording front end (the
 * heads it decides, whatever the protocol), and the long-poll answer's
 * cut at max-poll-bytes.
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
#include "sluice/config.h"
#include "sluice/cors.h"
#include "sluice/fanout.h"
#include "sluice/filecache.h"
#include "sluice/poll.h"
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
    size_t n = poll_json((const char *)sse.data, sse.len, true, 1 << 20, &json, &cut);
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
    size_t n = poll_json((const char *)sse.data, sse.len, true, max, &json, &cut);
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
    size_t n = poll_json((const char *)sse.data, sse.len, true, 100, &json, &cut);
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
        poll_json((const char *)sse.data, sse.len, true, 9000, &json, &cut);
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
    size_t n = poll_json(sse, strlen(sse), false, 1 << 20, &json, &cut);
    assert_int_equal(n, 2);
    int ids[4];
    char next[32];
    assert_int_equal(parse(&json, ids, next, sizeof(next)), 2);
    assert_string_equal(next, "8");
    buf_dispose(&json);
}

/* ---- the pipeline, driven by a front end that records what it is asked ---- */

struct recorded {
    int calls;          /* respond + start_stream + reset */
    int status;         /* of the last answer; -1 for a reset */
    bool has_body;
    char body[256];
    char fields[1024];  /* "name: value\n" each, in order */
};

static struct recorded rec;

static void record_head(const struct request_head *head)
{
    rec.calls++;
    rec.status = head->status;
    rec.fields[0] = '\0';
    for (size_t i = 0; i < head->n; i++) {
        size_t used = strlen(rec.fields);
        snprintf(rec.fields + used, sizeof(rec.fields) - used, "%.*s: %.*s\n",
                 (int)head->f[i].name_len, head->f[i].name, (int)head->f[i].value_len,
                 head->f[i].value);
    }
}

/* Whether the last head has a field name (at a line's start: values may name fields too). */
static bool has_field(const char *name)
{
    char want[64];
    snprintf(want, sizeof(want), "%s: ", name);
    if (strncmp(rec.fields, want, strlen(want)) == 0)
        return true;
    snprintf(want, sizeof(want), "\n%s: ", name);
    return strstr(rec.fields, want) != NULL;
}

static int fake_respond(struct request *r, const struct request_head *head,
                        struct request_body *body)
{
    (void)r;
    record_head(head);
    rec.has_body = body != NULL;
    rec.body[0] = '\0';
    if (body) {
        snprintf(rec.body, sizeof(rec.body), "%.*s", (int)body->len, body->data);
        free(body->owned);
    }
    return 0;
}

static int fake_start_stream(struct request *r, const struct request_head *head)
{
    (void)r;
    record_head(head);
    return 0;
}

static void fake_wake(struct request *r) { (void)r; }

static int fake_reset(struct request *r, enum request_reset why)
{
    (void)r;
    rec.calls++;
    rec.status = why == REQUEST_RESET_PROTOCOL ? -1 : -2;
    return 0;
}

static const struct request_front fake = {"test", fake_respond, fake_start_stream, fake_wake,
                                          fake_reset};

struct world {
    struct config cfg;
    struct fanout *fanout;
    struct stream_env streams;
    struct request_stats stats;
    struct cors *cors;
    struct request_env env;
    struct buf out;
    struct front_io io;
    struct request_quota quota;
};

static int world_up(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    config_init(&w->cfg);
    w->fanout = fanout_new(NULL, 0, stream_on_event, stream_on_ready, stream_on_replayed);
    stream_env_init(&w->streams, w->fanout, w->cfg.heartbeat_ms, 1 << 20);
    const char *origins[] = {"https://app.example.com"};
    char err[128];
    assert_int_equal(cors_new(&w->cors, origins, 1, false, err, sizeof(err)), 0);
    w->env = (struct request_env){.cfg = &w->cfg, .cors = w->cors, .streams = &w->streams,
                                  .stats = &w->stats};
    buf_init(&w->out);
    w->io = (struct front_io){&w->env, &w->out, 4096, NULL, NULL, 1, "127.0.0.1:1", true,
                               "127.0.0.1", NULL, false};
    request_quota_init(&w->quota, &w->env, 1);
    memset(&rec, 0, sizeof(rec));
    *state = w;
    return 0;
}

static int world_down(void **state)
{
    struct world *w = *state;
    request_quota_dispose(&w->quota);
    buf_dispose(&w->out);
    cors_free(w->cors);
    fanout_free(w->fanout);
    config_dispose(&w->cfg);
    free(w);
    return 0;
}

/* Serves one request of header pairs (name, value, …, NULL). */
static void serve(struct world *w, const char *const *headers)
{
    struct request r;
    request_init(&r, &fake, &w->io, &w->quota, 1);
    for (; headers[0]; headers += 2)
        request_header(&r, headers[0], strlen(headers[0]), headers[1], strlen(headers[1]));
    assert_int_equal(request_process(&r), 0);
    request_dispose(&r);
}

static void test_preflight_is_204_with_cors_fields_only(void **state)
{
    struct world *w = *state;
    serve(w, (const char *const[]){":method", "OPTIONS", ":path", "/events/a", "origin",
                                   "https://app.example.com", "access-control-request-method",
                                   "GET", "x-request-id", "rid-1", NULL});
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.status, 204);
    assert_false(rec.has_body);
    assert_non_null(strstr(rec.fields, "x-request-id: rid-1\n"));
    assert_non_null(strstr(rec.fields, "access-control-allow-origin: https://app.example.com\n"));
    assert_non_null(strstr(rec.fields, "access-control-max-age: "));
    /* A 204 has no content: nothing that describes one. */
    assert_false(has_field("content-length"));
    assert_false(has_field("content-type"));
    assert_false(has_field("cache-control"));
    assert_true(has_field("vary"));
}

static void test_refused_preflight_is_a_403_text(void **state)
{
    struct world *w = *state;
    serve(w, (const char *const[]){":method", "OPTIONS", ":path", "/events/a", "origin",
                                   "https://evil.test", "access-control-request-method", "GET",
                                   NULL});
    assert_int_equal(rec.status, 403);
    assert_string_equal(rec.body, "origin not allowed\n");
    assert_non_null(strstr(rec.fields, "content-type: text/plain; charset=utf-8\n"));
    assert_non_null(strstr(rec.fields, "content-length: 19\n"));
    assert_false(has_field("access-control-allow-origin"));
}

static void test_unknown_route_is_a_text_with_length(void **state)
{
    struct world *w = *state;
    serve(w, (const char *const[]){":method", "GET", ":path", "/nowhere", NULL});
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.status, 404);
    char want[64];
    snprintf(want, sizeof(want), "content-length: %zu\n", strlen(rec.body));
    assert_non_null(strstr(rec.fields, want));
    assert_non_null(strstr(rec.fields, "cache-control: no-store\n"));
    assert_non_null(strstr(rec.fields, "x-request-id: "));
}

static void test_header_too_large_is_431(void **state)
{
    struct world *w = *state;
    char big[300];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    serve(w, (const char *const[]){":method", "GET", ":path", "/events/a", ":authority", big,
                                   NULL});
    assert_int_equal(rec.status, 431);
}

static void test_no_path_is_a_stream_error(void **state)
{
    struct world *w = *state;
    serve(w, (const char *const[]){":method", "GET", NULL});
    assert_int_equal(rec.calls, 1);
    assert_int_equal(rec.status, -1);
}

static void test_reserved_subject_is_403(void **state)
{
    struct world *w = *state;
    serve(w, (const char *const[]){":method", "GET", ":path", "/events/_INBOX.x", NULL});
    assert_int_equal(rec.status, 403);
    assert_int_equal(atomic_load(&w->stats.reserved), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_answer_when_it_fits),
        cmocka_unit_test(test_cut_at_last_whole_event),
        cmocka_unit_test(test_one_event_always_goes),
        cmocka_unit_test(test_polling_from_next_collects_every_event_once),
        cmocka_unit_test(test_partial_copy_keeps_next_at_last_whole_event),
        cmocka_unit_test_setup_teardown(test_preflight_is_204_with_cors_fields_only, world_up,
                                        world_down),
        cmocka_unit_test_setup_teardown(test_refused_preflight_is_a_403_text, world_up,
                                        world_down),
        cmocka_unit_test_setup_teardown(test_unknown_route_is_a_text_with_length, world_up,
                                        world_down),
        cmocka_unit_test_setup_teardown(test_header_too_large_is_431, world_up, world_down),
        cmocka_unit_test_setup_teardown(test_no_path_is_a_stream_error, world_up, world_down),
        cmocka_unit_test_setup_teardown(test_reserved_subject_is_403, world_up, world_down),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
