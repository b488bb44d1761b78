/* The fleet's sums without Redis: a closed second through its JSON and back
 * (exact while it fits, folded and still near when it does not, malformed
 * seconds refused), the per-instance "taken up to" bookkeeping (each
 * instance's second once, gone instances forgotten, the lowest `upto` of the
 * rest), and a route's sum (staged seconds closed in order into the window
 * and the evidence, late and pre-reset seconds kept out, the window sliding,
 * the monitor's rules judging the sum). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/fleetsum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static sy_side_t *side_new(void)
{
    sy_side_t *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    return s;
}

/* n requests of `us` microseconds each (ttfb a tenth), e of them errors of kind 2. */
static void fill(sy_side_t *s, uint64_t n, uint64_t e, uint64_t us)
{
    for (uint64_t i = 0; i < n; i++) {
        sy_hist_add(&s->total, us);
        sy_hist_add(&s->ttfb, us / 10);
    }
    s->requests += n;
    s->errors += e;
    s->by_kind[2] += e;
}

static json_t *roundtrip(json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    assert_non_null(text);
    json_t *back = json_loads(text, 0, NULL);
    free(text);
    json_decref(j);
    assert_non_null(back);
    return back;
}

static void test_second_roundtrip(void **state)
{
    (void)state;
    sy_side_t *l = side_new(), *n = side_new(), *l2 = side_new(), *n2 = side_new();
    fill(l, 40, 1, 2000);
    fill(l, 10, 0, 35000);
    fill(n, 7, 3, 150000);
    assert_null(sy_fleet_second_json(5, l2, n2)); /* nothing to publish */
    json_t *j = roundtrip(sy_fleet_second_json(1796000000, l, n));
    int64_t sec = 0;
    assert_int_equal(sy_fleet_second_parse(j, &sec, l2, n2), 0);
    assert_int_equal(sec, 1796000000);
    const sy_side_t *a[2] = {l, n}, *b[2] = {l2, n2};
    for (int v = 0; v < 2; v++) {
        assert_int_equal(b[v]->requests, a[v]->requests);
        assert_int_equal(b[v]->errors, a[v]->errors);
        assert_memory_equal(b[v]->by_kind, a[v]->by_kind, sizeof(a[v]->by_kind));
        assert_memory_equal(&b[v]->total, &a[v]->total, sizeof(sy_hist_t)); /* few buckets: exact */
        assert_memory_equal(&b[v]->ttfb, &a[v]->ttfb, sizeof(sy_hist_t));
    }
    json_decref(j);
    /* a side without requests is absent, and parses as empty */
    memset(l, 0, sizeof(*l));
    j = roundtrip(sy_fleet_second_json(7, l, n));
    assert_null(json_object_get(j, "l"));
    assert_int_equal(sy_fleet_second_parse(j, &sec, l2, n2), 0);
    assert_int_equal(l2->requests, 0);
    assert_int_equal(n2->requests, 7);
    json_decref(j);
    free(l), free(n), free(l2), free(n2);
}

static void test_second_folded(void **state)
{
    (void)state;
    sy_side_t *l = side_new(), *n = side_new(), *l2 = side_new(), *n2 = side_new();
    /* 2000 samples from 1 ms to 1 s: hundreds of buckets */
    for (uint64_t i = 0; i < 2000; i++)
        sy_hist_add(&n->total, 1000 + i * 500);
    n->requests = 2000;
    n->ttfb = n->total;
    json_t *j = roundtrip(sy_fleet_second_json(9, l, n));
    size_t pairs = (json_array_size(json_object_get(json_object_get(j, "n"), "t")) - 1) / 2;
    assert_true(pairs <= SY_FLEET_HIST_PAIRS);
    int64_t sec;
    assert_int_equal(sy_fleet_second_parse(j, &sec, l2, n2), 0);
    assert_int_equal(n2->total.total, 2000);
    assert_int_equal(n2->total.sum_us, n->total.sum_us);
    for (double q = 0.1; q < 1; q += 0.2) {
        double want = sy_hist_quantile_us(&n->total, q), got = sy_hist_quantile_us(&n2->total, q);
        assert_true(fabs(got - want) <= 0.07 * want); /* folded three times (1/16): coarser, still near */
    }
    json_decref(j);
    free(l), free(n), free(l2), free(n2);
}

static void test_second_malformed(void **state)
{
    (void)state;
    sy_side_t *l = side_new(), *n = side_new();
    int64_t sec;
    const char *bad[] = {
        "{\"n\": {\"r\": 1, \"e\": 0, \"t\": [0, 1, 1], \"f\": [0, 1, 1]}}",               /* no second */
        "{\"s\": 3, \"n\": {\"r\": 1, \"e\": 2, \"t\": [0, 1, 1], \"f\": [0, 1, 1]}}",     /* errors > requests */
        "{\"s\": 3, \"n\": {\"r\": 1, \"e\": 0, \"t\": [0, 1600, 1], \"f\": [0, 1, 1]}}",  /* no such bucket */
        "{\"s\": 3, \"n\": {\"r\": 1, \"e\": 0, \"t\": [0, 1], \"f\": [0, 1, 1]}}",        /* half a pair */
        "{\"s\": 3, \"n\": {\"r\": 1, \"e\": 0, \"t\": [0, 1, -1], \"f\": [0, 1, 1]}}",    /* negative */
        "{\"s\": 3, \"n\": {\"r\": 1, \"e\": 1, \"k\": [1], \"t\": [0, 1, 1], \"f\": [0, 1, 1]}}", /* kinds */
        "{\"s\": 3, \"n\": [1, 2]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        assert_non_null(j);
        assert_int_equal(sy_fleet_second_parse(j, &sec, l, n), -1);
        json_decref(j);
    }
    free(l), free(n);
}

static void test_cursors(void **state)
{
    (void)state;
    sy_fleet_cursors_t *c = calloc(1, sizeof(*c));
    sy_fleet_cursors_begin(c);
    sy_fleet_cursor_t *a = sy_fleet_cursor_get(c, "host/1"), *b = sy_fleet_cursor_get(c, "host/2");
    a->upto = 100;
    b->upto = 98;
    assert_true(sy_fleet_cursor_take(a, 0, 99));
    assert_false(sy_fleet_cursor_take(a, 0, 99));  /* the same second again: once */
    assert_false(sy_fleet_cursor_take(a, 0, 97));  /* older */
    assert_true(sy_fleet_cursor_take(a, 1, 97));   /* another route: its own cursor */
    assert_true(sy_fleet_cursor_take(b, 0, 99));   /* another instance: its own */
    assert_true(sy_fleet_cursor_take(a, 0, 100));
    assert_false(sy_fleet_cursor_take(a, SY_FLEET_MAX_ROUTES, 200));
    assert_int_equal(sy_fleet_cursors_end(c), 98); /* the lowest upto */
    /* next read-back: host/2 is gone, host/1 keeps its cursors */
    sy_fleet_cursors_begin(c);
    a = sy_fleet_cursor_get(c, "host/1");
    assert_int_equal(a->taken[0], 100);
    assert_int_equal(sy_fleet_cursors_end(c), 100);
    assert_int_equal(c->n, 1);
    sy_fleet_cursors_begin(c);
    b = sy_fleet_cursor_get(c, "host/2"); /* back: anew */
    assert_int_equal(b->taken[0], 0);
    sy_fleet_cursors_forget_routes(c);
    assert_true(sy_fleet_cursor_take(&c->inst[0], 0, 100));
    /* a full table: NULL, not an eviction of a live instance */
    char id[32];
    for (int i = 0; i < SY_FLEET_MAX_INSTANCES + 4; i++) {
        snprintf(id, sizeof(id), "x/%d", i);
        sy_fleet_cursor_t *x = sy_fleet_cursor_get(c, id);
        assert_true(x != NULL || c->n == SY_FLEET_MAX_INSTANCES);
    }
    free(c);
}

static sy_trip_conf_t conf(void)
{
    sy_trip_conf_t c;
    memset(&c, 0, sizeof(c));
    c.route = "nav";
    c.enabled = true;
    c.window_ms = 3000;
    c.min_requests = 50;
    c.max_error_rate = 0.20;
    c.confidence = 0.99;
    c.max_latency_ms = 100;
    c.latency_q = 0.5;
    c.consecutive_errors = 0;
    c.sequential = true;
    return c;
}

static void test_sum(void **state)
{
    (void)state;
    sy_trip_conf_t c = conf();
    sy_fleet_sum_t *s = sy_fleet_sum_create(&c, 1000, 1000.0);
    assert_non_null(s);
    sy_side_t *l = side_new(), *n = side_new(), *bad = side_new(), *empty = side_new();
    fill(l, 10, 0, 2000);
    fill(n, 10, 0, 2000);
    fill(bad, 10, 10, 2000);
    /* before the start, nothing counts (and it is not "late") */
    assert_false(sy_fleet_sum_add(s, 1000, l, n));
    assert_int_equal(s->late, 0);
    /* three instances' second 1001: one with errors */
    assert_true(sy_fleet_sum_add(s, 1001, l, n));
    assert_true(sy_fleet_sum_add(s, 1001, l, n));
    assert_true(sy_fleet_sum_add(s, 1001, l, bad));
    sy_verdict_t vd;
    sy_fleet_sum_evaluate(s, &vd);
    assert_int_equal(vd.level, SY_LEVEL_INSUFFICIENT); /* still open: not in the window */
    sy_fleet_sum_close(s, 1001, 1002.0);
    assert_int_equal(s->window[1].requests, 30);
    assert_int_equal(s->window[1].errors, 10);
    assert_int_equal(s->window[0].requests, 30);
    assert_int_equal(s->ev.side[1].requests, 30); /* the evidence took it too */
    sy_fleet_sum_evaluate(s, &vd);
    assert_int_equal(vd.level, SY_LEVEL_INSUFFICIENT); /* 30 of 50 */
    /* a late contribution to 1001 (its instance stalled) is counted as late, and counts */
    assert_true(sy_fleet_sum_add(s, 1001, l, bad));
    assert_int_equal(s->late, 1);
    assert_int_equal(s->window[1].requests, 40);
    assert_int_equal(s->ev.side[1].requests, 40);
    assert_int_equal(s->ev.unit_n[1], 0); /* not in the next second's unit */
    /* 1002 brings the sum to 70 new, 30 errors (43 % > 20 %): the window rule trips */
    assert_true(sy_fleet_sum_add(s, 1002, l, n));
    assert_true(sy_fleet_sum_add(s, 1002, l, n));
    assert_true(sy_fleet_sum_add(s, 1002, l, bad));
    sy_fleet_sum_close(s, 1002, 1003.0);
    sy_fleet_sum_evaluate(s, &vd);
    assert_int_equal(vd.level, SY_LEVEL_TRIP);
    assert_string_equal(vd.rule, "max_error_rate");
    assert_true(sy_fleet_sum_window_s(s) == 2.0);
    /* a window of 3 s: 1001 leaves when 1004 closes */
    sy_fleet_sum_close(s, 1004, 1005.0);
    assert_int_equal(s->window[1].requests, 30);
    assert_int_equal(s->ev.side[1].requests, 70); /* the evidence keeps all since the change */
    assert_false(sy_fleet_sum_add(s, 1000, l, n)); /* before the start: never */
    /* a second far ahead closes the oldest open ones first */
    assert_true(sy_fleet_sum_add(s, 1005, empty, n));
    assert_true(sy_fleet_sum_add(s, 1004 + SY_FLEET_STAGE + 1, empty, n));
    assert_int_equal(s->closed, 1005);
    /* the percentage changed: evidence anew from now, the window stays */
    sy_fleet_sum_restart_evidence(s, 1013, 1013.5);
    sy_fleet_sum_close(s, 1013, 1014.0);
    assert_int_equal(s->ev.side[1].requests, 0); /* 1013 is the change's own second: only after it */
    assert_int_equal(s->window[1].requests, 10); /* 1013 (1005 left the 3 s window) */
    assert_true(sy_fleet_sum_add(s, 1014, empty, n));
    sy_fleet_sum_close(s, 1014, 1015.0);
    assert_int_equal(s->ev.side[1].requests, 10);
    assert_true(s->ev.since_s == 1.5);
    /* a reset (resume): window and evidence empty, earlier seconds refused */
    sy_fleet_sum_reset(s, 1020, 1020.0);
    assert_int_equal(s->window[1].requests, 0);
    assert_int_equal(s->ev.side[1].requests, 0);
    assert_false(sy_fleet_sum_add(s, 1019, l, bad));
    assert_true(sy_fleet_sum_add(s, 1021, l, n));
    /* a long silence: nothing is closed one by one for hours */
    sy_fleet_sum_close(s, 1021 + 3600, 1021 + 3600.0);
    assert_int_equal(s->closed, 1021 + 3600);
    assert_int_equal(s->window[1].requests, 0);
    assert_int_equal(s->ev.side[1].requests, 10);
    sy_fleet_sum_destroy(s);
    free(l), free(n), free(bad), free(empty);
}

/* The latency rule on the sum: one instance's slow new is the majority of
 * the fleet's requests, though under min_requests alone. */
static void test_sum_latency(void **state)
{
    (void)state;
    sy_trip_conf_t c = conf();
    c.sequential = false;
    sy_fleet_sum_t *s = sy_fleet_sum_create(&c, 10, 10.0);
    sy_side_t *empty = side_new(), *slow = side_new(), *fast = side_new();
    fill(slow, 45, 0, 150000);
    fill(fast, 8, 0, 2000);
    sy_verdict_t vd;
    assert_true(sy_fleet_sum_add(s, 11, empty, slow));
    sy_fleet_sum_close(s, 11, 12.0);
    sy_fleet_sum_evaluate(s, &vd);
    assert_int_equal(vd.level, SY_LEVEL_INSUFFICIENT); /* 45 of 50 */
    assert_true(sy_fleet_sum_add(s, 12, empty, fast));
    assert_true(sy_fleet_sum_add(s, 12, empty, fast));
    sy_fleet_sum_close(s, 12, 13.0);
    sy_fleet_sum_evaluate(s, &vd);
    assert_int_equal(vd.level, SY_LEVEL_TRIP);
    assert_string_equal(vd.rule, "max_latency_ms");
    sy_fleet_sum_destroy(s);
    free(empty), free(slow), free(fast);
}

/* The ratio rule's per-second units on the sum: each second, new (summed
 * over two instances) has more requests over legacy's p50 x 2 than legacy;
 * the window's slow seconds count them and the rule trips. */
static void test_sum_ratio(void **state)
{
    (void)state;
    sy_trip_conf_t c = conf();
    c.max_error_rate = 0;
    c.max_latency_ms = 0;
    c.max_latency_ratio = 2;
    c.ratio_q = 0.5;
    c.min_requests = 20;
    c.window_ms = 60000;
    c.sequential = false;
    sy_fleet_sum_t *s = sy_fleet_sum_create(&c, 100, 100.0);
    sy_side_t *l = side_new(), *n = side_new();
    fill(l, 20, 0, 10000);  /* legacy: 10 ms */
    fill(n, 10, 0, 50000);  /* new, per instance: 50 ms */
    sy_verdict_t vd;
    int64_t sec = 101;
    for (; sec < 130; sec++) {
        assert_true(sy_fleet_sum_add(s, sec, l, n));
        assert_true(sy_fleet_sum_add(s, sec, l, n));
        sy_fleet_sum_close(s, sec, (double)sec + 1);
        sy_fleet_sum_evaluate(s, &vd);
        if (vd.level == SY_LEVEL_TRIP)
            break;
    }
    assert_int_equal(vd.level, SY_LEVEL_TRIP);
    assert_string_equal(vd.rule, "max_latency_ratio");
    /* every second was new's (legacy's statistic is known from the first: 40 samples) */
    assert_int_equal(s->window[1].slow_seconds, s->window[1].split_seconds);
    assert_int_equal(s->window[1].slow_seconds, sec - 100);
    assert_int_equal(s->window[0].slow_seconds, 0);
    assert_true(sec - 100 >= 5); /* a sign test: not on a second or two */
    sy_fleet_sum_destroy(s);
    free(l), free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_second_roundtrip), cmocka_unit_test(test_second_folded),
        cmocka_unit_test(test_second_malformed), cmocka_unit_test(test_cursors),
        cmocka_unit_test(test_sum),              cmocka_unit_test(test_sum_latency),
        cmocka_unit_test(test_sum_ratio),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
