/* Cohort arithmetic: the bucket formula, the decision order, and the
 * distribution over 100,000 users. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "routing/cohort.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

static void test_bucket_formula(void **state)
{
    (void)state;
    /* bucket = XXH64("salt:key", seed 0) mod 10000, computed independently. */
    const char *s = "navigation:12345";
    assert_int_equal(sy_cohort_bucket("navigation", 10, "12345", 5), XXH64(s, strlen(s), 0) % 10000);
    /* A long salt and key take the streaming path and agree with the one-shot hash. */
    char salt[200], key[400], joined[601];
    memset(salt, 's', sizeof(salt));
    memset(key, 'k', sizeof(key));
    memcpy(joined, salt, 200);
    joined[200] = ':';
    memcpy(joined + 201, key, 400);
    assert_int_equal(sy_cohort_bucket(salt, 200, key, 400), XXH64(joined, 601, 0) % 10000);
}

static sy_cohort_input_t base(void)
{
    sy_cohort_input_t in = {.state = SY_STATE_RAMPING, .percent_bp = 2500, .has_new = true, .override = -1,
                            .has_key = true, .bucket = 100};
    return in;
}

static void test_decision_order(void **state)
{
    (void)state;
    sy_reason_t r;
    sy_cohort_input_t in = base();
    assert_int_equal(sy_cohort_decide(&in, &r), SY_NEW);
    assert_int_equal(r, SY_REASON_BUCKET);
    in.bucket = 2500;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    assert_int_equal(r, SY_REASON_BUCKET);
    in.test_user = true;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_NEW);
    assert_int_equal(r, SY_REASON_TEST_USER);
    in.override = SY_LEGACY; /* override beats test users */
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    assert_int_equal(r, SY_REASON_OVERRIDE);
    in.state = SY_STATE_TRIPPED; /* tripped beats everything */
    in.override = SY_NEW;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    assert_int_equal(r, SY_REASON_TRIPPED);
    in.keep_test_users_on_trip = true;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_NEW);
    assert_int_equal(r, SY_REASON_TEST_USER);
    in = base();
    in.state = SY_STATE_OFF;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    in = base();
    in.has_key = false;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    assert_int_equal(r, SY_REASON_DEFAULT);
    in.state = SY_STATE_PROMOTED;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_NEW);
    in = base();
    in.has_new = false;
    in.test_user = true;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    in = base();
    in.percent_bp = 0;
    in.bucket = 0;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_LEGACY);
    in.percent_bp = 10000;
    in.bucket = 9999;
    assert_int_equal(sy_cohort_decide(&in, &r), SY_NEW);
}

static void test_distribution_and_monotonic_ramp(void **state)
{
    (void)state;
    const int n = 100000;
    int at25 = 0, at75 = 0, at5 = 0;
    for (int i = 0; i < n; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "%d", 100000000 + i * 7);
        uint32_t b = sy_cohort_bucket("wallet", 6, key, (size_t)len);
        bool n5 = b < 500, n25 = b < 2500, n75 = b < 7500;
        at5 += n5;
        at25 += n25;
        at75 += n75;
        /* a user in new at 5 % stays in new at 25 % and 75 % */
        assert_true(!n5 || n25);
        assert_true(!n25 || n75);
    }
    assert_true(at25 > n * 0.245 && at25 < n * 0.255);
    assert_true(at75 > n * 0.745 && at75 < n * 0.755);
    assert_true(at5 > n * 0.045 && at5 < n * 0.055);
}

static void test_names(void **state)
{
    (void)state;
    sy_route_state_t s;
    assert_int_equal(sy_state_parse("tripped", &s), 0);
    assert_int_equal(s, SY_STATE_TRIPPED);
    assert_int_equal(sy_state_parse("maybe", &s), -1);
    assert_string_equal(sy_reason_name(SY_REASON_TEST_USER), "test_user");
    assert_string_equal(sy_variant_name(SY_NEW), "new");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_formula),
        cmocka_unit_test(test_decision_order),
        cmocka_unit_test(test_distribution_and_monotonic_ramp),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
