/*
 * test_forwarded: trusted-proxies networks and the client address that
 * Forwarded (RFC 7239) and X-Forwarded-For name: the rightmost hop that
 * is not a trusted proxy; only what the walk reaches must be well formed.
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
#include <stdio.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/forwarded.h"

static struct forwarded_nets *nets(const char *list)
{
    struct forwarded_nets *n = NULL;
    char err[128];
    if (forwarded_nets_parse(list, &n, err, sizeof(err)) != 0)
        fail_msg("'%s' refused: %s", list, err);
    return n;
}

static void test_nets(void **state)
{
    (void)state;
    struct forwarded_nets *n = nets(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,::ffff:203.0.113.0/120");
    assert_int_equal(forwarded_nets_count(n), 4);
    assert_true(forwarded_nets_contains(n, "10.255.1.2"));
    assert_false(forwarded_nets_contains(n, "11.0.0.1"));
    assert_true(forwarded_nets_contains(n, "192.0.2.7"));
    assert_false(forwarded_nets_contains(n, "192.0.2.8"));
    assert_true(forwarded_nets_contains(n, "2001:db8:ffff::1"));
    assert_false(forwarded_nets_contains(n, "2001:db9::1"));
    /* A dual-stack listener's IPv4 peer matches the IPv4 networks. */
    assert_true(forwarded_nets_contains(n, "::ffff:10.1.2.3"));
    assert_true(forwarded_nets_contains(n, "203.0.113.77"));
    assert_false(forwarded_nets_contains(n, "garbage"));
    assert_false(forwarded_nets_contains(NULL, "10.0.0.1"));
    forwarded_nets_free(n);
    n = nets("");
    assert_int_equal(forwarded_nets_count(n), 0);
    assert_false(forwarded_nets_contains(n, "10.0.0.1"));
    forwarded_nets_free(n);
    n = nets("0.0.0.0/0");
    assert_true(forwarded_nets_contains(n, "8.8.8.8"));
    assert_false(forwarded_nets_contains(n, "::1"));
    forwarded_nets_free(n);
    static const char *const bad[] = {"10.0.0.0/33", "2001:db8::/129", "10.0.0.0/", "10.0.0/8",
                                      "host.example", "10.0.0.0/8x", "10.0.0.0/-1", "/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[128];
        struct forwarded_nets *x = NULL;
        if (forwarded_nets_parse(bad[i], &x, err, sizeof(err)) != ERR_INVALID)
            fail_msg("'%s' accepted", bad[i]);
    }
}

/* The client, or the error code as "ERR<n>". */
static const char *client(const struct forwarded_nets *n, const char *fwd, const char *xff)
{
    static char out[64];
    int rc = forwarded_client(n, fwd, xff, out, sizeof(out));
    if (rc != 0)
        snprintf(out, sizeof(out), "ERR%d", rc);
    return out;
}

static void test_xff(void **state)
{
    (void)state;
    struct forwarded_nets *n = nets("127.0.0.1, 10.0.0.0/8");
    /* nginx's $proxy_add_x_forwarded_for: whatever the client sent, then its address. */
    assert_string_equal(client(n, NULL, "192.0.2.9"), "192.0.2.9");
    assert_string_equal(client(n, NULL, "1.1.1.1, 192.0.2.9"), "192.0.2.9");
    /* Inner trusted hops are skipped. */
    assert_string_equal(client(n, NULL, "1.1.1.1, 192.0.2.9, 10.0.0.5,10.0.0.6"), "192.0.2.9");
    /* What the client wrote further left is never read, garbled or not. */
    assert_string_equal(client(n, NULL, "\"<garbage>,, ;x, 192.0.2.9"), "192.0.2.9");
    /* IPv6, bracketed or not, ports allowed. */
    assert_string_equal(client(n, NULL, "2001:DB8::1"), "2001:db8::1");
    assert_string_equal(client(n, NULL, "[2001:db8::1]:443"), "2001:db8::1");
    assert_string_equal(client(n, NULL, "192.0.2.9:5555"), "192.0.2.9");
    assert_string_equal(client(n, NULL, "::ffff:192.0.2.9"), "192.0.2.9");
    /* Every hop trusted: the leftmost. */
    assert_string_equal(client(n, NULL, "10.0.0.1, 127.0.0.1"), "10.0.0.1");
    /* The rightmost untrusted entry is malformed or no address. */
    assert_string_equal(client(n, NULL, "192.0.2.9, bogus"), "ERR-1");
    assert_string_equal(client(n, NULL, "192.0.2.9, 300.1.1.1"), "ERR-1");
    assert_string_equal(client(n, NULL, "192.0.2.9, unknown"), "ERR-7");
    assert_string_equal(client(n, NULL, ""), "ERR-7");
    assert_string_equal(client(n, NULL, " , "), "ERR-7");
    assert_string_equal(client(n, NULL, NULL), "ERR-7");
    forwarded_nets_free(n);
}

static void test_forwarded(void **state)
{
    (void)state;
    struct forwarded_nets *n = nets("127.0.0.0/8,2001:db8:ffff::/48");
    assert_string_equal(client(n, "for=192.0.2.60;proto=http;by=203.0.113.43", NULL),
                        "192.0.2.60");
    assert_string_equal(client(n, "For=\"[2001:db8:cafe::17]:4711\"", NULL), "2001:db8:cafe::17");
    assert_string_equal(client(n, "for=192.0.2.43, for=198.51.100.17", NULL), "198.51.100.17");
    assert_string_equal(client(n, "for=192.0.2.43, for=\"[2001:db8:ffff::1]\";proto=https", NULL),
                        "192.0.2.43");
    assert_string_equal(client(n, "for=\"192.0.2.43:80\" ; by=x", NULL), "192.0.2.43");
    /* Forwarded wins over X-Forwarded-For. */
    assert_string_equal(client(n, "for=192.0.2.1", "192.0.2.2"), "192.0.2.1");
    /* Quoted commas on the left do not cut elements. */
    assert_string_equal(client(n, "for=\"_a,b\";ext=\"x,y\", for=192.0.2.5", NULL), "192.0.2.5");
    /* Obfuscated, unknown, or no for= at all: no usable address (never the client's left). */
    assert_string_equal(client(n, "for=192.0.2.1, for=_hidden", NULL), "ERR-7");
    assert_string_equal(client(n, "for=192.0.2.1, for=unknown", NULL), "ERR-7");
    assert_string_equal(client(n, "for=192.0.2.1, proto=https", NULL), "ERR-7");
    /* Malformed where reached. */
    assert_string_equal(client(n, "for=192.0.2.1;for=192.0.2.2", NULL), "ERR-1");
    assert_string_equal(client(n, "for=2001:db8::1", NULL), "ERR-1"); /* ':' is no tchar */
    assert_string_equal(client(n, "for=\"unterminated", NULL), "ERR-1");
    assert_string_equal(client(n, "for", NULL), "ERR-1");
    assert_string_equal(client(n, "=1.2.3.4", NULL), "ERR-1");
    assert_string_equal(client(n, "for=\"[2001:db8::1\"", NULL), "ERR-1");
    assert_string_equal(client(n, "for=\"[192.0.2.1]\"", NULL), "ERR-1");
    assert_string_equal(client(n, "for=1.2.3.4 x", NULL), "ERR-1");
    /* Left of the answer: not read. */
    assert_string_equal(client(n, "for=\"garbage;;, for=192.0.2.8", NULL), "192.0.2.8");
    assert_string_equal(client(n, "for=192.0.2.8, for=\"x", NULL), "ERR-1");
    assert_string_equal(client(n, "garbage;;=, for=192.0.2.8", NULL), "192.0.2.8");
    forwarded_nets_free(n);
}

static void test_hop_bound(void **state)
{
    (void)state;
    struct forwarded_nets *n = nets("10.0.0.0/8");
    char xff[2048] = "192.0.2.1";
    for (int i = 0; i < 40; i++)
        strcat(xff, ", 10.0.0.1");
    /* More trusted hops than FORWARDED_HOPS_MAX: no answer rather than an unbounded walk. */
    assert_string_equal(client(n, NULL, xff), "ERR-7");
    forwarded_nets_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nets),
        cmocka_unit_test(test_xff),
        cmocka_unit_test(test_forwarded),
        cmocka_unit_test(test_hop_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
