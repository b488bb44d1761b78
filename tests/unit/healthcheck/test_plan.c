/* The plan and baseline sections: a plan's steps, gate and defaults as
 * parsed; steps that go down, a step with both a percent and test users only,
 * and unknown keys refused with their place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/baseline.h"
#include "healthcheck/plan.h"
#include "proxy/config.h"
#include "routing/route.h"

#include <stdio.h>
#include <string.h>

static const sy_conf_section_t *const sections[] = {&sy_routes_section, &sy_plan_section, &sy_baseline_section};

static const char *head = "listen: [{address: 127.0.0.1:8080}]\n"
                          "pools:\n  a: {endpoints: [127.0.0.1:9001]}\n  b: {endpoints: [127.0.0.1:9002]}\n"
                          "routes:\n  - name: nav\n    legacy: a\n    new: b\n";

static sy_config_t *load(const char *route_tail, sy_conf_t *errs)
{
    char text[4096];
    snprintf(text, sizeof(text), "%s%s", head, route_tail);
    return sy_config_load_string(errs, "t.yaml", text, sections, 3);
}

static const void *ext_of(const sy_config_t *cfg, const sy_conf_section_t *s)
{
    for (size_t i = 0; i < cfg->next; i++)
        if (cfg->ext_sections[i] == s)
            return cfg->ext[i];
    return NULL;
}

static void test_plan_parsed(void **state)
{
    (void)state;
    sy_conf_t errs;
    sy_config_t *cfg = load("    plan:\n      steps:\n        - {test_users_only: true, hold: 24h}\n"
                            "        - {percent: 5, hold: 48h}\n        - {percent: 100}\n"
                            "      gate: {max_error_rate: 0.01, min_requests: 500}\n"
                            "    baseline: {latency: p95, window: 30s}\n",
                            &errs);
    if (cfg == NULL)
        sy_conf_print_errors(&errs, stderr);
    assert_non_null(cfg);
    const sy_plan_confs_t *pc = ext_of(cfg, &sy_plan_section);
    assert_non_null(pc);
    assert_int_equal(pc->n, 1);
    const sy_plan_conf_t *p = &pc->routes[0];
    assert_string_equal(p->route, "nav");
    assert_int_equal(p->nsteps, 3);
    assert_true(p->steps[0].test_users_only);
    assert_int_equal(p->steps[0].percent_bp, 0);
    assert_int_equal(p->steps[0].hold_ms, 24ULL * 3600 * 1000);
    assert_int_equal(p->steps[1].percent_bp, 500);
    assert_int_equal(p->steps[2].percent_bp, 10000);
    assert_true(p->max_error_rate == 0.01);
    assert_int_equal(p->min_requests, 500);
    assert_true(p->confidence == 0.95 && p->latency_not_worse); /* defaults */
    const sy_baseline_confs_t *bc = ext_of(cfg, &sy_baseline_section);
    assert_string_equal(bc->routes[0].route, "nav");
    assert_true(bc->routes[0].latency_q == 0.95 && bc->routes[0].max_latency_increase == 0.20);
    assert_int_equal(bc->routes[0].window_ms, 30000);
    sy_config_release(cfg);
    sy_conf_close(&errs);
}

static void expect_error(const char *tail, const char *needle)
{
    sy_conf_t errs;
    sy_config_t *cfg = load(tail, &errs);
    assert_null(cfg);
    bool found = false;
    for (size_t i = 0; i < errs.nerrors; i++)
        found = found || strstr(errs.errors[i], needle) != NULL;
    if (!found)
        sy_conf_print_errors(&errs, stderr);
    assert_true(found);
    sy_conf_close(&errs);
}

static void test_plan_refused(void **state)
{
    (void)state;
    expect_error("    plan:\n      steps: [{percent: 25}, {percent: 5}]\n", "never go down");
    expect_error("    plan:\n      steps: [{percent: 5, test_users_only: true}]\n", "either percent");
    expect_error("    plan:\n      steps: [{percent: 500}]\n", "expected a number");
    expect_error("    plan:\n      steps: []\n", "needs steps");
    expect_error("    plan:\n      steps: [{percent: 5}]\n      gate: {speed: 1}\n", "unknown gate key");
    expect_error("    baseline: {latency: p42}\n", "latency must be");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_parsed),
        cmocka_unit_test(test_plan_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
