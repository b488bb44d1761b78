/* Socket helpers: address parsing and formatting, listening and connecting
 * sockets. All sockets are non-blocking and close-on-exec. No name resolution:
 * addresses are numeric (IPv4 `a.b.c.d:port`, IPv6 `[::1]:port`) or `localhost`. */
#ifndef SY_NET_H
#define SY_NET_H

#include "proxy/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct sy_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} sy_addr_t;

/* Parses "host:port". Returns 0 or SY_EINVAL (with a static reason in *why). */
int sy_addr_parse(const char *text, sy_addr_t *out, const char **why) SY_MUST_USE;
/* Writes "ip:port" (IPv6 in brackets) into buf. */
void sy_addr_format(const sy_addr_t *a, char *buf, size_t size);
/* Writes only the IP into buf (for X-Forwarded-For and logs). */
void sy_addr_format_ip(const struct sockaddr *sa, char *buf, size_t size);

/* A listening socket on `a`, exclusive to this process (no SO_REUSEPORT: a
 * second process binding the address fails with -EADDRINUSE). An inherited
 * socket for the same address (sy_net_inherit) is used instead of binding.
 * Returns the fd, owned by the caller and closed with sy_net_close_listener,
 * or -errno. This and the functions below: control thread only. */
int sy_net_listen(const sy_addr_t *a, int backlog);
void sy_net_close_listener(int fd);
/* Writes "cannot listen on ADDR: REASON" into buf, and for an address in use
 * which process holds it when /proc tells (start-up only: it reads files). */
void sy_net_listen_error(const sy_addr_t *a, int err, char *buf, size_t size);
/* Binary upgrade: takes over a listening socket received from the old process
 * (owned from now on; matched to sy_net_listen calls by its bound address).
 * Returns 0, or an error after closing fd if it is not a listening TCP socket. */
int sy_net_inherit(int fd) SY_MUST_USE;
/* Closes inherited sockets that no listener of the new config claimed. */
void sy_net_inherit_close_unused(void);
/* The listening sockets open now (to hand to a new process); at most max. */
size_t sy_net_listeners(int *fds, size_t max);
/* Starts a non-blocking connect. Returns fd (connect in progress or done) or -errno. */
int sy_net_connect(const sy_addr_t *a);
void sy_net_nodelay(int fd);

#endif
