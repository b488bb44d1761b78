/* Shadow results per route: the observer's `shadow` hook compares each pair
 * (healthcheck/diff.h, with noise subtraction) on the worker and counts it in
 * the worker's own shard (single writer, relaxed atomics, no locks); the
 * mismatching pairs go, redacted, through a bounded per-worker queue to the
 * control thread, which keeps the last SY_SHADOWMON_SAMPLES per route. The
 * control thread sums the shards when asked (admin, metrics, plan gates).
 *
 * Routes are counted by their index in the request's config: a reload that
 * reorders routes mixes their shadow numbers (they are not reset). */
#ifndef SY_SHADOWMON_H
#define SY_SHADOWMON_H

#include "healthcheck/diff.h"
#include "healthcheck/hist.h"
#include "proxy/config.h"
#include "proxy/hooks.h"

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define SY_SHADOWMON_MAX_ROUTES 64
#define SY_SHADOWMON_SAMPLES 32

typedef struct sy_shadowmon sy_shadowmon_t;

typedef struct sy_shadow_stats {
    uint64_t outcomes[SY_SHADOW_OUTCOMES]; /* by sy_shadow_outcome_t; [0] compared */
    uint64_t shadowed;                     /* sampled and sent to new (compared + new's failures + legacy's) */
    uint64_t mismatches;                   /* compared pairs with a real difference */
    uint64_t by_kind[SY_DIFF_KINDS];       /* pairs with a difference of that kind */
    uint64_t noise_removed;                /* pairs whose every difference legacy-vs-legacy also showed */
    uint64_t noise_failed;                 /* noise asked, legacy's second answer missing */
    uint64_t samples_dropped;              /* mismatching pairs not queued (the queue was full) */
    sy_hist_t latency[2];                  /* legacy, new: on the same compared requests */
} sy_shadow_stats_t;

/* Control thread. nworkers shards. Returns NULL when out of memory. */
sy_shadowmon_t *sy_shadowmon_create(struct ev_loop *control, size_t nworkers);
void sy_shadowmon_destroy(sy_shadowmon_t *m);
/* The observer's `shadow` hook (ctx = m): any worker, its own shard only. */
void sy_shadowmon_result(void *ctx, int worker, const struct sy_snapshot *snap, const sy_shadow_result_t *r);
/* Sums route `route`'s shards (route index in the current config) into out.
 * Control thread. Returns false when route is out of range. */
bool sy_shadowmon_stats(const sy_shadowmon_t *m, int route, sy_shadow_stats_t *out);
/* The mismatch rate of route `name` in cfg (mismatches / compared pairs) and
 * the number of compared pairs behind it: what a plan gate or a warning rule
 * reads. Control thread. Returns false when the route is unknown (then *rate
 * and *samples are 0). */
bool sy_shadowmon_mismatch_rate(const sy_shadowmon_t *m, const sy_config_t *cfg, const char *name, double *rate,
                                uint64_t *samples);
/* The warn_mismatch_rate rule (healthcheck/rules.h): once a second the
 * control thread checks each route of store's current config that has it, and
 * calls warn(ud, route, rule, detail) once until the rate is back under the
 * limit. store outlives m. */
struct sy_flagstore;
void sy_shadowmon_bind(sy_shadowmon_t *m, struct sy_flagstore *store,
                       void (*warn)(void *ud, const char *route, const char *rule, const char *detail), void *ud);
/* GET /routes/{name}/diffs: the numbers and the kept mismatching pairs (new
 * reference). Control thread. */
json_t *sy_shadowmon_json(sy_shadowmon_t *m, int route, const char *name);

#endif
