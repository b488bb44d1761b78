#include "healthcheck/health.h"

#include "healthcheck/endpoints.h"

#include "proxy/h1client.h"
#include "proxy/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The answer is read whole (its body discarded) before the probe closes: closing
 * with bytes unread would reset the connection under the backend. Bounds: */
static const sy_h1client_limits_t probe_limits = {
    .max_head = 8192,
    .max_headers = 64,
    .max_body = 1u << 20, /* past this the status decides and the probe closes */
    .keep_body = false,
};

typedef struct probe {
    struct sy_health *h;
    const sy_pool_t *pool;
    const sy_endpoint_t *ep;
    sy_h1client_t *client; /* owned: the probe's exchange */
    ev_timer timer;        /* the next probe */
    int ok_run, fail_run;
} probe_t;

struct sy_health {
    struct ev_loop *loop;
    sy_config_t *cfg;
    sy_endpoints_t *eps;   /* the owner of the endpoints' state, which the probes set */
    probe_t *probes;
    size_t n;
};

static double interval_of(const probe_t *p)
{
    /* Without configured checks an endpoint is only probed while it is out. */
    return p->pool->has_health ? (double)p->pool->health.interval / 1e3 : 1.0;
}

static void schedule(probe_t *p, double after)
{
    ev_timer_stop(p->h->loop, &p->timer);
    ev_timer_set(&p->timer, after, 0.);
    ev_timer_start(p->h->loop, &p->timer);
}

static void finish(probe_t *p, bool ok, const char *why)
{
    int64_t rise = p->pool->has_health ? p->pool->health.rise : 2;
    int64_t fall = p->pool->has_health ? p->pool->health.fall : 3;
    sy_endpoints_t *eps = p->h->eps;
    const sy_config_t *cfg = p->h->cfg;
    bool down = sy_endpoints_is_down(eps, cfg, p->ep);
    if (ok) {
        p->ok_run++;
        p->fail_run = 0;
        sy_endpoints_probed(eps, cfg, p->ep, p->ok_run);
        if (down && p->ok_run >= rise) {
            sy_endpoints_set_down(eps, cfg, p->ep, false);
            sy_info("health: %s (pool %s) is up again after %d good probes", p->ep->name, p->pool->name, p->ok_run);
        }
    } else {
        p->fail_run++;
        p->ok_run = 0;
        sy_endpoints_probed(eps, cfg, p->ep, 0);
        if (!down && p->fail_run >= fall) {
            sy_endpoints_set_down(eps, cfg, p->ep, true);
            sy_warn("health: %s (pool %s) is down: %s (%d failed probes)", p->ep->name, p->pool->name, why,
                    p->fail_run);
        }
    }
    schedule(p, interval_of(p));
}

/* The exchange ended. A connect-only probe succeeds by connecting; an HTTP one
 * by a 2xx or 3xx status on an answer read to its end (or to the body bound). */
static void probe_done(sy_h1client_t *c, void *ud, const char *err)
{
    probe_t *p = ud;
    const sy_h1client_resp_t *r = sy_h1client_response(c);
    char why[256];
    if (err == sy_h1client_err_timeout) {
        finish(p, false, "probe timed out");
    } else if (err == NULL && r->status == 0) {
        finish(p, true, NULL); /* connected, and only that was asked */
    } else if (err == sy_h1client_err_refused || err == sy_h1client_err_connect || err == sy_h1client_err_tls) {
        finish(p, false, err);
    } else if (r->status == 0) {
        snprintf(why, sizeof(why), "no HTTP status in the answer: %s", err);
        finish(p, false, why);
    } else if (err == NULL || err == sy_h1client_err_body_too_large) {
        snprintf(why, sizeof(why), "%s answered %d", p->pool->health.path, r->status);
        finish(p, r->status >= 200 && r->status < 400, why);
    } else {
        snprintf(why, sizeof(why), "the answer ended early or was malformed: %s", err);
        finish(p, false, why);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    probe_t *p = t->data;
    (void)loop;
    (void)revents;
    if (!p->pool->has_health && !sy_endpoints_is_down(p->h->eps, p->h->cfg, p->ep)) {
        schedule(p, interval_of(p)); /* nothing to re-probe */
        return;
    }
    double timeout = p->pool->has_health ? (double)p->pool->health.timeout / 1e3 : 1.0;
    int rc;
    /* A TLS endpoint is probed over TLS: a handshake that fails is a failed probe. */
    sy_h1client_set_tls(p->client, p->ep->tls, p->ep->tls_sni, p->ep->tls_host);
    if (!p->pool->has_health || p->pool->health.path == NULL) {
        rc = sy_h1client_connect(p->client, &p->ep->addr, timeout, probe_done, p);
    } else {
        sy_h1client_request_t req = {
            .method = "GET",
            .target = p->pool->health.path,
            .host = strncmp(p->ep->name, "https://", 8) == 0 ? p->ep->name + 8 : p->ep->name,
            .headers = "User-Agent: switchyard-health\r\n",
        };
        rc = sy_h1client_start(p->client, &p->ep->addr, &req, timeout, probe_done, p);
    }
    if (rc != 0)
        finish(p, false, rc == SY_ENOMEM ? "out of memory" : "cannot send the probe");
}

static void probes_free(sy_health_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        probe_t *p = &h->probes[i];
        ev_timer_stop(h->loop, &p->timer);
        sy_h1client_destroy(p->client);
    }
    free(h->probes);
    h->probes = NULL;
    h->n = 0;
}

static int load(sy_health_t *h, const sy_config_t *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->npools; i++)
        n += cfg->pools[i].nendpoints;
    probe_t *probes = calloc(n + 1, sizeof(*probes));
    if (probes == NULL)
        return SY_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        probes[i].client = sy_h1client_create(h->loop, &probe_limits);
        if (probes[i].client == NULL) {
            for (size_t k = 0; k < i; k++)
                sy_h1client_destroy(probes[k].client);
            free(probes);
            return SY_ENOMEM;
        }
    }
    probes_free(h);
    h->probes = probes;
    h->n = n;
    size_t k = 0;
    for (size_t i = 0; i < cfg->npools; i++) {
        const sy_pool_t *pool = &cfg->pools[i];
        for (size_t e = 0; e < pool->nendpoints; e++) {
            probe_t *p = &probes[k++];
            p->h = h;
            p->pool = pool;
            p->ep = &pool->endpoints[e];
            ev_init(&p->timer, timer_cb);
            p->timer.data = p;
            /* Spread the first probes over the interval. */
            schedule(p, 0.05 + interval_of(p) * (double)(k % 10) / 10.0);
        }
    }
    return 0;
}

sy_health_t *sy_health_create(struct ev_loop *loop, const sy_config_t *cfg, sy_endpoints_t *eps)
{
    sy_health_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->loop = loop;
    h->eps = eps;
    if (load(h, cfg) != 0) {
        free(h);
        return NULL;
    }
    h->cfg = sy_config_ref((sy_config_t *)cfg);
    return h;
}

void sy_health_reload(sy_health_t *h, const sy_config_t *cfg)
{
    if (load(h, cfg) != 0) {
        sy_error("health: out of memory on reload; probes of the previous config go on");
        return;
    }
    sy_config_release(h->cfg);
    h->cfg = sy_config_ref((sy_config_t *)cfg);
}

void sy_health_destroy(sy_health_t *h)
{
    if (h == NULL)
        return;
    probes_free(h);
    sy_config_release(h->cfg);
    free(h);
}
