#include "healthcheck/trip.h"

#include "flags/flags.h"
#include "proxy/log.h"
#include "routing/route.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sy_trip {
    sy_sink_t sink; /* the record (flags/sink.h) */
    sy_notify_t *notify;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
};

sy_trip_t *sy_trip_create(const sy_sink_t *sink, sy_notify_t *notify)
{
    sy_trip_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    if (sink != NULL)
        t->sink = *sink;
    t->notify = notify;
    return t;
}

void sy_trip_bind(sy_trip_t *t, sy_flagstore_t *store, sy_monitor_t *monitor)
{
    t->store = store;
    t->monitor = monitor;
}

void sy_trip_destroy(sy_trip_t *t)
{
    free(t);
}

json_t *sy_trip_side_json(const sy_side_t *sd, double seconds)
{
    double rate = sd->requests ? (double)sd->errors / (double)sd->requests : 0;
    return json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:f}", "requests", (json_int_t)sd->requests, "errors",
                     (json_int_t)sd->errors, "error_rate", rate, "rps", seconds > 0 ? sd->requests / seconds : 0.0,
                     "p50_ms", sy_hist_quantile_us(&sd->total, 0.50) / 1000.0, "p95_ms",
                     sy_hist_quantile_us(&sd->total, 0.95) / 1000.0, "p99_ms",
                     sy_hist_quantile_us(&sd->total, 0.99) / 1000.0);
}

static const sy_route_view_t *view_of(const sy_trip_t *t, const char *route)
{
    for (size_t i = 0; t->monitor != NULL && i < sy_monitor_nroutes(t->monitor); i++) {
        const sy_route_view_t *v = sy_monitor_route(t->monitor, i);
        if (strcmp(v->route, route) == 0)
            return v;
    }
    return NULL;
}

/* Both sides' window numbers, side by side: the evidence of a rule. */
static json_t *side_by_side(const sy_trip_t *t, const char *route, const char *rule, const char *detail)
{
    const sy_route_view_t *v = view_of(t, route);
    if (v == NULL)
        return json_pack("{s:s, s:s}", "rule", rule, "detail", detail);
    return json_pack("{s:s, s:s, s:f, s:o, s:o}", "rule", rule, "detail", detail, "window_s", v->window_s, "legacy",
                     sy_trip_side_json(&v->window[0], v->window_s), "new",
                     sy_trip_side_json(&v->window[1], v->window_s));
}

/* The one place events reach the record. */
static void record(sy_trip_t *t, const sy_event_t *ev)
{
    sy_sink_event(&t->sink, ev);
}

/* The route's flags now, as the record writes them; NULL for an unknown route. */
static json_t *flags_json(const sy_trip_t *t, const char *route)
{
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(t->store), "routes");
    const sy_route_t *r = rs != NULL ? sy_route_find(rs, route) : NULL;
    if (r == NULL)
        return NULL;
    return sy_flags_to_json(&sy_flagstore_flags(t->store)[r - rs->routes]);
}

/* event: trip, warning or critical; severity: rollback, warn or critical. */
static void notify(sy_trip_t *t, const char *event, const char *severity, const char *route, const char *rule,
                   const char *reason, json_t *stats)
{
    if (t->notify == NULL)
        return;
    char now[32];
    sy_flags_now(now);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O?}", "event", event, "severity", severity, "route",
                          route, "rule", rule, "reason", reason, "actor", "switchyard", "at", now, "stats", stats);
    char *body = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (body != NULL)
        sy_notify_send(t->notify, body);
    else
        sy_error("trip: out of memory building the notification of route %s", route);
    free(body);
    json_decref(j);
}

static void alert(sy_trip_t *t, const char *kind, const char *severity, const char *route, const char *rule,
                  const char *detail);

bool sy_trip_fire(sy_trip_t *t, const char *route, const char *rule, const char *reason, json_t *stats)
{
    if (t->store == NULL)
        return false;
    /* Whatever fired it (the fleet's sum, Alertmanager, the monitor): a
     * rollback never sends users into a legacy pool with no healthy endpoint.
     * The monitor's own trips check this first and retry at every tick. */
    if (t->monitor != NULL && sy_monitor_legacy_down(t->monitor, route)) {
        char why[768];
        snprintf(why, sizeof(why), "rollback refused: the legacy pool has no healthy endpoint; %s", reason);
        sy_error("route %s: %s", route, why);
        alert(t, "critical", "critical", route, "rollback_refused", why);
        return false;
    }
    json_t *own = stats == NULL ? side_by_side(t, route, rule, reason) : NULL;
    json_t *before = flags_json(t, route);
    bool flipped = sy_flagstore_trip(t->store, route, reason);
    if (flipped) {
        json_t *after = flags_json(t, route);
        sy_event_t ev = {.kind = "trip", .route = route, .actor = "switchyard", .reason = reason,
                               .before = before, .after = after, .stats = stats ? stats : own};
        record(t, &ev);
        json_decref(after);
        notify(t, "trip", "rollback", route, rule, reason, stats ? stats : own);
        if (t->monitor != NULL)
            sy_monitor_count_trip(t->monitor, route);
    } else {
        sy_info("trip of route %s (%s) skipped: already tripped, off, or unknown", route, rule);
    }
    json_decref(before);
    json_decref(own);
    return flipped;
}

static void alert(sy_trip_t *t, const char *kind, const char *severity, const char *route, const char *rule,
                  const char *detail)
{
    json_t *stats = side_by_side(t, route, rule, detail);
    char reason[640];
    snprintf(reason, sizeof(reason), "%s: %s", rule, detail);
    sy_event_t ev = {.kind = kind, .route = route, .actor = "switchyard", .reason = reason, .stats = stats};
    record(t, &ev);
    notify(t, kind, severity, route, rule, reason, stats);
    json_decref(stats);
}

void sy_trip_warn(sy_trip_t *t, const char *route, const char *rule, const char *detail)
{
    alert(t, "warning", "warn", route, rule, detail);
}

void sy_trip_critical(sy_trip_t *t, const char *route, const char *rule, const char *detail)
{
    alert(t, "critical", "critical", route, rule, detail);
}

json_t *sy_trip_evidence_json(const sy_evidence_t *e)
{
    return json_pack("{s:f, s:o, s:o, s:{s:I, s:I, s:f}, s:{s:f, s:I, s:I}}", "since_s", e->since_s, "legacy",
                     sy_trip_side_json(&e->side[0], e->since_s), "new", sy_trip_side_json(&e->side[1], e->since_s),
                     "error_pairs", "discordant", (json_int_t)e->errors.discordant, "new_worse",
                     (json_int_t)e->errors.new_only, "evidence", exp(sy_seq_pairs_log_lr(&e->errors)), "latency_seconds",
                     "limit_ms", e->slow_limit_us / 1000, "split_seconds", (json_int_t)e->split_seconds, "slow_seconds",
                     (json_int_t)e->slow_seconds);
}

void sy_trip_monitor_fire(void *trip, const char *route, const char *rule, const char *detail)
{
    sy_trip_t *t = trip;
    char reason[512];
    snprintf(reason, sizeof(reason), "%s: %s", rule, detail);
    json_t *stats = side_by_side(t, route, rule, detail);
    (void)sy_trip_fire(t, route, rule, reason, stats);
    json_decref(stats);
}

void sy_trip_monitor_warn(void *trip, const char *route, const char *rule, const char *detail)
{
    sy_trip_warn(trip, route, rule, detail);
}

void sy_trip_monitor_drained(void *trip, const char *route, const char *rule, const char *detail)
{
    sy_trip_t *t = trip;
    (void)rule;
    sy_event_t ev = {.kind = "drained", .route = route, .actor = "switchyard", .reason = detail};
    record(t, &ev);
    sy_info("route %s: %s", route, detail);
}

void sy_trip_monitor_critical(void *trip, const char *route, const char *rule, const char *detail)
{
    sy_trip_critical(trip, route, rule, detail);
}
