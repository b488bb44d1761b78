/* Binary upgrade by hand-off of the listening sockets (as HAProxy's -x).
 *
 * The running gateway serves a unix socket (sy_handoff_serve). A new process
 * started with --takeover connects to it at start-up (sy_handoff_take): it
 * receives every listening socket of the old one over SCM_RIGHTS and binds
 * nothing that it received. Once its workers run it says so (sy_handoff_ready);
 * the old process then stops serving the hand-off socket, answers, and starts
 * its drain. Both processes hold the same sockets for a while, so a connection
 * queued on them is never reset, and no two processes ever bind one address.
 *
 * Protocol (stream socket, peers of the same user or root):
 *   old -> new: "SYHO1 <n> <pid>\n" with n descriptors attached
 *   new -> old: "READY <pid>\n"
 *   old -> new: "DRAINING\n" (its hand-off socket is closed by then)
 * A socket path starting with '@' is in the abstract namespace. */
#ifndef SY_HANDOFF_H
#define SY_HANDOFF_H

#include "proxy/err.h"

#include <ev.h>
#include <stddef.h>

typedef struct sy_handoff sy_handoff_t;

/* The socket name used when the config sets no upgrade_socket: abstract, named
 * after the first listen address (exclusive to one gateway). */
void sy_handoff_default_path(const char *first_listen, char *out, size_t size);

/* Old side: serves `path` on the control loop. When a new process says it is
 * ready, the server closes its socket and calls ready(arg, pid) (which starts
 * the drain; it may destroy the hand-off server). Returns NULL on error (logged). Control thread. */
sy_handoff_t *sy_handoff_serve(struct ev_loop *loop, const char *path, void (*ready)(void *arg, int pid),
                               void *arg);
/* Stops serving (idempotent with NULL) and frees. */
void sy_handoff_destroy(sy_handoff_t *h);

/* New side, at start-up, before any listener is opened (blocks up to timeout_s):
 * connects to `path` and passes every socket received to sy_net_inherit.
 * Returns the connection (to give to sy_handoff_ready) or -1 (logged). */
int sy_handoff_take(const char *path, double timeout_s);
/* New side, once serving: tells the old process, waits (up to timeout_s) until
 * it has released the hand-off socket, and closes fd. Returns 0 or -1 (logged). */
int sy_handoff_ready(int fd, double timeout_s);

/* Says "serving" to whoever started us: writes "ready <pid>\n" to ready_fd (if
 * >= 0) and closes it, and sends READY=1 to $NOTIFY_SOCKET (systemd) if set. */
void sy_handoff_notify_ready(int ready_fd);

#endif
