/* The admin listener: the gateway's own HTTP endpoints, on the control thread.
 *
 * GET /status, GET /healthz, GET /readyz, POST /routes/{name}/percent,
 * POST /routes/{name}/test-users, POST /routes/{name}/rollback|resume|promote,
 * POST /pools/{name}/swap, GET /routes/{name}/cohort?user=KEY, GET /metrics, POST /alerts/alertmanager,
 * GET /events?route=&kind=&since=&limit= and GET /windows?route=&since=&limit=
 * (read back from PostgreSQL, newest first; 503 while it is away).
 * Writes need `Authorization: Bearer TOKEN` (the token from admin.token_file,
 * compared in constant time); with no token configured, writes are refused.
 * Answers are JSON; bad input gets a 4xx JSON error saying what is wrong. One
 * request per connection (Connection: close), bodies up to 64 KiB.
 * Files: admin.c (listener, connections, the endpoint registry table),
 * api_routes.c (status, cohort, flag changes), api_record.c (events, windows),
 * metrics.c (the table of metric families); admin_conn.h is their shared,
 * handlers-only view of a connection. */
#ifndef SY_ADMIN_H
#define SY_ADMIN_H

#include "flags/audit.h"
#include "flags/store.h"
#include "healthcheck/endpoints.h"
#include "healthcheck/fleet.h"
#include "healthcheck/monitor.h"
#include "healthcheck/plan.h"
#include "healthcheck/trip.h"
#include "proxy/config.h"

#include <ev.h>

typedef struct sy_admin_conf {
    char *address;
    sy_addr_t addr;
    char *token_file;
    char *token;          /* read at load; never logged */
} sy_admin_conf_t;

extern const sy_conf_section_t sy_admin_section;

typedef struct sy_admin sy_admin_t;

/* Listens on the config's admin address (default 127.0.0.1:9901). Returns NULL
 * on error (logged). */
sy_admin_t *sy_admin_create(struct ev_loop *loop, const sy_config_t *cfg, sy_flagstore_t *store,
                            sy_monitor_t *monitor, const sy_endpoints_t *eps);
/* Picks up a reloaded config's token (the address needs a restart). */
void sy_admin_reload(sy_admin_t *a, const sy_config_t *cfg);
/* The record, for GET /events and GET /windows and the status (NULL: none). */
void sy_admin_set_audit(sy_admin_t *a, sy_audit_t *audit);
/* The trip owner, for POST /alerts/alertmanager (must outlive the admin). */
void sy_admin_set_trip(sy_admin_t *a, sy_trip_t *trip);
/* Shadow traffic results, for GET /routes/{name}/diffs and /metrics (must
 * outlive the admin; NULL: none). */
struct sy_shadowmon;
void sy_admin_set_shadow(sy_admin_t *a, struct sy_shadowmon *shadow);
/* GET /fleet answers from it (NULL: 404). */
void sy_admin_set_fleet(sy_admin_t *a, sy_fleet_t *fleet);
/* The plans' owner (may stay NULL: no plan endpoints then answer 404). */
void sy_admin_set_plan(sy_admin_t *a, sy_plan_t *plan);
/* Marks the gateway ready (workers running) or draining. */
void sy_admin_set_ready(sy_admin_t *a, bool ready);
/* Stops accepting and closes the admin listener (after a hand-off to a new
 * process, which answers on it from now on); open connections are served. */
void sy_admin_stop_listening(sy_admin_t *a);
void sy_admin_destroy(sy_admin_t *a);

#endif
