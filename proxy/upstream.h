/* Per-worker pools of connections to backend endpoints.
 *
 * sy_upstream_acquire() hands out an idle keep-alive connection to the endpoint
 * or starts a new non-blocking connect; the caller then owns the connection (its
 * fd and its io watcher, whose callback it sets) until it hands it back with
 * sy_upstream_release(): kept idle (up to limits.upstream_keepalive per endpoint,
 * closed after timeouts.upstream_idle or when the backend closes it) or closed.
 * Pools are keyed by endpoint address (and TLS settings) so they survive a
 * config reload; a TLS pool keeps the last session its endpoint gave, which
 * the next connection offers for resumption. Worker
 * thread only. */
#ifndef SY_UPSTREAM_H
#define SY_UPSTREAM_H

#include "proxy/config.h"
#include "proxy/list.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct ssl_st;

typedef struct sy_uppool sy_uppool_t;
typedef struct sy_upstreams sy_upstreams_t;

typedef struct sy_upconn {
    sy_list_t node;          /* on its pool's idle list while idle */
    sy_uppool_t *pool;
    sy_upstreams_t *_ups;    /* the per-worker set it belongs to */
    int fd;
    ev_io io;                /* owned; its callback belongs to the holder while acquired */
    ev_timer idle_timer;     /* left running across reuses: it checks idle_since when it fires */
    ev_tstamp idle_since;    /* when it was last released */
    bool connected;          /* connect (and TLS handshake) finished (reused ones always are) */
    struct ssl_st *tls;      /* NULL: plain TCP; else owned, freed when the connection closes */
    int tls_wants;           /* a stalled TLS call waits for this event (0: none) */
    bool tls_started;        /* TCP is up and the TLS handshake began */
    bool reused;             /* came from the idle list */
    uint32_t served;         /* exchanges completed on this connection */
} sy_upconn_t;

sy_upstreams_t *sy_upstreams_create(struct ev_loop *loop, size_t keepalive_per_endpoint,
                                    double idle_timeout_s);
/* Closes every idle connection. Acquired ones must have been released. */
void sy_upstreams_destroy(sy_upstreams_t *u);
/* Closes idle connections (drain, reload). */
void sy_upstreams_close_idle(sy_upstreams_t *u);

/* Closes the idle connections to ep (one of them died under a request with
 * nothing back: the others to the same peer are as suspect, and the retry
 * should connect anew). */
void sy_upstreams_close_idle_to(sy_upstreams_t *u, const sy_endpoint_t *ep);

/* Returns 0 and *out (reused and connected, or connecting), or -errno when a
 * socket could not even be started (connect refused at once, no fds). A reused
 * connection comes with its io watcher still active for EV_READ: the caller
 * sets its own callback with ev_set_cb and data. */
int sy_upstream_acquire(sy_upstreams_t *u, const sy_endpoint_t *ep, sy_upconn_t **out) SY_MUST_USE;
/* Hands uc back: to the idle list when reusable and there is room, else closed.
 * The caller's callback on uc->io is replaced; the watcher may stay active. */
void sy_upstream_release(sy_upstreams_t *u, sy_upconn_t *uc, bool reusable);
/* Connections currently open (idle or acquired) to all endpoints. */
size_t sy_upstreams_open_count(const sy_upstreams_t *u);
/* Connections opened since start (for tests: reuse shows as a low number). */
uint64_t sy_upstreams_opened_total(const sy_upstreams_t *u);

#endif
