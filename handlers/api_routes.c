/* The route and pool state: GET /status, GET /routes/{name}/cohort, and the
 * flag changes POST /routes/{name}/percent|test-users|rollback|resume|promote
 * (through the flag store, answered once their event is in the journal). */
#include "handlers/admin_body.h"
#include "handlers/admin_conn.h"
#include "healthcheck/colours.h"
#include "healthcheck/trip.h"

#include "proxy/headers.h"
#include "proxy/log.h"
#include "routing/route.h"
#include "routing/router.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sy_admin_flags_from(const sy_flagstore_t *store)
{
    sy_flagstore_status_t st;
    sy_flagstore_status(store, &st);
    return !st.configured ? "config" : st.synced ? "redis" : "config (redis not read yet)";
}

static json_t *route_json(const sy_route_t *r, const sy_route_flags_t *f)
{
    if (r->new_pool == NULL) /* a plain route: no cohort, no flags, legacy only */
        return json_pack("{s:s, s:b, s:s, s:n, s:I, s:I}", "name", r->name, "plain", 1, "legacy", r->legacy->name,
                         "new", "jwt_refused", (json_int_t)atomic_load_explicit(&r->jwt_refused, memory_order_relaxed),
                         "json_no_key", (json_int_t)atomic_load_explicit(&r->json_no_key, memory_order_relaxed));
    json_t *users = json_array();
    for (size_t i = 0; i < f->ntest_users && i < 100; i++)
        json_array_append_new(users, json_string(f->test_users[i]));
    json_t *j = json_pack("{s:s, s:s, s:i, s:f, s:i, s:s?, s:i, s:o, s:I, s:s, s:s?, s:s?, s:s?, s:s, s:s?, s:I, s:I}",
                     "name", r->name, "state", sy_state_name(f->state), "percent_bp", f->percent_bp, "percent",
                     f->percent_bp / 100.0, "prev_percent_bp", f->prev_percent_bp, "salt", f->salt,
                     "test_users_count", (int)f->ntest_users, "test_users", users, "version",
                     (json_int_t)f->version, "source", f->source ? f->source : "config", "actor", f->actor,
                     "reason", f->reason, "updated_at", f->updated_at, "legacy", r->legacy->name, "new",
                     r->new_pool ? r->new_pool->name : NULL, "jwt_refused",
                     (json_int_t)atomic_load_explicit(&r->jwt_refused, memory_order_relaxed), "json_no_key",
                     (json_int_t)atomic_load_explicit(&r->json_no_key, memory_order_relaxed));
    json_object_set_new(j, "plain", json_false());
    return j;
}

static json_t *window_json(const sy_monitor_t *m, const char *route)
{
    for (size_t i = 0; m != NULL && i < sy_monitor_nroutes(m); i++) {
        const sy_route_view_t *v = sy_monitor_route(m, i);
        if (strcmp(v->route, route) != 0)
            continue;
        json_t *w = json_pack("{s:f, s:s, s:s?, s:s, s:o, s:o, s:I, s:I, s:I}", "seconds", v->window_s, "verdict",
                              sy_level_name(v->verdict.level), "rule", v->verdict.rule, "detail", v->verdict.detail,
                              "legacy", sy_trip_side_json(&v->window[0], v->window_s), "new",
                              sy_trip_side_json(&v->window[1], v->window_s), "trips", (json_int_t)v->trips,
                              "warnings", (json_int_t)v->warnings, "criticals", (json_int_t)v->criticals);
        if (w != NULL && v->evidence != NULL)
            json_object_set_new(w, "evidence", sy_trip_evidence_json(v->evidence));
        return w;
    }
    return json_null();
}

void sy_admin_ep_status(admin_conn_t *c, const char *name, json_t *body)
{
    (void)name;
    (void)body;
    const sy_config_t *cfg = sy_flagstore_config(c->a->store);
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    const sy_route_flags_t *flags = sy_flagstore_flags(c->a->store);
    json_t *routes = json_array();
    for (size_t i = 0; rs != NULL && i < rs->n; i++) {
        json_t *r = route_json(&rs->routes[i], &flags[i]);
        json_t *w = window_json(c->a->monitor, rs->routes[i].name);
        if (rs->routes[i].new_pool == NULL && json_is_object(w))
            json_object_del(w, "new"); /* a plain route has one side */
        json_object_set_new(r, "window", w);
        json_object_set_new(r, "refused", sy_flagstore_route_refused(c->a->store, i));
        json_object_set_new(r, "plan", sy_plan_json(c->a->plan, rs->routes[i].name));
        json_array_append_new(routes, r);
    }
    sy_flagstore_status_t st;
    sy_flagstore_status(c->a->store, &st);
    json_t *redis = json_pack("{s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:s}", "configured", st.configured, "connected",
                              st.connected, "keyspace_notifications", st.notifications, "synced", st.synced,
                              "refused_edits", (json_int_t)st.refused, "syncs", (json_int_t)st.syncs, "reconnects",
                              (json_int_t)st.reconnects, "last_error", st.last_error);
    json_object_set_new(redis, "server", json_string(st.server));
    respond_json(c, 200, json_pack("{s:o, s:o, s:o, s:o, s:s}", "routes", routes, "pools", sy_admin_pools_json(c->a), "redis",
                                   redis, "record", sy_admin_record_json(c->a->audit), "flags_from",
                                   sy_admin_flags_from(c->a->store)));
}

/* GET /routes/{name}/cohort?user=KEY: the bucket and the decision with the flags
 * this gateway routes with now (`switchyard cohort --live`). */
void sy_admin_ep_cohort(admin_conn_t *c, const char *route, json_t *body)
{
    (void)body;
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(c->a->store), "routes");
    const sy_route_t *r = sy_route_find(rs, route);
    if (r == NULL) {
        respond_error(c, 404, "no such route");
        return;
    }
    char user[512];
    bool bad = false;
    if (!sy_admin_query_param(c, "user", user, sizeof(user), &bad)) {
        respond_error(c, 400, bad ? "query parameter 'user' is malformed or longer than 511 bytes"
                                  : "send ?user=KEY (the user key, percent-encoded)");
        return;
    }
    const sy_route_flags_t *f = &sy_flagstore_flags(c->a->store)[r - rs->routes];
    uint32_t bucket;
    sy_variant_t v;
    sy_reason_t why;
    sy_route_cohort(r, f, user, &bucket, &v, &why);
    respond_json(c, 200, json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:i, s:I, s:s}", "route", r->name, "user", user,
                                   "bucket", (int)bucket, "variant", sy_variant_name(v), "reason", sy_reason_name(why),
                                   "flags_from", sy_admin_flags_from(c->a->store),
                                   "state", r->new_pool ? sy_state_name(f->state) : "plain", "percent_bp",
                                   (int)f->percent_bp, "version", (json_int_t)f->version, "salt", f->salt));
}

/* The change's event is on disk: now the change is answered. */
static void answer_synced(void *ud, bool durable)
{
    admin_conn_t *c = ud;
    c->waiting = false;
    json_t *answer = c->answer;
    c->answer = NULL;
    if (!durable)
        json_object_set_new(answer, "record_warning", json_string("the journal is behind: see the log"));
    respond_json(c, 200, answer);
    sy_admin_conn_release(c);
}

/* A change succeeded: the answer waits (the reference held for the store moves
 * to the journal sync) until its event is fsync'd in the journal. */
void sy_admin_answer_after_record(admin_conn_t *c, json_t *answer)
{
    c->answer = answer;
    sy_audit_sync(c->a->audit, answer_synced, c);
}

void sy_admin_change_failed(admin_conn_t *c, sy_err_t err, const char *reason)
{
    c->waiting = false;
    respond_error(c, sy_http_status_of(err), reason ? reason : "failed");
    sy_admin_conn_release(c);
}

static void store_done(void *ud, sy_err_t err, const char *reason, const sy_route_flags_t *result)
{
    admin_conn_t *c = ud;
    if (err == SY_OK && result != NULL) {
        const sy_config_t *cfg = sy_flagstore_config(c->a->store);
        const sy_routes_t *rs = sy_config_ext(cfg, "routes");
        const sy_route_flags_t *all = sy_flagstore_flags(c->a->store);
        size_t i = (size_t)(result - all);
        sy_admin_answer_after_record(c, result >= all && i < rs->n ? route_json(&rs->routes[i], result)
                                                                   : json_pack("{s:s}", "status", "ok"));
        return;
    }
    sy_admin_change_failed(c, err, reason);
}

const char *sy_admin_actor_of(admin_conn_t *c, json_t *body)
{
    json_t *a = body ? json_object_get(body, "actor") : NULL;
    if (json_is_string(a) && json_string_length(a) > 0 && json_string_length(a) < 64)
        return json_string_value(a);
    const sy_header_t *h = sy_h1_find(&c->req.msg, "x-switchyard-actor");
    static char buf[64];
    if (h != NULL && h->value_len > 0 && h->value_len < sizeof(buf)) {
        memcpy(buf, h->value, h->value_len);
        buf[h->value_len] = '\0';
        return buf;
    }
    return "admin-api";
}

bool sy_admin_reason_of(admin_conn_t *c, json_t *body, const char **out)
{
    const char *why;
    if (sy_admin_body_reason(body, out, &why) != 0) {
        respond_error(c, 400, why);
        return false;
    }
    return true;
}

static void submit(admin_conn_t *c, const char *route, sy_flag_request_t *req, json_t *body)
{
    char now[32];
    sy_flags_now(now);
    req->now = now;
    req->actor = actor_of(c, body);
    if (!reason_of(c, body, &req->reason))
        return;
    c->refs++;
    c->waiting = true;
    sy_flagstore_request(c->a->store, route, req, store_done, c);
}

void sy_admin_ep_percent(admin_conn_t *c, const char *route, json_t *body)
{
    int32_t bp;
    const char *why;
    if (sy_admin_body_percent(body, &bp, &why) != 0) {
        respond_error(c, 400, why);
        return;
    }
    sy_flag_request_t req = {.op = SY_OP_PERCENT, .percent_bp = bp};
    submit(c, route, &req, body);
}

void sy_admin_ep_test_users(admin_conn_t *c, const char *route, json_t *body)
{
    const char **add, **rem, *why;
    size_t nadd, nrem;
    if (sy_admin_body_test_users(body, &add, &nadd, &rem, &nrem, &why) != 0) {
        respond_error(c, 400, why);
        return;
    }
    sy_flag_request_t req = {.op = SY_OP_TEST_USERS, .add = add, .nadd = nadd, .remove = rem, .nremove = nrem};
    submit(c, route, &req, body);
    free(add);
    free(rem);
}

/* Each colour's numbers since start, its endpoints' in-flight sum, and whether
 * it is the active one. */
static json_t *colors_json(const sy_admin_t *a, size_t pool)
{
    static const char *const colors[2] = {"blue", "green"};
    const sy_config_t *cfg = sy_flagstore_config(a->store);
    const sy_pool_t *p = &cfg->pools[pool];
    sy_side_t *sd = malloc(sizeof(*sd));
    json_t *out = json_object();
    for (int k = 0; sd != NULL && k < 2; k++) {
        sy_colours_get(sy_monitor_colours(a->monitor), pool, k, sd);
        long inflight = 0;
        for (size_t e = p->color_first[k]; e < p->color_first[k] + p->color_count[k]; e++)
            inflight += sy_endpoints_inflight(a->endpoints, cfg, &p->endpoints[e]);
        json_t *j = sy_trip_side_json(sd, 0);
        json_object_del(j, "rps"); /* since start: a rate means nothing here */
        json_object_set_new(j, "in_flight", json_integer(inflight));
        json_object_set_new(j, "active", json_boolean(sy_flagstore_pools(a->store)[pool].active == k));
        json_object_set_new(out, colors[k], j);
    }
    free(sd);
    return out;
}

json_t *sy_admin_pools_json(const sy_admin_t *a)
{
    const sy_config_t *cfg = sy_flagstore_config(a->store);
    const sy_pool_flags_t *pf = sy_flagstore_pools(a->store);
    static const char *const colors[2] = {"blue", "green"};
    json_t *out = json_array();
    for (size_t i = 0; i < cfg->npools; i++) {
        const sy_pool_t *p = &cfg->pools[i];
        json_t *eps = json_array();
        long draining = 0;
        for (size_t e = 0; e < p->nendpoints; e++) {
            const sy_endpoint_t *ep = &p->endpoints[e];
            int color = p->colored && e >= p->color_first[1] ? 1 : 0;
            long inflight = sy_endpoints_inflight(a->endpoints, cfg, ep); /* the workers' shards summed */
            if (p->colored && color != pf[i].active)
                draining += inflight;
            json_array_append_new(eps, json_pack("{s:s, s:s?, s:b, s:i, s:I}", "endpoint", ep->name, "color",
                                                 p->colored ? colors[color] : NULL, "up",
                                                 !sy_endpoints_is_down(a->endpoints, cfg, ep), "good_probes",
                                                 sy_endpoints_good_probes(a->endpoints, cfg, ep),
                                                 "in_flight", (json_int_t)inflight));
        }
        json_t *by_color = p->colored ? colors_json(a, i) : json_null();
        json_array_append_new(out, json_pack("{s:s, s:b, s:s?, s:I, s:s?, s:s?, s:s?, s:I, s:o, s:o, s:o}", "name", p->name,
                                             "colored", p->colored, "active",
                                             p->colored ? colors[pf[i].active] : NULL, "version",
                                             (json_int_t)pf[i].version, "actor", pf[i].actor, "reason", pf[i].reason,
                                             "updated_at", pf[i].updated_at, "draining", (json_int_t)draining,
                                             "endpoints", eps, "refused", sy_flagstore_pool_refused(a->store, i),
                                             "colors", by_color));
    }
    return out;
}

void sy_admin_ep_rollback(admin_conn_t *c, const char *route, json_t *body)
{
    sy_flag_request_t req = {.op = SY_OP_ROLLBACK};
    submit(c, route, &req, body);
}

void sy_admin_ep_resume(admin_conn_t *c, const char *route, json_t *body)
{
    sy_flag_request_t req = {.op = SY_OP_RESUME};
    submit(c, route, &req, body);
}

void sy_admin_ep_promote(admin_conn_t *c, const char *route, json_t *body)
{
    sy_flag_request_t req = {.op = SY_OP_PROMOTE};
    submit(c, route, &req, body);
}

/* GET /routes/{name}: the route as in /status (flags, window, plan). */
void sy_admin_ep_route(admin_conn_t *c, const char *name, json_t *body)
{
    (void)body;
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(c->a->store), "routes");
    const sy_route_t *r = rs != NULL ? sy_route_find(rs, name) : NULL;
    if (r == NULL) {
        respond_error(c, 404, "no such route");
        return;
    }
    size_t i = (size_t)(r - rs->routes);
    json_t *j = route_json(r, &sy_flagstore_flags(c->a->store)[i]);
    json_t *w = window_json(c->a->monitor, r->name);
    if (r->new_pool == NULL && json_is_object(w))
        json_object_del(w, "new");
    json_object_set_new(j, "window", w);
    json_object_set_new(j, "refused", sy_flagstore_route_refused(c->a->store, i));
    json_object_set_new(j, "plan", sy_plan_json(c->a->plan, r->name));
    respond_json(c, 200, j);
}

/* GET /routes/{name}/plan */
void sy_admin_ep_plan(admin_conn_t *c, const char *name, json_t *body)
{
    (void)body;
    json_t *j = sy_plan_json(c->a->plan, name);
    if (json_is_null(j)) {
        json_decref(j);
        respond_error(c, 404, "the route has no plan");
        return;
    }
    respond_json(c, 200, json_pack("{s:s, s:o}", "route", name, "plan", j));
}

static void plan_done(void *ud, const char *err, int status)
{
    admin_conn_t *c = ud;
    if (err != NULL)
        respond_error(c, status, err);
    else
        respond_json(c, 200, json_pack("{s:o}", "plan", sy_plan_json(c->a->plan, c->plan_route)));
    sy_admin_conn_release(c);
}

static void plan_pause(admin_conn_t *c, const char *name, json_t *body, bool pause)
{
    json_t *why = body ? json_object_get(body, "reason") : NULL;
    snprintf(c->plan_route, sizeof(c->plan_route), "%s", name);
    c->refs++; /* until plan_done */
    sy_plan_pause(c->a->plan, name, pause, actor_of(c, body), json_is_string(why) ? json_string_value(why) : "",
                  plan_done, c);
}

/* POST /routes/{name}/pause, /routes/{name}/continue {"reason": "..."} */
void sy_admin_ep_plan_pause(admin_conn_t *c, const char *name, json_t *body)
{
    plan_pause(c, name, body, true);
}

void sy_admin_ep_plan_continue(admin_conn_t *c, const char *name, json_t *body)
{
    plan_pause(c, name, body, false);
}
