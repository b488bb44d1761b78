/* The fleet's heartbeats in Redis. See fleet.h. */
#include "healthcheck/fleet.h"

#include "flags/redis.h"
#include "healthcheck/fleetsum.h"
#include "proxy/log.h"
#include "routing/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <xxhash.h>
#include <yaml.h>

#define HEARTBEAT_EVERY 1.0
/* The heartbeat goes out this long after each wall-clock second, once the
 * monitor (100 ms tick) has closed the second before: every instance publishes
 * it, and reads the others', at about the same moment. */
#define HEARTBEAT_PHASE 0.3
#define TTL_MS "5000"
#define STALE_MS 10000
#define MAX_INSTANCES SY_FLEET_MAX_INSTANCES
#define CLAIM_PX "30000"
/* A second closes once every instance has published it, or this many seconds
 * after it at the latest (a heartbeat carries SY_FLEET_HISTORY of them). */
#define CLOSE_LAG (SY_FLEET_HISTORY - 1)

/* A route with `scope: fleet`: the fleet's sum, judged by the monitor's rules. */
typedef struct fleet_route {
    char *name;
    const sy_trip_conf_t *conf; /* of f->cfg */
    sy_fleet_sum_t *sum;
    sy_verdict_t verdict;
    bool warned, critical;      /* notified once until the route is below them again */
    bool claiming;              /* a claim of this route is in flight */
} fleet_route_t;

struct sy_fleet {
    struct ev_loop *loop;
    sy_trip_t *trip;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
    char id[160], hash[20], started_at[32], version[32];
    int64_t started_ms;
    ev_periodic tick;  /* at HEARTBEAT_PHASE past each wall-clock second, on every instance */
    bool reading;      /* a read-back is in flight (its replies find f: the store goes first at destroy) */
    json_t *view;      /* the last read-back: an array of instance objects */
    int64_t view_ms;
    /* publishing: the seconds the monitor closed, per route (the last few) */
    json_t *outbox;    /* {route: [second, ...]}, oldest first */
    int64_t upto;      /* the last second the monitor closed */
    size_t last_bytes; /* the last heartbeat's size */
    /* judging: the routes with scope: fleet, of cfg */
    sy_config_t *cfg;
    fleet_route_t routes[SY_FLEET_MAX_ROUTES];
    size_t nroutes;
    sy_fleet_cursors_t cursors;
    sy_side_t scratch[2]; /* one parsed second */
    uint64_t claims_won, claims_lost;
};

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The config hash covers what must agree across the fleet, the `pools` and
 * `routes` sections, as YAML events (so formatting and comments do not count,
 * and per-host keys such as listen and admin addresses do not either). */
void sy_fleet_config_hash(const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *fp = path ? fopen(path, "rb") : NULL;
    if (fp == NULL)
        return;
    yaml_parser_t parser;
    XXH64_state_t *st = XXH64_createState();
    if (st == NULL || XXH64_reset(st, 0) != XXH_OK || !yaml_parser_initialize(&parser)) {
        XXH64_freeState(st);
        fclose(fp);
        return;
    }
    yaml_parser_set_input_file(&parser, fp);
    int depth = 0;      /* mapping/sequence nesting */
    bool key = true;    /* at depth 1: the next scalar is a top-level key */
    bool inside = false; /* in the value of pools or routes */
    bool ok = true;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            ok = false;
            break;
        }
        yaml_event_type_t t = ev.type;
        bool top_scalar = depth == 1 && t == YAML_SCALAR_EVENT;
        if (top_scalar && key) {
            const char *k = (const char *)ev.data.scalar.value;
            inside = strcmp(k, "pools") == 0 || strcmp(k, "routes") == 0;
            if (inside)
                XXH64_update(st, k, strlen(k) + 1);
            key = false;
        } else {
            if (inside) {
                XXH64_update(st, &t, sizeof(t));
                if (t == YAML_SCALAR_EVENT)
                    XXH64_update(st, ev.data.scalar.value, ev.data.scalar.length + 1);
            }
            if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT)
                depth++;
            else if (t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT)
                depth--;
            if (depth == 1 && (top_scalar || t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT)) {
                key = true; /* the value of a top-level key ended */
                inside = false;
            }
        }
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT)
            break;
    }
    if (ok)
        snprintf(out, cap, "%016llx", (unsigned long long)XXH64_digest(st));
    yaml_parser_delete(&parser);
    XXH64_freeState(st);
    fclose(fp);
}

static json_t *side_json(const sy_side_t *w, const sy_side_t *t)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "requests", (json_int_t)t->requests, "errors", (json_int_t)t->errors,
                     "window_requests", (json_int_t)w->requests, "window_errors", (json_int_t)w->errors);
}

static json_t *self_json(const sy_fleet_t *f)
{
    json_t *routes = json_object();
    for (size_t i = 0; i < sy_monitor_nroutes(f->monitor); i++) {
        const sy_route_view_t *v = sy_monitor_route(f->monitor, i);
        if (v == NULL || v->route == NULL)
            continue;
        json_object_set_new(routes, v->route, json_pack("{s:o, s:o}", "legacy", side_json(&v->window[0], &v->total[0]),
                                                        "new", side_json(&v->window[1], &v->total[1])));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:I, s:O}", "id", f->id, "version", f->version, "config_hash",
                     f->hash, "started_at", f->started_at, "at_ms", (json_int_t)now_ms(), "routes", routes, "upto",
                     (json_int_t)f->upto, "seconds", f->outbox);
}

/* The monitor closed a second of a route: it joins the route's last few in
 * the outbox (seconds without traffic are not sent; `upto` says they closed). */
static void on_second(void *ud, const char *route, int64_t second, const sy_side_t *legacy, const sy_side_t *fresh)
{
    sy_fleet_t *f = ud;
    if (second > f->upto)
        f->upto = second;
    json_t *j = sy_fleet_second_json(second, legacy, fresh);
    if (j == NULL)
        return;
    json_t *list = json_object_get(f->outbox, route);
    if (list == NULL) {
        list = json_array();
        if (json_object_set_new(f->outbox, route, list) != 0) {
            json_decref(j);
            return;
        }
    }
    json_array_append_new(list, j);
    while (json_array_size(list) > SY_FLEET_HISTORY)
        json_array_remove(list, 0);
}

/* Before a heartbeat: seconds older than the history go (routes that went
 * quiet, or left the config, leave the outbox). */
static void prune_outbox(sy_fleet_t *f)
{
    const char *k;
    json_t *list;
    void *tmp;
    json_object_foreach_safe(f->outbox, tmp, k, list) {
        while (json_array_size(list) > 0 &&
               json_integer_value(json_object_get(json_array_get(list, 0), "s")) <= f->upto - SY_FLEET_HISTORY)
            json_array_remove(list, 0);
        if (json_array_size(list) == 0)
            json_object_del(f->outbox, k);
    }
}

/* --- the routes judged on the fleet's sum ---------------------------------------- */

static void routes_free(sy_fleet_t *f)
{
    for (size_t i = 0; i < f->nroutes; i++) {
        free(f->routes[i].name);
        sy_fleet_sum_destroy(f->routes[i].sum);
    }
    memset(f->routes, 0, sizeof(f->routes));
    f->nroutes = 0;
    sy_config_release(f->cfg);
    f->cfg = NULL;
}

/* The store's config (new at start and after a reload): every route with
 * scope: fleet gets a sum that starts now (as the monitor's windows do). At
 * start it takes the current second whole: nothing of this instance came
 * before it, and requests sent right after start (in the same second) count.
 * After a reload the sum starts with the next second: the current one mixes
 * the old config's requests with the new's. */
static void routes_load(sy_fleet_t *f, bool at_start)
{
    routes_free(f);
    sy_config_t *cfg = (sy_config_t *)sy_flagstore_config(f->store);
    if (cfg == NULL)
        return;
    f->cfg = sy_config_ref(cfg);
    sy_fleet_cursors_forget_routes(&f->cursors);
    const sy_trip_confs_t *tc = sy_trip_confs(cfg);
    double now = ev_now(f->loop);
    for (size_t i = 0; tc != NULL && i < tc->n && f->nroutes < SY_FLEET_MAX_ROUTES; i++) {
        const sy_trip_conf_t *c = &tc->routes[i];
        if (!c->fleet_scope || c->route == NULL)
            continue;
        fleet_route_t *fr = &f->routes[f->nroutes];
        fr->conf = c;
        fr->name = strdup(c->route);
        fr->sum = sy_fleet_sum_create(c, (int64_t)now - (at_start ? 1 : 0), now);
        if (fr->name == NULL || fr->sum == NULL) {
            free(fr->name);
            sy_fleet_sum_destroy(fr->sum);
            memset(fr, 0, sizeof(*fr));
            sy_error("fleet: out of memory: route %s is judged locally only", c->route);
            continue;
        }
        f->nroutes++;
    }
}

static fleet_route_t *route_of(sy_fleet_t *f, const char *route)
{
    for (size_t i = 0; f != NULL && i < f->nroutes; i++)
        if (strcmp(f->routes[i].name, route) == 0)
            return &f->routes[i];
    return NULL;
}

static const sy_route_flags_t *flags_of(sy_fleet_t *f, const char *route)
{
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(f->store), "routes");
    const sy_route_t *r = rs != NULL ? sy_route_find(rs, route) : NULL;
    const sy_route_flags_t *flags = sy_flagstore_flags(f->store);
    return r != NULL && flags != NULL ? &flags[r - rs->routes] : NULL;
}

static void key_of(const sy_fleet_t *f, const char *id, char *out, size_t cap)
{
    snprintf(out, cap, "%sinstance:%s", sy_flagstore_redis_prefix(f->store), id);
}

static void on_ignore(void *ud, redisReply *r, const char *err)
{
    (void)ud;
    (void)r;
    (void)err;
}

/* --- exactly one instance acts --------------------------------------------------- */

/* Every instance judges the same sum and would fire at once; the one that
 * sets {prefix}fleet:claim:{route}:{kind}:{flags version} first (SET NX PX)
 * acts, the others see the flip through the flags like any trip. A new
 * version (a resume, an edit) makes a new claim possible. */
typedef struct claim {
    sy_fleet_t *f;
    char route[128], kind[16], rule[64];
    char detail[sizeof(((sy_verdict_t *)0)->detail)];
    json_t *stats; /* of a trip */
} claim_t;

static void claimed(void *ud, redisReply *r, const char *err)
{
    claim_t *c = ud;
    sy_fleet_t *f = c->f;
    fleet_route_t *fr = route_of(f, c->route);
    bool trip = strcmp(c->kind, "trip") == 0;
    if (fr != NULL && trip)
        fr->claiming = false;
    if (err != NULL || r == NULL || r->type == REDIS_REPLY_ERROR) {
        if (fr != NULL && strcmp(c->kind, "warn") == 0)
            fr->warned = false; /* tried again at the next read-back */
        else if (fr != NULL && strcmp(c->kind, "critical") == 0)
            fr->critical = false;
    } else if (r->type != REDIS_REPLY_STATUS) { /* nil: another instance claimed it */
        f->claims_lost++;
        sy_info("fleet: route %s: %s %s on the fleet's sum is another instance's to act on", c->route, c->kind,
                c->rule);
    } else {
        f->claims_won++;
        char rule[80], reason[512];
        snprintf(rule, sizeof(rule), "fleet:%s", c->rule);
        snprintf(reason, sizeof(reason), "%s: %s", rule, c->detail);
        if (trip) {
            sy_warn("fleet: route %s trips on the fleet's sum: %s", c->route, reason);
            (void)sy_trip_fire(f->trip, c->route, rule, reason, c->stats);
        } else if (strcmp(c->kind, "critical") == 0) {
            sy_warn("fleet: critical: route %s, on the fleet's sum: %s", c->route, reason);
            sy_trip_critical(f->trip, c->route, rule, c->detail);
        } else {
            sy_warn("fleet: warning: route %s, on the fleet's sum: %s", c->route, reason);
            sy_trip_warn(f->trip, c->route, rule, c->detail);
        }
    }
    json_decref(c->stats);
    free(c);
}

static void claim(sy_fleet_t *f, fleet_route_t *fr, const char *kind, uint64_t version, json_t *stats)
{
    claim_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        json_decref(stats);
        return;
    }
    c->f = f;
    c->stats = stats;
    snprintf(c->route, sizeof(c->route), "%s", fr->name);
    snprintf(c->kind, sizeof(c->kind), "%s", kind);
    snprintf(c->rule, sizeof(c->rule), "%s", fr->verdict.rule ? fr->verdict.rule : "?");
    snprintf(c->detail, sizeof(c->detail), "%s", fr->verdict.detail);
    char key[320], ver[24];
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)version);
    snprintf(key, sizeof(key), "%sfleet:claim:%s:%s:%s", sy_flagstore_redis_prefix(f->store), fr->name, kind, ver);
    const char *argv[] = {"SET", key, f->id, "NX", "PX", CLAIM_PX};
    if (sy_redis_command(sy_flagstore_redis(f->store), claimed, c, 6, argv, NULL) != 0) {
        json_decref(c->stats);
        free(c);
        return;
    }
    if (strcmp(kind, "trip") == 0)
        fr->claiming = true;
}

/* The trip's record: both sides over the fleet's window, and its evidence. */
static json_t *fleet_stats(const fleet_route_t *fr, size_t instances)
{
    double ws = sy_fleet_sum_window_s(fr->sum);
    return json_pack("{s:s, s:s, s:s, s:I, s:f, s:o, s:o, s:o}", "rule", fr->verdict.rule ? fr->verdict.rule : "?",
                     "detail", fr->verdict.detail, "scope", "fleet", "instances", (json_int_t)instances, "window_s", ws,
                     "legacy", sy_trip_side_json(&fr->sum->window[0], ws), "new",
                     sy_trip_side_json(&fr->sum->window[1], ws), "evidence", sy_trip_evidence_json(&fr->sum->ev));
}

/* --- reading the fleet ------------------------------------------------------------ */

/* Each instance's seconds of the fleet's routes that are new to us join the
 * sums; then the seconds every instance has published close. */
static void consume(sy_fleet_t *f, double now)
{
    sy_fleet_cursors_begin(&f->cursors);
    size_t i;
    json_t *in;
    json_array_foreach(f->view, i, in) {
        sy_fleet_cursor_t *cur = sy_fleet_cursor_get(&f->cursors, json_string_value(json_object_get(in, "id")));
        if (cur == NULL)
            continue;
        json_int_t upto = json_integer_value(json_object_get(in, "upto"));
        if (upto > cur->upto)
            cur->upto = upto;
        json_t *secs = json_object_get(in, "seconds");
        for (size_t r = 0; r < f->nroutes; r++) {
            size_t k;
            json_t *sec;
            json_array_foreach(json_object_get(secs, f->routes[r].name), k, sec) {
                int64_t second = json_integer_value(json_object_get(sec, "s"));
                if (second <= cur->taken[r])
                    continue; /* taken at an earlier read-back: not parsed again */
                if (sy_fleet_second_parse(sec, &second, &f->scratch[0], &f->scratch[1]) != 0)
                    break; /* malformed: the rest of this instance's route is not trusted either */
                if (sy_fleet_cursor_take(cur, r, second))
                    (void)sy_fleet_sum_add(f->routes[r].sum, second, &f->scratch[0], &f->scratch[1]);
            }
        }
    }
    int64_t low = sy_fleet_cursors_end(&f->cursors), now_s = (int64_t)now;
    int64_t upto = low > now_s - CLOSE_LAG ? low : now_s - CLOSE_LAG;
    if (upto > now_s - 1)
        upto = now_s - 1;
    for (size_t r = 0; r < f->nroutes; r++)
        sy_fleet_sum_close(f->routes[r].sum, upto, now);
}

/* The monitor's rules on the fleet's sums; trips, criticals and warnings go
 * through the trip owner, by one instance (claim). */
static void judge(sy_fleet_t *f)
{
    size_t instances = json_array_size(f->view);
    for (size_t r = 0; r < f->nroutes; r++) {
        fleet_route_t *fr = &f->routes[r];
        sy_fleet_sum_evaluate(fr->sum, &fr->verdict);
        const sy_route_flags_t *flags = flags_of(f, fr->name);
        const sy_verdict_t *vd = &fr->verdict;
        if (flags == NULL || (flags->state != SY_STATE_RAMPING && flags->state != SY_STATE_PROMOTED))
            continue; /* tripped or off: nothing to act on (as the trip owner would say) */
        if (vd->level == SY_LEVEL_TRIP && !fr->claiming)
            claim(f, fr, "trip", flags->version, fleet_stats(fr, instances));
        if (vd->level == SY_LEVEL_CRITICAL && !fr->critical)
            claim(f, fr, "critical", flags->version, NULL);
        fr->critical = vd->level >= SY_LEVEL_CRITICAL;
        if (vd->level == SY_LEVEL_WARN && !fr->warned)
            claim(f, fr, "warn", flags->version, NULL);
        fr->warned = vd->level >= SY_LEVEL_WARN;
    }
}

static void on_mget(void *ud, redisReply *r, const char *err)
{
    sy_fleet_t *f = ud;
    f->reading = false;
    if (err != NULL || r == NULL || r->type != REDIS_REPLY_ARRAY)
        return;
    json_t *list = json_array();
    for (size_t i = 0; i < r->elements && i < MAX_INSTANCES; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue; /* expired between the two reads */
        json_t *j = json_loadb(e->str, e->len, 0, NULL);
        if (json_is_object(j) && json_is_string(json_object_get(j, "id")))
            json_array_append_new(list, j);
        else
            json_decref(j);
    }
    json_decref(f->view);
    f->view = list;
    f->view_ms = now_ms();
    if (f->cfg != sy_flagstore_config(f->store))
        routes_load(f, false); /* a reload the lifecycle did not tell us of */
    consume(f, ev_now(f->loop));
    judge(f);
}

static void on_members(void *ud, redisReply *r, const char *err)
{
    sy_fleet_t *f = ud;
    if (err != NULL || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        f->reading = false;
        return;
    }
    size_t n = r->elements < MAX_INSTANCES ? r->elements : MAX_INSTANCES;
    const char *argv[MAX_INSTANCES + 1];
    char keys[MAX_INSTANCES][256];
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        key_of(f, r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "?", keys[i], sizeof(keys[i]));
        argv[i + 1] = keys[i];
    }
    if (sy_redis_command(sy_flagstore_redis(f->store), on_mget, f, (int)n + 1, argv, NULL) != 0)
        f->reading = false;
}

static void tick_cb(struct ev_loop *loop, ev_periodic *t, int revents)
{
    (void)loop;
    (void)revents;
    sy_fleet_t *f = t->data;
    sy_redis_t *r = sy_flagstore_redis(f->store);
    if (r == NULL || !sy_redis_up(r))
        return;
    char key[256], zkey[160], score[24], stale[32];
    key_of(f, f->id, key, sizeof(key));
    snprintf(zkey, sizeof(zkey), "%sinstances", sy_flagstore_redis_prefix(f->store));
    int64_t now = now_ms();
    snprintf(score, sizeof(score), "%lld", (long long)now);
    snprintf(stale, sizeof(stale), "(%lld", (long long)(now - STALE_MS));
    prune_outbox(f);
    json_t *self = self_json(f);
    char *text = self ? json_dumps(self, JSON_COMPACT) : NULL;
    json_decref(self);
    if (text == NULL)
        return;
    f->last_bytes = strlen(text);
    /* pipelined: one round trip for the write, one for the read-back */
    const char *set[] = {"SET", key, text, "PX", TTL_MS};
    const char *zadd[] = {"ZADD", zkey, score, f->id};
    const char *prune[] = {"ZREMRANGEBYSCORE", zkey, "-inf", stale};
    (void)sy_redis_command(r, on_ignore, NULL, 5, set, NULL);
    (void)sy_redis_command(r, on_ignore, NULL, 4, zadd, NULL);
    (void)sy_redis_command(r, on_ignore, NULL, 4, prune, NULL);
    free(text);
    if (f->reading)
        return;
    char last[8];
    snprintf(last, sizeof(last), "%d", MAX_INSTANCES - 1);
    const char *range[] = {"ZRANGE", zkey, "0", last};
    f->reading = sy_redis_command(r, on_members, f, 4, range, NULL) == 0;
}

sy_fleet_t *sy_fleet_create(struct ev_loop *loop, const char *config_path, const char *version,
                            sy_flagstore_t *store, sy_monitor_t *monitor, sy_trip_t *trip)
{
    sy_fleet_t *f = calloc(1, sizeof(*f));
    if (f == NULL || (f->outbox = json_object()) == NULL) {
        free(f);
        return NULL;
    }
    f->loop = loop;
    f->store = store;
    f->monitor = monitor;
    f->trip = trip;
    snprintf(f->version, sizeof(f->version), "%s", version);
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(f->id, sizeof(f->id), "%s/%d", host, (int)getpid());
    sy_fleet_config_hash(config_path, f->hash, sizeof(f->hash));
    f->started_ms = now_ms();
    time_t secs = (time_t)(f->started_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(f->started_at, sizeof(f->started_at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    routes_load(f, true);
    sy_monitor_on_second(monitor, on_second, f);
    ev_periodic_init(&f->tick, tick_cb, HEARTBEAT_PHASE, HEARTBEAT_EVERY, NULL);
    f->tick.data = f;
    ev_periodic_start(loop, &f->tick);
    return f;
}

void sy_fleet_reload(sy_fleet_t *f, const char *config_hash)
{
    if (f == NULL)
        return;
    if (config_hash != NULL && strcmp(config_hash, f->hash) != 0) {
        sy_info("fleet: config hash %s -> %s", f->hash, config_hash);
        snprintf(f->hash, sizeof(f->hash), "%s", config_hash);
    }
    routes_load(f, false);
}

void sy_fleet_reset_route(sy_fleet_t *f, const char *route)
{
    fleet_route_t *fr = route_of(f, route);
    if (fr == NULL)
        return;
    double now = ev_now(f->loop);
    sy_fleet_sum_reset(fr->sum, (int64_t)now, now);
    memset(&fr->verdict, 0, sizeof(fr->verdict));
    fr->warned = fr->critical = false;
}

void sy_fleet_restart_evidence(sy_fleet_t *f, const char *route)
{
    fleet_route_t *fr = route_of(f, route);
    if (fr != NULL)
        sy_fleet_sum_restart_evidence(fr->sum, (int64_t)ev_now(f->loop), ev_now(f->loop));
}

const sy_evidence_t *sy_fleet_evidence(void *fleet, const char *route)
{
    fleet_route_t *fr = route_of(fleet, route);
    return fr != NULL ? &fr->sum->ev : NULL;
}

/* After the store: its Redis client answered every read in flight. */
void sy_fleet_destroy(sy_fleet_t *f)
{
    if (f == NULL)
        return;
    ev_periodic_stop(f->loop, &f->tick);
    sy_monitor_on_second(f->monitor, NULL, NULL);
    routes_free(f);
    json_decref(f->outbox);
    json_decref(f->view);
    free(f);
}

static void add_side(json_t *sum, const char *variant, json_t *side)
{
    json_t *s = json_object_get(sum, variant);
    if (s == NULL) {
        s = json_pack("{s:I, s:I, s:I, s:I}", "requests", (json_int_t)0, "errors", (json_int_t)0,
                      "window_requests", (json_int_t)0, "window_errors", (json_int_t)0);
        json_object_set_new(sum, variant, s);
    }
    const char *k;
    json_t *v;
    json_object_foreach(side, k, v) {
        json_t *cur = json_object_get(s, k);
        if (json_is_integer(cur) && json_is_integer(v))
            json_integer_set(cur, json_integer_value(cur) + json_integer_value(v));
    }
}

json_t *sy_fleet_json(const sy_fleet_t *f)
{
    json_t *insts = json_array(), *routes = json_object();
    /* without a read-back yet (or without Redis): this instance alone */
    json_t *own = NULL, *list = f->view;
    if (list == NULL || json_array_size(list) == 0) {
        own = json_array();
        json_array_append_new(own, self_json(f));
        list = own;
    }
    /* the most common config hash */
    const char *common = NULL;
    size_t best = 0, i, j;
    json_t *a, *b;
    json_array_foreach(list, i, a) {
        const char *h = json_string_value(json_object_get(a, "config_hash"));
        size_t n = 0;
        json_array_foreach(list, j, b) {
            const char *h2 = json_string_value(json_object_get(b, "config_hash"));
            n += h && h2 && strcmp(h, h2) == 0;
        }
        if (n > best) {
            best = n;
            common = h;
        }
    }
    int64_t now = now_ms();
    json_array_foreach(list, i, a) {
        const char *h = json_string_value(json_object_get(a, "config_hash"));
        json_int_t at = json_integer_value(json_object_get(a, "at_ms"));
        json_array_append_new(insts,
                              json_pack("{s:O, s:O, s:O, s:O, s:I, s:b, s:b}", "id", json_object_get(a, "id"), "version",
                                        json_object_get(a, "version"), "config_hash", json_object_get(a, "config_hash"),
                                        "started_at", json_object_get(a, "started_at"), "seen_ms_ago",
                                        (json_int_t)(now - at), "config_differs",
                                        h == NULL || common == NULL || strcmp(h, common) != 0, "self",
                                        strcmp(json_string_value(json_object_get(a, "id")), f->id) == 0));
        const char *name;
        json_t *r;
        json_object_foreach(json_object_get(a, "routes"), name, r) {
            json_t *sum = json_object_get(routes, name);
            if (sum == NULL) {
                sum = json_object();
                json_object_set_new(routes, name, sum);
            }
            add_side(sum, "legacy", json_object_get(r, "legacy"));
            add_side(sum, "new", json_object_get(r, "new"));
        }
    }
    json_decref(own);
    json_t *judged = json_object();
    for (size_t r = 0; r < f->nroutes; r++) {
        const fleet_route_t *fr = &f->routes[r];
        double ws = sy_fleet_sum_window_s(fr->sum);
        json_object_set_new(judged, fr->name,
                            json_pack("{s:s, s:s?, s:s, s:f, s:o, s:o, s:o, s:I, s:I}", "level",
                                      sy_level_name(fr->verdict.level), "rule", fr->verdict.rule, "detail",
                                      fr->verdict.detail, "window_s", ws, "legacy",
                                      sy_trip_side_json(&fr->sum->window[0], ws), "new",
                                      sy_trip_side_json(&fr->sum->window[1], ws), "evidence",
                                      sy_trip_evidence_json(&fr->sum->ev), "closed_through", (json_int_t)fr->sum->closed,
                                      "late", (json_int_t)fr->sum->late));
    }
    return json_pack("{s:I, s:s, s:s?, s:o, s:o, s:o, s:I, s:{s:I, s:I}}", "as_of_ms_ago",
                     (json_int_t)(f->view ? now - f->view_ms : 0), "self", f->id, "config_hash", common, "instances",
                     insts, "routes", routes, "fleet_rules", judged, "heartbeat_bytes", (json_int_t)f->last_bytes,
                     "claims", "won", (json_int_t)f->claims_won, "lost", (json_int_t)f->claims_lost);
}
