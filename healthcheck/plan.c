#include "healthcheck/plan.h"

#include "flags/flags.h"
#include "flags/lease.h"
#include "flags/redis.h"
#include "flags/redis_conf.h"
#include "healthcheck/rules.h"
#include "healthcheck/seq.h"
#include "proxy/log.h"
#include "routing/route.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- the plan section (under each route) ---------------------------------- */

static void confs_destroy(void *v)
{
    sy_plan_confs_t *t = v;
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->routes[i].route);
    free(t->routes);
    free(t);
}

static int fraction(sy_conf_t *c, yaml_node_t *v, double min, double max, double *out)
{
    const char *s = sy_conf_scalar(v);
    char *end = NULL;
    double d = s ? strtod(s, &end) : 0;
    if (s == NULL || end == s || *end != '\0' || d < min || d > max)
        return sy_conf_error(c, v, "expected a number %g..%g", min, max);
    *out = d;
    return 0;
}

static int parse_step(sy_conf_t *c, yaml_node_t *v, sy_plan_step_t *st)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a step like {percent: 5, hold: 48h}") != 0)
        return SY_EINVAL;
    bool has_percent = false;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        double pct = 0;
        if (sy_conf_key_is(k, "percent")) {
            if (fraction(c, x, 0, 100, &pct) != 0)
                rc = SY_EINVAL;
            st->percent_bp = (int32_t)lround(pct * 100);
            has_percent = true;
        } else if (sy_conf_key_is(k, "test_users_only")) {
            rc |= sy_conf_bool(c, x, &st->test_users_only) != 0 ? SY_EINVAL : 0;
        } else if (sy_conf_key_is(k, "hold")) {
            rc |= sy_conf_duration_ms(c, x, 0, 365ULL * 86400000, &st->hold_ms) != 0 ? SY_EINVAL : 0;
        } else {
            rc = sy_conf_error(c, k, "unknown step key (percent, test_users_only, hold)");
        }
    }
    if (rc == 0 && has_percent == st->test_users_only)
        return sy_conf_error(c, v, "a step has either percent or test_users_only: true");
    if (st->test_users_only)
        st->percent_bp = 0;
    return rc != 0 ? SY_EINVAL : 0;
}

static int parse_gate(sy_conf_t *c, yaml_node_t *v, sy_plan_conf_t *p)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping (max_error_rate, latency_not_worse, ...)") != 0)
        return SY_EINVAL;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        int r;
        if (sy_conf_key_is(k, "max_error_rate"))
            r = fraction(c, x, 0.000001, 1, &p->max_error_rate);
        else if (sy_conf_key_is(k, "latency_not_worse"))
            r = sy_conf_bool(c, x, &p->latency_not_worse);
        else if (sy_conf_key_is(k, "latency_tolerance"))
            r = fraction(c, x, 0, 10, &p->latency_tolerance);
        else if (sy_conf_key_is(k, "confidence"))
            r = fraction(c, x, 0.5, 0.999999, &p->confidence);
        else if (sy_conf_key_is(k, "min_requests"))
            r = sy_conf_int(c, x, 1, 100000000, &p->min_requests);
        else
            r = sy_conf_error(c, k, "unknown gate key");
        if (r != 0)
            rc = SY_EINVAL;
    }
    return rc;
}

static int parse_plan(sy_conf_t *c, yaml_node_t *v, sy_plan_conf_t *p)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping with steps and gate") != 0)
        return SY_EINVAL;
    p->max_error_rate = 0.005;
    p->latency_not_worse = true;
    p->latency_tolerance = 0.10;
    p->confidence = 0.95;
    p->min_requests = 200;
    p->lease_ms = 10000;
    p->tick_ms = 1000;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        int r = 0;
        if (sy_conf_key_is(k, "steps")) {
            if (sy_conf_expect(c, x, YAML_SEQUENCE_NODE, "a list of steps") != 0)
                r = SY_EINVAL;
            for (yaml_node_item_t *i = x->data.sequence.items.start; r == 0 && i < x->data.sequence.items.top; i++) {
                if (p->nsteps >= SY_PLAN_MAX_STEPS)
                    r = sy_conf_error(c, x, "at most %d steps", SY_PLAN_MAX_STEPS);
                else
                    r = parse_step(c, sy_conf_node(c, *i), &p->steps[p->nsteps++]);
            }
        } else if (sy_conf_key_is(k, "gate")) {
            r = parse_gate(c, x, p);
        } else if (sy_conf_key_is(k, "lease")) {
            r = sy_conf_duration_ms(c, x, 500, 600000, &p->lease_ms);
        } else if (sy_conf_key_is(k, "tick")) {
            r = sy_conf_duration_ms(c, x, 100, 60000, &p->tick_ms);
        } else {
            r = sy_conf_error(c, k, "unknown plan key (steps, gate, lease, tick)");
        }
        if (r != 0)
            rc = SY_EINVAL;
    }
    if (rc == 0 && p->nsteps == 0)
        return sy_conf_error(c, v, "a plan needs steps");
    for (size_t i = 1; rc == 0 && i < p->nsteps; i++)
        if (p->steps[i].percent_bp < p->steps[i - 1].percent_bp)
            return sy_conf_error(c, v, "a plan's steps never go down (step %zu)", i);
    return rc;
}

/* One route's `plan` into its slot; a route without one keeps an empty slot. */
static int plan_of_route(sy_conf_t *c, yaml_node_t *route, const char *name, yaml_node_t *plan, void *slot)
{
    (void)route;
    sy_plan_conf_t *pc = slot;
    if (plan == NULL)
        return 0;
    if (parse_plan(c, plan, pc) != 0)
        return SY_EINVAL;
    if ((pc->route = strdup(name ? name : "")) == NULL)
        return sy_conf_error(c, plan, "out of memory");
    return 0;
}

static int confs_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_plan_confs_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = t;
    void *routes = NULL;
    int rc = sy_conf_route_subsections(c, node, "plan", sizeof(*t->routes), &routes, &t->n, plan_of_route);
    t->routes = routes;
    return rc;
}

const sy_conf_section_t sy_plan_section = {
    .key = "routes",
    .required = false,
    .parse = confs_parse,
    .destroy = confs_destroy,
};

/* --- the owner --------------------------------------------------------------- */

enum { WAIT_NONE = 0, WAIT_APPLY, WAIT_HOLD, WAIT_SAMPLE, WAIT_ERRORS, WAIT_LATENCY, WAIT_ROUTE };

typedef struct plan_route {
    struct sy_plan *p;
    const sy_plan_conf_t *conf;
    sy_lease_t lease;
    char key[200];
    /* as last read from Redis */
    bool have;
    char state[16];
    int step;
    int64_t step_started_ms;
    char waiting[256];
    int64_t needed;
    bool reading, writing, applying;
    int wait_kind; /* the holder's last wait reason, for plan_wait events */
} plan_route_t;

struct sy_plan {
    struct ev_loop *loop;
    sy_config_t *cfg;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
    sy_sink_t sink;
    bool active;       /* plans to own and a redis section: the store's client carries them */
    char prefix[64];
    char owner[96];
    plan_route_t *routes;
    size_t n;
    ev_timer tick;
    sy_plan_evidence_fn evidence; /* NULL: the monitor's only */
    void *evidence_ud;
};

/* The flag store's Redis client, whatever it follows (a fixed address, or the
 * master the sentinels name): a plan's position and lease live where the flags
 * do. NULL without Redis. */
static sy_redis_t *redis_of(const sy_plan_t *p)
{
    return p->active ? sy_flagstore_redis(p->store) : NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void event(plan_route_t *pr, const char *kind, const char *actor, const char *reason)
{
    json_t *st = sy_plan_json(pr->p, pr->conf->route);
    sy_event_t ev = {.kind = kind, .route = pr->conf->route, .actor = actor, .reason = reason, .after = st};
    sy_sink_event(&pr->p->sink, &ev);
    json_decref(st);
    sy_info("plan %s: %s: %s", pr->conf->route, kind, reason);
}

static const sy_route_flags_t *flags_of(const sy_plan_t *p, const char *route)
{
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(p->store), "routes");
    const sy_route_t *r = rs != NULL ? sy_route_find(rs, route) : NULL;
    return r != NULL ? &sy_flagstore_flags(p->store)[r - rs->routes] : NULL;
}

static const sy_evidence_t *evidence_of(const sy_plan_t *p, const char *route)
{
    const sy_evidence_t *e = p->evidence != NULL ? p->evidence(p->evidence_ud, route) : NULL;
    if (e != NULL)
        return e;
    for (size_t i = 0; p->monitor != NULL && i < sy_monitor_nroutes(p->monitor); i++) {
        const sy_route_view_t *v = sy_monitor_route(p->monitor, i);
        if (strcmp(v->route, route) == 0)
            return v->evidence;
    }
    return NULL;
}

/* A fenced write of the position: only the lease holder, and only from the
 * step it read. ARGV: owner, expected step ("" none), then field/value pairs. */
static const char fenced_hset[] =
    SY_LEASE_CHECK
    "local cur = redis.call('HGET', KEYS[2], 'step') "
    "if ARGV[2] ~= '*' and (cur or '') ~= ARGV[2] then return -1 end "
    "for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end "
    "return 1";

typedef struct write_ctx {
    plan_route_t *pr;
    char kind[24];
    char reason[256];
} write_ctx_t;

static void written(void *ud, redisReply *reply, const char *err)
{
    write_ctx_t *w = ud;
    plan_route_t *pr = w->pr;
    pr->writing = false;
    if (err == NULL && reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1 && w->kind[0])
        event(pr, w->kind, "plan", w->reason); /* read back at the next tick; the event has what we wrote */
    free(w);
}

/* step_expected < 0: any. Pairs: NULL-terminated field, value list. */
static void write_fenced(plan_route_t *pr, int step_expected, const char *kind, const char *reason,
                         const char *const *pairs)
{
    if (pr->writing)
        return;
    const char *argv[24];
    char exp_s[16];
    snprintf(exp_s, sizeof(exp_s), "%d", step_expected);
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = fenced_hset;
    argv[argc++] = "2";
    argv[argc++] = pr->lease.key;
    argv[argc++] = pr->key;
    argv[argc++] = pr->p->owner;
    argv[argc++] = step_expected < 0 ? "*" : exp_s;
    for (int i = 0; pairs[i] != NULL && argc < 22; i++)
        argv[argc++] = pairs[i];
    write_ctx_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    w->pr = pr;
    snprintf(w->kind, sizeof(w->kind), "%s", kind ? kind : "");
    snprintf(w->reason, sizeof(w->reason), "%s", reason ? reason : "");
    pr->writing = true;
    if (sy_redis_command(redis_of(pr->p), written, w, argc, argv, NULL) != 0) {
        pr->writing = false;
        free(w);
    }
}

static void set_state(plan_route_t *pr, const char *state, const char *kind, const char *reason)
{
    const char *pairs[] = {"state", state, "waiting_for", reason, NULL};
    write_fenced(pr, -1, kind, reason, pairs);
}

static void applied(void *ud, sy_err_t err, const char *reason, const sy_route_flags_t *result)
{
    plan_route_t *pr = ud;
    (void)result;
    pr->applying = false;
    if (err != SY_OK)
        sy_warn("plan %s: setting the step's percentage failed: %s", pr->conf->route, reason ? reason : "?");
}

/* The wait reason changed (its kind, not its numbers): one plan_wait event,
 * and the text and count go to Redis for every instance's JSON. */
static void waiting(plan_route_t *pr, int kind, const char *text, int64_t needed)
{
    char nbuf[24];
    snprintf(nbuf, sizeof(nbuf), "%lld", (long long)needed);
    if (strcmp(text, pr->waiting) != 0 || needed != pr->needed) {
        const char *pairs[] = {"waiting_for", text, "needed_requests", nbuf, NULL};
        write_fenced(pr, -1, kind != pr->wait_kind ? "plan_wait" : NULL, text, pairs);
        if (!pr->writing)
            return; /* try again next tick */
    }
    pr->wait_kind = kind;
}

/* The gate on the evidence since the step's change. Returns true when met;
 * else fills the reason and how many more requests of new it needs. */
static bool gate(const plan_route_t *pr, const sy_evidence_t *e, int *kind, char *why, size_t cap, int64_t *needed)
{
    const sy_plan_conf_t *c = pr->conf;
    *needed = 0;
    if (e == NULL) {
        *kind = WAIT_SAMPLE;
        snprintf(why, cap, "no evidence yet");
        *needed = c->min_requests;
        return false;
    }
    uint64_t n = e->side[1].requests, x = e->side[1].errors;
    double alpha = 1 - c->confidence;
    bool errors_ok = sy_seq_rejects_below(x, n, c->max_error_rate, alpha);
    if (n < (uint64_t)c->min_requests || !errors_ok) {
        uint64_t more = sy_seq_needed_below(x, n, c->max_error_rate, alpha, c->max_error_rate / 10);
        if (more == UINT64_MAX) {
            *kind = WAIT_ERRORS;
            *needed = -1;
            snprintf(why, cap, "error rate on new %.2f%% (%llu/%llu) is not under %.2f%%",
                     n ? 100.0 * (double)x / (double)n : 0.0, (unsigned long long)x, (unsigned long long)n,
                     c->max_error_rate * 100);
            return false;
        }
        uint64_t min_more = n < (uint64_t)c->min_requests ? (uint64_t)c->min_requests - n : 0;
        *needed = (int64_t)(more > min_more ? more : min_more);
        *kind = WAIT_SAMPLE;
        snprintf(why, cap, "evidence: %lld more requests on new (%llu so far, %llu errors; gate: under %.2f%% at "
                 "%.0f%%, at least %lld)", (long long)*needed, (unsigned long long)n, (unsigned long long)x,
                 c->max_error_rate * 100, c->confidence * 100, (long long)c->min_requests);
        return false;
    }
    if (c->latency_not_worse) {
        const sy_hist_t *hn = &e->side[1].total, *ho = &e->side[0].total;
        if (ho->total < 20) {
            *kind = WAIT_LATENCY;
            snprintf(why, cap, "latency: legacy has %llu requests since the change, 20 needed to compare",
                     (unsigned long long)ho->total);
            *needed = 0;
            return false;
        }
        const double qs[2] = {0.50, 0.95};
        for (int i = 0; i < 2; i++) {
            double vn = sy_hist_quantile_us(hn, qs[i]), vo = sy_hist_quantile_us(ho, qs[i]);
            if (vn > vo * (1 + c->latency_tolerance) + 1000) { /* 1 ms of slack for very fast sides */
                *kind = WAIT_LATENCY;
                snprintf(why, cap, "latency: new p%.0f %.1f ms is worse than legacy's %.1f ms (+%.0f%% allowed)",
                         qs[i] * 100, vn / 1000, vo / 1000, c->latency_tolerance * 100);
                return false;
            }
        }
    }
    return true;
}

/* The holder's decision for one route, on what it just read. */
static void decide(plan_route_t *pr)
{
    sy_plan_t *p = pr->p;
    const sy_plan_conf_t *c = pr->conf;
    char buf[256];
    if (!pr->have) { /* a plan never started: step 0, now */
        char started[24];
        snprintf(started, sizeof(started), "%lld", (long long)now_ms());
        const char *pairs[] = {"state", "running", "step", "0", "step_started", started, "holder", p->owner, NULL};
        write_fenced(pr, 0 - 1, "plan_start", "plan started at step 0", pairs);
        return;
    }
    if (strcmp(pr->state, "running") != 0 || pr->step < 0 || (size_t)pr->step >= c->nsteps)
        return;
    const sy_route_flags_t *f = flags_of(p, c->route);
    if (f == NULL)
        return;
    if (f->state == SY_STATE_TRIPPED) {
        snprintf(buf, sizeof(buf), "route tripped at step %d: %s", pr->step, f->reason ? f->reason : "");
        set_state(pr, "stopped", "plan_stop", buf);
        return;
    }
    const sy_plan_step_t *st = &c->steps[pr->step];
    if (f->percent_bp != st->percent_bp) {
        if (f->state != SY_STATE_RAMPING) {
            waiting(pr, WAIT_ROUTE, "route is not ramping (off or promoted): the plan waits", 0);
            return;
        }
        if (!pr->applying) {
            snprintf(buf, sizeof(buf), "plan step %d of %zu", pr->step, c->nsteps);
            char now[32];
            sy_flags_now(now);
            sy_flag_request_t req = {.op = SY_OP_PERCENT, .percent_bp = st->percent_bp, .actor = "plan",
                                     .reason = buf, .now = now};
            pr->applying = true;
            sy_flagstore_request(p->store, c->route, &req, applied, pr);
        }
        waiting(pr, WAIT_APPLY, "setting the step's percentage", 0);
        return;
    }
    if ((size_t)pr->step + 1 == c->nsteps) {
        set_state(pr, "done", "plan_done", "last step reached");
        return;
    }
    int64_t left = pr->step_started_ms + (int64_t)st->hold_ms - now_ms();
    if (left > 0) {
        snprintf(buf, sizeof(buf), "hold: %lld s left", (long long)((left + 999) / 1000));
        waiting(pr, WAIT_HOLD, buf, 0);
        return;
    }
    int kind;
    int64_t needed;
    if (!gate(pr, evidence_of(p, c->route), &kind, buf, sizeof(buf), &needed)) {
        waiting(pr, kind, buf, needed);
        return;
    }
    char next[16], started[24], reason[256];
    snprintf(next, sizeof(next), "%d", pr->step + 1);
    snprintf(started, sizeof(started), "%lld", (long long)now_ms());
    const sy_evidence_t *e = evidence_of(p, c->route);
    snprintf(reason, sizeof(reason), "step %d -> %d (%.2f%% -> %.2f%%): gate met on %llu requests of new, %llu errors",
             pr->step, pr->step + 1, st->percent_bp / 100.0, c->steps[pr->step + 1].percent_bp / 100.0,
             e ? (unsigned long long)e->side[1].requests : 0ULL, e ? (unsigned long long)e->side[1].errors : 0ULL);
    char cur[16];
    snprintf(cur, sizeof(cur), "%d", pr->step);
    const char *pairs[] = {"step", next, "step_started", started, "waiting_for", "", "needed_requests", "0",
                           "holder", p->owner, NULL};
    write_fenced(pr, pr->step, "plan_advance", reason, pairs);
    pr->wait_kind = WAIT_NONE;
}

static void got_hash(void *ud, redisReply *reply, const char *err)
{
    plan_route_t *pr = ud;
    pr->reading = false;
    if (err != NULL || reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return;
    pr->have = reply->elements > 0;
    pr->waiting[0] = '\0';
    pr->needed = 0;
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const char *k = reply->element[i]->str, *v = reply->element[i + 1]->str;
        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "state") == 0)
            snprintf(pr->state, sizeof(pr->state), "%s", v);
        else if (strcmp(k, "step") == 0)
            pr->step = atoi(v);
        else if (strcmp(k, "step_started") == 0)
            pr->step_started_ms = atoll(v);
        else if (strcmp(k, "waiting_for") == 0)
            snprintf(pr->waiting, sizeof(pr->waiting), "%s", v);
        else if (strcmp(k, "needed_requests") == 0)
            pr->needed = atoll(v);
    }
    if (sy_lease_held(&pr->lease) && !pr->writing)
        decide(pr);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_plan_t *p = t->data;
    (void)loop;
    (void)revents;
    sy_redis_t *r = redis_of(p);
    if (r == NULL || !sy_redis_up(r))
        return;
    for (size_t i = 0; i < p->n; i++) {
        plan_route_t *pr = &p->routes[i];
        sy_lease_renew(&pr->lease, r);
        if (pr->reading)
            continue;
        const char *argv[] = {"HGETALL", pr->key};
        pr->reading = sy_redis_command(r, got_hash, pr, 2, argv, NULL) == 0;
    }
}

static const sy_plan_confs_t *plan_confs(const sy_config_t *cfg)
{
    for (size_t i = 0; i < cfg->next; i++)
        if (cfg->ext_sections[i] == &sy_plan_section)
            return cfg->ext[i];
    return NULL;
}

sy_plan_t *sy_plan_create(struct ev_loop *loop, const sy_config_t *cfg, sy_flagstore_t *store, sy_monitor_t *monitor,
                          const sy_sink_t *sink)
{
    sy_plan_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->store = store;
    p->monitor = monitor;
    if (sink != NULL)
        p->sink = *sink;
    p->cfg = sy_config_ref((sy_config_t *)cfg);
    const sy_plan_confs_t *pc = plan_confs(cfg);
    const sy_redis_conf_t *rc = sy_config_ext(cfg, "redis");
    size_t n = 0;
    for (size_t i = 0; pc != NULL && i < pc->n; i++)
        n += pc->routes[i].route != NULL;
    bool redis = rc != NULL && (rc->address != NULL || rc->nsentinels > 0);
    if (n > 0 && !redis)
        sy_warn("plan: %zu route(s) have a plan but there is no redis section: plans need Redis and do not run", n);
    if (n == 0 || !redis)
        return p; /* nothing to own */
    char host[64];
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    snprintf(p->owner, sizeof(p->owner), "%s/%ld/%08lx", host, (long)getpid(), (unsigned long)(now_ms() & 0xffffffff));
    snprintf(p->prefix, sizeof(p->prefix), "%s", rc->prefix ? rc->prefix : "switchyard:");
    p->routes = calloc(n, sizeof(*p->routes));
    if (p->routes == NULL) {
        sy_plan_destroy(p);
        return NULL;
    }
    uint64_t tick_ms = 60000;
    for (size_t i = 0; i < pc->n; i++) {
        if (pc->routes[i].route == NULL)
            continue;
        plan_route_t *pr = &p->routes[p->n++];
        pr->p = p;
        pr->conf = &pc->routes[i];
        pr->step = -1;
        snprintf(pr->key, sizeof(pr->key), "%splan:%s", p->prefix, pr->conf->route);
        char lk[220];
        snprintf(lk, sizeof(lk), "%s:lease", pr->key);
        sy_lease_init(&pr->lease, loop, lk, p->owner, pr->conf->lease_ms);
        if (pr->conf->tick_ms < tick_ms)
            tick_ms = pr->conf->tick_ms;
    }
    p->active = true;
    ev_timer_init(&p->tick, tick_cb, (double)tick_ms / 1000.0, (double)tick_ms / 1000.0);
    p->tick.data = p;
    ev_timer_start(loop, &p->tick);
    return p;
}

void sy_plan_destroy(sy_plan_t *p)
{
    if (p == NULL)
        return;
    ev_timer_stop(p->loop, &p->tick);
    free(p->routes);
    sy_config_release(p->cfg);
    free(p);
}

void sy_plan_release(sy_plan_t *p)
{
    sy_redis_t *r = p != NULL ? redis_of(p) : NULL;
    if (p != NULL)
        ev_timer_stop(p->loop, &p->tick);
    for (size_t i = 0; r != NULL && sy_redis_up(r) && i < p->n; i++)
        sy_lease_release(&p->routes[i].lease, r); /* the next holder need not wait a ttl */
}

void sy_plan_set_evidence(sy_plan_t *p, sy_plan_evidence_fn fn, void *ud)
{
    p->evidence = fn;
    p->evidence_ud = ud;
}

static plan_route_t *find(const sy_plan_t *p, const char *route)
{
    for (size_t i = 0; p != NULL && i < p->n; i++)
        if (strcmp(p->routes[i].conf->route, route) == 0)
            return &p->routes[i];
    return NULL;
}

json_t *sy_plan_json(const sy_plan_t *p, const char *route)
{
    const plan_route_t *pr = find(p, route);
    if (pr == NULL)
        return json_null();
    const sy_plan_conf_t *c = pr->conf;
    json_t *steps = json_array();
    for (size_t i = 0; i < c->nsteps; i++)
        json_array_append_new(steps, json_pack("{s:i, s:b, s:I}", "percent_bp", (int)c->steps[i].percent_bp,
                                               "test_users_only", c->steps[i].test_users_only, "hold_s",
                                               (json_int_t)(c->steps[i].hold_ms / 1000)));
    int64_t left = 0;
    if (pr->have && pr->step >= 0 && (size_t)pr->step < c->nsteps) {
        left = pr->step_started_ms + (int64_t)c->steps[pr->step].hold_ms - now_ms();
        left = left > 0 ? (left + 999) / 1000 : 0;
    }
    /* Before its hash exists the plan is about to start: "running", step 0,
     * and it says what it waits for (the dashboard's four states only). */
    json_t *wait = !pr->have ? json_string("starting: no instance holds the plan's lease yet")
                   : pr->waiting[0] != '\0' ? json_string(pr->waiting)
                                            : json_null();
    return json_pack("{s:s, s:i, s:o, s:I, s:I, s:o, s:I, s:b}", "state", pr->have ? pr->state : "running", "step",
                     pr->have ? pr->step : 0, "steps", steps, "step_started",
                     (json_int_t)(pr->step_started_ms / 1000), "hold_left_s", (json_int_t)left, "waiting_for",
                     wait, "needed_requests", (json_int_t)pr->needed,
                     "lease_held", sy_lease_held(&pr->lease));
}

typedef struct pause_ctx {
    plan_route_t *pr;
    bool pause;
    sy_plan_done_fn done;
    void *ud;
    char actor[64], reason[200];
} pause_ctx_t;

static void paused(void *ud, redisReply *reply, const char *err)
{
    pause_ctx_t *x = ud;
    if (err != NULL || reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        x->done(x->ud, "Redis did not take it", 503);
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        x->done(x->ud, x->pause ? "the plan is not running" : "the plan is not paused or stopped", 409);
    } else {
        snprintf(x->pr->state, sizeof(x->pr->state), "%s", x->pause ? "paused" : "running");
        event(x->pr, x->pause ? "plan_pause" : "plan_continue", x->actor, x->reason);
        x->done(x->ud, NULL, 200);
    }
    free(x);
}

/* Pause: running -> paused. Continue: paused or stopped -> running, with the
 * step's clock restarted (and its evidence: the route's evidence restarts on
 * its next change; the hold counts from now). Any instance. */
static const char pause_script[] =
    "local s = redis.call('HGET', KEYS[1], 'state') "
    "if ARGV[1] == 'pause' then "
    "  if s ~= 'running' then return 0 end "
    "  redis.call('HSET', KEYS[1], 'state', 'paused', 'waiting_for', 'paused') return 1 "
    "end "
    "if s ~= 'paused' and s ~= 'stopped' then return 0 end "
    "redis.call('HSET', KEYS[1], 'state', 'running', 'step_started', ARGV[2], 'waiting_for', '') return 1";

void sy_plan_pause(sy_plan_t *p, const char *route, bool pause, const char *actor, const char *reason,
                   sy_plan_done_fn done, void *ud)
{
    plan_route_t *pr = find(p, route);
    if (pr == NULL) {
        done(ud, "the route has no plan", 404);
        return;
    }
    const sy_route_flags_t *f = flags_of(p, route);
    if (!pause && f != NULL && f->state == SY_STATE_TRIPPED) {
        done(ud, "the route is tripped: resume it first", 409);
        return;
    }
    pause_ctx_t *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        done(ud, "out of memory", 503);
        return;
    }
    x->pr = pr;
    x->pause = pause;
    x->done = done;
    x->ud = ud;
    snprintf(x->actor, sizeof(x->actor), "%s", actor ? actor : "admin-api");
    snprintf(x->reason, sizeof(x->reason), "%s", reason && *reason ? reason : pause ? "paused" : "continued");
    char started[24];
    snprintf(started, sizeof(started), "%lld", (long long)now_ms());
    const char *argv[] = {"EVAL", pause_script, "1", pr->key, pause ? "pause" : "continue", started};
    sy_redis_t *r = redis_of(p);
    if (r == NULL || sy_redis_command(r, paused, x, 6, argv, NULL) != 0) {
        free(x);
        done(ud, "Redis is not connected", 503);
    }
}
