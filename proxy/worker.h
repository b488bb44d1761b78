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

struct sy_server;

typedef struct sy_listener {
    ev_io io;
    int fd;
    struct sy_worker *w;
} sy_listener_t;

typedef struct sy_worker_stats {
    uint64_t accepted, requests, local_responses, upstream_errors, parse_errors;
} sy_worker_stats_t;

typedef struct sy_worker {
    int id;
    struct sy_server *server;
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
    bool exited;

    sy_snapshot_slot_t *slot;
    sy_snapshot_t *snap;      /* held: the snapshot this worker last saw */
    const sy_router_t *router;
    const sy_observer_t *observer;
    sy_alog_t *alog;

    sy_bufpool_t bufs;
    sy_upstreams_t *ups;
    sy_listener_t *listeners;
    size_t nlisteners;
    bool accept_paused;

    uint64_t gone_at_trim;    /* connections freed (accepted - nconns) at the last malloc_trim */
    sy_list_t conns;          /* live connections */
    sy_list_t dead;           /* closed, freed by the reaper */
    size_t nconns, max_conns;

    uint32_t rr;              /* round-robin counter passed to the router */
    uint64_t close_idle_serial; /* the last snapshot serial acted on */
    uint64_t rng[2];          /* request id generator */
    sy_worker_stats_t stats;
} sy_worker_t;

/* Worker thread: stops accepting when at the connection limit, resumes below it. */
void sy_worker_accept_pause(sy_worker_t *w, bool pause);
/* Called by the connection layer when a connection is gone for good. */
void sy_worker_conn_gone(sy_worker_t *w);
/* 32 hex characters of randomness plus NUL. */
void sy_worker_request_id(sy_worker_t *w, char out[33]);

#endif
