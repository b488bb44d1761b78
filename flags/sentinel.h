/* Finding the Redis master through Redis Sentinel, on the control thread's loop.
 *
 * One sentinel at a time (from the configured list, the next one after any
 * failure): a command connection asks SENTINEL get-master-addr-by-name at
 * connect, every second, and whenever the owner says the master went away; a
 * subscription connection hears +switch-master at once. Every answer is passed
 * to `found` (the owner ignores an address it already has). The client never
 * blocks: connects, queries and reconnects are deadlines and timers. */
#ifndef SY_SENTINEL_H
#define SY_SENTINEL_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sy_sentinel sy_sentinel_t;

/* The master of `name` is at ip:port (ip borrowed for the call). */
typedef void (*sy_sentinel_found_fn)(void *ud, const char *ip, int port);

/* hosts: "ip:port" strings (copied, at most 16); master: the monitored name.
 * Starts connecting at once. NULL when out of memory. */
sy_sentinel_t *sy_sentinel_create(struct ev_loop *loop, const char *const *hosts, size_t n, const char *master,
                                  uint64_t connect_timeout_ms, uint64_t command_timeout_ms,
                                  sy_sentinel_found_fn found, void *ud);
void sy_sentinel_destroy(sy_sentinel_t *s);
/* Asks again now (the master went away or answered as a replica). */
void sy_sentinel_ask(sy_sentinel_t *s);
/* The sentinel in use ("ip:port") or "" while none answers. */
const char *sy_sentinel_current(const sy_sentinel_t *s);

/* Parses a +switch-master payload "NAME OLDIP OLDPORT NEWIP NEWPORT" for
 * `master`: 0 with the new address in ip (cap bytes) and *port, -1 otherwise.
 * Pure (unit-tested, fuzzed). */
int sy_sentinel_parse_switch(const char *payload, size_t len, const char *master, char *ip, size_t cap, int *port);

#endif
