/* The endpoints' state owner (healthcheck/endpoints.c): the workers' shards are
 * summed (in flight, failed connects in a row), passive ejection takes an
 * endpoint out once and the return starts its count afresh, and a reload keeps
 * each endpoint's state by name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/endpoints.h"
#include "proxy/config.h"
#include "proxy/epstate.h"

#include <stdlib.h>

#define CFG1                                                                                                           \
    "listen: [{address: 127.0.0.1:8080}]\n"                                                                            \
    "pools:\n"                                                                                                         \
    "  a: {endpoints: [127.0.0.1:1, 127.0.0.1:2]}\n"                                                                   \
    "  col:\n"                                                                                                         \
    "    colors: {blue: [127.0.0.1:3], green: [127.0.0.1:4]}\n"                                                        \
    "    health: {path: /h}\n"

/* Reordered, one endpoint gone, one new, one moved to another pool. */
#define CFG2                                                                                                           \
    "listen: [{address: 127.0.0.1:8080}]\n"                                                                            \
    "pools:\n"                                                                                                         \
    "  col:\n"                                                                                                         \
    "    colors: {blue: [127.0.0.1:3], green: [127.0.0.1:4]}\n"                                                        \
    "    health: {path: /h}\n"                                                                                         \
    "  b: {endpoints: [127.0.0.1:9, 127.0.0.1:2]}\n"

static sy_config_t *load(const char *text)
{
    sy_conf_t errs = {0};
    sy_config_t *cfg = sy_config_load_string(&errs, "t.yaml", text, NULL, 0);
    sy_conf_print_errors(&errs, stderr);
    sy_conf_close(&errs);
    assert_non_null(cfg);
    return cfg;
}

static const sy_endpoint_t *ep_of(const sy_config_t *cfg, const char *pool, size_t i)
{
    const sy_pool_t *p = sy_config_pool(cfg, pool);
    assert_non_null(p);
    assert_true(i < p->nendpoints);
    return &p->endpoints[i];
}

static void test_indexes(void **state)
{
    (void)state;
    sy_config_t *cfg = load(CFG1);
    assert_int_equal(ep_of(cfg, "a", 0)->index, 0);
    assert_int_equal(ep_of(cfg, "a", 1)->index, 1);
    assert_int_equal(ep_of(cfg, "col", 0)->index, 2);
    assert_int_equal(ep_of(cfg, "col", 1)->index, 3);
    sy_config_release(cfg);
}

static void test_shards_summed(void **state)
{
    (void)state;
    sy_config_t *cfg = load(CFG1);
    sy_endpoints_t *o = sy_endpoints_create(cfg, 3);
    assert_non_null(o);
    sy_epstate_t *t = sy_endpoints_table(o, cfg);
    assert_non_null(t);
    const sy_endpoint_t *e = ep_of(cfg, "a", 1);
    /* Each worker counts in its own shard; the control thread sees the sum. */
    sy_epstate_inflight_add(t, 0, e->index, 1);
    sy_epstate_inflight_add(t, 1, e->index, 1);
    sy_epstate_inflight_add(t, 1, e->index, 1);
    sy_epstate_inflight_add(t, 2, e->index, 1);
    assert_int_equal(sy_endpoints_inflight(o, cfg, e), 4);
    sy_epstate_inflight_add(t, 1, e->index, -1);
    /* An exchange may end with a count below zero on a worker only if it began
     * elsewhere; it cannot here, but the sum is what counts. */
    assert_int_equal(sy_endpoints_inflight(o, cfg, e), 3);
    assert_int_equal(sy_endpoints_inflight(o, cfg, ep_of(cfg, "a", 0)), 0);
    assert_int_equal(atomic_load(&sy_epstate_shard(t, 1, e->index)->inflight), 1);
    /* Out-of-range workers and rows are ignored, not written. */
    sy_epstate_inflight_add(t, 3, e->index, 1);
    sy_epstate_inflight_add(t, -1, e->index, 1);
    sy_epstate_inflight_add(t, 0, 99, 1);
    assert_int_equal(sy_endpoints_inflight(o, cfg, e), 3);

    /* Failed connects in a row: summed over the workers; a good connect ends
     * the run of its own worker only. */
    sy_epstate_connect_result(t, 0, e->index, 0);
    sy_epstate_connect_result(t, 2, e->index, 0);
    assert_int_equal(sy_endpoints_connect_failures(t, e->index), 2);
    sy_epstate_connect_result(t, 0, e->index, 1);
    assert_int_equal(sy_endpoints_connect_failures(t, e->index), 1);
    sy_epstate_connect_result(t, 0, e->index, 0);
    assert_int_equal(sy_endpoints_connect_failures(t, e->index), 2);
    assert_int_equal(sy_endpoints_connect_failures(t, ep_of(cfg, "a", 0)->index), 0);
    /* A config it has no table for. */
    sy_config_t *other = load(CFG1);
    assert_null(sy_endpoints_table(o, other));
    assert_int_equal(sy_endpoints_inflight(o, other, ep_of(other, "a", 1)), 0);
    sy_config_release(other);
    sy_endpoints_destroy(o);
    sy_config_release(cfg);
}

static void test_eject_and_return(void **state)
{
    (void)state;
    sy_config_t *cfg = load(CFG1);
    sy_endpoints_t *o = sy_endpoints_create(cfg, 2);
    sy_epstate_t *t = sy_endpoints_table(o, cfg);
    const sy_endpoint_t *e = ep_of(cfg, "a", 0);
    unsigned long run = 0;
    sy_epstate_connect_result(t, 0, e->index, 0);
    sy_epstate_connect_result(t, 1, e->index, 0);
    assert_false(sy_endpoints_eject(t, e->index, &run));
    assert_int_equal(run, 2);
    assert_false(sy_endpoints_is_down(o, cfg, e));
    sy_epstate_connect_result(t, 1, e->index, 0);
    assert_true(sy_endpoints_eject(t, e->index, &run)); /* three in a row over two workers: out */
    assert_int_equal(run, SY_EJECT_CONNECT_FAILURES);
    assert_true(sy_endpoints_is_down(o, cfg, e));
    assert_true(sy_epstate_down(t, e->index));
    assert_false(sy_endpoints_eject(t, e->index, &run)); /* once only */
    assert_false(sy_epstate_down(t, ep_of(cfg, "a", 1)->index));

    /* The prober brings it back: its past failures no longer count. */
    assert_false(sy_endpoints_set_down(o, cfg, e, true)); /* no change */
    assert_true(sy_endpoints_set_down(o, cfg, e, false));
    assert_false(sy_endpoints_is_down(o, cfg, e));
    assert_int_equal(sy_endpoints_connect_failures(t, e->index), 0);
    assert_false(sy_endpoints_eject(t, e->index, &run));
    sy_epstate_connect_result(t, 0, e->index, 0);
    sy_epstate_connect_result(t, 0, e->index, 0);
    assert_int_equal(sy_endpoints_connect_failures(t, e->index), 2);
    sy_epstate_connect_result(t, 1, e->index, 0);
    assert_true(sy_endpoints_eject(t, e->index, &run));

    /* Probes and retirement, as the health checker and the swap write them. */
    sy_endpoints_probed(o, cfg, e, 2);
    assert_int_equal(sy_endpoints_good_probes(o, cfg, e), 2);
    sy_pool_endpoints_t ops = sy_endpoints_pool_ops(o);
    assert_int_equal(ops.good_probes(ops.ud, cfg, e), -1); /* down: not ready for a swap */
    sy_endpoints_set_down(o, cfg, e, false);
    assert_int_equal(ops.good_probes(ops.ud, cfg, e), 2);
    ops.retire(ops.ud, cfg, e, 1234);
    assert_int_equal(ops.retired(ops.ud, cfg, e), 1234);
    assert_int_equal(sy_epstate_retired_ms(t, e->index), 1234);
    sy_endpoints_destroy(o);
    sy_config_release(cfg);
}

static void test_reload_by_name(void **state)
{
    (void)state;
    sy_config_t *c1 = load(CFG1);
    sy_endpoints_t *o = sy_endpoints_create(c1, 2);
    sy_epstate_t *t1 = sy_epstate_ref(sy_endpoints_table(o, c1)); /* as a snapshot would */
    const sy_endpoint_t *green1 = ep_of(c1, "col", 1), *two1 = ep_of(c1, "a", 1), *one1 = ep_of(c1, "a", 0);
    sy_endpoints_set_down(o, c1, two1, true);
    sy_endpoints_set_down(o, c1, one1, true);
    sy_endpoints_probed(o, c1, green1, 3);
    sy_endpoints_retire(o, c1, green1, 777);
    sy_epstate_inflight_add(t1, 1, two1->index, 1); /* a request still on the old config */

    sy_config_t *c2 = load(CFG2);
    assert_int_equal(sy_endpoints_reload(o, c2), 0);
    sy_epstate_t *t2 = sy_endpoints_table(o, c2);
    assert_non_null(t2);
    assert_true(t2 != t1);
    const sy_endpoint_t *green2 = ep_of(c2, "col", 1), *two2 = ep_of(c2, "b", 1), *nine = ep_of(c2, "b", 0);
    assert_true(green2->index != green1->index); /* rows moved: matched by name */
    assert_int_equal(sy_endpoints_good_probes(o, c2, green2), 3);
    assert_int_equal(sy_epstate_retired_ms(t2, green2->index), 777);
    assert_true(sy_endpoints_is_down(o, c2, two2));      /* same name, another pool */
    assert_false(sy_endpoints_is_down(o, c2, nine));     /* new: up */
    assert_false(sy_endpoints_is_down(o, c2, ep_of(c2, "col", 0)));
    /* In flight on the old table still counts for the endpoint, until the next reload. */
    assert_int_equal(sy_endpoints_inflight(o, c2, two2), 1);
    sy_epstate_inflight_add(t2, 0, two2->index, 1);
    assert_int_equal(sy_endpoints_inflight(o, c2, two2), 2);
    /* The old config's table stays readable (a store still on it), and apart. */
    assert_true(sy_endpoints_table(o, c1) == t1);
    sy_endpoints_set_down(o, c2, two2, false);
    assert_true(sy_endpoints_is_down(o, c1, two1));
    /* A request ends on the old table after the next reload dropped it. */
    sy_config_t *c3 = load(CFG2);
    assert_int_equal(sy_endpoints_reload(o, c3), 0);
    assert_null(sy_endpoints_table(o, c1));
    assert_false(sy_endpoints_is_down(o, c3, ep_of(c3, "b", 1)));
    sy_epstate_inflight_add(t1, 1, two1->index, -1);
    sy_epstate_release(t1);
    sy_endpoints_destroy(o);
    sy_config_release(c1);
    sy_config_release(c2);
    sy_config_release(c3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_indexes),
        cmocka_unit_test(test_shards_summed),
        cmocka_unit_test(test_eject_and_return),
        cmocka_unit_test(test_reload_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
