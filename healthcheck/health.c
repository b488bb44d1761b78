#include "healthcheck/health.h"

#include "proxy/log.h"
#include "proxy/net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum { PH_IDLE, PH_CONNECTING, PH_SENT } phase_t;

typedef struct probe {
    struct sy_health *h;
    const sy_pool_t *pool;
    sy_endpoint_t *ep;
    int fd;
    ev_io io;
    ev_timer timer;
    phase_t phase;
    char buf[128];
    size_t len;
    int ok_run, fail_run;
} probe_t;

struct sy_health {
    struct ev_loop *loop;
    sy_config_t *cfg;
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
    if (p->fd >= 0) {
        ev_io_stop(p->h->loop, &p->io);
        close(p->fd);
        p->fd = -1;
    }
    p->phase = PH_IDLE;
    int64_t rise = p->pool->has_health ? p->pool->health.rise : 2;
    int64_t fall = p->pool->has_health ? p->pool->health.fall : 3;
    bool down = atomic_load(&p->ep->down);
    if (ok) {
        p->ok_run++;
        p->fail_run = 0;
        atomic_store(&p->ep->probe_ok, p->ok_run);
        if (down && p->ok_run >= rise) {
            atomic_store(&p->ep->connect_failures, 0);
            atomic_store(&p->ep->down, 0);
            sy_info("health: %s (pool %s) is up again after %d good probes", p->ep->name, p->pool->name, p->ok_run);
        }
    } else {
        p->fail_run++;
        p->ok_run = 0;
        atomic_store(&p->ep->probe_ok, 0);
        if (!down && p->fail_run >= fall) {
            atomic_store(&p->ep->down, 1);
            sy_warn("health: %s (pool %s) is down: %s (%d failed probes)", p->ep->name, p->pool->name, why,
                    p->fail_run);
        }
    }
    schedule(p, interval_of(p));
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    probe_t *p = w->data;
    (void)revents;
    if (p->phase == PH_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            finish(p, false, err == ECONNREFUSED ? "connection refused" : "connect failed");
            return;
        }
        if (!p->pool->has_health || p->pool->health.path == NULL) {
            finish(p, true, NULL);
            return;
        }
        char req[512];
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchyard-health\r\n"
                                           "Connection: close\r\n\r\n", p->pool->health.path, p->ep->name);
        if (n < 0 || (size_t)n >= sizeof(req) || send(p->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
            finish(p, false, "cannot send the probe");
            return;
        }
        p->phase = PH_SENT;
        p->len = 0;
        ev_io_stop(loop, &p->io);
        ev_io_modify(&p->io, EV_READ);
        ev_io_start(loop, &p->io);
        return;
    }
    ssize_t r = recv(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r > 0)
        p->len += (size_t)r;
    p->buf[p->len] = '\0';
    int status = 0;
    if (sscanf(p->buf, "HTTP/1.%*d %d", &status) == 1) {
        char why[64];
        snprintf(why, sizeof(why), "%s answered %d", p->pool->health.path, status);
        finish(p, status >= 200 && status < 400, why);
    } else if (r <= 0 || p->len >= sizeof(p->buf) - 1) {
        finish(p, false, "no HTTP status in the answer");
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    probe_t *p = t->data;
    (void)revents;
    if (p->phase != PH_IDLE) {
        finish(p, false, "probe timed out");
        return;
    }
    if (!p->pool->has_health && !atomic_load(&p->ep->down)) {
        schedule(p, interval_of(p)); /* nothing to re-probe */
        return;
    }
    int fd = sy_net_connect(&p->ep->addr);
    if (fd < 0) {
        finish(p, false, "connect failed");
        return;
    }
    p->fd = fd;
    p->phase = PH_CONNECTING;
    ev_io_init(&p->io, io_cb, fd, EV_WRITE);
    p->io.data = p;
    ev_io_start(loop, &p->io);
    double timeout = p->pool->has_health ? (double)p->pool->health.timeout / 1e3 : 1.0;
    schedule(p, timeout);
}

static void probes_free(sy_health_t *h)
{
    for (size_t i = 0; i < h->n; i++) {
        probe_t *p = &h->probes[i];
        ev_timer_stop(h->loop, &p->timer);
        if (p->fd >= 0) {
            ev_io_stop(h->loop, &p->io);
            close(p->fd);
        }
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
            p->fd = -1;
            ev_init(&p->timer, timer_cb);
            p->timer.data = p;
            /* Spread the first probes over the interval. */
            schedule(p, 0.05 + interval_of(p) * (double)(k % 10) / 10.0);
        }
    }
    return 0;
}

sy_health_t *sy_health_create(struct ev_loop *loop, const sy_config_t *cfg)
{
    sy_health_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->loop = loop;
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
