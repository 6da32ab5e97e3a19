/*
 * test_ds: the Durable Streams route's pure parts — path tokens, offsets,
 * strict integers, producer headers, media types, cursors, query values
 * and the JSON-mode splitter.
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

#include "sluice/ds.h"
#include "sluice/err.h"
#include "sluice/subject.h"

static int token(const char *p, char *out) { return ds_path_token(p, strlen(p), out); }

static void test_path_token(void **state)
{
    (void)state;
    char out[DS_TOKEN_MAX + 1];
    assert_int_equal(token("abc-DEF_09", out), 0);
    assert_string_equal(out, "abc-DEF_09");
    assert_int_equal(token("a/b.c", out), 0);
    assert_string_equal(out, "a~2Fb~2Ec");
    /* Wildcards, '$', spaces and the escape byte itself never reach the subject. */
    assert_int_equal(token("*>$ ~", out), 0);
    assert_string_equal(out, "~2A~3E~24~20~7E");
    /* Percent escapes are decoded first: %2F is a byte of the name, not a separator. */
    assert_int_equal(token("a%2fb", out), 0);
    assert_string_equal(out, "a~2Fb");
    assert_int_equal(token("%41", out), 0);
    assert_string_equal(out, "A");
    const char *bad[] = {"", "/", "a/", "/a", "a//b", ".", "..", "a/./b", "a/../b", "%", "%4",
                         "%zz", "a%00b", "%2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(token(bad[i], out), ERR_INVALID);
    /* "..." is a name, not a step up. */
    assert_int_equal(token("...", out), 0);
    char longp[DS_PATH_MAX + 2];
    memset(longp, 'x', sizeof(longp) - 1);
    longp[DS_PATH_MAX] = '\0';
    assert_int_equal(token(longp, out), 0);
    longp[DS_PATH_MAX] = 'x';
    longp[DS_PATH_MAX + 1] = '\0';
    assert_int_equal(token(longp, out), ERR_LIMIT);
    /* The worst case fits and is a valid subject token. */
    memset(longp, '.', DS_PATH_MAX);
    longp[DS_PATH_MAX] = '\0';
    assert_int_equal(token(longp, out), 0);
    assert_int_equal(strlen(out), DS_TOKEN_MAX);
    assert_true(subject_valid(out, strlen(out), false, NULL) || strlen(out) > SUBJECT_MAX_LEN);
}

static void test_offsets(void **state)
{
    (void)state;
    char a[DS_OFFSET_LEN + 1], b[DS_OFFSET_LEN + 1];
    ds_offset_format(9, a);
    ds_offset_format(10, b);
    assert_string_equal(a, "0000000000000009");
    assert_true(strcmp(a, b) < 0); /* sorts as strings the way the numbers do */
    enum ds_offset_kind k;
    uint64_t seq;
    assert_int_equal(ds_offset_parse(b, strlen(b), &k, &seq), 0);
    assert_int_equal(k, DS_OFFSET_SEQ);
    assert_int_equal(seq, 10);
    assert_int_equal(ds_offset_parse("-1", 2, &k, &seq), 0);
    assert_int_equal(k, DS_OFFSET_START);
    assert_int_equal(ds_offset_parse("now", 3, &k, &seq), 0);
    assert_int_equal(k, DS_OFFSET_NOW);
    /* The reference server's hand-written start is accepted as -1, and nothing like it. */
    assert_int_equal(ds_offset_parse("0000000000000000_0000000000000000", 33, &k, &seq), 0);
    assert_int_equal(k, DS_OFFSET_START);
    assert_int_equal(ds_offset_parse("0000000000000000_0000000000000001", 33, &k, &seq),
                     ERR_INVALID);
    const char *bad[] = {"", "1", "-2", "NOW", "000000000000001", "00000000000000010",
                         "000000000000000a", "+000000000000001", "0000000000000001 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ds_offset_parse(bad[i], strlen(bad[i]), &k, &seq), ERR_INVALID);
}

static void test_uint(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(ds_parse_uint("0", 1, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(ds_parse_uint("3600", 4, UINT64_MAX, &v), 0);
    assert_int_equal(v, 3600);
    assert_int_equal(ds_parse_uint("9007199254740991", 16, DS_JS_INT_MAX, &v), 0);
    assert_int_equal(ds_parse_uint("9007199254740992", 16, DS_JS_INT_MAX, &v), ERR_INVALID);
    assert_int_equal(ds_parse_uint("18446744073709551616", 20, UINT64_MAX, &v), ERR_INVALID);
    const char *bad[] = {"", "03600", "+3600", "3600.0", "3.6e3", "-1", " 1", "1 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ds_parse_uint(bad[i], strlen(bad[i]), UINT64_MAX, &v), ERR_INVALID);
}

static void test_headers(void **state)
{
    (void)state;
    struct ds_headers h;
    memset(&h, 0, sizeof(h));
    assert_true(ds_header(&h, "stream-closed", 13, "TrUe", 4));
    assert_true(h.closed);
    assert_true(ds_header(&h, "stream-closed", 13, "yes", 3));
    assert_false(h.closed);
    assert_false(ds_header(&h, "x-other", 7, "v", 1));
    struct ds_producer p;
    bool has;
    assert_int_equal(ds_producer_parse(&h, &p, &has), 0);
    assert_false(has);
    ds_header(&h, "producer-id", 11, "w1", 2);
    assert_int_equal(ds_producer_parse(&h, &p, &has), ERR_INVALID); /* one of three */
    ds_header(&h, "producer-epoch", 14, "2", 1);
    ds_header(&h, "producer-seq", 12, "07", 2);
    assert_int_equal(ds_producer_parse(&h, &p, &has), ERR_INVALID); /* a leading zero */
    ds_header(&h, "producer-seq", 12, "7", 1);
    assert_int_equal(ds_producer_parse(&h, &p, &has), 0);
    assert_true(has);
    assert_string_equal(p.id, "w1");
    assert_int_equal(p.epoch, 2);
    assert_int_equal(p.seq, 7);
    ds_header(&h, "producer-id", 11, "", 0);
    assert_int_equal(ds_producer_parse(&h, &p, &has), ERR_INVALID); /* an empty id */
    char big[DS_HEADER_MAX + 2];
    memset(big, 'a', sizeof(big));
    ds_header(&h, "stream-seq", 10, big, sizeof(big));
    assert_true(h.too_long);
}

static void test_media_type(void **state)
{
    (void)state;
    char mt[64];
    assert_true(ds_media_type("Application/JSON; charset=utf-8", mt, sizeof(mt)) > 0);
    assert_string_equal(mt, "application/json");
    assert_true(ds_is_json(mt));
    assert_true(ds_media_type("", mt, sizeof(mt)) > 0);
    assert_string_equal(mt, "application/octet-stream");
    assert_false(ds_sse_text(mt));
    assert_true(ds_media_type("text/plain", mt, sizeof(mt)) > 0);
    assert_true(ds_sse_text(mt));
    assert_int_equal(ds_media_type("textplain", mt, sizeof(mt)), ERR_INVALID);
    assert_int_equal(ds_media_type("text/", mt, sizeof(mt)), ERR_INVALID);
    assert_int_equal(ds_media_type("text/pl\x01" "ain", mt, sizeof(mt)), ERR_INVALID);
}

static void test_cursor(void **state)
{
    (void)state;
    int64_t now = 1728432000 + 20 * 1000 + 5;
    assert_int_equal(ds_cursor(now, NULL, 0, 0), 1000);
    assert_int_equal(ds_cursor(now, "999", 3, 0), 1000);
    /* A client's cursor at or past the interval: strictly above it, by a jitter. */
    uint64_t c = ds_cursor(now, "1000", 4, 7);
    assert_true(c > 1000 && c <= 1180);
    assert_true(ds_cursor(now, "5000", 4, 0) > 5000);
    assert_int_equal(ds_cursor(now, "x", 1, 0), 1000);
}

static void test_query(void **state)
{
    (void)state;
    const char *q = "offset=-1&live=sse&cursor&offsetx=2";
    const char *v;
    size_t n;
    assert_true(ds_query(q, strlen(q), "offset", &v, &n));
    assert_int_equal(n, 2);
    assert_memory_equal(v, "-1", 2);
    assert_true(ds_query(q, strlen(q), "cursor", &v, &n));
    assert_int_equal(n, 0);
    assert_false(ds_query(q, strlen(q), "off", &v, &n));
}

static long split(const char *s, struct ds_span *sp, size_t max)
{
    return ds_json_split(s, strlen(s), sp, max);
}

static void test_json_split(void **state)
{
    (void)state;
    struct ds_span sp[8];
    const char *s = " [ {\"a\":\"],\\\"[\"} , [1,2], \"x\", 3.5e1 ,null] ";
    assert_int_equal(split(s, sp, 8), 5);
    assert_int_equal(sp[0].len, strlen("{\"a\":\"],\\\"[\"}"));
    assert_memory_equal(s + sp[1].off, "[1,2]", sp[1].len);
    assert_memory_equal(s + sp[3].off, "3.5e1", sp[3].len);
    assert_memory_equal(s + sp[4].off, "null", sp[4].len);
    assert_int_equal(split("[]", sp, 8), 0);
    assert_int_equal(split(" [ \n ] ", sp, 8), 0);
    assert_int_equal(split("[[[1,2,3]]]", sp, 8), 1);
    assert_memory_equal("[[[1,2,3]]]" + sp[0].off, "[[1,2,3]]", sp[0].len);
    assert_int_equal(split("{\"k\":1}", sp, 8), 1);
    assert_int_equal(split("[1,]", sp, 8), ERR_INVALID);
    assert_int_equal(split("[1 2]", sp, 8), ERR_INVALID);
    assert_int_equal(split("", sp, 8), ERR_INVALID);
    assert_int_equal(split("[1,2,3]", sp, 1), 3); /* counts past max */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_token), cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_uint),       cmocka_unit_test(test_headers),
        cmocka_unit_test(test_media_type), cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_query),      cmocka_unit_test(test_json_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
