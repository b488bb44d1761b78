/* The dashboard's numbers: per-colour counters (healthcheck/colours.c) land on
 * the colour of the endpoint that served, summed over the workers; the history
 * ring (healthcheck/history.c, included to reach its tick) keeps one sample a
 * second of the monitor's since-start numbers as differences, holds at most
 * SY_HISTORY_SECONDS, starts afresh when the route set changes, and answers
 * oldest first. The monitor is faked: two functions the history reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/colours.h"
#include "healthcheck/history.c"

#include "proxy/config.h"

static sy_route_view_t views[2];
static size_t nviews;

size_t sy_monitor_nroutes(const sy_monitor_t *m)
{
    (void)m;
    return nviews;
}

const sy_route_view_t *sy_monitor_route(const sy_monitor_t *m, size_t i)
{
    (void)m;
    return i < nviews ? &views[i] : NULL;
}

static void add(sy_side_t *s, uint64_t n, uint64_t errors, uint64_t us)
{
    for (uint64_t i = 0; i < n; i++)
        sy_hist_add(&s->total, us);
    s->requests += n;
    s->errors += errors;
}

static json_t *side_of(json_t *j, size_t route, const char *side, const char *key)
{
    return json_object_get(json_object_get(json_array_get(json_object_get(j, "routes"), route), side), key);
}

static void test_history_ring(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(0);
    memset(views, 0, sizeof(views));
    views[0].route = "nav";
    nviews = 1;
    sy_history_t *h = sy_history_create(loop, (const sy_monitor_t *)views);
    assert_non_null(h);
    add(&views[0].total[0], 10, 1, 2000);   /* a second: 10 on legacy at 2 ms, one error */
    tick_cb(loop, &h->tick, 0);
    add(&views[0].total[1], 4, 0, 40000);   /* the next: 4 on new at 40 ms */
    tick_cb(loop, &h->tick, 0);
    json_t *j = sy_history_json(h, SY_HISTORY_SECONDS);
    assert_int_equal(json_integer_value(json_object_get(j, "samples")), 2);
    json_t *lr = side_of(j, 0, "legacy", "requests"), *nr = side_of(j, 0, "new", "requests");
    assert_int_equal(json_integer_value(json_array_get(lr, 0)), 10); /* oldest first */
    assert_int_equal(json_integer_value(json_array_get(lr, 1)), 0);
    assert_int_equal(json_integer_value(json_array_get(nr, 1)), 4);
    assert_int_equal(json_integer_value(json_array_get(side_of(j, 0, "legacy", "errors"), 0)), 1);
    double p99 = json_number_value(json_array_get(side_of(j, 0, "new", "p99_ms"), 1));
    assert_true(p99 > 39.0 && p99 < 41.0);
    assert_true(json_number_value(json_array_get(side_of(j, 0, "new", "p99_ms"), 0)) == 0.0);
    json_decref(j);
    j = sy_history_json(h, 1); /* the newest only */
    assert_int_equal(json_array_size(side_of(j, 0, "new", "requests")), 1);
    assert_int_equal(json_integer_value(json_array_get(side_of(j, 0, "new", "requests"), 0)), 4);
    json_decref(j);

    /* Bounded: after more seconds than it holds, it holds SY_HISTORY_SECONDS, the newest last. */
    for (int i = 0; i < SY_HISTORY_SECONDS + 20; i++) {
        add(&views[0].total[0], (uint64_t)(i % 7), 0, 1000);
        tick_cb(loop, &h->tick, 0);
    }
    j = sy_history_json(h, SY_HISTORY_SECONDS);
    lr = side_of(j, 0, "legacy", "requests");
    assert_int_equal(json_array_size(lr), SY_HISTORY_SECONDS);
    assert_int_equal(json_integer_value(json_array_get(lr, SY_HISTORY_SECONDS - 1)), (SY_HISTORY_SECONDS + 19) % 7);
    assert_int_equal(json_integer_value(json_array_get(lr, 0)), 20 % 7);
    json_decref(j);

    /* A counter that went down (a restart of the numbers): that second counts from zero. */
    memset(&views[0].total[0], 0, sizeof(sy_side_t));
    add(&views[0].total[0], 3, 0, 1000);
    tick_cb(loop, &h->tick, 0);
    j = sy_history_json(h, 1);
    assert_int_equal(json_integer_value(json_array_get(side_of(j, 0, "legacy", "requests"), 0)), 3);
    json_decref(j);

    /* Another route set: the ring starts empty. */
    views[1].route = "api";
    nviews = 2;
    tick_cb(loop, &h->tick, 0);
    j = sy_history_json(h, SY_HISTORY_SECONDS);
    assert_int_equal(json_integer_value(json_object_get(j, "samples")), 0);
    assert_int_equal(json_array_size(json_object_get(j, "routes")), 2);
    json_decref(j);
    tick_cb(loop, &h->tick, 0);
    j = sy_history_json(h, SY_HISTORY_SECONDS);
    assert_int_equal(json_integer_value(json_object_get(j, "samples")), 1);
    assert_int_equal(json_integer_value(json_array_get(side_of(j, 1, "legacy", "requests"), 0)), 0);
    json_decref(j);
    sy_history_destroy(h);
    ev_loop_destroy(loop);
}

#define CFG                                                                                                            \
    "listen: [{address: 127.0.0.1:8080}]\n"                                                                            \
    "pools:\n"                                                                                                         \
    "  a: {endpoints: [127.0.0.1:1, 127.0.0.1:2]}\n"                                                                   \
    "  col:\n"                                                                                                         \
    "    colors: {blue: [127.0.0.1:3, 127.0.0.1:5], green: [127.0.0.1:4]}\n"                                    \
    "    health: {path: /h}\n"

static void test_colours(void **state)
{
    (void)state;
    sy_conf_t errs = {0};
    sy_config_t *cfg = sy_config_load_string(&errs, "t.yaml", CFG, NULL, 0);
    sy_conf_print_errors(&errs, stderr);
    sy_conf_close(&errs);
    assert_non_null(cfg);
    sy_colours_t *c = sy_colours_create(2);
    assert_non_null(c);
    const sy_pool_t *a = &cfg->pools[0], *col = &cfg->pools[1];
    sy_colours_record(c, 0, cfg, &col->endpoints[0], false, 1000); /* blue */
    sy_colours_record(c, 1, cfg, &col->endpoints[1], true, 3000);  /* blue, another worker */
    sy_colours_record(c, 1, cfg, &col->endpoints[2], false, 5000); /* green */
    sy_colours_record(c, 0, cfg, &a->endpoints[0], true, 1000);    /* not coloured: not counted */
    sy_colours_record(c, 2, cfg, &col->endpoints[2], true, 1000);  /* no such worker: not counted */
    sy_side_t *s = malloc(sizeof(*s));
    sy_colours_get(c, 1, SY_BLUE, s);
    assert_int_equal(s->requests, 2);
    assert_int_equal(s->errors, 1);
    assert_int_equal(s->total.total, 2);
    assert_int_equal(s->total.sum_us, 4000);
    sy_colours_get(c, 1, SY_GREEN, s);
    assert_int_equal(s->requests, 1);
    assert_int_equal(s->errors, 0);
    sy_colours_get(c, 0, SY_BLUE, s);
    assert_int_equal(s->requests, 0);
    free(s);
    sy_colours_destroy(c);
    sy_config_release(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_history_ring),
        cmocka_unit_test(test_colours),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
