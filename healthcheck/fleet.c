/* The fleet's heartbeats in Redis. See fleet.h. */
#include "healthcheck/fleet.h"

#include "flags/redis.h"
#include "proxy/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <xxhash.h>
#include <yaml.h>

#define HEARTBEAT_EVERY 1.0
#define TTL_MS "5000"
#define STALE_MS 10000
#define MAX_INSTANCES 64

struct sy_fleet {
    struct ev_loop *loop;
    sy_trip_t *trip;
    sy_flagstore_t *store;
    const sy_monitor_t *monitor;
    char id[160], hash[20], started_at[32], version[32];
    int64_t started_ms;
    ev_timer tick;
    bool reading;      /* a read-back is in flight (its replies find f: the store goes first at destroy) */
    json_t *view;      /* the last read-back: an array of instance objects */
    int64_t view_ms;
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
static void hash_file(const char *path, char *out, size_t cap)
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
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:o}", "id", f->id, "version", f->version, "config_hash", f->hash,
                     "started_at", f->started_at, "at_ms", (json_int_t)now_ms(), "routes", routes);
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

/* scope: fleet: max_error_rate on new over the fleet's summed windows, with
 * min_requests summed too. Any instance may trip; the flip reaches the others
 * through Redis like any trip. */
static void judge(sy_fleet_t *f)
{
    const sy_config_t *cfg = sy_flagstore_config(f->store);
    const sy_trip_confs_t *tc = sy_trip_confs(cfg);
    const sy_route_flags_t *flags = sy_flagstore_flags(f->store);
    for (size_t i = 0; tc != NULL && flags != NULL && i < tc->n; i++) {
        const sy_trip_conf_t *c = &tc->routes[i];
        if (!c->enabled || !c->fleet_scope || c->max_error_rate <= 0 || flags[i].state != SY_STATE_RAMPING)
            continue;
        uint64_t req = 0, err = 0, lreq = 0, lerr = 0;
        size_t k, n = 0;
        json_t *in;
        json_array_foreach(f->view, k, in) {
            json_t *r = json_object_get(json_object_get(in, "routes"), c->route);
            json_t *nw = json_object_get(r, "new"), *lg = json_object_get(r, "legacy");
            req += (uint64_t)json_integer_value(json_object_get(nw, "window_requests"));
            err += (uint64_t)json_integer_value(json_object_get(nw, "window_errors"));
            lreq += (uint64_t)json_integer_value(json_object_get(lg, "window_requests"));
            lerr += (uint64_t)json_integer_value(json_object_get(lg, "window_errors"));
            n += r != NULL;
        }
        if (req < (uint64_t)c->min_requests || (double)err / (double)req <= c->max_error_rate)
            continue;
        char reason[256];
        snprintf(reason, sizeof(reason), "fleet:max_error_rate: new %.2f%% (%llu of %llu over %zu instances) > %.2f%%",
                 100.0 * (double)err / (double)req, (unsigned long long)err, (unsigned long long)req, n,
                 c->max_error_rate * 100);
        json_t *stats = json_pack("{s:s, s:s, s:I, s:{s:I, s:I}, s:{s:I, s:I}}", "rule", "max_error_rate", "scope",
                                  "fleet", "instances", (json_int_t)n, "legacy", "requests", (json_int_t)lreq, "errors",
                                  (json_int_t)lerr, "new", "requests", (json_int_t)req, "errors", (json_int_t)err);
        sy_warn("fleet: route %s trips on the fleet's sum: %s", c->route, reason);
        (void)sy_trip_fire(f->trip, c->route, "fleet:max_error_rate", reason, stats);
        json_decref(stats);
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

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
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
    json_t *self = self_json(f);
    char *text = self ? json_dumps(self, JSON_COMPACT) : NULL;
    json_decref(self);
    if (text == NULL)
        return;
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
                            sy_flagstore_t *store, const sy_monitor_t *monitor, sy_trip_t *trip)
{
    sy_fleet_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->loop = loop;
    f->store = store;
    f->monitor = monitor;
    f->trip = trip;
    snprintf(f->version, sizeof(f->version), "%s", version);
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(f->id, sizeof(f->id), "%s/%d", host, (int)getpid());
    hash_file(config_path, f->hash, sizeof(f->hash));
    f->started_ms = now_ms();
    time_t secs = (time_t)(f->started_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(f->started_at, sizeof(f->started_at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    ev_timer_init(&f->tick, tick_cb, 0., HEARTBEAT_EVERY);
    f->tick.data = f;
    ev_timer_start(loop, &f->tick);
    return f;
}

/* After the store: its Redis client answered every read in flight. */
void sy_fleet_destroy(sy_fleet_t *f)
{
    if (f == NULL)
        return;
    ev_timer_stop(f->loop, &f->tick);
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
    return json_pack("{s:I, s:s, s:s?, s:o, s:o}", "as_of_ms_ago", (json_int_t)(f->view ? now - f->view_ms : 0),
                     "self", f->id, "config_hash", common, "instances", insts, "routes", routes);
}
