#include "proxy/upstream.h"

#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct sy_uppool {
    char *key;                  /* endpoint name (address as written) */
    char *tls_id;               /* its TLS settings (NULL: plain): part of the key */
    sy_addr_t addr;
    const sy_endpoint_t *last_ep; /* fast path: the endpoint object last seen */
    sy_list_t idle;
    size_t nidle;
    struct ssl_session_st *session; /* the last TLS session the endpoint gave (resumption) */
};

struct sy_upstreams {
    struct ev_loop *loop;
    size_t keepalive;
    double idle_timeout;
    sy_uppool_t **pools;
    size_t npools, cap;
    size_t open;
    uint64_t opened_total;
};

sy_upstreams_t *sy_upstreams_create(struct ev_loop *loop, size_t keepalive_per_endpoint, double idle_timeout_s)
{
    sy_upstreams_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->loop = loop;
    u->keepalive = keepalive_per_endpoint;
    u->idle_timeout = idle_timeout_s;
    return u;
}

static void upconn_close(sy_upstreams_t *u, sy_upconn_t *uc)
{
    ev_io_stop(u->loop, &uc->io);
    ev_timer_stop(u->loop, &uc->idle_timer);
    if (!sy_list_empty(&uc->node)) {
        sy_list_remove(&uc->node);
        uc->pool->nidle--;
    }
    sy_tls_free(uc->tls);
    uc->tls = NULL;
    close(uc->fd);
    uc->fd = -1;
    u->open--;
    free(uc);
}

void sy_upstreams_close_idle(sy_upstreams_t *u)
{
    for (size_t i = 0; i < u->npools; i++) {
        sy_uppool_t *p = u->pools[i];
        while (!sy_list_empty(&p->idle))
            upconn_close(u, sy_container_of(p->idle.next, sy_upconn_t, node));
    }
}

void sy_upstreams_destroy(sy_upstreams_t *u)
{
    if (u == NULL)
        return;
    sy_upstreams_close_idle(u);
    for (size_t i = 0; i < u->npools; i++) {
        sy_tls_session_free(u->pools[i]->session);
        free(u->pools[i]->key);
        free(u->pools[i]->tls_id);
        free(u->pools[i]);
    }
    free(u->pools);
    free(u);
}

static sy_uppool_t *pool_for(sy_upstreams_t *u, const sy_endpoint_t *ep)
{
    for (size_t i = 0; i < u->npools; i++)
        if (u->pools[i]->last_ep == ep)
            return u->pools[i];
    for (size_t i = 0; i < u->npools; i++)
        if (strcmp(u->pools[i]->key, ep->name) == 0 &&
            (ep->tls_id == NULL ? u->pools[i]->tls_id == NULL
                                : u->pools[i]->tls_id != NULL && strcmp(u->pools[i]->tls_id, ep->tls_id) == 0)) {
            u->pools[i]->last_ep = ep;
            return u->pools[i];
        }
    if (u->npools == u->cap) {
        size_t ncap = u->cap ? u->cap * 2 : 8;
        sy_uppool_t **np = realloc(u->pools, ncap * sizeof(*np));
        if (np == NULL)
            return NULL;
        u->pools = np;
        u->cap = ncap;
    }
    sy_uppool_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->key = strdup(ep->name)) == NULL ||
        (ep->tls_id != NULL && (p->tls_id = strdup(ep->tls_id)) == NULL)) {
        if (p != NULL)
            free(p->key);
        free(p);
        return NULL;
    }
    p->addr = ep->addr;
    p->last_ep = ep;
    sy_list_init(&p->idle);
    u->pools[u->npools++] = p;
    return p;
}

/* An idle connection became readable: the backend closed it (or sent bytes it
 * should not have). Either way it cannot carry another request. */
static void idle_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    sy_upconn_t *uc = w->data;
    (void)loop;
    (void)revents;
    upconn_close(uc->_ups, uc);
}

/* The idle timer is not stopped when a connection is taken nor restarted when
 * it comes back (two heap operations per request): it fires at the deadline
 * of an earlier idle period, and then finds the connection in use (nothing to
 * do: its next release starts it again), idle since later (armed again for the
 * rest), or idle for idle_timeout (closed). */
static void idle_expired_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    sy_upconn_t *uc = w->data;
    (void)revents;
    if (sy_list_empty(&uc->node))
        return;
    double left = uc->idle_since + uc->_ups->idle_timeout - ev_now(loop);
    if (left > 1e-3) {
        ev_timer_set(w, left, 0.);
        ev_timer_start(loop, w);
        return;
    }
    upconn_close(uc->_ups, uc);
}

void sy_upstreams_close_idle_to(sy_upstreams_t *u, const sy_endpoint_t *ep)
{
    sy_uppool_t *p = pool_for(u, ep);
    if (p == NULL)
        return;
    while (!sy_list_empty(&p->idle))
        upconn_close(u, sy_container_of(p->idle.next, sy_upconn_t, node));
}

int sy_upstream_acquire(sy_upstreams_t *u, const sy_endpoint_t *ep, sy_upconn_t **out)
{
    sy_uppool_t *p = pool_for(u, ep);
    if (p == NULL)
        return -ENOMEM;
    /* Most recently used first: its peer is the least likely to have timed it out. */
    while (!sy_list_empty(&p->idle)) {
        sy_upconn_t *uc = sy_container_of(p->idle.prev, sy_upconn_t, node);
        sy_list_remove(&uc->node);
        p->nidle--;
        /* The read watcher stays active: the new holder swaps its callback.
         * The idle timer too: see idle_expired_cb. */
        uc->reused = true;
        *out = uc;
        return 0;
    }
    int fd = sy_net_connect(&p->addr);
    if (fd < 0)
        return fd;
    sy_upconn_t *uc = calloc(1, sizeof(*uc));
    if (uc == NULL) {
        close(fd);
        return -ENOMEM;
    }
    sy_list_init(&uc->node);
    uc->pool = p;
    uc->_ups = u;
    uc->fd = fd;
    if (ep->tls != NULL) {
        /* The handshake starts once TCP is up; sessions the endpoint hands
         * out land in the pool, for the next connection to resume. */
        uc->tls = sy_tls_connect(ep->tls, fd, ep->tls_sni, ep->tls_host, p->session, &p->session);
        if (uc->tls == NULL) {
            close(fd);
            free(uc);
            return -ENOMEM;
        }
    }
    ev_io_init(&uc->io, idle_io_cb, fd, EV_WRITE);
    ev_init(&uc->idle_timer, idle_expired_cb);
    uc->idle_timer.data = uc;
    u->open++;
    u->opened_total++;
    *out = uc;
    return 0;
}

void sy_upstream_release(sy_upstreams_t *u, sy_upconn_t *uc, bool reusable)
{
    if (uc == NULL)
        return;
    sy_uppool_t *p = uc->pool;
    if (!reusable || !uc->connected || p->nidle >= u->keepalive) {
        upconn_close(u, uc);
        return;
    }
    uc->served++;
    /* Keep the watcher registered (no epoll_ctl): only its callback and, if
     * needed, its events change. */
    ev_set_cb(&uc->io, idle_io_cb);
    uc->io.data = uc;
    if (!ev_is_active(&uc->io) || (uc->io.events & (EV_READ | EV_WRITE)) != EV_READ) {
        ev_io_stop(u->loop, &uc->io);
        ev_io_modify(&uc->io, EV_READ);
        ev_io_start(u->loop, &uc->io);
    }
    uc->idle_since = ev_now(u->loop);
    if (!ev_is_active(&uc->idle_timer)) {
        ev_timer_set(&uc->idle_timer, u->idle_timeout, 0.);
        ev_timer_start(u->loop, &uc->idle_timer);
    }
    sy_list_push_back(&p->idle, &uc->node);
    p->nidle++;
}

size_t sy_upstreams_open_count(const sy_upstreams_t *u)
{
    return u->open;
}

uint64_t sy_upstreams_opened_total(const sy_upstreams_t *u)
{
    return u->opened_total;
}
