/* Colour baselines for blue-green pools: the owner of the automatic swap-back.
 * A route whose legacy pool has colours may carry a `baseline:` (the speech
 * team's rules: latency regression above 20 %, error rate up by more than 5
 * points, throughput down by more than 20 %). While a colour serves, the
 * route's numbers over the last `window` are its baseline; when the active
 * colour changes (any swap: admin, ctl, a hand edit), that baseline is frozen
 * and the new colour's numbers since the swap are compared with it for
 * `window`. A regression (past the threshold, and significant at
 * `confidence` where a test applies: sequential for latency (default the
 * median, `latency: p50|p95|p99|mean`), two proportions
 * for errors) swaps back at once, through the swap's owner (flags/pools.c:
 * its health gate checks the old colour is still up), while the old colour is
 * still draining; a `baseline_revert` event carries both sides' numbers. No
 * regression for `window`: a `baseline_kept` event. Control thread only. */
#ifndef SY_BASELINE_H
#define SY_BASELINE_H

#include "flags/sink.h"
#include "flags/store.h"
#include "healthcheck/monitor.h"
#include "proxy/conf.h"

#include <ev.h>

typedef struct sy_baseline_conf {
    char *route;              /* NULL: no baseline */
    double max_latency_increase, max_error_increase, max_throughput_drop;
    double latency_q;         /* p50/p95/p99, 0 the mean; default p95 */
    double confidence;
    uint64_t window_ms;       /* the baseline's span, and how long a new colour is judged */
    int64_t min_requests;     /* of the new colour before it is judged */
} sy_baseline_conf_t;

typedef struct sy_baseline_confs {
    sy_baseline_conf_t *routes;
    size_t n;
} sy_baseline_confs_t;

extern const sy_conf_section_t sy_baseline_section;

typedef struct sy_baseline sy_baseline_t;

/* store, monitor and sink (copied) must outlive it. NULL without memory. */
sy_baseline_t *sy_baseline_create(struct ev_loop *loop, const sy_config_t *cfg, sy_flagstore_t *store,
                                  sy_monitor_t *monitor, const sy_sink_t *sink);
void sy_baseline_destroy(sy_baseline_t *b);

#endif
