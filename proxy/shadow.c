/* Shadow traffic: the `shadow:` section of each route and the per-worker
 * engine that copies sampled requests to new (and legacy again) through the
 * HTTP/1 client. See shadow.h for the safety rules. */
#include "proxy/shadow.h"

#include "proxy/h1client.h"
#include "proxy/list.h"
#include "proxy/log.h"
#include "proxy/snapshot.h"
#include "proxy/upstream.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- the section ----------------------------------------------------------------- */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void conf_free(sy_shadow_conf_t *s)
{
    strv_free(s->methods, s->nmethods);
    strv_free(s->compare_headers, s->ncompare_headers);
    strv_free(s->ignore_json, s->nignore_json);
    strv_free(s->redact, s->nredact);
}

static void confs_destroy(void *data)
{
    sy_shadow_confs_t *t = data;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        conf_free(&t->routes[i]);
    free(t->routes);
    free(t);
}

/* A list of strings; case: 'u' upper, 'l' lower, 0 as written. */
static int parse_strings(sy_conf_t *c, yaml_node_t *v, int cs, char ***out, size_t *n)
{
    if (sy_conf_expect(c, v, YAML_SEQUENCE_NODE, "a list of strings") != 0)
        return SY_EINVAL;
    size_t cnt = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    char **arr = calloc(cnt + 1, sizeof(*arr));
    if (arr == NULL)
        return sy_conf_error(c, v, "out of memory");
    strv_free(*out, *n);
    *out = arr;
    *n = 0;
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *it = sy_conf_node(c, v->data.sequence.items.start[i]);
        const char *s = it ? sy_conf_scalar(it) : NULL;
        if (s == NULL || *s == '\0' || strlen(s) > 256)
            return sy_conf_error(c, it, "expected a string of 1..256 bytes");
        char *d = strdup(s);
        if (d == NULL)
            return sy_conf_error(c, it, "out of memory");
        for (char *p = d; *p && cs; p++)
            *p = (char)(cs == 'u' ? toupper((unsigned char)*p) : tolower((unsigned char)*p));
        arr[(*n)++] = d;
    }
    return 0;
}

static int parse_diff(sy_conf_t *c, yaml_node_t *v, sy_shadow_conf_t *s)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping (ignore_json: [...])") != 0)
        return SY_EINVAL;
    yaml_node_t *k, *x;
    int rc = 0;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        if (sy_conf_key_is(k, "ignore_json")) {
            if (parse_strings(c, x, 0, &s->ignore_json, &s->nignore_json) != 0)
                rc = SY_EINVAL;
            for (size_t i = 0; rc == 0 && i < s->nignore_json; i++)
                if (s->ignore_json[i][0] != '$')
                    rc = sy_conf_error(c, x, "ignore_json paths start with '$' ($.meta.time, $.items[*].id)");
        } else {
            rc = sy_conf_error(c, k, "unknown key '%s' in shadow.diff", sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
        }
    }
    return rc;
}

static int parse_shadow(sy_conf_t *c, yaml_node_t *v, sy_shadow_conf_t *s)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping (percent_bp, methods, max_body, ...)") != 0)
        return SY_EINVAL;
    s->enabled = true;
    s->percent_bp = 10000;
    s->max_body = 64 * 1024;
    s->max_inflight = 256;
    s->timeout_ms = 2000;
    int rc = 0;
    yaml_node_t *k, *x;
    bool have_methods = false;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        int r = 0;
        int64_t i64;
        if (sy_conf_key_repeated(c, v, k))
            r = sy_conf_error(c, k, "key '%s' is repeated in shadow", sy_conf_scalar(k));
        else if (sy_conf_key_is(k, "enabled"))
            r = sy_conf_bool(c, x, &s->enabled);
        else if (sy_conf_key_is(k, "percent_bp")) {
            r = sy_conf_int(c, x, 0, 10000, &i64);
            s->percent_bp = (int32_t)i64;
        } else if (sy_conf_key_is(k, "methods")) {
            r = parse_strings(c, x, 'u', &s->methods, &s->nmethods);
            have_methods = true;
        } else if (sy_conf_key_is(k, "max_body"))
            r = sy_conf_size(c, x, 0, 16 * 1024 * 1024, &s->max_body);
        else if (sy_conf_key_is(k, "max_inflight")) {
            r = sy_conf_int(c, x, 1, 1000000, &i64);
            s->max_inflight = (uint64_t)i64;
        } else if (sy_conf_key_is(k, "timeout"))
            r = sy_conf_duration_ms(c, x, 1, 600000, &s->timeout_ms);
        else if (sy_conf_key_is(k, "noise"))
            r = sy_conf_bool(c, x, &s->noise);
        else if (sy_conf_key_is(k, "compare_headers"))
            r = parse_strings(c, x, 'l', &s->compare_headers, &s->ncompare_headers);
        else if (sy_conf_key_is(k, "redact_headers"))
            r = parse_strings(c, x, 'l', &s->redact, &s->nredact);
        else if (sy_conf_key_is(k, "diff"))
            r = parse_diff(c, x, s);
        else
            r = sy_conf_error(c, k, "unknown key '%s' in shadow", sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
        if (r != 0)
            rc = SY_EINVAL;
    }
    if (!have_methods && rc == 0) {
        s->methods = calloc(3, sizeof(char *));
        if (s->methods == NULL || (s->methods[0] = strdup("GET")) == NULL || (s->methods[1] = strdup("HEAD")) == NULL)
            return sy_conf_error(c, v, "out of memory");
        s->nmethods = 2;
    }
    return rc;
}

/* One route's `shadow` into its slot; a route without one keeps an empty slot. */
static int shadow_of_route(sy_conf_t *c, yaml_node_t *route, const char *name, yaml_node_t *v, void *slot)
{
    (void)name;
    sy_shadow_conf_t *s = slot;
    if (v == NULL)
        return 0;
    if (parse_shadow(c, v, s) != 0)
        return SY_EINVAL;
    if (s->enabled && sy_conf_map_get(c, route, "new") == NULL)
        return sy_conf_error(c, v, "a route with shadow needs a 'new' pool");
    return 0;
}

static int confs_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_shadow_confs_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = t;
    void *routes = NULL;
    int rc = sy_conf_route_subsections(c, node, "shadow", sizeof(*t->routes), &routes, &t->n, shadow_of_route);
    t->routes = routes;
    return rc;
}

const sy_conf_section_t sy_shadow_section = {
    .key = "routes",
    .required = false,
    .parse = confs_parse,
    .destroy = confs_destroy,
};

const sy_shadow_conf_t *sy_shadow_conf_of(const sy_config_t *cfg, int route)
{
    for (size_t i = 0; cfg != NULL && i < cfg->next; i++)
        if (cfg->ext_sections[i] == &sy_shadow_section) {
            const sy_shadow_confs_t *t = cfg->ext[i];
            if (t == NULL || route < 0 || (size_t)route >= t->n || !t->routes[route].enabled)
                return NULL;
            return &t->routes[route];
        }
    return NULL;
}

/* --- the engine ------------------------------------------------------------------ */

struct sy_shadow_engine {
    struct ev_loop *loop;
    int worker;
    const sy_router_t *router;
    const sy_observer_t *obs;
    sy_upstreams_t *ups; /* the worker's pools: shadow requests ride pooled connections */
    sy_list_t live;      /* sy_shadow_t.node */
    size_t nlive;
    uint64_t rng;        /* sampling: xorshift64* per worker */
    uint32_t rr;
};

/* One request sent on the side (to new, or to legacy again). */
typedef struct call {
    sy_h1client_t *client;
    sy_upconn_t *uc;     /* the pooled connection it holds until it ends */
    ev_tstamp t0;
    uint64_t us;
    const char *err;     /* static: NULL when the response was read whole */
    bool started, done;
} call_t;

struct sy_shadow {
    sy_list_t node;
    sy_shadow_engine_t *e;
    sy_snapshot_t *snap;          /* held: conf, route name and endpoints live in it */
    const sy_shadow_conf_t *conf;
    int route_index;
    const char *route;
    const sy_endpoint_t *ep_new, *ep_noise;
    char method[16];
    char *target, *host, *headers; /* the request to send again */
    char *req_body;
    size_t req_len, req_cap;
    /* legacy's answer to the user, a bounded copy */
    int l_status;
    sy_header_t *l_headers;
    size_t l_nheaders;
    char *l_head;                 /* the names and values l_headers point into */
    char *l_body;
    size_t l_len, l_cap;
    bool l_overflow, l_done, owned; /* owned: the exchange still holds s */
    ev_tstamp l_t0;
    uint64_t l_us;
    call_t shadow, noise;
};

sy_shadow_engine_t *sy_shadow_engine_create(struct ev_loop *loop, int worker, struct sy_upstreams *ups,
                                            const sy_router_t *router, const sy_observer_t *observer)
{
    sy_shadow_engine_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->loop = loop;
    e->worker = worker;
    e->ups = ups;
    e->router = router;
    e->obs = observer;
    sy_list_init(&e->live);
    e->rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(uintptr_t)e) ^ ((uint64_t)worker << 32) ^
             (uint64_t)(ev_time() * 1e6);
    return e;
}

/* The call's client stops (if it runs) and its connection goes back to the
 * pool: kept only after a whole keep-alive answer. */
static void call_end(sy_shadow_engine_t *e, call_t *call, bool reusable)
{
    sy_h1client_cancel(call->client);
    if (call->uc != NULL) {
        if (reusable)
            call->uc->connected = true;
        sy_upstream_release(e->ups, call->uc, reusable);
        call->uc = NULL;
    }
}

static void shadow_free(sy_shadow_t *s)
{
    call_end(s->e, &s->shadow, false);
    call_end(s->e, &s->noise, false);
    sy_h1client_destroy(s->shadow.client);
    sy_h1client_destroy(s->noise.client);
    sy_list_remove(&s->node);
    s->e->nlive--;
    sy_snapshot_release(s->snap);
    free(s->target);
    free(s->host);
    free(s->headers);
    free(s->req_body);
    free(s->l_headers);
    free(s->l_head);
    free(s->l_body);
    free(s);
}

void sy_shadow_engine_destroy(sy_shadow_engine_t *e)
{
    if (e == NULL)
        return;
    while (!sy_list_empty(&e->live)) {
        sy_shadow_t *s = sy_container_of(e->live.next, sy_shadow_t, node);
        shadow_free(s);
    }
    free(e);
}

size_t sy_shadow_engine_inflight(const sy_shadow_engine_t *e)
{
    return e ? e->nlive : 0;
}

static void report(sy_shadow_engine_t *e, const sy_snapshot_t *snap, const sy_shadow_conf_t *conf, int route_index,
                   const char *route, sy_shadow_outcome_t outcome, const char *method, const char *target)
{
    if (e->obs == NULL || e->obs->shadow == NULL)
        return;
    sy_shadow_result_t r = {.route_index = route_index, .route = route, .outcome = outcome, .conf = conf,
                            .method = method, .target = target};
    e->obs->shadow(e->obs->shadow_ctx, e->worker, snap, &r);
}

static bool method_listed(const sy_shadow_conf_t *conf, const char *m)
{
    for (size_t i = 0; i < conf->nmethods; i++)
        if (strcmp(conf->methods[i], m) == 0)
            return true;
    return false;
}

/* Hop-by-hop headers and those the client sets itself are not copied. */
static bool copied_header(const sy_header_t *h)
{
    static const char *const skip[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                       "content-length", "host", "te", "trailer", "upgrade", "expect",
                                       "x-switchyard-shadow"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (h->name_len == strlen(skip[i]) && strncasecmp(h->name, skip[i], h->name_len) == 0)
            return false;
    return true;
}

static char *build_headers(const sy_h1_msg_t *m)
{
    static const char mark[] = "X-Switchyard-Shadow: 1\r\n";
    size_t n = sizeof(mark);
    for (size_t i = 0; i < m->nheaders; i++)
        if (copied_header(&m->headers[i]))
            n += m->headers[i].name_len + m->headers[i].value_len + 4;
    char *out = malloc(n);
    if (out == NULL)
        return NULL;
    size_t off = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (!copied_header(h))
            continue;
        memcpy(out + off, h->name, h->name_len);
        off += h->name_len;
        memcpy(out + off, ": ", 2);
        off += 2;
        memcpy(out + off, h->value, h->value_len);
        off += h->value_len;
        memcpy(out + off, "\r\n", 2);
        off += 2;
    }
    memcpy(out + off, mark, sizeof(mark));
    return out;
}

/* Room for len more bytes (and a NUL) in *buf, growing by doubling; the
 * caller checked that *used + len stays within max_body. */
static bool grow(char **buf, size_t *cap, size_t used, size_t len)
{
    if (used + len + 1 <= *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 4096;
    if (ncap < used + len + 1)
        ncap = used + len + 1;
    char *nb = realloc(*buf, ncap);
    if (nb == NULL)
        return false;
    *buf = nb;
    *cap = ncap;
    return true;
}

static char *dup_n(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* Drops s before any result: counted as `outcome`. */
static void give_up(sy_shadow_t *s, sy_shadow_outcome_t outcome)
{
    report(s->e, s->snap, s->conf, s->route_index, s->route, outcome, s->method, s->target);
    shadow_free(s);
}

sy_shadow_t *sy_shadow_begin(sy_shadow_engine_t *e, sy_snapshot_t *snap, const sy_decision_t *dec,
                             const sy_h1_msg_t *req, const char *body, size_t body_len)
{
    if (e == NULL || dec->route_index < 0 || dec->variant_index != 0 || e->router->pick == NULL)
        return NULL;
    const sy_shadow_conf_t *conf = sy_shadow_conf_of(snap->config, dec->route_index);
    if (conf == NULL || conf->percent_bp <= 0)
        return NULL;
    /* Sampled at random (not by user): every user's requests have the same
     * chance, and the mismatch rate estimates the share of requests. */
    e->rng ^= e->rng >> 12;
    e->rng ^= e->rng << 25;
    e->rng ^= e->rng >> 27;
    if ((uint32_t)((e->rng * 0x2545F4914F6CDD1DULL) >> 32) % 10000 >= (uint32_t)conf->percent_bp)
        return NULL;
    const char *target = req->origin;
    if (!method_listed(conf, req->method)) {
        report(e, snap, conf, dec->route_index, dec->route, SY_SHADOW_SKIP_METHOD, req->method, NULL);
        return NULL;
    }
    if ((req->has_length && req->content_length > conf->max_body) || body_len > conf->max_body) {
        report(e, snap, conf, dec->route_index, dec->route, SY_SHADOW_SKIP_REQ_TOO_LARGE, req->method, NULL);
        return NULL;
    }
    if (e->nlive >= conf->max_inflight) {
        report(e, snap, conf, dec->route_index, dec->route, SY_SHADOW_SKIP_INFLIGHT, req->method, NULL);
        return NULL;
    }
    const sy_endpoint_t *ep_new = e->router->pick(e->router->ctx, snap, dec->route_index, 1, e->rr++);
    const sy_endpoint_t *ep_noise =
        conf->noise ? e->router->pick(e->router->ctx, snap, dec->route_index, 0, e->rr++) : NULL;
    if (ep_new == NULL) {
        report(e, snap, conf, dec->route_index, dec->route, SY_SHADOW_SKIP_NO_ENDPOINT, req->method, NULL);
        return NULL;
    }
    sy_shadow_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->e = e;
    sy_list_init(&s->node);
    sy_list_push_back(&e->live, &s->node);
    e->nlive++;
    s->snap = sy_snapshot_ref(snap);
    s->conf = conf;
    s->route_index = dec->route_index;
    s->route = dec->route;
    s->ep_new = ep_new;
    s->ep_noise = ep_noise;
    s->owned = true;
    snprintf(s->method, sizeof(s->method), "%s", req->method);
    /* Origin-form: an absolute-form target's path may be empty or start with '?'. */
    size_t tl = req->origin_len;
    bool slash = tl == 0 || target[0] != '/';
    s->target = malloc(tl + 2);
    if (s->target != NULL) {
        snprintf(s->target, tl + 2, "%s%.*s", slash ? "/" : "", (int)tl, target);
        for (char *p = s->target; *p; p++)
            if (*p == ' ')
                *p = '+'; /* cannot happen after the parser; never send a broken line */
    }
    s->host = req->host ? dup_n(req->host, req->host_len) : dup_n(ep_new->name, strlen(ep_new->name));
    s->headers = build_headers(req);
    if (s->target == NULL || s->host == NULL || s->headers == NULL ||
        (body_len > 0 && !grow(&s->req_body, &s->req_cap, 0, body_len))) {
        give_up(s, SY_SHADOW_SKIP_NOMEM);
        return NULL;
    }
    if (body_len > 0) {
        memcpy(s->req_body, body, body_len);
        s->req_len = body_len;
    }
    return s;
}

bool sy_shadow_req_body(sy_shadow_t *s, const char *data, size_t len)
{
    if (len > s->conf->max_body - s->req_len) {
        give_up(s, SY_SHADOW_SKIP_REQ_TOO_LARGE);
        return false;
    }
    if (!grow(&s->req_body, &s->req_cap, s->req_len, len)) {
        give_up(s, SY_SHADOW_SKIP_NOMEM);
        return false;
    }
    memcpy(s->req_body + s->req_len, data, len);
    s->req_len += len;
    return true;
}

/* Legacy's answer, the shadow's and the noise's are all in: compare (through
 * the observer) and free. */
static void maybe_finish(sy_shadow_t *s)
{
    if (s->owned || (s->shadow.started && !s->shadow.done) || (s->noise.started && !s->noise.done))
        return;
    sy_shadow_outcome_t outcome = SY_SHADOW_COMPARED;
    if (!s->l_done || !s->shadow.started) /* legacy answered before the request was read whole */
        outcome = SY_SHADOW_SKIP_LEGACY_FAILED;
    else if (s->l_overflow)
        outcome = SY_SHADOW_SKIP_LEGACY_TOO_LARGE;
    else if (s->shadow.err == sy_h1client_err_timeout)
        outcome = SY_SHADOW_NEW_TIMEOUT;
    else if (s->shadow.err == sy_h1client_err_body_too_large)
        outcome = SY_SHADOW_NEW_TOO_LARGE;
    else if (s->shadow.err != NULL)
        outcome = SY_SHADOW_NEW_ERROR;
    if (outcome != SY_SHADOW_COMPARED || s->e->obs == NULL || s->e->obs->shadow == NULL) {
        give_up(s, outcome);
        return;
    }
    const sy_h1client_resp_t *nr = sy_h1client_response(s->shadow.client);
    sy_shadow_side_t legacy = {.status = s->l_status, .headers = s->l_headers, .nheaders = s->l_nheaders,
                               .body = s->l_body, .body_len = s->l_len, .latency_us = s->l_us};
    sy_shadow_side_t shadow = {.status = nr->status, .headers = nr->msg ? nr->msg->headers : NULL,
                               .nheaders = nr->msg ? nr->msg->nheaders : 0, .body = nr->body,
                               .body_len = nr->body_len, .latency_us = s->shadow.us};
    sy_shadow_side_t noise = {0};
    bool have_noise = false, noise_failed = false;
    if (s->noise.started) {
        const sy_h1client_resp_t *lr = sy_h1client_response(s->noise.client);
        have_noise = s->noise.err == NULL && lr->msg != NULL;
        noise_failed = !have_noise;
        if (have_noise)
            noise = (sy_shadow_side_t){.status = lr->status, .headers = lr->msg->headers,
                                       .nheaders = lr->msg->nheaders, .body = lr->body, .body_len = lr->body_len,
                                       .latency_us = s->noise.us};
    } else if (s->conf->noise) {
        noise_failed = true;
    }
    sy_shadow_result_t r = {
        .route_index = s->route_index,
        .route = s->route,
        .outcome = SY_SHADOW_COMPARED,
        .conf = s->conf,
        .method = s->method,
        .target = s->target,
        .legacy = &legacy,
        .shadow = &shadow,
        .noise = have_noise ? &noise : NULL,
        .noise_failed = noise_failed,
    };
    s->e->obs->shadow(s->e->obs->shadow_ctx, s->e->worker, s->snap, &r);
    shadow_free(s);
}

static void shadow_cb(sy_h1client_t *c, void *ud, const char *err)
{
    sy_shadow_t *s = ud;
    call_end(s->e, &s->shadow, err == NULL && sy_h1client_reusable(c));
    s->shadow.done = true;
    s->shadow.err = err;
    s->shadow.us = (uint64_t)((ev_now(s->e->loop) - s->shadow.t0) * 1e6);
    maybe_finish(s);
}

static void noise_cb(sy_h1client_t *c, void *ud, const char *err)
{
    sy_shadow_t *s = ud;
    call_end(s->e, &s->noise, err == NULL && sy_h1client_reusable(c));
    s->noise.done = true;
    s->noise.err = err;
    s->noise.us = (uint64_t)((ev_now(s->e->loop) - s->noise.t0) * 1e6);
    maybe_finish(s);
}

static bool start_call(sy_shadow_t *s, call_t *call, const sy_endpoint_t *ep, sy_h1client_cb cb)
{
    const sy_limits_t *l = &s->snap->config->limits;
    sy_h1client_limits_t lim = {.max_head = l->header_bytes,
                                .max_headers = l->headers,
                                .max_body = s->conf->max_body,
                                .keep_body = true,
                                .head_request = strcmp(s->method, "HEAD") == 0};
    call->client = sy_h1client_create(s->e->loop, &lim);
    if (call->client == NULL)
        return false;
    sy_h1client_request_t rq = {.method = s->method, .target = s->target, .host = s->host, .headers = s->headers,
                                .body = s->req_len > 0 || s->method[0] == 'P' ? (s->req_body ? s->req_body : "") : NULL,
                                .body_len = s->req_len};
    call->t0 = ev_now(s->e->loop);
    if (ep->tls != NULL) {
        /* A TLS endpoint: the client's own connection with its own handshake (a
         * pooled connection's TLS state belongs to the pool's exchanges). */
        sy_h1client_set_tls(call->client, ep->tls, ep->tls_sni, ep->tls_host);
        if (sy_h1client_start(call->client, &ep->addr, &rq, s->conf->timeout_ms / 1e3, cb, s) != 0)
            return false;
        call->started = true;
        return true;
    }
    if (sy_upstream_acquire(s->e->ups, ep, &call->uc) != 0) {
        call->uc = NULL;
        return false;
    }
    /* The client watches the socket until the answer ends; the pool's own
     * watcher rests meanwhile (sy_upstream_release re-arms it). */
    ev_io_stop(s->e->loop, &call->uc->io);
    if (sy_h1client_start_on(call->client, call->uc->fd, !call->uc->connected, &rq, s->conf->timeout_ms / 1e3, cb,
                             s) != 0) {
        call_end(s->e, call, false);
        return false;
    }
    call->started = true;
    return true;
}

bool sy_shadow_req_done(sy_shadow_t *s)
{
    s->l_t0 = ev_now(s->e->loop);
    if (!start_call(s, &s->shadow, s->ep_new, shadow_cb)) {
        give_up(s, SY_SHADOW_NEW_ERROR);
        return false;
    }
    if (s->ep_noise != NULL)
        (void)start_call(s, &s->noise, s->ep_noise, noise_cb); /* without it: compared without subtraction */
    /* The request body is no longer needed: give its memory back early. */
    free(s->req_body);
    s->req_body = NULL;
    s->req_len = s->req_cap = 0;
    return true;
}

void sy_shadow_resp_head(sy_shadow_t *s, const sy_h1_msg_t *m)
{
    free(s->l_headers);
    free(s->l_head);
    s->l_headers = NULL;
    s->l_head = NULL;
    s->l_nheaders = 0;
    s->l_len = 0;
    s->l_overflow = false;
    s->l_status = m->status;
    size_t n = 0;
    for (size_t i = 0; i < m->nheaders; i++)
        n += m->headers[i].name_len + m->headers[i].value_len + 2;
    s->l_headers = calloc(m->nheaders + 1, sizeof(sy_header_t));
    s->l_head = malloc(n + 1);
    if (s->l_headers == NULL || s->l_head == NULL) {
        s->l_overflow = true; /* not comparable */
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        sy_header_t *d = &s->l_headers[i];
        memcpy(s->l_head + off, h->name, h->name_len);
        s->l_head[off + h->name_len] = '\0';
        d->name = s->l_head + off;
        d->name_len = h->name_len;
        off += h->name_len + 1;
        memcpy(s->l_head + off, h->value, h->value_len);
        s->l_head[off + h->value_len] = '\0';
        d->value = s->l_head + off;
        d->value_len = h->value_len;
        off += h->value_len + 1;
    }
    s->l_nheaders = m->nheaders;
}

void sy_shadow_resp_body(sy_shadow_t *s, const char *data, size_t len)
{
    if (s->l_overflow)
        return;
    if (len > s->conf->max_body - s->l_len) {
        /* Past max_body the copy stops and the pair is not comparable: new's
         * side is read up to max_body too, so no hash of the rest could be
         * matched against it. */
        s->l_overflow = true;
        free(s->l_body);
        s->l_body = NULL;
        s->l_len = s->l_cap = 0;
        return;
    }
    if (!grow(&s->l_body, &s->l_cap, s->l_len, len)) {
        s->l_overflow = true; /* out of memory: not comparable */
        return;
    }
    memcpy(s->l_body + s->l_len, data, len);
    s->l_len += len;
    s->l_body[s->l_len] = '\0';
}

void sy_shadow_legacy_done(sy_shadow_t *s)
{
    s->l_done = true;
    s->l_us = (uint64_t)((ev_now(s->e->loop) - s->l_t0) * 1e6);
    s->owned = false;
    maybe_finish(s);
}

void sy_shadow_drop(sy_shadow_t *s)
{
    /* Nothing will be compared: the side requests end now, not at their timeout. */
    call_end(s->e, &s->shadow, false);
    call_end(s->e, &s->noise, false);
    s->shadow.done = s->noise.done = true;
    s->owned = false;
    maybe_finish(s);
}
