/* The worker: its thread and loop, the listeners' accept (with a backoff when
 * descriptors run out), the wake-up from the control thread (new snapshot,
 * drain), the reaper and the pool tick. See worker.h. */
#include "proxy/worker.h"

#include "proxy/config.h"
#include "proxy/conn.h"
#include "proxy/log.h"
#include "proxy/shadow.h"
#include "proxy/tls.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SY_ACCEPT_BACKOFF 0.1        /* s: no accepts after EMFILE/ENFILE */
#define SY_ACCEPT_LOG_INTERVAL 5.0   /* s: at most one EMFILE report per worker */

/* "000102...feff": the two hex digits of every byte value, in order. */
#define HEX_ROW(h) h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" h "e" h "f"
#define HEX_PAIRS                                                                                                  \
    HEX_ROW("0") HEX_ROW("1") HEX_ROW("2") HEX_ROW("3") HEX_ROW("4") HEX_ROW("5") HEX_ROW("6") HEX_ROW("7")      \
        HEX_ROW("8") HEX_ROW("9") HEX_ROW("a") HEX_ROW("b") HEX_ROW("c") HEX_ROW("d") HEX_ROW("e") HEX_ROW("f")

void sy_worker_request_id(sy_worker_t *w, char out[33])
{
    /* xorshift128+: fast, and unique enough for correlating log lines. */
    uint64_t r[2];
    for (int i = 0; i < 2; i++) {
        uint64_t s1 = w->rng[0];
        const uint64_t s0 = w->rng[1];
        w->rng[0] = s0;
        s1 ^= s1 << 23;
        w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
        r[i] = w->rng[1] + s0;
    }
    /* Hex by hand, a byte at a time from a table of the 256 pairs (snprintf
     * cost ~1.5k instructions, a nibble loop ~250; this ~90). */
    static const char pairs[513] = HEX_PAIRS;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 8; j++)
            memcpy(out + i * 16 + j * 2, pairs + 2 * ((r[i] >> (56 - 8 * j)) & 0xff), 2);
    out[32] = '\0';
}

/* Watches the listeners unless at the connection limit or backing off after
 * running out of descriptors. */
static void update_accepting(sy_worker_t *w)
{
    bool on = !w->accept_paused && !ev_is_active(&w->accept_backoff);
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].fd < 0)
            continue;
        if (on)
            ev_io_start(w->loop, &w->listeners[i].io);
        else
            ev_io_stop(w->loop, &w->listeners[i].io);
    }
}

void sy_worker_accept_pause(sy_worker_t *w, bool pause)
{
    if (w->accept_paused == pause)
        return;
    w->accept_paused = pause;
    update_accepting(w);
}

static void accept_backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_worker_t *w = t->data;
    (void)loop;
    (void)revents;
    if (!w->draining)
        update_accepting(w);
}

/* Out of descriptors: the pending connection stays queued and the listener
 * stays readable, so retrying at once would spin. Stop accepting for a short
 * while (as nginx and HAProxy do) and say so once per interval. */
static void accept_out_of_fds(sy_worker_t *w, int err)
{
    w->accept_fails++;
    ev_timer_set(&w->accept_backoff, SY_ACCEPT_BACKOFF, 0.);
    ev_timer_start(w->loop, &w->accept_backoff);
    update_accepting(w);
    ev_tstamp now = ev_now(w->loop);
    if (w->accept_logged == 0 || now - w->accept_logged >= SY_ACCEPT_LOG_INTERVAL) {
        sy_warn("accept: %s: pausing accepts for %.0f ms each time (%llu times since the last report; "
                "%zu connections open here; raise the fd limit or lower limits.connections)",
                strerror(err), SY_ACCEPT_BACKOFF * 1e3, (unsigned long long)w->accept_fails, w->nconns);
        w->accept_logged = now;
        w->accept_fails = 0;
    }
}

void sy_worker_conn_gone(sy_worker_t *w)
{
    w->nconns--;
    if (w->accept_paused && !w->draining && w->nconns < w->max_conns)
        sy_worker_accept_pause(w, false);
    if (w->draining && w->nconns == 0)
        ev_break(w->loop, EVBREAK_ALL);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_listener_t *l = io->data;
    sy_worker_t *w = l->w;
    (void)loop;
    (void)revents;
    for (int i = 0; i < 64; i++) {
        if (w->nconns >= w->max_conns) {
            sy_worker_accept_pause(w, true);
            return;
        }
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                accept_out_of_fds(w, errno);
            return;
        }
        sy_conn_accept(w, l, fd, (struct sockaddr *)&ss, len);
    }
}

static void close_listeners(sy_worker_t *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        sy_listener_t *l = &w->listeners[i];
        if (l->fd < 0)
            continue;
        ev_io_stop(w->loop, &l->io);
        /* Take what is already queued on this socket before closing it, so that
         * no connection accepted by the kernel is reset. */
        for (;;) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof(ss);
            int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            sy_conn_accept(w, l, fd, (struct sockaddr *)&ss, len);
        }
        close(l->fd);
        l->fd = -1;
    }
}

static void drain_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_worker_t *w = t->data;
    (void)revents;
    if (w->nconns > 0)
        sy_warn("drain deadline reached: closing %zu connections", w->nconns);
    sy_conn_close_all(w, "drain deadline");
    ev_break(loop, EVBREAK_ALL);
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    sy_worker_t *w = a->data;
    (void)revents;
    /* Announce the generation we now use, even with no traffic. */
    sy_snapshot_refresh(w->slot, (size_t)w->id, &w->snap);
    if (w->snap != NULL && w->snap->close_idle_serial != w->close_idle_serial) {
        /* Backends changed colour: idle connections to the old ones go now;
         * exchanges in flight finish where they are. */
        w->close_idle_serial = w->snap->close_idle_serial;
        sy_upstreams_close_idle(w->ups);
        sy_conn_rearm_all(w);
    }
    if (atomic_load(&w->drain_requested) && !w->draining) {
        w->draining = true;
        w->drain_t0 = ev_now(loop);
        ev_timer_stop(loop, &w->accept_backoff);
        close_listeners(w);
        sy_conn_drain_all(w);
        sy_upstreams_close_idle(w->ups);
        ev_timer_init(&w->drain_timer, drain_timeout_cb, (double)w->snap->config->timeouts.drain / 1e3, 0.);
        w->drain_timer.data = w;
        ev_timer_start(loop, &w->drain_timer);
        if (w->nconns == 0)
            ev_break(loop, EVBREAK_ALL);
    }
}

static void ready_cb(struct ev_loop *loop, ev_check *c, int revents)
{
    (void)loop;
    (void)revents;
    sy_conn_run_ready(c->data);
}

static void reaper_cb(struct ev_loop *loop, ev_prepare *c, int revents)
{
    sy_worker_t *w = c->data;
    (void)loop;
    (void)revents;
    if (!sy_list_empty(&w->dead))
        sy_conn_reap(w);
}

/* A spike of connections leaves their small objects (connection, upstream
 * connection, parser state) freed but resident in this thread's malloc arena,
 * between objects still alive: glibc returns such pages only when asked. Ask
 * once a lot was freed (TRIM_AFTER connections since the last trim) and the
 * spike is mostly over (fewer connections live than were freed): at most once
 * a tick, and once per turnover of the live set on a busy worker. */
#define TRIM_AFTER 1024

static void pool_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_worker_t *w = t->data;
    (void)loop;
    (void)revents;
    sy_bufpool_trim(&w->bufs);
    uint64_t gone = w->stats.accepted - w->nconns; /* connections freed since start */
    uint64_t freed = gone - w->gone_at_trim;
    if (freed >= TRIM_AFTER && w->nconns < freed) {
        w->gone_at_trim = gone;
#ifdef __GLIBC__
        malloc_trim(0);
#endif
    }
}

void *sy_worker_run(void *arg)
{
    sy_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "w%d", w->id);
    sy_log_set_thread_name(name);
    for (size_t i = 0; i < w->nlisteners; i++)
        ev_io_start(w->loop, &w->listeners[i].io);
    ev_run(w->loop, 0);
    ev_check_stop(w->loop, &w->ready_run);
    w->ready = NULL; /* the loop ran its last iteration's queue; the connections close now */

    sy_conn_close_all(w, "shutdown");
    sy_conn_reap(w);
    sy_shadow_engine_destroy(w->shadow);
    w->shadow = NULL;
    ev_timer_stop(w->loop, &w->drain_timer);
    ev_timer_stop(w->loop, &w->accept_backoff);
    sy_upstreams_destroy(w->ups);
    w->ups = NULL;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].fd >= 0) {
            ev_io_stop(w->loop, &w->listeners[i].io);
            close(w->listeners[i].fd);
            w->listeners[i].fd = -1;
        }
    sy_snapshot_reader_exit(w->slot, (size_t)w->id, &w->snap);
    w->left_loop = true;
    w->exited(w->exited_arg);
    return NULL;
}

/* Each worker polls its own descriptor of each listening socket, so it can
 * stop and close it from its own thread. */
static int open_listeners(sy_worker_t *w, const sy_worker_env_t *env, const sy_config_t *cfg)
{
    w->nlisteners = cfg->nlisten;
    w->listeners = calloc(cfg->nlisten, sizeof(*w->listeners));
    if (w->listeners == NULL)
        return SY_ENOMEM;
    for (size_t i = 0; i < cfg->nlisten; i++)
        w->listeners[i].fd = -1;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        int fd = fcntl(env->lfds[i], F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            sy_error("listener %s: dup: %s", cfg->listen[i].address, strerror(errno));
            return SY_EIO;
        }
        sy_listener_t *l = &w->listeners[i];
        l->fd = fd;
        l->http2 = cfg->listen[i].http2;
        l->w = w;
        l->index = i;
        l->tls = sy_tls_ctx_ref(cfg->listen[i].tls);
        ev_io_init(&l->io, accept_cb, fd, EV_READ);
        l->io.data = l;
    }
    return 0;
}

int sy_worker_init(sy_worker_t *w, int id, const sy_worker_env_t *env, const sy_config_t *cfg)
{
    w->id = id;
    w->slot = env->slot;
    w->alog = env->alog;
    w->router = env->router;
    w->observer = env->observer;
    w->exited = env->exited;
    w->exited_arg = env->exited_arg;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL)
        return SY_ENOMEM;
    sy_list_init(&w->conns);
    sy_list_init(&w->dead);
    /* Up to 1024 cached blocks (32 MiB at 32 KiB): enough that the swings of a
     * busy worker's demand are served from the cache, not by mmap/munmap (which
     * serialize the threads on the address-space lock); what a whole second did
     * not need is unmapped by the pool tick, so the cap is only a bound. */
    sy_bufpool_init(&w->bufs, cfg->buffer_size, 1024);
    w->max_conns = (size_t)(cfg->limits.connections / (uint64_t)env->nworkers);
    if (w->max_conns == 0)
        w->max_conns = 1;
    w->ups = sy_upstreams_create(w->loop, (size_t)cfg->limits.upstream_keepalive,
                                 (double)cfg->timeouts.upstream_idle / 1e3);
    if (w->ups == NULL)
        return SY_ENOMEM;
    if (getrandom(w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng) || (w->rng[0] | w->rng[1]) == 0) {
        w->rng[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        w->rng[1] = 0x9e3779b97f4a7c15ULL * (uint64_t)(id + 1);
    }
    ev_async_init(&w->wake, wake_cb);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    ev_prepare_init(&w->reaper, reaper_cb);
    w->reaper.data = w;
    ev_prepare_start(w->loop, &w->reaper);
    ev_check_init(&w->ready_run, ready_cb);
    ev_set_priority(&w->ready_run, EV_MINPRI); /* after the I/O callbacks that fill the queue */
    w->ready_run.data = w;
    ev_check_start(w->loop, &w->ready_run);
    ev_timer_init(&w->pool_tick, pool_tick_cb, 1., 1.);
    w->pool_tick.data = w;
    ev_timer_start(w->loop, &w->pool_tick);
    ev_init(&w->drain_timer, drain_timeout_cb);
    w->drain_timer.data = w;
    ev_init(&w->accept_backoff, accept_backoff_cb);
    w->accept_backoff.data = w;

    int rc = open_listeners(w, env, cfg);
    if (rc != 0)
        return rc;
    sy_snapshot_refresh(w->slot, (size_t)id, &w->snap);
    return 0;
}

void sy_worker_destroy(sy_worker_t *w)
{
    if (w->listeners != NULL)
        for (size_t i = 0; i < w->nlisteners; i++) {
            if (w->listeners[i].fd >= 0)
                close(w->listeners[i].fd);
            sy_tls_ctx_release(w->listeners[i].tls);
        }
    free(w->listeners);
    sy_shadow_engine_destroy(w->shadow);
    sy_upstreams_destroy(w->ups);
    if (w->snap != NULL)
        sy_snapshot_reader_exit(w->slot, (size_t)w->id, &w->snap);
    if (w->loop != NULL)
        ev_loop_destroy(w->loop);
    sy_bufpool_destroy(&w->bufs);
}

void sy_worker_wake(sy_worker_t *w)
{
    ev_async_send(w->loop, &w->wake);
}

void sy_worker_request_drain(sy_worker_t *w)
{
    atomic_store(&w->drain_requested, true);
    ev_async_send(w->loop, &w->wake);
}
