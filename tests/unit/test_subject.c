/*
 * test_subject: validation, wildcard matching and permission cover.
 *
 * subject_valid() takes a length, so its inputs are copied into buffers of
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/subject.h"

/* subject_valid() over a heap copy of exactly len bytes. */
static bool valid_n(const char *s, size_t len, bool wildcards, const char **reason)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, s, len);
    bool ok = subject_valid(copy, len, wildcards, reason);
    free(copy);
    return ok;
}

static void expect_valid(const char *s, size_t len, bool wildcards)
{
    const char *reason = NULL;
    if (!valid_n(s, len, wildcards, &reason))
        fail_msg("subject_valid(\"%.*s\", %zu, %s) false (%s), want true", (int)len, s, len,
                 wildcards ? "wildcards" : "literal", reason ? reason : "no reason");
}

static void expect_invalid(const char *s, size_t len, bool wildcards)
{
    const char *reason = NULL;
    if (valid_n(s, len, wildcards, &reason))
        fail_msg("subject_valid(\"%.*s\", %zu, %s) true, want false", (int)len, s, len,
                 wildcards ? "wildcards" : "literal");
    if (reason == NULL)
        fail_msg("subject_valid(\"%.*s\") false without a reason", (int)len, s);
    if (reason[0] == '\0' || strchr(reason, '\n') != NULL)
        fail_msg("subject_valid(\"%.*s\") reason \"%s\" is not one non-empty line", (int)len, s,
                 reason);
    /* A NULL reason pointer is allowed. */
    assert_false(valid_n(s, len, wildcards, NULL));
}

#define VALID(s, w) expect_valid((s), sizeof(s) - 1, (w))
#define INVALID(s, w) expect_invalid((s), sizeof(s) - 1, (w))

static void test_valid_patterns(void **state)
{
    (void)state;
    VALID("a", true);
    VALID("a.b", true);
    VALID("a.*", true);
    VALID("a.>", true);
    VALID("*", true);
    VALID(">", true);
    VALID("a.*.c", true);
    VALID("*.*", true);
    VALID("*.>", true);
    VALID("orders.eu-west_1.v2", true);
}

static void test_valid_literals(void **state)
{
    (void)state;
    VALID("a", false);
    VALID("a.b", false);
    VALID("orders.eu", false);
    VALID("A-Z_0.9", false);
}

static void test_invalid(void **state)
{
    (void)state;
    for (int w = 0; w <= 1; w++) {
        bool wild = w == 1;
        INVALID("", wild);
        INVALID(".", wild);
        INVALID("a.", wild);
        INVALID(".a", wild);
        INVALID("a..b", wild);
        INVALID("a b", wild);
        INVALID("a\tb", wild);
        INVALID("a\x01", wild);
        INVALID("a\nb", wild);
        INVALID("a\rb", wild);
        INVALID("a\x7f", wild);
        INVALID("a\0b", wild);
        INVALID("a.>.b", wild);
        INVALID(">.a", wild);
    }
    /* A wildcard character inside a token is no wildcard. */
    INVALID("a.b>", true);
    INVALID("a*.b", true);
    INVALID("a.*b", true);
    INVALID("a.>>", true);
    INVALID("**", true);
}

static void test_wildcards_refused_for_literals(void **state)
{
    (void)state;
    INVALID("a.*", false);
    INVALID("a.>", false);
    INVALID("*", false);
    INVALID(">", false);
    INVALID("a.*.c", false);
}

static void test_max_len(void **state)
{
    (void)state;
    char s[SUBJECT_MAX_LEN + 2];
    /* "a.a. ... .a": SUBJECT_MAX_LEN (odd) bytes, valid. */
    for (size_t i = 0; i < SUBJECT_MAX_LEN; i++)
        s[i] = (i % 2 == 0) ? 'a' : '.';
    expect_valid(s, SUBJECT_MAX_LEN, true);
    expect_valid(s, SUBJECT_MAX_LEN, false);

    /* One byte more: "aa.a. ... .a". */
    s[0] = 'a';
    for (size_t i = 1; i <= SUBJECT_MAX_LEN; i++)
        s[i] = (i % 2 == 1) ? 'a' : '.';
    expect_invalid(s, SUBJECT_MAX_LEN + 1, true);
    expect_invalid(s, SUBJECT_MAX_LEN + 1, false);

    /* One long token. */
    memset(s, 'x', SUBJECT_MAX_LEN + 1);
    expect_valid(s, SUBJECT_MAX_LEN, false);
    expect_invalid(s, SUBJECT_MAX_LEN + 1, false);
}

static void test_valid_uses_len(void **state)
{
    (void)state;
    /* Bytes after len are not part of the subject. */
    expect_valid("a.b..", 3, false);
    expect_valid("a..b", 1, false);
    expect_valid("a.> trailing", 3, true);
    expect_invalid("a.bc", 2, false); /* "a." */
}

static void expect_match(const char *pattern, const char *subject, bool want)
{
    if (subject_match(pattern, subject) != want)
        fail_msg("subject_match(\"%s\", \"%s\") %s, want %s", pattern, subject,
                 want ? "false" : "true", want ? "true" : "false");
}

static void test_match_star(void **state)
{
    (void)state;
    expect_match("a.*", "a.b", true);
    expect_match("a.*", "a.b.c", false);
    expect_match("a.*", "a", false);
    expect_match("a.*", "b.a", false);
    expect_match("a.*", "ab.c", false);
    expect_match("*", "a", true);
    expect_match("*", "a.b", false);
    expect_match("*.b", "a.b", true);
    expect_match("*.b", "a.c", false);
    expect_match("a.*.c", "a.x.c", true);
    expect_match("a.*.c", "a.x.d", false);
    expect_match("a.*.c", "a.x.c.d", false);
    expect_match("a.*.c", "a.c", false);
    expect_match("*.*", "a.b", true);
    expect_match("*.*", "a", false);
}

static void test_match_gt(void **state)
{
    (void)state;
    expect_match("a.>", "a.b", true);
    expect_match("a.>", "a.b.c", true);
    expect_match("a.>", "a", false);
    expect_match("a.>", "b.c", false);
    expect_match("a.>", "ab.c", false);
    expect_match(">", "a", true);
    expect_match(">", "a.b", true);
    expect_match(">", "a.b.c.d", true);
    expect_match("*.>", "a.b", true);
    expect_match("*.>", "a", false);
    expect_match("a.*.>", "a.b.c", true);
    expect_match("a.*.>", "a.b", false);
}

static void test_match_exact(void **state)
{
    (void)state;
    expect_match("a.b", "a.b", true);
    expect_match("a.b", "a.bc", false);
    expect_match("a.b", "a.b.c", false);
    expect_match("a.b", "a", false);
    expect_match("a.b", "ab", false);
    expect_match("a.b", "b.a", false);
    expect_match("orders.eu", "orders.euX", false);
    expect_match("orders.eu", "orders.e", false);
}

static void expect_covers(const char *grant, const char *request, bool want)
{
    if (subject_covers(grant, request) != want)
        fail_msg("subject_covers(\"%s\", \"%s\") %s, want %s", grant, request,
                 want ? "false" : "true", want ? "true" : "false");
}

static void test_covers(void **state)
{
    (void)state;
    expect_covers("orders.>", "orders.*", true);
    expect_covers("orders.*", "orders.>", false);
    expect_covers(">", "a", true);
    expect_covers(">", "a.b.c", true);
    expect_covers(">", "*", true);
    expect_covers(">", "a.>", true);
    expect_covers(">", ">", true);
    expect_covers("a.b", "a.b", true);
    expect_covers("a.*", "a.b", true);
    expect_covers("a.*", "a.*", true);
    expect_covers("a.b", "a.*", false);
    expect_covers("a.>", "a", false);
    expect_covers("a.*.c", "a.*.c", true);
    expect_covers("a.*.c", "a.>", false);
    expect_covers("*.>", "a.b", true);
    expect_covers("a.>", "a.>", true);
    expect_covers("a.*", "a.>", false);
}

static void test_covers_more(void **state)
{
    (void)state;
    expect_covers("a.>", "a.*.c", true);
    expect_covers("a.>", "a.b.>", true);
    expect_covers("a.b.>", "a.>", false);
    expect_covers("*.*", "a.b", true);
    expect_covers("*.*", "a.>", false);
    expect_covers("*", ">", false);
    expect_covers("*", "*", true);
    expect_covers("a.b", "a.b.c", false);
    expect_covers("a.b", "a", false);
    expect_covers("a.*", "b.*", false);
    expect_covers("a.*", "a.b.c", false);
    expect_covers("a.*.>", "a.b.c", true);
    expect_covers("a.*.>", "a.>", false);
    expect_covers("orders.eu", "orders.e", false);
    expect_covers("orders.e", "orders.eu", false);
}

static void expect_overlap(const char *a, const char *b, bool want)
{
    assert_int_equal(subject_overlaps(a, b), want);
    assert_int_equal(subject_overlaps(b, a), want);
}

static void test_overlaps(void **state)
{
    (void)state;
    expect_overlap("a.b", "a.b", true);
    expect_overlap("a.*", "a.b", true);
    expect_overlap("a.*", "*.b", true);
    expect_overlap("a.>", "a.b.c", true);
    expect_overlap(">", "x", true);
    expect_overlap("a.>", "*.*", true);
    expect_overlap("a.b", "a.c", false);
    expect_overlap("a.*", "a.b.c", false);
    expect_overlap("a.>", "a", false);
    expect_overlap("a.*", "b.*", false);
    expect_overlap("*", "a.b", false);
}

/* NATS's own subjects: the first token starts with '$' or is exactly _INBOX. */
static void test_reserved(void **state)
{
    (void)state;
    static const char *const yes[] = {"$JS.API.>", "$JS.API.STREAM.CREATE.X", "$SYS.x", "$",
                                      "$KV.b.k", "_INBOX.abc", "_INBOX", "_INBOX.>", "$G"};
    static const char *const no[] = {"_INBOXES", "_INBOXES.x", "a.$b", "a._INBOX", "_inbox.x",
                                     ">", "*.>", "*", "*.*", "JS.API.x", "x$", "_INBOX_.a", ""};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (!subject_reserved(yes[i]))
            fail_msg("subject_reserved(\"%s\") false, want true", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (subject_reserved(no[i]))
            fail_msg("subject_reserved(\"%s\") true, want false", no[i]);
}

/* A token granting '>' used to cover the JetStream API: create and delete streams. */
static void test_grant_wildcard_never_covers_reserved(void **state)
{
    (void)state;
    expect_covers(">", "$JS.API.X", false);
    expect_covers(">", "$JS.API.STREAM.CREATE.X", false);
    expect_covers("*.>", "$JS.API.X", false);
    expect_covers("*.*", "$SYS.x", false);
    expect_covers("*", "$", false);
    expect_covers(">", "_INBOX.abc", false);
    expect_covers("*.>", "_INBOX.abc", false);
    expect_covers("*.abc", "_INBOX.abc", false);
    /* Only a grant that names the reserved token covers it. */
    expect_covers("$JS.API.>", "$JS.API.X", true);
    expect_covers("$JS.*.X", "$JS.API.X", true);
    expect_covers("_INBOX.>", "_INBOX.abc", true);
    expect_covers("_INBOX.*", "_INBOX.abc", true);
    expect_covers("$SYS.>", "$JS.API.X", false);
    /* Not reserved: unchanged. */
    expect_covers(">", "_INBOXES.x", true);
    expect_covers(">", "a.$b", true);
    expect_covers("*", "_INBOXES", true);
    expect_covers(">", ">", true);
    expect_covers(">", "*.>", true);
}

static void test_allow_list(void **state)
{
    (void)state;
    /* Not reserved: allowed whatever the list says. */
    assert_true(subject_allowed("", "a.b"));
    assert_true(subject_allowed(NULL, ">"));
    assert_true(subject_allowed(NULL, "*.>"));
    assert_true(subject_allowed("", "_INBOXES.x"));
    /* Reserved: only what the list covers. */
    assert_false(subject_allowed("", "$JS.API.STREAM.CREATE.X"));
    assert_false(subject_allowed(NULL, "_INBOX.x"));
    assert_false(subject_allowed("", "$"));
    assert_true(subject_allowed("$KV.cfg.>", "$KV.cfg.a"));
    assert_true(subject_allowed("$SYS.x,$KV.cfg.>", "$KV.cfg.a"));
    assert_true(subject_allowed("$SYS.x,$KV.cfg.>", "$SYS.x"));
    assert_false(subject_allowed("$SYS.x,$KV.cfg.>", "$SYS.y"));
    assert_false(subject_allowed("$KV.cfg.*", "$KV.cfg.>"));
    assert_false(subject_allowed("$KV.cfg.>", "$JS.API.X"));
    /* A wildcard-first or malformed entry allows nothing. */
    assert_false(subject_allowed(">", "$JS.API.X"));
    assert_false(subject_allowed("*.>", "_INBOX.x"));
    assert_false(subject_allowed("$JS..x,", "$JS..x"));
    assert_false(subject_allowed(",,", "$JS.x"));
    assert_true(subject_allowed(",$JS.x,", "$JS.x"));
}

static void test_allow_list_valid(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_true(subject_allow_list_valid("", &why));
    assert_true(subject_allow_list_valid(NULL, &why));
    assert_true(subject_allow_list_valid("$KV.cfg.>,_INBOX.app.*,$SYS.x", &why));
    assert_false(subject_allow_list_valid(">", &why));
    assert_non_null(why);
    why = NULL;
    assert_false(subject_allow_list_valid("$KV.>,orders.>", &why));
    assert_non_null(why);
    why = NULL;
    assert_false(subject_allow_list_valid("$KV.>,,$SYS.x", &why));
    assert_non_null(why);
    why = NULL;
    assert_false(subject_allow_list_valid("$KV..x", &why));
    assert_non_null(why);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_patterns),
        cmocka_unit_test(test_valid_literals),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_wildcards_refused_for_literals),
        cmocka_unit_test(test_max_len),
        cmocka_unit_test(test_valid_uses_len),
        cmocka_unit_test(test_match_star),
        cmocka_unit_test(test_match_gt),
        cmocka_unit_test(test_match_exact),
        cmocka_unit_test(test_covers),
        cmocka_unit_test(test_covers_more),
        cmocka_unit_test(test_overlaps),
        cmocka_unit_test(test_reserved),
        cmocka_unit_test(test_grant_wildcard_never_covers_reserved),
        cmocka_unit_test(test_allow_list),
        cmocka_unit_test(test_allow_list_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
