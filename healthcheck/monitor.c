#include "healthcheck/monitor.h"

#include "healthcheck/colours.h"
#include "healthcheck/endpoints.h"

#include "proxy/log.h"
#include "proxy/snapshot.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One route x variant in one worker's shard. Written by that worker only. */
typedef struct cell {
    _Atomic uint64_t requests, errors, sum_total_us, sum_ttfb_us;
    _Atomic uint64_t by_kind[SY_XERR_KINDS];
    _Atomic uint64_t fallbacks; /* attempts that failed with nothing sent and went on to legacy */
    _Atomic uint32_t total[SY_HIST_BUCKETS];
    _Atomic uint32_t ttfb[SY_HIST_BUCKETS];
} cell_t;

#define BUMP(x, n) atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n), \
                                         memory_order_relaxed)
#define READ(x) atomic_load_explicit(&(x), memory_order_relaxed)

typedef struct route_state {
    char *name;
    const sy_trip_conf_t *conf;
    size_t nbuckets;
    sy_side_t *ring[2];       /* nbuckets each */
    sy_side_t last[2];        /* cumulative at the previous tick */
    sy_route_view_t view;
    uint64_t cur_second;      /* the second the current bucket holds */
    ev_tstamp since;          /* start of the data in the window */
    bool tripped, warned, critical, refused;
    sy_evidence_t *ev;        /* since the route's last change (sequential tests) */
    ev_tstamp ev_since;
    uint64_t rng;             /* the per-second comparison's draws */
    ev_tstamp drain_since;    /* a trip flipped it at: watch new drain (0: not watching) */
    sy_side_t *period;        /* [2]: the current windows-row period (NULL: no rows) */
    int64_t period_start;     /* ms */
} route_state_t;

struct sy_monitor {
    struct ev_loop *loop;
    sy_config_t *cfg;
    size_t nworkers;
    cell_t *cells;            /* [worker][route][variant] */
    _Atomic uint64_t streak[SY_MONITOR_MAX_ROUTES];
    atomic_int alarm[SY_MONITOR_MAX_ROUTES];
    /* Shared runtime state of the trip (not config): the worker that counts
     * the Nth error in a row on new marks the route here before that error's
     * response leaves, and every worker's router reads the mark on its next
     * decision (sy_monitor_tripped), without waiting for the control thread to
     * write and publish the trip. The value is the config the route index
     * belongs to (0: not marked); cleared by reset_route and on reload. */
    _Atomic uintptr_t mark[SY_MONITOR_MAX_ROUTES];
    route_state_t *routes;
    size_t nroutes;
    bool legacy_down[SY_MONITOR_MAX_ROUTES];
    uint64_t ticks;
    uint64_t unsignificant;
    ev_timer tick;
    ev_async async;
    sy_observer_t observer;
    sy_monitor_hooks_t hooks;
    sy_colours_t *colours; /* per pool x colour, counted beside the cells */
    sy_second_fn on_second; /* closed seconds go there (NULL: nowhere) */
    void *second_ud;
};

static cell_t *cell_of(sy_monitor_t *m, size_t worker, size_t route, int variant)
{
    return &m->cells[(worker * SY_MONITOR_MAX_ROUTES + route) * 2 + (size_t)variant];
}

/* --- worker side ---------------------------------------------------------- */

/* The rules of the request's own config (its snapshot keeps them alive), or
 * NULL when the exchange is not one the monitor compares. */
static const sy_trip_conf_t *conf_of(const sy_monitor_t *m, int worker, const sy_snapshot_t *snap,
                                     const sy_outcome_t *o)
{
    int r = o->decision->route_index;
    int v = o->decision->variant_index;
    if (r < 0 || r >= SY_MONITOR_MAX_ROUTES || worker < 0 || (size_t)worker >= m->nworkers || v < 0 || v > 1)
        return NULL;
    const sy_trip_confs_t *tc = sy_trip_confs(snap->config);
    return tc != NULL && (size_t)r < tc->n ? &tc->routes[r] : NULL;
}

/* One outcome of new on route r, in the order the workers settle them. The
 * one that makes it N in a row marks the route (every worker's next decision
 * sends it to legacy) and wakes the control thread, which trips it for real. */
static void streak_add(sy_monitor_t *m, int r, const sy_trip_conf_t *conf, const sy_snapshot_t *snap, bool err)
{
    if (conf->consecutive_errors <= 0)
        return;
    if (!err) {
        if (atomic_load_explicit(&m->streak[r], memory_order_relaxed) != 0)
            atomic_store_explicit(&m->streak[r], 0, memory_order_relaxed);
        return;
    }
    uint64_t n = atomic_fetch_add_explicit(&m->streak[r], 1, memory_order_relaxed) + 1;
    if (n == (uint64_t)conf->consecutive_errors) {
        atomic_store_explicit(&m->mark[r], (uintptr_t)snap->config, memory_order_release);
        atomic_store_explicit(&m->alarm[r], 1, memory_order_release);
        ev_async_send(m->loop, &m->async);
    }
}

/* Before the response leaves: the consecutive-errors rule sees the outcome
 * now, so the Nth error's client cannot get its next request routed first. */
static void early(void *ctx, int worker, const sy_snapshot_t *snap, const sy_outcome_t *o)
{
    sy_monitor_t *m = ctx;
    const sy_trip_conf_t *conf = conf_of(m, worker, snap, o);
    if (conf == NULL || o->decision->variant_index != 1 || o->error == SY_XERR_CLIENT)
        return;
    streak_add(m, o->decision->route_index, conf, snap, sy_rules_is_error(conf, o->status, o->error));
}

static void record(void *ctx, int worker, const sy_snapshot_t *snap, const sy_outcome_t *o)
{
    sy_monitor_t *m = ctx;
    const sy_trip_conf_t *conf = conf_of(m, worker, snap, o);
    if (conf == NULL)
        return;
    int r = o->decision->route_index;
    int v = o->decision->variant_index;
    cell_t *c = cell_of(m, (size_t)worker, (size_t)r, v);
    if (o->error == SY_XERR_CLIENT) {
        BUMP(c->by_kind[SY_XERR_CLIENT], 1); /* not the backend's doing: not a request of the comparison */
        return;
    }
    /* Passive ejection at once when the exchange itself failed to connect (the
     * tick catches endpoints that failed behind a successful retry elsewhere). */
    const sy_endpoint_t *ep = o->decision->endpoint;
    unsigned long run = 0;
    if (ep != NULL && o->error == SY_XERR_CONNECT && sy_endpoints_eject(snap->eps, ep->index, &run))
        sy_warn("health: %s taken out after %lu connect failures in a row", ep->name, run);
    bool err = sy_rules_is_error(conf, o->status, o->error);
    BUMP(c->requests, 1);
    if (err) {
        BUMP(c->errors, 1);
        /* by_kind[0] (no transport error) counts listed statuses below 500 */
        int kind = o->error != SY_XERR_NONE && o->error != SY_XERR_STATUS ? (int)o->error
                   : o->status >= 500                                  ? SY_XERR_STATUS
                                                                       : SY_XERR_NONE;
        BUMP(c->by_kind[kind], 1);
    }
    BUMP(c->total[sy_hist_index(o->total_us)], 1);
    BUMP(c->ttfb[sy_hist_index(o->ttfb_us)], 1);
    BUMP(c->sum_total_us, o->total_us);
    BUMP(c->sum_ttfb_us, o->ttfb_us);
    sy_colours_record(m->colours, worker, snap->config, ep, err, o->total_us);
    if (o->fell_back)
        BUMP(c->fallbacks, 1);
    /* The streak took the early outcome already; only a failure after it (a
     * reset or timeout mid-body) is news. */
    if (v == 1 && (!o->early || (err && !sy_rules_is_error(conf, o->early_status, o->early_error))))
        streak_add(m, r, conf, snap, err);
}

bool sy_monitor_tripped(const void *ctx, const sy_snapshot_t *snap, int route)
{
    const sy_monitor_t *m = ctx;
    return route >= 0 && route < SY_MONITOR_MAX_ROUTES &&
           atomic_load_explicit(&m->mark[route], memory_order_acquire) == (uintptr_t)snap->config;
}

/* --- control side ------------------------------------------------------------ */

static void side_add(sy_side_t *a, const sy_side_t *b, int sign)
{
    a->requests += (uint64_t)sign * b->requests;
    a->errors += (uint64_t)sign * b->errors;
    for (int k = 0; k < SY_XERR_KINDS; k++)
        a->by_kind[k] += (uint64_t)sign * b->by_kind[k];
    if (b->total.total != 0) {
        for (unsigned i = 0; i < SY_HIST_BUCKETS; i++) {
            a->total.counts[i] += (uint32_t)((int64_t)sign * b->total.counts[i]);
            a->ttfb.counts[i] += (uint32_t)((int64_t)sign * b->ttfb.counts[i]);
        }
    }
    a->total.total += (uint64_t)sign * b->total.total;
    a->total.sum_us += (uint64_t)sign * b->total.sum_us;
    a->ttfb.total += (uint64_t)sign * b->ttfb.total;
    a->ttfb.sum_us += (uint64_t)sign * b->ttfb.sum_us;
    a->slow_seconds += (uint64_t)sign * b->slow_seconds;
    a->split_seconds += (uint64_t)sign * b->split_seconds;
}

/* The second in slot ended: which side had more requests over the ratio limit
 * (legacy's window statistic x the ratio), on equal counts (rules.c). One unit
 * of the window's latency evidence, and one of the evidence since the change. */
static void close_second(route_state_t *rs, size_t slot)
{
    sy_evidence_close_second(rs->ev);
    const sy_hist_t *wo = rs->conf->use_ttfb ? &rs->view.window[0].ttfb : &rs->view.window[0].total;
    sy_side_t *l = &rs->ring[0][slot], *n = &rs->ring[1][slot];
    if (!sy_rules_second_compare(rs->conf, wo, l, n, &rs->rng))
        return;
    for (int v = 0; v < 2; v++) {
        rs->view.window[v].split_seconds += l->split_seconds;
        rs->view.window[v].slow_seconds += v == 0 ? l->slow_seconds : n->slow_seconds;
    }
}

/* Sums route r, variant v over all workers' shards. */
static void gather(sy_monitor_t *m, size_t r, int v, sy_side_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t w = 0; w < m->nworkers; w++) {
        cell_t *c = cell_of(m, w, r, v);
        out->requests += READ(c->requests);
        out->errors += READ(c->errors);
        for (int k = 0; k < SY_XERR_KINDS; k++)
            out->by_kind[k] += READ(c->by_kind[k]);
        for (unsigned i = 0; i < SY_HIST_BUCKETS; i++) {
            out->total.counts[i] += READ(c->total[i]);
            out->ttfb.counts[i] += READ(c->ttfb[i]);
        }
        out->total.sum_us += READ(c->sum_total_us);
        out->ttfb.sum_us += READ(c->sum_ttfb_us);
    }
    out->total.total = out->ttfb.total = 0;
    for (unsigned i = 0; i < SY_HIST_BUCKETS; i++) {
        out->total.total += out->total.counts[i];
        out->ttfb.total += out->ttfb.counts[i];
    }
}

static bool all_down(const sy_monitor_t *m, const sy_pool_t *p);

/* A rollback never sends users into a dead pool: with every endpoint of legacy
 * down the route stays where it is, the critical hook says why (once per
 * outage) and the trip is tried again at the next tick. */
static void do_trip(sy_monitor_t *m, route_state_t *rs, const char *rule, const char *detail)
{
    if (rs->tripped)
        return;
    const sy_pool_t *lp = rs->conf->legacy_pool ? sy_config_pool(m->cfg, rs->conf->legacy_pool) : NULL;
    if (all_down(m, lp)) {
        size_t r = (size_t)(rs - m->routes);
        atomic_store_explicit(&m->mark[r], 0, memory_order_release); /* the data path's mark too */
        if (!rs->refused) {
            char why[512];
            snprintf(why, sizeof(why), "rollback refused: legacy pool %s has no healthy endpoint; %s: %s",
                     lp->name, rule, detail);
            sy_error("route %s: %s", rs->name, why);
            if (m->hooks.critical != NULL)
                m->hooks.critical(m->hooks.ud, rs->name, "rollback_refused", why);
        }
        rs->refused = true;
        return;
    }
    rs->refused = false;
    rs->tripped = true; /* the trip owner counts the trip once the route flips */
    rs->drain_since = ev_now(m->loop);
    sy_warn("trip: route %s, rule %s: %s", rs->name, rule, detail);
    m->hooks.trip(m->hooks.ud, rs->name, rule, detail);
}

/* Every 100 ms: merge what the shards counted since the last tick into the
 * bucket of the current second, then evaluate. Buckets stay 1 s wide; the
 * evaluation is ten times as frequent so a bad new side is caught within
 * ~100 ms of crossing a threshold, not at the next whole second. */
static bool all_down(const sy_monitor_t *m, const sy_pool_t *p)
{
    if (p == NULL || p->nendpoints == 0)
        return false;
    for (size_t i = 0; i < p->nendpoints; i++)
        if (!sy_endpoints_is_down(m->hooks.endpoints, m->cfg, &p->endpoints[i]))
            return false;
    return true;
}

/* Passive ejection: each worker counts failed connects to an endpoint in its
 * shard (its good connect ends its run); SY_EJECT_CONNECT_FAILURES in a row,
 * summed over the workers, take the endpoint out (healthcheck/endpoints.c), and
 * the health prober re-probes it before it returns. */
static void eject(sy_monitor_t *m)
{
    for (size_t p = 0; p < m->cfg->npools; p++)
        for (size_t e = 0; e < m->cfg->pools[p].nendpoints; e++) {
            const sy_endpoint_t *ep = &m->cfg->pools[p].endpoints[e];
            unsigned long n = 0;
            if (sy_endpoints_eject(sy_endpoints_table(m->hooks.endpoints, m->cfg), ep->index, &n)) {
                sy_warn("health: %s (pool %s) taken out after %lu connect failures in a row", ep->name,
                        m->cfg->pools[p].name, n);
            }
        }
}

/* Every endpoint of new down: trip (new_unavailable). Every endpoint of legacy
 * down: nothing to fall back to; say so loudly, once per outage. */
static void check_pools(sy_monitor_t *m, size_t r, route_state_t *rs)
{
    const sy_pool_t *np = rs->conf->new_pool ? sy_config_pool(m->cfg, rs->conf->new_pool) : NULL;
    const sy_pool_t *lp = rs->conf->legacy_pool ? sy_config_pool(m->cfg, rs->conf->legacy_pool) : NULL;
    if (rs->conf->enabled && all_down(m, np)) {
        char detail[160];
        snprintf(detail, sizeof(detail), "all %zu endpoints of pool %s are down", np->nendpoints, np->name);
        do_trip(m, rs, "new_unavailable", detail);
    }
    bool ld = all_down(m, lp);
    if (ld && !m->legacy_down[r])
        sy_error("route %s: every endpoint of its legacy pool %s is down: requests get 503", rs->name, lp->name);
    else if (!ld && m->legacy_down[r])
        sy_info("route %s: legacy pool %s has endpoints up again", rs->name, lp->name);
    m->legacy_down[r] = ld;
}

/* After a trip: once nothing is in flight on new's endpoints, say so (the
 * teams' switch-back procedure waits for it). */
static void check_drained(sy_monitor_t *m, route_state_t *rs, ev_tstamp now)
{
    if (rs->drain_since == 0 || m->hooks.drained == NULL || m->hooks.endpoints == NULL)
        return;
    const sy_pool_t *np = rs->conf->new_pool ? sy_config_pool(m->cfg, rs->conf->new_pool) : NULL;
    long inflight = 0;
    for (size_t i = 0; np != NULL && i < np->nendpoints; i++)
        inflight += sy_endpoints_inflight(m->hooks.endpoints, m->cfg, &np->endpoints[i]);
    if (inflight > 0)
        return;
    char detail[160];
    snprintf(detail, sizeof(detail), "nothing in flight on new (pool %s) %.1f s after the flip",
             np ? np->name : "-", now - rs->drain_since);
    rs->drain_since = 0;
    m->hooks.drained(m->hooks.ud, rs->name, "new_drained", detail);
}

/* The period ended (or the monitor stops): its rows go out, the period starts empty. */
static void emit_period(sy_monitor_t *m, route_state_t *rs)
{
    if (rs->period[0].requests + rs->period[1].requests > 0)
        for (int v = 0; v < 2; v++)
            m->hooks.window(m->hooks.window_ud, rs->period_start, rs->name, v, &rs->period[v]);
    memset(rs->period, 0, 2 * sizeof(sy_side_t));
}

void sy_monitor_flush_windows(sy_monitor_t *m)
{
    if (m == NULL)
        return;
    for (size_t r = 0; r < m->nroutes; r++)
        if (m->routes[r].period != NULL && m->routes[r].period_start != 0)
            emit_period(m, &m->routes[r]);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_monitor_t *m = t->data;
    (void)revents;
    m->ticks++;
    ev_tstamp now = ev_now(loop);
    uint64_t second = (uint64_t)now;
    eject(m);
    sy_side_t *cur = malloc(sizeof(*cur)), *delta = malloc(2 * sizeof(*delta));
    if (cur == NULL || delta == NULL) {
        free(cur);
        free(delta);
        return;
    }
    for (size_t r = 0; r < m->nroutes; r++) {
        route_state_t *rs = &m->routes[r];
        size_t slot = (size_t)(second % rs->nbuckets);
        bool new_second = second != rs->cur_second;
        if (rs->since == 0)
            rs->since = now;
        if (new_second && rs->cur_second != 0 && second - rs->cur_second < rs->nbuckets)
            close_second(rs, (size_t)(rs->cur_second % rs->nbuckets));
        if (new_second && rs->cur_second != 0 && m->on_second != NULL) {
            size_t sl = (size_t)(rs->cur_second % rs->nbuckets); /* not cleared yet, whatever the gap */
            m->on_second(m->second_ud, rs->name, (int64_t)rs->cur_second, &rs->ring[0][sl], &rs->ring[1][sl]);
        }
        for (int v = 0; v < 2; v++) {
            gather(m, r, v, cur);
            delta[v] = *cur;
            side_add(&delta[v], &rs->last[v], -1);
            rs->last[v] = *cur;
            rs->view.total[v] = *cur;
            if (v == 1) {
                rs->view.fallbacks = 0;
                for (size_t w = 0; w < m->nworkers; w++)
                    rs->view.fallbacks += READ(cell_of(m, w, r, 1)->fallbacks);
            }
            if (new_second) {
                /* Seconds with no tick (a stall) leave stale buckets: clear them all. */
                uint64_t gap = second - rs->cur_second;
                for (uint64_t k = 1; k <= gap && k <= rs->nbuckets; k++) {
                    size_t sl = (size_t)((rs->cur_second + k) % rs->nbuckets);
                    side_add(&rs->view.window[v], &rs->ring[v][sl], -1);
                    memset(&rs->ring[v][sl], 0, sizeof(sy_side_t));
                }
            }
            side_add(&rs->ring[v][slot], &delta[v], +1);
            side_add(&rs->view.window[v], &delta[v], +1);
            if (rs->period != NULL)
                side_add(&rs->period[v], &delta[v], +1);
        }
        if (rs->ev_since == 0)
            rs->ev_since = now;
        sy_evidence_add(rs->ev, rs->conf, &delta[0], &delta[1]);
        rs->ev->since_s = now - rs->ev_since;
        if (rs->period != NULL) {
            int64_t now_ms = (int64_t)(now * 1000), w = (int64_t)m->hooks.window_ms;
            int64_t start = now_ms - now_ms % w;
            if (rs->period_start != 0 && start != rs->period_start)
                emit_period(m, rs);
            rs->period_start = start;
        }
        rs->cur_second = second;
        rs->view.window_s = now - rs->since < (double)rs->nbuckets ? now - rs->since : (double)rs->nbuckets;
        sy_rules_evaluate(rs->conf, &rs->view.window[0], &rs->view.window[1], &rs->view.verdict);
        sy_rules_evaluate_evidence(rs->conf, rs->ev, &rs->view.verdict);
        rs->view.evidence = rs->ev;
        check_pools(m, r, rs);
        check_drained(m, rs, now);
        if (rs->view.verdict.would_trip_unsignificant)
            m->unsignificant++;
        const sy_verdict_t *vd = &rs->view.verdict;
        if (vd->level == SY_LEVEL_TRIP)
            do_trip(m, rs, vd->rule, vd->detail);
        /* Critical and warn notify once until the route is below them again. */
        if (vd->level == SY_LEVEL_CRITICAL && !rs->critical) {
            sy_warn("critical: route %s, rule %s: %s", rs->name, vd->rule, vd->detail);
            if (m->hooks.critical != NULL)
                m->hooks.critical(m->hooks.ud, rs->name, vd->rule, vd->detail);
            rs->view.criticals++;
        }
        rs->critical = vd->level >= SY_LEVEL_CRITICAL;
        if (vd->level == SY_LEVEL_WARN && !rs->warned) {
            sy_warn("warning: route %s, rule %s: %s", rs->name, vd->rule, vd->detail);
            if (m->hooks.warn != NULL)
                m->hooks.warn(m->hooks.ud, rs->name, vd->rule, vd->detail);
            rs->view.warnings++;
        }
        rs->warned = vd->level >= SY_LEVEL_WARN;
    }
    free(cur);
    free(delta);
}

static void async_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    sy_monitor_t *m = a->data;
    (void)loop;
    (void)revents;
    for (size_t r = 0; r < m->nroutes; r++) {
        if (!atomic_exchange_explicit(&m->alarm[r], 0, memory_order_acq_rel))
            continue;
        route_state_t *rs = &m->routes[r];
        char detail[128];
        snprintf(detail, sizeof(detail), "%lld errors in a row on new", (long long)rs->conf->consecutive_errors);
        do_trip(m, rs, "consecutive_errors", detail);
    }
}

static void routes_free(sy_monitor_t *m)
{
    for (size_t r = 0; r < m->nroutes; r++) {
        free(m->routes[r].name);
        free(m->routes[r].ring[0]);
        free(m->routes[r].ring[1]);
        free(m->routes[r].period);
        free(m->routes[r].ev);
    }
    free(m->routes);
    m->routes = NULL;
    m->nroutes = 0;
}

static int load(sy_monitor_t *m, const sy_config_t *cfg)
{
    const sy_trip_confs_t *tc = sy_trip_confs(cfg);
    size_t n = tc ? tc->n : 0;
    if (n > SY_MONITOR_MAX_ROUTES) {
        sy_warn("monitor: only the first %d routes are compared", SY_MONITOR_MAX_ROUTES);
        n = SY_MONITOR_MAX_ROUTES;
    }
    route_state_t *routes = calloc(n + 1, sizeof(*routes));
    if (routes == NULL)
        return SY_ENOMEM;
    for (size_t r = 0; r < n; r++) {
        route_state_t *rs = &routes[r];
        rs->conf = &tc->routes[r];
        rs->name = strdup(rs->conf->route ? rs->conf->route : "");
        rs->nbuckets = (size_t)(rs->conf->window_ms / 1000);
        if (rs->nbuckets == 0)
            rs->nbuckets = 1;
        rs->ring[0] = calloc(rs->nbuckets, sizeof(sy_side_t));
        rs->ring[1] = calloc(rs->nbuckets, sizeof(sy_side_t));
        rs->ev = calloc(1, sizeof(sy_evidence_t));
        rs->view.route = rs->name;
        bool rows = m->hooks.window != NULL && m->hooks.window_ms > 0;
        rs->period = rows ? calloc(2, sizeof(sy_side_t)) : NULL;
        if (rs->name == NULL || rs->ring[0] == NULL || rs->ring[1] == NULL || rs->ev == NULL ||
            (rows && rs->period == NULL)) {
            for (size_t k = 0; k <= r; k++) {
                free(routes[k].ev);
                free(routes[k].name);
                free(routes[k].ring[0]);
                free(routes[k].ring[1]);
                free(routes[k].period);
            }
            free(routes);
            return SY_ENOMEM;
        }
    }
    routes_free(m);
    m->routes = routes;
    m->nroutes = n;
    /* Workers see the new rules from their next exchange on; a shard cell keeps
     * counting across configs, so "last" starts from what it holds now. */
    for (size_t r = 0; r < SY_MONITOR_MAX_ROUTES; r++) {
        atomic_store(&m->streak[r], 0);
        atomic_store(&m->mark[r], 0);
    }
    for (size_t r = 0; r < n; r++)
        for (int v = 0; v < 2; v++)
            gather(m, r, v, &m->routes[r].last[v]);
    return 0;
}

sy_monitor_t *sy_monitor_create(struct ev_loop *control, const sy_config_t *cfg, size_t nworkers,
                                const sy_monitor_hooks_t *hooks)
{
    sy_monitor_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->loop = control;
    m->nworkers = nworkers;
    m->hooks = *hooks;
    m->cells = calloc(nworkers * SY_MONITOR_MAX_ROUTES * 2, sizeof(cell_t));
    m->colours = sy_colours_create(nworkers);
    if (m->cells == NULL || m->colours == NULL || load(m, cfg) != 0) {
        sy_colours_destroy(m->colours);
        free(m->cells);
        free(m);
        return NULL;
    }
    m->cfg = sy_config_ref((sy_config_t *)cfg);
    m->observer.record = record;
    m->observer.early = early;
    m->observer.ctx = m;
    ev_timer_init(&m->tick, tick_cb, 0.1, 0.1);
    m->tick.data = m;
    ev_timer_start(control, &m->tick);
    ev_async_init(&m->async, async_cb);
    m->async.data = m;
    ev_async_start(control, &m->async);
    return m;
}

void sy_monitor_destroy(sy_monitor_t *m)
{
    if (m == NULL)
        return;
    ev_timer_stop(m->loop, &m->tick);
    ev_async_stop(m->loop, &m->async);
    routes_free(m);
    sy_config_release(m->cfg);
    sy_colours_destroy(m->colours);
    free(m->cells);
    free(m);
}

const sy_observer_t *sy_monitor_observer(sy_monitor_t *m)
{
    return &m->observer;
}

void sy_monitor_reload(sy_monitor_t *m, const sy_config_t *cfg)
{
    sy_monitor_flush_windows(m); /* the period so far, before its routes are re-read */
    if (load(m, cfg) != 0) {
        sy_error("monitor: out of memory on reload; trip rules of the previous config stay");
        return;
    }
    sy_config_release(m->cfg);
    m->cfg = sy_config_ref((sy_config_t *)cfg);
}

void sy_monitor_reset_route(sy_monitor_t *m, const char *route)
{
    for (size_t r = 0; r < m->nroutes; r++) {
        route_state_t *rs = &m->routes[r];
        if (strcmp(rs->name, route) != 0)
            continue;
        for (int v = 0; v < 2; v++) {
            memset(rs->ring[v], 0, rs->nbuckets * sizeof(sy_side_t));
            memset(&rs->view.window[v], 0, sizeof(sy_side_t));
            gather(m, r, v, &rs->last[v]); /* what the shards hold now is the past too */
        }
        rs->view.window_s = 0;
        rs->since = ev_now(m->loop);
        rs->tripped = rs->warned = rs->critical = rs->refused = false;
        rs->drain_since = 0;
        sy_evidence_reset(rs->ev);
        rs->ev_since = ev_now(m->loop);
        memset(&rs->view.verdict, 0, sizeof(rs->view.verdict));
        atomic_store(&m->streak[r], 0);
        atomic_store(&m->alarm[r], 0);
        atomic_store(&m->mark[r], 0);
    }
}

void sy_monitor_restart_evidence(sy_monitor_t *m, const char *route)
{
    for (size_t r = 0; r < m->nroutes; r++)
        if (strcmp(m->routes[r].name, route) == 0) {
            sy_evidence_reset(m->routes[r].ev);
            m->routes[r].ev_since = ev_now(m->loop);
        }
}

void sy_monitor_on_second(sy_monitor_t *m, sy_second_fn fn, void *ud)
{
    m->on_second = fn;
    m->second_ud = ud;
}

void sy_monitor_count_trip(sy_monitor_t *m, const char *route)
{
    for (size_t r = 0; r < m->nroutes; r++)
        if (strcmp(m->routes[r].name, route) == 0)
            m->routes[r].view.trips++;
}

const sy_route_view_t *sy_monitor_route(const sy_monitor_t *m, size_t i)
{
    return i < m->nroutes ? &m->routes[i].view : NULL;
}

size_t sy_monitor_nroutes(const sy_monitor_t *m)
{
    return m->nroutes;
}

bool sy_monitor_legacy_down(const sy_monitor_t *m, const char *route)
{
    for (size_t r = 0; m != NULL && r < m->nroutes; r++) {
        const route_state_t *rs = &m->routes[r];
        if (strcmp(rs->name, route) == 0)
            return all_down(m, rs->conf->legacy_pool ? sy_config_pool(m->cfg, rs->conf->legacy_pool) : NULL);
    }
    return false;
}

uint64_t sy_monitor_unsignificant(const sy_monitor_t *m)
{
    return m->unsignificant;
}

const sy_colours_t *sy_monitor_colours(const sy_monitor_t *m)
{
    return m != NULL ? m->colours : NULL;
}
