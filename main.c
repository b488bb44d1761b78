/* switchyard: the command line. Thin by design: it loads the config, wires the
 * router and observer hooks into the engine, and handles signals. */
#include "flags/audit.h"
#include "flags/store.h"
#include "handlers/admin.h"
#include "handlers/ctl.h"
#include "healthcheck/health.h"
#include "healthcheck/monitor.h"
#include "healthcheck/notify.h"
#include "healthcheck/rules.h"
#include "proxy/accesslog.h"
#include "proxy/config.h"
#include "proxy/handoff.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/server.h"
#include "proxy/snapshot.h"
#include "routing/route.h"
#include "routing/router.h"

#include <ev.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SY_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/switchyard/switchyard.yaml"

/* Config sections owned by folders other than proxy/. */
static const sy_conf_section_t *const sections[] = {
    &sy_routes_section,
    &sy_redis_section,
    &sy_admin_section,
    &sy_trip_section,
    &sy_notify_section,
    &sy_postgres_section,
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage:\n"
            "  switchyard [run] -c FILE [--takeover] [--ready-fd N]\n"
            "                                    run the gateway; --takeover: take the listening sockets\n"
            "                                    of the running one (upgrade_socket), which then drains;\n"
            "                                    --ready-fd: write \"ready PID\" to fd N once serving"
            "  switchyard check -c FILE          validate a config; errors as file:line:col: message\n"
            "  switchyard cohort ROUTE USER [-c FILE] [--live]\n"
            "                                    print the bucket and variant of USER on ROUTE\n"
            "                                    (USER \"-\": one user per line from stdin); flags from\n"
            "                                    the config file, or with --live the running gateway's\n"
            "  switchyard migrate -c FILE        create or migrate the PostgreSQL schema, then exit\n"
            "  switchyard ctl [-a ADDR] [-t TOKENFILE] [--json] status|set|test-users|rollback|resume|promote|swap|events ...\n"
            "                                    talk to the admin API (switchyard ctl -h for more)\n"
            "  switchyard --version\n"
            "default FILE: " DEFAULT_CONFIG "\n");
}

static sy_config_t *load_or_report(const char *path)
{
    sy_conf_t errs;
    sy_config_t *cfg = sy_config_load(&errs, path, sections, SY_ARRAY_LEN(sections));
    if (cfg == NULL) {
        sy_conf_print_errors(&errs, stderr);
        if (errs.nerrors == 0)
            fprintf(stderr, "%s: cannot load the config (out of memory)\n", path);
    }
    sy_conf_close(&errs);
    return cfg;
}

static sy_snapshot_t *snapshot_of(sy_config_t *cfg)
{
    sy_routing_t *rt = sy_routing_from_config(cfg);
    if (rt == NULL)
        return NULL;
    return sy_snapshot_create(cfg, rt, sy_routing_free);
}

/* --- run ---------------------------------------------------------------- */

typedef struct app {
    struct ev_loop *loop;
    sy_server_t *server;
    sy_flagstore_t *store;
    sy_admin_t *admin;
    sy_monitor_t *monitor;
    sy_health_t *health;
    sy_notify_t *notify;
    sy_audit_t *audit;
    sy_handoff_t *handoff;    /* serves a newer process the listening sockets */
    sy_route_state_t last_state[SY_MONITOR_MAX_ROUTES];
    const char *config_path;
    ev_timer flush;
    ev_tstamp flush_until;
    ev_signal sigterm, sigquit, sigint, sighup;
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
        if (was_down && is_up && app->monitor != NULL)
            sy_monitor_reset_route(app->monitor, rs->routes[i].name);
        app->last_state[i] = flags[i].state;
    }
    sy_routing_t *rt = sy_routing_with_flags(cfg, flags, pools);
    sy_snapshot_t *snap = rt ? sy_snapshot_create((sy_config_t *)cfg, rt, sy_routing_free) : NULL;
    if (snap == NULL) {
        sy_error("flags: out of memory building a snapshot; the previous flags stay in force");
        return;
    }
    snap->close_idle_serial = close_idle_serial; /* flags/pools.c retired the old colour */
    sy_server_publish(app->server, snap);
}

/* A trip rule fired (monitor) : roll the route back, locally first. */
static json_t *route_stats(app_t *app, const char *route, const char *rule, const char *detail)
{
    for (size_t i = 0; i < sy_monitor_nroutes(app->monitor); i++) {
        const sy_route_view_t *v = sy_monitor_route(app->monitor, i);
        if (strcmp(v->route, route) == 0)
            return json_pack("{s:s, s:s, s:f, s:o, s:o}", "rule", rule, "detail", detail, "window_s", v->window_s,
                             "legacy", sy_admin_side_json(&v->window[0], v->window_s), "new",
                             sy_admin_side_json(&v->window[1], v->window_s));
    }
    return json_pack("{s:s, s:s}", "rule", rule, "detail", detail);
}

static void on_trip(void *ud, const char *route, const char *rule, const char *detail)
{
    app_t *app = ud;
    char reason[512];
    snprintf(reason, sizeof(reason), "%s: %s", rule, detail);
    json_t *stats = route_stats(app, route, rule, detail);
    sy_flagstore_trip(app->store, route, reason, stats);
    json_decref(stats);
    if (app->notify != NULL) {
        char now[32], body[1536], esc[1100];
        sy_flags_now(now);
        esc[sy_json_escape(esc, sizeof(esc) - 1, reason, strlen(reason))] = '\0';
        snprintf(body, sizeof(body), "{\"event\":\"trip\",\"route\":\"%s\",\"rule\":\"%s\",\"reason\":\"%s\","
                                     "\"actor\":\"switchyard\",\"at\":\"%s\"}",
                 route, rule, esc, now);
        sy_notify_send(app->notify, body);
    }
}

static void on_warn(void *ud, const char *route, const char *rule, const char *detail)
{
    app_t *app = ud;
    json_t *stats = route_stats(app, route, rule, detail);
    char reason[512];
    snprintf(reason, sizeof(reason), "%s: %s", rule, detail);
    sy_audit_event_t ev = {.kind = "warning", .route = route, .actor = "switchyard", .reason = reason, .stats = stats};
    sy_audit_record(app->audit, &ev);
    json_decref(stats);
}

static void on_window(void *ud, int64_t at_ms, const char *route, int variant, const sy_side_t *sd)
{
    app_t *app = ud;
    sy_audit_window(app->audit, at_ms, route, variant ? "new" : "legacy", sd->requests, sd->errors,
                    sy_hist_quantile_us(&sd->total, 0.5) / 1e3, sy_hist_quantile_us(&sd->total, 0.95) / 1e3,
                    sy_hist_quantile_us(&sd->total, 0.99) / 1e3);
}

static void record_gateway(app_t *app, const char *kind, const char *reason)
{
    json_t *st = json_pack("{s:s, s:s, s:i}", "version", SY_VERSION, "config", app->config_path, "pid", (int)getpid());
    sy_audit_event_t ev = {.kind = kind, .actor = "switchyard", .reason = reason, .stats = st};
    sy_audit_record(app->audit, &ev);
    json_decref(st);
}

/* Drained: the last period's numbers and the stop event get up to 2 s to reach
 * PostgreSQL; what does not stays in the journal for the next start. */
static void flush_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    app_t *app = w->data;
    (void)revents;
    if (!sy_audit_busy(app->audit) || ev_now(loop) >= app->flush_until) {
        ev_timer_stop(loop, w);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void drained(void *arg)
{
    app_t *app = arg;
    sy_info("all workers drained; exiting");
    sy_monitor_flush_windows(app->monitor);
    app->flush_until = ev_now(app->loop) + 2.0;
    ev_timer_init(&app->flush, flush_cb, 0.02, 0.05);
    app->flush.data = app;
    ev_timer_start(app->loop, &app->flush);
}

static void stop(app_t *app, const char *why)
{
    record_gateway(app, "stop", why);
    sy_handoff_destroy(app->handoff); /* nothing to hand over once draining */
    app->handoff = NULL;
    if (app->admin != NULL)
        sy_admin_set_ready(app->admin, false);
    sy_server_drain(app->server, drained, app);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    app_t *app = w->data;
    (void)loop;
    (void)revents;
    sy_info("signal %d: draining (in-flight requests finish, up to timeouts.drain)", w->signum);
    char why[64];
    snprintf(why, sizeof(why), "signal %d: draining", w->signum);
    stop(app, why);
}

/* A new process took over the listening sockets and serves them: drain. */
static void on_handed_off(void *arg, int pid)
{
    app_t *app = arg;
    char why[64];
    snprintf(why, sizeof(why), "upgrade: process %d took over; draining", pid);
    if (app->admin != NULL)
        sy_admin_stop_listening(app->admin);
    stop(app, why);
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    app_t *app = w->data;
    (void)loop;
    (void)revents;
    sy_info("SIGHUP: reloading %s", app->config_path);
    sy_conf_t errs;
    sy_config_t *cfg = sy_config_load(&errs, app->config_path, sections, SY_ARRAY_LEN(sections));
    if (cfg == NULL) {
        for (size_t i = 0; i < errs.nerrors; i++)
            sy_error("reload refused, still running on the previous config: %s",
                     errs.errors[i] ? errs.errors[i] : "?");
        record_gateway(app, "reload", errs.nerrors > 0 && errs.errors[0] ? errs.errors[0] : "reload refused");
        sy_conf_close(&errs);
        return;
    }
    sy_conf_close(&errs);
    const sy_config_t *old = sy_flagstore_config(app->store);
    if (cfg->workers != old->workers || cfg->nlisten != old->nlisten)
        sy_warn("reload: changes to workers or listen take effect only after a restart");
    const sy_audit_conf_t *pa = sy_config_ext(old, "postgres"), *pb = sy_config_ext(cfg, "postgres");
    if ((pa == NULL) != (pb == NULL) ||
        (pa != NULL && (strcmp(pa->journal, pb->journal) != 0 || (pa->conninfo == NULL) != (pb->conninfo == NULL) ||
                        (pa->conninfo != NULL && strcmp(pa->conninfo, pb->conninfo) != 0))))
        sy_warn("reload: a change of the postgres section takes effect after a restart");
    /* The store keeps each route's live flags and publishes a snapshot of the new config. */
    sy_flagstore_reload(app->store, cfg);
    sy_monitor_reload(app->monitor, cfg);
    record_gateway(app, "reload", "SIGHUP: new requests use the new config");
    sy_health_reload(app->health, cfg);
    if (app->admin != NULL)
        sy_admin_reload(app->admin, cfg);
    sy_config_release(cfg);
    sy_info("reload: new requests use the new config");
}

static int cmd_run(const char *path, bool takeover, int ready_fd)
{
    sy_config_t *cfg = load_or_report(path);
    if (cfg == NULL)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    char upgrade_path[108];
    if (cfg->upgrade_socket != NULL)
        snprintf(upgrade_path, sizeof(upgrade_path), "%s", cfg->upgrade_socket);
    else
        sy_handoff_default_path(cfg->nlisten > 0 ? cfg->listen[0].address : NULL, upgrade_path,
                                sizeof(upgrade_path));
    /* Before anything binds: the listeners of the running gateway become ours. */
    int handoff_fd = takeover ? sy_handoff_take(upgrade_path, 10.0) : -1;
    if (takeover && handoff_fd < 0) {
        sy_config_release(cfg);
        return 1;
    }
    app_t app = {.loop = ev_default_loop(EVFLAG_AUTO), .config_path = path};
    /* Signals first: once a listener is open, a SIGHUP or SIGTERM sent by whoever
     * saw the port must not kill the process (handled once the loop runs). */
    struct {
        ev_signal *w;
        void (*cb)(struct ev_loop *, ev_signal *, int);
        int sig;
    } sigs[] = {{&app.sigterm, on_stop_signal, SIGTERM},
                {&app.sigquit, on_stop_signal, SIGQUIT},
                {&app.sigint, on_stop_signal, SIGINT},
                {&app.sighup, on_reload_signal, SIGHUP}};
    for (size_t i = 0; i < SY_ARRAY_LEN(sigs); i++) {
        ev_signal_init(sigs[i].w, sigs[i].cb, sigs[i].sig);
        sigs[i].w->data = &app;
        ev_signal_start(app.loop, sigs[i].w);
    }
    /* The record first: a journal that cannot be opened stops the start. */
    if (sy_audit_create(app.loop, cfg, &app.audit) != 0) {
        sy_config_release(cfg);
        return 1;
    }
    sy_snapshot_t *snap = snapshot_of(cfg);
    if (snap == NULL) {
        sy_audit_destroy(app.audit);
        sy_config_release(cfg);
        sy_error("out of memory");
        return 1;
    }
    size_t nworkers = (size_t)snap->config->workers;
    sy_monitor_hooks_t hooks = {.trip = on_trip,
                                .warn = on_warn,
                                .window = on_window,
                                .window_ms = sy_audit_window_ms(app.audit),
                                .ud = &app};
    app.monitor = sy_monitor_create(app.loop, cfg, nworkers, &hooks);
    /* The router reads the monitor's trip marks (consecutive errors) on every
     * decision; both live until the workers are gone. */
    sy_trip_marks_t marks = {.tripped = sy_monitor_tripped, .ud = app.monitor};
    sy_router_t router = sy_router_with_marks(&marks);
    app.server = app.monitor ? sy_server_create(app.loop, snap, &router, sy_monitor_observer(app.monitor)) : NULL;
    if (app.server == NULL) {
        sy_monitor_destroy(app.monitor);
        sy_audit_destroy(app.audit);
        sy_config_release(cfg);
        return 1;
    }
    app.store = sy_flagstore_create(app.loop, cfg, publish_flags, &app);
    if (app.store != NULL) {
        sy_sink_t sink = sy_audit_sink(app.audit);
        sy_flagstore_set_sink(app.store, &sink);
    }
    app.admin = app.store ? sy_admin_create(app.loop, cfg, app.store, app.monitor) : NULL;
    if (app.admin != NULL)
        sy_admin_set_audit(app.admin, app.audit);
    app.health = app.admin ? sy_health_create(app.loop, cfg) : NULL;
    app.notify = sy_notify_create(app.loop, cfg); /* NULL without a notify section */
    sy_config_release(cfg);
    if (app.store == NULL || app.admin == NULL || app.health == NULL) {
        sy_health_destroy(app.health);
        sy_flagstore_destroy(app.store);
        sy_admin_destroy(app.admin);
        sy_server_destroy(app.server);
        sy_monitor_destroy(app.monitor);
        sy_audit_destroy(app.audit);
        return 1;
    }
    if (sy_server_start(app.server) != 0) {
        sy_error("cannot start worker threads");
        sy_flagstore_destroy(app.store);
        sy_admin_destroy(app.admin);
        sy_server_destroy(app.server);
        sy_monitor_destroy(app.monitor);
        sy_audit_destroy(app.audit);
        return 1;
    }
    sy_admin_set_ready(app.admin, true);
    /* (On the failure paths above, exit closes what the takeover received, and
     * the old process, seeing the hand-off connection close, keeps serving.) */
    sy_net_inherit_close_unused();
    if (handoff_fd >= 0)
        (void)sy_handoff_ready(handoff_fd, 10.0);
    app.handoff = sy_handoff_serve(app.loop, upgrade_path, on_handed_off, &app);
    sy_info("switchyard %s started: %zu workers, config %s", SY_VERSION, nworkers, path);
    record_gateway(&app, "start", takeover ? "started (took over the listening sockets)" : "started");
    sy_handoff_notify_ready(ready_fd);
    ev_run(app.loop, 0);
    sy_handoff_destroy(app.handoff);
    for (size_t i = 0; i < SY_ARRAY_LEN(sigs); i++)
        ev_signal_stop(app.loop, sigs[i].w);
    ev_timer_stop(app.loop, &app.flush);
    /* The store answers writes still in flight before the admin side goes. */
    sy_notify_destroy(app.notify);
    sy_health_destroy(app.health);
    sy_flagstore_destroy(app.store);
    /* The last period's numbers, then the record: it journals what is queued
     * and fails reads still waiting (their admin connections still exist). */
    sy_monitor_flush_windows(app.monitor);
    sy_audit_destroy(app.audit);
    sy_admin_destroy(app.admin);
    sy_server_destroy(app.server);
    sy_monitor_destroy(app.monitor); /* after the workers: they wrote into it */
    ev_loop_destroy(app.loop);
    sy_info("stopped");
    return 0;
}

/* --- check and cohort ---------------------------------------------------- */

static int cmd_check(const char *path)
{
    sy_config_t *cfg = load_or_report(path);
    if (cfg == NULL)
        return 2;
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    printf("%s: ok (%zu listeners, %zu pools, %zu routes, %lld workers)\n", path, cfg->nlisten, cfg->npools,
           rs ? rs->n : 0, (long long)cfg->workers);
    sy_config_release(cfg);
    return 0;
}

static int cmd_cohort(const char *path, const char *route, const char *user)
{
    sy_config_t *cfg = load_or_report(path);
    if (cfg == NULL)
        return 2;
    sy_routing_t *rt = sy_routing_from_config(cfg);
    int rc = 0;
    uint32_t bucket;
    sy_variant_t v;
    sy_reason_t reason;
    char line[1024];
    bool batch = strcmp(user, "-") == 0; /* one user per line on stdin */
    if (rt == NULL) {
        fprintf(stderr, "out of memory\n");
        rc = 1;
    } else if (sy_route_find(rt->routes, route) == NULL) {
        fprintf(stderr, "%s: no route named '%s'\n", path, route);
        rc = 2;
    } else {
        while (!batch || fgets(line, sizeof(line), stdin) != NULL) {
            if (batch) {
                line[strcspn(line, "\r\n")] = '\0';
                user = line;
            }
            if (sy_routing_cohort(rt, route, user, &bucket, &v, &reason) == 0)
                printf("route=%s user=%s bucket=%u variant=%s reason=%s flags=config\n", route, user, bucket,
                       sy_variant_name(v), sy_reason_name(reason));
            if (!batch)
                break;
        }
    }
    sy_routing_free(rt);
    sy_config_release(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    sy_log_init_from_env();
    /* ctl has options of its own: hand it everything after the word. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "ctl") == 0) {
            const char *cfg_path = NULL;
            for (int k = 1; k < i; k++)
                if (strcmp(argv[k], "-c") == 0 && k + 1 < i)
                    cfg_path = argv[k + 1];
            int n = argc - i;
            char **rest = argv + i;
            /* -c after ctl names the config too */
            for (int k = 1; k + 1 < n; k++)
                if (strcmp(rest[k], "-c") == 0)
                    cfg_path = rest[k + 1];
            char *filtered[128];
            int nf = 0;
            for (int k = 0; k < n && nf < 127; k++) {
                if (strcmp(rest[k], "-c") == 0 && k + 1 < n) {
                    k++;
                    continue;
                }
                filtered[nf++] = rest[k];
            }
            filtered[nf] = NULL;
            return sy_ctl_main(nf, filtered, cfg_path);
        }
        if (argv[i][0] != '-')
            break;
        if (strcmp(argv[i], "-c") == 0)
            i++;
    }
    const char *config = DEFAULT_CONFIG;
    const char *cmd = "run";
    bool takeover = false;
    int ready_fd = -1;
    const char *pos[4];
    int npos = 0;
    bool live = false; /* cohort: ask the running gateway */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--live") == 0) {
            live = true;
        } else if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) {
            if (++i >= argc) {
                usage(stderr);
                return 2;
            }
            config = argv[i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--takeover") == 0) {
            takeover = true;
        } else if (strcmp(argv[i], "--ready-fd") == 0) {
            char *end = NULL;
            ready_fd = ++i < argc ? (int)strtol(argv[i], &end, 10) : -1;
            if (ready_fd < 3 || end == NULL || *end != '\0' || fcntl(ready_fd, F_GETFD) < 0) {
                fprintf(stderr, "--ready-fd needs an open descriptor number (3 or more)\n");
                return 2;
            }
            (void)fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("switchyard %s\n", SY_VERSION);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (npos < 4) {
            pos[npos++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (npos > 0)
        cmd = pos[0];
    if (strcmp(cmd, "run") == 0 && npos <= 1)
        return cmd_run(config, takeover, ready_fd);
    if (strcmp(cmd, "check") == 0 && npos == 1)
        return cmd_check(config);
    if (strcmp(cmd, "migrate") == 0 && npos == 1) {
        sy_config_t *cfg = load_or_report(config);
        if (cfg == NULL)
            return 2;
        int rc = sy_audit_migrate(cfg);
        sy_config_release(cfg);
        return rc;
    }
    if (strcmp(cmd, "cohort") == 0 && npos == 3)
        return live ? sy_ctl_cohort_live(config, pos[1], pos[2]) : cmd_cohort(config, pos[1], pos[2]);
    usage(stderr);
    return 2;
}
