/* The trip owner: whatever fires it (a comparator rule, N errors in a row on
 * new, an Alertmanager alert), one trip is one flip of the flag store, one
 * `trip` event in the record, one notification and one count; a route already
 * tripped gets none of them; a warning is one `warning` event and nothing
 * else. The store, the record, the webhook and the monitor are fakes with the
 * real signatures (this file includes the .c under test); the flags' JSON,
 * the config lookup and the histograms are the real ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../../healthcheck/trip.c"
#include "../../../handlers/alertmanager.c"

/* --- fakes ------------------------------------------------------------------ */

static sy_route_t routes_arr[2] = {{.name = "wallet"}, {.name = "nav\"igation"}};
static sy_routes_t routes = {routes_arr, 2};
static const sy_conf_section_t routes_sec = {.key = "routes"};
static sy_config_t cfg;
static sy_route_flags_t flags[2];
static sy_route_view_t views[2];

static struct {
    int flips, records, notifies, counts;
    char last_kind[32], last_reason[256], last_body[2048], counted[64];
    json_t *last_stats, *last_before, *last_after;
} seen;

struct sy_flagstore {
    int unused;
};
static struct sy_flagstore store;
struct sy_audit {
    int unused;
};
static struct sy_audit audit;
static void fake_event(void *ctx, const sy_event_t *ev);
static const sy_sink_t sink = {.event = fake_event, .ctx = &audit};
struct sy_notify {
    int unused;
};
static struct sy_notify notifier;
struct sy_monitor {
    int unused;
};
static struct sy_monitor monitor;

bool sy_flagstore_trip(sy_flagstore_t *s, const char *route, const char *reason)
{
    assert_ptr_equal(s, &store);
    const sy_route_t *r = sy_route_find(&routes, route);
    if (r == NULL)
        return false;
    sy_route_flags_t *f = &flags[r - routes_arr];
    if (f->state == SY_STATE_TRIPPED || f->state == SY_STATE_OFF)
        return false;
    seen.flips++;
    f->prev_percent_bp = f->percent_bp;
    f->percent_bp = 0;
    f->state = SY_STATE_TRIPPED;
    (void)reason;
    return true;
}

const sy_config_t *sy_flagstore_config(const sy_flagstore_t *s)
{
    (void)s;
    return &cfg;
}

const sy_route_flags_t *sy_flagstore_flags(const sy_flagstore_t *s)
{
    (void)s;
    return flags;
}

static void fake_event(void *ctx, const sy_event_t *ev)
{
    assert_ptr_equal(ctx, &audit);
    seen.records++;
    snprintf(seen.last_kind, sizeof(seen.last_kind), "%s", ev->kind);
    snprintf(seen.last_reason, sizeof(seen.last_reason), "%s", ev->reason);
    json_decref(seen.last_stats);
    json_decref(seen.last_before);
    json_decref(seen.last_after);
    seen.last_stats = json_incref(ev->stats);
    seen.last_before = json_incref(ev->before);
    seen.last_after = json_incref(ev->after);
}

void sy_notify_send(sy_notify_t *n, const char *body)
{
    assert_ptr_equal(n, &notifier);
    seen.notifies++;
    snprintf(seen.last_body, sizeof(seen.last_body), "%s", body);
}

size_t sy_monitor_nroutes(const sy_monitor_t *m)
{
    (void)m;
    return 2;
}

const sy_route_view_t *sy_monitor_route(const sy_monitor_t *m, size_t i)
{
    (void)m;
    return i < 2 ? &views[i] : NULL;
}

static bool legacy_down; /* what the fake monitor says of every route's legacy pool */

bool sy_monitor_legacy_down(const sy_monitor_t *m, const char *route)
{
    assert_ptr_equal(m, &monitor);
    (void)route;
    return legacy_down;
}

void sy_monitor_count_trip(sy_monitor_t *m, const char *route)
{
    assert_ptr_equal(m, &monitor);
    seen.counts++;
    snprintf(seen.counted, sizeof(seen.counted), "%s", route);
}

/* --- tests ------------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    memset(&seen, 0, sizeof(seen));
    legacy_down = false;
    cfg.next = 1;
    cfg.ext_sections[0] = &routes_sec;
    cfg.ext[0] = &routes;
    for (int i = 0; i < 2; i++) {
        flags[i] = (sy_route_flags_t){.state = SY_STATE_RAMPING, .percent_bp = 2500};
        memset(&views[i], 0, sizeof(views[i]));
        views[i].route = routes_arr[i].name;
    }
    views[0].window_s = 10;
    views[0].window[0].requests = 400;
    views[0].window[0].errors = 4;
    views[0].window[1].requests = 100;
    views[0].window[1].errors = 30;
    sy_hist_add(&views[0].window[1].total, 250000);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(seen.last_stats);
    json_decref(seen.last_before);
    json_decref(seen.last_after);
    return 0;
}

static sy_trip_t *make(void)
{
    sy_trip_t *t = sy_trip_create(&sink, &notifier);
    assert_non_null(t);
    sy_trip_bind(t, &store, &monitor);
    return t;
}

/* One of each, and the flags before and after in the event. */
static void assert_one_trip(const char *route, const char *rule)
{
    assert_int_equal(seen.flips, 1);
    assert_int_equal(seen.records, 1);
    assert_int_equal(seen.notifies, 1);
    assert_int_equal(seen.counts, 1);
    assert_string_equal(seen.last_kind, "trip");
    assert_string_equal(seen.counted, route);
    assert_string_equal(json_string_value(json_object_get(seen.last_before, "state")), "ramping");
    assert_string_equal(json_string_value(json_object_get(seen.last_after, "state")), "tripped");
    assert_int_equal(json_integer_value(json_object_get(seen.last_after, "prev_percent_bp")), 2500);
    json_error_t err;
    json_t *body = json_loads(seen.last_body, 0, &err);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "event")), "trip");
    assert_string_equal(json_string_value(json_object_get(body, "route")), route);
    assert_string_equal(json_string_value(json_object_get(body, "rule")), rule);
    assert_string_equal(json_string_value(json_object_get(body, "reason")), seen.last_reason);
    json_decref(body);
}

static void test_comparator_rule(void **state)
{
    (void)state;
    sy_trip_t *t = make();
    sy_trip_monitor_fire(t, "wallet", "max_error_rate", "new 30.0 % > 10.0 %");
    assert_one_trip("wallet", "max_error_rate");
    assert_string_equal(seen.last_reason, "max_error_rate: new 30.0 % > 10.0 %");
    /* The side-by-side numbers are built here, from the monitor's window. */
    json_t *nw = json_object_get(seen.last_stats, "new");
    assert_int_equal(json_integer_value(json_object_get(nw, "requests")), 100);
    assert_int_equal(json_integer_value(json_object_get(nw, "errors")), 30);
    assert_true(json_real_value(json_object_get(nw, "p99_ms")) > 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(seen.last_stats, "legacy"), "requests")), 400);
    assert_string_equal(json_string_value(json_object_get(seen.last_stats, "rule")), "max_error_rate");
    /* A second firing on the tripped route changes nothing. */
    sy_trip_monitor_fire(t, "wallet", "max_error_rate", "again");
    assert_int_equal(seen.flips + seen.records + seen.notifies + seen.counts, 4);
    sy_trip_destroy(t);
}

static void test_consecutive_errors(void **state)
{
    (void)state;
    sy_trip_t *t = make();
    /* The monitor's fast path (ev_async from the worker's mark) ends in the same hook. */
    sy_trip_monitor_fire(t, "nav\"igation", "consecutive_errors", "5 errors in a row on new");
    assert_one_trip("nav\"igation", "consecutive_errors"); /* the quote is escaped: the body parses */
    assert_int_equal(flags[0].state, SY_STATE_RAMPING);
    sy_trip_destroy(t);
}

static void test_alertmanager(void **state)
{
    (void)state;
    sy_trip_t *t = make();
    json_t *payload = json_pack("{s:s, s:[{s:s, s:{s:s, s:s}, s:{s:s}}, {s:s, s:{s:s}}]}", "version", "4", "alerts",
                                "status", "firing", "labels", "alertname", "HighErrorRate", "route", "wallet",
                                "annotations", "summary", "5xx", "status", "resolved", "labels", "route",
                                "nav\"igation");
    json_t *answer = NULL;
    assert_int_equal(sy_alertmanager_handle(t, &routes, "route", payload, &answer), 200);
    assert_one_trip("wallet", "alertmanager");
    assert_string_equal(seen.last_reason, "alert:HighErrorRate");
    assert_string_equal(json_string_value(json_object_get(json_object_get(seen.last_stats, "labels"), "alertname")),
                        "HighErrorRate");
    assert_int_equal(json_integer_value(json_object_get(answer, "resolved_ignored")), 1);
    assert_int_equal(json_array_size(json_object_get(answer, "tripped")), 1);
    json_decref(answer);
    /* Firing again: the route is tripped already, nothing more happens. */
    assert_int_equal(sy_alertmanager_handle(t, &routes, "route", payload, &answer), 200);
    assert_int_equal(seen.flips + seen.records + seen.notifies + seen.counts, 4);
    json_decref(answer);
    json_decref(payload);
    /* Not version 4: refused, nothing tripped. */
    payload = json_pack("{s:s, s:[]}", "version", "3", "alerts");
    assert_int_equal(sy_alertmanager_handle(t, &routes, "route", payload, &answer), 400);
    assert_int_equal(seen.flips, 1);
    json_decref(answer);
    json_decref(payload);
    sy_trip_destroy(t);
}

/* Warn and critical are recorded and notified with their severity; nothing
 * flips and no trip is counted. */
static void test_warning_records_only(void **state)
{
    (void)state;
    sy_trip_t *t = make();
    const char *kinds[2] = {"warning", "critical"}, *severities[2] = {"warn", "critical"};
    for (int k = 0; k < 2; k++) {
        if (k == 0)
            sy_trip_monitor_warn(t, "wallet", "warn_error_rate", "new 3.0 % > 2.0 %");
        else
            sy_trip_monitor_critical(t, "wallet", "critical_error_rate", "new 6.0 % > 5.0 %");
        assert_int_equal(seen.records, k + 1);
        assert_string_equal(seen.last_kind, kinds[k]);
        assert_int_equal(seen.notifies, k + 1);
        assert_int_equal(seen.flips + seen.counts, 0);
        assert_non_null(json_object_get(seen.last_stats, "new"));
        json_error_t err;
        json_t *body = json_loads(seen.last_body, 0, &err);
        assert_non_null(body);
        assert_string_equal(json_string_value(json_object_get(body, "severity")), severities[k]);
        assert_string_equal(json_string_value(json_object_get(body, "event")), kinds[k]);
        assert_non_null(json_object_get(json_object_get(body, "stats"), "legacy"));
        json_decref(body);
    }
    sy_trip_destroy(t);
}

static void test_unknown_route_and_no_webhook(void **state)
{
    (void)state;
    sy_trip_t *t = sy_trip_create(&sink, NULL);
    sy_trip_bind(t, &store, &monitor);
    assert_false(sy_trip_fire(t, "nope", "alertmanager", "alert:X", NULL));
    assert_int_equal(seen.flips + seen.records + seen.notifies + seen.counts, 0);
    assert_true(sy_trip_fire(t, "wallet", "max_error_rate", "r", NULL)); /* stats from the monitor */
    assert_int_equal(seen.records, 1);
    assert_int_equal(seen.notifies, 0);
    assert_int_equal(seen.counts, 1);
    assert_non_null(json_object_get(seen.last_stats, "legacy"));
    sy_trip_destroy(t);
}

/* Any trigger (here Alertmanager's, as the fleet's would be): with every
 * legacy endpoint down the rollback is refused, recorded as a critical alert
 * with rule rollback_refused, and nothing flips. */
static void test_rollback_into_dead_legacy_refused(void **state)
{
    (void)state;
    sy_trip_t *t = make();
    legacy_down = true;
    assert_false(sy_trip_fire(t, "wallet", "fleet:max_error_rate", "fleet:max_error_rate: new 30 %", NULL));
    assert_int_equal(seen.flips + seen.counts, 0);
    assert_int_equal(seen.records, 1);
    assert_string_equal(seen.last_kind, "critical");
    assert_non_null(strstr(seen.last_reason, "rollback_refused: rollback refused"));
    assert_non_null(strstr(seen.last_body, "\"rule\":\"rollback_refused\""));
    legacy_down = false; /* an endpoint is back: the next firing flips */
    assert_true(sy_trip_fire(t, "wallet", "fleet:max_error_rate", "fleet:max_error_rate: new 30 %", NULL));
    assert_int_equal(seen.flips, 1);
    sy_trip_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_comparator_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consecutive_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alertmanager, setup, teardown),
        cmocka_unit_test_setup_teardown(test_warning_records_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_route_and_no_webhook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_into_dead_legacy_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
