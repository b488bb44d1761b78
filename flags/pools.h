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

/* The health gate of a swap: true when every endpoint of `color` is up and
 * passed health.rise probes in a row; else false with the reason in why. */
bool sy_pool_color_ready(const sy_pool_t *p, int color, char *why, size_t cap);

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
