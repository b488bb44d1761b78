/* The buffer type and its pool. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/buf.h"

#include <string.h>

static void test_take_append_consume_release(void **state)
{
    (void)state;
    sy_bufpool_t pool;
    sy_bufpool_init(&pool, 64, 2);
    sy_buf_t b = {0};
    assert_int_equal(sy_buf_take(&b, &pool), 0);
    assert_int_equal(pool.in_use, 1);
    assert_int_equal(sy_buf_append(&b, "hello", 5), 0);
    assert_int_equal(sy_buf_appendf(&b, " %d", 42), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(sy_buf_data(&b), "hello 42", 8);
    sy_buf_consume(&b, 6);
    assert_memory_equal(sy_buf_data(&b), "42", 2);
    /* Appending more than the tail room compacts first. */
    char big[60];
    memset(big, 'x', sizeof(big));
    assert_int_equal(sy_buf_append(&b, big, 60), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 62);
    assert_int_equal(sy_buf_append(&b, big, 3), SY_ELIMIT); /* all or nothing */
    assert_int_equal(b.len, 62);
    sy_buf_release_if_empty(&b, &pool);
    assert_non_null(b.base);
    sy_buf_consume(&b, 62);
    sy_buf_release_if_empty(&b, &pool);
    assert_null(b.base);
    assert_int_equal(pool.in_use, 0);
    sy_buf_release(&b, &pool); /* idempotent */
    assert_int_equal(pool.free_count, 1);
    sy_bufpool_destroy(&pool);
}

static void test_pool_keeps_at_most_free_max(void **state)
{
    (void)state;
    sy_bufpool_t pool;
    sy_bufpool_init(&pool, 32, 1);
    sy_buf_t a = {0}, b = {0};
    assert_int_equal(sy_buf_take(&a, &pool), 0);
    assert_int_equal(sy_buf_take(&b, &pool), 0);
    sy_buf_release(&a, &pool);
    sy_buf_release(&b, &pool);
    assert_int_equal(pool.free_count, 1);
    assert_int_equal(pool.in_use, 0);
    sy_bufpool_destroy(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_append_consume_release),
        cmocka_unit_test(test_pool_keeps_at_most_free_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
