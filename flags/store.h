/* The flag store: Redis (hiredis async on the control thread's loop) as the
 * live source of every route's flags, with the config's values as defaults.
 *
 * It loads every route's hash and test-user set at start, seeds missing keys
 * from the config, watches keyspace notifications and the events channel, and
 * re-reads everything every redis.resync_interval regardless. Every accepted
 * change produces a fresh flag array handed to `publish` (which builds and
 * publishes a snapshot); invalid values are refused per field, logged, counted,
 * and the last good value stays. If Redis is unreachable, nothing changes for
 * the data path: the last good flags stay in force while it reconnects with a
 * capped backoff, then re-syncs in full. Control thread only. */
#ifndef SY_STORE_H
#define SY_STORE_H

#include "flags/flags.h"
#include "flags/redis_conf.h"
#include "flags/sink.h"
#include "proxy/config.h"

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct sy_flagstore sy_flagstore_t;


/* Called with the config and the full flag array (one per route, in the
 * config's order) after every accepted change, and once at creation. The array
 * is only valid during the call. close_idle_serial grows with every change of
 * a pool's active colour (flags/pools.h): the workers close their idle
 * connections to the old colour when it changes. */
typedef void (*sy_flags_publish_fn)(void *ud, const sy_config_t *cfg, const sy_route_flags_t *flags,
                                    const sy_pool_flags_t *pools, uint64_t close_idle_serial);

/* Starts from the config's flags (published at once) and, with a redis section,
 * connects. cfg is referenced until destroy or reload. */
sy_flagstore_t *sy_flagstore_create(struct ev_loop *loop, sy_config_t *cfg, sy_flags_publish_fn publish, void *ud);
void sy_flagstore_destroy(sy_flagstore_t *s);
/* The Redis client (NULL without a redis section) and the key prefix: for
 * other control-thread users of the same Redis (the fleet's heartbeats). */
struct sy_redis *sy_flagstore_redis(sy_flagstore_t *s);
const char *sy_flagstore_redis_prefix(const sy_flagstore_t *s);
/* A new config (SIGHUP): routes are re-keyed by name, flags re-read. */
void sy_flagstore_reload(sy_flagstore_t *s, sy_config_t *cfg);

typedef struct sy_flagstore_status {
    bool configured;        /* a redis section exists */
    bool connected;
    bool notifications;     /* keyspace notifications are on */
    bool synced;            /* at least one full read completed */
    uint64_t refused, syncs, reconnects, publishes;
    char last_error[160];
    char server[80];         /* the Redis in use, "ip:port" (through Sentinel: the master now) */
} sy_flagstore_status_t;

void sy_flagstore_status(const sy_flagstore_t *s, sy_flagstore_status_t *out);
/* The flags in force, one per route of the current config. */
const sy_route_flags_t *sy_flagstore_flags(const sy_flagstore_t *s);
const sy_config_t *sy_flagstore_config(const sy_flagstore_t *s);

/* The result of a write: status is 200, or 400/404/409/503 with err (static). */
/* The result of a write: SY_OK, or SY_EINVAL / SY_ENOTFOUND / SY_ECONFLICT /
 * SY_EUNAVAILABLE / SY_ENOMEM with a reason for people (static). */
typedef void (*sy_flags_done_fn)(void *ud, sy_err_t err, const char *reason, const sy_route_flags_t *result);
/* Applies an operation to a route: through Redis (atomic compare-and-set, then
 * published) when configured, else locally. A rollback with Redis down applies
 * locally at once and is written when Redis returns. `done` is called exactly
 * once, possibly before this returns. */
void sy_flagstore_request(sy_flagstore_t *s, const char *route, const sy_flag_request_t *req, sy_flags_done_fn done,
                          void *ud);

/* A trip: the route is rolled back here at once (published before this
 * returns), then the same change is written to Redis with actor=switchyard and
 * the reason; if Redis is down the local trip stands and the write is retried
 * after reconnect. Nothing is recorded here: the trip owner
 * (healthcheck/trip.h) records the event with its evidence. Does nothing and
 * returns false for a route already tripped or off, or unknown. */
bool sy_flagstore_trip(sy_flagstore_t *s, const char *route, const char *reason);

/* Every change from now on is recorded there too (flag changes made here, hand
 * edits seen in Redis with before and after, refused edits, trips, swaps).
 * The sink is copied; its ctx must outlive the store. NULL: no record. */
void sy_flagstore_set_sink(sy_flagstore_t *s, const sy_sink_t *sink);

/* The refused values still in Redis of route i / pool j (config order): a new
 * JSON array of {field, value, why, since, in_force}. Each was logged, counted
 * and recorded once, when first seen. */
json_t *sy_flagstore_route_refused(const sy_flagstore_t *s, size_t i);
json_t *sy_flagstore_pool_refused(const sy_flagstore_t *s, size_t j);

/* The pools' flags in force, one per config pool. */
const sy_pool_flags_t *sy_flagstore_pools(const sy_flagstore_t *s);

#endif
