/* switchyard: wiring only (parts, bindings, the loop, one teardown ladder). Trips: healthcheck/trip.h;
 * signals, reload, drain: handlers/lifecycle.h; the command line: handlers/cli.h. */
#include "flags/audit.h"
#include "flags/pools.h"
#include "flags/store.h"
#include "handlers/admin.h"
#include "handlers/cli.h"
#include "handlers/lifecycle.h"
#include "healthcheck/baseline.h"
#include "healthcheck/endpoints.h"
#include "healthcheck/feed.h"
#include "healthcheck/fleet.h"
#include "healthcheck/health.h"
#include "healthcheck/monitor.h"
#include "healthcheck/shadowmon.h"
#include "healthcheck/notify.h"
#include "healthcheck/plan.h"
#include "healthcheck/trip.h"
#include "proxy/handoff.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/server.h"
#include "proxy/snapshot.h"
#include "routing/route.h"
#include "routing/router.h"

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct app {
    struct ev_loop *loop;
    sy_server_t *server;
    sy_flagstore_t *store;
    sy_admin_t *admin;
    sy_monitor_t *monitor;
    sy_shadowmon_t *shadow;   /* shadow traffic results; the workers' observer feeds it */
    sy_observer_t observer;   /* the monitor's hooks plus the shadow's */
    sy_health_t *health;
    sy_endpoints_t *endpoints; /* the endpoints' state: its owner; each snapshot holds its table */
    sy_notify_t *notify;
    sy_audit_t *audit;
    sy_sink_t sink;           /* the record as the stores, the monitor and the trip see it */
    sy_trip_t *trip;
    sy_fleet_t *fleet;        /* heartbeats in Redis, GET /fleet */
    sy_plan_t *plan;          /* the plans' advance: its owner */
    sy_baseline_t *baseline;  /* colour baselines: the automatic swap-back */
    sy_lifecycle_t *life;
    sy_trip_marks_t marks;    /* the router reads the monitor's marks; both outlive the workers */
    sy_router_t router;
    sy_route_state_t last_state[SY_MONITOR_MAX_ROUTES];
    int last_percent[SY_MONITOR_MAX_ROUTES];  /* percent_bp last published, per route */
} app_t;

/* The flag store hands over new flags: build the routing state and publish a
 * snapshot to the workers. */
static void publish_flags(void *ud, const sy_config_t *cfg, const sy_route_flags_t *flags,
                          const sy_pool_flags_t *pools, uint64_t close_idle_serial)
{
    app_t *app = ud;
    /* A route leaving tripped/off starts its comparison afresh. */
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    for (size_t i = 0; rs != NULL && i < rs->n && i < SY_MONITOR_MAX_ROUTES; i++) {
        bool was_down = app->last_state[i] == SY_STATE_TRIPPED || app->last_state[i] == SY_STATE_OFF;
        bool is_up = flags[i].state == SY_STATE_RAMPING || flags[i].state == SY_STATE_PROMOTED;
        if (was_down && is_up && app->monitor != NULL) {
            sy_monitor_reset_route(app->monitor, rs->routes[i].name);
            sy_fleet_reset_route(app->fleet, rs->routes[i].name);
        } else if (app->last_percent[i] != flags[i].percent_bp && app->monitor != NULL) {
            sy_monitor_restart_evidence(app->monitor, rs->routes[i].name); /* a new step: evidence afresh */
            sy_fleet_restart_evidence(app->fleet, rs->routes[i].name);
        }
        app->last_state[i] = flags[i].state;
        app->last_percent[i] = flags[i].percent_bp;
    }
    sy_routing_t *rt = sy_routing_with_flags(cfg, flags, pools);
    sy_snapshot_t *snap = rt ? sy_snapshot_create((sy_config_t *)cfg, rt, sy_routing_free) : NULL;
    if (snap == NULL) {
        sy_error("flags: out of memory building a snapshot; the previous flags stay in force");
        return;
    }
    snap->eps = sy_epstate_ref(sy_endpoints_table(app->endpoints, cfg));
    snap->close_idle_serial = close_idle_serial; /* flags/pools.c retired the old colour */
    sy_server_publish(app->server, snap);
}

/* The parts, in the order they need one another. False on error (logged). */
static bool create_parts(app_t *app, sy_config_t *cfg)
{
    sy_routing_t *rt = sy_routing_from_config(cfg);
    app->endpoints = sy_endpoints_create(cfg, (size_t)cfg->workers);
    sy_snapshot_t *snap = rt && app->endpoints ? sy_snapshot_create(cfg, rt, sy_routing_free) : NULL;
    if (snap != NULL)
        snap->eps = sy_epstate_ref(sy_endpoints_table(app->endpoints, cfg));
    app->notify = sy_notify_create(app->loop, cfg); /* NULL without a notify section */
    app->sink = sy_audit_sink(app->audit);
    app->trip = snap ? sy_trip_create(&app->sink, app->notify) : NULL;
    if (app->trip == NULL) {
        sy_error("out of memory");
        sy_snapshot_release(snap);
        return false;
    }
    sy_monitor_hooks_t hooks = {.trip = sy_trip_monitor_fire, .warn = sy_trip_monitor_warn,
                                .critical = sy_trip_monitor_critical, .drained = sy_trip_monitor_drained,
                                .ud = app->trip,
                                .window = sy_feed_window, .window_ud = &app->sink,
                                .window_ms = sy_audit_window_ms(app->audit), .endpoints = app->endpoints};
    app->monitor = sy_monitor_create(app->loop, cfg, (size_t)cfg->workers, &hooks);
    /* The router reads the monitor's trip marks (consecutive errors) on every decision. */
    app->marks = (sy_trip_marks_t){.tripped = sy_monitor_tripped, .ud = app->monitor};
    app->router = sy_router_with_marks(&app->marks);
    app->shadow = app->monitor ? sy_shadowmon_create(app->loop, (size_t)cfg->workers) : NULL;
    if (app->shadow != NULL) {
        app->observer = *sy_monitor_observer(app->monitor);
        app->observer.shadow = sy_shadowmon_result;
        app->observer.shadow_ctx = app->shadow;
        app->server = sy_server_create(app->loop, snap, &app->router, &app->observer);
    } else
        sy_snapshot_release(snap);
    app->store = app->server ? sy_flagstore_create(app->loop, cfg, publish_flags, app) : NULL;
    if (app->store != NULL)
        sy_pools_bind_endpoints(app->store, sy_endpoints_pool_ops(app->endpoints));
    app->admin = app->store ? sy_admin_create(app->loop, cfg, app->store, app->monitor, app->endpoints) : NULL;
    app->health = app->admin ? sy_health_create(app->loop, cfg, app->endpoints) : NULL;
    return app->health != NULL;
}

/* One ladder, NULL-safe. The store answers writes in flight before the admin
 * goes; the last numbers go to the record, which journals what is queued and
 * fails reads still waiting (their admin connections still exist); the
 * monitor goes after the workers, which wrote into it. */
static void destroy_parts(app_t *app)
{
    sy_lifecycle_destroy(app->life);
    sy_notify_destroy(app->notify);
    sy_health_destroy(app->health);
    sy_plan_release(app->plan); /* its leases, through the store's client */
    sy_flagstore_destroy(app->store);
    sy_fleet_destroy(app->fleet); /* after the store: its Redis answered the fleet's reads */
    sy_plan_destroy(app->plan); /* after the store, which answers its writes */
    sy_baseline_destroy(app->baseline);
    sy_monitor_flush_windows(app->monitor);
    sy_audit_destroy(app->audit);
    sy_admin_destroy(app->admin);
    sy_server_destroy(app->server);
    sy_shadowmon_destroy(app->shadow);
    sy_monitor_destroy(app->monitor);
    sy_trip_destroy(app->trip);
    sy_endpoints_destroy(app->endpoints); /* the snapshots hold their tables themselves */
}

/* Where this process serves (and a successor takes over) the listening sockets. */
static void upgrade_socket_path(const sy_config_t *cfg, char *out, size_t cap)
{
    if (cfg->upgrade_socket != NULL)
        snprintf(out, cap, "%s", cfg->upgrade_socket);
    else
        sy_handoff_default_path(cfg->nlisten > 0 ? cfg->listen[0].address : NULL, out, cap);
}

static int cmd_run(const char *path, bool takeover, int ready_fd)
{
    sy_config_t *cfg = sy_cli_load(path);
    if (cfg == NULL)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    char upgrade_path[108];
    upgrade_socket_path(cfg, upgrade_path, sizeof(upgrade_path));
    int handoff_fd = takeover ? sy_handoff_take(upgrade_path, 10.0) : -1; /* before anything binds */
    int rc = 1;
    app_t app = {.loop = ev_default_loop(EVFLAG_AUTO)};
    /* Signals first: once a listener is open, a SIGHUP or SIGTERM must not kill the
     * process (handled once the loop runs). Then the record: no journal, no start. */
    if ((takeover && handoff_fd < 0) || (app.life = sy_lifecycle_create(app.loop, path)) == NULL ||
        sy_audit_create(app.loop, cfg, &app.audit) != 0)
        goto out;
    if (!create_parts(&app, cfg))
        goto out;
    sy_flagstore_set_sink(app.store, &app.sink);
    sy_admin_set_audit(app.admin, app.audit);
    sy_admin_set_trip(app.admin, app.trip);
    sy_admin_set_shadow(app.admin, app.shadow);
    sy_shadowmon_bind(app.shadow, app.store, sy_trip_monitor_warn, app.trip);
    app.plan = sy_plan_create(app.loop, cfg, app.store, app.monitor, &app.sink);
    if (app.plan == NULL)
        goto out;
    sy_admin_set_plan(app.admin, app.plan);
    if ((app.baseline = sy_baseline_create(app.loop, cfg, app.store, app.monitor, &app.sink)) == NULL)
        goto out;
    sy_trip_bind(app.trip, app.store, app.monitor);
    app.fleet = sy_fleet_create(app.loop, path, SY_VERSION, app.store, app.monitor, app.trip);
    sy_admin_set_fleet(app.admin, app.fleet);
    sy_plan_set_evidence(app.plan, sy_fleet_evidence, app.fleet); /* scope: fleet routes gate on the fleet's sum */
    sy_lifecycle_parts_t parts = {app.server, app.store, app.monitor, app.health, app.admin, app.audit, app.endpoints,
                                  app.fleet};
    sy_lifecycle_bind(app.life, &parts);
    if (sy_server_start(app.server) != 0) {
        sy_error("cannot start worker threads");
        goto out;
    }
    sy_admin_set_ready(app.admin, true);
    /* (On failure above, exit closes what the takeover received: the old process keeps serving.) */
    sy_net_inherit_close_unused();
    if (handoff_fd >= 0)
        (void)sy_handoff_ready(handoff_fd, 10.0);
    sy_lifecycle_serve_handoff(app.life, upgrade_path);
    sy_info("switchyard %s started: %lld workers, config %s", SY_VERSION, (long long)cfg->workers, path);
    sy_lifecycle_record(app.life, "start", takeover ? "started (took over the listening sockets)" : "started");
    sy_config_release(cfg); /* the parts hold what they need */
    cfg = NULL;
    sy_handoff_notify_ready(ready_fd);
    ev_run(app.loop, 0);
    rc = 0;
out:
    destroy_parts(&app);
    sy_config_release(cfg);
    if (rc == 0) {
        ev_loop_destroy(app.loop);
        sy_info("stopped");
    }
    return rc;
}

int main(int argc, char **argv)
{
    sy_log_init_from_env();
    return sy_cli_main(argc, argv, cmd_run);
}
