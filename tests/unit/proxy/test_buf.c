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

/* Blocks a spike left cached go back once a whole period passed without a take
 * needing them; free_keep stay, and blocks in steady use are never unmapped. */
static void test_trim_returns_what_a_period_did_not_use(void **state)
{
    (void)state;
    sy_bufpool_t pool;
    sy_bufpool_init(&pool, 40000, 64); /* not a page multiple: mapped rounded up */
    assert_int_equal(pool.free_keep, 1);
    sy_buf_t b[40];
    memset(b, 0, sizeof(b));
    for (int i = 0; i < 40; i++)
        assert_int_equal(sy_buf_take(&b[i], &pool), 0);
    memset(b[39].base, 'y', 40000); /* the whole cap is usable */
    assert_int_equal(pool.mapped, 40);
    for (int i = 0; i < 40; i++)
        sy_buf_release(&b[i], &pool);
    assert_int_equal(pool.free_count, 40);
    /* The first period saw the list empty (the spike): nothing was spare. */
    assert_int_equal(sy_bufpool_trim(&pool), 0);
    /* Steady use of 3 blocks during the next period. */
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < 3; i++)
            assert_int_equal(sy_buf_take(&b[i], &pool), 0);
        for (int i = 0; i < 3; i++)
            sy_buf_release(&b[i], &pool);
    }
    /* 37 stayed unused all period: all but free_keep go. */
    assert_int_equal(sy_bufpool_trim(&pool), 36);
    assert_int_equal(pool.free_count, 4);
    assert_int_equal(pool.mapped, 4);
    /* Nothing moved since: down to free_keep. */
    assert_int_equal(sy_bufpool_trim(&pool), 3);
    assert_int_equal(pool.free_count, 1);
    assert_int_equal(sy_bufpool_trim(&pool), 0);
    /* What is left still works. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(sy_buf_take(&b[i], &pool), 0);
    assert_int_equal(sy_buf_append(&b[5], "abc", 3), 0);
    assert_int_equal(pool.mapped, 6);
    for (int i = 0; i < 6; i++)
        sy_buf_release(&b[i], &pool);
    sy_bufpool_destroy(&pool);
    assert_int_equal(pool.mapped, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_append_consume_release),
        cmocka_unit_test(test_pool_keeps_at_most_free_max),
        cmocka_unit_test(test_trim_returns_what_a_period_did_not_use),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
