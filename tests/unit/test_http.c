/*
 * test_http: request routing and percent-decoding.
 *
 * Method and path are handed over as heap copies of exactly their length,
 * never NUL-terminated, so a sanitizer build catches a read past plen.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/route.h"

static void *exact_copy(const char *s, size_t n)
{
    char *q = malloc(n ? n : 1);
    assert_non_null(q);
    memcpy(q, s, n);
    return q;
}

static void route_n(struct http_route *r, const char *method, size_t mlen, const char *path,
                    size_t plen)
{
    char *m = exact_copy(method, mlen);
    char *p = exact_copy(path, plen);
    memset(r, 0xa5, sizeof *r); /* the route is an output, not an input */
    http_route(r, m, mlen, p, plen);
    /* The route owns copies: the request buffers may go away. */
    memset(m, 'X', mlen);
    memset(p, 'X', plen);
    free(m);
    free(p);
}

static void route(struct http_route *r, const char *method, const char *path)
{
    route_n(r, method, strlen(method), path, strlen(path));
}

static void expect_error(const char *method, const char *path, int status)
{
    struct http_route r;
    route(&r, method, path);
    if (r.kind != HTTP_ERROR || r.status != status)
        fail_msg("%s %s: kind %d status %d, want HTTP_ERROR %d", method, path, (int)r.kind,
                 r.status, status);
    size_t n = strnlen(r.reason, sizeof r.reason);
    if (n == 0 || n == sizeof r.reason)
        fail_msg("%s %s: reason empty or not terminated", method, path);
    if (strchr(r.reason, '\n') != NULL || strchr(r.reason, '\r') != NULL)
        fail_msg("%s %s: reason \"%s\" holds a line end", method, path, r.reason);
    http_route_dispose(&r); /* allowed on an error route */
}

/* Routes GET path and expects HTTP_EVENTS on exactly the subjects given. */
static void expect_events(const char *path, const char *last_event_id, size_t n, ...)
{
    struct http_route r;
    route(&r, "GET", path);
    if (r.kind != HTTP_EVENTS)
        fail_msg("GET %s: kind %d status %d (%.*s), want HTTP_EVENTS", path, (int)r.kind, r.status,
                 (int)sizeof r.reason, r.reason);
    assert_int_equal(r.status, 200);
    if (r.nsubjects != n)
        fail_msg("GET %s: %zu subjects, want %zu", path, r.nsubjects, n);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        const char *want = va_arg(ap, char *);
        assert_non_null(r.subjects[i]);
        if (strcmp(r.subjects[i], want) != 0)
            fail_msg("GET %s: subjects[%zu] \"%s\", want \"%s\"", path, i, r.subjects[i], want);
    }
    va_end(ap);
    if (last_event_id == NULL) {
        if (r.last_event_id != NULL)
            fail_msg("GET %s: last_event_id \"%s\", want none", path, r.last_event_id);
    } else {
        if (r.last_event_id == NULL || strcmp(r.last_event_id, last_event_id) != 0)
            fail_msg("GET %s: last_event_id \"%s\", want \"%s\"", path,
                     r.last_event_id ? r.last_event_id : "(null)", last_event_id);
    }
    http_route_dispose(&r);
}

static void test_events_path(void **state)
{
    (void)state;
    expect_events("/events/orders.eu", NULL, 1, "orders.eu");
    expect_events("/events/a", NULL, 1, "a");
}

static void test_events_path_wildcards(void **state)
{
    (void)state;
    expect_events("/events/orders.*", NULL, 1, "orders.*");
    expect_events("/events/a.>", NULL, 1, "a.>");
}

static void test_events_path_percent_decoded(void **state)
{
    (void)state;
    expect_events("/events/orders%2Eeu", NULL, 1, "orders.eu");
    expect_events("/events/orders%2eeu", NULL, 1, "orders.eu");
    expect_events("/events/a.%3E", NULL, 1, "a.>");
    expect_events("/events/a.%2A", NULL, 1, "a.*");
}

static void test_events_query(void **state)
{
    (void)state;
    expect_events("/events?subject=a&subject=b.*", NULL, 2, "a", "b.*");
    expect_events("/events?subject=b.*&subject=a", NULL, 2, "b.*", "a");
    expect_events("/events?subject=orders.eu", NULL, 1, "orders.eu");
    expect_events("/events?subject=a.%3E", NULL, 1, "a.>");
}

static void test_events_query_dedup(void **state)
{
    (void)state;
    expect_events("/events?subject=a&subject=a", NULL, 1, "a");
    expect_events("/events?subject=a&subject=b&subject=a&subject=c&subject=b", NULL, 3, "a", "b",
                  "c");
    /* Duplicates are found after decoding. */
    expect_events("/events?subject=a&subject=%61", NULL, 1, "a");
}

static void test_overlapping_subjects_refused(void **state)
{
    (void)state;
    expect_error("GET", "/events?subject=orders.*&subject=orders.eu", 400);
    expect_error("GET", "/events?subject=a.>&subject=a.b.c", 400);
    expect_error("GET", "/events/a.b?subject=*.b", 400);
    expect_events("/events?subject=a.*&subject=b.*", NULL, 2, "a.*", "b.*");
}

static void test_publish_route(void **state)
{
    (void)state;
    struct http_route r;
    route(&r, "POST", "/publish/orders.eu?event=price%20update");
    assert_int_equal(r.kind, HTTP_PUBLISH);
    assert_int_equal(r.status, 202);
    assert_int_equal(r.nsubjects, 1);
    assert_string_equal(r.subjects[0], "orders.eu");
    assert_string_equal(r.event, "price update");
    http_route_dispose(&r);
    route(&r, "POST", "/publish/orders.eu");
    assert_int_equal(r.kind, HTTP_PUBLISH);
    assert_null(r.event);
    assert_false(r.end);
    http_route_dispose(&r);
    route(&r, "POST", "/publish/job.7?end=1&event=done");
    assert_true(r.end);
    assert_string_equal(r.event, "done");
    http_route_dispose(&r);
    expect_error("GET", "/publish/orders.eu", 405);
    expect_error("POST", "/publish/orders.*", 400);
    expect_error("POST", "/publish/orders.>", 400);
    expect_error("POST", "/publish/", 400);
    expect_error("POST", "/publish/a..b", 400);
    expect_error("POST", "/publish/a?event=x%0Ay", 400);
    expect_error("POST", "/publish/a?event=", 400);
    expect_error("POST", "/events/a", 405);
}

/* Request streams: POST /streams/<subject>, GET and DELETE /streams/r/<tag>.<id>. */
static void test_request_stream_routes(void **state)
{
    (void)state;
    struct http_route r;
    static const char tok[] = "0123456789abcdef.0123456789abcdef0123456789abcdef";
    char path[128];
    route(&r, "POST", "/streams/llm.chat");
    assert_int_equal(r.kind, HTTP_REQUEST);
    assert_string_equal(r.subjects[0], "llm.chat");
    http_route_dispose(&r);
    snprintf(path, sizeof(path), "/streams/r/%s?last_event_id=42", tok);
    route(&r, "GET", path);
    assert_int_equal(r.kind, HTTP_REPLY);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.stream, tok);
    assert_string_equal(r.last_event_id, "42");
    assert_int_equal(r.nsubjects, 0);
    http_route_dispose(&r);
    snprintf(path, sizeof(path), "/streams/r/%s", tok);
    route(&r, "DELETE", path);
    assert_int_equal(r.kind, HTTP_CANCEL);
    http_route_dispose(&r);
    expect_error("GET", "/streams/llm.chat", 405);
    expect_error("POST", "/streams/llm.*", 400);
    expect_error("POST", "/streams/llm.>", 400);
    expect_error("POST", path, 405);
    expect_error("GET", "/streams/r/", 404);
    expect_error("GET", "/streams/r/0123456789abcdef.0123456789ABCDEF0123456789abcdef", 404);
    expect_error("GET", "/streams/r/0123456789abcdef-0123456789abcdef0123456789abcdef", 404);
    expect_error("GET", "/streams/r/0123456789abcdef.0123456789abcdef0123456789abcde", 404);
    expect_error("GET", "/streams/r/0123456789abcdef.0123456789abcdef0123456789abcdef0", 404);
    expect_error("GET", "/streams/r/../../etc/passwd", 404);
    route(&r, "POST", "/v1/chat/completions");
    assert_int_equal(r.kind, HTTP_ERROR);
    http_route_request(&r, "llm.chat");
    assert_int_equal(r.kind, HTTP_REQUEST);
    assert_string_equal(r.subjects[0], "llm.chat");
    http_route_dispose(&r);
}

static void test_poll_route(void **state)
{
    (void)state;
    struct http_route r;
    route(&r, "GET", "/poll?subject=a&subject=b.*&after=12-7&timeout=5");
    assert_int_equal(r.kind, HTTP_POLL);
    assert_int_equal(r.nsubjects, 2);
    assert_string_equal(r.last_event_id, "12-7");
    assert_int_equal(r.timeout_ms, 5000);
    http_route_dispose(&r);
    route(&r, "GET", "/poll?subject=a");
    assert_int_equal(r.timeout_ms, HTTP_POLL_TIMEOUT_MS);
    assert_null(r.last_event_id);
    http_route_dispose(&r);
    expect_error("GET", "/poll", 400);
    expect_error("GET", "/poll?subject=a&timeout=0", 400);
    expect_error("GET", "/poll?subject=a&timeout=61", 400);
    expect_error("GET", "/poll?subject=a&timeout=x", 400);
    expect_error("POST", "/poll?subject=a", 405);
}

static void test_last_event_id(void **state)
{
    (void)state;
    expect_events("/events?subject=a&last_event_id=42", "42", 1, "a");
    expect_events("/events?last_event_id=42&subject=a", "42", 1, "a");
    expect_events("/events/orders.eu?last_event_id=7", "7", 1, "orders.eu");
    expect_events("/events?subject=a", NULL, 1, "a");
}

static void test_last_event_id_percent_decoded(void **state)
{
    (void)state;
    /* A query value is percent-encoded like any other; composite ids hold ':' and ','. */
    expect_events("/events?subject=a&last_event_id=1%3A2%2C3", "1:2,3", 1, "a");
}

static void test_last_event_id_repeated(void **state)
{
    (void)state;
    struct http_route r;
    route(&r, "GET", "/events?subject=a&last_event_id=1&last_event_id=2");
    assert_int_equal(r.kind, HTTP_EVENTS);
    assert_non_null(r.last_event_id);
    assert_true(strcmp(r.last_event_id, "1") == 0 || strcmp(r.last_event_id, "2") == 0);
    http_route_dispose(&r); /* the id not kept must not leak (ASan) */
}

static void test_unknown_query_params_ignored(void **state)
{
    (void)state;
    expect_events("/events?foo=bar&subject=a&baz=qux", NULL, 1, "a");
    expect_events("/events/a?foo=bar", NULL, 1, "a");
    /* Names that merely start like a known one are unknown too. */
    expect_events("/events?subject=a&last_event_idx=5&subjects=b&subjectx=c", NULL, 1, "a");
    expect_events("/events?subject=a&last_event=5&subj=b", NULL, 1, "a");
}

static void test_max_subjects(void **state)
{
    (void)state;
    char path[1024];
    size_t o = (size_t)snprintf(path, sizeof path, "/events?");
    for (int i = 0; i < HTTP_MAX_SUBJECTS; i++)
        o += (size_t)snprintf(path + o, sizeof path - o, "%ssubject=s%d", i ? "&" : "", i);

    /* Exactly HTTP_MAX_SUBJECTS is fine. */
    struct http_route r;
    route(&r, "GET", path);
    assert_int_equal(r.kind, HTTP_EVENTS);
    assert_int_equal(r.nsubjects, HTTP_MAX_SUBJECTS);
    for (int i = 0; i < HTTP_MAX_SUBJECTS; i++) {
        char want[16];
        snprintf(want, sizeof want, "s%d", i);
        assert_string_equal(r.subjects[i], want);
    }
    http_route_dispose(&r);

    /* One more is refused. */
    snprintf(path + o, sizeof path - o, "&subject=s%d", HTTP_MAX_SUBJECTS);
    expect_error("GET", path, 400);
}

static void test_malformed_escape(void **state)
{
    (void)state;
    expect_error("GET", "/events/a%2", 400);
    expect_error("GET", "/events/a%", 400);
    expect_error("GET", "/events/a%zz", 400);
    expect_error("GET", "/events?subject=a%2", 400);
}

static void test_invalid_subject(void **state)
{
    (void)state;
    expect_error("GET", "/events/a..b", 400);
    expect_error("GET", "/events/a.", 400);
    expect_error("GET", "/events/a.>.b", 400);
    expect_error("GET", "/events/a%20b", 400);
    expect_error("GET", "/events/a%00b", 400);
    expect_error("GET", "/events/a%0Ab", 400);
    expect_error("GET", "/events/a%0D%0Ab", 400);
    expect_error("GET", "/events?subject=a..b", 400);
    expect_error("GET", "/events?subject=a&subject=b..c", 400);
}

static void test_missing_subject(void **state)
{
    (void)state;
    expect_error("GET", "/events?subject=", 400);
    expect_error("GET", "/poll", 400);
    expect_error("GET", "/poll?after=4", 400);
    /* No subject on /events: the grant's default subjects (server-chosen), decided later. */
    static const char *const none[] = {"/events/", "/events", "/events?",
                                       "/events?last_event_id=4"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        struct http_route r;
        route(&r, "GET", none[i]);
        if (r.kind != HTTP_EVENTS || r.nsubjects != 0 || r.status != 200)
            fail_msg("GET %s: kind %d, %zu subjects, want HTTP_EVENTS with none", none[i],
                     (int)r.kind, r.nsubjects);
        http_route_dispose(&r);
    }
}

static void expect_file(const char *path, const char *file)
{
    struct http_route r;
    route(&r, "GET", path);
    if (r.kind != HTTP_FILE || strcmp(r.file, file) != 0)
        fail_msg("GET %s: kind %d file %s, want HTTP_FILE %s", path, (int)r.kind,
                 r.file ? r.file : "(null)", file);
    http_route_dispose(&r);
}

static void test_static_files(void **state)
{
    (void)state;
    /* Anything that is not an API path names a static file; the front end 404s a missing one. */
    expect_file("/", "index.html");
    expect_file("/nope", "nope");
    expect_file("/eventsx/a", "eventsx/a");
    expect_file("/js/app.js?v=2", "js/app.js");
    expect_error("GET", "/a%20b.txt", 404); /* no spaces or control bytes in names */
    /* Traversal, hidden files, empty segments, directories: never. */
    expect_error("GET", "/../etc/passwd", 404);
    expect_error("GET", "/a/../../x", 404);
    expect_error("GET", "/%2e%2e/x", 404);
    expect_error("GET", "/a/%2E%2E/x", 404);
    expect_error("GET", "/.git/config", 404);
    expect_error("GET", "/a//b", 404);
    expect_error("GET", "/dir/", 404);
    expect_error("GET", "/a%5cb", 404);
    expect_error("GET", "/a%00b", 404);
    expect_error("POST", "/index.html", 404);
    assert_string_equal(http_content_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(http_content_type("app.js"), "text/javascript; charset=utf-8");
    assert_string_equal(http_content_type("x"), "application/octet-stream");
}

static void test_method_not_allowed(void **state)
{
    (void)state;
    expect_error("POST", "/events/a", 405);
    expect_error("PUT", "/events?subject=a", 405);
    expect_error("DELETE", "/events/a", 405);
}

static void test_long_path(void **state)
{
    (void)state;
    size_t n = HTTP_PATH_MAX + 100;
    char *path = malloc(n + 1);
    assert_non_null(path);
    memcpy(path, "/events/", 8);
    memset(path + 8, 'a', n - 8);
    path[n] = '\0';
    struct http_route r;
    route(&r, "GET", path);
    assert_int_equal(r.kind, HTTP_ERROR);
    assert_true(r.status >= 400 && r.status < 500);
    assert_true(strnlen(r.reason, sizeof r.reason) < sizeof r.reason);
    http_route_dispose(&r);
    free(path);
}

static void test_route_uses_lengths(void **state)
{
    (void)state;
    struct http_route r;
    /* Bytes past mlen and plen are not part of the request. */
    route_n(&r, "GETX", 3, "/events/a.bXXXX", 11);
    assert_int_equal(r.kind, HTTP_EVENTS);
    assert_int_equal(r.nsubjects, 1);
    assert_string_equal(r.subjects[0], "a.b");
    http_route_dispose(&r);

    route_n(&r, "GET", 3, "/events/a.b..", 11);
    assert_int_equal(r.kind, HTTP_EVENTS);
    assert_string_equal(r.subjects[0], "a.b");
    http_route_dispose(&r);
}

static void test_dispose_after_events(void **state)
{
    (void)state;
    struct http_route r;
    route(&r, "GET", "/events?subject=a&subject=b&last_event_id=9");
    assert_int_equal(r.kind, HTTP_EVENTS);
    http_route_dispose(&r); /* frees subjects and id; ASan reports a leak otherwise */
}

static void expect_decode(const char *in, size_t n, const char *want, long wantlen)
{
    char *buf = exact_copy(in, n);
    long got = http_percent_decode(buf, n);
    if (got != wantlen)
        fail_msg("http_percent_decode(\"%.*s\") %ld, want %ld", (int)n, in, got, wantlen);
    if (wantlen >= 0 && memcmp(buf, want, (size_t)wantlen) != 0)
        fail_msg("http_percent_decode(\"%.*s\") gave \"%.*s\", want \"%s\"", (int)n, in,
                 (int)wantlen, buf, want);
    free(buf);
}

#define DECODE(in, want) expect_decode((in), sizeof(in) - 1, (want), (long)(sizeof(want) - 1))
#define DECODE_BAD(in) expect_decode((in), sizeof(in) - 1, NULL, -1)

static void test_percent_decode(void **state)
{
    (void)state;
    DECODE("a%41b", "aAb");
    DECODE("abc", "abc");
    DECODE("", "");
    DECODE("%2e%2E", "..");
    DECODE("%41%42%43", "ABC");
    DECODE("%25", "%");
    DECODE("%2541", "%41"); /* decoded once, not twice */
    DECODE("a%00b", "a\0b");
    DECODE("%ff", "\xff");
}

static void test_percent_decode_malformed(void **state)
{
    (void)state;
    DECODE_BAD("%zz");
    DECODE_BAD("%4");
    DECODE_BAD("%");
    DECODE_BAD("a%");
    DECODE_BAD("%g1");
    DECODE_BAD("%1g");
    DECODE_BAD("ok%4");
}

static void test_percent_decode_uses_len(void **state)
{
    (void)state;
    /* Over the first 2 bytes, "a%41" is "a%": malformed. */
    expect_decode("a%41", 2, NULL, -1);
    /*
     * The escape's second digit lies past n: still malformed, even when the
     * buffer goes on with hex digits.
     */
    expect_decode("%41", 2, NULL, -1);
    static const char more[] = "ab%4142";
    char buf[sizeof more];
    memcpy(buf, more, sizeof more);
    assert_int_equal(http_percent_decode(buf, 4), -1);
    memcpy(buf, more, sizeof more);
    assert_int_equal(http_percent_decode(buf, 3), -1);
    memcpy(buf, more, sizeof more);
    assert_int_equal(http_percent_decode(buf, 5), 3);
    assert_memory_equal(buf, "abA", 3);
    /* Over the first 4 bytes, "a%41%" is complete. */
    expect_decode("a%41%", 4, "aA", 2);
}

static void expect_time(const char *text, int64_t want)
{
    int64_t ns = -1;
    bool ok = http_parse_time(text, strlen(text), &ns);
    if (want < 0) {
        if (ok)
            fail_msg("%s parsed as %lld", text, (long long)ns);
        return;
    }
    if (!ok || ns != want)
        fail_msg("%s: ok %d ns %lld, want %lld", text, ok, (long long)ns, (long long)want);
}

static void test_parse_time(void **state)
{
    (void)state;
    const int64_t S = 1000000000;
    expect_time("1970-01-01T00:00:01Z", S);
    expect_time("2026-11-24T08:00:00Z", 1795507200 * S);
    expect_time("2026-11-24t08:00:00z", 1795507200 * S);
    expect_time("2026-11-24T09:30:00+01:30", 1795507200 * S);
    expect_time("2026-11-24T06:00:00-02:00", 1795507200 * S);
    expect_time("2026-11-24T08:00:00.5Z", 1795507200 * S + S / 2);
    expect_time("2026-11-24T08:00:00.123456789123Z", 1795507200 * S + 123456789);
    expect_time("2024-02-29T00:00:00Z", 1709164800 * S);
    expect_time("2016-12-31T23:59:60Z", 1483228799 * S); /* leap second */
    expect_time("2262-04-11T00:00:00Z", 9223286400 * S);
    expect_time("2262-04-12T00:00:00Z", -1); /* past what int64_t nanoseconds hold */
    expect_time("9999-12-31T23:59:59Z", -1);
    expect_time("2023-02-29T00:00:00Z", -1);
    expect_time("1900-02-29T00:00:00Z", -1);
    expect_time("1969-12-31T23:59:59Z", -1);
    expect_time("1970-01-01T00:00:00Z", -1); /* 0 means "no since" */
    expect_time("2026-13-01T00:00:00Z", -1);
    expect_time("2026-11-24T24:00:00Z", -1);
    expect_time("2026-11-24T08:00:00", -1);   /* no zone */
    expect_time("2026-11-24T08:00:00.Z", -1);
    expect_time("2026-11-24T08:00:00Zx", -1);
    expect_time("2026-11-24 08:00:00Z", -1);
    expect_time("2026-11-24T08:00:00+0100", -1);
    expect_time("20261124T080000Z", -1);
    expect_time("", -1);
}

static void test_since_query(void **state)
{
    (void)state;
    struct http_route r;
    route(&r, "GET", "/events/a?since=2026-11-24T08%3A00%3A00Z");
    assert_int_equal(r.kind, HTTP_EVENTS);
    assert_int_equal(r.since_ns, (int64_t)1795507200 * 1000000000);
    http_route_dispose(&r);
    /* A valid time followed by padding past the buffer is refused, not truncated to valid. */
    route(&r, "GET", "/events/a?since=2026-11-24T08:00:00.000000000000000000000000000000000000000000Z"
                     "junkjunkjunk");
    assert_int_equal(r.kind, HTTP_ERROR);
    http_route_dispose(&r);
    route(&r, "GET", "/events/a?since=yesterday");
    assert_int_equal(r.kind, HTTP_ERROR);
    assert_int_equal(r.status, 400);
    http_route_dispose(&r);
    route(&r, "GET", "/events/a?last_event_id=earliest");
    assert_string_equal(r.last_event_id, "earliest");
    http_route_dispose(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_events_path),
        cmocka_unit_test(test_events_path_wildcards),
        cmocka_unit_test(test_events_path_percent_decoded),
        cmocka_unit_test(test_events_query),
        cmocka_unit_test(test_events_query_dedup),
        cmocka_unit_test(test_overlapping_subjects_refused),
        cmocka_unit_test(test_publish_route),
        cmocka_unit_test(test_request_stream_routes),
        cmocka_unit_test(test_poll_route),
        cmocka_unit_test(test_last_event_id),
        cmocka_unit_test(test_last_event_id_percent_decoded),
        cmocka_unit_test(test_last_event_id_repeated),
        cmocka_unit_test(test_unknown_query_params_ignored),
        cmocka_unit_test(test_max_subjects),
        cmocka_unit_test(test_malformed_escape),
        cmocka_unit_test(test_invalid_subject),
        cmocka_unit_test(test_missing_subject),
        cmocka_unit_test(test_static_files),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_long_path),
        cmocka_unit_test(test_route_uses_lengths),
        cmocka_unit_test(test_dispose_after_events),
        cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_percent_decode_malformed),
        cmocka_unit_test(test_percent_decode_uses_len),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_since_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
