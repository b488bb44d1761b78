#include "healthcheck/rules.h"

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the trip section (under each route) ----------------------------------- */

static void confs_destroy(void *p)
{
    sy_trip_confs_t *t = p;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->routes[i].route);
        free(t->routes[i].legacy_pool);
        free(t->routes[i].new_pool);
    }
    free(t->routes);
    free(t);
}

static void defaults(sy_trip_conf_t *c)
{
    c->enabled = true;
    c->window_ms = 60000;
    c->min_requests = 100;
    c->max_error_rate = 0.10;
    c->max_error_rate_delta = 0.05;
    c->confidence = 0.99;
    c->max_latency_ms = 10000;
    c->latency_q = 0.99;
    c->max_latency_ratio = 0; /* off unless asked: a ratio needs both sides busy */
    c->ratio_q = 0.99;
    c->consecutive_errors = 5;
    c->warn_error_rate = 0.02;
    c->warn_latency_ms = 7000;
    c->warn_latency_q = 0.99;
    c->critical_error_rate = 0.05;
    c->critical_latency_ms = 10000;
    c->critical_latency_q = 0.99;
    c->sequential = true;
}

static int parse_fraction(sy_conf_t *c, yaml_node_t *v, double min, double max, double *out)
{
    const char *s = sy_conf_scalar(v);
    char *end = NULL;
    double d = s ? strtod(s, &end) : 0;
    if (s == NULL || end == s || *end != '\0' || d < min || d > max)
        return sy_conf_error(c, v, "expected a number %g..%g", min, max);
    *out = d;
    return 0;
}

/* {p99: 10000}: a percentile (or the mean) and a number. */
static int parse_pct_map(sy_conf_t *c, yaml_node_t *v, double min, double max, double *q, double *val)
{
    yaml_node_t *k, *x;
    size_t it = 0;
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping like {p99: 10000}") != 0 ||
        !sy_conf_map_next(c, v, &it, &k, &x))
        return SY_EINVAL;
    const char *p = sy_conf_scalar(k);
    if (p && strcmp(p, "p50") == 0)
        *q = 0.50;
    else if (p && strcmp(p, "p95") == 0)
        *q = 0.95;
    else if (p && strcmp(p, "p99") == 0)
        *q = 0.99;
    else if (p && strcmp(p, "mean") == 0)
        *q = 0;
    else
        return sy_conf_error(c, k, "percentile must be p50, p95, p99 or mean");
    return parse_fraction(c, x, min, max, val);
}

/* The trip rules that are one number in a range ... */
static const struct {
    const char *key;
    size_t off;
    double min, max;
} trip_numbers[] = {
    {"max_error_rate", offsetof(sy_trip_conf_t, max_error_rate), 0, 1},
    {"max_error_rate_delta", offsetof(sy_trip_conf_t, max_error_rate_delta), 0, 1},
    {"confidence", offsetof(sy_trip_conf_t, confidence), 0.5, 0.999999},
    {"warn_error_rate", offsetof(sy_trip_conf_t, warn_error_rate), 0, 1},
    {"warn_mismatch_rate", offsetof(sy_trip_conf_t, warn_mismatch_rate), 0, 1},
    {"critical_error_rate", offsetof(sy_trip_conf_t, critical_error_rate), 0, 1},
};

/* ... and those that are a percentile and a number ({p99: 10000}). */
static const struct {
    const char *key;
    size_t q, off;
    double min, max;
} trip_percentiles[] = {
    {"max_latency_ms", offsetof(sy_trip_conf_t, latency_q), offsetof(sy_trip_conf_t, max_latency_ms), 1, 600000},
    {"max_latency_ratio", offsetof(sy_trip_conf_t, ratio_q), offsetof(sy_trip_conf_t, max_latency_ratio), 1, 1000},
    {"warn_latency_ms", offsetof(sy_trip_conf_t, warn_latency_q), offsetof(sy_trip_conf_t, warn_latency_ms), 1,
     600000},
    {"critical_latency_ms", offsetof(sy_trip_conf_t, critical_latency_q), offsetof(sy_trip_conf_t, critical_latency_ms),
     1, 600000},
};

static int parse_scope(sy_conf_t *c, yaml_node_t *x, sy_trip_conf_t *t)
{
    const char *sv = sy_conf_scalar(x);
    if (sv == NULL || (strcmp(sv, "fleet") != 0 && strcmp(sv, "local") != 0))
        return sy_conf_error(c, x, "scope must be local or fleet");
    t->fleet_scope = strcmp(sv, "fleet") == 0;
    return 0;
}

static int parse_latency_kind(sy_conf_t *c, yaml_node_t *x, sy_trip_conf_t *t)
{
    const char *s = sy_conf_scalar(x);
    if (s && strcmp(s, "ttfb") == 0)
        t->use_ttfb = true;
    else if (s && strcmp(s, "total") == 0)
        t->use_ttfb = false;
    else
        return sy_conf_error(c, x, "latency must be total or ttfb");
    return 0;
}

static int parse_error_statuses(sy_conf_t *c, yaml_node_t *x, sy_trip_conf_t *t)
{
    if (sy_conf_expect(c, x, YAML_SEQUENCE_NODE, "a list of statuses") != 0)
        return SY_EINVAL;
    for (yaml_node_item_t *i = x->data.sequence.items.start; i < x->data.sequence.items.top; i++) {
        int64_t iv;
        if (t->nerror_statuses >= 16 || sy_conf_int(c, sy_conf_node(c, *i), 100, 599, &iv) != 0)
            return SY_EINVAL;
        t->error_statuses[t->nerror_statuses++] = (int)iv;
    }
    return 0;
}

/* One rule of a route's trip mapping into t. */
static int parse_trip_rule(sy_conf_t *c, yaml_node_t *k, yaml_node_t *x, sy_trip_conf_t *t)
{
    const char *key = sy_conf_scalar(k) ? sy_conf_scalar(k) : "?";
    char *base = (char *)t;
    for (size_t i = 0; i < SY_ARRAY_LEN(trip_numbers); i++)
        if (strcmp(key, trip_numbers[i].key) == 0)
            return parse_fraction(c, x, trip_numbers[i].min, trip_numbers[i].max,
                                  (double *)(base + trip_numbers[i].off));
    for (size_t i = 0; i < SY_ARRAY_LEN(trip_percentiles); i++)
        if (strcmp(key, trip_percentiles[i].key) == 0)
            return parse_pct_map(c, x, trip_percentiles[i].min, trip_percentiles[i].max,
                                 (double *)(base + trip_percentiles[i].q), (double *)(base + trip_percentiles[i].off));
    if (strcmp(key, "enabled") == 0)
        return sy_conf_bool(c, x, &t->enabled);
    if (strcmp(key, "window") == 0)
        return sy_conf_duration_ms(c, x, 1000, 600000, &t->window_ms);
    if (strcmp(key, "min_requests") == 0)
        return sy_conf_int(c, x, 1, 100000000, &t->min_requests);
    if (strcmp(key, "sequential") == 0)
        return sy_conf_bool(c, x, &t->sequential);
    if (strcmp(key, "consecutive_errors") == 0)
        return sy_conf_int(c, x, 0, 1000000, &t->consecutive_errors);
    if (strcmp(key, "scope") == 0)
        return parse_scope(c, x, t);
    if (strcmp(key, "latency") == 0)
        return parse_latency_kind(c, x, t);
    if (strcmp(key, "error_statuses") == 0)
        return parse_error_statuses(c, x, t);
    return sy_conf_error(c, k, "unknown trip rule '%s'", key);
}

static int parse_trip(sy_conf_t *c, yaml_node_t *v, sy_trip_conf_t *t)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping of trip rules") != 0)
        return SY_EINVAL;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);)
        if (parse_trip_rule(c, k, x, t) != 0)
            rc = SY_EINVAL;
    /* The critical tier sits between warn and rollback: a default critical
     * at or below a warn set higher would fire before the warning; it is
     * off then (set it to have it). */
    if (sy_conf_map_get(c, v, "critical_error_rate") == NULL && t->warn_error_rate > 0 &&
        t->critical_error_rate <= t->warn_error_rate)
        t->critical_error_rate = 0;
    if (sy_conf_map_get(c, v, "critical_latency_ms") == NULL && t->warn_latency_ms > 0 &&
        t->critical_latency_ms <= t->warn_latency_ms)
        t->critical_latency_ms = 0;
    return rc;
}

/* Every route gets a slot with the defaults, its name and pools; `trip` (if
 * any) overrides the defaults. */
static int trip_of_route(sy_conf_t *c, yaml_node_t *route, const char *name, yaml_node_t *trip, void *slot)
{
    sy_trip_conf_t *tc = slot;
    defaults(tc);
    const char *legacy = sy_conf_scalar(sy_conf_map_get(c, route, "legacy"));
    const char *new_pool = sy_conf_scalar(sy_conf_map_get(c, route, "new"));
    tc->route = name ? strdup(name) : NULL;
    tc->legacy_pool = legacy ? strdup(legacy) : NULL;
    tc->new_pool = new_pool ? strdup(new_pool) : NULL;
    return trip != NULL ? parse_trip(c, trip, tc) : 0;
}

static int confs_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_trip_confs_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = t;
    void *routes = NULL;
    int rc = sy_conf_route_subsections(c, node, "trip", sizeof(*t->routes), &routes, &t->n, trip_of_route);
    t->routes = routes;
    return rc;
}

const sy_conf_section_t sy_trip_section = {
    .key = "routes",
    .required = false,
    .parse = confs_parse,
    .destroy = confs_destroy,
};

const sy_trip_confs_t *sy_trip_confs(const sy_config_t *cfg)
{
    for (size_t i = 0; i < cfg->next; i++)
        if (cfg->ext_sections[i] == &sy_trip_section)
            return cfg->ext[i];
    return NULL;
}

/* --- evaluation ------------------------------------------------------------- */

bool sy_rules_is_error(const sy_trip_conf_t *c, int status, sy_xerr_t err)
{
    if (err == SY_XERR_CONNECT || err == SY_XERR_RESET || err == SY_XERR_TIMEOUT || status >= 500)
        return true;
    for (size_t i = 0; c != NULL && i < c->nerror_statuses; i++)
        if (c->error_statuses[i] == status)
            return true;
    return false;
}

double sy_rules_delta_pvalue(uint64_t e_new, uint64_t n_new, uint64_t e_old, uint64_t n_old, double delta)
{
    if (n_new == 0 || n_old == 0)
        return 1.0;
    double p1 = (double)e_new / (double)n_new, p2 = (double)e_old / (double)n_old;
    /* Unpooled standard error; a floor keeps zero-error samples from looking certain. */
    double var = p1 * (1 - p1) / (double)n_new + p2 * (1 - p2) / (double)n_old;
    double floor_var = 1.0 / ((double)n_new * (double)n_new) + 1.0 / ((double)n_old * (double)n_old);
    if (var < floor_var)
        var = floor_var;
    double z = (p1 - p2 - delta) / sqrt(var);
    return 0.5 * erfc(z / sqrt(2.0));
}

double sy_rules_exceed_pvalue(uint64_t x, uint64_t n, double q)
{
    if (n == 0 || q <= 0 || q >= 1)
        return 1.0;
    double p0 = 1 - q;
    /* Normal approximation to the binomial, with continuity correction. */
    double z = ((double)x - 0.5 - (double)n * p0) / sqrt((double)n * p0 * q);
    return 0.5 * erfc(z / sqrt(2.0));
}

uint64_t sy_rules_quantile_min(double q)
{
    if (q >= 1)
        return UINT64_MAX;
    return (uint64_t)ceil(10.0 / (1.0 - q) - 1e-9);
}

const char *sy_level_name(sy_level_t l)
{
    static const char *const names[] = {"ok", "insufficient", "warn", "critical", "trip"};
    return (unsigned)l < 5 ? names[l] : "?";
}

static void set(sy_verdict_t *out, sy_level_t level, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set(sy_verdict_t *out, sy_level_t level, const char *rule, const char *fmt, ...)
{
    if (level <= out->level && out->rule != NULL)
        return; /* keep the first, most serious finding */
    out->level = level;
    out->rule = rule;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
    va_end(ap);
}

double sy_rules_stat_us(const sy_hist_t *h, double q)
{
    if (q > 0)
        return sy_hist_quantile_us(h, q);
    return h->total ? (double)h->sum_us / (double)h->total : 0;
}

/* "p99" or "mean". */
static const char *stat_name(double q, char buf[8])
{
    if (q <= 0)
        return "mean";
    snprintf(buf, 8, "p%.0f", q * 100);
    return buf;
}

/* The share of samples a statistic at the limit leaves above it: 1-q for a
 * quantile; for the mean, judged as "most samples over the limit" (1/2). */
static double over_share(double q)
{
    return q > 0 ? 1 - q : 0.5;
}

static uint64_t over(const sy_hist_t *h, double limit_us)
{
    return h->total - sy_hist_count_le(h, (uint64_t)limit_us);
}

/* One tier's absolute error-rate rule on a window: crossed, and significantly. */
static void window_rate(const sy_trip_conf_t *c, sy_verdict_t *out, sy_level_t level, const char *rule, double thr,
                        const sy_side_t *fresh, const char *sides)
{
    double rate = (double)fresh->errors / (double)fresh->requests;
    if (thr <= 0 || rate <= thr)
        return;
    double p = sy_rules_exceed_pvalue(fresh->errors, fresh->requests, 1 - thr);
    if (p < 1 - c->confidence)
        set(out, level, rule, "error rate %s > %.2f%% (p=%.4f)", sides, thr * 100, p);
    else
        out->would_trip_unsignificant = true;
}

/* One tier's absolute latency rule on a window: new's statistic over the limit
 * and significantly more samples over it than the statistic allows. */
static void window_latency(const sy_trip_conf_t *c, sy_verdict_t *out, sy_level_t level, const char *rule,
                           double limit_ms, double q, const sy_hist_t *hn, const sy_hist_t *ho)
{
    if (limit_ms <= 0 || hn->total == 0)
        return;
    double v = sy_rules_stat_us(hn, q) / 1000.0;
    if (v <= limit_ms)
        return;
    uint64_t x = over(hn, limit_ms * 1000);
    double p = sy_rules_exceed_pvalue(x, hn->total, 1 - over_share(q));
    char b[8];
    if (p < 1 - c->confidence)
        set(out, level, rule, "new %s %.1f ms > %.0f ms (%llu of %llu over, p=%.4f; legacy %.1f ms)",
            stat_name(q, b), v, limit_ms, (unsigned long long)x, (unsigned long long)hn->total, p,
            sy_rules_stat_us(ho, q) / 1000.0);
    else
        out->would_trip_unsignificant = true;
}

bool sy_rules_second_compare(const sy_trip_conf_t *c, const sy_hist_t *legacy_window, sy_side_t *l, sy_side_t *n,
                             uint64_t *rng)
{
    if (c->max_latency_ratio <= 0)
        return false;
    uint64_t need = c->ratio_q > 0 ? sy_rules_quantile_min(c->ratio_q) : 20;
    if (legacy_window->total < need || l->slow_seconds + n->slow_seconds + l->split_seconds != 0)
        return false;
    uint64_t limit = (uint64_t)(sy_rules_stat_us(legacy_window, c->ratio_q) * c->max_latency_ratio);
    const sy_hist_t *ho = c->use_ttfb ? &l->ttfb : &l->total, *hn = c->use_ttfb ? &n->ttfb : &n->total;
    int d = sy_seq_unit_compare(ho->total, ho->total - sy_hist_count_le(ho, limit), hn->total,
                                hn->total - sy_hist_count_le(hn, limit), rng);
    l->split_seconds = n->split_seconds = d != 0;
    l->slow_seconds = d < 0;
    n->slow_seconds = d > 0;
    return true;
}

bool sy_rules_slower_seconds(uint64_t worse, uint64_t split, double confidence)
{
    return sy_seq_rejects(worse, split, 0.5, 1 - confidence);
}

/* New's statistic over legacy's, judged with tests rather than one p99 against
 * another: with legacy's statistic times the ratio as the limit, count how many
 * of new's samples exceed it; trip only when that count is significantly above
 * the share that new would have if it were within the ratio, AND new had more
 * samples over the limit than legacy in significantly more of the seconds in
 * which they differed (a stall of one process is one second, not a hundred
 * requests). */
static void latency_ratio(const sy_trip_conf_t *c, const sy_side_t *fresh_side, const sy_hist_t *hn,
                          const sy_hist_t *ho, sy_verdict_t *out, bool *pending)
{
    uint64_t need = c->ratio_q > 0 ? sy_rules_quantile_min(c->ratio_q) : 20;
    if (hn->total < need || ho->total < need) {
        *pending = true;
        return;
    }
    double vn = sy_rules_stat_us(hn, c->ratio_q), vo = sy_rules_stat_us(ho, c->ratio_q);
    if (vo <= 0 || vn / vo <= c->max_latency_ratio)
        return;
    uint64_t limit = (uint64_t)(vo * c->max_latency_ratio);
    uint64_t x = hn->total - sy_hist_count_le(hn, limit);
    double p = sy_rules_exceed_pvalue(x, hn->total, 1 - over_share(c->ratio_q));
    char b[8];
    if (p < 1 - c->confidence && sy_rules_slower_seconds(fresh_side->slow_seconds, fresh_side->split_seconds,
                                                          c->confidence))
        set(out, SY_LEVEL_TRIP, "max_latency_ratio",
            "new %s %.1f ms is %.2fx legacy's %.1f ms > %.2fx (%llu of %llu over %.1f ms, p=%.4f; slower in %llu "
            "of %llu differing seconds)",
            stat_name(c->ratio_q, b), vn / 1000, vn / vo, vo / 1000, c->max_latency_ratio, (unsigned long long)x,
            (unsigned long long)hn->total, (double)limit / 1000, p, (unsigned long long)fresh_side->slow_seconds,
            (unsigned long long)fresh_side->split_seconds);
    else
        out->would_trip_unsignificant = true;
}

void sy_rules_mismatch(const sy_trip_conf_t *c, uint64_t mismatches, uint64_t compared, sy_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    out->level = SY_LEVEL_OK;
    if (!c->enabled || c->warn_mismatch_rate <= 0)
        return;
    if (compared < (uint64_t)c->min_requests) {
        out->level = SY_LEVEL_INSUFFICIENT;
        out->rule = "min_requests";
        snprintf(out->detail, sizeof(out->detail), "shadow has %llu of %lld compared pairs",
                 (unsigned long long)compared, (long long)c->min_requests);
        return;
    }
    double rate = (double)mismatches / (double)compared;
    if (rate > c->warn_mismatch_rate) {
        out->level = SY_LEVEL_WARN;
        out->rule = "warn_mismatch_rate";
        snprintf(out->detail, sizeof(out->detail), "shadow mismatch rate %.2f%% (%llu of %llu) > %.2f%%",
                 rate * 100, (unsigned long long)mismatches, (unsigned long long)compared,
                 c->warn_mismatch_rate * 100);
    }
}

void sy_rules_evaluate(const sy_trip_conf_t *c, const sy_side_t *legacy, const sy_side_t *fresh, sy_verdict_t *out)
{
    memset(out, 0, sizeof(*out));
    out->level = SY_LEVEL_OK;
    if (!c->enabled)
        return;
    if (fresh->requests < (uint64_t)c->min_requests) {
        set(out, SY_LEVEL_INSUFFICIENT, "min_requests", "new has %llu of %lld requests in the window",
            (unsigned long long)fresh->requests, (long long)c->min_requests);
        return;
    }
    double rate_new = (double)fresh->errors / (double)fresh->requests;
    double rate_old = legacy->requests ? (double)legacy->errors / (double)legacy->requests : 0;
    const sy_hist_t *hn = c->use_ttfb ? &fresh->ttfb : &fresh->total;
    const sy_hist_t *ho = c->use_ttfb ? &legacy->ttfb : &legacy->total;
    bool both = legacy->requests >= (uint64_t)c->min_requests;
    char sides[160];
    snprintf(sides, sizeof(sides), "new %.2f%% (%llu/%llu), legacy %.2f%% (%llu/%llu)", rate_new * 100,
             (unsigned long long)fresh->errors, (unsigned long long)fresh->requests, rate_old * 100,
             (unsigned long long)legacy->errors, (unsigned long long)legacy->requests);

    window_rate(c, out, SY_LEVEL_TRIP, "max_error_rate", c->max_error_rate, fresh, sides);
    if (c->max_error_rate_delta > 0 && both && rate_new - rate_old > c->max_error_rate_delta) {
        double p = sy_rules_delta_pvalue(fresh->errors, fresh->requests, legacy->errors, legacy->requests,
                                         c->max_error_rate_delta);
        if (p < 1 - c->confidence)
            set(out, SY_LEVEL_TRIP, "max_error_rate_delta", "error rate delta %.2f points > %.2f (p=%.4f): %s",
                (rate_new - rate_old) * 100, c->max_error_rate_delta * 100, p, sides);
        else
            out->would_trip_unsignificant = true;
    }
    window_latency(c, out, SY_LEVEL_TRIP, "max_latency_ms", c->max_latency_ms, c->latency_q, hn, ho);
    bool ratio_pending = false;
    if (c->max_latency_ratio > 0 && both)
        latency_ratio(c, fresh, hn, ho, out, &ratio_pending);
    window_rate(c, out, SY_LEVEL_CRITICAL, "critical_error_rate", c->critical_error_rate, fresh, sides);
    window_latency(c, out, SY_LEVEL_CRITICAL, "critical_latency_ms", c->critical_latency_ms, c->critical_latency_q,
                   hn, ho);
    window_rate(c, out, SY_LEVEL_WARN, "warn_error_rate", c->warn_error_rate, fresh, sides);
    window_latency(c, out, SY_LEVEL_WARN, "warn_latency_ms", c->warn_latency_ms, c->warn_latency_q, hn, ho);
    if (out->level == SY_LEVEL_OK && !both && (c->max_latency_ratio > 0 || c->max_error_rate_delta > 0))
        set(out, SY_LEVEL_INSUFFICIENT, "min_requests", "legacy has %llu of %lld requests: no comparison yet",
            (unsigned long long)legacy->requests, (long long)c->min_requests);
    else if (out->level == SY_LEVEL_OK && ratio_pending)
        set(out, SY_LEVEL_INSUFFICIENT, "max_latency_ratio",
            "p%.0f needs %llu requests on each side (new %llu, legacy %llu): no latency comparison yet",
            c->ratio_q * 100, (unsigned long long)sy_rules_quantile_min(c->ratio_q), (unsigned long long)hn->total,
            (unsigned long long)ho->total);
}

/* --- evidence since the last change (sequential, always valid) ------------ */

void sy_side_add(sy_side_t *a, const sy_side_t *b)
{
    a->requests += b->requests;
    a->errors += b->errors;
    for (int k = 0; k < SY_XERR_KINDS; k++)
        a->by_kind[k] += b->by_kind[k];
    sy_hist_merge(&a->total, &b->total);
    sy_hist_merge(&a->ttfb, &b->ttfb);
    a->slow_seconds += b->slow_seconds;
    a->split_seconds += b->split_seconds;
}

void sy_evidence_reset(sy_evidence_t *e)
{
    memset(e, 0, sizeof(*e));
}

void sy_evidence_add(sy_evidence_t *e, const sy_trip_conf_t *c, const sy_side_t *legacy, const sy_side_t *fresh)
{
    const sy_hist_t *hn = c->use_ttfb ? &fresh->ttfb : &fresh->total;
    const sy_hist_t *ho = c->use_ttfb ? &legacy->ttfb : &legacy->total;
    if (legacy->requests == 0 && fresh->requests == 0)
        return;
    sy_seq_pairs_add(&e->errors, legacy->requests, legacy->errors, fresh->requests, fresh->errors);
    if (e->slow_limit_us > 0) {
        e->unit_n[0] += ho->total;
        e->unit_x[0] += over(ho, e->slow_limit_us);
        e->unit_n[1] += hn->total;
        e->unit_x[1] += over(hn, e->slow_limit_us);
    }
    sy_side_add(&e->side[0], legacy);
    sy_side_add(&e->side[1], fresh);
    const sy_hist_t *eo = c->use_ttfb ? &e->side[0].ttfb : &e->side[0].total;
    uint64_t need = c->ratio_q > 0 ? sy_rules_quantile_min(c->ratio_q) : 20;
    if (c->max_latency_ratio > 0 && eo->total >= need)
        e->slow_limit_us = sy_rules_stat_us(eo, c->ratio_q) * c->max_latency_ratio;
}

void sy_evidence_close_second(sy_evidence_t *e)
{
    int d = sy_seq_unit_compare(e->unit_n[0], e->unit_x[0], e->unit_n[1], e->unit_x[1], &e->rng);
    e->split_seconds += d != 0;
    e->slow_seconds += d > 0;
    e->unit_n[0] = e->unit_n[1] = e->unit_x[0] = e->unit_x[1] = 0;
}

/* One tier's absolute rule on the evidence: x of n over the threshold share.
 * Never on fewer than SY_SEQ_MIN_EVENTS bad outcomes: three errors in three
 * requests are evidence against "at most 10 %", but the teams act on five in a
 * row (consecutive_errors), not on fewer. */
static void seq_share(const sy_trip_conf_t *c, sy_verdict_t *out, sy_level_t level, const char *rule, uint64_t x,
                      uint64_t n, double share, const char *what, double since_s)
{
    if (share <= 0 || share >= 1 || n == 0 || x < SY_SEQ_MIN_EVENTS || (double)x / (double)n <= share)
        return;
    double llr = sy_seq_log_lr(x, n, share);
    if (llr >= log(1 / (1 - c->confidence)))
        set(out, level, rule, "%s: %llu of %llu new requests since the change %.0f s ago, over a share of %.2f%% "
            "(sequential evidence %.1f >= %.1f)", what, (unsigned long long)x, (unsigned long long)n, since_s,
            share * 100, exp(llr) > 1e6 ? 1e6 : exp(llr), 1 / (1 - c->confidence));
}

static void seq_latency(const sy_trip_conf_t *c, const sy_evidence_t *e, sy_verdict_t *out, sy_level_t level,
                        const char *rule, double limit_ms, double q)
{
    const sy_hist_t *hn = c->use_ttfb ? &e->side[1].ttfb : &e->side[1].total;
    if (limit_ms <= 0 || sy_rules_stat_us(hn, q) / 1000.0 <= limit_ms)
        return;
    char what[64], b[8];
    snprintf(what, sizeof(what), "new %s %.1f ms > %.0f ms", stat_name(q, b), sy_rules_stat_us(hn, q) / 1000.0,
             limit_ms);
    seq_share(c, out, level, rule, over(hn, limit_ms * 1000), hn->total, over_share(q), what, e->since_s);
}

void sy_rules_evaluate_evidence(const sy_trip_conf_t *c, const sy_evidence_t *e, sy_verdict_t *out)
{
    if (!c->enabled || !c->sequential)
        return;
    const sy_side_t *o = &e->side[0], *n = &e->side[1];
    double alpha = 1 - c->confidence;
    double rn = n->requests ? (double)n->errors / (double)n->requests : 0;
    double ro = o->requests ? (double)o->errors / (double)o->requests : 0;
    char what[128];
    snprintf(what, sizeof(what), "new %.2f%% (%llu/%llu), legacy %.2f%% (%llu/%llu)", rn * 100,
             (unsigned long long)n->errors, (unsigned long long)n->requests, ro * 100, (unsigned long long)o->errors,
             (unsigned long long)o->requests);
    seq_share(c, out, SY_LEVEL_TRIP, "max_error_rate", n->errors, n->requests, c->max_error_rate, what, e->since_s);
    if (c->max_error_rate_delta > 0 && rn - ro > c->max_error_rate_delta && n->errors >= SY_SEQ_MIN_EVENTS &&
        sy_seq_pairs_worse(&e->errors, alpha))
        set(out, SY_LEVEL_TRIP, "max_error_rate_delta",
            "error rate delta %.2f points > %.2f since the change %.0f s ago: new %.2f%% (%llu/%llu), legacy "
            "%.2f%% (%llu/%llu); new worse in %llu of %llu disagreeing pairs (sequential evidence %.1f >= %.1f)",
            (rn - ro) * 100, c->max_error_rate_delta * 100, e->since_s, rn * 100, (unsigned long long)n->errors,
            (unsigned long long)n->requests, ro * 100, (unsigned long long)o->errors, (unsigned long long)o->requests,
            (unsigned long long)e->errors.new_only, (unsigned long long)e->errors.discordant,
            exp(sy_seq_pairs_log_lr(&e->errors)) > 1e6 ? 1e6 : exp(sy_seq_pairs_log_lr(&e->errors)), 1 / alpha);
    seq_latency(c, e, out, SY_LEVEL_TRIP, "max_latency_ms", c->max_latency_ms, c->latency_q);
    if (c->max_latency_ratio > 0 && e->slow_limit_us > 0) {
        const sy_hist_t *hn = c->use_ttfb ? &n->ttfb : &n->total, *ho = c->use_ttfb ? &o->ttfb : &o->total;
        double vn = sy_rules_stat_us(hn, c->ratio_q), vo = sy_rules_stat_us(ho, c->ratio_q);
        char b[8];
        if (vo > 0 && vn / vo > c->max_latency_ratio && sy_seq_rejects(e->slow_seconds, e->split_seconds, 0.5, alpha))
            set(out, SY_LEVEL_TRIP, "max_latency_ratio",
                "new %s %.1f ms is %.2fx legacy's %.1f ms > %.2fx since the change %.0f s ago; over %.1f ms: new "
                "had more in %llu of %llu differing seconds (sequential)",
                stat_name(c->ratio_q, b), vn / 1000, vn / vo, vo / 1000, c->max_latency_ratio, e->since_s,
                e->slow_limit_us / 1000, (unsigned long long)e->slow_seconds, (unsigned long long)e->split_seconds);
    }
    seq_share(c, out, SY_LEVEL_CRITICAL, "critical_error_rate", n->errors, n->requests, c->critical_error_rate, what,
              e->since_s);
    seq_latency(c, e, out, SY_LEVEL_CRITICAL, "critical_latency_ms", c->critical_latency_ms, c->critical_latency_q);
    seq_share(c, out, SY_LEVEL_WARN, "warn_error_rate", n->errors, n->requests, c->warn_error_rate, what, e->since_s);
    seq_latency(c, e, out, SY_LEVEL_WARN, "warn_latency_ms", c->warn_latency_ms, c->warn_latency_q);
}
