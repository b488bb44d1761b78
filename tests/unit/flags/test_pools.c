/* The swap's owner (flags/pools.c) without Redis: the checks and the health
 * gate answer with the right status, a swap is published once, recorded once
 * through the sink, and retires the old colour's endpoints. Also the refused
 * edits list (flags/refused.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "flags/pools.h"
#include "flags/refused.h"
#include "flags/store.h"
#include "healthcheck/endpoints.h"
#include "routing/route.h"

#include <ev.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const sy_conf_section_t *const sections[] = {&sy_routes_section};

#define CFG                                                                                                            \
    "listen: [{address: 127.0.0.1:8080}]\n"                                                                            \
    "pools:\n"                                                                                                         \
    "  plain: {endpoints: [127.0.0.1:1]}\n"                                                                            \
    "  col:\n"                                                                                                         \
    "    colors: {blue: [127.0.0.1:2], green: [127.0.0.1:3]}\n"                                                        \
    "    active: blue\n"                                                                                               \
    "    health: {path: /h, rise: 2}\n"                                                                                \
    "routes: [{name: r, legacy: plain}]\n"

typedef struct seen {
    int publishes;
    uint64_t serial;
    int active;       /* of pool col at the last publish */
    int events;
    char kind[32], actor[32];
    sy_err_t status;
    char err[320];
    int answers;
} seen_t;

static seen_t seen;

static void on_publish(void *ud, const sy_config_t *cfg, const sy_route_flags_t *flags, const sy_pool_flags_t *pools,
                       uint64_t serial)
{
    (void)ud;
    (void)flags;
    seen.publishes++;
    seen.serial = serial;
    seen.active = pools[sy_config_pool(cfg, "col") - cfg->pools].active;
}

static void on_event(void *ctx, const sy_event_t *ev)
{
    (void)ctx;
    seen.events++;
    snprintf(seen.kind, sizeof(seen.kind), "%s", ev->kind);
    snprintf(seen.actor, sizeof(seen.actor), "%s", ev->actor ? ev->actor : "");
}

static void on_done(void *ud, sy_err_t status, const char *err, const sy_route_flags_t *res)
{
    (void)ud;
    (void)res;
    seen.status = status;
    snprintf(seen.err, sizeof(seen.err), "%s", err ? err : "");
    seen.answers++;
}

typedef struct fixture {
    struct ev_loop *loop;
    sy_config_t *cfg;
    sy_flagstore_t *store;
    sy_endpoints_t *eps; /* the endpoints' state the swap reads and writes */
    sy_pool_t *col;
} fixture_t;

static fixture_t *fx;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    sy_conf_t errs = {0};
    f->cfg = sy_config_load_string(&errs, "t.yaml", CFG, sections, 1);
    sy_conf_close(&errs);
    if (f->cfg == NULL)
        return -1;
    f->loop = ev_loop_new(EVFLAG_AUTO);
    memset(&seen, 0, sizeof(seen));
    f->store = sy_flagstore_create(f->loop, f->cfg, on_publish, NULL);
    sy_sink_t sink = {.event = on_event};
    sy_flagstore_set_sink(f->store, &sink);
    f->eps = sy_endpoints_create(f->cfg, 1);
    assert_non_null(f->eps);
    sy_pools_bind_endpoints(f->store, sy_endpoints_pool_ops(f->eps));
    fx = f;
    f->col = (sy_pool_t *)sy_config_pool(f->cfg, "col");
    *state = f;
    return f->store != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    sy_flagstore_destroy(f->store);
    sy_endpoints_destroy(f->eps);
    sy_config_release(f->cfg);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

static void swap(fixture_t *f, const char *pool, const char *to)
{
    seen.answers = 0;
    sy_pools_swap(f->store, pool, to, "tester", "because", on_done, NULL);
    assert_int_equal(seen.answers, 1);
}

static void set_health(sy_pool_t *p, int color, int ok)
{
    for (size_t e = p->color_first[color]; e < p->color_first[color] + p->color_count[color]; e++)
        sy_endpoints_probed(fx->eps, fx->cfg, &p->endpoints[e], ok);
}

static int64_t retired(const sy_pool_t *p, size_t e)
{
    return sy_epstate_retired_ms(sy_endpoints_table(fx->eps, fx->cfg), p->endpoints[e].index);
}

static void test_refusals(void **state)
{
    fixture_t *f = *state;
    int publishes = seen.publishes;
    swap(f, "nope", "green");
    assert_int_equal(seen.status, SY_ENOTFOUND);
    swap(f, "plain", "green");
    assert_int_equal(seen.status, SY_EINVAL);
    swap(f, "col", "purple");
    assert_int_equal(seen.status, SY_EINVAL);
    set_health(f->col, 1, 1); /* one good probe of two */
    swap(f, "col", "green");
    assert_int_equal(seen.status, SY_ECONFLICT);
    assert_non_null(strstr(seen.err, "has not passed 2 health probes"));
    assert_int_equal(seen.publishes, publishes);
    assert_int_equal(seen.events, 0);
}

static void test_swap_and_retire(void **state)
{
    fixture_t *f = *state;
    sy_pool_t *p = f->col;
    uint64_t serial = seen.serial;
    assert_int_equal(seen.active, SY_BLUE);
    /* At start the inactive colour is retired already. */
    assert_true(retired(p, p->color_first[1]) != 0);
    assert_int_equal(retired(p, p->color_first[0]), 0);
    set_health(p, 1, 2);
    swap(f, "col", "green");
    assert_int_equal(seen.status, SY_OK);
    assert_int_equal(seen.active, SY_GREEN);
    assert_int_equal(seen.serial, serial + 1);
    assert_int_equal(seen.events, 1);
    assert_string_equal(seen.kind, "swap");
    assert_string_equal(seen.actor, "tester");
    assert_int_equal(retired(p, p->color_first[1]), 0);
    assert_true(retired(p, p->color_first[0]) != 0);
    /* Back (to NULL: the other colour), once blue is healthy. */
    swap(f, "col", NULL);
    assert_int_equal(seen.status, SY_ECONFLICT);
    set_health(p, 0, 2);
    swap(f, "col", NULL);
    assert_int_equal(seen.status, SY_OK);
    assert_int_equal(seen.active, SY_BLUE);
    assert_int_equal(seen.serial, serial + 2);
    assert_int_equal(seen.events, 2);
}

static void test_refused_list(void **state)
{
    (void)state;
    sy_refused_t l = {0};
    sy_refused_begin(&l);
    assert_false(sy_refused_seen(&l, "state", "bogus"));
    sy_refused_add(&l, "state", "bogus", "bad state", "state=off", 2);
    sy_refused_add(&l, "percent_bp", "x", "not a number", "percent_bp=0", 2);
    sy_refused_add(&l, "salt", "y", "over the cap", "salt=r", 2);
    sy_refused_end(&l);
    json_t *j = sy_refused_json(&l);
    assert_int_equal(json_array_size(j), 2);
    json_decref(j);
    /* The next read sees only one of them again: the other is forgotten. */
    sy_refused_begin(&l);
    assert_true(sy_refused_seen(&l, "state", "bogus"));
    sy_refused_end(&l);
    j = sy_refused_json(&l);
    assert_int_equal(json_array_size(j), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "field")), "state");
    json_decref(j);
    sy_refused_clear(&l);
    assert_int_equal(l._n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_and_retire, setup, teardown),
        cmocka_unit_test(test_refused_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
