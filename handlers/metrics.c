/* GET /metrics: the Prometheus text format (0.0.4), written from one table of
 * metric families. Each family is a name, a type, a help line and a function
 * that writes its samples; the names and labels are an outside contract
 * (DESIGN.md), so a family is added at the end or where its kind belongs and
 * never renamed. */
#include "handlers/admin_conn.h"

#include "healthcheck/colours.h"

#include "healthcheck/shadowmon.h"
#include "proxy/shadow.h"
#include "routing/route.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

/* The text grows by doubling up to 64 MiB; past that `full` is set and the
 * answer is a 500. */
typedef struct text {
    char *p;
    size_t len, cap;
    bool full;
} text_t;

static void text_append(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_append(text_t *t, const char *fmt, ...)
{
    if (t->full)
        return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = t->p ? vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2 + (n > 0 ? (size_t)n : 0) + 65536;
        char *np = ncap < (64u << 20) ? realloc(t->p, ncap) : NULL;
        if (np == NULL) {
            t->full = true;
            return;
        }
        t->p = np;
        t->cap = ncap;
    }
}

/* What the samples are read from, gathered once per scrape. */
typedef struct scrape {
    text_t t;
    const sy_monitor_t *m;
    size_t nviews; /* routes the monitor has views of */
    const sy_config_t *cfg;
    const sy_endpoints_t *eps;
    const sy_routes_t *rs;
    const sy_route_flags_t *flags;
    const sy_pool_flags_t *pflags;
    const sy_colours_t *colours;
    sy_flagstore_status_t st;
    sy_audit_status_t as;
    const sy_shadowmon_t *shadow;
} scrape_t;

typedef struct family {
    const char *name;
    const char *type;
    const char *help;
    bool record_only; /* written only when the config has a record (postgres) */
    void (*samples)(scrape_t *x, const struct family *f);
    size_t arg; /* for the generic writers: an offset, or the kind count */
} family_t;

#define OUT(...) text_append(&x->t, __VA_ARGS__)

static const char *const variants[] = {"legacy", "new"};
static const char *const streams[] = {"events", "windows"};

static const sy_route_view_t *view(const scrape_t *x, size_t i)
{
    return sy_monitor_route(x->m, i);
}

static uint64_t u64_at(const void *base, size_t off)
{
    return *(const uint64_t *)((const char *)base + off);
}

/* {route, variant}: a counter of sy_side_t (since start) at offset f->arg. */
static void per_side(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; i < x->nviews; i++)
        for (int v = 0; v < 2; v++)
            OUT("%s{route=\"%s\",variant=\"%s\"} %llu\n", f->name, view(x, i)->route, variants[v],
                (unsigned long long)u64_at(&view(x, i)->total[v], f->arg));
}

/* {route, variant, kind}: the first f->arg error kinds (client aborts apart). */
static void per_side_kind(scrape_t *x, const family_t *f)
{
    static const char *const kinds[] = {"status_listed", "status_5xx", "connect", "reset", "timeout", "client"};
    for (size_t i = 0; i < x->nviews; i++)
        for (int v = 0; v < 2; v++)
            for (size_t k = 0; k < f->arg && k < SY_ARRAY_LEN(kinds); k++)
                OUT("%s{route=\"%s\",variant=\"%s\",kind=\"%s\"} %llu\n", f->name, view(x, i)->route, variants[v],
                    kinds[k], (unsigned long long)view(x, i)->total[v].by_kind[k]);
}

/* {route}: a counter of sy_route_view_t at offset f->arg. */
static void per_view(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; i < x->nviews; i++)
        OUT("%s{route=\"%s\"} %llu\n", f->name, view(x, i)->route, (unsigned long long)u64_at(view(x, i), f->arg));
}

static void fallbacks(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; i < x->nviews; i++)
        OUT("%s{route=\"%s\",reason=\"connect\"} %llu\n", f->name, view(x, i)->route,
            (unsigned long long)view(x, i)->fallbacks);
}

static void duration(scrape_t *x, const family_t *f)
{
    static const double le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    for (size_t i = 0; i < x->nviews; i++) {
        const char *rn = view(x, i)->route;
        for (int v = 0; v < 2; v++) {
            const sy_hist_t *h = &view(x, i)->total[v].total;
            for (size_t k = 0; k < SY_ARRAY_LEN(le); k++)
                OUT("%s_bucket{route=\"%s\",variant=\"%s\",le=\"%g\"} %llu\n", f->name, rn, variants[v], le[k],
                    (unsigned long long)sy_hist_count_le(h, (uint64_t)(le[k] * 1e6)));
            OUT("%s_bucket{route=\"%s\",variant=\"%s\",le=\"+Inf\"} %llu\n", f->name, rn, variants[v],
                (unsigned long long)h->total);
            OUT("%s_sum{route=\"%s\",variant=\"%s\"} %.6f\n", f->name, rn, variants[v], (double)h->sum_us / 1e6);
            OUT("%s_count{route=\"%s\",variant=\"%s\"} %llu\n", f->name, rn, variants[v], (unsigned long long)h->total);
        }
    }
}

static void route_percent(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; x->rs && i < x->rs->n; i++)
        OUT("%s{route=\"%s\"} %.2f\n", f->name, x->rs->routes[i].name, x->flags[i].percent_bp / 100.0);
}

static void route_tripped(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; x->rs && i < x->rs->n; i++)
        OUT("%s{route=\"%s\"} %d\n", f->name, x->rs->routes[i].name, x->flags[i].state == SY_STATE_TRIPPED);
}

static void route_state(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; x->rs && i < x->rs->n; i++)
        for (int st = 0; st < 4; st++)
            OUT("%s{route=\"%s\",state=\"%s\"} %d\n", f->name, x->rs->routes[i].name,
                sy_state_name((sy_route_state_t)st), x->flags[i].state == (sy_route_state_t)st);
}

static void redis_connected(scrape_t *x, const family_t *f)
{
    OUT("%s %d\n", f->name, x->st.connected);
}

static void refused_edits(scrape_t *x, const family_t *f)
{
    OUT("%s %llu\n", f->name, (unsigned long long)x->st.refused);
}

static void postgres_connected(scrape_t *x, const family_t *f)
{
    OUT("%s %d\n", f->name, x->as.schema_ready);
}

/* A value of sy_audit_status_t at offset f->arg. */
static void audit_value(scrape_t *x, const family_t *f)
{
    OUT("%s %llu\n", f->name, (unsigned long long)u64_at(&x->as, f->arg));
}

/* {stream}: one per journal stream. */
static void journal_pending(scrape_t *x, const family_t *f)
{
    for (int k = 0; k < 2; k++)
        OUT("%s{stream=\"%s\"} %llu\n", f->name, streams[k],
            (unsigned long long)(x->as.journal.next[k] - 1 - x->as.journal.acked[k]));
}

/* {stream}: an array of sy_audit_status_t, one per stream, at offset f->arg. */
static void per_stream(scrape_t *x, const family_t *f)
{
    for (int k = 0; k < 2; k++)
        OUT("%s{stream=\"%s\"} %llu\n", f->name, streams[k],
            (unsigned long long)u64_at(&x->as, f->arg + (size_t)k * sizeof(uint64_t)));
}

static void endpoint_up(scrape_t *x, const family_t *f)
{
    const sy_config_t *cfg = x->cfg;
    for (size_t p = 0; p < cfg->npools; p++)
        for (size_t e = 0; e < cfg->pools[p].nendpoints; e++)
            OUT("%s{pool=\"%s\",endpoint=\"%s\"} %d\n", f->name, cfg->pools[p].name, cfg->pools[p].endpoints[e].name,
                !sy_endpoints_is_down(x->eps, cfg, &cfg->pools[p].endpoints[e]));
}

static const char *const colors[] = {"blue", "green"};

/* {pool, color}: 1 for the colour that takes new connections. */
static void pool_active(scrape_t *x, const family_t *f)
{
    for (size_t p = 0; p < x->cfg->npools; p++)
        if (x->cfg->pools[p].colored)
            for (int k = 0; k < 2; k++)
                OUT("%s{pool=\"%s\",color=\"%s\"} %d\n", f->name, x->cfg->pools[p].name, colors[k],
                    x->pflags[p].active == k);
}

/* {pool}: exchanges still in flight on the colour that is no longer active. */
static void pool_draining(scrape_t *x, const family_t *f)
{
    for (size_t p = 0; p < x->cfg->npools; p++) {
        const sy_pool_t *pool = &x->cfg->pools[p];
        if (!pool->colored)
            continue;
        int old = 1 - x->pflags[p].active;
        long n = 0;
        for (size_t e = pool->color_first[old]; e < pool->color_first[old] + pool->color_count[old]; e++)
            n += sy_endpoints_inflight(x->eps, x->cfg, &pool->endpoints[e]);
        OUT("%s{pool=\"%s\"} %ld\n", f->name, pool->name, n);
    }
}

/* {pool, color}: a counter of the colour's numbers at offset f->arg of sy_side_t. */
static void per_color(scrape_t *x, const family_t *f)
{
    sy_side_t *sd = malloc(sizeof(*sd));
    for (size_t p = 0; sd != NULL && p < x->cfg->npools && p < SY_COLOURS_MAX_POOLS; p++)
        for (int k = 0; x->cfg->pools[p].colored && k < 2; k++) {
            sy_colours_get(x->colours, p, k, sd);
            OUT("%s{pool=\"%s\",color=\"%s\"} %llu\n", f->name, x->cfg->pools[p].name, colors[k],
                (unsigned long long)u64_at(sd, f->arg));
        }
    free(sd);
}

static void color_duration(scrape_t *x, const family_t *f)
{
    static const double le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    sy_side_t *sd = malloc(sizeof(*sd));
    for (size_t p = 0; sd != NULL && p < x->cfg->npools && p < SY_COLOURS_MAX_POOLS; p++)
        for (int k = 0; x->cfg->pools[p].colored && k < 2; k++) {
            const char *pn = x->cfg->pools[p].name;
            sy_colours_get(x->colours, p, k, sd);
            for (size_t b = 0; b < SY_ARRAY_LEN(le); b++)
                OUT("%s_bucket{pool=\"%s\",color=\"%s\",le=\"%g\"} %llu\n", f->name, pn, colors[k], le[b],
                    (unsigned long long)sy_hist_count_le(&sd->total, (uint64_t)(le[b] * 1e6)));
            OUT("%s_bucket{pool=\"%s\",color=\"%s\",le=\"+Inf\"} %llu\n", f->name, pn, colors[k],
                (unsigned long long)sd->total.total);
            OUT("%s_sum{pool=\"%s\",color=\"%s\"} %.6f\n", f->name, pn, colors[k], (double)sd->total.sum_us / 1e6);
            OUT("%s_count{pool=\"%s\",color=\"%s\"} %llu\n", f->name, pn, colors[k],
                (unsigned long long)sd->total.total);
        }
    free(sd);
}

/* Shadow traffic, for routes that shadow (healthcheck/shadowmon.h). */
static void shadow_requests(scrape_t *x, const family_t *f)
{
    static const char *const names[SY_SHADOW_OUTCOMES] = {
        "compared",         "method",        "request_too_large", "inflight_limit", "no_endpoint", "legacy_failed",
        "legacy_too_large", "new_too_large", "new_timeout",       "new_error",      "out_of_memory"};
    for (size_t i = 0; x->shadow && x->rs && i < x->rs->n; i++) {
        sy_shadow_stats_t st;
        if (sy_shadow_conf_of(x->cfg, (int)i) == NULL || !sy_shadowmon_stats(x->shadow, (int)i, &st))
            continue;
        for (int k = 0; k < SY_SHADOW_OUTCOMES; k++)
            OUT("%s{route=\"%s\",outcome=\"%s\"} %llu\n", f->name, x->rs->routes[i].name, names[k],
                (unsigned long long)st.outcomes[k]);
    }
}

static void shadow_mismatches(scrape_t *x, const family_t *f)
{
    for (size_t i = 0; x->shadow && x->rs && i < x->rs->n; i++) {
        sy_shadow_stats_t st;
        if (sy_shadow_conf_of(x->cfg, (int)i) == NULL || !sy_shadowmon_stats(x->shadow, (int)i, &st))
            continue;
        for (unsigned k = 0; k < SY_DIFF_KINDS; k++)
            OUT("%s{route=\"%s\",kind=\"%s\"} %llu\n", f->name, x->rs->routes[i].name, sy_diff_kind_name(k),
                (unsigned long long)st.by_kind[k]);
    }
}

static void shadow_duration(scrape_t *x, const family_t *f)
{
    static const double le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    for (size_t i = 0; x->shadow && x->rs && i < x->rs->n; i++) {
        sy_shadow_stats_t st;
        if (sy_shadow_conf_of(x->cfg, (int)i) == NULL || !sy_shadowmon_stats(x->shadow, (int)i, &st))
            continue;
        const char *rn = x->rs->routes[i].name;
        for (int v = 0; v < 2; v++) {
            const sy_hist_t *h = &st.latency[v];
            for (size_t k = 0; k < SY_ARRAY_LEN(le); k++)
                OUT("%s_bucket{route=\"%s\",variant=\"%s\",le=\"%g\"} %llu\n", f->name, rn, variants[v], le[k],
                    (unsigned long long)sy_hist_count_le(h, (uint64_t)(le[k] * 1e6)));
            OUT("%s_bucket{route=\"%s\",variant=\"%s\",le=\"+Inf\"} %llu\n", f->name, rn, variants[v],
                (unsigned long long)h->total);
            OUT("%s_sum{route=\"%s\",variant=\"%s\"} %.6f\n", f->name, rn, variants[v], (double)h->sum_us / 1e6);
            OUT("%s_count{route=\"%s\",variant=\"%s\"} %llu\n", f->name, rn, variants[v], (unsigned long long)h->total);
        }
    }
}

/* The families, in the order they are written. */
static const family_t families[] = {
    {"switchyard_requests_total", "counter", "Requests answered, by route and variant.", false, per_side,
     offsetof(sy_side_t, requests)},
    {"switchyard_errors_total", "counter",
     "Errors by kind: a 5xx or listed status from the backend, a connect failure, a reset, a timeout; client "
     "aborts are counted apart and are not errors.",
     false, per_side_kind, 5},
    {"switchyard_client_aborts_total", "counter", "Exchanges the client abandoned.", false, per_side,
     offsetof(sy_side_t, by_kind[5])},
    {"switchyard_fallbacks_total", "counter",
     "Requests bound for new served by legacy because new failed before anything was sent (each is also a "
     "connect error of new).",
     false, fallbacks, 0},
    {"switchyard_request_duration_seconds", "histogram", "Time from the request's first byte to the response's last.",
     false, duration, 0},
    {"switchyard_route_percent", "gauge", "Share of users routed to new, in percent.", false, route_percent, 0},
    {"switchyard_route_tripped", "gauge", "1 while the route is tripped (everyone on legacy).", false, route_tripped,
     0},
    {"switchyard_route_state", "gauge", "The route's state (1 for the current one).", false, route_state, 0},
    {"switchyard_trips_total", "counter", "Automatic trips since start (comparator rules, errors in a row, Alertmanager alerts).", false, per_view,
     offsetof(sy_route_view_t, trips)},
    {"switchyard_warnings_total", "counter", "Warnings (warn_* rules) since start.", false, per_view,
     offsetof(sy_route_view_t, warnings)},
    {"switchyard_criticals_total", "counter", "Critical alerts (critical_* rules) since start.", false, per_view,
     offsetof(sy_route_view_t, criticals)},
    {"switchyard_redis_connected", "gauge", "1 while the flag store is connected to Redis.", false, redis_connected,
     0},
    {"switchyard_refused_edits_total", "counter", "Flag edits refused as invalid.", false, refused_edits, 0},
    {"switchyard_postgres_connected", "gauge", "1 while the record's PostgreSQL connection is up and migrated.", true,
     postgres_connected, 0},
    {"switchyard_journal_bytes", "gauge", "Bytes in the local journal (records PostgreSQL may not have yet).", true,
     audit_value, offsetof(sy_audit_status_t, journal.bytes)},
    {"switchyard_journal_max_bytes", "gauge", "The journal's bound (postgres.journal_max).", true, audit_value,
     offsetof(sy_audit_status_t, journal.max_bytes)},
    {"switchyard_journal_pending", "gauge", "Records journaled and not yet acknowledged by PostgreSQL.", true,
     journal_pending, 0},
    {"switchyard_journal_dropped_total", "counter",
     "Records lost at the journal's bound or on a disk error (windows first; every event lost is also logged "
     "whole).",
     true, per_stream, offsetof(sy_audit_status_t, journal.dropped)},
    {"switchyard_record_inserted_total", "counter", "Records inserted into PostgreSQL since start.", true,
     per_stream, offsetof(sy_audit_status_t, inserted)},
    {"switchyard_endpoint_up", "gauge", "1 when the endpoint takes traffic, 0 when health checks took it out.", false,
     endpoint_up, 0},
    {"switchyard_pool_active_color", "gauge", "1 for the colour of a blue-green pool that takes new requests.", false,
     pool_active, 0},
    {"switchyard_pool_draining", "gauge",
     "Exchanges still in flight on the colour of a blue-green pool that is no longer active.", false, pool_draining,
     0},
    {"switchyard_color_requests_total", "counter", "Requests answered by each colour of a blue-green pool.", false,
     per_color, offsetof(sy_side_t, requests)},
    {"switchyard_color_errors_total", "counter",
     "Errors (under the sending route's rules) of each colour of a blue-green pool.", false, per_color,
     offsetof(sy_side_t, errors)},
    {"switchyard_color_request_duration_seconds", "histogram",
     "Time from the request's first byte to the response's last, by colour of a blue-green pool.", false,
     color_duration, 0},
    {"switchyard_shadow_requests_total", "counter",
     "Requests sampled for shadow traffic, by how each ended (compared, or why not).", false, shadow_requests, 0},
    {"switchyard_shadow_mismatches_total", "counter",
     "Compared shadow pairs with a real difference of that kind (after noise subtraction).", false,
     shadow_mismatches, 0},
    {"switchyard_shadow_duration_seconds", "histogram",
     "Latency of legacy and new on the same shadowed requests (request read to response end).", false,
     shadow_duration, 0},
};

void sy_admin_ep_metrics(admin_conn_t *c, const char *name, json_t *body)
{
    (void)name;
    (void)body;
    scrape_t sx = {.m = c->a->monitor, .cfg = sy_flagstore_config(c->a->store), .eps = c->a->endpoints,
                   .shadow = c->a->shadow}, *x = &sx;
    x->nviews = x->m ? sy_monitor_nroutes(x->m) : 0;
    x->rs = sy_config_ext(x->cfg, "routes");
    x->flags = sy_flagstore_flags(c->a->store);
    x->pflags = sy_flagstore_pools(c->a->store);
    x->colours = sy_monitor_colours(c->a->monitor);
    sy_flagstore_status(c->a->store, &x->st);
    sy_audit_status(c->a->audit, &x->as);
    for (size_t i = 0; i < SY_ARRAY_LEN(families); i++) {
        const family_t *f = &families[i];
        if (f->record_only && !x->as.configured)
            continue;
        OUT("# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
        f->samples(x, f);
    }
    if (x->t.full) {
        free(x->t.p);
        respond_error(c, 500, "metrics too large");
        return;
    }
    sy_admin_respond_big(c, x->t.p, x->t.len, "text/plain; version=0.0.4", false);
}
