/* A worker: one thread, one libev loop, its own descriptors of the server's
 * listening sockets (dups: one socket per address, exclusive to the process),
 * buffers, upstream pools and access-log ring. A connection belongs to one
 * worker for its whole life. Nothing here is touched by another thread except
 * the fields marked atomic (drain request) and the snapshot slot. */
#ifndef SY_WORKER_H
#define SY_WORKER_H

#include "proxy/accesslog.h"
#include "proxy/buf.h"
#include "proxy/hooks.h"
#include "proxy/list.h"
#include "proxy/snapshot.h"
#include "proxy/upstream.h"

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct sy_config;
struct ssl_ctx_st;

typedef struct sy_listener {
    ev_io io;
    int fd;
    bool http2;      /* h2c with prior knowledge next to HTTP/1.1 */
    size_t index;                 /* its entry in cfg->listen */
    struct ssl_ctx_st *tls;       /* the boot config's TLS context (a reference), NULL: plain */
    struct sy_worker *w;
} sy_listener_t;

typedef struct sy_worker_stats {
    uint64_t accepted, requests, local_responses, upstream_errors, parse_errors;
} sy_worker_stats_t;

typedef struct sy_worker {
    int id;
    void (*exited)(void *arg); /* called on the worker thread as it leaves its loop */
    void *exited_arg;
    pthread_t thread;
    struct ev_loop *loop;
    ev_async wake;            /* control -> worker: new snapshot or drain */
    ev_prepare reaper;        /* frees connections closed during callbacks, before the loop blocks */
    ev_timer pool_tick;       /* 1 s: gives back buffer blocks and arena pages a spike left unused */
    ev_timer drain_timer;
    ev_timer accept_backoff;  /* running: accepts paused after running out of fds */
    uint64_t accept_fails;    /* EMFILE/ENFILE since the last report */
    ev_tstamp accept_logged;
    ev_tstamp drain_t0;       /* when the drain started */
    atomic_bool drain_requested;
    bool draining;
    bool left_loop;           /* the thread is done with the loop */

    sy_snapshot_slot_t *slot;
    sy_snapshot_t *snap;      /* held: the snapshot this worker last saw */
    const sy_router_t *router;
    const sy_observer_t *observer;
    sy_alog_t *alog;

    sy_bufpool_t bufs;
    sy_upstreams_t *ups;
    struct sy_shadow_engine *shadow; /* made on the first shadowed route's request (proxy/shadow.h) */
    sy_listener_t *listeners;
    size_t nlisteners;
    bool accept_paused;

    uint64_t gone_at_trim;    /* connections freed (accepted - nconns) at the last malloc_trim */
    sy_list_t conns;          /* live connections */
    sy_list_t dead;           /* closed, freed by the reaper */
    struct sy_conn *ready;    /* connections with events, in the order epoll reported them */
    ev_check ready_run;       /* runs them, after every other watcher of the iteration */
    size_t nconns, max_conns;

    uint32_t rr;              /* round-robin counter passed to the router */
    uint64_t close_idle_serial; /* the last snapshot serial acted on */
    uint64_t rng[2];          /* request id generator */
    sy_worker_stats_t stats;
} sy_worker_t;

/* What a worker is built from; all of it outlives the worker. */
typedef struct sy_worker_env {
    sy_snapshot_slot_t *slot;
    sy_alog_t *alog;                 /* NULL: no access log */
    const sy_router_t *router;
    const sy_observer_t *observer;
    const int *lfds;                 /* the listening sockets, one per cfg->listen entry (dup'ed here) */
    size_t nworkers;                 /* limits.connections is shared between them */
    void (*exited)(void *arg);       /* worker thread: it left its loop (after a drain or shutdown) */
    void *exited_arg;
} sy_worker_env_t;

/* Control thread, before the thread starts: sets up w (zeroed by the caller):
 * its loop, pools, watchers, its own dups of the listening sockets, and the
 * current snapshot of env->slot. Returns 0 or a negative sy_err_t; on error
 * sy_worker_destroy still frees what was made. */
int sy_worker_init(sy_worker_t *w, int id, const sy_worker_env_t *env, const struct sy_config *cfg) SY_MUST_USE;
/* The thread's body (pthread_create): runs the loop until a drain ends or the
 * drain deadline passes, closes what is left, then calls env->exited. */
void *sy_worker_run(void *w);
/* Control thread: a new snapshot was published (the worker announces the
 * generation it uses and closes idle upstreams after a swap). */
void sy_worker_wake(sy_worker_t *w);
/* Control thread: stop accepting and drain (see sy_server_drain). Idempotent. */
void sy_worker_request_drain(sy_worker_t *w);
/* Control thread, after the thread was joined (or never started): frees w's
 * loop, pools and descriptors. */
void sy_worker_destroy(sy_worker_t *w);

/* The interface of the connection layer to its worker (worker thread only): */
/* Worker thread: stops accepting when at the connection limit, resumes below it. */
void sy_worker_accept_pause(sy_worker_t *w, bool pause);
/* Called by the connection layer when a connection is gone for good. */
void sy_worker_conn_gone(sy_worker_t *w);
/* 32 hex characters of randomness plus NUL. */
void sy_worker_request_id(sy_worker_t *w, char out[33]);

#endif
