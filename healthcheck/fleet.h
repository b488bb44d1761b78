/* The fleet: instances of the gateway on one Redis know one another.
 *
 * Every second, on the control thread and off the data path, an instance
 * writes its heartbeat (pipelined, one key with a TTL, bounded: a few hundred
 * bytes per route) to `{prefix}instance:{id}` with its id, version, config
 * hash, start time and its per-route, per-variant window and totals, and keeps
 * its id in the `{prefix}instances` sorted set (score: last heartbeat; ids
 * silent for 10 s are pruned). It then reads the others' heartbeats back and
 * keeps the fleet's view: GET /fleet answers from it (at most a second old).
 * An instance whose config hash differs from the most common one is flagged.
 * A route whose trip rules say `scope: fleet` is also judged on the fleet's
 * summed windows (max_error_rate of new, min_requests summed): a trip through
 * the trip owner, which reaches every instance through Redis.
 * Without Redis there is no fleet (the view lists this instance alone). */
#ifndef SY_FLEET_H
#define SY_FLEET_H

#include "flags/store.h"
#include "healthcheck/monitor.h"
#include "healthcheck/trip.h"

#include <ev.h>
#include <jansson.h>

typedef struct sy_fleet sy_fleet_t;

/* config_path: read once here, at start, for the config hash (a reload does
 * not change it: the file is not read again on the control loop). The store
 * must be destroyed before the fleet (its Redis client answers the fleet's
 * pending reads), the monitor after. NULL when out of memory. */
sy_fleet_t *sy_fleet_create(struct ev_loop *loop, const char *config_path, const char *version,
                            sy_flagstore_t *store, const sy_monitor_t *monitor, sy_trip_t *trip);
void sy_fleet_destroy(sy_fleet_t *f);
/* The fleet's view as JSON (a new reference): {"as_of", "self", "instances":
 * [{id, version, config_hash, started_at, seen_ms_ago, config_differs}],
 * "routes": {name: {legacy: {requests, errors, window_requests,
 * window_errors}, new: {...}}}} summed over the live instances. */
json_t *sy_fleet_json(const sy_fleet_t *f);

#endif
