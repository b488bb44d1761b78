/* Shadow results per route: per-worker shards, samples through bounded
 * single-producer queues, summed on the control thread. */
#include "healthcheck/shadowmon.h"

#include "flags/store.h"
#include "healthcheck/rules.h"
#include "proxy/log.h"
#include "proxy/shadow.h"
#include "proxy/snapshot.h"
#include "routing/route.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define QUEUE_SLOTS 64 /* per worker: mismatching pairs on their way to the control thread */
#define BODY_KEPT 2048 /* bytes of each body shown in a sample */

typedef struct cell {
    _Atomic uint64_t outcomes[SY_SHADOW_OUTCOMES];
    _Atomic uint64_t mismatches, by_kind[SY_DIFF_KINDS], noise_removed, noise_failed, samples_dropped;
    _Atomic uint64_t lat_sum[2];
    _Atomic uint32_t lat[2][SY_HIST_BUCKETS];
} cell_t;

#define BUMP(x, n) atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n), \
                                         memory_order_relaxed)
#define READ(x) atomic_load_explicit(&(x), memory_order_relaxed)

typedef struct slot {
    int route;
    char *json; /* owned by the queue while queued */
} slot_t;

typedef struct queue {
    _Atomic size_t head, tail; /* head: next to take (control); tail: next to fill (worker) */
    slot_t slots[QUEUE_SLOTS];
} queue_t;

typedef struct ring {
    char *items[SY_SHADOWMON_SAMPLES];
    size_t next, n;
} ring_t;

struct sy_shadowmon {
    struct ev_loop *loop;
    size_t nworkers;
    cell_t *cells;   /* [worker][route] */
    queue_t *queues; /* [worker] */
    ring_t rings[SY_SHADOWMON_MAX_ROUTES];
    ev_timer tick;
    uint64_t ticks;
    struct sy_flagstore *store;
    void (*warn)(void *ud, const char *route, const char *rule, const char *detail);
    void *warn_ud;
    bool warned[SY_SHADOWMON_MAX_ROUTES];
};

static cell_t *cell_of(const sy_shadowmon_t *m, size_t worker, size_t route)
{
    return &m->cells[worker * SY_SHADOWMON_MAX_ROUTES + route];
}

/* --- control side ---------------------------------------------------------------- */

static void drain(sy_shadowmon_t *m)
{
    for (size_t w = 0; w < m->nworkers; w++) {
        queue_t *q = &m->queues[w];
        size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
        size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
        for (; head != tail; head++) {
            slot_t *s = &q->slots[head % QUEUE_SLOTS];
            ring_t *r = &m->rings[s->route];
            free(r->items[r->next]);
            r->items[r->next] = s->json;
            r->next = (r->next + 1) % SY_SHADOWMON_SAMPLES;
            if (r->n < SY_SHADOWMON_SAMPLES)
                r->n++;
            s->json = NULL;
        }
        atomic_store_explicit(&q->head, head, memory_order_release);
    }
}

/* The warn_mismatch_rate rule of each route that has it. */
static void evaluate(sy_shadowmon_t *m)
{
    const sy_config_t *cfg = m->store ? sy_flagstore_config(m->store) : NULL;
    const sy_routes_t *rs = cfg ? sy_config_ext(cfg, "routes") : NULL;
    const sy_trip_confs_t *tc = cfg ? sy_trip_confs(cfg) : NULL;
    for (size_t i = 0; rs != NULL && tc != NULL && i < rs->n && i < tc->n && i < SY_SHADOWMON_MAX_ROUTES; i++) {
        if (tc->routes[i].warn_mismatch_rate <= 0)
            continue;
        sy_shadow_stats_t st;
        sy_shadowmon_stats(m, (int)i, &st);
        sy_verdict_t v;
        sy_rules_mismatch(&tc->routes[i], st.mismatches, st.outcomes[SY_SHADOW_COMPARED], &v);
        if (v.level == SY_LEVEL_WARN && !m->warned[i]) {
            m->warned[i] = true;
            sy_warn("shadow: route %s: %s: %s", rs->routes[i].name, v.rule, v.detail);
            if (m->warn != NULL)
                m->warn(m->warn_ud, rs->routes[i].name, v.rule, v.detail);
        } else if (v.level == SY_LEVEL_OK) {
            m->warned[i] = false;
        }
    }
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sy_shadowmon_t *m = t->data;
    drain(m);
    if (++m->ticks % 10 == 0)
        evaluate(m);
}

void sy_shadowmon_bind(sy_shadowmon_t *m, struct sy_flagstore *store,
                       void (*warn)(void *ud, const char *route, const char *rule, const char *detail), void *ud)
{
    if (m == NULL)
        return;
    m->store = store;
    m->warn = warn;
    m->warn_ud = ud;
}

sy_shadowmon_t *sy_shadowmon_create(struct ev_loop *control, size_t nworkers)
{
    sy_shadowmon_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->loop = control;
    m->nworkers = nworkers;
    m->cells = calloc(nworkers * SY_SHADOWMON_MAX_ROUTES, sizeof(cell_t));
    m->queues = calloc(nworkers, sizeof(queue_t));
    if (m->cells == NULL || m->queues == NULL) {
        free(m->cells);
        free(m->queues);
        free(m);
        return NULL;
    }
    ev_timer_init(&m->tick, tick_cb, 0.1, 0.1);
    m->tick.data = m;
    ev_timer_start(control, &m->tick);
    ev_unref(control); /* the tick alone does not keep the loop running */
    return m;
}

void sy_shadowmon_destroy(sy_shadowmon_t *m)
{
    if (m == NULL)
        return;
    ev_ref(m->loop);
    ev_timer_stop(m->loop, &m->tick);
    drain(m);
    for (size_t i = 0; i < SY_SHADOWMON_MAX_ROUTES; i++)
        for (size_t j = 0; j < SY_SHADOWMON_SAMPLES; j++)
            free(m->rings[i].items[j]);
    free(m->cells);
    free(m->queues);
    free(m);
}

bool sy_shadowmon_stats(const sy_shadowmon_t *m, int route, sy_shadow_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (m == NULL || route < 0 || route >= SY_SHADOWMON_MAX_ROUTES)
        return false;
    for (size_t w = 0; w < m->nworkers; w++) {
        cell_t *c = cell_of(m, w, (size_t)route);
        for (int i = 0; i < SY_SHADOW_OUTCOMES; i++)
            out->outcomes[i] += READ(c->outcomes[i]);
        out->mismatches += READ(c->mismatches);
        for (int i = 0; i < SY_DIFF_KINDS; i++)
            out->by_kind[i] += READ(c->by_kind[i]);
        out->noise_removed += READ(c->noise_removed);
        out->noise_failed += READ(c->noise_failed);
        out->samples_dropped += READ(c->samples_dropped);
        for (int v = 0; v < 2; v++) {
            for (size_t b = 0; b < SY_HIST_BUCKETS; b++) {
                uint32_t n = READ(c->lat[v][b]);
                out->latency[v].counts[b] += n;
                out->latency[v].total += n;
            }
            out->latency[v].sum_us += READ(c->lat_sum[v]);
        }
    }
    /* Sent to new: compared, or new's own failure, or legacy's copy unusable. */
    out->shadowed = out->outcomes[SY_SHADOW_COMPARED] + out->outcomes[SY_SHADOW_NEW_TIMEOUT] +
                    out->outcomes[SY_SHADOW_NEW_ERROR] + out->outcomes[SY_SHADOW_NEW_TOO_LARGE] +
                    out->outcomes[SY_SHADOW_SKIP_LEGACY_TOO_LARGE] + out->outcomes[SY_SHADOW_SKIP_LEGACY_FAILED];
    return true;
}

bool sy_shadowmon_mismatch_rate(const sy_shadowmon_t *m, const sy_config_t *cfg, const char *name, double *rate,
                                uint64_t *samples)
{
    *rate = 0;
    *samples = 0;
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    const sy_route_t *r = rs ? sy_route_find(rs, name) : NULL;
    sy_shadow_stats_t st;
    if (r == NULL || !sy_shadowmon_stats(m, (int)(r - rs->routes), &st))
        return false;
    *samples = st.outcomes[SY_SHADOW_COMPARED];
    *rate = *samples ? (double)st.mismatches / (double)*samples : 0.0;
    return true;
}

static const char *const outcome_names[SY_SHADOW_OUTCOMES] = {
    "compared",       "method",           "request_too_large", "inflight_limit", "no_endpoint", "legacy_failed",
    "legacy_too_large", "new_too_large", "new_timeout",       "new_error",      "out_of_memory"};

json_t *sy_shadowmon_json(sy_shadowmon_t *m, int route, const char *name)
{
    drain(m);
    sy_shadow_stats_t st;
    sy_shadowmon_stats(m, route, &st);
    json_t *kinds = json_object(), *outcomes = json_object(), *lat = json_object(), *samples = json_array();
    for (unsigned i = 0; i < SY_DIFF_KINDS; i++)
        json_object_set_new(kinds, sy_diff_kind_name(i), json_integer((json_int_t)st.by_kind[i]));
    for (int i = 0; i < SY_SHADOW_OUTCOMES; i++)
        json_object_set_new(outcomes, outcome_names[i], json_integer((json_int_t)st.outcomes[i]));
    static const char *const sides[] = {"legacy", "new"};
    for (int v = 0; v < 2; v++)
        json_object_set_new(lat, sides[v],
                            json_pack("{s:I, s:f, s:f, s:f}", "count", (json_int_t)st.latency[v].total, "p50_ms",
                                      sy_hist_quantile_us(&st.latency[v], 0.5) / 1e3, "p99_ms",
                                      sy_hist_quantile_us(&st.latency[v], 0.99) / 1e3, "mean_ms",
                                      st.latency[v].total ? (double)st.latency[v].sum_us / st.latency[v].total / 1e3
                                                          : 0.0));
    if (route >= 0 && route < SY_SHADOWMON_MAX_ROUTES) {
        ring_t *r = &m->rings[route];
        for (size_t k = 0; k < r->n; k++) { /* newest first */
            size_t i = (r->next + SY_SHADOWMON_SAMPLES - 1 - k) % SY_SHADOWMON_SAMPLES;
            json_t *j = r->items[i] ? json_loads(r->items[i], 0, NULL) : NULL;
            if (j != NULL)
                json_array_append_new(samples, j);
        }
    }
    uint64_t compared = st.outcomes[SY_SHADOW_COMPARED];
    bool warned = route >= 0 && route < SY_SHADOWMON_MAX_ROUTES && m->warned[route];
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:f, s:o, s:o, s:I, s:I, s:I, s:o, s:o}", "route", name, "shadowed",
                     (json_int_t)st.shadowed, "compared", (json_int_t)compared, "mismatches",
                     (json_int_t)st.mismatches, "mismatch_rate",
                     compared ? (double)st.mismatches / (double)compared : 0.0, "by_kind", kinds, "outcomes",
                     outcomes, "noise_removed", (json_int_t)st.noise_removed, "noise_failed",
                     (json_int_t)st.noise_failed, "samples_dropped", (json_int_t)st.samples_dropped, "latency",
                     lat, "samples", samples);
    if (j != NULL)
        json_object_set_new(j, "warned", json_boolean(warned)); /* warn_mismatch_rate fired, not cleared */
    return j;
}

/* --- worker side ----------------------------------------------------------------- */

static bool redacted(const sy_shadow_conf_t *conf, const sy_header_t *h)
{
    static const char *const always[] = {"authorization", "proxy-authorization", "cookie", "set-cookie"};
    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
        if (h->name_len == strlen(always[i]) && strncasecmp(h->name, always[i], h->name_len) == 0)
            return true;
    for (size_t i = 0; conf != NULL && i < conf->nredact; i++)
        if (h->name_len == strlen(conf->redact[i]) && strncasecmp(h->name, conf->redact[i], h->name_len) == 0)
            return true;
    return false;
}

/* A string of at most max bytes of p; bytes that are not valid UTF-8 become '?'. */
static json_t *text_json(const char *p, size_t len, size_t max)
{
    if (p == NULL)
        return json_string("");
    if (len > max)
        len = max;
    json_t *j = json_stringn(p, len);
    if (j != NULL)
        return j;
    char *tmp = malloc(len + 1);
    if (tmp == NULL)
        return json_string("");
    for (size_t i = 0; i < len; i++)
        tmp[i] = (unsigned char)p[i] >= 0x80 || p[i] == '\0' ? '?' : p[i];
    j = json_stringn(tmp, len);
    free(tmp);
    return j ? j : json_string("");
}

static json_t *side_json(const sy_shadow_conf_t *conf, const sy_shadow_side_t *s)
{
    json_t *h = json_object();
    for (size_t i = 0; i < s->nheaders && i < 64; i++) {
        char name[128];
        size_t n = s->headers[i].name_len < sizeof(name) - 1 ? s->headers[i].name_len : sizeof(name) - 1;
        for (size_t k = 0; k < n; k++)
            name[k] = (char)((s->headers[i].name[k] >= 'A' && s->headers[i].name[k] <= 'Z')
                                 ? s->headers[i].name[k] + 32
                                 : s->headers[i].name[k]);
        name[n] = '\0';
        json_object_set_new(h, name,
                            redacted(conf, &s->headers[i]) ? json_string("[redacted]")
                                                           : text_json(s->headers[i].value, s->headers[i].value_len,
                                                                       512));
    }
    return json_pack("{s:i, s:o, s:o, s:I, s:f}", "status", s->status, "headers", h, "body",
                     text_json(s->body, s->body_len, BODY_KEPT), "body_bytes", (json_int_t)s->body_len,
                     "latency_ms", s->latency_us / 1e3);
}

static void push_sample(sy_shadowmon_t *m, int worker, cell_t *c, const sy_shadow_result_t *r, const sy_diff_t *d)
{
    queue_t *q = &m->queues[worker];
    size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail - head >= QUEUE_SLOTS) {
        BUMP(c->samples_dropped, 1);
        return;
    }
    json_t *kinds = json_array(), *paths = json_array();
    for (unsigned i = 0; i < SY_DIFF_KINDS; i++)
        if (d->kinds & (1u << i))
            json_array_append_new(kinds, json_string(sy_diff_kind_name(i)));
    for (size_t i = 0; i < d->npaths; i++)
        json_array_append_new(paths, json_string(d->paths[i]));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:I, s:o, s:o}", "at_ms",
                          (json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, "route", r->route, "method",
                          r->method ? r->method : "", "target", r->target ? r->target : "", "kinds", kinds,
                          "paths", paths, "paths_dropped", (json_int_t)d->dropped, "legacy",
                          side_json(r->conf, r->legacy), "new", side_json(r->conf, r->shadow));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        BUMP(c->samples_dropped, 1);
        return;
    }
    slot_t *s = &q->slots[tail % QUEUE_SLOTS];
    s->route = r->route_index;
    s->json = text;
    atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
}

void sy_shadowmon_result(void *ctx, int worker, const struct sy_snapshot *snap, const sy_shadow_result_t *r)
{
    (void)snap;
    sy_shadowmon_t *m = ctx;
    if (worker < 0 || (size_t)worker >= m->nworkers || r->route_index < 0 ||
        r->route_index >= SY_SHADOWMON_MAX_ROUTES || r->outcome >= SY_SHADOW_OUTCOMES)
        return;
    cell_t *c = cell_of(m, (size_t)worker, (size_t)r->route_index);
    BUMP(c->outcomes[r->outcome], 1);
    if (r->outcome != SY_SHADOW_COMPARED || r->legacy == NULL || r->shadow == NULL)
        return;
    const sy_shadow_conf_t *conf = r->conf;
    sy_diff_opts_t o = {0};
    if (conf != NULL)
        o = (sy_diff_opts_t){conf->compare_headers, conf->ncompare_headers, conf->ignore_json, conf->nignore_json};
    sy_diff_t d;
    sy_diff_compare(&o, r->legacy, r->shadow, &d);
    if (r->noise_failed)
        BUMP(c->noise_failed, 1);
    if (d.kinds != 0 && r->noise != NULL) {
        sy_diff_t noise;
        sy_diff_compare(&o, r->legacy, r->noise, &noise);
        if (sy_diff_subtract(&d, &noise) > 0 && d.kinds == 0)
            BUMP(c->noise_removed, 1);
    }
    uint64_t us[2] = {r->legacy->latency_us, r->shadow->latency_us};
    for (int v = 0; v < 2; v++) {
        uint64_t x = us[v] > SY_HIST_MAX_US ? SY_HIST_MAX_US : us[v];
        BUMP(c->lat[v][sy_hist_index(x)], 1);
        BUMP(c->lat_sum[v], x);
    }
    if (d.kinds == 0)
        return;
    BUMP(c->mismatches, 1);
    for (unsigned i = 0; i < SY_DIFF_KINDS; i++)
        if (d.kinds & (1u << i))
            BUMP(c->by_kind[i], 1);
    push_sample(m, worker, c, r, &d);
}
