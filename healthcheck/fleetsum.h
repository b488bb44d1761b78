/* The fleet's sums, pure (no I/O, no clock: unit-tested without Redis).
 *
 * Each instance publishes the seconds its monitor closed, per route: for each
 * second, both sides' requests, errors, errors by kind and the latency
 * histograms (total and time to first byte) as sparse [bucket, count] pairs
 * (sy_fleet_second_json; a second's samples use few of the 1600 buckets, and
 * past SY_FLEET_HIST_PAIRS non-empty buckets neighbours are folded pairwise,
 * each fold halving the resolution: 1/128 -> 1/64 ...). A heartbeat carries
 * the last SY_FLEET_HISTORY seconds, so a reader that missed a beat catches up.
 *
 * A reader remembers, per instance and route, the last second it took
 * (sy_fleet_cursors_t), so each instance's second is added once. A route's
 * sum (sy_fleet_sum_t) stages the seconds that may still get contributions
 * (at most SY_FLEET_STAGE), then closes them in order, oldest first, into a
 * window ring of 1 s sides (the route's `window`; older seconds drop out) and
 * the evidence since the route's last change, exactly as the monitor does for
 * its own traffic; sy_fleet_sum_evaluate runs the same rules
 * (sy_rules_evaluate, then sy_rules_evaluate_evidence). */
#ifndef SY_FLEETSUM_H
#define SY_FLEETSUM_H

#include "healthcheck/rules.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define SY_FLEET_HISTORY 5     /* closed seconds per route in each heartbeat */
#define SY_FLEET_HIST_PAIRS 64 /* non-empty buckets per histogram and second, at most */
#define SY_FLEET_STAGE 8       /* seconds a sum keeps open for late instances */
#define SY_FLEET_MAX_INSTANCES 64
#define SY_FLEET_MAX_ROUTES 64

/* {"s": second, "l": side, "n": side}; a side is {"r": requests, "e": errors,
 * "k": [by kind] (only with errors), "t": [sum_us, bucket, count, ...],
 * "f": [ttfb sum_us, bucket, count, ...]} and absent without requests. A new
 * reference; NULL when both sides are empty (nothing to publish). */
json_t *sy_fleet_second_json(int64_t second, const sy_side_t *legacy, const sy_side_t *fresh);
/* The reverse; legacy and fresh are overwritten. SY_EINVAL-style -1 on a
 * malformed second (nothing of it is to be used), else 0. */
int sy_fleet_second_parse(const json_t *j, int64_t *second, sy_side_t *legacy, sy_side_t *fresh);

/* Per instance: the last second it said it closed (`upto`, any route) and,
 * per route slot, the last second taken from it. */
typedef struct sy_fleet_cursor {
    char id[160];
    int64_t upto;
    int64_t taken[SY_FLEET_MAX_ROUTES];
    uint64_t seen;      /* the read-back that saw it last */
} sy_fleet_cursor_t;

typedef struct sy_fleet_cursors {
    sy_fleet_cursor_t inst[SY_FLEET_MAX_INSTANCES];
    size_t n;
    uint64_t round;     /* read-backs so far */
} sy_fleet_cursors_t;

/* A read-back begins: instances not seen in it are forgotten at its end. */
void sy_fleet_cursors_begin(sy_fleet_cursors_t *c);
/* The instance's cursor (added when new; NULL when the table is full). */
sy_fleet_cursor_t *sy_fleet_cursor_get(sy_fleet_cursors_t *c, const char *id);
/* Whether `second` of route slot r is new from this instance (then it is
 * marked taken): seconds come oldest first, each once. */
bool sy_fleet_cursor_take(sy_fleet_cursor_t *cur, size_t r, int64_t second);
/* The read-back ended: drops the instances it did not see; returns the
 * smallest `upto` of the rest (0 when none): every instance has published the
 * seconds up to it. */
int64_t sy_fleet_cursors_end(sy_fleet_cursors_t *c);
/* Route slots were renumbered (a reload): every instance's seconds count anew
 * (the sums' floors keep old seconds out). */
void sy_fleet_cursors_forget_routes(sy_fleet_cursors_t *c);

typedef struct sy_fleet_sum {
    const sy_trip_conf_t *conf;  /* borrowed: the config's trip rules of the route */
    size_t nbuckets;             /* the window's seconds */
    sy_side_t *ring;             /* [nbuckets][2]: closed seconds */
    sy_side_t window[2];         /* the ring's sum: legacy, new */
    sy_side_t *stage;            /* [SY_FLEET_STAGE][2]: open seconds */
    int64_t closed;              /* the last closed second: nothing at or before it is taken */
    int64_t floor;               /* the route's last reset: seconds at or before it never count */
    int64_t ev_floor;            /* the last change: seconds at or before it stay out of the evidence */
    int64_t first;               /* the first second of data in the window */
    sy_evidence_t ev;            /* since the route's last change */
    double ev_since;             /* when that was (the caller's clock) */
    double now;                  /* the caller's clock at the last close */
    uint64_t rng;
    uint64_t late;               /* contributions that came after their second closed (counted all the same) */
} sy_fleet_sum_t;

/* NULL without memory. now_s: the current epoch second (seconds up to it do
 * not count: the sum starts with the next); now: the caller's clock. */
sy_fleet_sum_t *sy_fleet_sum_create(const sy_trip_conf_t *c, int64_t now_s, double now);
void sy_fleet_sum_destroy(sy_fleet_sum_t *s);
/* One instance's closed second; false when it is at or before the floor.
 * A late one (its second closed already: that instance stalled) is counted
 * in `late` and still joins the window (while the second is in it) and the
 * evidence, not the per-second units. A second more than SY_FLEET_STAGE past
 * the last closed one closes the oldest open ones first. */
bool sy_fleet_sum_add(sy_fleet_sum_t *s, int64_t second, const sy_side_t *legacy, const sy_side_t *fresh);
/* Closes the open seconds up to `upto`, oldest first: each goes into the
 * window ring (replacing the second nbuckets before it) and the evidence,
 * then is compared per second (the ratio rule's unit, sy_rules_second_compare,
 * and the evidence's, sy_evidence_close_second), as the monitor does. */
void sy_fleet_sum_close(sy_fleet_sum_t *s, int64_t upto, double now);
/* Seconds of data in the window. */
double sy_fleet_sum_window_s(const sy_fleet_sum_t *s);
/* The monitor's rules on the fleet's window and evidence. */
void sy_fleet_sum_evaluate(const sy_fleet_sum_t *s, sy_verdict_t *out);
/* The route left tripped/off (window and evidence start again) or changed
 * its percentage (the evidence starts again): seconds up to now_s no longer
 * count. */
void sy_fleet_sum_reset(sy_fleet_sum_t *s, int64_t now_s, double now);
void sy_fleet_sum_restart_evidence(sy_fleet_sum_t *s, int64_t now_s, double now);

#endif
