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

/* A listening socket with SO_REUSEADDR and SO_REUSEPORT. Returns fd or -errno. */
int sy_net_listen(const sy_addr_t *a, int backlog);
/* Starts a non-blocking connect. Returns fd (connect in progress or done) or -errno. */
int sy_net_connect(const sy_addr_t *a);
void sy_net_nodelay(int fd);

#endif
