/* The shadow comparison (healthcheck/diff.c): status, chosen headers, exact
 * and JSON bodies, ignored paths with [*], and noise subtraction; and the
 * per-route counting of healthcheck/shadowmon.c fed by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/diff.h"
#include "healthcheck/rules.h"
#include "healthcheck/shadowmon.h"
#include "proxy/shadow.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sy_header_t json_ct[] = {{"Content-Type", 12, "application/json", 16}, {"ETag", 4, "\"a\"", 3}};
static const sy_header_t json_ct_b[] = {{"content-type", 12, "application/json", 16}, {"etag", 4, "\"b\"", 3}};

static sy_shadow_side_t side(int status, const sy_header_t *h, size_t nh, const char *body)
{
    return (sy_shadow_side_t){.status = status, .headers = h, .nheaders = nh, .body = body,
                              .body_len = body ? strlen(body) : 0};
}

static bool has_path(const sy_diff_t *d, const char *p)
{
    for (size_t i = 0; i < d->npaths; i++)
        if (strcmp(d->paths[i], p) == 0)
            return true;
    return false;
}

static void test_path_match(void **state)
{
    (void)state;
    assert_true(sy_diff_path_matches("$.meta.time", "$.meta.time"));
    assert_true(sy_diff_path_matches("$.meta", "$.meta.time"));     /* a subtree */
    assert_false(sy_diff_path_matches("$.meta", "$.metadata"));     /* not a prefix of a name */
    assert_false(sy_diff_path_matches("$.meta.time", "$.meta"));
    assert_true(sy_diff_path_matches("$.items[*].id", "$.items[0].id"));
    assert_true(sy_diff_path_matches("$.items[*].id", "$.items[17].id"));
    assert_false(sy_diff_path_matches("$.items[*].id", "$.items[x].id"));
    assert_false(sy_diff_path_matches("$.items[*].id", "$.items[1].name"));
    assert_true(sy_diff_path_matches("$.items[2]", "$.items[2].id"));
    assert_false(sy_diff_path_matches("$.items[2]", "$.items[20]"));
}

static void test_status_headers_bytes(void **state)
{
    (void)state;
    char *hdrs[] = {"etag", "x-missing"};
    sy_diff_opts_t o = {.headers = hdrs, .nheaders = 2};
    sy_shadow_side_t a = side(200, json_ct, 2, "hello"), b = side(200, json_ct, 2, "hello");
    sy_diff_t d;
    sy_diff_compare(&o, &a, &b, &d);
    assert_int_equal(d.kinds, 0);
    assert_int_equal(d.npaths, 0);
    sy_shadow_side_t c = side(503, json_ct_b, 2, "hellO");
    sy_diff_compare(&o, &a, &c, &d);
    assert_int_equal(d.kinds, SY_DIFF_STATUS | SY_DIFF_HEADER | SY_DIFF_BODY); /* "hellO" is not JSON */
    assert_true(has_path(&d, "status"));
    assert_true(has_path(&d, "header:etag"));
    assert_true(has_path(&d, "body"));
    assert_false(has_path(&d, "header:x-missing")); /* absent on both sides: equal */
    /* Text bodies compare exactly */
    sy_shadow_side_t t1 = side(200, NULL, 0, "{\"a\": 1}"), t2 = side(200, NULL, 0, "{\"a\":1}");
    sy_diff_opts_t none = {0};
    sy_diff_compare(&none, &t1, &t2, &d);
    assert_int_equal(d.kinds, SY_DIFF_BODY);
}

static void test_json_ignore(void **state)
{
    (void)state;
    const char *l = "{\"id\": 7, \"meta\": {\"time\": 1.5, \"v\": 1}, \"items\": [{\"id\": 1, \"n\": \"a\"}, "
                    "{\"id\": 2, \"n\": \"b\"}], \"price\": 100}";
    const char *n = "{\"price\": 101, \"items\": [{\"id\": 9, \"n\": \"a\"}, {\"id\": 8, \"n\": \"B\"}], "
                    "\"meta\": {\"v\": 1, \"time\": 2.5}, \"id\": 8, \"extra\": true}";
    sy_shadow_side_t a = side(200, json_ct, 1, l), b = side(200, json_ct, 1, n);
    sy_diff_opts_t o = {0};
    sy_diff_t d;
    sy_diff_compare(&o, &a, &b, &d);
    assert_int_equal(d.kinds, SY_DIFF_JSON);
    assert_true(has_path(&d, "$.id"));
    assert_true(has_path(&d, "$.meta.time"));
    assert_true(has_path(&d, "$.price"));
    assert_true(has_path(&d, "$.items[0].id"));
    assert_true(has_path(&d, "$.items[1].n"));
    assert_true(has_path(&d, "$.extra"));
    assert_false(has_path(&d, "$.meta.v")); /* key order does not matter */
    char *ign[] = {"$.id", "$.meta.time", "$.items[*].id", "$.extra"};
    o.ignore = ign;
    o.nignore = 4;
    sy_diff_compare(&o, &a, &b, &d);
    assert_int_equal(d.npaths, 2);
    assert_true(has_path(&d, "$.price"));
    assert_true(has_path(&d, "$.items[1].n"));
    /* Array length and type changes */
    sy_shadow_side_t c = side(200, json_ct, 1, "{\"a\": [1, 2, 3], \"b\": \"1\"}");
    sy_shadow_side_t e = side(200, json_ct, 1, "{\"a\": [1, 2], \"b\": 1}");
    sy_diff_compare(&o, &c, &e, &d);
    assert_true(has_path(&d, "$.a[2]"));
    assert_true(has_path(&d, "$.b"));
    /* Not JSON on one side though the type says so: a byte difference */
    sy_shadow_side_t bad = side(200, json_ct, 1, "{not json");
    sy_diff_compare(&o, &c, &bad, &d);
    assert_int_equal(d.kinds, SY_DIFF_BODY);
}

static void test_noise(void **state)
{
    (void)state;
    const char *l1 = "{\"nonce\": 0.1, \"price\": 100}", *l2 = "{\"nonce\": 0.7, \"price\": 100}";
    const char *n1 = "{\"nonce\": 0.3, \"price\": 100}", *n2 = "{\"nonce\": 0.4, \"price\": 101}";
    sy_shadow_side_t a = side(200, json_ct, 1, l1), noise = side(200, json_ct, 1, l2);
    sy_shadow_side_t b1 = side(200, json_ct, 1, n1), b2 = side(200, json_ct, 1, n2);
    sy_diff_opts_t o = {0};
    sy_diff_t d, nd;
    sy_diff_compare(&o, &a, &noise, &nd);
    assert_true(has_path(&nd, "$.nonce"));
    sy_diff_compare(&o, &a, &b1, &d);
    assert_int_equal(sy_diff_subtract(&d, &nd), 1);
    assert_int_equal(d.kinds, 0); /* only noise */
    sy_diff_compare(&o, &a, &b2, &d);
    assert_int_equal(sy_diff_subtract(&d, &nd), 1);
    assert_int_equal(d.kinds, SY_DIFF_JSON);
    assert_int_equal(d.npaths, 1);
    assert_string_equal(d.paths[0], "$.price");
}

/* The shadow hook counts per route, subtracts noise, and keeps samples with
 * redacted headers. */
static void test_shadowmon(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    sy_shadowmon_t *m = sy_shadowmon_create(loop, 2);
    assert_non_null(m);
    sy_shadow_conf_t conf = {.enabled = true};
    sy_header_t h[] = {{"Content-Type", 12, "application/json", 16}, {"Set-Cookie", 10, "s=secret", 8}};
    sy_shadow_side_t l = side(200, h, 2, "{\"p\": 1, \"r\": 5}"), same = side(200, h, 2, "{\"p\": 1, \"r\": 6}");
    sy_shadow_side_t diff = side(200, h, 2, "{\"p\": 2, \"r\": 7}"), noise = side(200, h, 2, "{\"p\": 1, \"r\": 8}");
    for (int i = 0; i < 10; i++) {
        sy_shadow_result_t r = {.route_index = 1, .route = "nav", .outcome = SY_SHADOW_COMPARED, .conf = &conf,
                                .method = "GET", .target = "/x", .legacy = &l, .shadow = i < 3 ? &diff : &same,
                                .noise = &noise};
        sy_shadowmon_result(m, i % 2, NULL, &r);
    }
    sy_shadow_result_t skip = {.route_index = 1, .route = "nav", .outcome = SY_SHADOW_SKIP_INFLIGHT};
    sy_shadowmon_result(m, 0, NULL, &skip);
    sy_shadow_stats_t st;
    assert_true(sy_shadowmon_stats(m, 1, &st));
    assert_int_equal(st.outcomes[SY_SHADOW_COMPARED], 10);
    assert_int_equal(st.outcomes[SY_SHADOW_SKIP_INFLIGHT], 1);
    assert_int_equal(st.mismatches, 3);
    assert_int_equal(st.by_kind[3], 3);
    assert_int_equal(st.noise_removed, 7);
    assert_int_equal(st.latency[0].total, 10);
    json_t *j = sy_shadowmon_json(m, 1, "nav");
    assert_int_equal(json_array_size(json_object_get(j, "samples")), 3);
    json_t *s0 = json_array_get(json_object_get(j, "samples"), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(s0, "paths"), 0)), "$.p");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_object_get(s0, "legacy"), "headers"), "set-cookie")),
        "[redacted]");
    json_decref(j);
    sy_shadowmon_destroy(m);
    ev_loop_destroy(loop);
}

static void test_mismatch_rule(void **state)
{
    (void)state;
    sy_trip_conf_t c = {.enabled = true, .min_requests = 100};
    sy_verdict_t v;
    sy_rules_mismatch(&c, 90, 100, &v);
    assert_int_equal(v.level, SY_LEVEL_OK); /* off unless set */
    c.warn_mismatch_rate = 0.05;
    sy_rules_mismatch(&c, 50, 99, &v);
    assert_int_equal(v.level, SY_LEVEL_INSUFFICIENT);
    sy_rules_mismatch(&c, 5, 100, &v);
    assert_int_equal(v.level, SY_LEVEL_OK);
    sy_rules_mismatch(&c, 6, 100, &v);
    assert_int_equal(v.level, SY_LEVEL_WARN);
    assert_string_equal(v.rule, "warn_mismatch_rate");
    assert_non_null(strstr(v.detail, "6.00% (6 of 100) > 5.00%"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_match),
        cmocka_unit_test(test_status_headers_bytes),
        cmocka_unit_test(test_json_ignore),
        cmocka_unit_test(test_noise),
        cmocka_unit_test(test_shadowmon),
        cmocka_unit_test(test_mismatch_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
