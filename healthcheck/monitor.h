/* The monitor: how legacy and new behave, per route, on live traffic.
 *
 * Workers record every exchange through the observer hook into their own shard
 * (single writer, relaxed loads and stores, no locks). The control thread merges
 * the shards' deltas every 100 ms into each route's sliding window of 1 s
 * buckets, evaluates the trip rules, and calls `trip` when one trips. N errors
 * in a row on new are counted in the data path as soon as each response head
 * is known (the observer's `early`), shared by all workers: the Nth marks the
 * route before its response leaves (every worker's router reads the mark, see
 * sy_monitor_tripped) and wakes the control thread through an ev_async, so
 * that trip does not wait for the tick. */
#ifndef SY_MONITOR_H
#define SY_MONITOR_H

#include "healthcheck/rules.h"
#include "proxy/hooks.h"

#include <ev.h>

#define SY_MONITOR_MAX_ROUTES 64

typedef struct sy_monitor sy_monitor_t;

/* Called on the control thread: a rule tripped route `route` (or, for the
 * warn hook, a warn_* rule fired: once until the route is healthy again). */
typedef void (*sy_trip_fn)(void *ud, const char *route, const char *rule, const char *detail);
/* One period's numbers of one route x variant (0 legacy, 1 new), from at_ms
 * (UTC epoch ms, a multiple of the period) on. Only periods with traffic. */
typedef void (*sy_window_fn)(void *ud, int64_t at_ms, const char *route, int variant, const sy_side_t *side);

typedef struct sy_monitor_hooks {
    sy_trip_fn trip;
    sy_trip_fn warn;       /* may be NULL */
    sy_trip_fn critical;   /* may be NULL: a critical-tier rule, or a rollback refused (rule rollback_refused) */
    sy_window_fn window;   /* may be NULL */
    /* may be NULL: after a trip, nothing is in flight on new's pool any more
     * (detail says how long after the trip); once per trip */
    sy_trip_fn drained;
    uint64_t window_ms;    /* the period of `window` calls; 0: none */
    void *ud;              /* of trip and warn */
    void *window_ud;       /* of window */
    struct sy_endpoints *endpoints; /* the endpoints' state: pools all down, passive ejection */
} sy_monitor_hooks_t;

sy_monitor_t *sy_monitor_create(struct ev_loop *control, const sy_config_t *cfg, size_t nworkers,
                                const sy_monitor_hooks_t *hooks);
/* Hands out the current, partial period's numbers now (at stop). */
void sy_monitor_flush_windows(sy_monitor_t *m);
void sy_monitor_destroy(sy_monitor_t *m);
/* The observer hook to give the workers (valid until destroy). */
const sy_observer_t *sy_monitor_observer(sy_monitor_t *m);
/* Whether route `route` of snap's config was tripped by the consecutive-errors
 * rule on a worker and not resumed since (sy_monitor_reset_route). Any thread,
 * lock-free: the router asks it on every decision (a sy_trip_marks_t). */
bool sy_monitor_tripped(const void *m, const struct sy_snapshot *snap, int route);
/* New config: windows start again (routes are re-read by name). */
void sy_monitor_reload(sy_monitor_t *m, const sy_config_t *cfg);
/* The route was resumed (or otherwise left tripped): forget its window and
 * its streak, so old numbers cannot trip it again. */
void sy_monitor_reset_route(sy_monitor_t *m, const char *route);

/* The route's flags changed (percent, a plan's step): its sequential evidence
 * starts again (the window stays). Control thread. */
void sy_monitor_restart_evidence(sy_monitor_t *m, const char *route);

/* A second of a route ended (control thread, in the tick that starts the next
 * one): its numbers on each side as the window holds them (epoch second; empty
 * seconds too). The fleet publishes them (healthcheck/fleet.h). */
typedef void (*sy_second_fn)(void *ud, const char *route, int64_t second, const sy_side_t *legacy,
                             const sy_side_t *fresh);
/* From now on every closed second of every route goes to fn (one listener;
 * NULL: none). Control thread. */
void sy_monitor_on_second(sy_monitor_t *m, sy_second_fn fn, void *ud);

typedef struct sy_route_view {
    const char *route;
    sy_side_t window[2];     /* legacy, new: over the window */
    sy_side_t total[2];      /* since start */
    double window_s;         /* seconds of data in the window */
    sy_verdict_t verdict;
    uint64_t trips, warnings, criticals;
    const sy_evidence_t *evidence; /* since the route's last change; NULL before the first tick */
    uint64_t fallbacks;      /* requests bound for new served by legacy after a connect failure */
} sy_route_view_t;

/* One trip of `route`, whatever fired it (the trip owner calls this): the
 * `trips` counter of its view goes up. Control thread. */
void sy_monitor_count_trip(sy_monitor_t *m, const char *route);
/* Route i of the current config; NULL past the end. Control thread. */
const sy_route_view_t *sy_monitor_route(const sy_monitor_t *m, size_t i);
size_t sy_monitor_nroutes(const sy_monitor_t *m);
/* The per-colour numbers the observer counts beside the routes' (borrowed,
 * valid until destroy; NULL for a NULL monitor). */
struct sy_colours;
const struct sy_colours *sy_monitor_colours(const sy_monitor_t *m);
/* Whether every endpoint of route `route`'s legacy pool is down (a rollback
 * would send its users nowhere). False for an unknown route or a pool without
 * endpoints. Control thread. */
bool sy_monitor_legacy_down(const sy_monitor_t *m, const char *route);
/* How many evaluations crossed the delta threshold without being significant. */
uint64_t sy_monitor_unsignificant(const sy_monitor_t *m);

#endif
