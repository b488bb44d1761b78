/* Rollout plans: the owner of a plan's advance. A route may carry a `plan:` of
 * steps (a percentage, or test users only, each with a minimum hold) and a
 * promotion gate (new's error rate under a maximum, latency not worse than
 * legacy's, at a confidence, on a minimum sample of new's requests since the
 * step began). The plan's position lives in Redis, so every instance and a
 * restart agree:
 *
 *   {prefix}plan:{route}        hash: state (running|paused|stopped|done), step,
 *                               step_started (epoch ms), waiting_for,
 *                               needed_requests, holder
 *   {prefix}plan:{route}:lease  string: the instance that advances it (SET NX
 *                               PX, renewed; flags/lease.h)
 *
 * Every tick each instance renews or tries to take the route's lease and reads
 * the hash; only the lease holder acts: it sets the route's percentage to the
 * step's (through the flag store, actor `plan`), stops the plan when the route
 * tripped, and advances once the hold has passed and the gate is met on the
 * evidence since the step's change (healthcheck/rules.h sy_evidence_t, from the
 * monitor: the holder judges the traffic it sees itself; for a route whose
 * trip rules say `scope: fleet`, the fleet's summed evidence, through
 * sy_plan_set_evidence). Each write of the
 * position is fenced by the lease and by the step it expects. Advances, waits
 * (when the reason changes), pauses, continues, stops and the end are events
 * of the record (plan_advance, plan_wait, plan_pause, plan_continue,
 * plan_stop, plan_done). Control thread only; nothing blocks. */
#ifndef SY_PLAN_H
#define SY_PLAN_H

#include "flags/sink.h"
#include "flags/store.h"
#include "healthcheck/monitor.h"
#include "proxy/conf.h"
#include "proxy/config.h"

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define SY_PLAN_MAX_STEPS 16

typedef struct sy_plan_step {
    int32_t percent_bp;    /* 0 with test_users_only */
    bool test_users_only;
    uint64_t hold_ms;
} sy_plan_step_t;

typedef struct sy_plan_conf {
    char *route;           /* NULL: the route has no plan */
    sy_plan_step_t steps[SY_PLAN_MAX_STEPS];
    size_t nsteps;
    double max_error_rate; /* gate: new's error rate under this (0.005) */
    bool latency_not_worse;/* gate: new's p50 and p95 within latency_tolerance of legacy's */
    double latency_tolerance;
    double confidence;     /* of the error-rate gate (0.95) */
    int64_t min_requests;  /* new's requests since the step began (200) */
    uint64_t lease_ms, tick_ms;
} sy_plan_conf_t;

typedef struct sy_plan_confs {
    sy_plan_conf_t *routes; /* same order as the routes list */
    size_t n;
} sy_plan_confs_t;

/* Registered under "routes": reads each route's `name` and `plan`. */
extern const sy_conf_section_t sy_plan_section;

typedef struct sy_plan sy_plan_t;

/* NULL without memory; a config with no plan, or no Redis, gives a plan owner
 * that does nothing (and says so in its JSON). Its commands ride the flag
 * store's Redis client (sy_flagstore_redis), so plans follow a Sentinel
 * failover as the flags do. store, monitor and sink (copied) must outlive it;
 * sy_plan_release it before the store is destroyed (it gives up its leases
 * there), destroy it after the store (whose client answers its commands in
 * flight) and before the record. */
sy_plan_t *sy_plan_create(struct ev_loop *loop, const sy_config_t *cfg, sy_flagstore_t *store, sy_monitor_t *monitor,
                          const sy_sink_t *sink);
void sy_plan_destroy(sy_plan_t *p);
/* At stop, before the store goes: no more ticks, and the leases this
 * instance holds are given up (the next holder need not wait a lease). */
void sy_plan_release(sy_plan_t *p);

/* The route's plan as the dashboard reads it, or JSON null for a route
 * without one: {"state", "step", "steps": [{"percent_bp", "test_users_only",
 * "hold_s"}], "step_started" (epoch s), "hold_left_s", "waiting_for" (text or
 * null), "needed_requests"}. A new reference. */
json_t *sy_plan_json(const sy_plan_t *p, const char *route);

/* Where the gate reads a route's evidence since the step's change: fn's
 * answer for the route, or, when fn is NULL or answers NULL, the monitor's
 * (the traffic this instance sees). main.c gives the fleet's
 * (sy_fleet_evidence): a route whose trip rules say `scope: fleet` is gated
 * on the fleet's summed evidence. Control thread. */
typedef const sy_evidence_t *(*sy_plan_evidence_fn)(void *ud, const char *route);
void sy_plan_set_evidence(sy_plan_t *p, sy_plan_evidence_fn fn, void *ud);

/* Pause or continue (restarting the step's clock) a route's plan, from any
 * instance. done(ud, err, status) is called once: err NULL on success, else a
 * static reason with 404 (no plan), 409 (route tripped: resume it first) or
 * 503 (Redis down). */
typedef void (*sy_plan_done_fn)(void *ud, const char *err, int status);
void sy_plan_pause(sy_plan_t *p, const char *route, bool pause, const char *actor, const char *reason,
                   sy_plan_done_fn done, void *ud);

#endif
