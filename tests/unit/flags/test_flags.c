/* Flag validation (per field, last good value kept) and the operations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "flags/flags.h"

#include <stdlib.h>
#include <string.h>

static int refusals;
static char last_field[64], last_value[64];

static void on_refuse(void *ud, const char *route, const char *field, const char *value, const char *why)
{
    (void)ud;
    (void)route;
    assert_non_null(why);
    refusals++;
    snprintf(last_field, sizeof(last_field), "%s", field);
    snprintf(last_value, sizeof(last_value), "%s", value);
}

static sy_route_flags_t base(void)
{
    static char *users[] = {"42"};
    sy_route_flags_t f = {.state = SY_STATE_RAMPING, .percent_bp = 2500, .salt = "nav", .test_users = users,
                          .ntest_users = 1, .version = 3, .source = "redis"};
    return f;
}

static void test_valid_hash(void **state)
{
    (void)state;
    sy_route_flags_t cur = base(), out;
    const char *kv[] = {"state", "promoted", "percent_bp", "10000", "version", "7", "actor", "bob", "unknown", "x"};
    refusals = 0;
    assert_int_equal(sy_flags_apply_hash("nav", &cur, kv, 10, &out, on_refuse, NULL), 0);
    assert_int_equal(out.state, SY_STATE_PROMOTED);
    assert_int_equal(out.percent_bp, 10000);
    assert_int_equal(out.version, 7);
    assert_string_equal(out.actor, "bob");
    assert_true(sy_flags_routing_differs(&cur, &out));
    sy_route_flags_clear(&out);
}

static void test_each_invalid_value_keeps_the_last_good_one(void **state)
{
    (void)state;
    const char *bad[][2] = {{"percent_bp", "10001"}, {"percent_bp", "-5"}, {"percent_bp", "150%"},
                            {"percent_bp", "abc"},   {"percent_bp", ""},   {"percent_bp", "2.5"},
                            {"state", "maybe"},      {"prev_percent_bp", "99999"},
                            {"salt", "new-salt"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sy_route_flags_t cur = base(), out;
        const char *kv[] = {bad[i][0], bad[i][1]};
        refusals = 0;
        assert_int_equal(sy_flags_apply_hash("nav", &cur, kv, 2, &out, on_refuse, NULL), 1);
        assert_int_equal(refusals, 1);
        assert_string_equal(last_field, bad[i][0]);
        assert_string_equal(last_value, bad[i][1]);
        assert_false(sy_flags_routing_differs(&cur, &out));
        sy_route_flags_clear(&out);
    }
}

/* A missing or invalid version is no refusal: it is repaired as 0 (the next
 * write rewrites it), so it can never block writes. */
static void test_bad_or_missing_version_is_repaired_as_zero(void **state)
{
    (void)state;
    const char *bad[] = {"x", "abc", "", "-1", "1.5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sy_route_flags_t cur = base(), out;
        cur.version = 7;
        const char *kv[] = {"version", bad[i], "percent_bp", "3000"};
        refusals = 0;
        assert_int_equal(sy_flags_apply_hash("nav", &cur, kv, 4, &out, on_refuse, NULL), 0);
        assert_int_equal(refusals, 0);
        assert_int_equal(out.version, 0);
        assert_int_equal(out.percent_bp, 3000);
        assert_false(sy_flags_version_ok(kv, 4));
        sy_route_flags_clear(&out);
    }
    sy_route_flags_t cur = base(), out;
    cur.version = 7;
    const char *kv[] = {"percent_bp", "3000"};
    assert_int_equal(sy_flags_apply_hash("nav", &cur, kv, 2, &out, on_refuse, NULL), 0);
    assert_int_equal(out.version, 0);
    assert_false(sy_flags_version_ok(kv, 2));
    const char *ok[] = {"version", "12"};
    assert_true(sy_flags_version_ok(ok, 2));
    sy_route_flags_clear(&out);
}

static void test_other_fields_of_a_bad_edit_still_apply(void **state)
{
    (void)state;
    sy_route_flags_t cur = base(), out;
    const char *kv[] = {"percent_bp", "abc", "state", "off"};
    assert_int_equal(sy_flags_apply_hash("nav", &cur, kv, 4, &out, on_refuse, NULL), 1);
    assert_int_equal(out.percent_bp, 2500);
    assert_int_equal(out.state, SY_STATE_OFF);
    sy_route_flags_clear(&out);
}

static void test_salt_change(void **state)
{
    (void)state;
    sy_route_flags_t cur = base(), out;
    const char *forced[] = {"salt", "nav2", "force", "1"};
    assert_int_equal(sy_flags_apply_hash("nav", &cur, forced, 4, &out, on_refuse, NULL), 0);
    assert_string_equal(out.salt, "nav2");
    sy_route_flags_clear(&out);
    cur.percent_bp = 0; /* nobody is being moved: no force needed */
    const char *plain[] = {"salt", "nav3"};
    assert_int_equal(sy_flags_apply_hash("nav", &cur, plain, 2, &out, on_refuse, NULL), 0);
    assert_string_equal(out.salt, "nav3");
    sy_route_flags_clear(&out);
}

static void test_members(void **state)
{
    (void)state;
    sy_route_flags_t cur = base(), out;
    assert_int_equal(sy_route_flags_copy(&out, &cur), 0);
    char longkey[300];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    const char *m[] = {"zed", "alice", longkey, "bad\x01"};
    assert_int_equal(sy_flags_apply_members("nav", &out, m, 4, on_refuse, NULL), 2);
    assert_int_equal(out.ntest_users, 2);
    assert_string_equal(out.test_users[0], "alice"); /* sorted for lookups */
    sy_route_flags_clear(&out);
}

static void test_ops(void **state)
{
    (void)state;
    sy_route_flags_t cur = base(), a, b, c;
    const char *err;
    sy_flag_request_t rb = {.op = SY_OP_ROLLBACK, .actor = "me", .reason = "errors", .now = "t"};
    assert_int_equal(sy_flags_op(&cur, &rb, &a, &err), 0);
    assert_int_equal(a.state, SY_STATE_TRIPPED);
    assert_int_equal(a.percent_bp, 0);
    assert_int_equal(a.prev_percent_bp, 2500);
    assert_int_equal(a.version, 4);
    assert_string_equal(a.reason, "errors");
    /* A second rollback keeps the percentage to come back to. */
    assert_int_equal(sy_flags_op(&a, &rb, &b, &err), 0);
    assert_int_equal(b.prev_percent_bp, 2500);
    sy_route_flags_clear(&b);
    sy_flag_request_t set = {.op = SY_OP_PERCENT, .percent_bp = 100};
    assert_int_equal(sy_flags_op(&a, &set, &b, &err), SY_EDECLINED);
    sy_flag_request_t resume = {.op = SY_OP_RESUME};
    assert_int_equal(sy_flags_op(&a, &resume, &b, &err), 0);
    assert_int_equal(b.state, SY_STATE_RAMPING);
    assert_int_equal(b.percent_bp, 2500);
    assert_int_equal(sy_flags_op(&b, &resume, &c, &err), SY_EDECLINED);
    sy_flag_request_t promote = {.op = SY_OP_PROMOTE};
    assert_int_equal(sy_flags_op(&b, &promote, &c, &err), 0);
    assert_int_equal(c.state, SY_STATE_PROMOTED);
    assert_int_equal(c.percent_bp, 10000);
    sy_route_flags_clear(&c);
    set.percent_bp = 10001;
    assert_int_equal(sy_flags_op(&b, &set, &c, &err), SY_EINVAL);
    const char *add[] = {"x", "42"}, *rem[] = {"42"};
    sy_flag_request_t tu = {.op = SY_OP_TEST_USERS, .add = add, .nadd = 2, .remove = rem, .nremove = 1};
    assert_int_equal(sy_flags_op(&b, &tu, &c, &err), 0);
    assert_int_equal(c.ntest_users, 1);
    assert_string_equal(c.test_users[0], "x");
    sy_route_flags_clear(&a);
    sy_route_flags_clear(&b);
    sy_route_flags_clear(&c);
}

static void test_parse_bp(void **state)
{
    (void)state;
    int32_t v;
    assert_int_equal(sy_flags_parse_bp("0", &v), 0);
    assert_int_equal(sy_flags_parse_bp("10000", &v), 0);
    assert_int_equal(v, 10000);
    assert_int_equal(sy_flags_parse_bp("010", &v), 0);
    assert_int_equal(v, 10);
    assert_int_not_equal(sy_flags_parse_bp("100000", &v), 0);
    assert_int_not_equal(sy_flags_parse_bp(" 5", &v), 0);
    assert_int_not_equal(sy_flags_parse_bp(NULL, &v), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_hash),
        cmocka_unit_test(test_each_invalid_value_keeps_the_last_good_one),
        cmocka_unit_test(test_bad_or_missing_version_is_repaired_as_zero),
        cmocka_unit_test(test_other_fields_of_a_bad_edit_still_apply),
        cmocka_unit_test(test_salt_change),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_parse_bp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
