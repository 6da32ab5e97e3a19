/*
 * test_slab: page-aligned slots that cost memory only where written.
 *
 * A slot must come back zeroed after any use (nghttp2 takes it as calloc's
 * answer), be told apart from malloc's blocks (the allocator frees by
 * asking), and a freed slot must stop costing resident memory: its pages
 * are counted with mincore().
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sluice/slab.h"

/* Pages of [p, p + SLAB_SLOT_BYTES) resident now. */
static size_t resident_pages(void *p)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t n = SLAB_SLOT_BYTES / (size_t)page;
    unsigned char vec[64];
    assert_true(n <= sizeof(vec));
    assert_int_equal(mincore(p, SLAB_SLOT_BYTES, vec), 0);
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        r += vec[i] & 1;
    return r;
}

static void test_zeroed_aligned_owned(void **state)
{
    (void)state;
    size_t before = slab_in_use();
    uint8_t *a = slab_alloc();
    assert_non_null(a);
    assert_int_equal((uintptr_t)a % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
    assert_true(slab_owns(a));
    assert_true(slab_owns(a + SLAB_SLOT_BYTES - 1));
    assert_int_equal(slab_in_use(), before + 1);
    for (size_t i = 0; i < SLAB_SLOT_BYTES; i++)
        assert_int_equal(a[i], 0);

    void *m = malloc(SLAB_SLOT_BYTES);
    assert_false(slab_owns(m));
    assert_false(slab_owns(NULL));
    free(m);

    memset(a, 0xab, SLAB_SLOT_BYTES);
    slab_free(a);
    assert_int_equal(slab_in_use(), before);
    /* The freed slot is the next one handed out, zeroed again. */
    uint8_t *b = slab_alloc();
    assert_ptr_equal(b, a);
    for (size_t i = 0; i < SLAB_SLOT_BYTES; i++)
        assert_int_equal(b[i], 0);
    slab_free(b);
}

static void test_pages_only_where_written(void **state)
{
    (void)state;
    uint8_t *a = slab_alloc();
    assert_non_null(a);
    a[0] = 1; /* one frame header: one page */
    assert_int_equal(resident_pages(a), 1);
    memset(a, 1, SLAB_SLOT_BYTES);
    assert_int_equal(resident_pages(a), SLAB_SLOT_BYTES / (size_t)sysconf(_SC_PAGESIZE));
    slab_free(a);
    assert_int_equal(resident_pages(a), 0);
}

static void test_many_distinct(void **state)
{
    (void)state;
    enum { N = 100 };
    uint8_t *s[N];
    for (int i = 0; i < N; i++) {
        s[i] = slab_alloc();
        assert_non_null(s[i]);
        s[i][0] = (uint8_t)i;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(s[i][0], (uint8_t)i);
    for (int i = 0; i < N; i++)
        slab_free(s[i]);
    slab_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zeroed_aligned_owned),
        cmocka_unit_test(test_pages_only_where_written),
        cmocka_unit_test(test_many_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
