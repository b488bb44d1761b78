/* A lease in Redis: at most one holder of a named duty among the gateway
 * instances (a plan's advance; later the fleet's duties). The key holds the
 * holder's id with a time to live; taking it is SET NX PX, keeping it is a
 * compare-and-PEXPIRE by the holder (one EVAL does both), giving it up a
 * compare-and-DEL. A holder that dies stops renewing: the key expires and the
 * next caller takes it, within one ttl.
 *
 * The holder must act only while its last confirmation is younger than the
 * ttl (sy_lease_held), and should fence its writes with the same key (the
 * SY_LEASE_CHECK Lua fragment) so a holder that lost the lease between two
 * ticks cannot write. Control thread only. */
#ifndef SY_LEASE_H
#define SY_LEASE_H

#include "flags/redis.h"

#include <stdbool.h>
#include <stdint.h>

/* Lua: returns 0 from the script unless KEYS[1] holds ARGV[1]. Prefix a
 * script with it to fence a write by the lease. */
#define SY_LEASE_CHECK "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "

typedef struct sy_lease {
    char key[200];
    char owner[96];
    uint64_t ttl_ms;
    double confirmed_at; /* ev_now of the last confirmation; 0: not held */
    double asked_at;     /* ev_now the confirmation in flight was asked at; 0: none */
    struct ev_loop *loop;
} sy_lease_t;

/* Fills in l (no I/O). key and owner are copied (truncated to fit). */
void sy_lease_init(sy_lease_t *l, struct ev_loop *loop, const char *key, const char *owner, uint64_t ttl_ms);
/* Takes or renews the lease (one EVAL; nothing when one is in flight or Redis
 * is down). The outcome is in l when the reply comes; l must stay alive until
 * then (keep it in an object that outlives the Redis client's commands). */
void sy_lease_renew(sy_lease_t *l, sy_redis_t *r);
/* Gives it up if held (compare-and-DEL); l forgets it at once. */
void sy_lease_release(sy_lease_t *l, sy_redis_t *r);
/* Whether this instance holds it now: confirmed less than a ttl ago (from the
 * moment the confirmation was asked for, so a slow reply cannot stretch it). */
bool sy_lease_held(const sy_lease_t *l);

#endif
