/* Per-colour numbers: requests, errors and latency of each colour of each
 * coloured pool, whatever route sent them (the comparator's windows are per
 * route x variant; these are per pool x colour, for the metrics, /status and
 * the dashboard).
 *
 * Workers count into their own shard (single writer, relaxed loads and stores,
 * no locks), from the monitor's observer; the control thread sums the shards
 * when asked. A pool is known by its index in the config of the request's
 * snapshot, so after a reload that reorders pools the counts of a pool may move
 * to another one (the counters are "since start" and may then go down: a reset
 * to Prometheus). Only the first SY_COLOURS_MAX_POOLS pools are counted. */
#ifndef SY_COLOURS_H
#define SY_COLOURS_H

#include "healthcheck/rules.h"
#include "proxy/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SY_COLOURS_MAX_POOLS 16

typedef struct sy_colours sy_colours_t;

/* Shards for nworkers workers, all zero. NULL: out of memory. */
sy_colours_t *sy_colours_create(size_t nworkers);
void sy_colours_destroy(sy_colours_t *c);
/* Worker `worker` only: one exchange ended on endpoint ep of cfg (err: an error
 * under the route's rules; total_us its duration). Nothing for an endpoint of an
 * uncoloured pool or past the bound. */
void sy_colours_record(sy_colours_t *c, int worker, const sy_config_t *cfg, const sy_endpoint_t *ep, bool err,
                       uint64_t total_us);
/* Control thread: colour `colour` (SY_BLUE, SY_GREEN) of pool index `pool`,
 * summed over the workers since start, into out (requests, errors, total). */
void sy_colours_get(const sy_colours_t *c, size_t pool, int colour, sy_side_t *out);

#endif
