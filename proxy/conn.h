/* Client connections (HTTP/1.1) and the exchange they drive: parse a request,
 * ask the router, relay to the chosen backend over a pooled upstream
 * connection, relay the response back, tell the observer, write the access-log
 * line. WebSocket upgrades become a byte tunnel. Worker thread only: the
 * worker calls these; the connections report back through worker.h.
 * (conn.c lifecycle and I/O; exchange.c, tunnel.c, local.c; see conn_impl.h.) */
#ifndef SY_CONN_H
#define SY_CONN_H

#include "proxy/worker.h"

#include <stdbool.h>
#include <sys/socket.h>

/* Takes ownership of fd (an accepted, non-blocking socket) that arrived on
 * listener l (a TLS listener: the handshake runs first, with the context of
 * the worker's current config for that listener; l->http2: h2c with prior
 * knowledge next to HTTP/1.1, proxy/h2.h). */
void sy_conn_accept(sy_worker_t *w, const sy_listener_t *l, int fd, const struct sockaddr *peer, socklen_t len);
/* Drain (w->draining and w->drain_t0 set): every response from now on says
 * Connection: close and its connection closes after it; an idle connection is
 * closed after timeouts.drain_idle unless a request arrives first. */
void sy_conn_drain_all(sy_worker_t *w);
/* Re-evaluates every connection's deadline (after a swap retired endpoints:
 * exchanges and tunnels on them get timeouts.drain from the swap). */
void sy_conn_rearm_all(sy_worker_t *w);
/* Closes every connection at once (drain deadline, shutdown). */
void sy_conn_close_all(sy_worker_t *w, const char *reason);
/* Frees connections closed earlier (the reaper; never from a connection's callback). */
void sy_conn_reap(sy_worker_t *w);

/* Runs the connections whose sockets had events in this loop iteration, oldest
 * first (the worker's ready check watcher; see conn.c). */
void sy_conn_run_ready(sy_worker_t *w);

#endif
