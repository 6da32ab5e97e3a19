/*
 * test_filecache: the shared static-file copies — hits, revalidation when
 * a file changes, least-recently-used eviction, and refusal when entries
 * in use fill the cache. Files are real, in a fresh temporary directory.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/err.h"
#include "sluice/filecache.h"

static char dir[64];

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

static void write_file(const char *name, char fill, size_t n)
{
    char p[128];
    path_of(p, sizeof(p), name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc(fill, f);
    fclose(f);
}

/* filecache_get() as the request pipeline (request.c open_file()) calls it. */
static int get(struct filecache *c, const char *name, struct filecache_entry **e)
{
    char p[128];
    path_of(p, sizeof(p), name);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    int rc = filecache_get(c, p, fd, &st, e);
    close(fd);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sluice-filecache-XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_file("a", 'a', 1000);
    write_file("b", 'b', 1000);
    write_file("c", 'c', 1000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        path_of(p, sizeof(p), names[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

static void test_shared_copy(void **state)
{
    (void)state;
    struct filecache *c = filecache_new(10000);
    struct filecache_entry *e1, *e2;
    assert_int_equal(get(c, "a", &e1), 0);
    assert_int_equal(get(c, "a", &e2), 0);
    assert_ptr_equal(e1, e2);
    assert_int_equal(e1->len, 1000);
    assert_int_equal(e1->data[999], 'a');
    assert_int_equal(filecache_bytes(c), 1000);
    filecache_unref(c, e1);
    filecache_unref(c, e2);
    filecache_free(c);
}

static void test_least_recently_used_goes_first(void **state)
{
    (void)state;
    struct filecache *c = filecache_new(2500); /* two files of 1000 */
    struct filecache_entry *a, *b, *x;
    assert_int_equal(get(c, "a", &a), 0);
    filecache_unref(c, a);
    assert_int_equal(get(c, "b", &b), 0);
    filecache_unref(c, b);
    assert_int_equal(get(c, "a", &x), 0); /* a used again: b is now the oldest */
    assert_ptr_equal(x, a);
    filecache_unref(c, x);
    assert_int_equal(get(c, "c", &x), 0); /* makes room: b goes */
    filecache_unref(c, x);
    assert_int_equal(filecache_bytes(c), 2000);
    assert_int_equal(get(c, "a", &x), 0); /* still cached: no new bytes */
    assert_ptr_equal(x, a);
    assert_int_equal(filecache_bytes(c), 2000);
    filecache_unref(c, x);
    filecache_free(c);
}

static void test_in_use_is_never_evicted(void **state)
{
    (void)state;
    struct filecache *c = filecache_new(2500);
    struct filecache_entry *a, *b, *x = NULL;
    assert_int_equal(get(c, "a", &a), 0);
    assert_int_equal(get(c, "b", &b), 0);
    assert_int_equal(get(c, "c", &x), ERR_LIMIT);
    assert_int_equal(a->data[0], 'a');
    assert_int_equal(b->data[0], 'b');
    filecache_unref(c, b);
    assert_int_equal(get(c, "c", &x), 0); /* b was unused: it made room */
    assert_int_equal(x->data[0], 'c');
    filecache_unref(c, x);
    filecache_unref(c, a);
    filecache_free(c);
}

static void test_changed_file_is_read_again(void **state)
{
    (void)state;
    struct filecache *c = filecache_new(10000);
    struct filecache_entry *old, *fresh;
    assert_int_equal(get(c, "a", &old), 0);
    write_file("a", 'z', 1500); /* the response sending the old copy keeps it */
    assert_int_equal(get(c, "a", &fresh), 0);
    assert_ptr_not_equal(old, fresh);
    assert_int_equal(fresh->len, 1500);
    assert_int_equal(fresh->data[0], 'z');
    assert_int_equal(old->len, 1000);
    assert_int_equal(old->data[0], 'a');
    assert_int_equal(filecache_bytes(c), 2500);
    filecache_unref(c, old); /* stale and unused: freed */
    assert_int_equal(filecache_bytes(c), 1500);
    filecache_unref(c, fresh);
    filecache_free(c);
    write_file("a", 'a', 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_copy),
        cmocka_unit_test(test_least_recently_used_goes_first),
        cmocka_unit_test(test_in_use_is_never_evicted),
        cmocka_unit_test(test_changed_file_is_read_again),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
