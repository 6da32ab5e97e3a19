/*
 * test_host: the Host / :authority rule against DNS rebinding.
 *
 * host_allowed() takes a length, so inputs are copied into buffers of
 * exactly that length: a sanitizer build catches a read past len.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/host.h"

static void expect_host(const char *host, const char *list, bool want)
{
    size_t len = strlen(host);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, host, len);
    bool got = host_allowed(copy, len, list);
    free(copy);
    if (got != want)
        fail_msg("host_allowed(\"%s\", \"%s\") %s, want %s", host, list ? list : "(null)",
                 got ? "true" : "false", want ? "true" : "false");
}

static void test_loopback_names(void **state)
{
    (void)state;
    expect_host("localhost", NULL, true);
    expect_host("localhost:8443", NULL, true);
    expect_host("LocalHost:1", NULL, true);
    expect_host("localhost.", NULL, true);
    expect_host("localhost.:80", NULL, true);
    expect_host("localhost:", NULL, true);
    expect_host("127.0.0.1", NULL, true);
    expect_host("127.0.0.1:9090", NULL, true);
    expect_host("127.1.2.3:9090", NULL, true);
    expect_host("[::1]", NULL, true);
    expect_host("[::1]:8443", NULL, true);
    expect_host("[0:0:0:0:0:0:0:1]:8443", NULL, true);
}

/* A page that rebinds its own name to 127.0.0.1 sends that name. */
static void test_rebound_names_refused(void **state)
{
    (void)state;
    expect_host("evil.example", NULL, false);
    expect_host("evil.example:8443", NULL, false);
    expect_host("evil.example", "", false);
    expect_host("localhost.evil.example", NULL, false);
    expect_host("evil.localhost", NULL, false);
    expect_host("localhost..", NULL, false);
    expect_host("127.0.0.1.evil.example", NULL, false);
    expect_host("127.0.0.1.nip.io:80", NULL, false);
    expect_host("0x7f000001", NULL, false);
    expect_host("2130706433", NULL, false);
}

/* Any IP literal is not a rebinding: the page named the address itself. */
static void test_ip_literals(void **state)
{
    (void)state;
    expect_host("10.1.2.3:9090", NULL, true);
    expect_host("[2001:db8::5]:443", NULL, true);
    expect_host("[::ffff:127.0.0.1]", NULL, true);
}

static void test_configured_names(void **state)
{
    (void)state;
    const char *list = "gw.example.com,Events.Example.org.";
    expect_host("gw.example.com", list, true);
    expect_host("GW.EXAMPLE.COM:8443", list, true);
    expect_host("gw.example.com.", list, true);
    expect_host("events.example.org", list, true);
    expect_host("example.com", list, false);
    expect_host("x.gw.example.com", list, false);
    expect_host("gw.example.co", list, false);
    expect_host("gw.example.com", ",,gw.example.com,", true);
    expect_host("", ",,", false);
}

static void test_garbage(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",            ":",          ":8443",           "localhost:84a3",  "localhost:123456",
        "localhost:8443:1", "local host", "localhost\t",  "[::1",            "::1",
        "[::1]x",      "[::1]:x",    "[]",              "[evil.example]",  "[127.0.0.1]",
        "localhost/",  "user@localhost", "[::1]]",      "localhost:-1",    "%6c%6f",
        "127.0.0.1:80:80", "[::1]:8443:1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_host(bad[i], "localhost:80,[::1]", false);
    assert_false(host_allowed(NULL, 0, NULL));
    /* Overlong input is refused without reading past it. */
    char big[600];
    memset(big, 'a', sizeof(big));
    assert_false(host_allowed(big, sizeof(big), NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_names),
        cmocka_unit_test(test_rebound_names_refused),
        cmocka_unit_test(test_ip_literals),
        cmocka_unit_test(test_configured_names),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
