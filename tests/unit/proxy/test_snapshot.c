/* Snapshot publication and reclamation: a retired snapshot lives until every
 * reader has moved past it, and a request's reference keeps it alive beyond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/snapshot.h"

#include <pthread.h>
#include <stdlib.h>

static int freed;

static void data_free(void *p)
{
    freed++;
    free(p);
}

static sy_config_t *fake_config(void)
{
    sy_config_t *cfg = calloc(1, sizeof(*cfg));
    atomic_init(&cfg->refs, 1);
    return cfg;
}

static void test_reclaim_waits_for_readers(void **state)
{
    (void)state;
    freed = 0;
    sy_config_t *cfg = fake_config();
    sy_snapshot_slot_t slot;
    sy_snapshot_slot_init(&slot, 2);
    sy_snapshot_publish(&slot, sy_snapshot_create(cfg, malloc(1), data_free));
    sy_snapshot_t *held0 = NULL, *held1 = NULL;
    sy_snapshot_t *s1 = sy_snapshot_refresh(&slot, 0, &held0);
    sy_snapshot_refresh(&slot, 1, &held1);
    sy_snapshot_t *request = sy_snapshot_ref(s1); /* a request in flight on reader 0 */

    sy_snapshot_publish(&slot, sy_snapshot_create(cfg, malloc(1), data_free));
    sy_snapshot_reclaim(&slot);
    assert_int_equal(freed, 0);
    sy_snapshot_refresh(&slot, 0, &held0);
    sy_snapshot_reclaim(&slot);
    assert_int_equal(freed, 0); /* reader 1 has not moved */
    sy_snapshot_refresh(&slot, 1, &held1);
    sy_snapshot_reclaim(&slot);
    assert_int_equal(freed, 0); /* the request still holds s1 */
    sy_snapshot_release(request);
    assert_int_equal(freed, 1);

    sy_snapshot_reader_exit(&slot, 0, &held0);
    sy_snapshot_reader_exit(&slot, 1, &held1);
    sy_snapshot_slot_destroy(&slot);
    assert_int_equal(freed, 2);
    sy_config_release(cfg);
}

typedef struct {
    sy_snapshot_slot_t *slot;
    size_t id;
    atomic_bool *stop;
    long reads;
} reader_arg_t;

static void *reader(void *p)
{
    reader_arg_t *a = p;
    sy_snapshot_t *held = NULL;
    while (!atomic_load(a->stop)) {
        sy_snapshot_t *s = sy_snapshot_refresh(a->slot, a->id, &held);
        sy_snapshot_t *r = sy_snapshot_ref(s);
        assert_non_null(r->data);
        sy_snapshot_release(r);
        a->reads++;
    }
    sy_snapshot_reader_exit(a->slot, a->id, &held);
    return NULL;
}

static void test_concurrent_publish(void **state)
{
    (void)state;
    freed = 0;
    sy_config_t *cfg = fake_config();
    sy_snapshot_slot_t slot;
    sy_snapshot_slot_init(&slot, 2);
    sy_snapshot_publish(&slot, sy_snapshot_create(cfg, malloc(1), data_free));
    atomic_bool stop = false;
    pthread_t t[2];
    reader_arg_t args[2] = {{&slot, 0, &stop, 0}, {&slot, 1, &stop, 0}};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, reader, &args[i]);
    for (int i = 0; i < 2000; i++) {
        sy_snapshot_publish(&slot, sy_snapshot_create(cfg, malloc(1), data_free));
        sy_snapshot_reclaim(&slot);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    sy_snapshot_slot_destroy(&slot);
    assert_int_equal(freed, 2001);
    sy_config_release(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reclaim_waits_for_readers),
        cmocka_unit_test(test_concurrent_publish),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
