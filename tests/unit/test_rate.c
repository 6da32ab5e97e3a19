/*
 * test_rate: the token bucket behind subscribe-rate, driven by plain
 * clock values.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "sluice/rate.h"

static void test_burst_then_refuse(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_init(&b, 100, 10.0);
    for (int i = 0; i < 100; i++)
        assert_true(rate_take(&b, 100, 100, 10.0, 1));
    assert_false(rate_take(&b, 100, 100, 10.0, 1));
}

static void test_refills_at_rate(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_init(&b, 100, 0.0);
    assert_true(rate_take(&b, 100, 100, 0.0, 100));
    /* 50 ms at 100/s: five tokens, not six. */
    assert_true(rate_take(&b, 100, 100, 0.05, 5));
    assert_false(rate_take(&b, 100, 100, 0.05, 1));
    /* A long pause refills only up to the burst. */
    assert_false(rate_take(&b, 100, 100, 1000.0, 101));
    assert_true(rate_take(&b, 100, 100, 1000.0, 100));
}

static void test_cost_taken_whole_or_not(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_init(&b, 10, 0.0);
    assert_true(rate_take(&b, 10, 10, 0.0, 7));
    /* 3 left: a cost of 4 takes nothing, so 3 singles still go. */
    assert_false(rate_take(&b, 10, 10, 0.0, 4));
    for (int i = 0; i < 3; i++)
        assert_true(rate_take(&b, 10, 10, 0.0, 1));
    assert_false(rate_take(&b, 10, 10, 0.0, 1));
}

static void test_clock_going_back_refills_nothing(void **state)
{
    (void)state;
    struct rate_bucket b;
    rate_init(&b, 5, 100.0);
    assert_true(rate_take(&b, 5, 5, 100.0, 5));
    assert_false(rate_take(&b, 5, 5, 50.0, 1));
    assert_true(rate_take(&b, 5, 5, 100.2, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refuse),
        cmocka_unit_test(test_refills_at_rate),
        cmocka_unit_test(test_cost_taken_whole_or_not),
        cmocka_unit_test(test_clock_going_back_refills_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
