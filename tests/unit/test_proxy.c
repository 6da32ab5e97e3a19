/*
 * test_proxy: the PROXY protocol header parser — v1 and v2, LOCAL and
 * UNKNOWN, TLVs skipped, every truncation asks for more, and garbage,
 * oversized and malformed headers refused without reading past the input.
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

#include "sluice/err.h"
#include "sluice/proxy.h"

/* Parses len bytes from a heap copy of exactly that size, so ASan sees any over-read. */
static int parse(const void *data, size_t len, struct proxy_header *ph)
{
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, data, len);
    int rc = proxy_parse(copy, len, ph);
    free(copy);
    return rc;
}

/* Every proper prefix of a valid header asks for more. */
static void expect_prefixes_again(const void *data, size_t len)
{
    struct proxy_header ph;
    for (size_t i = 0; i < len; i++)
        if (parse(data, i, &ph) != ERR_AGAIN)
            fail_msg("prefix of %zu bytes (of %zu) did not ask for more", i, len);
}

static void test_v1_tcp4(void **state)
{
    (void)state;
    const char h[] = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n";
    struct proxy_header ph;
    assert_int_equal(parse(h, sizeof(h) - 1, &ph), 0);
    assert_int_equal(ph.len, strlen("PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"));
    assert_int_equal(ph.version, 1);
    assert_false(ph.local);
    assert_string_equal(ph.address, "192.0.2.7");
    assert_int_equal(ph.port, 56324);
    expect_prefixes_again(h, ph.len);
}

static void test_v1_tcp6_and_unknown(void **state)
{
    (void)state;
    const char h[] = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 8443\r\n";
    struct proxy_header ph;
    assert_int_equal(parse(h, sizeof(h) - 1, &ph), 0);
    assert_string_equal(ph.address, "2001:db8::1");
    assert_int_equal(ph.port, 65535);
    const char u[] = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
    assert_int_equal(parse(u, sizeof(u) - 1, &ph), 0);
    assert_true(ph.local);
    assert_string_equal(ph.address, "");
    const char u2[] = "PROXY UNKNOWN\r\n";
    assert_int_equal(parse(u2, sizeof(u2) - 1, &ph), 0);
    assert_true(ph.local);
}

static void test_v1_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",     /* LF without CR */
        "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",       /* a field short */
        "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 \r\n",  /* trailing space */
        "PROXY TCP4  192.0.2.7 198.51.100.1 56324 443\r\n",  /* double space */
        "PROXY TCP4 2001:db8::1 198.51.100.1 56324 443\r\n", /* family mismatch */
        "PROXY TCP6 192.0.2.7 2001:db8::2 1 2\r\n",
        "PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n",
        "PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n",
        "PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n",
        "PROXY TCP4 192.0.2.7 198.51.100.1 1x 443\r\n",
        "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
        "PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n",
        "PROXY \r\n",
    };
    struct proxy_header ph;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = parse(bad[i], strlen(bad[i]), &ph);
        if (rc != ERR_PROTO)
            fail_msg("accepted or misjudged (%d): %s", rc, bad[i]);
    }
    /* A NUL inside the line. */
    const char nul[] = "PROXY TCP4 192.0.2.7\0198.51.100.1 1 2\r\n";
    assert_int_equal(parse(nul, sizeof(nul) - 1, &ph), ERR_PROTO);
}

static void test_v1_oversized(void **state)
{
    (void)state;
    char h[200];
    memset(h, '1', sizeof(h));
    memcpy(h, "PROXY TCP4 ", 11);
    struct proxy_header ph;
    assert_int_equal(parse(h, PROXY_V1_MAX - 1, &ph), ERR_AGAIN);
    assert_int_equal(parse(h, PROXY_V1_MAX, &ph), ERR_LIMIT);
    assert_int_equal(parse(h, sizeof(h), &ph), ERR_LIMIT);
}

static void test_missing(void **state)
{
    (void)state;
    struct proxy_header ph;
    /* A TLS ClientHello, an HTTP request, h2's preface: no header at all. */
    const uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    assert_int_equal(parse(hello, sizeof(hello), &ph), ERR_NOTFOUND);
    assert_int_equal(parse("GET / HTTP/1.1\r\n", 16, &ph), ERR_NOTFOUND);
    assert_int_equal(parse("PRI * HTTP/2.0", 14, &ph), ERR_NOTFOUND);
    assert_int_equal(parse("PROXZ", 5, &ph), ERR_NOTFOUND);
    /* The first byte decides as soon as it can. */
    assert_int_equal(parse("G", 1, &ph), ERR_NOTFOUND);
    assert_int_equal(parse("P", 1, &ph), ERR_AGAIN);
    assert_int_equal(parse("\r\n\r\n", 4, &ph), ERR_AGAIN);
    assert_int_equal(parse("\r\n\r\nX", 5, &ph), ERR_NOTFOUND);
}

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header: ver_cmd, fam, body (blen bytes) into out; returns its length. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t blen)
{
    memcpy(out, SIG, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static void test_v2_inet_with_tlvs(void **state)
{
    (void)state;
    uint8_t body[12 + 3 + 2 + 3 + 0 + 3 + 5];
    const uint8_t addrs[12] = {192, 0, 2, 9, 198, 51, 100, 1, 0xDB, 0xF0, 0x01, 0xBB};
    memcpy(body, addrs, 12);
    size_t n = 12;
    /* ALPN "h2", an empty NOOP, a 5-byte unknown type: all skipped. */
    memcpy(body + n, (uint8_t[]){0x01, 0, 2, 'h', '2'}, 5);
    n += 5;
    memcpy(body + n, (uint8_t[]){0x04, 0, 0}, 3);
    n += 3;
    memcpy(body + n, (uint8_t[]){0xE0, 0, 5, 1, 2, 3, 4, 5}, 8);
    n += 8;
    uint8_t h[64];
    size_t len = v2(h, 0x21, 0x11, body, n);
    struct proxy_header ph;
    assert_int_equal(parse(h, len, &ph), 0);
    assert_int_equal(ph.len, len);
    assert_int_equal(ph.version, 2);
    assert_false(ph.local);
    assert_string_equal(ph.address, "192.0.2.9");
    assert_int_equal(ph.port, 0xDBF0);
    expect_prefixes_again(h, len);
    /* A TLV running past the declared length is malformed. */
    h[16 + 12 + 2] = 3; /* ALPN claims 3 bytes */
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
}

static void test_v2_inet6_local_unspec(void **state)
{
    (void)state;
    uint8_t body[36] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x07, [16] = 0x20, [17] = 0x01,
                        [32] = 0x01, [33] = 0x02, [34] = 0x20, [35] = 0xFB};
    uint8_t h[64];
    size_t len = v2(h, 0x21, 0x21, body, sizeof(body));
    struct proxy_header ph;
    assert_int_equal(parse(h, len, &ph), 0);
    assert_string_equal(ph.address, "2001:db8::7");
    assert_int_equal(ph.port, 0x0102);
    /* LOCAL: the proxy's own connection (a health check); addresses ignored. */
    len = v2(h, 0x20, 0x21, body, sizeof(body));
    assert_int_equal(parse(h, len, &ph), 0);
    assert_true(ph.local);
    len = v2(h, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse(h, len, &ph), 0);
    assert_true(ph.local);
    assert_int_equal(ph.len, 16);
    /* PROXY with UNSPEC: keep the peer address too. */
    len = v2(h, 0x21, 0x00, NULL, 0);
    assert_int_equal(parse(h, len, &ph), 0);
    assert_true(ph.local);
}

static void test_v2_malformed_and_oversized(void **state)
{
    (void)state;
    uint8_t body[12] = {0};
    uint8_t h[64];
    struct proxy_header ph;
    /* Version 1 in a v2 signature; command 2; family 4; transport 3. */
    size_t len = v2(h, 0x11, 0x11, body, 12);
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
    len = v2(h, 0x22, 0x11, body, 12);
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
    len = v2(h, 0x21, 0x41, body, 12);
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
    len = v2(h, 0x21, 0x13, body, 12);
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
    /* INET with fewer address bytes than it needs. */
    len = v2(h, 0x21, 0x11, body, 8);
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
    /* A datagram client on a stream listener. */
    len = v2(h, 0x21, 0x12, body, 12);
    assert_int_equal(parse(h, len, &ph), ERR_PROTO);
    /* A declared length past the bound is refused from the first 16 bytes. */
    memcpy(h, SIG, 12);
    h[12] = 0x21;
    h[13] = 0x11;
    h[14] = 0xFF;
    h[15] = 0xFF;
    assert_int_equal(parse(h, 16, &ph), ERR_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),
        cmocka_unit_test(test_v1_tcp6_and_unknown),
        cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_v1_oversized),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_v2_inet_with_tlvs),
        cmocka_unit_test(test_v2_inet6_local_unspec),
        cmocka_unit_test(test_v2_malformed_and_oversized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
