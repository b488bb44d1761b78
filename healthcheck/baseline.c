#include "healthcheck/baseline.h"

#include "flags/pools.h"
#include "healthcheck/rules.h"
#include "healthcheck/seq.h"
#include "healthcheck/trip.h"
#include "proxy/log.h"
#include "routing/route.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the baseline section (under each route) -------------------------------- */

static void confs_destroy(void *v)
{
    sy_baseline_confs_t *t = v;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->routes[i].route);
    free(t->routes);
    free(t);
}

static int fraction(sy_conf_t *c, yaml_node_t *v, double min, double max, double *out)
{
    const char *s = sy_conf_scalar(v);
    char *end = NULL;
    double d = s ? strtod(s, &end) : 0;
    if (s == NULL || end == s || *end != '\0' || d < min || d > max)
        return sy_conf_error(c, v, "expected a number %g..%g", min, max);
    *out = d;
    return 0;
}

static int parse_baseline(sy_conf_t *c, yaml_node_t *v, sy_baseline_conf_t *b)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping of baseline rules") != 0)
        return SY_EINVAL;
    b->max_latency_increase = 0.20;
    b->max_error_increase = 0.05;
    b->max_throughput_drop = 0.20;
    b->latency_q = 0.50; /* the median: a tail on a busy host is noise more often than a regression */
    b->confidence = 0.99;
    b->window_ms = 60000;
    b->min_requests = 50;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        int r;
        if (sy_conf_key_is(k, "max_latency_increase"))
            r = fraction(c, x, 0, 100, &b->max_latency_increase);
        else if (sy_conf_key_is(k, "max_error_increase"))
            r = fraction(c, x, 0, 1, &b->max_error_increase);
        else if (sy_conf_key_is(k, "max_throughput_drop"))
            r = fraction(c, x, 0, 1, &b->max_throughput_drop);
        else if (sy_conf_key_is(k, "confidence"))
            r = fraction(c, x, 0.5, 0.999999, &b->confidence);
        else if (sy_conf_key_is(k, "window"))
            r = sy_conf_duration_ms(c, x, 1000, 86400000, &b->window_ms);
        else if (sy_conf_key_is(k, "min_requests"))
            r = sy_conf_int(c, x, 1, 100000000, &b->min_requests);
        else if (sy_conf_key_is(k, "latency")) {
            const char *s = sy_conf_scalar(x);
            r = 0;
            if (s && strcmp(s, "p50") == 0)
                b->latency_q = 0.5;
            else if (s && strcmp(s, "p95") == 0)
                b->latency_q = 0.95;
            else if (s && strcmp(s, "p99") == 0)
                b->latency_q = 0.99;
            else if (s && strcmp(s, "mean") == 0)
                b->latency_q = 0;
            else
                r = sy_conf_error(c, x, "latency must be p50, p95, p99 or mean");
        } else
            r = sy_conf_error(c, k, "unknown baseline rule");
        if (r != 0)
            rc = SY_EINVAL;
    }
    return rc;
}

/* One route's `baseline` into its slot; a route without one keeps an empty slot. */
static int baseline_of_route(sy_conf_t *c, yaml_node_t *route, const char *name, yaml_node_t *b, void *slot)
{
    (void)route;
    sy_baseline_conf_t *bc = slot;
    if (b == NULL)
        return 0;
    if (parse_baseline(c, b, bc) != 0)
        return SY_EINVAL;
    if ((bc->route = strdup(name ? name : "")) == NULL)
        return sy_conf_error(c, b, "out of memory");
    return 0;
}

static int confs_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_baseline_confs_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = t;
    void *routes = NULL;
    int rc = sy_conf_route_subsections(c, node, "baseline", sizeof(*t->routes), &routes, &t->n,
                                       baseline_of_route);
    t->routes = routes;
    return rc;
}

const sy_conf_section_t sy_baseline_section = {
    .key = "routes",
    .required = false,
    .parse = confs_parse,
    .destroy = confs_destroy,
};

/* --- the owner ---------------------------------------------------------------- */

typedef struct base_route {
    struct sy_baseline *b;
    const sy_baseline_conf_t *conf;
    size_t pool;              /* index of the route's legacy pool in the config */
    const char *pool_name;
    int active;               /* the colour seen last; -1 none yet */
    sy_side_t *mark[2];       /* cumulative numbers at mark_at[0] (older) and [1] */
    double mark_at[2];
    bool judging, ours;
    int from;                 /* the colour that served before the swap */
    sy_side_t *base, *at_swap, *cand;
    double base_s, swap_at;
} base_route_t;

struct sy_baseline {
    struct ev_loop *loop;
    sy_config_t *cfg;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
    sy_sink_t sink;
    base_route_t *routes;
    size_t n;
    ev_timer tick;
};

static const char *color_name(int c)
{
    return c == SY_GREEN ? "green" : "blue";
}

/* out = a - b, counter by counter (cumulative numbers only grow). */
static void side_sub(sy_side_t *out, const sy_side_t *a, const sy_side_t *b)
{
    out->requests = a->requests - b->requests;
    out->errors = a->errors - b->errors;
    for (int k = 0; k < SY_XERR_KINDS; k++)
        out->by_kind[k] = a->by_kind[k] - b->by_kind[k];
    for (unsigned i = 0; i < SY_HIST_BUCKETS; i++) {
        out->total.counts[i] = a->total.counts[i] - b->total.counts[i];
        out->ttfb.counts[i] = a->ttfb.counts[i] - b->ttfb.counts[i];
    }
    out->total.total = a->total.total - b->total.total;
    out->total.sum_us = a->total.sum_us - b->total.sum_us;
    out->ttfb.total = a->ttfb.total - b->ttfb.total;
    out->ttfb.sum_us = a->ttfb.sum_us - b->ttfb.sum_us;
}

static const sy_side_t *total_of(const sy_baseline_t *b, const char *route)
{
    for (size_t i = 0; b->monitor != NULL && i < sy_monitor_nroutes(b->monitor); i++) {
        const sy_route_view_t *v = sy_monitor_route(b->monitor, i);
        if (strcmp(v->route, route) == 0)
            return &v->total[0];
    }
    return NULL;
}

static void record(base_route_t *br, const char *kind, const char *reason, double cand_s)
{
    json_t *stats = json_pack("{s:s, s:s, s:o, s:o}", "from", color_name(br->from), "to",
                              color_name(br->from == SY_BLUE ? SY_GREEN : SY_BLUE), "baseline",
                              sy_trip_side_json(br->base, br->base_s), "candidate", sy_trip_side_json(br->cand, cand_s));
    sy_event_t ev = {.kind = kind, .route = br->conf->route, .actor = "baseline", .reason = reason, .stats = stats};
    sy_sink_event(&br->b->sink, &ev);
    json_decref(stats);
}

static void swapped_back(void *ud, sy_err_t err, const char *reason, const sy_route_flags_t *result)
{
    base_route_t *br = ud;
    (void)result;
    if (err != SY_OK) {
        br->ours = false;
        sy_error("baseline %s: the swap back to %s was refused: %s", br->conf->route, color_name(br->from),
                 reason ? reason : "?");
    }
}

/* The new colour against the frozen baseline. Returns a reason, or NULL. */
static bool regressed(const base_route_t *br, double el, char *why, size_t cap)
{
    const sy_baseline_conf_t *c = br->conf;
    const sy_side_t *b = br->base, *n = br->cand;
    double alpha = 1 - c->confidence;
    if (n->requests < (uint64_t)c->min_requests)
        return false;
    double vb = sy_rules_stat_us(&b->total, c->latency_q), vn = sy_rules_stat_us(&n->total, c->latency_q);
    double limit = vb * (1 + c->max_latency_increase);
    uint64_t over = n->total.total - sy_hist_count_le(&n->total, (uint64_t)limit);
    double share = c->latency_q > 0 ? 1 - c->latency_q : 0.5;
    const char *stat = c->latency_q == 0.5 ? "p50" : c->latency_q == 0.95 ? "p95" : c->latency_q == 0.99 ? "p99" : "mean";
    if (vb > 0 && vn > limit && sy_seq_rejects(over, n->total.total, share, alpha)) {
        snprintf(why, cap, "latency: %s %s %.1f ms is %.0f%% over %s's %.1f ms (limit +%.0f%%; %llu of %llu over "
                 "%.1f ms)", color_name(br->from == SY_BLUE ? SY_GREEN : SY_BLUE), stat, vn / 1000,
                 (vn / vb - 1) * 100, color_name(br->from), vb / 1000, c->max_latency_increase * 100,
                 (unsigned long long)over, (unsigned long long)n->total.total, limit / 1000);
        return true;
    }
    double rb = b->requests ? (double)b->errors / (double)b->requests : 0;
    double rn = (double)n->errors / (double)n->requests;
    if (rn - rb > c->max_error_increase &&
        sy_rules_delta_pvalue(n->errors, n->requests, b->errors, b->requests, c->max_error_increase) < alpha) {
        snprintf(why, cap, "error rate %.2f%% against the baseline's %.2f%% (+%.2f points > %.2f)", rn * 100,
                 rb * 100, (rn - rb) * 100, c->max_error_increase * 100);
        return true;
    }
    double tb = br->base_s > 0 ? (double)b->requests / br->base_s : 0, tn = el > 0 ? (double)n->requests / el : 0;
    if (el * 1000 >= (double)c->window_ms && tb > 0 && tn < tb * (1 - c->max_throughput_drop)) {
        snprintf(why, cap, "throughput %.1f/s against the baseline's %.1f/s (-%.0f%% > %.0f%%)", tn, tb,
                 (1 - tn / tb) * 100, c->max_throughput_drop * 100);
        return true;
    }
    return false;
}

static void route_tick(base_route_t *br, double now)
{
    sy_baseline_t *b = br->b;
    const sy_side_t *cur = total_of(b, br->conf->route);
    if (cur == NULL)
        return;
    int active = sy_flagstore_pools(b->store)[br->pool].active;
    if (br->active < 0 || br->mark_at[1] == 0) {
        br->active = active;
        *br->mark[0] = *br->mark[1] = *cur;
        br->mark_at[0] = br->mark_at[1] = now;
        return;
    }
    if (active != br->active) {
        br->judging = false;
        if (br->ours) {
            br->ours = false; /* our own swap back: nothing to judge */
        } else {
            side_sub(br->base, cur, br->mark[0]);
            br->base_s = now - br->mark_at[0];
            if (br->base->requests >= (uint64_t)br->conf->min_requests) {
                br->judging = true;
                br->from = br->active;
                br->swap_at = now;
                *br->at_swap = *cur;
                sy_info("baseline %s: %s now serves; judged for %.0f s against %s's %llu requests over %.0f s",
                        br->conf->route, color_name(active), (double)br->conf->window_ms / 1000, color_name(br->from),
                        (unsigned long long)br->base->requests, br->base_s);
            } else {
                sy_info("baseline %s: swap to %s with no baseline (%llu requests before it): not judged",
                        br->conf->route, color_name(active), (unsigned long long)br->base->requests);
            }
        }
        br->active = active;
        *br->mark[0] = *br->mark[1] = *cur;
        br->mark_at[0] = br->mark_at[1] = now;
    } else if ((now - br->mark_at[1]) * 2000 >= (double)br->conf->window_ms) {
        *br->mark[0] = *br->mark[1];
        br->mark_at[0] = br->mark_at[1];
        *br->mark[1] = *cur;
        br->mark_at[1] = now;
    }
    if (!br->judging)
        return;
    double el = now - br->swap_at;
    side_sub(br->cand, cur, br->at_swap);
    char why[384], reason[512];
    if (regressed(br, el, why, sizeof(why))) {
        br->judging = false;
        br->ours = true;
        snprintf(reason, sizeof(reason), "baseline regression after the swap to %s: %s; back to %s",
                 color_name(br->active), why, color_name(br->from));
        sy_warn("baseline %s: %s", br->conf->route, reason);
        record(br, "baseline_revert", reason, el);
        sy_pools_swap(b->store, br->pool_name, color_name(br->from), "baseline", reason, swapped_back, br);
    } else if (el * 1000 >= (double)br->conf->window_ms) {
        br->judging = false;
        const sy_baseline_conf_t *c = br->conf;
        snprintf(reason, sizeof(reason),
                 "%s kept: no regression against %s's baseline in %.0f s (latency %.1f vs %.1f ms, errors %.2f%% vs "
                 "%.2f%%, %.1f vs %.1f requests/s)",
                 color_name(br->active), color_name(br->from), el, sy_rules_stat_us(&br->cand->total, c->latency_q) / 1000,
                 sy_rules_stat_us(&br->base->total, c->latency_q) / 1000,
                 br->cand->requests ? 100.0 * (double)br->cand->errors / (double)br->cand->requests : 0.0,
                 br->base->requests ? 100.0 * (double)br->base->errors / (double)br->base->requests : 0.0,
                 el > 0 ? (double)br->cand->requests / el : 0.0, br->base_s > 0 ? (double)br->base->requests / br->base_s : 0.0);
        sy_info("baseline %s: %s", br->conf->route, reason);
        record(br, "baseline_kept", reason, el);
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_baseline_t *b = t->data;
    (void)revents;
    for (size_t i = 0; i < b->n; i++)
        route_tick(&b->routes[i], ev_now(loop));
}

static const sy_baseline_confs_t *confs_of(const sy_config_t *cfg)
{
    for (size_t i = 0; i < cfg->next; i++)
        if (cfg->ext_sections[i] == &sy_baseline_section)
            return cfg->ext[i];
    return NULL;
}

sy_baseline_t *sy_baseline_create(struct ev_loop *loop, const sy_config_t *cfg, sy_flagstore_t *store,
                                  sy_monitor_t *monitor, const sy_sink_t *sink)
{
    sy_baseline_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->loop = loop;
    b->store = store;
    b->monitor = monitor;
    if (sink != NULL)
        b->sink = *sink;
    b->cfg = sy_config_ref((sy_config_t *)cfg);
    const sy_baseline_confs_t *bc = confs_of(cfg);
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    size_t n = bc ? bc->n : 0;
    b->routes = calloc(n + 1, sizeof(*b->routes));
    if (b->routes == NULL) {
        sy_baseline_destroy(b);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const sy_baseline_conf_t *c = &bc->routes[i];
        const sy_route_t *r = c->route && rs ? sy_route_find(rs, c->route) : NULL;
        if (r == NULL)
            continue;
        if (!r->legacy->colored) {
            sy_warn("baseline %s: its pool %s has no colours: no baseline", c->route, r->legacy->name);
            continue;
        }
        base_route_t *br = &b->routes[b->n++];
        br->b = b;
        br->conf = c;
        br->pool = (size_t)(r->legacy - cfg->pools);
        br->pool_name = r->legacy->name;
        br->active = -1;
        sy_side_t **sides[] = {&br->mark[0], &br->mark[1], &br->base, &br->at_swap, &br->cand};
        for (size_t k = 0; k < 5; k++)
            if ((*sides[k] = calloc(1, sizeof(sy_side_t))) == NULL) {
                sy_baseline_destroy(b);
                return NULL;
            }
    }
    ev_timer_init(&b->tick, tick_cb, 0.5, 0.5);
    b->tick.data = b;
    if (b->n > 0)
        ev_timer_start(loop, &b->tick);
    return b;
}

void sy_baseline_destroy(sy_baseline_t *b)
{
    if (b == NULL)
        return;
    ev_timer_stop(b->loop, &b->tick);
    for (size_t i = 0; i < b->n; i++) {
        base_route_t *br = &b->routes[i];
        free(br->mark[0]);
        free(br->mark[1]);
        free(br->base);
        free(br->at_swap);
        free(br->cand);
    }
    free(b->routes);
    sy_config_release(b->cfg);
    free(b);
}
