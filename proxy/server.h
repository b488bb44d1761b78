/* The gateway process: N workers fed by one control loop.
 *
 * The control thread (the caller's loop) creates the server, publishes snapshots
 * and asks for a drain; workers run their own loops on their own threads. The
 * server owns the workers, the snapshot slot and the access log. */
#ifndef SY_SERVER_H
#define SY_SERVER_H

#include "proxy/hooks.h"
#include "proxy/snapshot.h"

#include <ev.h>

typedef struct sy_server sy_server_t;

/* Binds one listening socket per listen address, exclusively (or takes over the
 * one inherited from the process being upgraded, see sy_net_inherit), so a port
 * in use fails here, before any thread starts; checks the open-file limit
 * against limits.connections; opens the access log. Takes over the caller's reference on
 * `first`. router and observer must outlive the server. Returns NULL on error
 * (logged). Control thread. */
sy_server_t *sy_server_create(struct ev_loop *control, sy_snapshot_t *first, const sy_router_t *router,
                              const sy_observer_t *observer);
/* Starts the worker threads. Returns 0 or a negative sy_err_t. */
int sy_server_start(sy_server_t *s) SY_MUST_USE;
/* Publishes a new snapshot (taking over the caller's reference); workers use it
 * for requests that start after this call. */
void sy_server_publish(sy_server_t *s, sy_snapshot_t *snap);
/* Stops accepting (closing the listening sockets; a process that took them over
 * keeps them open), lets in-flight exchanges finish up to timeouts.drain, keeps
 * idle keep-alive connections for timeouts.drain_idle so a request already on
 * the wire is answered (with Connection: close), then
 * the workers exit and `done` is called on the control loop. Idempotent. */
void sy_server_drain(sy_server_t *s, void (*done)(void *arg), void *arg);
/* Joins the workers (after done) and frees everything. */
void sy_server_destroy(sy_server_t *s);
/* The snapshot currently published (no reference taken). Control thread. */
sy_snapshot_t *sy_server_snapshot(sy_server_t *s);

#endif
