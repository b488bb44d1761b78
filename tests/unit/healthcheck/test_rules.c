/* Histogram accuracy, the significance test, the rules, and the false-trip
 * check: 200 windows of equal sides at 1 % errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/hist.h"
#include "healthcheck/rules.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_hist_accuracy(void **state)
{
    (void)state;
    /* Every value from 100 us to 10 min is reported within 1 %. */
    for (uint64_t v = 100; v <= SY_HIST_MAX_US; v += v / 97 + 1) {
        unsigned i = sy_hist_index(v);
        assert_true(i < SY_HIST_BUCKETS);
        assert_true(sy_hist_low(i) <= v && v <= sy_hist_high(i));
        double mid = ((double)sy_hist_low(i) + (double)sy_hist_high(i)) / 2;
        assert_true(fabs(mid - (double)v) <= 0.01 * (double)v);
    }
    static sy_hist_t h;
    memset(&h, 0, sizeof(h));
    for (uint64_t v = 1; v <= 10000; v++)
        sy_hist_add(&h, v * 1000); /* 1 ms .. 10 s, uniform */
    assert_true(fabs(sy_hist_quantile_us(&h, 0.50) - 5000000) <= 50000);
    assert_true(fabs(sy_hist_quantile_us(&h, 0.99) - 9900000) <= 99000);
    /* Samples up to 1 s: 1000, less at most the bucket that straddles 1 s (1 %). */
    uint64_t le1 = sy_hist_count_le(&h, 1000000);
    assert_true(le1 >= 990 && le1 <= 1000);
    sy_hist_add(&h, 3600ULL * 1000000); /* an hour: clamped to 10 min */
    assert_int_equal(h.total, 10001);
}

static void test_pvalue(void **state)
{
    (void)state;
    /* 20 % vs 0.5 % on 200 each, delta 5 points: certain. */
    assert_true(sy_rules_delta_pvalue(40, 200, 1, 200, 0.05) < 0.001);
    /* 2 % vs 1 % on 100 each: not above 5 points. */
    assert_true(sy_rules_delta_pvalue(2, 100, 1, 100, 0.05) > 0.5);
    /* 8 % vs 1 % on 100 each: above 5 points, but not significantly. */
    assert_true(sy_rules_delta_pvalue(8, 100, 1, 100, 0.05) > 0.01);
    assert_true(sy_rules_delta_pvalue(0, 0, 0, 0, 0.05) == 1.0);
}

static sy_trip_conf_t conf(void)
{
    sy_trip_conf_t c;
    memset(&c, 0, sizeof(c));
    c.enabled = true;
    c.min_requests = 100;
    c.max_error_rate = 0.10;
    c.max_error_rate_delta = 0.05;
    c.confidence = 0.99;
    c.max_latency_ms = 10000;
    c.latency_q = 0.99;
    c.max_latency_ratio = 1.2;
    c.ratio_q = 0.99;
    c.warn_error_rate = 0.02;
    c.warn_latency_ms = 7000;
    c.warn_latency_q = 0.99;
    return c;
}

static sy_side_t *side(uint64_t n, uint64_t errors, uint64_t latency_us)
{
    sy_side_t *s = calloc(1, sizeof(*s));
    s->requests = n;
    s->errors = errors;
    for (uint64_t i = 0; i < n; i++) {
        sy_hist_add(&s->total, latency_us);
        sy_hist_add(&s->ttfb, latency_us / 2);
    }
    return s;
}

static void test_exceed_pvalue(void **state)
{
    (void)state;
    assert_int_equal(sy_rules_quantile_min(0.99), 1000);
    assert_int_equal(sy_rules_quantile_min(0.95), 200);
    assert_int_equal(sy_rules_quantile_min(0.5), 20);
    /* At the expected share the test says nothing; far above it, it is sure. */
    assert_true(sy_rules_exceed_pvalue(10, 1000, 0.99) > 0.4);
    assert_true(sy_rules_exceed_pvalue(40, 1000, 0.99) < 1e-6);
    assert_true(sy_rules_exceed_pvalue(0, 0, 0.99) == 1.0);
}

static void test_rules(void **state)
{
    (void)state;
    sy_trip_conf_t c = conf();
    sy_verdict_t v;
    sy_side_t *old = side(200, 1, 20000), *bad = side(200, 40, 20000), *few = side(50, 40, 20000);
    sy_rules_evaluate(&c, old, few, &v);
    assert_int_equal(v.level, SY_LEVEL_INSUFFICIENT);
    sy_rules_evaluate(&c, old, bad, &v);
    assert_int_equal(v.level, SY_LEVEL_TRIP);
    assert_string_equal(v.rule, "max_error_rate");
    assert_non_null(strstr(v.detail, "legacy"));
    /* 3 % on 200 is not evidence of more than 2 %; 7 % is (and of more than
     * 5 % it is not: a warning, not critical). */
    sy_side_t *warn = side(200, 6, 20000);
    sy_rules_evaluate(&c, old, warn, &v);
    assert_true(v.level < SY_LEVEL_WARN);
    assert_true(v.would_trip_unsignificant);
    warn->errors = 14;
    sy_rules_evaluate(&c, old, warn, &v);
    assert_int_equal(v.level, SY_LEVEL_WARN);
    assert_string_equal(v.rule, "warn_error_rate");
    c.critical_error_rate = 0.05;
    warn->errors = 19; /* 9.5 %: above 5 % significantly, not above 10 % */
    sy_rules_evaluate(&c, old, warn, &v);
    assert_int_equal(v.level, SY_LEVEL_CRITICAL);
    assert_string_equal(v.rule, "critical_error_rate");
    c.critical_error_rate = 0;
    /* A p99 ratio is not compared on 200 requests (its p99 is one or two
     * outliers); with 1,000 a side it is, and a real slowdown trips. */
    sy_side_t *slow = side(200, 0, 30000), *slightly = side(1200, 0, 22000);
    sy_rules_evaluate(&c, old, slow, &v);
    assert_int_equal(v.level, SY_LEVEL_INSUFFICIENT);
    assert_string_equal(v.rule, "max_latency_ratio");
    sy_side_t *old_many = side(1200, 0, 20000), *slow_many = side(1200, 0, 30000);
    /* ... once it is slower second after second, not in one burst */
    slow_many->slow_seconds = slow_many->split_seconds = 3;
    sy_rules_evaluate(&c, old_many, slow_many, &v);
    assert_int_equal(v.level, SY_LEVEL_OK);
    assert_true(v.would_trip_unsignificant);
    slow_many->slow_seconds = slow_many->split_seconds = 20;
    sy_rules_evaluate(&c, old_many, slow_many, &v);
    assert_int_equal(v.level, SY_LEVEL_TRIP);
    assert_string_equal(v.rule, "max_latency_ratio");
    sy_rules_evaluate(&c, old_many, slightly, &v);
    assert_int_equal(v.level, SY_LEVEL_OK);
    /* A p99 over the ratio made by a handful of outliers (15 of 1,015, where 10
     * are expected) is noise, not a regression. */
    sy_side_t *outliers = side(1000, 0, 21000);
    for (int i = 0; i < 15; i++) {
        sy_hist_add(&outliers->total, 40000);
        outliers->requests++;
    }
    sy_rules_evaluate(&c, old_many, outliers, &v);
    assert_int_equal(v.level, SY_LEVEL_OK);
    assert_true(v.would_trip_unsignificant);
    free(old_many);
    free(slow_many);
    free(outliers);
    /* A ratio needs legacy data too. */
    sy_side_t *none = side(0, 0, 0);
    sy_rules_evaluate(&c, none, slow, &v);
    assert_int_equal(v.level, SY_LEVEL_INSUFFICIENT);
    sy_side_t *glacial = side(200, 0, 11000000);
    sy_rules_evaluate(&c, none, glacial, &v);
    assert_int_equal(v.level, SY_LEVEL_TRIP);
    assert_string_equal(v.rule, "max_latency_ms");
    c.use_ttfb = true; /* ttfb is half: 5.5 s, under 7 s */
    sy_rules_evaluate(&c, none, glacial, &v);
    assert_int_equal(v.level, SY_LEVEL_INSUFFICIENT);
    c.enabled = false;
    sy_rules_evaluate(&c, old, bad, &v);
    assert_int_equal(v.level, SY_LEVEL_OK);
    assert_true(sy_rules_is_error(NULL, 503, SY_XERR_NONE));
    assert_false(sy_rules_is_error(NULL, 404, SY_XERR_NONE));
    c.error_statuses[0] = 429;
    c.nerror_statuses = 1;
    assert_true(sy_rules_is_error(&c, 429, SY_XERR_NONE));
    assert_true(sy_rules_is_error(&c, 200, SY_XERR_TIMEOUT));
    free(old), free(bad), free(few), free(warn), free(slow), free(slightly), free(none), free(glacial);
}

/* Binomial draw with a fixed-seed generator, so the test is repeatable. */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static void test_false_trips_over_200_windows(void **state)
{
    (void)state;
    sy_trip_conf_t c = conf();
    c.max_error_rate_delta = 0.01; /* a tight delta, where noise matters */
    c.max_latency_ratio = 0;
    int trips = 0, without_significance = 0;
    for (int w = 0; w < 200; w++) {
        sy_side_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
        a->requests = b->requests = 150;
        for (int i = 0; i < 150; i++) {
            a->errors += uniform() < 0.01;
            b->errors += uniform() < 0.01;
        }
        sy_verdict_t v;
        sy_rules_evaluate(&c, a, b, &v);
        trips += v.level == SY_LEVEL_TRIP;
        without_significance += v.level == SY_LEVEL_TRIP || v.would_trip_unsignificant;
        free(a);
        free(b);
    }
    printf("false-trip check: 200 windows of 150 requests per side at 1 %% errors, delta rule 1 point: "
           "%d trips with the significance test, %d without\n", trips, without_significance);
    assert_int_equal(trips, 0);
    assert_true(without_significance > 0); /* the test is what keeps these from tripping */
}

/* The evidence path: low traffic over a long time trips on what a 60 s
 * window never holds; equal sides do not; a mean latency rule works. */
static void test_evidence(void **state)
{
    (void)state;
    sy_trip_conf_t c = conf();
    c.sequential = true;
    sy_evidence_t *e = calloc(1, sizeof(*e));
    sy_side_t *l = side(19, 0, 20000), *n = side(1, 0, 20000);
    sy_verdict_t v;
    /* 1 new request a period, every fifth an error (20 %); legacy at 0. */
    int at = -1;
    for (int i = 0; i < 400 && at < 0; i++) {
        n->errors = i % 5 == 0;
        sy_evidence_add(e, &c, l, n);
        memset(&v, 0, sizeof(v));
        sy_rules_evaluate_evidence(&c, e, &v);
        if (v.level == SY_LEVEL_TRIP)
            at = i + 1;
    }
    printf("evidence: 20 %% vs 0 %% errors, 1 new request a period: trips after %d new requests (%s)\n", at,
           v.rule ? v.rule : "-");
    assert_true(at > 0 && at < 120);
    assert_string_equal(v.rule, "max_error_rate_delta");
    assert_non_null(strstr(v.detail, "since the change"));
    /* Equal sides, same latency: nothing, however long. */
    sy_evidence_reset(e);
    n->errors = 0;
    for (int i = 0; i < 3000; i++) {
        l->errors = n->errors = i % 100 == 0;
        sy_evidence_add(e, &c, l, n);
    }
    memset(&v, 0, sizeof(v));
    sy_rules_evaluate_evidence(&c, e, &v);
    assert_int_equal(v.level, SY_LEVEL_OK);
    /* A mean latency ratio: new 1.5x slower on the mean trips once legacy's
     * mean is known; 1.1x does not. */
    sy_trip_conf_t cm = conf();
    cm.sequential = true;
    cm.ratio_q = 0;
    sy_side_t *fast = side(10, 0, 20000), *slow = side(10, 0, 30000), *near = side(10, 0, 22000);
    for (int k = 0; k < 2; k++) {
        sy_evidence_reset(e);
        for (int i = 0; i < 100; i++) {
            sy_evidence_add(e, &cm, fast, k == 0 ? slow : near);
            sy_evidence_close_second(e);
        }
        memset(&v, 0, sizeof(v));
        sy_rules_evaluate_evidence(&cm, e, &v);
        assert_int_equal(v.level, k == 0 ? SY_LEVEL_TRIP : SY_LEVEL_OK);
        if (k == 0)
            assert_string_equal(v.rule, "max_latency_ratio");
    }
    free(e), free(l), free(n), free(fast), free(slow), free(near);
}

/* The trip section: every rule lands in its field; the critical tier is off by
 * default when a warning is set above it, kept when it was set. */
static void test_trip_section(void **state)
{
    (void)state;
    static const sy_conf_section_t *const sections[] = {&sy_trip_section};
    static const char text[] =
        "listen: [{address: 127.0.0.1:8080}]\n"
        "pools: {a: {endpoints: [127.0.0.1:1]}}\n"
        "routes:\n"
        "  - name: r\n"
        "    legacy: a\n"
        "    new: a\n"
        "    trip: {enabled: false, window: 5s, min_requests: 7, max_error_rate: 0.3, max_error_rate_delta: 0.2,\n"
        "           confidence: 0.9, max_latency_ms: {p95: 500}, max_latency_ratio: {p50: 3}, warn_error_rate: 0.04,\n"
        "           warn_mismatch_rate: 0.06, warn_latency_ms: {mean: 700}, critical_error_rate: 0.08,\n"
        "           critical_latency_ms: {p99: 900}, sequential: false, consecutive_errors: 9, scope: fleet,\n"
        "           latency: ttfb, error_statuses: [500, 503]}\n"
        "  - {name: s, legacy: a, trip: {warn_error_rate: 0.06, warn_latency_ms: {p99: 20000}}}\n"
        "  - {name: t, legacy: a, trip: {warn_error_rate: 0.06, critical_error_rate: 0.05}}\n";
    sy_conf_t errs;
    sy_config_t *cfg = sy_config_load_string(&errs, "t.yaml", text, sections, 1);
    sy_conf_print_errors(&errs, stderr);
    sy_conf_close(&errs);
    assert_non_null(cfg);
    const sy_trip_confs_t *tc = sy_trip_confs(cfg);
    assert_int_equal(tc->n, 3);
    const sy_trip_conf_t *r = &tc->routes[0];
    assert_string_equal(r->route, "r");
    assert_string_equal(r->legacy_pool, "a");
    assert_string_equal(r->new_pool, "a");
    assert_false(r->enabled);
    assert_int_equal(r->window_ms, 5000);
    assert_int_equal(r->min_requests, 7);
    assert_true(r->max_error_rate == 0.3 && r->max_error_rate_delta == 0.2 && r->confidence == 0.9);
    assert_true(r->latency_q == 0.95 && r->max_latency_ms == 500);
    assert_true(r->ratio_q == 0.5 && r->max_latency_ratio == 3);
    assert_true(r->warn_error_rate == 0.04 && r->warn_mismatch_rate == 0.06);
    assert_true(r->warn_latency_q == 0 && r->warn_latency_ms == 700);
    assert_true(r->critical_error_rate == 0.08);
    assert_true(r->critical_latency_q == 0.99 && r->critical_latency_ms == 900);
    assert_false(r->sequential);
    assert_int_equal(r->consecutive_errors, 9);
    assert_true(r->fleet_scope);
    assert_true(r->use_ttfb);
    assert_int_equal(r->nerror_statuses, 2);
    assert_int_equal(r->error_statuses[1], 503);
    const sy_trip_conf_t *s = &tc->routes[1];
    assert_string_equal(s->route, "s");
    assert_null(s->new_pool);
    assert_true(s->enabled && s->window_ms == 60000 && s->max_error_rate == 0.10);
    assert_true(s->critical_error_rate == 0 && s->critical_latency_ms == 0); /* defaults below the warnings: off */
    assert_true(tc->routes[2].critical_error_rate == 0.05);                  /* set: kept */
    sy_config_release(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_accuracy),
        cmocka_unit_test(test_evidence),
        cmocka_unit_test(test_pvalue),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_exceed_pvalue),
        cmocka_unit_test(test_false_trips_over_200_windows),
        cmocka_unit_test(test_trip_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
