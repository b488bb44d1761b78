/* The last minutes of each route, one sample a second, for the dashboard's
 * sparklines and `ctl top`: per route and side (legacy, new) the requests and
 * errors of that second and its p50/p95/p99.
 *
 * Owned by the admin on the control thread: a 1 s timer reads the monitor's
 * since-start numbers (sy_monitor_route) and keeps the difference with the
 * previous second. The ring has a fixed size (SY_HISTORY_SECONDS per route and
 * side, allocated when the route set is seen); a new set of routes (a reload
 * that adds, drops or renames one) starts it afresh. Control thread only. */
#ifndef SY_HISTORY_H
#define SY_HISTORY_H

#include "healthcheck/monitor.h"

#include <ev.h>
#include <jansson.h>

#define SY_HISTORY_SECONDS 300

typedef struct sy_history sy_history_t;

/* Starts sampling m every second on loop. NULL: out of memory. m must outlive it. */
sy_history_t *sy_history_create(struct ev_loop *loop, const sy_monitor_t *m);
void sy_history_destroy(sy_history_t *h);
/* The last `seconds` samples (at most SY_HISTORY_SECONDS), oldest first:
 * {"period_s":1, "samples":n, "at":epoch_s of the newest, "routes":[{"name",
 * "legacy":{"requests":[..],"errors":[..],"p50_ms":[..],"p95_ms":[..],
 * "p99_ms":[..]}, "new":{..}}]}. A new reference. */
json_t *sy_history_json(const sy_history_t *h, size_t seconds);

#endif
