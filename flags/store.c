/* The flag store. See store.h.
 *
 * Two hiredis async contexts on the control loop: `cmd` for reads and writes,
 * `sub` for PSUBSCRIBE (keyspace notifications) and SUBSCRIBE (the events
 * channel). hiredis 0.14 has no timeouts: connect and command timeouts are our
 * own ev_timers. Replies are matched to the connection "epoch" they were sent
 * on, so a reply that arrives for an older connection is dropped. */
#include "flags/store.h"

#include "flags/audit.h"
#include "proxy/log.h"
#include "routing/route.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CAS_ATTEMPTS 3

/* Compare-and-set of a route: KEYS[1] the hash, KEYS[2] the test-user set.
 * ARGV: expected version ("" = any, "0" = only if the hash has none), channel,
 * message, n, n field/value pairs, nadd, members..., nrem, members...
 * Atomic: either everything is written and published, or CONFLICT. */
static const char CAS_SCRIPT[] =
    "local v = redis.call('HGET', KEYS[1], 'version') or '0'\n"
    "if ARGV[1] ~= '' and v ~= ARGV[1] then return redis.error_reply('CONFLICT version ' .. v) end\n"
    "local i = 4\n"
    "local n = tonumber(ARGV[i]); i = i + 1\n"
    "local kv = {}\n"
    "for j = 1, n do kv[#kv + 1] = ARGV[i]; kv[#kv + 1] = ARGV[i + 1]; i = i + 2 end\n"
    "if n > 0 then redis.call('HSET', KEYS[1], unpack(kv)) end\n"
    "n = tonumber(ARGV[i]); i = i + 1\n"
    "for j = 1, n do redis.call('SADD', KEYS[2], ARGV[i]); i = i + 1 end\n"
    "n = tonumber(ARGV[i]); i = i + 1\n"
    "for j = 1, n do redis.call('SREM', KEYS[2], ARGV[i]); i = i + 1 end\n"
    "redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
    "return redis.call('HGET', KEYS[1], 'version')\n";

typedef struct pending_local {
    bool active;           /* a local change waits to be written to Redis */
    sy_flag_request_t req; /* op only; strings below */
    char actor[64];
    char reason[256];
} pending_local_t;

struct sy_flagstore {
    struct ev_loop *loop;
    sy_config_t *cfg;
    const sy_routes_t *routes;
    const sy_redis_conf_t *rc;
    sy_route_flags_t *cur;
    size_t n;
    sy_pool_flags_t *pcur;   /* one per config pool (only coloured ones live in Redis) */
    size_t npools;
    bool *pdirty;
    sy_flags_publish_fn publish;
    void *ud;

    redisAsyncContext *cmd, *sub;
    bool cmd_up, sub_up;
    uint64_t epoch;
    ev_timer reconnect_timer, connect_deadline, resync_timer, watchdog, dirty_timer;
    double backoff;
    bool *dirty;
    bool *reading;
    pending_local_t *pending;
    size_t sync_left;        /* reads left in the current full sync */
    bool full_sync;
    int outstanding;
    ev_tstamp last_progress;
    bool destroying;
    char **last_refusal;     /* per route: last refusal logged, to log each once */
    sy_audit_t *audit;       /* the record (NULL: none) */
    sy_flagstore_status_t st;
};

/* --- the config section --------------------------------------------------- */

static const sy_conf_field_t redis_fields[] = {
    {"address", SY_CT_STRING, offsetof(sy_redis_conf_t, address), NULL, 0, 0},
    {"prefix", SY_CT_STRING, offsetof(sy_redis_conf_t, prefix), "switchyard:", 0, 0},
    {"resync_interval", SY_CT_DURATION, offsetof(sy_redis_conf_t, resync_interval), "5s", 100, 3600000},
    {"connect_timeout", SY_CT_DURATION, offsetof(sy_redis_conf_t, connect_timeout), "2s", 10, 60000},
    {"command_timeout", SY_CT_DURATION, offsetof(sy_redis_conf_t, command_timeout), "2s", 10, 60000},
    {"db", SY_CT_INT, offsetof(sy_redis_conf_t, db), "0", 0, 15},
    {"set_notify_keyspace_events", SY_CT_BOOL, offsetof(sy_redis_conf_t, set_notify), "true", 0, 0},
};

static void redis_conf_destroy(void *p)
{
    sy_redis_conf_t *rc = p;
    if (rc == NULL)
        return;
    free(rc->address);
    free(rc->prefix);
    free(rc);
}

static int redis_conf_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_redis_conf_t *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = rc;
    sy_conf_defaults(redis_fields, SY_ARRAY_LEN(redis_fields), rc);
    if (sy_conf_fields(c, node, redis_fields, SY_ARRAY_LEN(redis_fields), rc, NULL) != 0)
        return SY_EINVAL;
    if (rc->address == NULL)
        return sy_conf_error(c, node, "redis needs an 'address' (host:port)");
    const char *why = NULL;
    if (sy_addr_parse(rc->address, &rc->addr, &why) != 0)
        return sy_conf_error(c, node, "bad redis address '%s': %s", rc->address, why);
    if (rc->prefix == NULL || strlen(rc->prefix) > 64 || strchr(rc->prefix, ' ') != NULL)
        return sy_conf_error(c, node, "redis prefix must be at most 64 bytes without spaces");
    return 0;
}

const sy_conf_section_t sy_redis_section = {
    .key = "redis",
    .required = false,
    .parse = redis_conf_parse,
    .destroy = redis_conf_destroy,
};

/* --- helpers ---------------------------------------------------------------- */

static void key_of(const sy_flagstore_t *s, size_t i, bool users, char *out, size_t cap)
{
    snprintf(out, cap, "%sroute:%s%s", s->rc->prefix, s->routes->routes[i].name, users ? ":test_users" : "");
}

static long route_index(const sy_flagstore_t *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->routes->routes[i].name) == len && memcmp(s->routes->routes[i].name, name, len) == 0)
            return (long)i;
    return -1;
}

static void set_error(sy_flagstore_t *s, const char *what, const char *detail)
{
    snprintf(s->st.last_error, sizeof(s->st.last_error), "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

static void do_publish(sy_flagstore_t *s)
{
    s->st.publishes++;
    s->publish(s->ud, s->cfg, s->cur, s->pcur);
}

/* --- the record ------------------------------------------------------------ */

static const char *op_kind(sy_flag_op_t op)
{
    switch (op) {
    case SY_OP_ROLLBACK:
        return "rollback";
    case SY_OP_RESUME:
        return "resume";
    case SY_OP_PROMOTE:
        return "promote";
    default:
        return "flag_change";
    }
}

/* One event with before and after as JSON (both references are taken). */
static void record_json(sy_flagstore_t *s, const char *kind, const char *name, const char *actor, const char *reason,
                        json_t *before, json_t *after, json_t *stats, const char *id)
{
    sy_audit_event_t ev = {.kind = kind, .route = name, .actor = actor, .reason = reason,
                           .before = before, .after = after, .stats = stats, .id = id};
    sy_audit_record(s->audit, &ev);
    json_decref(before);
    json_decref(after);
}

/* A route's flag change, with the flags before and after; stats borrowed, may be NULL. */
static void record_route(sy_flagstore_t *s, const char *kind, size_t i, const char *actor, const char *reason,
                         const sy_route_flags_t *before, const sy_route_flags_t *after, json_t *stats)
{
    if (s->audit != NULL)
        record_json(s, kind, s->routes->routes[i].name, actor, reason, sy_flags_to_json(before),
                    sy_flags_to_json(after), stats, NULL);
}

static json_t *pool_json(const sy_pool_flags_t *p);

/* A swap of pool j, recorded with the colour before and after. */
static void record_swap(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *before, const sy_pool_flags_t *after)
{
    if (s->audit != NULL)
        record_json(s, "swap", s->cfg->pools[j].name, after->actor, after->reason, pool_json(before),
                    pool_json(after), NULL, NULL);
}

/* A hand edit seen in Redis (before and after are taken): every instance sees
 * the same one, so its id is derived from what changed, and the record keeps it once. */
static void record_hand_edit(sy_flagstore_t *s, const char *what, const char *name, json_t *before, json_t *after)
{
    char *bt = json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS), *at = json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS);
    size_t n = strlen(s->rc->prefix) + strlen(what) + strlen(name) + (bt ? strlen(bt) : 0) + (at ? strlen(at) : 0) + 8;
    char *text = malloc(n);
    char id[37];
    if (text != NULL)
        snprintf(text, n, "%s%s:%s|%s|%s", s->rc->prefix, what, name, bt ? bt : "", at ? at : "");
    sy_audit_uuid(id, text); /* NULL text (no memory): a random id */
    record_json(s, "hand_edit", name, "hand edit", "changed in Redis directly, not through Switchyard", before,
                after, NULL, id);
    free(text);
    free(bt);
    free(at);
}

static json_t *pool_json(const sy_pool_flags_t *p)
{
    return json_pack("{s:s, s:I, s:s?, s:s?, s:s?}", "active", p->active == SY_GREEN ? "green" : "blue", "version",
                     (json_int_t)p->version, "actor", p->actor, "reason", p->reason, "updated_at", p->updated_at);
}

void sy_flagstore_set_audit(sy_flagstore_t *s, sy_audit_t *a)
{
    s->audit = a;
}

static void refuse_cb(void *ud, const char *route, const char *field, const char *value, const char *why)
{
    sy_flagstore_t *s = ud;
    s->st.refused++;
    long i = route ? route_index(s, route, strlen(route)) : -1;
    char line[600];
    snprintf(line, sizeof(line), "%s=%s", field, value);
    /* The periodic re-read sees a bad value again and again: log it once. */
    if (i >= 0 && s->last_refusal[i] != NULL && strcmp(s->last_refusal[i], line) == 0)
        return;
    if (i >= 0) {
        free(s->last_refusal[i]);
        s->last_refusal[i] = strdup(line);
    }
    sy_warn("redis: refused %s=\"%s\" on %sroute:%s: %s; the last good value stays", field, value, s->rc->prefix,
            route ? route : "?", why);
    if (s->audit != NULL)
        record_json(s, "refused_edit", route, "hand edit", why, NULL, json_pack("{s:s, s:s}", "field", field, "value", value),
                    NULL, NULL);
}

/* Commands: count what is outstanding for the watchdog. */
static int send_cmd(sy_flagstore_t *s, redisCallbackFn *fn, void *priv, int argc, const char **argv,
                    const size_t *lens)
{
    if (s->cmd == NULL || !s->cmd_up)
        return -1;
    if (redisAsyncCommandArgv(s->cmd, fn, priv, argc, argv, lens) != REDIS_OK)
        return -1;
    if (s->outstanding++ == 0)
        s->last_progress = ev_now(s->loop);
    return 0;
}

static void got_reply(sy_flagstore_t *s)
{
    if (s->outstanding > 0)
        s->outstanding--;
    s->last_progress = ev_now(s->loop);
}

typedef struct cas_ctx cas_ctx_t;

static void connect_all(sy_flagstore_t *s);
static void read_route(sy_flagstore_t *s, size_t i);
static void read_route_ctx(sy_flagstore_t *s, size_t i, cas_ctx_t *retry);
static void retry_after_read(sy_flagstore_t *s, cas_ctx_t *c);
static void cas_fail(cas_ctx_t *c, const char *why);
static void mark_dirty(sy_flagstore_t *s, long i);
static void read_pool(sy_flagstore_t *s, size_t j);
/* cas_write's mode: a change to record when written, or the seeding of a missing key. */
enum { CAS_RECORD = 1, CAS_SEED = 2 };
static void cas_write(sy_flagstore_t *s, size_t i, const sy_route_flags_t *next, const sy_flag_request_t *req,
                      const char *expect, int attempt, int mode, sy_flags_done_fn done, void *ud);

static void schedule_reconnect(sy_flagstore_t *s)
{
    if (s->destroying || ev_is_active(&s->reconnect_timer))
        return;
    ev_timer_set(&s->reconnect_timer, s->backoff, 0.);
    ev_timer_start(s->loop, &s->reconnect_timer);
    s->backoff = s->backoff * 2 > 5.0 ? 5.0 : s->backoff * 2;
}

/* Drops both connections (a timeout or an error on one): reconnect both. */
static void drop_all(sy_flagstore_t *s, const char *why)
{
    if (s->cmd_up || s->sub_up)
        sy_warn("redis %s: %s; routing stays on the last good flags while reconnecting", s->rc->address, why);
    set_error(s, why, NULL);
    s->epoch++;
    ev_timer_stop(s->loop, &s->connect_deadline);
    s->cmd_up = s->sub_up = false;
    s->st.connected = false;
    s->outstanding = 0;
    redisAsyncContext *c = s->cmd, *b = s->sub;
    s->cmd = s->sub = NULL;
    if (c != NULL)
        redisAsyncFree(c);
    if (b != NULL)
        redisAsyncFree(b);
    memset(s->reading, 0, s->n * sizeof(bool));
    s->sync_left = 0;
    schedule_reconnect(s);
}

/* --- reads -------------------------------------------------------------------- */

typedef struct read_ctx {
    sy_flagstore_t *s;
    uint64_t epoch;
    size_t route;
    char **kv;
    size_t nkv;
    bool have_hash;
    bool orphan;       /* SMEMBERS was never sent: on_hash frees it */
    cas_ctx_t *retry;  /* a write that met a CONFLICT: retried on what this read finds */
} read_ctx_t;

static void read_ctx_free(read_ctx_t *r)
{
    for (size_t i = 0; i < r->nkv; i++)
        free(r->kv[i]);
    free(r->kv);
    free(r);
}

static void sync_done_one(sy_flagstore_t *s)
{
    if (s->sync_left > 0 && --s->sync_left == 0 && s->full_sync) {
        s->full_sync = false;
        if (!s->st.synced)
            sy_info("redis: flags of %zu routes loaded from %s", s->n, s->rc->address);
        s->st.synced = true;
        s->st.syncs++;
    }
}

static void seed_route(sy_flagstore_t *s, size_t i)
{
    /* The key does not exist: write the config's values, once, for all
     * instances (expected version "0": a concurrent seed loses with CONFLICT). */
    sy_route_flags_t seeded;
    if (sy_route_flags_copy(&seeded, &s->cur[i]) != 0)
        return;
    char now[32];
    sy_flags_now(now);
    free(seeded.actor);
    free(seeded.reason);
    free(seeded.updated_at);
    seeded.actor = strdup("switchyard");
    seeded.reason = strdup("seeded from the config");
    seeded.updated_at = strdup(now);
    seeded.version = 1;
    sy_flag_request_t req = {.op = SY_OP_TEST_USERS, .add = (const char *const *)seeded.test_users,
                             .nadd = seeded.ntest_users};
    if (seeded.actor && seeded.reason && seeded.updated_at)
        cas_write(s, i, &seeded, &req, "0", MAX_CAS_ATTEMPTS, CAS_SEED, NULL, NULL);
    sy_route_flags_clear(&seeded);
}

static void apply_read(sy_flagstore_t *s, size_t i, read_ctx_t *r, redisReply *members)
{
    if (r->nkv == 0) {
        seed_route(s, i);
        return;
    }
    sy_route_flags_t next;
    int refused = sy_flags_apply_hash(s->routes->routes[i].name, &s->cur[i], (const char *const *)r->kv, r->nkv,
                                      &next, refuse_cb, s);
    if (refused < 0)
        return;
    const char **mem = calloc(members->elements + 1, sizeof(char *));
    if (mem == NULL) {
        sy_route_flags_clear(&next);
        return;
    }
    size_t nm = 0;
    for (size_t k = 0; k < members->elements; k++)
        if (members->element[k]->type == REDIS_REPLY_STRING)
            mem[nm++] = members->element[k]->str;
    int rc = sy_flags_apply_members(s->routes->routes[i].name, &next, mem, nm, refuse_cb, s);
    free(mem);
    if (rc < 0) {
        sy_route_flags_clear(&next);
        return;
    }
    if (refused == 0 && rc == 0 && s->last_refusal[i] != NULL) {
        free(s->last_refusal[i]);
        s->last_refusal[i] = NULL;
    }
    /* A change made here while Redis was away (a rollback) goes first. */
    if (s->pending[i].active) {
        pending_local_t *p = &s->pending[i];
        p->req.actor = p->actor;
        p->req.reason = p->reason;
        char now[32];
        sy_flags_now(now);
        p->req.now = now;
        sy_route_flags_t after;
        const char *err = NULL;
        if (sy_flags_op(&next, &p->req, &after, &err) == 0) {
            char expect[24];
            snprintf(expect, sizeof(expect), "%llu", (unsigned long long)next.version);
            sy_info("redis: writing the local %s of route %s", p->req.op == SY_OP_ROLLBACK ? "rollback" : "change",
                    s->routes->routes[i].name);
            cas_write(s, i, &after, &p->req, expect, MAX_CAS_ATTEMPTS, 0, NULL, NULL); /* recorded when applied */
            sy_route_flags_clear(&after);
        }
        sy_route_flags_clear(&next);
        return;
    }
    bool differs = sy_flags_routing_differs(&s->cur[i], &next);
    /* Switchyard always bumps the version; a change without a new version was
     * made by hand (after the first read: before it, the config's values are no edit). */
    if (differs && s->audit != NULL && next.version == s->cur[i].version && strcmp(s->cur[i].source, "config") != 0)
        record_hand_edit(s, "route:", s->routes->routes[i].name, sy_flags_to_json(&s->cur[i]),
                         sy_flags_to_json(&next));
    sy_route_flags_clear(&s->cur[i]);
    s->cur[i] = next;
    if (differs) {
        sy_info("flags: route %s now state=%s percent_bp=%d test_users=%zu (version %llu, by %s)",
                s->routes->routes[i].name, sy_state_name(next.state), next.percent_bp, next.ntest_users,
                (unsigned long long)next.version, next.actor ? next.actor : "hand edit");
        do_publish(s);
    }
}

static void on_members(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    read_ctx_t *r = priv;
    sy_flagstore_t *s = r->s;
    cas_ctx_t *retry = r->retry;
    bool live = !s->destroying && r->epoch == s->epoch;
    bool applied = false;
    redisReply *rep = reply;
    if (live) {
        got_reply(s);
        if (retry == NULL)
            s->reading[r->route] = false;
        if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && r->have_hash) {
            apply_read(s, r->route, r, rep);
            applied = true;
        } else if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
            set_error(s, "SMEMBERS", rep->str);
        }
        if (retry == NULL)
            sync_done_one(s);
    }
    size_t route = r->route;
    read_ctx_free(r);
    if (retry != NULL) {
        if (applied)
            retry_after_read(s, retry);
        else
            cas_fail(retry, s->destroying ? "shutting down" : "redis went away during the write");
        return;
    }
    /* Dirtied again while the read was on its way: read once more. */
    if (live && s->dirty[route])
        mark_dirty(s, (long)route);
}

static void on_hash(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    read_ctx_t *r = priv;
    sy_flagstore_t *s = r->s;
    if (r->orphan) {
        cas_ctx_t *retry = r->retry;
        read_ctx_free(r);
        if (retry != NULL)
            cas_fail(retry, "redis went away during the write");
        return;
    }
    if (s->destroying || r->epoch != s->epoch)
        return; /* the SMEMBERS callback frees r */
    got_reply(s);
    redisReply *rep = reply;
    if (rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        set_error(s, "HGETALL", rep->str);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY)
        return;
    r->kv = calloc(rep->elements + 1, sizeof(char *));
    if (r->kv == NULL)
        return;
    for (size_t k = 0; k < rep->elements; k++) {
        redisReply *e = rep->element[k];
        r->kv[r->nkv] = strndup(e->type == REDIS_REPLY_STRING ? e->str : "", e->type == REDIS_REPLY_STRING ? e->len : 0);
        if (r->kv[r->nkv] == NULL)
            return;
        r->nkv++;
    }
    r->have_hash = true;
}

/* Reads a route's hash and test users (pipelined). With `retry`, the read serves
 * a write that met a CONFLICT and does not count as a sync read. */
static void read_route_ctx(sy_flagstore_t *s, size_t i, cas_ctx_t *retry)
{
    if (!s->cmd_up || (retry == NULL && s->reading[i])) {
        if (retry != NULL)
            cas_fail(retry, "redis is unavailable");
        return;
    }
    read_ctx_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        if (retry != NULL)
            cas_fail(retry, "out of memory");
        return;
    }
    r->s = s;
    r->epoch = s->epoch;
    r->route = i;
    r->retry = retry;
    char hkey[256], skey[256];
    key_of(s, i, false, hkey, sizeof(hkey));
    key_of(s, i, true, skey, sizeof(skey));
    const char *a1[] = {"HGETALL", hkey};
    const char *a2[] = {"SMEMBERS", skey};
    /* Pipelined: SMEMBERS's reply comes after HGETALL's, and owns r. */
    if (send_cmd(s, on_hash, r, 2, a1, NULL) != 0) {
        free(r);
        if (retry != NULL)
            cas_fail(retry, "redis is unavailable");
        return;
    }
    if (send_cmd(s, on_members, r, 2, a2, NULL) != 0) {
        r->orphan = true; /* the connection is going away: on_hash frees r (and fails the retry) */
        return;
    }
    if (retry == NULL) {
        s->reading[i] = true;
        s->dirty[i] = false;
        s->sync_left++;
    }
}

static void read_route(sy_flagstore_t *s, size_t i)
{
    read_route_ctx(s, i, NULL);
}

static void sync_all(sy_flagstore_t *s)
{
    s->full_sync = true;
    for (size_t i = 0; i < s->n; i++) {
        s->dirty[i] = true;
        read_route(s, i);
    }
    for (size_t j = 0; j < s->npools; j++)
        if (s->cfg->pools[j].colored)
            read_pool(s, j);
}

static void dirty_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)loop;
    (void)revents;
    for (size_t i = 0; i < s->n; i++)
        if (s->dirty[i])
            read_route(s, i);
    for (size_t j = 0; j < s->npools; j++)
        if (s->pdirty[j])
            read_pool(s, j);
}

static void mark_dirty(sy_flagstore_t *s, long i)
{
    if (i >= 0)
        s->dirty[i] = true;
    if (!ev_is_active(&s->dirty_timer)) {
        ev_timer_set(&s->dirty_timer, 0., 0.);
        ev_timer_start(s->loop, &s->dirty_timer);
    }
}

/* --- writes ------------------------------------------------------------------ */

struct cas_ctx {
    sy_flagstore_t *s;
    uint64_t epoch;
    size_t route;
    int attempts_left;
    bool seed;               /* writing the config's values into a missing key */
    bool record;             /* a change to record when written (not a seed, not one recorded already) */
    sy_flag_request_t req;   /* strings and lists copied below */
    char actor[64], reason[256], now[32];
    char **add, **rem;
    size_t nadd, nrem;
    sy_route_flags_t next;
    sy_flags_done_fn done;
    void *ud;
};

static void cas_free(cas_ctx_t *c)
{
    for (size_t k = 0; k < c->nadd; k++)
        free(c->add[k]);
    for (size_t k = 0; k < c->nrem; k++)
        free(c->rem[k]);
    free(c->add);
    free(c->rem);
    sy_route_flags_clear(&c->next);
    free(c);
}

static void finish(sy_flags_done_fn done, void *ud, int status, const char *err, const sy_route_flags_t *res)
{
    if (done != NULL)
        done(ud, status, err, res);
}

static void cas_fail(cas_ctx_t *c, const char *why)
{
    finish(c->done, c->ud, 503, why, NULL);
    cas_free(c);
}

/* After a CONFLICT the route was read again: recompute the change on it. */
static void retry_after_read(sy_flagstore_t *s, cas_ctx_t *c)
{
    sy_route_flags_t after;
    const char *err = NULL;
    int rc = sy_flags_op(&s->cur[c->route], &c->req, &after, &err);
    if (rc != 0) {
        finish(c->done, c->ud, rc == SY_EDECLINED ? 409 : rc == SY_EINVAL ? 400 : 500, err ? err : "out of memory",
               NULL);
        cas_free(c);
        return;
    }
    char expect[24];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)s->cur[c->route].version);
    cas_write(s, c->route, &after, &c->req, expect, c->attempts_left, c->record ? CAS_RECORD : 0, c->done, c->ud);
    sy_route_flags_clear(&after);
    cas_free(c);
}

static void on_cas(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    cas_ctx_t *c = priv;
    sy_flagstore_t *s = c->s;
    if (s->destroying) {
        finish(c->done, c->ud, 503, "shutting down", NULL);
        cas_free(c);
        return;
    }
    redisReply *rep = reply;
    if (c->epoch == s->epoch)
        got_reply(s);
    if (rep == NULL || c->epoch != s->epoch) {
        finish(c->done, c->ud, 503, "redis went away during the write", NULL);
        cas_free(c);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "CONFLICT", 8) == 0) {
        if (c->seed) {
            /* A seed lost to another instance's seed: just read what it wrote. */
            mark_dirty(s, (long)c->route);
            cas_free(c);
            return;
        }
        if (--c->attempts_left <= 0) {
            finish(c->done, c->ud, 409, "the route kept changing under the write; try again", NULL);
            cas_free(c);
            return;
        }
        read_route_ctx(s, c->route, c); /* the read owns c now */
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        set_error(s, "EVAL", rep->str);
        sy_warn("redis: write to route %s failed: %s", s->routes->routes[c->route].name, rep->str);
        finish(c->done, c->ud, 503, "redis refused the write", NULL);
        cas_free(c);
        return;
    }
    /* Written: this is the new truth; publish it without waiting for the watch. */
    size_t i = c->route;
    s->pending[i].active = false;
    bool differs = sy_flags_routing_differs(&s->cur[i], &c->next);
    sy_route_flags_t tmp = s->cur[i];
    s->cur[i] = c->next;
    c->next = tmp;
    s->cur[i].source = "redis";
    if (c->record)
        record_route(s, op_kind(c->req.op), i, c->req.actor, c->req.reason, &c->next, &s->cur[i], NULL);
    if (differs)
        do_publish(s);
    finish(c->done, c->ud, 200, NULL, &s->cur[i]);
    cas_free(c);
}

static char **copy_list(const char *const *v, size_t n)
{
    char **out = calloc(n + 1, sizeof(char *));
    for (size_t k = 0; out != NULL && k < n; k++)
        if ((out[k] = strdup(v[k])) == NULL)
            return out; /* partial: counted by the caller through the NULL */
    return out;
}

static void cas_write(sy_flagstore_t *s, size_t i, const sy_route_flags_t *next, const sy_flag_request_t *req,
                      const char *expect, int attempts, int mode, sy_flags_done_fn done, void *ud)
{
    cas_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL || sy_route_flags_copy(&c->next, next) != 0) {
        free(c);
        finish(done, ud, 500, "out of memory", NULL);
        return;
    }
    c->s = s;
    c->epoch = s->epoch;
    c->route = i;
    c->attempts_left = attempts;
    /* Not "expect == 0": a change made before the first write of a route also
     * expects version 0, and must be retried (and answered) on a conflict. */
    c->seed = (mode & CAS_SEED) != 0;
    c->record = (mode & CAS_RECORD) != 0;
    c->done = done;
    c->ud = ud;
    c->req = *req;
    snprintf(c->actor, sizeof(c->actor), "%s", req->actor ? req->actor : "");
    snprintf(c->reason, sizeof(c->reason), "%s", req->reason ? req->reason : "");
    snprintf(c->now, sizeof(c->now), "%s", req->now ? req->now : "");
    c->req.actor = c->actor;
    c->req.reason = c->reason;
    c->req.now = c->now;
    c->add = copy_list(req->add, req->nadd);
    c->rem = copy_list(req->remove, req->nremove);
    c->nadd = req->op == SY_OP_TEST_USERS ? req->nadd : 0;
    c->nrem = req->op == SY_OP_TEST_USERS ? req->nremove : 0;
    c->req.add = (const char *const *)c->add;
    c->req.remove = (const char *const *)c->rem;
    if (c->add == NULL || c->rem == NULL) {
        finish(done, ud, 500, "out of memory", NULL);
        cas_free(c);
        return;
    }

    char hkey[256], skey[256], channel[128], bp[16], prev[16], ver[24], nfields[8], nadd[16], nrem[16];
    key_of(s, i, false, hkey, sizeof(hkey));
    key_of(s, i, true, skey, sizeof(skey));
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    snprintf(bp, sizeof(bp), "%d", next->percent_bp);
    snprintf(prev, sizeof(prev), "%d", next->prev_percent_bp);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)next->version);
    snprintf(nadd, sizeof(nadd), "%zu", c->nadd);
    snprintf(nrem, sizeof(nrem), "%zu", c->nrem);
    const char *fields[] = {
        "state", sy_state_name(next->state), "percent_bp", bp, "prev_percent_bp", prev, "salt", next->salt,
        "version", ver, "actor", next->actor ? next->actor : "", "reason", next->reason ? next->reason : "",
        "updated_at", next->updated_at ? next->updated_at : "",
    };
    size_t nf = SY_ARRAY_LEN(fields) / 2;
    snprintf(nfields, sizeof(nfields), "%zu", nf);
    size_t argc = 3 + 2 + 4 + 1 + SY_ARRAY_LEN(fields) + 1 + c->nadd + 1 + c->nrem;
    const char **argv = calloc(argc, sizeof(char *));
    if (argv == NULL) {
        finish(done, ud, 500, "out of memory", NULL);
        cas_free(c);
        return;
    }
    size_t a = 0;
    argv[a++] = "EVAL";
    argv[a++] = CAS_SCRIPT;
    argv[a++] = "2";
    argv[a++] = hkey;
    argv[a++] = skey;
    argv[a++] = expect;
    argv[a++] = channel;
    argv[a++] = s->routes->routes[i].name;
    argv[a++] = nfields;
    for (size_t k = 0; k < SY_ARRAY_LEN(fields); k++)
        argv[a++] = fields[k];
    argv[a++] = nadd;
    for (size_t k = 0; k < c->nadd; k++)
        argv[a++] = c->add[k];
    argv[a++] = nrem;
    for (size_t k = 0; k < c->nrem; k++)
        argv[a++] = c->rem[k];
    int rc = send_cmd(s, on_cas, c, (int)a, argv, NULL);
    free(argv);
    if (rc != 0) {
        finish(done, ud, 503, "redis is unavailable", NULL);
        cas_free(c);
    }
}

void sy_flagstore_request(sy_flagstore_t *s, const char *route, const sy_flag_request_t *req, sy_flags_done_fn done,
                          void *ud)
{
    long i = route_index(s, route, strlen(route));
    if (i < 0) {
        finish(done, ud, 404, "no such route", NULL);
        return;
    }
    sy_route_flags_t next;
    const char *err = NULL;
    int rc = sy_flags_op(&s->cur[i], req, &next, &err);
    if (rc != 0) {
        finish(done, ud, rc == SY_EDECLINED ? 409 : rc == SY_EINVAL ? 400 : 500, err ? err : "out of memory", NULL);
        return;
    }
    if (s->rc == NULL) {
        /* No Redis: the config is the store; the change lives until restart. */
        bool differs = sy_flags_routing_differs(&s->cur[i], &next);
        record_route(s, op_kind(req->op), (size_t)i, req->actor, req->reason, &s->cur[i], &next, NULL);
        sy_route_flags_clear(&s->cur[i]);
        s->cur[i] = next;
        if (differs)
            do_publish(s);
        finish(done, ud, 200, NULL, &s->cur[i]);
        return;
    }
    if (!s->cmd_up) {
        if (req->op != SY_OP_ROLLBACK) {
            sy_route_flags_clear(&next);
            finish(done, ud, 503, "redis is unavailable: flags not changed (a rollback would still apply)", NULL);
            return;
        }
        /* A rollback cannot wait: apply it here now, write it when Redis is back. */
        pending_local_t *p = &s->pending[i];
        p->active = true;
        p->req = *req;
        snprintf(p->actor, sizeof(p->actor), "%s", req->actor ? req->actor : "");
        snprintf(p->reason, sizeof(p->reason), "%s", req->reason ? req->reason : "");
        p->req.add = p->req.remove = NULL;
        p->req.nadd = p->req.nremove = 0;
        record_route(s, "rollback", (size_t)i, req->actor, req->reason, &s->cur[i], &next, NULL);
        sy_route_flags_clear(&s->cur[i]);
        s->cur[i] = next;
        s->cur[i].source = "local (redis write pending)";
        do_publish(s);
        sy_warn("flags: route %s rolled back locally; Redis is unavailable, the write is retried on reconnect",
                route);
        finish(done, ud, 200, NULL, &s->cur[i]);
        return;
    }
    char expect[24];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)s->cur[i].version);
    cas_write(s, (size_t)i, &next, req, expect, MAX_CAS_ATTEMPTS, CAS_RECORD, done, ud);
    sy_route_flags_clear(&next);
}

bool sy_flagstore_trip(sy_flagstore_t *s, const char *route, const char *reason, json_t *stats)
{
    long i = route_index(s, route, strlen(route));
    if (i < 0 || s->cur[i].state == SY_STATE_TRIPPED || s->cur[i].state == SY_STATE_OFF)
        return false;
    char now[32];
    sy_flags_now(now);
    sy_flag_request_t req = {.op = SY_OP_ROLLBACK, .actor = "switchyard", .reason = reason, .now = now};
    sy_route_flags_t next;
    const char *err = NULL;
    if (sy_flags_op(&s->cur[i], &req, &next, &err) != 0) {
        sy_error("trip of route %s could not be applied: %s", route, err ? err : "out of memory");
        return false;
    }
    record_route(s, "trip", (size_t)i, "switchyard", reason, &s->cur[i], &next, stats);
    sy_route_flags_clear(&s->cur[i]);
    s->cur[i] = next;
    s->cur[i].source = s->rc ? "local (redis write pending)" : "config";
    do_publish(s); /* the workers route everyone to legacy from now on */
    if (s->rc == NULL)
        return true;
    pending_local_t *p = &s->pending[i];
    p->active = true;
    p->req = req;
    snprintf(p->actor, sizeof(p->actor), "switchyard");
    snprintf(p->reason, sizeof(p->reason), "%s", reason);
    /* The write goes through a fresh read: the change is recomputed on what
     * Redis holds, then compare-and-set (retried after reconnect if need be). */
    if (s->cmd_up)
        mark_dirty(s, i);
    return true;
}

/* --- pools (blue-green) ------------------------------------------------------- */

static long pool_index(const sy_flagstore_t *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->npools; i++)
        if (s->cfg->pools[i].colored && strlen(s->cfg->pools[i].name) == len &&
            memcmp(s->cfg->pools[i].name, name, len) == 0)
            return (long)i;
    return -1;
}

static void pool_key(const sy_flagstore_t *s, size_t j, char *out, size_t cap)
{
    snprintf(out, cap, "%spool:%s", s->rc->prefix, s->cfg->pools[j].name);
}

static const char *const color_names[2] = {"blue", "green"};

typedef struct pool_ctx {
    sy_flagstore_t *s;
    uint64_t epoch;
    size_t pool;
    sy_pool_flags_t next;
    bool seed;
    sy_flags_done_fn done;
    void *ud;
} pool_ctx_t;

static void pool_cas(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *next, const char *expect, bool seed,
                     sy_flags_done_fn done, void *ud);

static void on_pool_cas(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    pool_ctx_t *c = priv;
    sy_flagstore_t *s = c->s;
    redisReply *rep = reply;
    if (!s->destroying && c->epoch == s->epoch)
        got_reply(s);
    if (s->destroying || rep == NULL || c->epoch != s->epoch) {
        finish(c->done, c->ud, 503, s->destroying ? "shutting down" : "redis went away during the write", NULL);
    } else if (rep->type == REDIS_REPLY_ERROR) {
        if (!c->seed)
            finish(c->done, c->ud, 409, "the pool changed at the same time; try again", NULL);
        s->pdirty[c->pool] = true;
        mark_dirty(s, -1);
    } else {
        sy_pool_flags_t old = s->pcur[c->pool];
        bool differs = old.active != c->next.active;
        s->pcur[c->pool] = c->next;
        c->next = old;
        s->pcur[c->pool].source = "redis";
        if (!c->seed)
            record_swap(s, c->pool, &c->next, &s->pcur[c->pool]);
        if (differs) {
            sy_info("pool %s: active colour is now %s (by %s)", s->cfg->pools[c->pool].name,
                    color_names[s->pcur[c->pool].active], s->pcur[c->pool].actor ? s->pcur[c->pool].actor : "?");
            do_publish(s);
        }
        finish(c->done, c->ud, 200, NULL, NULL);
    }
    sy_pool_flags_clear(&c->next);
    free(c);
}

static void pool_cas(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *next, const char *expect, bool seed,
                     sy_flags_done_fn done, void *ud)
{
    pool_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL || sy_pool_flags_copy(&c->next, next) != 0) {
        free(c);
        finish(done, ud, 500, "out of memory", NULL);
        return;
    }
    c->s = s;
    c->epoch = s->epoch;
    c->pool = j;
    c->seed = seed;
    c->done = done;
    c->ud = ud;
    char hkey[256], skey[264], channel[128], msg[128], ver[24];
    pool_key(s, j, hkey, sizeof(hkey));
    snprintf(skey, sizeof(skey), "%s:unused", hkey);
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    snprintf(msg, sizeof(msg), "pool:%s", s->cfg->pools[j].name);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)next->version);
    const char *argv[] = {"EVAL", CAS_SCRIPT, "2", hkey, skey, expect, channel, msg, "5",
                          "active", color_names[next->active], "version", ver,
                          "actor", next->actor ? next->actor : "", "reason", next->reason ? next->reason : "",
                          "updated_at", next->updated_at ? next->updated_at : "", "0", "0"};
    if (send_cmd(s, on_pool_cas, c, (int)SY_ARRAY_LEN(argv), argv, NULL) != 0) {
        finish(done, ud, 503, "redis is unavailable", NULL);
        sy_pool_flags_clear(&c->next);
        free(c);
    }
}

typedef struct pool_read {
    sy_flagstore_t *s;
    uint64_t epoch;
    size_t pool;
} pool_read_t;

static void on_pool_hash(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    pool_read_t *r = priv;
    sy_flagstore_t *s = r->s;
    redisReply *rep = reply;
    if (s->destroying || r->epoch != s->epoch || rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        free(r);
        return;
    }
    got_reply(s);
    size_t j = r->pool;
    free(r);
    sy_pool_flags_t next;
    if (sy_pool_flags_copy(&next, &s->pcur[j]) != 0)
        return;
    if (rep->elements == 0) {
        /* Missing: seed from the config, once for all instances. */
        char now[32];
        sy_flags_now(now);
        free(next.actor);
        free(next.reason);
        free(next.updated_at);
        next.actor = strdup("switchyard");
        next.reason = strdup("seeded from the config");
        next.updated_at = strdup(now);
        next.version = 1;
        pool_cas(s, j, &next, "0", true, NULL, NULL);
        sy_pool_flags_clear(&next);
        return;
    }
    for (size_t k = 0; k + 1 < rep->elements; k += 2) {
        const char *f = rep->element[k]->str, *v = rep->element[k + 1]->str;
        if (f == NULL || v == NULL)
            continue;
        if (strcmp(f, "active") == 0) {
            if (strcmp(v, "blue") == 0)
                next.active = SY_BLUE;
            else if (strcmp(v, "green") == 0)
                next.active = SY_GREEN;
            else {
                s->st.refused++;
                sy_warn("redis: refused active=\"%s\" on %spool:%s: active must be blue or green; the last good "
                        "value stays", v, s->rc->prefix, s->cfg->pools[j].name);
            }
        } else if (strcmp(f, "version") == 0) {
            next.version = strtoull(v, NULL, 10);
        } else if (strcmp(f, "actor") == 0 || strcmp(f, "reason") == 0 || strcmp(f, "updated_at") == 0) {
            char **dst = f[0] == 'a' ? &next.actor : f[0] == 'r' ? &next.reason : &next.updated_at;
            free(*dst);
            *dst = strdup(v);
        }
    }
    next.source = "redis";
    bool differs = next.active != s->pcur[j].active;
    if (differs && s->audit != NULL && next.version == s->pcur[j].version && strcmp(s->pcur[j].source, "config") != 0)
        record_hand_edit(s, "pool:", s->cfg->pools[j].name, pool_json(&s->pcur[j]), pool_json(&next));
    sy_pool_flags_clear(&s->pcur[j]);
    s->pcur[j] = next;
    if (differs) {
        sy_info("pool %s: active colour is now %s", s->cfg->pools[j].name, color_names[next.active]);
        do_publish(s);
    }
}

static void read_pool(sy_flagstore_t *s, size_t j)
{
    if (!s->cmd_up)
        return;
    pool_read_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    r->s = s;
    r->epoch = s->epoch;
    r->pool = j;
    char key[256];
    pool_key(s, j, key, sizeof(key));
    const char *argv[] = {"HGETALL", key};
    if (send_cmd(s, on_pool_hash, r, 2, argv, NULL) != 0)
        free(r);
    s->pdirty[j] = false;
}

void sy_flagstore_swap(sy_flagstore_t *s, const char *pool, int to, const char *actor, const char *reason,
                       sy_flags_done_fn done, void *ud)
{
    long j = -1;
    for (size_t i = 0; i < s->npools; i++)
        if (strcmp(s->cfg->pools[i].name, pool) == 0)
            j = (long)i;
    if (j < 0) {
        finish(done, ud, 404, "no such pool", NULL);
        return;
    }
    if (!s->cfg->pools[j].colored) {
        finish(done, ud, 400, "the pool has no colours (colors: {blue, green})", NULL);
        return;
    }
    sy_pool_flags_t next;
    if (sy_pool_flags_copy(&next, &s->pcur[j]) != 0) {
        finish(done, ud, 500, "out of memory", NULL);
        return;
    }
    char now[32];
    sy_flags_now(now);
    next.active = to < 0 ? !s->pcur[j].active : to;
    next.version = s->pcur[j].version + 1;
    free(next.actor);
    free(next.reason);
    free(next.updated_at);
    next.actor = strdup(actor ? actor : "unknown");
    next.reason = strdup(reason ? reason : "");
    next.updated_at = strdup(now);
    if (s->rc == NULL) {
        record_swap(s, (size_t)j, &s->pcur[j], &next);
        sy_pool_flags_clear(&s->pcur[j]);
        s->pcur[j] = next;
        do_publish(s);
        finish(done, ud, 200, NULL, NULL);
        return;
    }
    if (!s->cmd_up) {
        sy_pool_flags_clear(&next);
        finish(done, ud, 503, "redis is unavailable: the swap is not made (every instance must agree)", NULL);
        return;
    }
    char expect[24];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)s->pcur[j].version);
    pool_cas(s, (size_t)j, &next, expect, false, done, ud);
    sy_pool_flags_clear(&next);
}

const sy_pool_flags_t *sy_flagstore_pools(const sy_flagstore_t *s)
{
    return s->pcur;
}

/* --- connection ---------------------------------------------------------------- */

static void on_notify(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    (void)priv;
    sy_flagstore_t *s = ac->data;
    redisReply *r = reply;
    if (s == NULL || s->destroying || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    const char *kind = r->element[0]->str;
    if (kind == NULL)
        return;
    if (strcmp(kind, "pmessage") == 0 && r->elements >= 4) {
        /* __keyspace@0__:switchyard:route:NAME[:test_users] */
        const char *ch = r->element[2]->str;
        const char *k = ch ? strchr(ch, ':') : NULL;
        size_t plen = strlen(s->rc->prefix);
        if (k != NULL && strncmp(k + 1, s->rc->prefix, plen) == 0 && strncmp(k + 1 + plen, "pool:", 5) == 0) {
            long j = pool_index(s, k + 1 + plen + 5, strlen(k + 1 + plen + 5));
            if (j >= 0) {
                s->pdirty[j] = true;
                mark_dirty(s, -1);
            }
            return;
        }
        if (k == NULL || strncmp(k + 1, s->rc->prefix, plen) != 0 || strncmp(k + 1 + plen, "route:", 6) != 0)
            return;
        const char *name = k + 1 + plen + 6;
        const char *end = strstr(name, ":test_users");
        mark_dirty(s, route_index(s, name, end ? (size_t)(end - name) : strlen(name)));
    } else if (strcmp(kind, "message") == 0 && r->elements >= 3 && r->element[2]->str != NULL) {
        if (r->element[2]->len > 5 && strncmp(r->element[2]->str, "pool:", 5) == 0) {
            long j = pool_index(s, r->element[2]->str + 5, r->element[2]->len - 5);
            if (j >= 0) {
                s->pdirty[j] = true;
                mark_dirty(s, -1);
            }
            return;
        }
        mark_dirty(s, route_index(s, r->element[2]->str, r->element[2]->len));
    } else if (strcmp(kind, "psubscribe") == 0) {
        sy_debug("redis: watching keyspace notifications");
    }
}

static void on_config_set(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    sy_flagstore_t *s = priv;
    redisReply *r = reply;
    if (s->destroying || r == NULL)
        return;
    got_reply(s);
    if (r->type == REDIS_REPLY_ERROR) {
        sy_warn("redis: cannot enable keyspace notifications (%s); hand edits apply within resync_interval", r->str);
        s->st.notifications = false;
    } else {
        sy_info("redis: keyspace notifications enabled");
        s->st.notifications = true;
    }
}

static void on_config_get(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    sy_flagstore_t *s = priv;
    redisReply *r = reply;
    if (s->destroying || r == NULL)
        return;
    got_reply(s);
    const char *cur = "";
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->str != NULL)
        cur = r->element[1]->str;
    else if (r->type == REDIS_REPLY_ERROR) {
        sy_warn("redis: cannot read notify-keyspace-events (%s); hand edits apply within resync_interval", r->str);
        return;
    }
    bool k = strchr(cur, 'K') != NULL, all = strchr(cur, 'A') != NULL;
    bool h = all || strchr(cur, 'h') != NULL, st = all || strchr(cur, 's') != NULL;
    if (k && h && st) {
        s->st.notifications = true;
        return;
    }
    if (!s->rc->set_notify) {
        sy_warn("redis: keyspace notifications are off (notify-keyspace-events=\"%s\") and set_notify_keyspace_events "
                "is false; hand edits apply within resync_interval", cur);
        return;
    }
    char want[64];
    snprintf(want, sizeof(want), "%s%s%s%s", cur, k ? "" : "K", h ? "" : "h", st ? "" : "s");
    const char *argv[] = {"CONFIG", "SET", "notify-keyspace-events", want};
    send_cmd(s, on_config_set, s, 4, argv, NULL);
}

static void on_selected(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    sy_flagstore_t *s = priv;
    redisReply *r = reply;
    if (s->destroying || r == NULL)
        return;
    got_reply(s);
    if (r->type == REDIS_REPLY_ERROR)
        set_error(s, "SELECT", r->str);
}

static void start_session(sy_flagstore_t *s)
{
    /* Both connections are up: enable notifications, subscribe, read it all. */
    ev_timer_stop(s->loop, &s->connect_deadline);
    s->backoff = 0.1;
    s->st.connected = true;
    s->st.last_error[0] = '\0';
    sy_info("redis: connected to %s", s->rc->address);
    char db[8];
    snprintf(db, sizeof(db), "%lld", (long long)s->rc->db);
    const char *sel[] = {"SELECT", db};
    send_cmd(s, on_selected, s, 2, sel, NULL);
    const char *get[] = {"CONFIG", "GET", "notify-keyspace-events"};
    send_cmd(s, on_config_get, s, 3, get, NULL);
    char pattern[256], ppattern[256], channel[128];
    snprintf(pattern, sizeof(pattern), "__keyspace@%lld__:%sroute:*", (long long)s->rc->db, s->rc->prefix);
    snprintf(ppattern, sizeof(ppattern), "__keyspace@%lld__:%spool:*", (long long)s->rc->db, s->rc->prefix);
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    const char *psub[] = {"PSUBSCRIBE", pattern};
    const char *ppsub[] = {"PSUBSCRIBE", ppattern};
    redisAsyncCommandArgv(s->sub, on_notify, NULL, 2, ppsub, NULL);
    const char *sub[] = {"SUBSCRIBE", channel};
    redisAsyncCommandArgv(s->sub, on_notify, NULL, 2, psub, NULL);
    redisAsyncCommandArgv(s->sub, on_notify, NULL, 2, sub, NULL);
    sync_all(s);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sy_flagstore_t *s = ac->data;
    if (s == NULL || s->destroying)
        return;
    bool is_cmd = ac == s->cmd;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        if (is_cmd)
            s->cmd = NULL;
        else
            s->sub = NULL;
        if (s->st.last_error[0] == '\0' || s->st.reconnects % 20 == 0)
            sy_warn("redis %s: cannot connect (%s); routing stays on the last good flags", s->rc->address,
                    ac->errstr[0] ? ac->errstr : "error");
        set_error(s, "connect", ac->errstr);
        drop_all(s, "connect failed");
        return;
    }
    if (is_cmd)
        s->cmd_up = true;
    else
        s->sub_up = true;
    if (s->cmd_up && s->sub_up)
        start_session(s);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sy_flagstore_t *s = ac->data;
    (void)status;
    if (s == NULL || s->destroying)
        return;
    if (ac == s->cmd)
        s->cmd = NULL;
    if (ac == s->sub)
        s->sub = NULL;
    drop_all(s, ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *open_ctx(sy_flagstore_t *s)
{
    char ip[64];
    sy_addr_format_ip((const struct sockaddr *)&s->rc->addr.ss, ip, sizeof(ip));
    int port = ntohs(((const struct sockaddr_in *)&s->rc->addr.ss)->sin_port);
    redisAsyncContext *ac = redisAsyncConnect(ip, port);
    if (ac == NULL)
        return NULL;
    if (ac->err) {
        set_error(s, "connect", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    redisLibevAttach(s->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void connect_all(sy_flagstore_t *s)
{
    s->epoch++;
    s->cmd = open_ctx(s);
    s->sub = s->cmd ? open_ctx(s) : NULL;
    if (s->cmd == NULL || s->sub == NULL) {
        drop_all(s, "cannot start a connection");
        return;
    }
    ev_timer_stop(s->loop, &s->connect_deadline);
    ev_timer_set(&s->connect_deadline, (double)s->rc->connect_timeout / 1e3, 0.);
    ev_timer_start(s->loop, &s->connect_deadline);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)loop;
    (void)revents;
    s->st.reconnects++;
    connect_all(s);
}

static void connect_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)loop;
    (void)revents;
    if (!(s->cmd_up && s->sub_up))
        drop_all(s, "connect timed out (redis.connect_timeout)");
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)revents;
    if (s->outstanding > 0 && ev_now(loop) - s->last_progress > (double)s->rc->command_timeout / 1e3)
        drop_all(s, "no reply in time (redis.command_timeout)");
}

static void resync_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)loop;
    (void)revents;
    if (s->cmd_up)
        sync_all(s);
}

/* --- life cycle ------------------------------------------------------------------ */

static int load_config(sy_flagstore_t *s, sy_config_t *cfg)
{
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    sy_routing_t *def = sy_routing_from_config(cfg);
    if (rs == NULL || def == NULL) {
        sy_routing_free(def);
        return SY_ENOMEM;
    }
    bool live = sy_config_ext(cfg, "redis") != NULL;
    sy_route_flags_t *cur = calloc(rs->n + 1, sizeof(*cur));
    bool *dirty = calloc(rs->n + 1, sizeof(bool)), *reading = calloc(rs->n + 1, sizeof(bool));
    pending_local_t *pending = calloc(rs->n + 1, sizeof(*pending));
    char **last = calloc(rs->n + 1, sizeof(char *));
    sy_pool_flags_t *pcur = calloc(cfg->npools + 1, sizeof(*pcur));
    bool *pdirty = calloc(cfg->npools + 1, sizeof(bool));
    if (cur == NULL || dirty == NULL || reading == NULL || pending == NULL || last == NULL || pcur == NULL ||
        pdirty == NULL)
        goto fail;
    for (size_t j = 0; j < cfg->npools; j++) {
        pcur[j].active = cfg->pools[j].active_default;
        pcur[j].source = "config";
        /* A pool that existed keeps its live colour until Redis is read again. */
        for (size_t o = 0; live && s->cfg != NULL && o < s->npools; o++)
            if (strcmp(s->cfg->pools[o].name, cfg->pools[j].name) == 0 && s->cfg->pools[o].colored &&
                cfg->pools[j].colored && sy_pool_flags_copy(&pcur[j], &s->pcur[o]) != 0)
                goto fail;
    }
    for (size_t i = 0; i < rs->n; i++) {
        /* With Redis, a route that existed before keeps its live flags (and pending
         * writes) until Redis is read again; without it the config is the source. */
        long old = s->routes && live ? route_index(s, rs->routes[i].name, strlen(rs->routes[i].name)) : -1;
        const sy_route_flags_t *src = old >= 0 ? &s->cur[old] : &def->flags[i];
        if (sy_route_flags_copy(&cur[i], src) != 0)
            goto fail;
        if (old >= 0)
            pending[i] = s->pending[old];
    }
    sy_routing_free(def);
    for (size_t i = 0; s->cur != NULL && i < s->n; i++) {
        sy_route_flags_clear(&s->cur[i]);
        free(s->last_refusal[i]);
    }
    free(s->cur);
    free(s->dirty);
    free(s->reading);
    free(s->pending);
    free(s->last_refusal);
    for (size_t j = 0; s->pcur != NULL && j < s->npools; j++)
        sy_pool_flags_clear(&s->pcur[j]);
    free(s->pcur);
    free(s->pdirty);
    s->pcur = pcur;
    s->pdirty = pdirty;
    s->npools = cfg->npools;
    if (s->cfg != NULL)
        sy_config_release(s->cfg);
    s->cfg = sy_config_ref(cfg);
    s->routes = rs;
    s->rc = sy_config_ext(cfg, "redis");
    s->cur = cur;
    s->n = rs->n;
    s->dirty = dirty;
    s->reading = reading;
    s->pending = pending;
    s->last_refusal = last;
    s->st.configured = s->rc != NULL;
    return 0;
fail:
    for (size_t i = 0; cur != NULL && i < rs->n; i++)
        sy_route_flags_clear(&cur[i]);
    free(cur);
    free(dirty);
    free(reading);
    free(pending);
    free(last);
    for (size_t j = 0; pcur != NULL && j < cfg->npools; j++)
        sy_pool_flags_clear(&pcur[j]);
    free(pcur);
    free(pdirty);
    sy_routing_free(def);
    return SY_ENOMEM;
}

sy_flagstore_t *sy_flagstore_create(struct ev_loop *loop, sy_config_t *cfg, sy_flags_publish_fn publish, void *ud)
{
    sy_flagstore_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->publish = publish;
    s->ud = ud;
    s->backoff = 0.1;
    if (load_config(s, cfg) != 0) {
        free(s);
        return NULL;
    }
    ev_init(&s->reconnect_timer, reconnect_cb);
    ev_init(&s->connect_deadline, connect_deadline_cb);
    ev_init(&s->dirty_timer, dirty_cb);
    ev_init(&s->resync_timer, resync_cb);
    ev_init(&s->watchdog, watchdog_cb);
    s->reconnect_timer.data = s->connect_deadline.data = s->dirty_timer.data = s;
    s->resync_timer.data = s->watchdog.data = s;
    do_publish(s);
    if (s->rc != NULL) {
        double every = (double)s->rc->resync_interval / 1e3;
        ev_timer_set(&s->resync_timer, every, every);
        ev_timer_start(loop, &s->resync_timer);
        ev_timer_set(&s->watchdog, 0.25, 0.25);
        ev_timer_start(loop, &s->watchdog);
        connect_all(s);
    }
    return s;
}

void sy_flagstore_reload(sy_flagstore_t *s, sy_config_t *cfg)
{
    const sy_redis_conf_t *old = s->rc;
    bool same_redis = old != NULL && sy_config_ext(cfg, "redis") != NULL &&
                      strcmp(old->address, ((sy_redis_conf_t *)sy_config_ext(cfg, "redis"))->address) == 0;
    if (old != NULL && !same_redis)
        sy_warn("reload: a change of the redis section takes effect after a restart");
    sy_config_t *keep = sy_config_ref(s->cfg);
    if (load_config(s, cfg) != 0) {
        sy_config_release(keep);
        sy_error("reload: out of memory loading flags; the previous flags stay");
        return;
    }
    if (old != NULL && !same_redis) {
        /* Keep talking to the Redis we are connected to until restart. */
        sy_config_release(s->cfg);
        s->cfg = keep;
        s->rc = old;
        s->st.configured = true;
    } else {
        sy_config_release(keep);
    }
    do_publish(s);
    if (s->cmd_up)
        sync_all(s);
}

/* Writes still waiting for Redis are answered with 503 from here, so destroy
 * the store before whoever waits for those answers. */
void sy_flagstore_destroy(sy_flagstore_t *s)
{
    if (s == NULL)
        return;
    s->destroying = true;
    ev_timer_stop(s->loop, &s->reconnect_timer);
    ev_timer_stop(s->loop, &s->connect_deadline);
    ev_timer_stop(s->loop, &s->dirty_timer);
    ev_timer_stop(s->loop, &s->resync_timer);
    ev_timer_stop(s->loop, &s->watchdog);
    if (s->cmd != NULL)
        redisAsyncFree(s->cmd);
    if (s->sub != NULL)
        redisAsyncFree(s->sub);
    for (size_t i = 0; i < s->n; i++) {
        sy_route_flags_clear(&s->cur[i]);
        free(s->last_refusal[i]);
    }
    free(s->cur);
    free(s->dirty);
    free(s->reading);
    free(s->pending);
    free(s->last_refusal);
    for (size_t j = 0; j < s->npools; j++)
        sy_pool_flags_clear(&s->pcur[j]);
    free(s->pcur);
    free(s->pdirty);
    sy_config_release(s->cfg);
    free(s);
}

void sy_flagstore_status(const sy_flagstore_t *s, sy_flagstore_status_t *out)
{
    *out = s->st;
}

const sy_route_flags_t *sy_flagstore_flags(const sy_flagstore_t *s)
{
    return s->cur;
}

const sy_config_t *sy_flagstore_config(const sy_flagstore_t *s)
{
    return s->cfg;
}
