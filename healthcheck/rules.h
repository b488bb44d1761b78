/* Trip rules: the comparator of legacy and new over a route's window. Pure
 * (unit-tested without sockets): it takes both sides' aggregated numbers and
 * says ok, insufficient, warn or trip, with the rule and the numbers.
 *
 * Rules (defaults from USERS.md): max_error_rate (10 %), max_error_rate_delta
 * (5 points, only when significant at `confidence`, one-sided), max_latency_ms
 * on a percentile (p99 10 s), max_latency_ratio of new over legacy (1.2 on p99),
 * consecutive_errors (5, evaluated in the data path), and warn_* twins (2 %,
 * 7 s) that only warn. Nothing trips before new has min_requests in the window;
 * ratio and delta rules also need min_requests on legacy ("insufficient"). */
#ifndef SY_RULES_H
#define SY_RULES_H

#include "healthcheck/hist.h"
#include "proxy/conf.h"
#include "proxy/config.h"
#include "proxy/hooks.h"

#include <stdbool.h>
#include <stdint.h>

#define SY_XERR_KINDS 6

typedef struct sy_trip_conf {
    char *route;
    char *legacy_pool, *new_pool; /* names, for the all-endpoints-down checks */
    bool enabled;
    uint64_t window_ms;
    int64_t min_requests;
    double max_error_rate, max_error_rate_delta, confidence;
    double max_latency_ms, max_latency_ratio, warn_error_rate, warn_latency_ms;
    double warn_mismatch_rate;    /* shadow traffic (healthcheck/shadowmon.h): 0 off */
    double latency_q, ratio_q, warn_latency_q; /* quantiles: 0.5, 0.95, 0.99 */
    int64_t consecutive_errors;
    bool fleet_scope;           /* scope: fleet: max_error_rate also judged on the fleet's sum (healthcheck/fleet.c) */
    bool use_ttfb;
    int error_statuses[16];
    size_t nerror_statuses;
} sy_trip_conf_t;

typedef struct sy_trip_confs {
    sy_trip_conf_t *routes; /* same order as the routes list */
    size_t n;
} sy_trip_confs_t;

/* Registered under the "routes" key beside routing's section: it reads each
 * route's `name` and `trip` only. */
extern const sy_conf_section_t sy_trip_section;
const sy_trip_confs_t *sy_trip_confs(const sy_config_t *cfg);

/* A side's numbers over the window. */
typedef struct sy_side {
    uint64_t requests, errors;
    uint64_t by_kind[SY_XERR_KINDS];
    sy_hist_t total, ttfb;
} sy_side_t;

typedef enum sy_level { SY_LEVEL_OK = 0, SY_LEVEL_INSUFFICIENT, SY_LEVEL_WARN, SY_LEVEL_TRIP } sy_level_t;

typedef struct sy_verdict {
    sy_level_t level;
    const char *rule;      /* static: max_error_rate, ... */
    char detail[320];      /* the numbers, for logs and the trip reason */
    bool would_trip_unsignificant; /* the delta rule's threshold was crossed but not significantly */
} sy_verdict_t;

void sy_rules_evaluate(const sy_trip_conf_t *c, const sy_side_t *legacy, const sy_side_t *fresh, sy_verdict_t *out);
/* One-sided p-value that new's error rate exceeds legacy's by more than delta. */
double sy_rules_delta_pvalue(uint64_t e_new, uint64_t n_new, uint64_t e_old, uint64_t n_old, double delta);
/* One-sided p-value that a side's q-quantile lies above a limit, given that x of
 * its n samples exceed the limit (under the null at most a share 1-q would). */
double sy_rules_exceed_pvalue(uint64_t x, uint64_t n, double q);
/* Samples a side needs before its q-quantile is compared at all: ten above it
 * (with fewer, a p99 is one or two outliers). */
uint64_t sy_rules_quantile_min(double q);
/* Whether an exchange counts as an error under c. */
bool sy_rules_is_error(const sy_trip_conf_t *c, int status, sy_xerr_t err);
const char *sy_level_name(sy_level_t l);
/* The warn_mismatch_rate rule over shadow traffic: `mismatches` of `compared`
 * pairs since start. SY_LEVEL_INSUFFICIENT under min_requests pairs, WARN
 * above the rate, else OK (also when the rule is off). Pure. */
void sy_rules_mismatch(const sy_trip_conf_t *c, uint64_t mismatches, uint64_t compared, sy_verdict_t *out);

#endif
