/* libFuzzer: an Alertmanager webhook payload, as POST /alerts/alertmanager
 * receives it: parsed like the admin parses a body, handled by the real
 * handler, the trip owner and a flag store (no Redis: the config is the
 * store) on routes named wallet and nav. */
#include "flags/store.h"
#include "handlers/admin_body.h"
#include "handlers/alertmanager.h"
#include "healthcheck/trip.h"
#include "proxy/config.h"
#include "proxy/log.h"
#include "routing/route.h"

#include <stdio.h>
#include <ev.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char config_text[] = "listen: [{address: 127.0.0.1:1}]\n"
                                  "pools:\n"
                                  "  a: {endpoints: [127.0.0.1:2]}\n"
                                  "  b: {endpoints: [127.0.0.1:3]}\n"
                                  "routes:\n"
                                  "  - {name: wallet, match: {path_prefix: /w}, legacy: a, new: b, percent_bp: 500}\n"
                                  "  - {name: nav, match: {path_prefix: /}, legacy: a, new: b, percent_bp: 2500}\n";

static void publish(void *ud, const sy_config_t *cfg, const sy_route_flags_t *flags, const sy_pool_flags_t *pools,
                    uint64_t serial)
{
    (void)ud;
    (void)serial;
    (void)cfg;
    (void)flags;
    (void)pools;
}

/* assert() is gone in release builds: a broken invariant must crash the fuzzer. */
#define CHECK(x)                                                                      \
    do {                                                                              \
        if (!(x)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);     \
            abort();                                                                  \
        }                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sy_config_t *cfg;
    if (cfg == NULL) {
        static const sy_conf_section_t *const sections[] = {&sy_routes_section};
        sy_log_set_level(SY_LOG_ERROR);
        sy_conf_t errs;
        cfg = sy_config_load_string(&errs, "fuzz.yaml", config_text, sections, 1);
        sy_conf_close(&errs);
        CHECK(cfg != NULL);
    }
    json_t *body = NULL;
    char why[256];
    if (sy_admin_body_parse((const char *)data, size, &body, why, sizeof(why)) != 0)
        return 0;
    sy_flagstore_t *store = sy_flagstore_create(EV_DEFAULT, cfg, publish, NULL);
    sy_trip_t *trip = sy_trip_create(NULL, NULL);
    CHECK(store != NULL && trip != NULL);
    sy_trip_bind(trip, store, NULL);
    const sy_routes_t *routes = sy_config_ext(cfg, "routes");
    json_t *answer = NULL;
    int status = sy_alertmanager_handle(trip, routes, size % 2 ? "route" : "alertname", body, &answer);
    CHECK(status == 200 || status == 400 || status == 404);
    CHECK(answer != NULL);
    char *text = json_dumps(answer, JSON_COMPACT);
    CHECK(text != NULL);
    free(text);
    json_decref(answer);
    json_decref(body);
    sy_trip_destroy(trip);
    sy_flagstore_destroy(store);
    return 0;
}
