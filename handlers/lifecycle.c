#include "handlers/lifecycle.h"

#include "handlers/cli.h"
#include "proxy/handoff.h"
#include "proxy/log.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

struct sy_lifecycle {
    struct ev_loop *loop;
    const char *config_path;
    sy_lifecycle_parts_t p;
    sy_handoff_t *handoff;
    ev_signal sigs[4];
    ev_timer flush;
    ev_tstamp flush_until;
    ev_async loaded;
    pthread_t reader;
    bool loading, again;
    /* Written by the reader thread, read by the control loop after the join. */
    sy_config_t *next;
    sy_conf_t errs;
    char next_hash[20]; /* the fleet's config hash of what the reader read */
};

void sy_lifecycle_record(sy_lifecycle_t *l, const char *kind, const char *reason)
{
    json_t *st = json_pack("{s:s, s:s, s:i}", "version", SY_VERSION, "config", l->config_path, "pid", (int)getpid());
    sy_audit_event_t ev = {.kind = kind, .actor = "switchyard", .reason = reason, .stats = st};
    sy_audit_record(l->p.audit, &ev);
    json_decref(st);
}

/* --- drain ---------------------------------------------------------------------- */

/* Drained: the last period's numbers and the stop event get up to 2 s to reach
 * PostgreSQL; what does not stays in the journal for the next start. */
static void flush_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    sy_lifecycle_t *l = w->data;
    (void)revents;
    if (!sy_audit_busy(l->p.audit) || ev_now(loop) >= l->flush_until) {
        ev_timer_stop(loop, w);
        ev_break(loop, EVBREAK_ALL);
    }
}

static void drained(void *arg)
{
    sy_lifecycle_t *l = arg;
    sy_info("all workers drained; exiting");
    sy_monitor_flush_windows(l->p.monitor);
    l->flush_until = ev_now(l->loop) + 2.0;
    ev_timer_start(l->loop, &l->flush);
}

static void stop(sy_lifecycle_t *l, const char *why)
{
    sy_lifecycle_record(l, "stop", why);
    sy_handoff_destroy(l->handoff); /* nothing to hand over once draining */
    l->handoff = NULL;
    if (l->p.admin != NULL)
        sy_admin_set_ready(l->p.admin, false);
    sy_server_drain(l->p.server, drained, l);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    sy_lifecycle_t *l = w->data;
    (void)loop;
    (void)revents;
    sy_info("signal %d: draining (in-flight requests finish, up to timeouts.drain)", w->signum);
    char why[64];
    snprintf(why, sizeof(why), "signal %d: draining", w->signum);
    stop(l, why);
}

/* A new process took over the listening sockets and serves them: drain. */
static void on_handed_off(void *arg, int pid)
{
    sy_lifecycle_t *l = arg;
    char why[64];
    snprintf(why, sizeof(why), "upgrade: process %d took over; draining", pid);
    if (l->p.admin != NULL)
        sy_admin_stop_listening(l->p.admin);
    stop(l, why);
}

void sy_lifecycle_serve_handoff(sy_lifecycle_t *l, const char *path)
{
    l->handoff = sy_handoff_serve(l->loop, path, on_handed_off, l);
}

/* --- reload ---------------------------------------------------------------------- */

static void *reader_main(void *arg)
{
    sy_lifecycle_t *l = arg;
    l->next = sy_config_load(&l->errs, l->config_path, sy_cli_sections, sy_cli_nsections);
    if (l->next != NULL)
        sy_fleet_config_hash(l->config_path, l->next_hash, sizeof(l->next_hash)); /* file I/O: here, not on the loop */
    ev_async_send(l->loop, &l->loaded);
    return NULL;
}

static void start_load(sy_lifecycle_t *l)
{
    sy_info("SIGHUP: reloading %s", l->config_path);
    l->next = NULL;
    if (pthread_create(&l->reader, NULL, reader_main, l) != 0) {
        sy_error("reload refused, still running on the previous config: cannot start the reader thread");
        return;
    }
    l->loading = true;
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    sy_lifecycle_t *l = w->data;
    (void)loop;
    (void)revents;
    if (l->loading)
        l->again = true; /* the file may have changed after the reader opened it */
    else
        start_load(l);
}

static void warn_restart_keys(const sy_config_t *old, const sy_config_t *cfg)
{
    const char *keys[8];
    size_t n = sy_config_restart_keys(old, cfg, keys, SY_ARRAY_LEN(keys));
    for (size_t i = 0; i < n && i < SY_ARRAY_LEN(keys); i++)
        sy_warn("reload: a change of %s takes effect only after a restart", keys[i]);
}

static void apply(sy_lifecycle_t *l, sy_config_t *cfg)
{
    warn_restart_keys(sy_flagstore_config(l->p.store), cfg);
    /* The endpoints' state first (carried over by name): the snapshots the store
     * publishes next carry the new config's table. */
    if (sy_endpoints_reload(l->p.endpoints, cfg) != 0)
        sy_error("reload: out of memory for the endpoints' state; the new config's endpoints count as up");
    /* The store keeps each route's live flags and publishes a snapshot of the new config. */
    sy_flagstore_reload(l->p.store, cfg);
    sy_monitor_reload(l->p.monitor, cfg);
    sy_fleet_reload(l->p.fleet, l->next_hash);
    sy_lifecycle_record(l, "reload", "SIGHUP: new requests use the new config");
    sy_health_reload(l->p.health, cfg);
    if (l->p.admin != NULL)
        sy_admin_reload(l->p.admin, cfg);
    sy_info("reload: new requests use the new config");
}

static void loaded_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    sy_lifecycle_t *l = w->data;
    (void)loop;
    (void)revents;
    if (!l->loading)
        return;
    pthread_join(l->reader, NULL); /* it has sent: only its return is left */
    l->loading = false;
    sy_config_t *cfg = l->next;
    l->next = NULL;
    if (cfg == NULL) {
        for (size_t i = 0; i < l->errs.nerrors; i++)
            sy_error("reload refused, still running on the previous config: %s",
                     l->errs.errors[i] ? l->errs.errors[i] : "?");
        sy_lifecycle_record(l, "reload",
                            l->errs.nerrors > 0 && l->errs.errors[0] ? l->errs.errors[0] : "reload refused");
    } else if (l->p.store != NULL) {
        apply(l, cfg);
    }
    sy_conf_close(&l->errs);
    sy_config_release(cfg);
    if (l->again) {
        l->again = false;
        start_load(l);
    }
}

/* --- life ------------------------------------------------------------------------ */

sy_lifecycle_t *sy_lifecycle_create(struct ev_loop *loop, const char *config_path)
{
    sy_lifecycle_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->loop = loop;
    l->config_path = config_path;
    static const int signums[4] = {SIGTERM, SIGQUIT, SIGINT, SIGHUP};
    for (size_t i = 0; i < SY_ARRAY_LEN(l->sigs); i++) {
        ev_signal_init(&l->sigs[i], signums[i] == SIGHUP ? on_reload_signal : on_stop_signal, signums[i]);
        l->sigs[i].data = l;
        ev_signal_start(loop, &l->sigs[i]);
    }
    ev_async_init(&l->loaded, loaded_cb);
    l->loaded.data = l;
    ev_async_start(loop, &l->loaded);
    ev_timer_init(&l->flush, flush_cb, 0.02, 0.05);
    l->flush.data = l;
    return l;
}

void sy_lifecycle_bind(sy_lifecycle_t *l, const sy_lifecycle_parts_t *parts)
{
    l->p = *parts;
}

void sy_lifecycle_destroy(sy_lifecycle_t *l)
{
    if (l == NULL)
        return;
    if (l->loading) {
        pthread_join(l->reader, NULL);
        sy_config_release(l->next);
        sy_conf_close(&l->errs);
    }
    sy_handoff_destroy(l->handoff);
    for (size_t i = 0; i < SY_ARRAY_LEN(l->sigs); i++)
        ev_signal_stop(l->loop, &l->sigs[i]);
    ev_async_stop(l->loop, &l->loaded);
    ev_timer_stop(l->loop, &l->flush);
    free(l);
}
