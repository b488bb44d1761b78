/* Trip rules: the comparator of legacy and new over a route's window. Pure
 * (unit-tested without sockets): it takes both sides' aggregated numbers and
 * says ok, insufficient, warn or trip, with the rule and the numbers.
 *
 * Three tiers (defaults from USERS.md): rollback (the trip: max_error_rate
 * 10 %, max_error_rate_delta 5 points, max_latency_ms p99 10 s,
 * max_latency_ratio of new over legacy, off by default, consecutive_errors 5 in
 * the data path), critical (critical_error_rate 5 %, critical_latency_ms p99
 * 10 s: notified, no flip) and warn (warn_error_rate 2 %, warn_latency_ms p99
 * 7 s). A latency statistic is p50, p95, p99 or mean.
 *
 * Every rule needs evidence, not only a crossed threshold, and is judged two
 * ways:
 *  - the window (fast path, high traffic): once new has min_requests in the
 *    window (ratio and delta rules: legacy too), the threshold must be crossed
 *    significantly at `confidence` (one-sided binomial test; latency as the
 *    count of samples over the limit against the share 1-q, ratio as new's
 *    exceedances over legacy's statistic times the ratio);
 *  - the evidence since the route's last change (sy_evidence_t, any traffic):
 *    always-valid sequential tests (healthcheck/seq.h) with alpha = 1 -
 *    confidence: absolute rules as a mixture SPRT of new's error (or
 *    exceedance) share against the threshold, delta and ratio rules as new
 *    worse than legacy on paired outcomes (errors) or on seconds (latencies
 *    over legacy's statistic times the ratio, sy_seq_unit_compare) and the since-change point estimate past the
 *    threshold. No minimum sample: the test itself says when there is enough. */
#ifndef SY_RULES_H
#define SY_RULES_H

#include "healthcheck/hist.h"
#include "healthcheck/seq.h"
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
    double latency_q, ratio_q, warn_latency_q; /* quantiles: 0.5, 0.95, 0.99; 0 the mean */
    double critical_error_rate, critical_latency_ms, critical_latency_q;
    bool sequential;                           /* the since-change evidence path (default on) */
    int64_t consecutive_errors;
    bool fleet_scope;           /* scope: fleet: every rule also judged on the fleet's sum (healthcheck/fleet.c) */
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
    /* Seconds of the window in which this side had more requests over the
     * latency-ratio limit than the other (on equal counts), and seconds in
     * which the two differed (set by the monitor; the ratio rule's evidence). */
    uint64_t slow_seconds, split_seconds;
} sy_side_t;

typedef enum sy_level {
    SY_LEVEL_OK = 0,
    SY_LEVEL_INSUFFICIENT,
    SY_LEVEL_WARN,
    SY_LEVEL_CRITICAL,
    SY_LEVEL_TRIP
} sy_level_t;

typedef struct sy_verdict {
    sy_level_t level;
    const char *rule;      /* static: max_error_rate, ... */
    char detail[320];      /* the numbers, for logs and the trip reason */
    bool would_trip_unsignificant; /* the delta rule's threshold was crossed but not significantly */
} sy_verdict_t;

void sy_rules_evaluate(const sy_trip_conf_t *c, const sy_side_t *legacy, const sy_side_t *fresh, sy_verdict_t *out);

/* The evidence of a route since its last change (a percent edit, a resume, a
 * reload): both sides' numbers and the paired outcomes of the two-sided
 * sequential tests. Plain data, owned by its holder (the monitor). */
typedef struct sy_evidence {
    sy_side_t side[2];       /* legacy, new since the change */
    sy_seq_pairs_t errors;   /* error outcomes, paired */
    uint64_t slow_seconds;   /* seconds new had more over slow_limit_us than legacy (sy_seq_unit_compare) */
    uint64_t split_seconds;  /* seconds the two differed */
    uint64_t unit_n[2], unit_x[2]; /* the current second: requests, over the limit */
    uint64_t rng;
    double slow_limit_us;    /* legacy's ratio statistic x max_latency_ratio; 0: not known yet */
    double since_s;          /* seconds since the change (set by the holder) */
} sy_evidence_t;

void sy_evidence_reset(sy_evidence_t *e);
/* One period's numbers of each side (deltas) join the evidence; the latency
 * pairs count against the limit known BEFORE this period (so it is
 * predictable and equal sides stay exchangeable). */
void sy_evidence_add(sy_evidence_t *e, const sy_trip_conf_t *c, const sy_side_t *legacy, const sy_side_t *fresh);
/* A second ended: its latency outcomes are compared (one unit of evidence). */
void sy_evidence_close_second(sy_evidence_t *e);
/* A second of both sides (l, n: that second's numbers) ended: which had more
 * requests over the ratio limit (legacy_window's statistic x max_latency_ratio),
 * on equal counts. Sets the second's slow_seconds and split_seconds (0 or 1)
 * and returns true, or returns false when the ratio rule is off, legacy's
 * window has too few samples, or the second was compared already. The unit of
 * the window's ratio evidence; the monitor and the fleet's sums both use it. */
bool sy_rules_second_compare(const sy_trip_conf_t *c, const sy_hist_t *legacy_window, sy_side_t *l, sy_side_t *n,
                             uint64_t *rng);
/* Whether the ratio rule's per-second sign test says new is slower, on
 * `worse` of `split` differing seconds. */
bool sy_rules_slower_seconds(uint64_t worse, uint64_t split, double confidence);
/* Raises out (an evaluated window verdict) with what the evidence shows; the
 * more serious finding wins. */
void sy_rules_evaluate_evidence(const sy_trip_conf_t *c, const sy_evidence_t *e, sy_verdict_t *out);
/* a += b (per counter and bucket). */
void sy_side_add(sy_side_t *a, const sy_side_t *b);
/* A side's latency statistic in us: the q-quantile, or the mean for q = 0. */
double sy_rules_stat_us(const sy_hist_t *h, double q);
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
