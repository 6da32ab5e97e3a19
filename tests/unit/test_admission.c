/*
 * test_admission: the process's stream capacity — an exact cap under
 * concurrent takers, the rate bucket, the refusal's retry range and the
 * readiness high-water mark.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <pthread.h>

#include "sluice/admission.h"

static void test_cap_is_exact(void **state)
{
    (void)state;
    struct admission *a = admission_new(&(struct admission_params){
        .max_open = 3, .retry_min_ms = 1000, .retry_max_ms = 1000, .high_water_pct = 90});
    for (int i = 0; i < 3; i++)
        assert_int_equal(admission_take(a, 1.0), ADMISSION_OK);
    assert_int_equal(admission_take(a, 1.0), ADMISSION_FULL);
    assert_int_equal(admission_take(a, 1.0), ADMISSION_FULL);
    assert_int_equal(atomic_load(&admission_stats(a)->full), 2);
    assert_int_equal(admission_open(a), 3);
    admission_put(a);
    assert_int_equal(admission_take(a, 1.0), ADMISSION_OK);
    admission_free(a);
    admission_free(NULL);
}

#define THREADS 4
#define TRIES 10000

static void *taker(void *arg)
{
    struct admission *a = arg;
    for (int i = 0; i < TRIES; i++) {
        if (admission_take(a, 1.0) == ADMISSION_OK && i % 2)
            admission_put(a);
    }
    return NULL;
}

static void test_cap_holds_under_concurrent_takers(void **state)
{
    (void)state;
    struct admission *a = admission_new(&(struct admission_params){
        .max_open = 100, .retry_min_ms = 1000, .retry_max_ms = 2000, .high_water_pct = 90});
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, taker, a);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* Every odd take that succeeded gave its slot back; the even ones keep theirs: at most 100. */
    assert_int_equal(admission_open(a), 100);
    admission_free(a);
}

static void test_rate_bucket(void **state)
{
    (void)state;
    struct admission *a = admission_new(&(struct admission_params){
        .rate = 10, .retry_min_ms = 1000, .retry_max_ms = 1000, .high_water_pct = 90});
    int ok = 0;
    for (int i = 0; i < 30; i++)
        ok += admission_take(a, 5.0) == ADMISSION_OK;
    assert_int_equal(ok, 10);
    assert_int_equal(atomic_load(&admission_stats(a)->rate), 20);
    /* A refused stream holds no slot. */
    assert_int_equal(admission_open(a), 10);
    /* Half a second refills five. */
    ok = 0;
    for (int i = 0; i < 30; i++)
        ok += admission_take(a, 5.5) == ADMISSION_OK;
    assert_int_equal(ok, 5);
    admission_free(a);
}

static void test_retry_range_and_headroom(void **state)
{
    (void)state;
    struct admission *a = admission_new(&(struct admission_params){
        .max_open = 10, .retry_min_ms = 5000, .retry_max_ms = 30000, .high_water_pct = 90});
    unsigned lo = UINT32_MAX, hi = 0;
    for (int i = 0; i < 1000; i++) {
        unsigned r = admission_retry_ms(a);
        assert_true(r >= 5000 && r <= 30000);
        lo = r < lo ? r : lo;
        hi = r > hi ? r : hi;
    }
    assert_true(hi - lo > 20000); /* spread over the range, not one value */
    for (int i = 0; i < 9; i++)
        assert_int_equal(admission_take(a, 1.0), ADMISSION_OK);
    assert_true(admission_headroom(a)); /* 9 of 10: at the mark, not above */
    assert_int_equal(admission_take(a, 1.0), ADMISSION_OK);
    assert_false(admission_headroom(a));
    admission_put(a);
    assert_true(admission_headroom(a));
    assert_true(admission_log_due(a, 100.0));
    assert_false(admission_log_due(a, 100.5));
    assert_true(admission_log_due(a, 101.0));
    admission_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_is_exact),
        cmocka_unit_test(test_cap_holds_under_concurrent_takers),
        cmocka_unit_test(test_rate_bucket),
        cmocka_unit_test(test_retry_range_and_headroom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
