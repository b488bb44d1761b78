/* The trip owner: every automatic rollback of a route goes through here,
 * whatever fired it (a comparator rule, N errors in a row on new, an
 * Alertmanager alert). One trip is, in this order: the flag store rolls the
 * route back (local at once, Redis after), the record gets one `trip` event
 * with the flags before and after and the numbers that caused it, the webhook
 * gets one notification, and the route's trip counter (the monitor's view,
 * read by /status and /metrics) goes up by one. A route already tripped or
 * off is left alone: nothing is recorded, sent or counted.
 *
 * Warnings (warn_* rules) and critical alerts (critical_* rules, a refused
 * rollback) are recorded and notified here too, with the same side-by-side
 * numbers and a severity, and change nothing. Control thread only. */
#ifndef SY_TRIP_H
#define SY_TRIP_H

#include "flags/sink.h"
#include "flags/store.h"
#include "healthcheck/monitor.h"
#include "healthcheck/notify.h"

#include <jansson.h>
#include <stdbool.h>

typedef struct sy_trip sy_trip_t;

/* sink (copied) and notify may be NULL (no record, no webhook); what they
 * point to must outlive the trip. Returns NULL without memory. */
sy_trip_t *sy_trip_create(const sy_sink_t *sink, sy_notify_t *notify);
/* The store to flip and the monitor whose windows and counters a trip reads
 * and bumps; both are created after the trip (the monitor takes the trip's
 * hooks at its creation) and must outlive it. Either may be NULL. */
void sy_trip_bind(sy_trip_t *t, sy_flagstore_t *store, sy_monitor_t *monitor);
void sy_trip_destroy(sy_trip_t *t);

/* Trips `route`: rule names the trigger ("max_error_rate", "consecutive_errors",
 * "alertmanager", ...), reason is what the flags and the record say. stats
 * (borrowed) is the evidence; NULL: the route's side-by-side window numbers
 * from the monitor. Returns whether the route was tripped by this call. */
bool sy_trip_fire(sy_trip_t *t, const char *route, const char *rule, const char *reason, json_t *stats);
/* Records a warning on `route` with the side-by-side numbers and notifies it
 * (severity "warn"); no flip. */
void sy_trip_warn(sy_trip_t *t, const char *route, const char *rule, const char *detail);
/* The same at severity "critical" (event kind `critical`): a critical-tier rule,
 * or a rollback refused because legacy has no healthy endpoint. No flip. */
void sy_trip_critical(sy_trip_t *t, const char *route, const char *rule, const char *detail);

/* The monitor's hooks (sy_trip_fn), ud being the sy_trip_t: a fired rule
 * becomes sy_trip_fire with reason "rule: detail" and the window numbers. */
void sy_trip_monitor_fire(void *trip, const char *route, const char *rule, const char *detail);
void sy_trip_monitor_warn(void *trip, const char *route, const char *rule, const char *detail);
void sy_trip_monitor_critical(void *trip, const char *route, const char *rule, const char *detail);
/* After a trip, new has drained: a `drained` event (no flip, no notification). */
void sy_trip_monitor_drained(void *trip, const char *route, const char *rule, const char *detail);
/* The evidence since the route's last change as JSON (seconds, both sides,
 * the paired tests' counts and evidence). A new reference. */
json_t *sy_trip_evidence_json(const sy_evidence_t *e);

/* One side's numbers over `seconds` as JSON (requests, errors, error_rate, rps,
 * p50/p95/p99 in ms): for the record of a trip or warning and for /status. A
 * new reference. */
json_t *sy_trip_side_json(const sy_side_t *sd, double seconds);

#endif
