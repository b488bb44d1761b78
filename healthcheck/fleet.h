/* The fleet: instances of the gateway on one Redis know one another.
 *
 * Every second, on the control thread and off the data path, an instance
 * writes its heartbeat (pipelined, one key with a TTL, bounded: a few hundred
 * bytes per route) to `{prefix}instance:{id}` with its id, version, config
 * hash, start time and its per-route, per-variant window and totals, and keeps
 * its id in the `{prefix}instances` sorted set (score: last heartbeat; ids
 * silent for 10 s are pruned). It then reads the others' heartbeats back and
 * keeps the fleet's view: GET /fleet answers from it (at most a second old).
 * An instance whose config hash differs from the most common one is flagged;
 * the hash is taken again at each reload (sy_fleet_reload).
 *
 * The heartbeat also carries the seconds the monitor closed (sy_monitor_on_second),
 * per route, the last SY_FLEET_HISTORY of them with traffic, and `upto`, the
 * last second closed (healthcheck/fleetsum.h has the format). A route whose
 * trip rules say `scope: fleet` is also judged on the fleet's sum: each
 * instance's second is added once (per instance and route, the last second
 * taken is remembered); a second closes when every live instance has
 * published it (or SY_FLEET_HISTORY - 1 s after it at the latest; what a
 * stalled instance sends later still counts, see fleetsum.h) into a
 * window ring and an evidence since the route's last change, and the
 * monitor's own rules judge them (every window rule and tier, and the
 * sequential evidence). A trip, critical or warning is acted on by ONE
 * instance, the one whose `SET NX` claim of {prefix}fleet:claim:{route}:{kind}:
 * {flags version} lands first, through the trip owner with the rule named
 * `fleet:<rule>`; a trip reaches the other instances through the flags.
 * Without Redis there is no fleet (the view lists this instance alone). */
#ifndef SY_FLEET_H
#define SY_FLEET_H

#include "flags/store.h"
#include "healthcheck/monitor.h"
#include "healthcheck/trip.h"

#include <ev.h>
#include <jansson.h>

typedef struct sy_fleet sy_fleet_t;

/* config_path: read here, at start, for the config hash. The fleet listens
 * to the monitor's closed seconds from now on. The store must be destroyed
 * before the fleet (its Redis client answers the fleet's pending reads), the
 * monitor after. NULL when out of memory. */
sy_fleet_t *sy_fleet_create(struct ev_loop *loop, const char *config_path, const char *version,
                            sy_flagstore_t *store, sy_monitor_t *monitor, sy_trip_t *trip);
void sy_fleet_destroy(sy_fleet_t *f);
/* The config hash of the file at path (its pools and routes sections as YAML
 * events: formatting, comments and per-host keys do not count) into out
 * ("unknown" when unreadable). Reads the file: call it at start or on the
 * reload's loader thread, never on the control loop. Thread-safe. */
void sy_fleet_config_hash(const char *path, char *out, size_t cap);
/* A reload was applied (the store has the new config): the new hash (NULL:
 * unchanged) and the fleet-scoped routes are re-read (their sums start
 * again). Control thread; NULL-safe. */
void sy_fleet_reload(sy_fleet_t *f, const char *config_hash);
/* The route left tripped or off (window and evidence start again), or its
 * percentage changed (the evidence starts again): called where the monitor's
 * sy_monitor_reset_route / sy_monitor_restart_evidence are. NULL-safe. */
void sy_fleet_reset_route(sy_fleet_t *f, const char *route);
void sy_fleet_restart_evidence(sy_fleet_t *f, const char *route);
/* The fleet's evidence of a route with scope: fleet since its last change,
 * NULL for any other route (fleet: a sy_fleet_t; the plan's gate source). */
const sy_evidence_t *sy_fleet_evidence(void *fleet, const char *route);
/* The fleet's view as JSON (a new reference): {"as_of", "self", "instances":
 * [{id, version, config_hash, started_at, seen_ms_ago, config_differs}],
 * "routes": {name: {legacy: {requests, errors, window_requests,
 * window_errors}, new: {...}}} summed over the live instances, "fleet_rules":
 * {name: {level, rule, detail, window_s, legacy, new, evidence,
 * closed_through, late}} of the fleet-scoped routes, "heartbeat_bytes",
 * "claims": {won, lost}}. */
json_t *sy_fleet_json(const sy_fleet_t *f);

#endif
