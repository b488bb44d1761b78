#include "healthcheck/history.h"

#include "healthcheck/hist.h"
#include "healthcheck/rules.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One second of one side: what a sparkline point needs, nothing more. */
typedef struct sample {
    uint32_t requests, errors;
    float p50_ms, p95_ms, p99_ms;
} sample_t;

typedef struct hroute {
    char *name;
    sy_side_t last[2];           /* the monitor's since-start numbers a second ago */
    sample_t ring[2][SY_HISTORY_SECONDS];
} hroute_t;

struct sy_history {
    struct ev_loop *loop;
    const sy_monitor_t *monitor;
    ev_timer tick;
    hroute_t *routes;
    size_t nroutes;
    size_t head;   /* the slot the next sample goes to */
    size_t filled; /* samples held, up to SY_HISTORY_SECONDS */
    double at;     /* when the newest sample was taken */
    sy_side_t *scratch;
};

static void routes_free(sy_history_t *h)
{
    for (size_t i = 0; i < h->nroutes; i++)
        free(h->routes[i].name);
    free(h->routes);
    h->routes = NULL;
    h->nroutes = 0;
    h->head = h->filled = 0;
}

/* Is the monitor's route set the one the ring holds? */
static bool same_routes(const sy_history_t *h)
{
    size_t n = sy_monitor_nroutes(h->monitor);
    if (n != h->nroutes || h->routes == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(sy_monitor_route(h->monitor, i)->route, h->routes[i].name) != 0)
            return false;
    return true;
}

/* A new route set: the ring starts empty, "last" from the numbers now. */
static void rebuild(sy_history_t *h)
{
    routes_free(h);
    size_t n = sy_monitor_nroutes(h->monitor);
    hroute_t *rs = calloc(n + 1, sizeof(*rs));
    if (rs == NULL)
        return; /* tried again next second */
    for (size_t i = 0; i < n; i++) {
        const sy_route_view_t *v = sy_monitor_route(h->monitor, i);
        rs[i].name = strdup(v->route);
        if (rs[i].name == NULL) {
            for (size_t k = 0; k < i; k++)
                free(rs[k].name);
            free(rs);
            return;
        }
        rs[i].last[0] = v->total[0];
        rs[i].last[1] = v->total[1];
    }
    h->routes = rs;
    h->nroutes = n;
}

/* The second's numbers: now minus a second ago (a counter that went down
 * restarted: the second counts from zero). */
static void take(sample_t *s, sy_side_t *d, const sy_side_t *now, const sy_side_t *before)
{
    bool restarted = now->requests < before->requests || now->total.total < before->total.total;
    *d = *now;
    if (!restarted) {
        d->requests -= before->requests;
        d->errors = now->errors >= before->errors ? now->errors - before->errors : 0;
        d->total.total -= before->total.total;
        if (d->total.total != 0)
            for (unsigned i = 0; i < SY_HIST_BUCKETS; i++)
                d->total.counts[i] = now->total.counts[i] >= before->total.counts[i]
                                         ? now->total.counts[i] - before->total.counts[i]
                                         : 0;
    }
    s->requests = d->requests > UINT32_MAX ? UINT32_MAX : (uint32_t)d->requests;
    s->errors = d->errors > UINT32_MAX ? UINT32_MAX : (uint32_t)d->errors;
    bool any = d->total.total != 0;
    s->p50_ms = any ? (float)(sy_hist_quantile_us(&d->total, 0.50) / 1000.0) : 0;
    s->p95_ms = any ? (float)(sy_hist_quantile_us(&d->total, 0.95) / 1000.0) : 0;
    s->p99_ms = any ? (float)(sy_hist_quantile_us(&d->total, 0.99) / 1000.0) : 0;
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_history_t *h = t->data;
    (void)revents;
    if (!same_routes(h)) {
        rebuild(h);
        return; /* the first sample of the new set is next second's */
    }
    for (size_t i = 0; i < h->nroutes; i++) {
        const sy_route_view_t *v = sy_monitor_route(h->monitor, i);
        for (int s = 0; s < 2; s++) {
            take(&h->routes[i].ring[s][h->head], h->scratch, &v->total[s], &h->routes[i].last[s]);
            h->routes[i].last[s] = v->total[s];
        }
    }
    h->head = (h->head + 1) % SY_HISTORY_SECONDS;
    if (h->filled < SY_HISTORY_SECONDS)
        h->filled++;
    h->at = ev_now(loop);
}

sy_history_t *sy_history_create(struct ev_loop *loop, const sy_monitor_t *m)
{
    sy_history_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->scratch = malloc(sizeof(*h->scratch));
    if (h->scratch == NULL) {
        free(h);
        return NULL;
    }
    h->loop = loop;
    h->monitor = m;
    rebuild(h); /* now, so that the first second's requests are in the first sample */
    ev_timer_init(&h->tick, tick_cb, 1.0, 1.0);
    h->tick.data = h;
    ev_timer_start(loop, &h->tick);
    return h;
}

void sy_history_destroy(sy_history_t *h)
{
    if (h == NULL)
        return;
    ev_timer_stop(h->loop, &h->tick);
    routes_free(h);
    free(h->scratch);
    free(h);
}

static json_t *side_json(const sample_t *ring, size_t head, size_t n)
{
    json_t *req = json_array(), *err = json_array(), *p50 = json_array(), *p95 = json_array(), *p99 = json_array();
    for (size_t k = 0; k < n; k++) {
        const sample_t *s = &ring[(head + SY_HISTORY_SECONDS - n + k) % SY_HISTORY_SECONDS];
        json_array_append_new(req, json_integer(s->requests));
        json_array_append_new(err, json_integer(s->errors));
        /* two decimals are plenty for a sparkline and keep the answer small */
        json_array_append_new(p50, json_real((double)(int64_t)(s->p50_ms * 100.0f + 0.5f) / 100.0));
        json_array_append_new(p95, json_real((double)(int64_t)(s->p95_ms * 100.0f + 0.5f) / 100.0));
        json_array_append_new(p99, json_real((double)(int64_t)(s->p99_ms * 100.0f + 0.5f) / 100.0));
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "requests", req, "errors", err, "p50_ms", p50, "p95_ms", p95,
                     "p99_ms", p99);
}

json_t *sy_history_json(const sy_history_t *h, size_t seconds)
{
    size_t n = h->filled < seconds ? h->filled : seconds;
    json_t *routes = json_array();
    for (size_t i = 0; i < h->nroutes; i++)
        json_array_append_new(routes, json_pack("{s:s, s:o, s:o}", "name", h->routes[i].name, "legacy",
                                                side_json(h->routes[i].ring[0], h->head, n), "new",
                                                side_json(h->routes[i].ring[1], h->head, n)));
    return json_pack("{s:i, s:I, s:f, s:o}", "period_s", 1, "samples", (json_int_t)n, "at", h->at, "routes", routes);
}
