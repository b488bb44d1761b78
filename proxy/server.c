#include "proxy/server.h"

#include "proxy/accesslog.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/worker.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#define SY_FD_RESERVE 64

struct sy_server {
    struct ev_loop *control;
    sy_snapshot_slot_t slot;
    sy_worker_t *workers;
    size_t nworkers;
    sy_alog_t *alog;
    int *lfds;              /* one listening socket per listen entry; workers poll dups */
    size_t nlfds;
    ev_async exited;        /* worker -> control: a worker left its loop */
    ev_timer reclaim;       /* control: drop snapshots no worker can reach */
    atomic_int nexited;
    bool started, draining;
    void (*done)(void *);
    void *done_arg;
};

/* Worker thread, as it leaves: tells the control loop. */
static void worker_exited(void *arg)
{
    sy_server_t *s = arg;
    atomic_fetch_add(&s->nexited, 1);
    ev_async_send(s->control, &s->exited);
}

static void exited_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    sy_server_t *s = a->data;
    (void)loop;
    (void)revents;
    if ((size_t)atomic_load(&s->nexited) == s->nworkers && s->done != NULL) {
        void (*done)(void *) = s->done;
        s->done = NULL;
        done(s->done_arg);
    }
}

static void reclaim_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_server_t *s = t->data;
    (void)loop;
    (void)revents;
    sy_snapshot_reclaim(&s->slot);
}

/* Descriptors one connection may need: the client's and its upstream's. The
 * rest: idle upstream connections, listeners, and a reserve for the control
 * thread (admin, Redis, PostgreSQL, health probes, journal, logs). */
static void check_fd_limit(const sy_config_t *cfg, size_t nworkers)
{
    uint64_t endpoints = 0;
    for (size_t i = 0; i < cfg->npools; i++)
        endpoints += cfg->pools[i].nendpoints;
    uint64_t need = 2 * cfg->limits.connections + (uint64_t)nworkers * cfg->limits.upstream_keepalive +
                    (uint64_t)(nworkers + 1) * cfg->nlisten + 2 * endpoints + SY_FD_RESERVE;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? (rlim_t)need : rl.rlim_max;
    if (want > rl.rlim_cur) {
        struct rlimit nl = {.rlim_cur = want, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) == 0) {
            sy_info("raised the open-file limit from %llu to %llu", (unsigned long long)rl.rlim_cur,
                    (unsigned long long)want);
            rl.rlim_cur = want;
        }
    }
    if (rl.rlim_cur < need)
        sy_warn("the open-file limit is %llu (hard %llu) but limits.connections %llu needs about %llu "
                "(2 per connection, %llu idle upstream, %llu reserved): past that, accepts pause until "
                "connections close; raise LimitNOFILE or lower limits.connections",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                (unsigned long long)cfg->limits.connections, (unsigned long long)need,
                (unsigned long long)nworkers * cfg->limits.upstream_keepalive, (unsigned long long)SY_FD_RESERVE);
}

sy_server_t *sy_server_create(struct ev_loop *control, sy_snapshot_t *first, const sy_router_t *router,
                              const sy_observer_t *observer)
{
    sy_server_t *s = calloc(1, sizeof(*s));
    const sy_config_t *cfg = first->config;
    if (s == NULL) {
        sy_snapshot_release(first);
        return NULL;
    }
    s->control = control;
    s->nworkers = (size_t)cfg->workers;
    sy_snapshot_slot_init(&s->slot, s->nworkers);
    sy_snapshot_publish(&s->slot, first);
    if (strcmp(cfg->access_log, "off") != 0) {
        s->alog = sy_alog_create(cfg->access_log, s->nworkers, 1 << 20);
        if (s->alog == NULL)
            goto fail;
    }
    /* One socket per listen address, bound without SO_REUSEPORT (or taken over
     * from the process being upgraded), shared by the workers. */
    s->lfds = calloc(cfg->nlisten + 1, sizeof(*s->lfds));
    if (s->lfds == NULL)
        goto fail;
    for (; s->nlfds < cfg->nlisten; s->nlfds++) {
        int fd = sy_net_listen(&cfg->listen[s->nlfds].addr, 4096);
        if (fd < 0) {
            char msg[512];
            sy_net_listen_error(&cfg->listen[s->nlfds].addr, -fd, msg, sizeof(msg));
            sy_error("%s", msg);
            goto fail;
        }
        s->lfds[s->nlfds] = fd;
    }
    check_fd_limit(cfg, s->nworkers);
    s->workers = calloc(s->nworkers, sizeof(*s->workers));
    if (s->workers == NULL)
        goto fail;
    sy_worker_env_t env = {
        .slot = &s->slot,
        .alog = s->alog,
        .router = router,
        .observer = observer,
        .lfds = s->lfds,
        .nworkers = s->nworkers,
        .exited = worker_exited,
        .exited_arg = s,
    };
    for (size_t i = 0; i < s->nworkers; i++)
        if (sy_worker_init(&s->workers[i], (int)i, &env, cfg) != 0)
            goto fail;
    ev_async_init(&s->exited, exited_cb);
    s->exited.data = s;
    ev_async_start(control, &s->exited);
    ev_timer_init(&s->reclaim, reclaim_cb, 1., 1.);
    s->reclaim.data = s;
    ev_timer_start(control, &s->reclaim);
    return s;
fail:
    sy_server_destroy(s);
    return NULL;
}

int sy_server_start(sy_server_t *s)
{
    /* Workers take no signals: the control loop handles them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    for (size_t i = 0; i < s->nworkers; i++) {
        if (pthread_create(&s->workers[i].thread, NULL, sy_worker_run, &s->workers[i]) != 0) {
            rc = SY_EIO;
            break;
        }
        s->started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void sy_server_publish(sy_server_t *s, sy_snapshot_t *snap)
{
    sy_snapshot_publish(&s->slot, snap);
    for (size_t i = 0; i < s->nworkers; i++)
        sy_worker_wake(&s->workers[i]);
}

sy_snapshot_t *sy_server_snapshot(sy_server_t *s)
{
    return atomic_load(&s->slot.current);
}

void sy_server_drain(sy_server_t *s, void (*done)(void *arg), void *arg)
{
    if (s->draining)
        return;
    s->draining = true;
    /* The workers hold the other references: the last one to close a listener
     * takes what is queued first. After an upgrade the new process holds one
     * too, so nothing queued is lost at all. */
    for (size_t i = 0; i < s->nlfds; i++)
        sy_net_close_listener(s->lfds[i]);
    s->nlfds = 0;
    s->done = done;
    s->done_arg = arg;
    for (size_t i = 0; i < s->nworkers; i++)
        sy_worker_request_drain(&s->workers[i]);
}

void sy_server_destroy(sy_server_t *s)
{
    if (s == NULL)
        return;
    if (s->started)
        for (size_t i = 0; i < s->nworkers; i++)
            pthread_join(s->workers[i].thread, NULL);
    for (size_t i = 0; s->workers != NULL && i < s->nworkers; i++)
        sy_worker_destroy(&s->workers[i]);
    free(s->workers);
    for (size_t i = 0; i < s->nlfds; i++)
        sy_net_close_listener(s->lfds[i]);
    free(s->lfds);
    ev_async_stop(s->control, &s->exited);
    ev_timer_stop(s->control, &s->reclaim);
    sy_alog_destroy(s->alog);
    sy_snapshot_slot_destroy(&s->slot);
    free(s);
}
