/* GET /routes/{name}/diffs: the route's shadow traffic (healthcheck/shadowmon.h):
 * shadowed requests, mismatches by kind, outcomes, latency of legacy and new on
 * the same requests, and the last mismatching pairs (headers redacted). */
#include "handlers/admin_conn.h"
#include "healthcheck/shadowmon.h"

#include "proxy/shadow.h"
#include "routing/route.h"

#include <string.h>

void sy_admin_ep_diffs(admin_conn_t *c, const char *route, json_t *body)
{
    (void)body;
    const sy_config_t *cfg = sy_flagstore_config(c->a->store);
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    const sy_route_t *r = rs ? sy_route_find(rs, route) : NULL;
    if (r == NULL) {
        sy_admin_respond_error(c, 404, "no such route");
        return;
    }
    int idx = (int)(r - rs->routes);
    if (c->a->shadow == NULL) {
        sy_admin_respond_error(c, 503, "shadow traffic is not running");
        return;
    }
    json_t *j = sy_shadowmon_json(c->a->shadow, idx, r->name);
    if (j == NULL) {
        sy_admin_respond_error(c, 500, "out of memory");
        return;
    }
    const sy_shadow_conf_t *sc = sy_shadow_conf_of(cfg, idx);
    json_object_set_new(j, "enabled", json_boolean(sc != NULL));
    if (sc != NULL)
        json_object_set_new(j, "config",
                            json_pack("{s:i, s:I, s:I, s:I, s:b}", "percent_bp", (int)sc->percent_bp, "max_body",
                                      (json_int_t)sc->max_body, "max_inflight", (json_int_t)sc->max_inflight,
                                      "timeout_ms", (json_int_t)sc->timeout_ms, "noise", sc->noise));
    /* Samples make it larger than one buffer: sent as a big answer. */
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text == NULL) {
        sy_admin_respond_error(c, 500, "out of memory");
        return;
    }
    sy_admin_respond_big(c, text, strlen(text), "application/json", true);
}
