#include "routing/router.h"

#include "proxy/net.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void sy_route_flags_clear(sy_route_flags_t *f)
{
    free(f->salt);
    for (size_t i = 0; i < f->ntest_users; i++)
        free(f->test_users[i]);
    free(f->test_users);
    free(f->actor);
    free(f->reason);
    free(f->updated_at);
    memset(f, 0, sizeof(*f));
}

static int dup_opt(char **dst, const char *src)
{
    *dst = NULL;
    if (src == NULL)
        return 0;
    *dst = strdup(src);
    return *dst == NULL ? SY_ENOMEM : 0;
}

int sy_route_flags_copy(sy_route_flags_t *dst, const sy_route_flags_t *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->state = src->state;
    dst->percent_bp = src->percent_bp;
    dst->prev_percent_bp = src->prev_percent_bp;
    dst->version = src->version;
    dst->source = src->source;
    dst->test_users = calloc(src->ntest_users + 1, sizeof(char *));
    if (dst->test_users == NULL || dup_opt(&dst->salt, src->salt) != 0 || dup_opt(&dst->actor, src->actor) != 0 ||
        dup_opt(&dst->reason, src->reason) != 0 || dup_opt(&dst->updated_at, src->updated_at) != 0)
        goto fail;
    for (size_t i = 0; i < src->ntest_users; i++) {
        if ((dst->test_users[i] = strdup(src->test_users[i])) == NULL)
            goto fail;
        dst->ntest_users++;
    }
    return 0;
fail:
    sy_route_flags_clear(dst);
    return SY_ENOMEM;
}

void sy_pool_flags_clear(sy_pool_flags_t *f)
{
    free(f->actor);
    free(f->reason);
    free(f->updated_at);
    memset(f, 0, sizeof(*f));
}

int sy_pool_flags_copy(sy_pool_flags_t *dst, const sy_pool_flags_t *src)
{
    *dst = *src;
    dst->actor = dst->reason = dst->updated_at = NULL;
    if (dup_opt(&dst->actor, src->actor) != 0 || dup_opt(&dst->reason, src->reason) != 0 ||
        dup_opt(&dst->updated_at, src->updated_at) != 0) {
        sy_pool_flags_clear(dst);
        return SY_ENOMEM;
    }
    return 0;
}

void sy_routing_free(void *p)
{
    sy_routing_t *rt = p;
    if (rt == NULL)
        return;
    for (size_t i = 0; rt->flags && i < rt->routes->n; i++)
        sy_route_flags_clear(&rt->flags[i]);
    free(rt->flags);
    free(rt->pool_active);
    free(rt);
}

sy_routing_t *sy_routing_with_flags(const sy_config_t *cfg, const sy_route_flags_t *flags,
                                    const sy_pool_flags_t *pools)
{
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    if (rs == NULL)
        return NULL;
    sy_routing_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        return NULL;
    rt->routes = rs;
    rt->cfg = cfg;
    rt->flags = calloc(rs->n + 1, sizeof(*rt->flags));
    rt->pool_active = calloc(cfg->npools + 1, sizeof(int));
    if (rt->flags == NULL || rt->pool_active == NULL)
        goto fail;
    for (size_t i = 0; i < rs->n; i++)
        if (sy_route_flags_copy(&rt->flags[i], &flags[i]) != 0)
            goto fail;
    for (size_t i = 0; i < cfg->npools; i++)
        rt->pool_active[i] = pools ? pools[i].active : cfg->pools[i].active_default;
    return rt;
fail:
    sy_routing_free(rt);
    return NULL;
}

sy_routing_t *sy_routing_from_config(const sy_config_t *cfg)
{
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    if (rs == NULL)
        return NULL;
    sy_route_flags_t *defaults = calloc(rs->n + 1, sizeof(*defaults));
    if (defaults == NULL)
        return NULL;
    for (size_t i = 0; i < rs->n; i++) {
        const sy_route_t *r = &rs->routes[i];
        defaults[i].state = r->state;
        defaults[i].percent_bp = r->percent_bp;
        defaults[i].salt = r->salt;
        defaults[i].test_users = r->test_users;
        defaults[i].ntest_users = r->ntest_users;
        defaults[i].source = "config";
    }
    sy_routing_t *rt = sy_routing_with_flags(cfg, defaults, NULL); /* copies: nothing here is owned */
    free(defaults);
    return rt;
}

const sy_endpoint_t *sy_pool_pick(const sy_pool_t *p, const sy_epstate_t *eps, int active, uint32_t rr)
{
    if (p == NULL || p->nendpoints == 0)
        return NULL;
    size_t first = 0, n = p->nendpoints;
    if (p->colored) {
        first = p->color_first[active ? 1 : 0];
        n = p->color_count[active ? 1 : 0];
    }
    for (size_t i = 0; i < n; i++) {
        const sy_endpoint_t *e = &p->endpoints[first + (rr + i) % n];
        if (!sy_epstate_down(eps, e->index))
            return e;
    }
    return NULL;
}

static const sy_endpoint_t *pick(const sy_snapshot_t *snap, const sy_pool_t *p, uint32_t rr)
{
    const sy_routing_t *rt = snap->data;
    if (p == NULL)
        return NULL;
    size_t idx = (size_t)(p - rt->cfg->pools);
    return sy_pool_pick(p, snap->eps, idx < rt->cfg->npools ? rt->pool_active[idx] : 0, rr);
}

static int override_of(const sy_route_t *r, const sy_request_view_t *req)
{
    if (r->override_header == NULL || req->client == NULL)
        return -1;
    size_t nl = strlen(r->override_header);
    const sy_header_t *h = NULL;
    for (size_t i = 0; i < req->nheaders && h == NULL; i++)
        if (req->headers[i].name_len == nl && strncasecmp(req->headers[i].name, r->override_header, nl) == 0)
            h = &req->headers[i];
    if (h == NULL)
        return -1;
    bool trusted = false;
    for (size_t i = 0; i < r->ntrusted && !trusted; i++)
        trusted = sy_cidr_contains(&r->trusted[i], req->client);
    if (!trusted)
        return -1;
    if (h->value_len == 3 && strncasecmp(h->value, "new", 3) == 0)
        return SY_NEW;
    if (h->value_len == 6 && strncasecmp(h->value, "legacy", 6) == 0)
        return SY_LEGACY;
    return -1;
}

static int decide(void *ctx, const sy_snapshot_t *snap, const sy_request_view_t *req, uint32_t rr,
                  sy_decision_t *out)
{
    const sy_trip_marks_t *marks = ctx;
    const sy_routing_t *rt = snap->data;
    const sy_route_t *r = sy_route_match(rt->routes, req->host, req->host_len, req->path, req->path_len);
    out->route_index = -1;
    if (r == NULL) {
        out->status = 404;
        out->error = "no route matches this request";
        return 0;
    }
    size_t idx = (size_t)(r - rt->routes->routes);
    const sy_route_flags_t *f = &rt->flags[idx];
    out->route_index = (int)idx;
    out->route = r->name;
    out->expose_variant = r->expose_variant;
    out->strip_header = r->override_header;

    char key[SY_USER_KEY_MAX + 1];
    size_t klen = 0;
    if (sy_route_user_key(r, req, key, &klen) == SY_KEY_NEED_BODY) {
        /* The key may be in the body: the engine holds it and asks again. */
        out->want_body = (size_t)r->json_body_limit;
        return 0;
    }
    if (klen == 0 && r->anonymous == SY_ANON_HASH_CLIENT_IP && req->client != NULL) {
        char ip[64];
        sy_addr_format_ip(req->client, ip, sizeof(ip));
        klen = strlen(ip);
        memcpy(key, ip, klen + 1);
    }
    sy_route_state_t state = f->state;
    /* Tripped on a worker, the flags saying so not yet published: as tripped. */
    if ((state == SY_STATE_RAMPING || state == SY_STATE_PROMOTED) && marks != NULL &&
        marks->tripped(marks->ud, snap, (int)idx))
        state = SY_STATE_TRIPPED;
    sy_cohort_input_t in = {
        .state = state,
        .percent_bp = f->percent_bp,
        .has_new = r->new_pool != NULL,
        .keep_test_users_on_trip = r->keep_test_users_on_trip,
        .override = override_of(r, req),
        .test_user = klen > 0 && sy_route_is_test_user(f->test_users, f->ntest_users, key),
        .has_key = klen > 0,
        .bucket = klen > 0 ? sy_cohort_bucket(f->salt, strlen(f->salt), key, klen) : 0,
    };
    sy_reason_t reason;
    sy_variant_t v = sy_cohort_decide(&in, &reason);
    out->variant_index = (int)v;
    out->variant = sy_variant_name(v);
    out->reason = sy_reason_name(reason);
    if (klen > 0) {
        size_t n = klen < sizeof(out->user) - 1 ? klen : sizeof(out->user) - 1;
        memcpy(out->user, key, n);
        out->user[n] = '\0';
    }
    out->endpoint = pick(snap, v == SY_NEW ? r->new_pool : r->legacy, rr);
    if (out->endpoint == NULL && v == SY_NEW) {
        /* No healthy endpoint on new (the route is about to trip): serve the
         * user from legacy rather than fail the request. */
        out->endpoint = pick(snap, r->legacy, rr);
        out->variant_index = SY_LEGACY;
        out->variant = sy_variant_name(SY_LEGACY);
        out->reason = sy_reason_name(SY_REASON_DEFAULT);
    }
    if (out->endpoint == NULL) {
        out->status = 503;
        out->error = "no healthy endpoint in the chosen pool";
    }
    return 0;
}

/* Nothing was sent to new's endpoint: legacy serves the request. Not for a
 * request that asked for new by the override header: whoever tests new that
 * way is shown new's failure. */
static int fallback(void *ctx, const sy_snapshot_t *snap, const sy_decision_t *failed, const char *why, uint32_t rr,
                    sy_decision_t *out)
{
    (void)ctx;
    const sy_routing_t *rt = snap->data;
    if (failed->route_index < 0 || (size_t)failed->route_index >= rt->routes->n || failed->variant_index != SY_NEW ||
        (failed->reason != NULL && strcmp(failed->reason, sy_reason_name(SY_REASON_OVERRIDE)) == 0))
        return SY_EDECLINED;
    const sy_endpoint_t *e = pick(snap, rt->routes->routes[failed->route_index].legacy, rr);
    if (e == NULL)
        return SY_EDECLINED;
    *out = *failed;
    out->endpoint = e;
    out->variant_index = SY_LEGACY;
    out->variant = sy_variant_name(SY_LEGACY);
    out->reason = "fallback";
    out->fallback = why;
    return 0;
}

/* A shadow request's endpoint: the route's pool of that variant, healthy. */
static const sy_endpoint_t *pick_for_shadow(void *ctx, const sy_snapshot_t *snap, int route, int variant,
                                            uint32_t rr)
{
    (void)ctx;
    const sy_routing_t *rt = snap->data;
    if (route < 0 || (size_t)route >= rt->routes->n)
        return NULL;
    const sy_route_t *r = &rt->routes->routes[route];
    return pick(snap, variant == SY_NEW ? r->new_pool : r->legacy, rr);
}

const sy_router_t sy_router = {.decide = decide, .fallback = fallback, .pick = pick_for_shadow, .ctx = NULL};

sy_router_t sy_router_with_marks(sy_trip_marks_t *marks)
{
    return (sy_router_t){.decide = decide, .fallback = fallback, .pick = pick_for_shadow, .ctx = marks};
}

int sy_route_cohort(const sy_route_t *r, const sy_route_flags_t *f, const char *user, uint32_t *bucket,
                    sy_variant_t *variant, sy_reason_t *reason)
{
    size_t klen = strlen(user);
    sy_cohort_input_t in = {
        .state = f->state,
        .percent_bp = f->percent_bp,
        .has_new = r->new_pool != NULL,
        .keep_test_users_on_trip = r->keep_test_users_on_trip,
        .override = -1,
        .test_user = klen > 0 && sy_route_is_test_user(f->test_users, f->ntest_users, user),
        .has_key = klen > 0,
        .bucket = sy_cohort_bucket(f->salt, strlen(f->salt), user, klen),
    };
    *bucket = in.bucket;
    *variant = sy_cohort_decide(&in, reason);
    return 0;
}

int sy_routing_cohort(const sy_routing_t *rt, const char *route, const char *user, uint32_t *bucket,
                      sy_variant_t *variant, sy_reason_t *reason)
{
    const sy_route_t *r = sy_route_find(rt->routes, route);
    if (r == NULL)
        return -1;
    return sy_route_cohort(r, &rt->flags[r - rt->routes->routes], user, bucket, variant, reason);
}
