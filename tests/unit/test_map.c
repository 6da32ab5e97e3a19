/*
 * test_map: the byte-string hash map.
 *
 * Values are the addresses of local slots, so a test can tell exactly which
 * value came back. Keys are often passed from buffers that are changed or
 * freed right after the call, which checks that the map copied them.
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

#include "sluice/map.h"

#define KEY(s) (s), (sizeof(s) - 1)

static void test_put_get_del(void **state)
{
    (void)state;
    int v1 = 1, v2 = 2;
    struct map *m = map_new();
    assert_non_null(m);
    assert_int_equal(map_count(m), 0);
    assert_null(map_get(m, KEY("a")));
    assert_null(map_del(m, KEY("a")));

    assert_null(map_put(m, KEY("a"), &v1));
    assert_int_equal(map_count(m), 1);
    assert_null(map_put(m, KEY("b"), &v2));
    assert_int_equal(map_count(m), 2);
    assert_ptr_equal(map_get(m, KEY("a")), &v1);
    assert_ptr_equal(map_get(m, KEY("b")), &v2);
    assert_null(map_get(m, KEY("c")));

    assert_ptr_equal(map_del(m, KEY("a")), &v1);
    assert_int_equal(map_count(m), 1);
    assert_null(map_get(m, KEY("a")));
    assert_null(map_del(m, KEY("a")));
    assert_int_equal(map_count(m), 1);
    assert_ptr_equal(map_get(m, KEY("b")), &v2);

    assert_ptr_equal(map_del(m, KEY("b")), &v2);
    assert_int_equal(map_count(m), 0);

    /* Usable again once empty. */
    assert_null(map_put(m, KEY("a"), &v2));
    assert_ptr_equal(map_get(m, KEY("a")), &v2);
    assert_int_equal(map_count(m), 1);
    map_free(m);
}

static void test_replace_returns_previous(void **state)
{
    (void)state;
    int v1 = 1, v2 = 2, v3 = 3;
    struct map *m = map_new();
    assert_null(map_put(m, KEY("k"), &v1));
    assert_ptr_equal(map_put(m, KEY("k"), &v2), &v1);
    assert_int_equal(map_count(m), 1);
    assert_ptr_equal(map_get(m, KEY("k")), &v2);
    assert_ptr_equal(map_put(m, KEY("k"), &v3), &v2);
    assert_int_equal(map_count(m), 1);
    assert_ptr_equal(map_del(m, KEY("k")), &v3);
    assert_int_equal(map_count(m), 0);
    map_free(m);
}

static void test_keys_are_copied(void **state)
{
    (void)state;
    int v = 1;
    struct map *m = map_new();
    char *key = malloc(5);
    assert_non_null(key);
    memcpy(key, "abcde", 5);
    assert_null(map_put(m, key, 5, &v));
    memset(key, 'z', 5);
    assert_null(map_get(m, key, 5));
    free(key);

    /* Looked up with a different buffer holding the same bytes. */
    char other[5];
    memcpy(other, "abcde", 5);
    assert_ptr_equal(map_get(m, other, 5), &v);
    map_free(m);
}

static void test_prefix_keys_distinct(void **state)
{
    (void)state;
    int a = 1, ab = 2, abc = 3;
    struct map *m = map_new();
    assert_null(map_put(m, KEY("ab"), &ab));
    assert_null(map_put(m, KEY("a"), &a));
    assert_null(map_put(m, KEY("abc"), &abc));
    assert_int_equal(map_count(m), 3);
    assert_ptr_equal(map_get(m, KEY("a")), &a);
    assert_ptr_equal(map_get(m, KEY("ab")), &ab);
    assert_ptr_equal(map_get(m, KEY("abc")), &abc);
    assert_null(map_get(m, KEY("abcd")));
    /* Same bytes, shorter length: only the first klen bytes are the key. */
    assert_ptr_equal(map_get(m, "abcdef", 2), &ab);
    map_free(m);
}

static void test_binary_keys(void **state)
{
    (void)state;
    int v[5];
    struct map *m = map_new();
    assert_null(map_put(m, KEY("a\0b"), &v[0]));
    assert_null(map_put(m, KEY("a\0c"), &v[1]));
    assert_null(map_put(m, KEY("a"), &v[2]));
    assert_null(map_put(m, KEY("a\0"), &v[3]));
    assert_null(map_put(m, KEY("\0\0\0"), &v[4]));
    assert_int_equal(map_count(m), 5);
    assert_ptr_equal(map_get(m, KEY("a\0b")), &v[0]);
    assert_ptr_equal(map_get(m, KEY("a\0c")), &v[1]);
    assert_ptr_equal(map_get(m, KEY("a")), &v[2]);
    assert_ptr_equal(map_get(m, KEY("a\0")), &v[3]);
    assert_ptr_equal(map_get(m, KEY("\0\0\0")), &v[4]);
    assert_null(map_get(m, KEY("\0\0")));
    assert_null(map_get(m, KEY("a\0d")));
    assert_ptr_equal(map_del(m, KEY("a\0b")), &v[0]);
    assert_null(map_get(m, KEY("a\0b")));
    assert_ptr_equal(map_get(m, KEY("a\0c")), &v[1]);
    assert_int_equal(map_count(m), 4);
    map_free(m);
}

#define MANY 10000

static void make_key(char *out, size_t n, int i, size_t *klen)
{
    *klen = (size_t)snprintf(out, n, "orders.region%d.item", i);
}

static void test_many_keys_grow(void **state)
{
    (void)state;
    static int vals[MANY];
    char key[64];
    size_t klen;
    struct map *m = map_new();

    for (int i = 0; i < MANY; i++) {
        make_key(key, sizeof key, i, &klen);
        assert_null(map_put(m, key, klen, &vals[i]));
        assert_int_equal(map_count(m), (size_t)i + 1);
    }
    for (int i = 0; i < MANY; i++) {
        make_key(key, sizeof key, i, &klen);
        void *got = map_get(m, key, klen);
        if (got != &vals[i])
            fail_msg("key %d: got %p, want %p", i, got, (void *)&vals[i]);
    }
    make_key(key, sizeof key, MANY, &klen);
    assert_null(map_get(m, key, klen));

    /* Delete the even keys; the odd ones stay reachable. */
    for (int i = 0; i < MANY; i += 2) {
        make_key(key, sizeof key, i, &klen);
        assert_ptr_equal(map_del(m, key, klen), &vals[i]);
    }
    assert_int_equal(map_count(m), MANY / 2);
    for (int i = 0; i < MANY; i++) {
        make_key(key, sizeof key, i, &klen);
        void *got = map_get(m, key, klen);
        void *want = (i % 2) ? &vals[i] : NULL;
        if (got != want)
            fail_msg("after deletes, key %d: got %p, want %p", i, got, want);
    }

    /* Replace the odd ones; the count does not change. */
    for (int i = 1; i < MANY; i += 2) {
        make_key(key, sizeof key, i, &klen);
        assert_ptr_equal(map_put(m, key, klen, &vals[i - 1]), &vals[i]);
    }
    assert_int_equal(map_count(m), MANY / 2);
    map_free(m); /* frees every key copy; ASan reports a leak otherwise */
}

static void test_free_null(void **state)
{
    (void)state;
    map_free(NULL);
}

static void test_free_nonempty(void **state)
{
    (void)state;
    int v = 0;
    struct map *m = map_new();
    map_put(m, KEY("x"), &v);
    map_put(m, KEY("y"), &v);
    map_free(m); /* values are the caller's: v is untouched */
    assert_int_equal(v, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del),     cmocka_unit_test(test_replace_returns_previous),
        cmocka_unit_test(test_keys_are_copied), cmocka_unit_test(test_prefix_keys_distinct),
        cmocka_unit_test(test_binary_keys),     cmocka_unit_test(test_many_keys_grow),
        cmocka_unit_test(test_free_null),       cmocka_unit_test(test_free_nonempty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
