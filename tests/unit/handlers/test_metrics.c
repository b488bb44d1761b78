/* The /metrics family table and its sample writers (the .c is included to reach
 * them), and the one mapping from sy_err_t to an HTTP status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "handlers/metrics.c"

#include <string.h>

static void test_family_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < SY_ARRAY_LEN(families); i++) {
        const family_t *f = &families[i];
        assert_int_equal(strncmp(f->name, "switchyard_", 11), 0);
        assert_true(strcmp(f->type, "counter") == 0 || strcmp(f->type, "gauge") == 0 ||
                    strcmp(f->type, "histogram") == 0);
        if (strcmp(f->type, "counter") == 0) /* the exposition format's convention */
            assert_string_equal(f->name + strlen(f->name) - 6, "_total");
        assert_true(strlen(f->help) > 0);
        assert_null(strpbrk(f->help, "\n\\"));
        assert_non_null(f->samples);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(f->name, families[j].name);
    }
}

static const family_t *family(const char *name)
{
    for (size_t i = 0; i < SY_ARRAY_LEN(families); i++)
        if (strcmp(families[i].name, name) == 0)
            return &families[i];
    fail_msg("no family %s", name);
    return NULL;
}

static void emit(scrape_t *x, const char *name)
{
    const family_t *f = family(name);
    f->samples(x, f);
}

/* The offset-driven writers read the field their row names. */
static void test_record_writers(void **state)
{
    (void)state;
    scrape_t sx = {0};
    sx.as.configured = true;
    sx.as.journal.bytes = 7;
    sx.as.journal.max_bytes = 8;
    sx.as.journal.next[0] = 11;
    sx.as.journal.acked[0] = 4;
    sx.as.journal.next[1] = 1;
    sx.as.journal.dropped[0] = 3;
    sx.as.journal.dropped[1] = 4;
    sx.as.inserted[0] = 5;
    sx.as.inserted[1] = 6;
    emit(&sx, "switchyard_journal_bytes");
    emit(&sx, "switchyard_journal_max_bytes");
    emit(&sx, "switchyard_journal_pending");
    emit(&sx, "switchyard_journal_dropped_total");
    emit(&sx, "switchyard_record_inserted_total");
    assert_false(sx.t.full);
    assert_string_equal(sx.t.p, "switchyard_journal_bytes 7\n"
                                "switchyard_journal_max_bytes 8\n"
                                "switchyard_journal_pending{stream=\"events\"} 6\n"
                                "switchyard_journal_pending{stream=\"windows\"} 0\n"
                                "switchyard_journal_dropped_total{stream=\"events\"} 3\n"
                                "switchyard_journal_dropped_total{stream=\"windows\"} 4\n"
                                "switchyard_record_inserted_total{stream=\"events\"} 5\n"
                                "switchyard_record_inserted_total{stream=\"windows\"} 6\n");
    free(sx.t.p);
}

static void test_route_writers(void **state)
{
    (void)state;
    sy_route_t routes[1] = {{.name = "nav"}};
    sy_routes_t rs = {.routes = routes, .n = 1};
    sy_route_flags_t flags[1] = {{.state = SY_STATE_TRIPPED, .percent_bp = 250}};
    scrape_t sx = {.rs = &rs, .flags = flags};
    emit(&sx, "switchyard_route_percent");
    emit(&sx, "switchyard_route_tripped");
    emit(&sx, "switchyard_route_state");
    char want[512];
    snprintf(want, sizeof(want),
             "switchyard_route_percent{route=\"nav\"} 2.50\n"
             "switchyard_route_tripped{route=\"nav\"} 1\n"
             "switchyard_route_state{route=\"nav\",state=\"%s\"} 0\n"
             "switchyard_route_state{route=\"nav\",state=\"%s\"} 0\n"
             "switchyard_route_state{route=\"nav\",state=\"%s\"} 1\n"
             "switchyard_route_state{route=\"nav\",state=\"%s\"} 0\n",
             sy_state_name(0), sy_state_name(1), sy_state_name(2), sy_state_name(3));
    assert_int_equal(SY_STATE_TRIPPED, 2);
    assert_string_equal(sx.t.p, want);
    free(sx.t.p);
}

static void test_http_status_of(void **state)
{
    (void)state;
    assert_int_equal(sy_http_status_of(SY_OK), 200);
    assert_int_equal(sy_http_status_of(SY_EINVAL), 400);
    assert_int_equal(sy_http_status_of(SY_ENOTFOUND), 404);
    assert_int_equal(sy_http_status_of(SY_ECONFLICT), 409);
    assert_int_equal(sy_http_status_of(SY_EUNAVAILABLE), 503);
    assert_int_equal(sy_http_status_of(SY_ENOMEM), 500);
    assert_int_equal(sy_http_status_of((sy_err_t)-99), 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_table),
        cmocka_unit_test(test_record_writers),
        cmocka_unit_test(test_route_writers),
        cmocka_unit_test(test_http_status_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
