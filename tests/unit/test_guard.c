/*
 * test_guard: per-address connection admission, IPv6 counted per prefix.
 *
 * Written after one /64 turned out unlimited: every address of it was
 * counted on its own.
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
#include <string.h>

#include "sluice/guard.h"

static void expect_bucket(const char *address, unsigned bits, const char *want)
{
    char out[80];
    guard_bucket(address, bits, out, sizeof(out));
    if (strcmp(out, want) != 0)
        fail_msg("guard_bucket(\"%s\", %u) = \"%s\", want \"%s\"", address, bits, out, want);
}

static void test_bucket(void **state)
{
    (void)state;
    expect_bucket("192.0.2.7", 64, "192.0.2.7");
    expect_bucket("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64");
    expect_bucket("2001:db8:1:2::1", 64, "2001:db8:1:2::/64");
    expect_bucket("2001:db8:1:3::1", 64, "2001:db8:1:3::/64");
    expect_bucket("2001:db8:1:2:ffff::", 56, "2001:db8:1::/56");
    expect_bucket("2001:db8:1:2ff::", 60, "2001:db8:1:2f0::/60");
    expect_bucket("2001:db8::1", 128, "2001:db8::1/128");
    expect_bucket("::1", 64, "::/64");
    /* A dual-stack listener's IPv4 client is its IPv4 address. */
    expect_bucket("::ffff:192.0.2.7", 64, "192.0.2.7");
    expect_bucket("::ffff:192.0.2.7", 128, "192.0.2.7");
    expect_bucket("not an address", 64, "not an address");
}

/* Two addresses of one /64 share the per-address limit. */
static void test_one_prefix_one_limit(void **state)
{
    (void)state;
    struct guard *g = guard_new(100, 2, 64);
    const char *limit = NULL;
    assert_true(guard_admit(g, "2001:db8:1:2::1", &limit));
    assert_true(guard_admit(g, "2001:db8:1:2::2", &limit));
    assert_false(guard_admit(g, "2001:db8:1:2:ffff:ffff:ffff:ffff", &limit));
    assert_string_equal(limit, "connections_per_address");
    /* Another /64 is another client. */
    assert_true(guard_admit(g, "2001:db8:1:3::1", &limit));
    /* Releasing by another address of the same /64 frees the same slot. */
    guard_release(g, "2001:db8:1:2::9");
    assert_true(guard_admit(g, "2001:db8:1:2::3", &limit));
    guard_release(g, "2001:db8:1:2::1");
    guard_release(g, "2001:db8:1:2::3");
    guard_release(g, "2001:db8:1:3::1");
    guard_free(g);
}

static void test_mapped_counts_as_ipv4(void **state)
{
    (void)state;
    struct guard *g = guard_new(100, 1, 64);
    const char *limit = NULL;
    assert_true(guard_admit(g, "192.0.2.7", &limit));
    assert_false(guard_admit(g, "::ffff:192.0.2.7", &limit));
    assert_true(guard_admit(g, "::ffff:192.0.2.8", &limit));
    guard_release(g, "::ffff:192.0.2.7");
    assert_true(guard_admit(g, "192.0.2.7", &limit));
    guard_release(g, "192.0.2.7");
    guard_release(g, "192.0.2.8");
    guard_free(g);
}

/* With 128 bits every IPv6 address is its own client, as before. */
static void test_prefix_128(void **state)
{
    (void)state;
    struct guard *g = guard_new(100, 1, 128);
    const char *limit = NULL;
    assert_true(guard_admit(g, "2001:db8::1", &limit));
    assert_true(guard_admit(g, "2001:db8::2", &limit));
    assert_false(guard_admit(g, "2001:db8::1", &limit));
    guard_release(g, "2001:db8::1");
    guard_release(g, "2001:db8::2");
    guard_free(g);
}

/*
 * A trusted proxy's connection counts in the total only; its clients are
 * charged one unit each (a PROXY header's client, or a request's
 * forwarded client) against the same per-address cap.
 */
static void test_proxy_total_only_clients_held(void **state)
{
    (void)state;
    struct guard *g = guard_new(3, 2, 64);
    const char *limit = NULL;
    /* Three proxy connections: the per-address cap of 2 does not apply to them... */
    assert_true(guard_admit(g, NULL, &limit));
    assert_true(guard_admit(g, NULL, &limit));
    assert_true(guard_admit(g, NULL, &limit));
    /* ...the total does. */
    assert_false(guard_admit(g, NULL, &limit));
    assert_string_equal(limit, "connections");
    /* Clients behind them: two each, whatever the total. */
    assert_true(guard_hold(g, "192.0.2.1"));
    assert_true(guard_hold(g, "192.0.2.1"));
    assert_false(guard_hold(g, "192.0.2.1"));
    assert_true(guard_hold(g, "192.0.2.2"));
    guard_drop(g, "192.0.2.1");
    assert_true(guard_hold(g, "192.0.2.1"));
    /* A direct connection from a held client meets the same count. */
    guard_release(g, NULL);
    assert_false(guard_admit(g, "192.0.2.1", &limit));
    assert_string_equal(limit, "connections_per_address");
    assert_true(guard_admit(g, "192.0.2.3", &limit));
    guard_release(g, "192.0.2.3");
    guard_drop(g, "192.0.2.1");
    guard_drop(g, "192.0.2.1");
    guard_drop(g, "192.0.2.2");
    guard_drop(g, "192.0.2.2"); /* one too many: harmless */
    guard_release(g, NULL);
    guard_release(g, NULL);
    assert_true(guard_admit(g, "192.0.2.1", &limit));
    guard_release(g, "192.0.2.1");
    guard_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_one_prefix_one_limit),
        cmocka_unit_test(test_mapped_counts_as_ipv4),
        cmocka_unit_test(test_prefix_128),
        cmocka_unit_test(test_proxy_total_only_clients_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
