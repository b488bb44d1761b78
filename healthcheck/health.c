#include "healthcheck/health.h"

#include "proxy/h1.h"
#include "proxy/log.h"
#include "proxy/net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum { PH_IDLE, PH_CONNECTING, PH_SENT } phase_t;

/* The answer is read whole (its body discarded) before the probe closes: closing
 * with bytes unread would reset the connection under the backend. Bounds: */
#define PROBE_MAX_HEAD 8192
#define PROBE_MAX_HEADERS 64
#define PROBE_MAX_BODY (1u << 20) /* past this the status decides and the probe closes */

typedef struct probe {
    struct sy_health *h;
    const sy_pool_t *pool;
    sy_endpoint_t *ep;
    int fd;
    ev_io io;
    ev_timer timer;
    phase_t phase;
    sy_h1_t resp;
    char *arena;        /* owned: the answer's head */
    int status;         /* of the final answer; 0 before its head */
    size_t body_bytes;  /* read and discarded */
    bool complete;      /* the answer was read to its end */
    bool too_big;       /* its body passed PROBE_MAX_BODY */
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

static int on_head(void *ud, sy_h1_msg_t *m)
{
    probe_t *p = ud;
    if (m->status >= 200)
        p->status = m->status;
    return 0;
}

static int on_body(void *ud, const char *data, size_t len)
{
    probe_t *p = ud;
    (void)data;
    p->body_bytes += len;
    if (p->body_bytes > PROBE_MAX_BODY) {
        p->too_big = true;
        return sy_h1_fail(&p->resp, 502, "health answer body too large");
    }
    return 0;
}

static int on_done(void *ud)
{
    probe_t *p = ud;
    if (p->status == 0)
        return SY_H1_DONE_CONTINUE; /* a 1xx: the answer follows */
    p->complete = true;
    return 0;
}

static const sy_h1_callbacks_t probe_cbs = {on_head, on_body, on_done};

/* Reads what the backend sent; finishes the probe once the answer is complete
 * (or cannot be). */
static void read_answer(probe_t *p)
{
    char chunk[8192];
    for (;;) {
        ssize_t r = recv(p->fd, chunk, sizeof(chunk), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        int rc;
        if (r < 0) {
            finish(p, false, "the connection failed while reading the answer");
            return;
        }
        if (r == 0) {
            rc = sy_h1_finish(&p->resp);
        } else {
            size_t used = 0;
            rc = sy_h1_execute(&p->resp, chunk, (size_t)r, &used);
        }
        if (rc == SY_H1_ERROR && !p->too_big) {
            finish(p, false, p->status ? "the answer ended early or was malformed" : "no HTTP status in the answer");
            return;
        }
        if (rc == SY_H1_ERROR || p->complete || rc == SY_H1_PAUSED || rc == SY_H1_UPGRADE) {
            char why[160];
            snprintf(why, sizeof(why), "%s answered %d", p->pool->health.path, p->status);
            finish(p, p->status >= 200 && p->status < 400, why);
            return;
        }
        if (r == 0) {
            finish(p, false, "no HTTP status in the answer");
            return;
        }
    }
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
        p->status = 0;
        p->body_bytes = 0;
        p->complete = p->too_big = false;
        sy_h1_init(&p->resp, false, &probe_cbs, p, PROBE_MAX_HEAD, PROBE_MAX_HEAD, PROBE_MAX_HEADERS);
        sy_h1_set_arena(&p->resp, p->arena, sy_h1_arena_size(PROBE_MAX_HEAD, PROBE_MAX_HEADERS));
        ev_io_stop(loop, &p->io);
        ev_io_modify(&p->io, EV_READ);
        ev_io_start(loop, &p->io);
        return;
    }
    read_answer(p);
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
        free(p->arena);
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
        probes[i].arena = malloc(sy_h1_arena_size(PROBE_MAX_HEAD, PROBE_MAX_HEADERS));
        if (probes[i].arena == NULL) {
            for (size_t k = 0; k < i; k++)
                free(probes[k].arena);
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
