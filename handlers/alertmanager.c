#include "handlers/alertmanager.h"

#include "proxy/headers.h"
#include "proxy/log.h"

#include <stdio.h>
#include <string.h>

static json_t *error_json(int status, const char *reason)
{
    return json_pack("{s:s, s:s}", "error", sy_headers_error_kind(status), "reason", reason);
}

/* One firing alert on a known route: the alert is the evidence, its labels
 * and annotations go to the record. */
static void trip_for(sy_trip_t *trip, const char *route, json_t *alert, json_t *labels)
{
    const char *alertname = json_string_value(json_object_get(labels, "alertname"));
    char reason[256];
    snprintf(reason, sizeof(reason), "alert:%s", alertname ? alertname : "unnamed");
    sy_warn("alertmanager: firing alert %s trips route %s", alertname ? alertname : "unnamed", route);
    json_t *stats = json_pack("{s:s, s:O*, s:O*, s:O*}", "rule", "alertmanager", "labels", labels, "annotations",
                              json_object_get(alert, "annotations"), "startsAt", json_object_get(alert, "startsAt"));
    (void)sy_trip_fire(trip, route, "alertmanager", reason, stats);
    json_decref(stats);
}

int sy_alertmanager_handle(sy_trip_t *trip, const sy_routes_t *routes, const char *label, const json_t *body,
                           json_t **answer)
{
    json_t *alerts = body ? json_object_get(body, "alerts") : NULL;
    const char *version = body ? json_string_value(json_object_get(body, "version")) : NULL;
    if (!json_is_array(alerts) || version == NULL || strcmp(version, "4") != 0) {
        sy_warn("alertmanager: refused a payload that is not version 4 with an alerts list");
        *answer = error_json(400, "expected an Alertmanager webhook payload: {\"version\": \"4\", \"alerts\": [...]}");
        return 400;
    }
    json_t *tripped = json_array(), *unknown = json_array();
    size_t resolved = 0, k;
    json_t *a;
    json_array_foreach(alerts, k, a) {
        const char *status = json_string_value(json_object_get(a, "status"));
        json_t *labels = json_object_get(a, "labels");
        const char *rname = json_string_value(json_object_get(labels, label));
        if (status != NULL && strcmp(status, "resolved") == 0) {
            resolved++;
            continue;
        }
        if (status == NULL || strcmp(status, "firing") != 0 || rname == NULL)
            continue;
        if (sy_route_find(routes, rname) == NULL) {
            json_array_append_new(unknown, json_string(rname));
            continue;
        }
        trip_for(trip, rname, a, labels);
        json_array_append_new(tripped, json_string(rname));
    }
    if (json_array_size(unknown) > 0) {
        sy_warn("alertmanager: alerts name unknown routes (label '%s')", label);
        json_decref(tripped);
        *answer = json_pack("{s:s, s:s, s:o}", "error", sy_headers_error_kind(404), "reason",
                            "alerts name routes this gateway does not have", "unknown_routes", unknown);
        return 404;
    }
    json_decref(unknown);
    *answer = json_pack("{s:o, s:I}", "tripped", tripped, "resolved_ignored", (json_int_t)resolved);
    return 200;
}
