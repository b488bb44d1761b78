/* Shadow traffic: a sample of the requests legacy serves is sent again to new
 * (and, for noise subtraction, once more to legacy), the answers are read,
 * handed to the observer's `shadow` hook for comparison, and discarded.
 *
 * The safety rules, which this module enforces:
 * - the user's exchange never waits for a shadow: the copy of the request is
 *   sent once the user's request was read whole, the legacy response is relayed
 *   as usual while a bounded copy of it (up to max_body) is kept aside;
 * - only the methods listed (GET and HEAD by default) are shadowed; a request
 *   whose body exceeds max_body is not shadowed (counted);
 * - per worker at most max_inflight shadows hold memory at once (each at most
 *   about 3 x max_body plus heads); at the limit a sampled request is skipped
 *   and counted; every shadow request ends within timeout;
 * - shadow requests carry `X-Switchyard-Shadow: 1`; their answers never reach
 *   a client.
 *
 * The configuration is a section registered on `routes` (each route's
 * `shadow:` mapping), read by route index. The engine (sy_shadow_engine_t) is
 * per worker and runs on that worker's loop only. */
#ifndef SY_SHADOW_H
#define SY_SHADOW_H

#include "proxy/config.h"
#include "proxy/h1.h"
#include "proxy/hooks.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A route's `shadow:` mapping. */
typedef struct sy_shadow_conf {
    bool enabled;
    int32_t percent_bp;        /* share of legacy's requests shadowed, 0..10000 */
    char **methods;            /* upper case; default GET, HEAD */
    size_t nmethods;
    uint64_t max_body;         /* bytes of a request or response body kept (default 64 KiB) */
    uint64_t max_inflight;     /* shadows alive per worker (default 256) */
    uint64_t timeout_ms;       /* each shadow request, connect to last byte (default 2000) */
    bool noise;                /* also ask legacy a second time (Diffy's noise subtraction) */
    char **compare_headers;    /* response headers compared (lower case) */
    size_t ncompare_headers;
    char **ignore_json;        /* diff.ignore_json: $.a.b, $.a[*].b */
    size_t nignore_json;
    char **redact;             /* more headers redacted in samples (lower case) */
    size_t nredact;
} sy_shadow_conf_t;

typedef struct sy_shadow_confs {
    sy_shadow_conf_t *routes;  /* by route index */
    size_t n;
} sy_shadow_confs_t;

extern const sy_conf_section_t sy_shadow_section;

/* Route `route`'s shadow settings in cfg, or NULL when it shadows nothing. */
const sy_shadow_conf_t *sy_shadow_conf_of(const sy_config_t *cfg, int route);

typedef struct sy_shadow_engine sy_shadow_engine_t;
typedef struct sy_shadow sy_shadow_t;

/* A worker's engine. Shadow requests take connections from `ups` (the
 * worker's upstream pools, proxy/upstream.h) and give them back. ups,
 * `observer` (its `shadow` hook) and `router` (its `pick`) outlive it.
 * Returns NULL when out of memory. */
struct sy_upstreams;
sy_shadow_engine_t *sy_shadow_engine_create(struct ev_loop *loop, int worker, struct sy_upstreams *ups,
                                            const sy_router_t *router, const sy_observer_t *observer);
/* Cancels every shadow in flight (no results; their connections go back to
 * the pools, closed) and frees the engine. Call it before the pools go. NULL-safe. */
void sy_shadow_engine_destroy(sy_shadow_engine_t *e);
/* Shadows alive now. */
size_t sy_shadow_engine_inflight(const sy_shadow_engine_t *e);

/* The user's request was routed to legacy (dec): sample it. Returns a capture
 * the exchange owns until it hands it back with sy_shadow_legacy_done or
 * sy_shadow_drop, or NULL (not shadowed; a skip was counted when the route
 * shadows). `body`/`body_len`: body bytes already read (held for the router). */
sy_shadow_t *sy_shadow_begin(sy_shadow_engine_t *e, struct sy_snapshot *snap, const sy_decision_t *dec,
                             const sy_h1_msg_t *req, const char *body, size_t body_len);
/* More of the request body. Returns false when the shadow was dropped (too
 * large): the caller forgets s. */
bool sy_shadow_req_body(sy_shadow_t *s, const char *data, size_t len);
/* The request was read whole: the shadow requests start now. Returns false
 * when the shadow was dropped (the caller forgets s). */
bool sy_shadow_req_done(sy_shadow_t *s);
/* Legacy's final response head and body pieces, as relayed to the user. */
void sy_shadow_resp_head(sy_shadow_t *s, const sy_h1_msg_t *resp);
void sy_shadow_resp_body(sy_shadow_t *s, const char *data, size_t len);
/* Legacy's response ended whole: the exchange gives s up (the comparison runs
 * once the shadow requests end). */
void sy_shadow_legacy_done(sy_shadow_t *s);
/* The user's exchange ended otherwise: s is given up, nothing is compared. */
void sy_shadow_drop(sy_shadow_t *s);

#endif
