/* Blue-green pools: the swap's single owner. The admin endpoint, `ctl swap`
 * (through the admin API) and a hand edit of switchyard:pool:{name} seen in
 * Redis all pass the same health gate here; the compare-and-set of the pool's
 * hash, the record of the swap and the retirement of the old colour's
 * endpoints (and the closing of idle connections to them, see
 * sy_flags_publish_fn) follow from it. Part of the flag store (its Redis
 * session and record); control thread only. */
#ifndef SY_POOLS_H
#define SY_POOLS_H

#include "flags/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the swap reads and writes of the endpoints' run-time state, which has its
 * owner in healthcheck/endpoints.c (sy_endpoints_pool_ops; main binds it). */
typedef struct sy_pool_endpoints {
    /* Good probes in a row of ep (an endpoint of cfg), -1 when it is down. */
    int (*good_probes)(void *ud, const sy_config_t *cfg, const sy_endpoint_t *ep);
    int64_t (*retired)(void *ud, const sy_config_t *cfg, const sy_endpoint_t *ep);
    /* Its colour stopped being active at since_ms (0: active again). */
    void (*retire)(void *ud, const sy_config_t *cfg, const sy_endpoint_t *ep, int64_t since_ms);
    void *ud;
} sy_pool_endpoints_t;

/* Binds the endpoints' state (copied); without it no swap passes the health gate. */
void sy_pools_bind_endpoints(sy_flagstore_t *s, sy_pool_endpoints_t eps);

/* The health gate of a swap: true when every endpoint of `color` of pool p of cfg
 * is up and passed health.rise probes in a row; else false with the reason in why. */
bool sy_pool_color_ready(const sy_pool_endpoints_t *eps, const sy_config_t *cfg, const sy_pool_t *p, int color,
                         char *why, size_t cap);

/* A swap of the coloured pool `pool` to `to` ("blue", "green", or NULL for the
 * other colour), by actor, for reason (both copied). Refused with SY_ENOTFOUND (no such
 * pool), SY_EINVAL (no colours, a bad `to`), SY_ECONFLICT (the target colour fails the health
 * gate; logged), SY_EUNAVAILABLE while Redis is away (instances must agree), SY_ECONFLICT when the
 * pool changed at the same time. Else written to switchyard:pool:{name}
 * (compare-and-set), recorded, published: SY_OK. `done` gets result NULL and is
 * called exactly once, possibly before this returns; its err is valid during
 * the call only (the conflict's reason names the endpoint). */
void sy_pools_swap(sy_flagstore_t *s, const char *pool, const char *to, const char *actor, const char *reason,
                   sy_flags_done_fn done, void *ud);

#endif
