/* The gateway's lifecycle on the control thread: signals, reload, drain.
 *
 * SIGHUP reloads the config: the file is read and parsed on a short-lived
 * helper thread (the control loop never waits on file I/O), and the parsed
 * config comes back to the control loop through an ev_async, which hands it
 * to every part (the loader thread also takes the fleet's config hash). Keys whose reload column says "restart" (config table) are
 * warned about. A SIGHUP during a load loads again once it is done.
 * SIGTERM, SIGQUIT, SIGINT and a hand-off to a newer process drain: the
 * workers finish what is in flight, the last numbers and the stop event get
 * up to 2 s to reach PostgreSQL, then the loop breaks. The start, stop and
 * reload events of the gateway go to the record from here. Control thread. */
#ifndef SY_LIFECYCLE_H
#define SY_LIFECYCLE_H

#include "flags/audit.h"
#include "flags/store.h"
#include "handlers/admin.h"
#include "healthcheck/endpoints.h"
#include "healthcheck/fleet.h"
#include "healthcheck/health.h"
#include "healthcheck/monitor.h"
#include "proxy/server.h"

#include <ev.h>

typedef struct sy_lifecycle sy_lifecycle_t;

/* The parts a reload or a drain reaches (borrowed; any may be NULL). */
typedef struct sy_lifecycle_parts {
    sy_server_t *server;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
    sy_health_t *health;
    sy_admin_t *admin;
    sy_audit_t *audit;
    sy_endpoints_t *endpoints;
    sy_fleet_t *fleet;
} sy_lifecycle_parts_t;

/* Starts handling the signals at once (they act once the loop runs). The
 * path is borrowed and must outlive it. NULL without memory. */
sy_lifecycle_t *sy_lifecycle_create(struct ev_loop *loop, const char *config_path);
/* The parts, once they exist (copied). */
void sy_lifecycle_bind(sy_lifecycle_t *l, const sy_lifecycle_parts_t *parts);
/* Serves the listening sockets to a newer process at path (sy_handoff_serve);
 * once one takes over, this gateway drains. */
void sy_lifecycle_serve_handoff(sy_lifecycle_t *l, const char *path);
/* Records a gateway event (start, stop, reload) with version, config, pid. */
void sy_lifecycle_record(sy_lifecycle_t *l, const char *kind, const char *reason);
/* Stops the signals, the hand-off and a load under way (waits for it). */
void sy_lifecycle_destroy(sy_lifecycle_t *l);

#endif
