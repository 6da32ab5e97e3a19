/*
 * test_principal: per-principal stream limits — a cap on open streams and
 * a rate of new ones, each principal on its own, entries dropped only
 * once idle long enough that a fresh one is the same.
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

#include "sluice/principal.h"

static void test_cap(void **state)
{
    (void)state;
    struct principals *t = principal_new(&(struct principal_params){.max_open = 2});
    assert_true(principal_enabled(t));
    assert_int_equal(principal_take(t, "alice", 0), PRINCIPAL_OK);
    assert_int_equal(principal_take(t, "alice", 0), PRINCIPAL_OK);
    assert_int_equal(principal_take(t, "alice", 0), PRINCIPAL_FULL);
    assert_int_equal(principal_take(t, "bob", 0), PRINCIPAL_OK);
    principal_put(t, "alice", 1);
    assert_int_equal(principal_take(t, "alice", 1), PRINCIPAL_OK);
    assert_int_equal(atomic_load(&principal_stats(t)->full), 1);
    principal_put(t, "alice", 2);
    principal_put(t, "alice", 2);
    principal_put(t, "bob", 2);
    assert_int_equal(principal_count(t), 2);
    /* Idle for a second: forgotten on the next take. */
    assert_int_equal(principal_take(t, "carol", 3.5), PRINCIPAL_OK);
    assert_int_equal(principal_count(t), 1);
    principal_put(t, "carol", 3.5);
    principal_free(t);
}

static void test_rate(void **state)
{
    (void)state;
    struct principals *t = principal_new(&(struct principal_params){.rate = 3});
    for (int i = 0; i < 3; i++)
        assert_int_equal(principal_take(t, "alice", 10), PRINCIPAL_OK);
    assert_int_equal(principal_take(t, "alice", 10), PRINCIPAL_RATE);
    assert_int_equal(principal_take(t, "bob", 10), PRINCIPAL_OK);
    /* Closing the streams does not hand the tokens back... */
    for (int i = 0; i < 3; i++)
        principal_put(t, "alice", 10.1);
    assert_int_equal(principal_take(t, "alice", 10.2), PRINCIPAL_RATE);
    /* ...time does. */
    assert_int_equal(principal_take(t, "alice", 10.6), PRINCIPAL_OK);
    assert_int_equal(atomic_load(&principal_stats(t)->rate), 2);
    principal_put(t, "alice", 11);
    principal_put(t, "bob", 11);
    principal_free(t);
}

static void test_off(void **state)
{
    (void)state;
    struct principals *t = principal_new(&(struct principal_params){0});
    assert_false(principal_enabled(t));
    assert_false(principal_enabled(NULL));
    for (int i = 0; i < 100; i++)
        assert_int_equal(principal_take(t, "alice", 0), PRINCIPAL_OK);
    for (int i = 0; i < 100; i++)
        principal_put(t, "alice", 0);
    principal_free(t);
    principal_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
