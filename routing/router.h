/* The router hook: per-snapshot routing state (routes from the config, flags
 * from the config or the flag store) and the decision for one request.
 *
 * A sy_routing_t is immutable once built and owned by the snapshot it is
 * published in (sy_routing_free is the snapshot's data_free). The flag store
 * builds a new one for every change and publishes it; nothing is edited in
 * place, so a request sees one consistent set of flags from start to end. */
#ifndef SY_ROUTER_H
#define SY_ROUTER_H

#include "proxy/hooks.h"
#include "proxy/snapshot.h"
#include "routing/cohort.h"
#include "routing/route.h"

#include "proxy/err.h"

typedef struct sy_route_flags {
    sy_route_state_t state;
    int32_t percent_bp;
    int32_t prev_percent_bp; /* restored by resume */
    char *salt;
    char **test_users;  /* sorted */
    size_t ntest_users;
    uint64_t version;
    const char *source; /* static: "config" or "redis" */
    /* who changed it last, and why (for status; the router ignores them) */
    char *actor;
    char *reason;
    char *updated_at;
} sy_route_flags_t;



/* A coloured pool's flags (switchyard:pool:{name}). */
typedef struct sy_pool_flags {
    int active;         /* SY_BLUE or SY_GREEN */
    uint64_t version;
    const char *source; /* static */
    char *actor, *reason, *updated_at;
} sy_pool_flags_t;

typedef struct sy_routing {
    const sy_routes_t *routes;  /* the config's; the snapshot keeps the config alive */
    sy_route_flags_t *flags;    /* routes->n entries, owned */
    const sy_config_t *cfg;
    int *pool_active;           /* cfg->npools entries: the active colour of each pool */
} sy_routing_t;

/* Deep copy (0 or SY_ENOMEM) and release of one route's flags. */
int sy_route_flags_copy(sy_route_flags_t *dst, const sy_route_flags_t *src) SY_MUST_USE;
void sy_route_flags_clear(sy_route_flags_t *f);
/* Builds routing state for cfg with the given flags (deep-copied; one per route,
 * in the config's route order) and pool flags (one per pool; NULL: the config's
 * active colours). */
sy_routing_t *sy_routing_with_flags(const sy_config_t *cfg, const sy_route_flags_t *flags,
                                    const sy_pool_flags_t *pools);
int sy_pool_flags_copy(sy_pool_flags_t *dst, const sy_pool_flags_t *src) SY_MUST_USE;
void sy_pool_flags_clear(sy_pool_flags_t *f);

/* Builds routing state with every route's flags at their config defaults. */
sy_routing_t *sy_routing_from_config(const sy_config_t *cfg);
void sy_routing_free(void *routing);

/* Routes tripped in the data path ahead of their flags. When a worker sees the
 * Nth error in a row on new, the trip's owner (healthcheck's monitor) marks the
 * route at once and wakes the control thread, which writes the trip into the
 * flags and publishes a snapshot. Until that snapshot is in force (and after:
 * the mark is only cleared when the route is resumed), the router asks on every
 * decision and routes a marked route as tripped. The mark itself is owned by
 * whoever implements `tripped`; it must be safe from any worker, lock-free. */
typedef struct sy_trip_marks {
    bool (*tripped)(const void *ud, const sy_snapshot_t *snap, int route_index);
    const void *ud;
} sy_trip_marks_t;

/* The router hook (ctx unused: no marks). */
extern const sy_router_t sy_router;
/* The router hook that also consults `marks` (borrowed: it must outlive the
 * workers). */
sy_router_t sy_router_with_marks(sy_trip_marks_t *marks);

/* Picks an endpoint of a pool (of its active colour) by round robin, skipping
 * endpoints marked down in eps (the snapshot's state table; NULL: all up); NULL
 * when all are down. */
const sy_endpoint_t *sy_pool_pick(const sy_pool_t *p, const sy_epstate_t *eps, int active, uint32_t rr);

/* What `switchyard cohort` prints: the bucket and the decision for a user on a
 * route, from flags alone. Returns 0, or -1 for an unknown route. */
int sy_routing_cohort(const sy_routing_t *rt, const char *route, const char *user, uint32_t *bucket,
                      sy_variant_t *variant, sy_reason_t *reason);
/* The same for one route and the flags given (the gateway's live ones for
 * GET /routes/{name}/cohort). Returns 0. */
int sy_route_cohort(const sy_route_t *r, const sy_route_flags_t *f, const char *user, uint32_t *bucket,
                    sy_variant_t *variant, sy_reason_t *reason);

#endif
