/* The endpoints' run-time state and its one owner: whether each endpoint is in
 * or out, its good probes in a row, the retirement of an old colour, and what
 * the workers count in their shards (exchanges in flight, failed connects).
 *
 * The state is a table apart from the config (proxy/epstate.h), one per config,
 * indexed by sy_endpoint_t.index; each snapshot holds a reference to the table of
 * its config. This file creates it, carries it over by name on a reload, and
 * holds every write of the per-endpoint part:
 *
 *   down, good probes   health.c (probes), monitor.c (passive ejection), here
 *   retired_ms          the swap (flags/pools.c), through sy_endpoints_pool_ops
 *   shards              each worker its own (proxy/exchange.c, proxy/conn.c);
 *                       summed here on the control thread
 *
 * Control thread, except sy_endpoints_eject (the observer, on a worker). */
#ifndef SY_ENDPOINTS_H
#define SY_ENDPOINTS_H

#include "flags/pools.h"
#include "proxy/config.h"
#include "proxy/epstate.h"

#include <stdbool.h>
#include <stdint.h>

/* Failed connects in a row (summed over the workers) that take an endpoint out. */
#define SY_EJECT_CONNECT_FAILURES 3

typedef struct sy_endpoints sy_endpoints_t;

/* A table for cfg's endpoints, all up, for nworkers workers. NULL: out of memory. */
sy_endpoints_t *sy_endpoints_create(const sy_config_t *cfg, size_t nworkers);
void sy_endpoints_destroy(sy_endpoints_t *o);
/* A new config (SIGHUP): a new table, each endpoint keeping the state of the one
 * of the same pool and name (else of the same name) in the previous table. The
 * previous table stays readable for the previous config until the next reload.
 * Returns 0, or -1 when out of memory (the previous table stays). */
int sy_endpoints_reload(sy_endpoints_t *o, const sy_config_t *cfg);
/* The table of cfg (borrowed; a snapshot takes its own reference), or NULL for a
 * config it has no table for. */
sy_epstate_t *sy_endpoints_table(const sy_endpoints_t *o, const sy_config_t *cfg);

/* Readers, for an endpoint of cfg. */
bool sy_endpoints_is_down(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep);
int sy_endpoints_good_probes(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep);
/* Exchanges in flight on it: the workers' shards summed (with those still running
 * on the previous config's table). */
long sy_endpoints_inflight(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep);
/* Failed connects since the last good one (or since it came back), summed over
 * the workers. */
unsigned long sy_endpoints_connect_failures(const sy_epstate_t *t, size_t index);

/* The health checker's writes: good probes in a row, and in or out. Taking it
 * in again starts its failed-connect count afresh. True when `down` changed. */
void sy_endpoints_probed(sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep, int good_in_a_row);
bool sy_endpoints_set_down(sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep, bool down);
/* Passive ejection (any thread): out once SY_EJECT_CONNECT_FAILURES connects
 * failed in a row. True only for the call that took it out; *run gets the count. */
bool sy_endpoints_eject(sy_epstate_t *t, size_t index, unsigned long *run);
/* Retirement of an old colour: since_ms > 0 from when, 0 active again. */
void sy_endpoints_retire(sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep, int64_t since_ms);

/* What the swap (flags/pools.c) reads and writes, bound to o. */
sy_pool_endpoints_t sy_endpoints_pool_ops(sy_endpoints_t *o);

#endif
