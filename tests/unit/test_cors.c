/*
 * test_cors: allowed-origin patterns, matching edge cases and the exact
 * response headers for actual and preflight requests.
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

#include "sluice/cors.h"
#include "sluice/err.h"

static struct cors *make(const char *const *origins, size_t n, bool credentials)
{
    struct cors *c;
    char err[256] = "";
    int rc = cors_new(&c, origins, n, credentials, err, sizeof(err));
    if (rc != 0)
        fail_msg("cors_new: %s", err);
    return c;
}

static void expect(const struct cors *c, const char *origin, bool want)
{
    /* An exact-length heap copy: a sanitizer build catches a read past len. */
    size_t n = strlen(origin);
    char *copy = malloc(n ? n : 1);
    memcpy(copy, origin, n);
    bool got = cors_allowed(c, copy, n);
    free(copy);
    if (got != want)
        fail_msg("origin \"%s\": got %s, want %s", origin, got ? "allowed" : "denied",
                 want ? "allowed" : "denied");
}

static void test_exact(void **state)
{
    (void)state;
    const char *o[] = {"https://app.example.com"};
    struct cors *c = make(o, 1, false);
    expect(c, "https://app.example.com", true);
    expect(c, "HTTPS://APP.Example.COM", true);
    expect(c, "https://app.example.com:443", true);
    expect(c, "http://app.example.com", false);
    expect(c, "https://app.example.com:8443", false);
    expect(c, "https://app.example.com.", false);
    expect(c, "https://app.example.com/", false);
    expect(c, "https://app.example.com/x", false);
    expect(c, "https://app.example.co", false);
    expect(c, "https://app.example.com.evil.net", false);
    expect(c, "https://evilapp.example.com", false);
    expect(c, "https://x.app.example.com", false);
    expect(c, "https://user@app.example.com", false);
    expect(c, "https://app.example.com ", false);
    expect(c, " https://app.example.com", false);
    expect(c, "https://app.example.com,https://app.example.com", false);
    expect(c, "app.example.com", false);
    expect(c, "", false);
    expect(c, "null", false);
    cors_free(c);
}

static void test_wildcard(void **state)
{
    (void)state;
    const char *o[] = {"https://*.example.com"};
    struct cors *c = make(o, 1, true);
    expect(c, "https://a.example.com", true);
    expect(c, "https://a.b.example.com", true);
    expect(c, "https://A.Example.Com", true);
    expect(c, "https://example.com", false);
    expect(c, "https://.example.com", false);
    expect(c, "https://evil-example.com", false);
    expect(c, "https://aexample.com", false);
    expect(c, "https://a.example.com.evil.net", false);
    expect(c, "https://a.example.com.", false);
    expect(c, "http://a.example.com", false);
    expect(c, "https://a.example.com:444", false);
    expect(c, "https://a..example.com", false);
    expect(c, "https://*.example.com", false);
    cors_free(c);
}

static void test_ports_and_schemes(void **state)
{
    (void)state;
    const char *o[] = {"http://localhost:3000", "http://example.org:80", "https://[::1]:8443",
                       "app://bundle", "http://127.0.0.1"};
    struct cors *c = make(o, 5, false);
    expect(c, "http://localhost:3000", true);
    expect(c, "http://localhost", false);
    expect(c, "http://localhost:30000", false);
    expect(c, "http://localhost:03000", false);
    expect(c, "http://localhost:", false);
    expect(c, "http://localhost:99999", false);
    expect(c, "http://localhost:3000:3000", false);
    expect(c, "http://example.org", true);
    expect(c, "http://example.org:80", true);
    expect(c, "https://example.org", false);
    expect(c, "https://[::1]:8443", true);
    expect(c, "https://[::1]", false);
    expect(c, "https://[::2]:8443", false);
    expect(c, "https://[::1:8443", false);
    expect(c, "app://bundle", true);
    expect(c, "App://Bundle", true);
    expect(c, "app://bundle:1", false);
    expect(c, "http://127.0.0.1", true);
    expect(c, "http://127.0.0.1:80", true);
    expect(c, "http://127.0.0.2", false);
    cors_free(c);
}

static void test_null_and_long_origins(void **state)
{
    (void)state;
    const char *o[] = {"*"};
    struct cors *c = make(o, 1, false);
    expect(c, "https://anything.example", true);
    expect(c, "null", false);
    expect(c, "NULL", false);
    expect(c, "file://", false);
    /* 600 bytes of host: longer than any real origin. */
    char big[700] = "https://";
    for (int i = 0; i < 10; i++)
        strcat(big, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.");
    strcat(big, "com");
    assert_true(strlen(big) > CORS_ORIGIN_MAX);
    expect(c, big, false);
    /* A label of 64 bytes and a host over 253 bytes are not hostnames. */
    char label[100] = "https://";
    memset(label + 8, 'a', 64);
    strcpy(label + 72, ".com");
    expect(c, label, false);
    strcpy(label + 8 + 63, ".com");
    expect(c, label, true);
    char host[400] = "https://";
    for (int i = 0; i < 64; i++)
        strcat(host, "abc.");
    strcat(host, "com");
    expect(c, host, false);
    cors_free(c);
}

static void test_empty_and_null_config(void **state)
{
    (void)state;
    struct cors *c = make(NULL, 0, false);
    expect(c, "https://app.example.com", false);
    assert_int_equal(cors_check(c, NULL, 0), CORS_NO_ORIGIN);
    assert_int_equal(cors_check(c, "https://a.b", 11), CORS_DENIED);
    cors_free(c);
    assert_int_equal(cors_check(NULL, NULL, 0), CORS_NO_ORIGIN);
    assert_int_equal(cors_check(NULL, "https://a.b", 11), CORS_DENIED);
    assert_false(cors_allowed(NULL, "https://a.b", 11));
    cors_free(NULL);
}

static void expect_bad(const char *pattern, bool credentials, const char *in_err)
{
    struct cors *c = (struct cors *)1;
    char err[512] = "";
    const char *o[] = {"https://fine.example", pattern};
    int rc = cors_new(&c, o, 2, credentials, err, sizeof(err));
    if (rc != ERR_INVALID || !strstr(err, in_err))
        fail_msg("pattern \"%s\": %d \"%s\", want \"%s\"", pattern, rc, err, in_err);
    assert_null(c);
}

static void test_bad_patterns(void **state)
{
    (void)state;
    expect_bad("*", true, "cannot be combined with credentials");
    expect_bad("null", false, "'null' is refused");
    expect_bad("https://*.com", false, "at least two labels");
    expect_bad("https://*.0.1", false, "at least two labels");
    expect_bad("https://a.*.example.com", false, "invalid character in host");
    expect_bad("https://*example.com", false, "invalid character in host");
    expect_bad("https://app.example.com/", false, "has no path");
    expect_bad("https://app.example.com.", false, "trailing dot");
    expect_bad("app.example.com", false, "expected scheme://host");
    expect_bad("https://", false, "empty host");
    expect_bad("https://a.com:0", false, "malformed port");
    expect_bad("https://a.com:65536", false, "malformed port");
    expect_bad("https://a.com:x", false, "malformed port");
    expect_bad("https://*.[::1]", false, "IPv6");
    expect_bad("https://a b.com", false, "invalid character");
    char big[700] = "https://";
    memset(big + 8, 'a', 600);
    big[608] = '\0';
    expect_bad(big, false, "longer than 512 bytes");
}

struct want_header {
    const char *name, *value;
};

static void expect_headers(const struct cors *c, enum cors_kind kind, const char *origin,
                           const struct want_header *want, size_t nwant)
{
    struct cors_header out[CORS_HEADERS_MAX];
    size_t n = cors_headers(c, kind, origin, origin ? strlen(origin) : 0, out);
    if (n != nwant)
        fail_msg("origin %s: %zu headers, want %zu", origin ? origin : "(none)", n, nwant);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(out[i].name_len, strlen(out[i].name));
        assert_string_equal(out[i].name, want[i].name);
        if (out[i].value_len != strlen(want[i].value) ||
            memcmp(out[i].value, want[i].value, out[i].value_len) != 0)
            fail_msg("%s: \"%.*s\", want \"%s\"", out[i].name, (int)out[i].value_len, out[i].value,
                     want[i].value);
        for (size_t j = 0; j < out[i].name_len; j++)
            assert_false(out[i].name[j] >= 'A' && out[i].name[j] <= 'Z');
    }
}

static void test_headers_actual(void **state)
{
    (void)state;
    const char *o[] = {"https://*.example.com"};
    struct cors *c = make(o, 1, true);
    const struct want_header allowed[] = {
        {"access-control-allow-origin", "https://a.example.com"},
        {"access-control-allow-credentials", "true"},
        {"access-control-expose-headers", "content-location"},
        {"vary", "origin"},
    };
    expect_headers(c, CORS_ACTUAL, "https://a.example.com", allowed, 4);
    const struct want_header vary_only[] = {{"vary", "origin"}};
    expect_headers(c, CORS_ACTUAL, "https://evil.example.net", vary_only, 1);
    expect_headers(c, CORS_ACTUAL, NULL, vary_only, 1);
    expect_headers(c, CORS_PREFLIGHT, "https://evil.example.net", vary_only, 1);
    cors_free(c);

    /* Without credentials there is no allow-credentials, and the origin is still echoed. */
    const char *any[] = {"*"};
    c = make(any, 1, false);
    const struct want_header echoed[] = {
        {"access-control-allow-origin", "http://localhost:5173"},
        {"access-control-expose-headers", "content-location"},
        {"vary", "origin"},
    };
    expect_headers(c, CORS_ACTUAL, "http://localhost:5173", echoed, 3);
    cors_free(c);
}

static void test_headers_preflight(void **state)
{
    (void)state;
    const char *o[] = {"https://app.example.com"};
    struct cors *c = make(o, 1, true);
    const struct want_header want[] = {
        {"access-control-allow-origin", "https://app.example.com"},
        {"access-control-allow-credentials", "true"},
        {"access-control-allow-methods", "GET, POST, DELETE, OPTIONS"},
        {"access-control-allow-headers",
         "authorization, cache-control, content-type, last-event-id"},
        {"access-control-max-age", "600"},
        {"vary", "origin"},
    };
    expect_headers(c, CORS_PREFLIGHT, "https://app.example.com", want, 6);
    cors_free(c);
}

static void test_echo_borrows_exact_bytes(void **state)
{
    (void)state;
    const char *o[] = {"https://app.example.com"};
    struct cors *c = make(o, 1, false);
    /* Only len bytes are the origin; the rest of the buffer is not echoed. */
    const char buf[] = "https://app.example.comGARBAGE";
    struct cors_header out[CORS_HEADERS_MAX];
    size_t n = cors_headers(c, CORS_ACTUAL, buf, 23, out);
    assert_int_equal(n, 3);
    assert_ptr_equal(out[0].value, buf);
    assert_int_equal(out[0].value_len, 23);
    assert_int_equal(cors_check(c, buf, sizeof(buf) - 1), CORS_DENIED);
    cors_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_ports_and_schemes),
        cmocka_unit_test(test_null_and_long_origins),
        cmocka_unit_test(test_empty_and_null_config),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_headers_actual),
        cmocka_unit_test(test_headers_preflight),
        cmocka_unit_test(test_echo_borrows_exact_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
