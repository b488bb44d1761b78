/* POST /alerts/alertmanager: an Alertmanager webhook payload (version 4) trips,
 * through the trip owner (healthcheck/trip.h), the route named by the `label`
 * label of each firing alert; resolved alerts change nothing (resuming is a
 * person's call). Pure of HTTP: the admin listener maps the result. */
#ifndef SY_ALERTMANAGER_H
#define SY_ALERTMANAGER_H

#include "healthcheck/trip.h"
#include "routing/route.h"

#include <jansson.h>

/* Handles one payload (body borrowed, may be NULL). Returns the HTTP status
 * to answer with and sets *answer (a new reference): 200 {"tripped": [...],
 * "resolved_ignored": N}; 400 for a payload that is not version 4 with an
 * alerts list; 404 listing the unknown routes when an alert names a route
 * this gateway does not have (the known ones are tripped all the same). */
int sy_alertmanager_handle(sy_trip_t *trip, const sy_routes_t *routes, const char *label, const json_t *body,
                           json_t **answer);

#endif
