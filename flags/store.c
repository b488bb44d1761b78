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
#define MAX_PENDING_ATTEMPTS 5 /* then again at the next read (resync or notification) */
#define MAX_QUEUED_WRITES 16   /* per route, the one in flight included */
#define MAX_REFUSALS 32        /* distinct refused values remembered per key */

/* Compare-and-set of a route: KEYS[1] the hash, KEYS[2] the test-user set.
 * ARGV: expected version ("" = any, "0" = only if the hash has none), channel,
 * message, n, n field/value pairs, nadd, members..., nrem, members...
 * Atomic: either everything is written and published, or CONFLICT. */
static const char CAS_SCRIPT[] =
    "local v = redis.call('HGET', KEYS[1], 'version')\n"
    "if not v or not string.match(v, '^%d+$') then v = '0' end\n"
    "if ARGV[1] ~= '' and tonumber(v) ~= tonumber(ARGV[1]) then return redis.error_reply('CONFLICT version ' .. v) end\n"
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

/* Adoption of a hand edit: KEYS[1] the hash, KEYS[2] the test-user set. ARGV:
 * expected version, the expected raw state, percent_bp, prev_percent_bp, salt
 * ("" for absent), expected number of test users, then the new version, actor,
 * reason, updated_at, channel, message. Stamps the hash only if it still holds
 * exactly what was read: the stamped version names those values. */
static const char ADOPT_SCRIPT[] =
    "local v = redis.call('HGET', KEYS[1], 'version')\n"
    "if not v or not string.match(v, '^%d+$') then v = '0' end\n"
    "if tonumber(v) ~= tonumber(ARGV[1]) then return redis.error_reply('CONFLICT version ' .. v) end\n"
    "local f = {'state', 'percent_bp', 'prev_percent_bp', 'salt'}\n"
    "for j = 1, 4 do\n"
    "  if (redis.call('HGET', KEYS[1], f[j]) or '') ~= ARGV[1 + j] then return redis.error_reply('CONFLICT ' .. f[j]) end\n"
    "end\n"
    "if redis.call('SCARD', KEYS[2]) ~= tonumber(ARGV[6]) then return redis.error_reply('CONFLICT test_users') end\n"
    "redis.call('HSET', KEYS[1], 'version', ARGV[7], 'actor', ARGV[8], 'reason', ARGV[9], 'updated_at', ARGV[10])\n"
    "redis.call('PUBLISH', ARGV[11], ARGV[12])\n"
    "return ARGV[7]\n";

/* The test users of a route, read only when there are at most ARGV[1] of them:
 * the set's size (an integer) when there are more, its members otherwise. */
static const char USERS_SCRIPT[] =
    "local n = redis.call('SCARD', KEYS[1])\n"
    "if n > tonumber(ARGV[1]) then return n end\n"
    "return redis.call('SMEMBERS', KEYS[1])\n";

/* A refused value still in Redis: logged, counted and recorded once, shown in
 * /status until Redis holds something else. */
typedef struct refusal {
    char *field, *value, *why, *in_force;
    char since[32];
    bool seen;
} refusal_t;

typedef struct reflist {
    refusal_t *v;
    size_t n;
} reflist_t;

struct cas_ctx;

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
    struct cas_ctx **wq;     /* per route: its writes in order, the head in flight (one per key) */
    size_t *wqlen;
    bool *pending_queued;    /* per route: the pending local change has a write in wq */
    bool *adopting;          /* per route: a hand edit's adoption is in wq */
    sy_route_flags_t *stamped; /* per route: the flags at the last version written (by anyone) */
    sy_pool_flags_t *pstamped; /* per pool: the same (source NULL: not read yet) */
    bool *padopting;
    reflist_t *refs, *prefs; /* per route, per pool: refused values still in Redis */
    char ref_version[24];    /* the version of the key being read: in a refused edit's id */
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
    {"max_test_users", SY_CT_INT, offsetof(sy_redis_conf_t, max_test_users), "10000", 0, 1000000},
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

#define HAND_ACTOR "hand"
#define HAND_REASON "changed in Redis directly, not through Switchyard"

/* A hand edit seen in Redis and adopted (before and after are taken): the
 * instance whose compare-and-set stamped it with a new version records it, so
 * its id is derived from the key, that version and its time stamp: one event
 * per edit, however often the same values come back. */
static void record_hand_edit(sy_flagstore_t *s, const char *what, const char *name, uint64_t version,
                             const char *stamp, json_t *before, json_t *after)
{
    if (s->audit == NULL) {
        json_decref(before);
        json_decref(after);
        return;
    }
    char text[512], id[37];
    snprintf(text, sizeof(text), "%s%s%s|hand|%llu|%s", s->rc->prefix, what, name, (unsigned long long)version,
             stamp ? stamp : "");
    sy_audit_uuid(id, text);
    record_json(s, "hand_edit", name, HAND_ACTOR, HAND_REASON, before, after, NULL, id);
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

static void ref_clear(reflist_t *l)
{
    for (size_t k = 0; k < l->n; k++) {
        free(l->v[k].field);
        free(l->v[k].value);
        free(l->v[k].why);
        free(l->v[k].in_force);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* A read starts: what it does not refuse again is gone from Redis. */
static void ref_begin(reflist_t *l)
{
    for (size_t k = 0; k < l->n; k++)
        l->v[k].seen = false;
}

static void ref_end(reflist_t *l)
{
    size_t o = 0;
    for (size_t k = 0; k < l->n; k++) {
        if (l->v[k].seen) {
            l->v[o++] = l->v[k];
            continue;
        }
        free(l->v[k].field);
        free(l->v[k].value);
        free(l->v[k].why);
        free(l->v[k].in_force);
    }
    l->n = o;
}

static refusal_t *ref_find(reflist_t *l, const char *field, const char *value)
{
    for (size_t k = 0; k < l->n; k++)
        if (strcmp(l->v[k].field, field) == 0 && strncmp(l->v[k].value, value, 256) == 0)
            return &l->v[k];
    return NULL;
}

/* A refused (field, value) of key `what``name`: logged, counted and recorded
 * the first time a read sees it, not at every re-read. */
static void ref_note(sy_flagstore_t *s, reflist_t *l, const char *what, const char *name, const char *field,
                     const char *value, const char *why, const char *in_force, bool error_level)
{
    refusal_t *r = ref_find(l, field, value);
    if (r != NULL) {
        r->seen = true;
        return;
    }
    s->st.refused++;
    if (error_level)
        sy_error("redis: refused %s=\"%.256s\" on %s%s%s (a hand edit): %s; %s stays in force", field, value,
                 s->rc->prefix, what, name, why, in_force);
    else
        sy_warn("redis: refused %s=\"%.256s\" on %s%s%s (a hand edit): %s; %s stays in force", field, value,
                s->rc->prefix, what, name, why, in_force);
    if (s->audit != NULL) {
        /* Every instance sees the same refusal under the same version: one event. */
        char text[512], id[37];
        snprintf(text, sizeof(text), "%s%s%s|refused|%s|%.256s|%s", s->rc->prefix, what, name, field, value,
                 s->ref_version);
        sy_audit_uuid(id, text);
        record_json(s, "refused_edit", name, HAND_ACTOR, why, NULL,
                    json_pack("{s:s, s:s%, s:s}", "field", field, "value", value, strnlen(value, 256), "in_force",
                              in_force),
                    NULL, id);
    }
    if (l->n >= MAX_REFUSALS)
        return;
    refusal_t *nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
    if (nv == NULL)
        return;
    l->v = nv;
    r = &l->v[l->n];
    memset(r, 0, sizeof(*r));
    r->field = strdup(field);
    r->value = strndup(value, 256);
    r->why = strdup(why);
    r->in_force = strdup(in_force);
    if (r->field == NULL || r->value == NULL || r->why == NULL || r->in_force == NULL) {
        free(r->field);
        free(r->value);
        free(r->why);
        free(r->in_force);
        return;
    }
    sy_flags_now(r->since);
    r->seen = true;
    l->n++;
}

static json_t *ref_json(const reflist_t *l)
{
    json_t *out = json_array();
    for (size_t k = 0; out != NULL && k < l->n; k++)
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s, s:s}", "field", l->v[k].field, "value",
                                             l->v[k].value, "why", l->v[k].why, "since", l->v[k].since, "in_force",
                                             l->v[k].in_force));
    return out;
}

/* The value in force of a route's field, as text for the log and status. */
static void field_in_force(const sy_route_flags_t *f, const char *field, char *out, size_t cap)
{
    if (strcmp(field, "state") == 0)
        snprintf(out, cap, "state=%s", sy_state_name(f->state));
    else if (strcmp(field, "percent_bp") == 0)
        snprintf(out, cap, "percent_bp=%d", f->percent_bp);
    else if (strcmp(field, "prev_percent_bp") == 0)
        snprintf(out, cap, "prev_percent_bp=%d", f->prev_percent_bp);
    else if (strcmp(field, "salt") == 0)
        snprintf(out, cap, "salt=%s", f->salt ? f->salt : "");
    else if (strcmp(field, "test_users") == 0)
        snprintf(out, cap, "the previous %zu test users", f->ntest_users);
    else
        snprintf(out, cap, "the last good flags (version %llu)", (unsigned long long)f->version);
}

typedef struct refuse_ud {
    sy_flagstore_t *s;
    size_t i;
} refuse_ud_t;

static void refuse_cb(void *ud, const char *route, const char *field, const char *value, const char *why)
{
    refuse_ud_t *u = ud;
    char in_force[320];
    field_in_force(&u->s->cur[u->i], field, in_force, sizeof(in_force));
    ref_note(u->s, &u->s->refs[u->i], "route:", route, field, value, why, in_force, false);
}

json_t *sy_flagstore_route_refused(const sy_flagstore_t *s, size_t i)
{
    return i < s->n ? ref_json(&s->refs[i]) : json_array();
}

json_t *sy_flagstore_pool_refused(const sy_flagstore_t *s, size_t j)
{
    return j < s->npools ? ref_json(&s->prefs[j]) : json_array();
}

bool sy_pool_color_ready(const sy_pool_t *p, int color, char *why, size_t cap)
{
    for (size_t e = p->color_first[color]; e < p->color_first[color] + p->color_count[color]; e++) {
        sy_endpoint_t *ep = &p->endpoints[e];
        if (atomic_load(&ep->down) || atomic_load(&ep->probe_ok) < p->health.rise) {
            snprintf(why, cap, "%s endpoint %s has not passed %lld health probes in a row (%d so far)",
                     color ? "green" : "blue", ep->name, (long long)p->health.rise, atomic_load(&ep->probe_ok));
            return false;
        }
    }
    return true;
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
static void retry_after_read(sy_flagstore_t *s, cas_ctx_t *c, const sy_route_flags_t *base);
static void cas_fail(cas_ctx_t *c, const char *why);
static bool cas_gone(const cas_ctx_t *c);
static void mark_dirty(sy_flagstore_t *s, long i);
static void read_pool(sy_flagstore_t *s, size_t j);
/* cas_write's mode: a change to record when written, the seeding of a missing
 * key, the adoption of a hand edit (only version, actor, reason, updated_at are
 * written), or the local change that waits for Redis (pending). */
enum { CAS_RECORD = 1, CAS_SEED = 2, CAS_ADOPT = 4, CAS_PENDING = 8 };
static void cas_write(sy_flagstore_t *s, size_t i, const sy_route_flags_t *next, const sy_flag_request_t *req,
                      const char *expect, int attempts, int mode, sy_flags_done_fn done, void *ud);

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
    const char *wrong_type; /* "hash" or "set": the key holds another type */
    bool orphan;       /* the users read was never sent: on_hash frees it */
    cas_ctx_t *retry;  /* a write waiting for this read (after a CONFLICT, or queued) */
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
    seeded.version = s->cur[i].version + 1; /* versions only grow, even across a hand DEL */
    sy_flag_request_t req = {.op = SY_OP_TEST_USERS, .add = (const char *const *)seeded.test_users,
                             .nadd = seeded.ntest_users};
    if (seeded.actor && seeded.reason && seeded.updated_at)
        cas_write(s, i, &seeded, &req, "0", 1, CAS_SEED, NULL, NULL);
    sy_route_flags_clear(&seeded);
}

/* The local change (a rollback or trip made while Redis was away or before
 * the write) goes to Redis: computed on what Redis holds (base), at most one
 * such write per route at a time. */
static void start_pending(sy_flagstore_t *s, size_t i, const sy_route_flags_t *base)
{
    pending_local_t *p = &s->pending[i];
    p->req.actor = p->actor;
    p->req.reason = p->reason;
    char now[32];
    sy_flags_now(now);
    p->req.now = now;
    sy_route_flags_t after;
    const char *err = NULL;
    if (sy_flags_op(base, &p->req, &after, &err) != 0) {
        sy_error("redis: the local change of route %s cannot be written: %s", s->routes->routes[i].name,
                 err ? err : "out of memory");
        return;
    }
    char expect[24];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)base->version);
    sy_info("redis: writing the local %s of route %s", p->req.op == SY_OP_ROLLBACK ? "rollback" : "change",
            s->routes->routes[i].name);
    s->pending_queued[i] = true;
    cas_write(s, i, &after, &p->req, expect, MAX_PENDING_ATTEMPTS, CAS_PENDING, NULL, NULL); /* recorded when applied */
    sy_route_flags_clear(&after);
}

static const char *kv_get(const read_ctx_t *r, const char *field)
{
    for (size_t k = 0; k + 1 < r->nkv; k += 2)
        if (strcmp(r->kv[k], field) == 0)
            return r->kv[k + 1];
    return NULL;
}

static void set_stamped(sy_flagstore_t *s, size_t i, const sy_route_flags_t *f)
{
    sy_route_flags_t copy;
    if (sy_route_flags_copy(&copy, f) != 0)
        return;
    sy_route_flags_clear(&s->stamped[i]);
    s->stamped[i] = copy;
}

/* What a read found becomes the flags in force (next is taken). A change of
 * the routing flags without a new version (or with none valid) was made by
 * hand: it applies at once, and is adopted in Redis with a compare-and-set that
 * bumps the version and stamps actor=hand if Redis still holds exactly those
 * values; the instance that wins records it. One adoption per route at a time;
 * its end reads again, so an edit seen meanwhile is adopted next. */
static void commit_read(sy_flagstore_t *s, size_t i, sy_route_flags_t *next, const read_ctx_t *r, size_t nusers)
{
    bool version_ok = sy_flags_version_ok((const char *const *)r->kv, r->nkv);
    bool differs = sy_flags_routing_differs(&s->cur[i], next);
    const sy_route_flags_t *st = &s->stamped[i];
    /* Before the first read the config's values are no edit. */
    bool known = st->source != NULL;
    bool hand = known && (next->version == st->version || !version_ok) && sy_flags_routing_differs(st, next);
    if (!hand) {
        uint64_t keep = st->version;
        set_stamped(s, i, next);
        if (known && !version_ok)
            s->stamped[i].version = keep; /* a repaired version names nothing */
    }
    if (hand && !s->adopting[i]) {
        char now[32], expect[24];
        sy_flags_now(now);
        snprintf(expect, sizeof(expect), "%s", version_ok ? kv_get(r, "version") : "0");
        sy_route_flags_t adopted;
        if (sy_route_flags_copy(&adopted, next) == 0) {
            uint64_t v = next->version > st->version ? next->version : st->version;
            adopted.version = v + 1;
            free(adopted.actor);
            free(adopted.reason);
            free(adopted.updated_at);
            adopted.actor = strdup(HAND_ACTOR);
            adopted.reason = strdup(HAND_REASON);
            adopted.updated_at = strdup(now);
            const char *rs = kv_get(r, "state"), *rp = kv_get(r, "percent_bp"), *rv = kv_get(r, "prev_percent_bp"),
                       *rt = kv_get(r, "salt");
            char nu[24];
            snprintf(nu, sizeof(nu), "%zu", nusers);
            const char *raw[5] = {rs ? rs : "", rp ? rp : "", rv ? rv : "", rt ? rt : "", nu};
            sy_flag_request_t req = {.op = SY_OP_PERCENT, .actor = HAND_ACTOR, .reason = HAND_REASON, .now = now,
                                     .add = raw, .nadd = 5};
            if (adopted.actor && adopted.reason && adopted.updated_at) {
                s->adopting[i] = true;
                cas_write(s, i, &adopted, &req, expect, 1, CAS_ADOPT, NULL, (void *)st);
            }
            sy_route_flags_clear(&adopted);
        }
    }
    sy_route_flags_clear(&s->cur[i]);
    s->cur[i] = *next;
    if (differs) {
        sy_info("flags: route %s now state=%s percent_bp=%d test_users=%zu (version %llu, by %s)",
                s->routes->routes[i].name, sy_state_name(next->state), next->percent_bp, next->ntest_users,
                (unsigned long long)next->version, hand ? HAND_ACTOR : next->actor ? next->actor : "?");
        do_publish(s);
    }
}

static void apply_read(sy_flagstore_t *s, size_t i, read_ctx_t *r, redisReply *members, cas_ctx_t *retry)
{
    const char *name = s->routes->routes[i].name;
    reflist_t *l = &s->refs[i];
    const char *rv = kv_get(r, "version");
    if (rv != NULL)
        snprintf(s->ref_version, sizeof(s->ref_version), "%.20s", rv);
    else
        snprintf(s->ref_version, sizeof(s->ref_version), "last %llu", (unsigned long long)s->stamped[i].version);
    ref_begin(l);
    if (r->wrong_type != NULL) {
        char in_force[200];
        field_in_force(&s->cur[i], "", in_force, sizeof(in_force));
        ref_note(s, l, "route:", name, strcmp(r->wrong_type, "set") == 0 ? "test_users" : "key",
                 strcmp(r->wrong_type, "set") == 0 ? "(not a set)" : "(not a hash)",
                 strcmp(r->wrong_type, "set") == 0 ? "the :test_users key must be a set"
                                                   : "the route's key must be a hash",
                 in_force, false);
        ref_end(l);
        if (retry != NULL)
            cas_fail(retry, "the route's key in Redis has the wrong type");
        return;
    }
    if (r->nkv == 0 && retry == NULL && !s->pending[i].active) {
        ref_end(l);
        seed_route(s, i);
        return;
    }
    refuse_ud_t u = {s, i};
    sy_route_flags_t next;
    int refused = sy_flags_apply_hash(name, &s->cur[i], (const char *const *)r->kv, r->nkv, &next, refuse_cb, &u);
    if (refused < 0) {
        if (retry != NULL)
            cas_fail(retry, "out of memory");
        return;
    }
    size_t nusers = members->type == REDIS_REPLY_INTEGER ? (size_t)members->integer : members->elements;
    if (members->type == REDIS_REPLY_INTEGER) {
        /* Over the cap: refused like any bad edit, the previous set stays. */
        char v[48], why[96];
        snprintf(v, sizeof(v), "%lld members", members->integer);
        snprintf(why, sizeof(why), "more test users than redis.max_test_users (%lld)",
                 (long long)s->rc->max_test_users);
        refuse_cb(&u, name, "test_users", v, why);
    } else {
        const char **mem = calloc(members->elements + 1, sizeof(char *));
        if (mem == NULL) {
            sy_route_flags_clear(&next);
            ref_end(l);
            if (retry != NULL)
                cas_fail(retry, "out of memory");
            return;
        }
        size_t nm = 0;
        for (size_t k = 0; k < members->elements; k++)
            if (members->element[k]->type == REDIS_REPLY_STRING)
                mem[nm++] = members->element[k]->str;
        int rc = sy_flags_apply_members(name, &next, mem, nm, refuse_cb, &u);
        free(mem);
        if (rc < 0) {
            sy_route_flags_clear(&next);
            ref_end(l);
            if (retry != NULL)
                cas_fail(retry, "out of memory");
            return;
        }
    }
    ref_end(l);
    if (s->pending[i].active) {
        /* The local change stands until written; it is computed on what Redis holds. */
        if (retry != NULL)
            retry_after_read(s, retry, &next);
        else if (!s->pending_queued[i])
            start_pending(s, i, &next);
        sy_route_flags_clear(&next);
        return;
    }
    commit_read(s, i, &next, r, nusers);
    if (retry != NULL)
        retry_after_read(s, retry, &s->cur[i]);
}

static void on_members(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    read_ctx_t *r = priv;
    sy_flagstore_t *s = r->s;
    cas_ctx_t *retry = r->retry;
    /* A reload may have removed the route (a write for it is then gone). */
    bool same = !s->destroying && r->epoch == s->epoch;
    bool live = same && r->route < s->n && (retry == NULL || !cas_gone(retry));
    bool used = false;
    redisReply *rep = reply;
    if (same)
        got_reply(s);
    if (live) {
        if (retry == NULL)
            s->reading[r->route] = false;
        if (rep != NULL && rep->type == REDIS_REPLY_ERROR && strstr(rep->str, "WRONGTYPE") != NULL &&
            r->wrong_type == NULL)
            r->wrong_type = "set";
        if (rep != NULL && (r->have_hash || r->wrong_type != NULL) &&
            (rep->type == REDIS_REPLY_ARRAY || rep->type == REDIS_REPLY_INTEGER || r->wrong_type != NULL)) {
            apply_read(s, r->route, r, rep, retry);
            used = true;
        } else if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
            set_error(s, "test users", rep->str);
        }
        if (retry == NULL)
            sync_done_one(s);
    }
    size_t route = r->route;
    read_ctx_free(r);
    if (retry != NULL) {
        if (!used)
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
        return; /* the users callback frees r */
    got_reply(s);
    redisReply *rep = reply;
    if (rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strstr(rep->str, "WRONGTYPE") != NULL)
            r->wrong_type = "hash";
        else
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

/* Reads a route's hash and test users (pipelined; the users only up to the
 * cap). With `retry`, the read serves a write and does not count as a sync read. */
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
    char hkey[256], skey[256], cap[24];
    key_of(s, i, false, hkey, sizeof(hkey));
    key_of(s, i, true, skey, sizeof(skey));
    snprintf(cap, sizeof(cap), "%lld", (long long)s->rc->max_test_users);
    const char *a1[] = {"HGETALL", hkey};
    const char *a2[] = {"EVAL", USERS_SCRIPT, "1", skey, cap};
    /* Pipelined: the users' reply comes after HGETALL's, and owns r. */
    if (send_cmd(s, on_hash, r, 2, a1, NULL) != 0) {
        free(r);
        if (retry != NULL)
            cas_fail(retry, "redis is unavailable");
        return;
    }
    if (send_cmd(s, on_members, r, 5, a2, NULL) != 0) {
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

/* Every write to a route goes through its queue (s->wq[route]): the head is
 * the one write in flight for that key; it has at most `attempts_left`
 * compare-and-sets, with a growing pause and a fresh read between them. A
 * write queued behind another starts with a fresh read. */
struct cas_ctx {
    sy_flagstore_t *s;
    uint64_t epoch;
    size_t route;
    int attempts_left, attempt;
    int mode;                /* CAS_* */
    bool gone;               /* its route left the config (reload): answered and freed where it is */
    bool ready;              /* next and expect are computed: send at once */
    bool timer_on;
    ev_timer backoff;
    cas_ctx_t *qnext;
    sy_flag_request_t req;   /* strings and lists copied below */
    char actor[64], reason[256], now[32], expect[24];
    char **add, **rem;
    size_t nadd, nrem;
    sy_route_flags_t next;
    json_t *before;          /* CAS_ADOPT: the flags before the hand edit */
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
    json_decref(c->before);
    free(c);
}

static void finish(sy_flags_done_fn done, void *ud, int status, const char *err, const sy_route_flags_t *res)
{
    if (done != NULL)
        done(ud, status, err, res);
}

static void cas_send(cas_ctx_t *c);

/* The head of route i's queue starts: with a fresh read unless it is ready. */
static void wq_start(sy_flagstore_t *s, size_t i)
{
    cas_ctx_t *c = s->wq[i];
    if (c == NULL)
        return;
    if (c->ready)
        cas_send(c);
    else
        read_route_ctx(s, i, c);
}

/* The end of a write (answered with status): out of the queue, the next starts. */
static void cas_end(cas_ctx_t *c, int status, const char *err, const sy_route_flags_t *res)
{
    sy_flagstore_t *s = c->s;
    if (c->timer_on)
        ev_timer_stop(s->loop, &c->backoff);
    if (c->gone) {
        finish(c->done, c->ud, 503, "the route was removed from the config", NULL);
        cas_free(c);
        return;
    }
    size_t i = c->route;
    if (c->mode & CAS_PENDING)
        s->pending_queued[i] = false;
    if (c->mode & CAS_ADOPT) {
        /* Read again: a hand edit seen while this one was adopted is adopted next. */
        s->adopting[i] = false;
        if (!s->destroying)
            mark_dirty(s, (long)i);
    }
    finish(c->done, c->ud, status, err, res);
    bool was_head = s->wq[i] == c;
    for (cas_ctx_t **pp = &s->wq[i]; *pp != NULL; pp = &(*pp)->qnext)
        if (*pp == c) {
            *pp = c->qnext;
            s->wqlen[i]--;
            break;
        }
    cas_free(c);
    if (!s->destroying && was_head)
        wq_start(s, i);
}

static bool cas_gone(const cas_ctx_t *c)
{
    return c->gone;
}

static void cas_fail(cas_ctx_t *c, const char *why)
{
    cas_end(c, 503, why, NULL);
}

static void backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    cas_ctx_t *c = t->data;
    c->timer_on = false;
    read_route_ctx(c->s, c->route, c); /* the read owns c now */
}

/* After a read, a write (queued, or after a CONFLICT) is computed on what
 * Redis holds (base) and sent. */
static void retry_after_read(sy_flagstore_t *s, cas_ctx_t *c, const sy_route_flags_t *base)
{
    (void)s;
    if (c->mode & (CAS_SEED | CAS_ADOPT)) {
        /* Only meant for what was read when they were made: anything since makes them moot. */
        cas_end(c, 200, NULL, NULL);
        return;
    }
    sy_route_flags_t after;
    const char *err = NULL;
    int rc = sy_flags_op(base, &c->req, &after, &err);
    if (rc != 0) {
        cas_end(c, rc == SY_EDECLINED ? 409 : rc == SY_EINVAL ? 400 : 500, err ? err : "out of memory", NULL);
        return;
    }
    sy_route_flags_clear(&c->next);
    c->next = after;
    snprintf(c->expect, sizeof(c->expect), "%llu", (unsigned long long)base->version);
    c->ready = true;
    cas_send(c);
}

static void on_cas(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    cas_ctx_t *c = priv;
    sy_flagstore_t *s = c->s;
    if (c->gone || s->destroying) {
        cas_end(c, 503, "shutting down", NULL);
        return;
    }
    redisReply *rep = reply;
    if (c->epoch == s->epoch)
        got_reply(s);
    if (rep == NULL || c->epoch != s->epoch) {
        cas_fail(c, "redis went away during the write");
        return;
    }
    size_t i = c->route;
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "CONFLICT", 8) == 0) {
        if (c->mode & (CAS_SEED | CAS_ADOPT)) {
            /* Another instance seeded or adopted first: read what it wrote. */
            mark_dirty(s, (long)i);
            cas_end(c, 200, NULL, NULL);
            return;
        }
        if (--c->attempts_left <= 0) {
            if (c->mode & CAS_PENDING)
                sy_warn("redis: the local change of route %s met %d conflicts; written again at the next read",
                        s->routes->routes[i].name, c->attempt + 1);
            cas_end(c, 409, "the route kept changing under the write; try again", NULL);
            return;
        }
        /* A pause that grows (25, 50, 100 ms ...), then a fresh read and one more try. */
        c->attempt++;
        c->ready = false;
        double pause = 0.025 * (double)(1 << (c->attempt < 6 ? c->attempt - 1 : 5));
        pause *= 1.0 + (double)(rand() % 50) / 100.0;
        ev_timer_init(&c->backoff, backoff_cb, pause, 0.);
        c->backoff.data = c;
        c->timer_on = true;
        ev_timer_start(s->loop, &c->backoff);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        set_error(s, "EVAL", rep->str);
        sy_warn("redis: write to route %s failed: %s", s->routes->routes[i].name, rep->str);
        cas_fail(c, "redis refused the write");
        return;
    }
    if (c->mode & CAS_ADOPT) {
        /* The hand edit now has its own version, stamped by this instance: record it. */
        if (s->cur[i].version < c->next.version) {
            s->cur[i].version = c->next.version;
            char *a = strdup(HAND_ACTOR), *r = strdup(HAND_REASON), *u = strdup(c->next.updated_at);
            if (a && r && u) {
                free(s->cur[i].actor);
                free(s->cur[i].reason);
                free(s->cur[i].updated_at);
                s->cur[i].actor = a;
                s->cur[i].reason = r;
                s->cur[i].updated_at = u;
            } else {
                free(a);
                free(r);
                free(u);
            }
        }
        set_stamped(s, i, &c->next);
        sy_info("flags: route %s: the hand edit (state=%s percent_bp=%d test_users=%zu) is version %llu",
                s->routes->routes[i].name, sy_state_name(c->next.state), c->next.percent_bp, c->next.ntest_users,
                (unsigned long long)c->next.version);
        record_hand_edit(s, "route:", s->routes->routes[i].name, c->next.version, c->next.updated_at, c->before,
                         sy_flags_to_json(&c->next));
        c->before = NULL;
        cas_end(c, 200, NULL, NULL);
        return;
    }
    /* Written: this is the new truth; publish it without waiting for the watch. */
    s->pending[i].active = false;
    bool differs = sy_flags_routing_differs(&s->cur[i], &c->next);
    sy_route_flags_t tmp = s->cur[i];
    s->cur[i] = c->next;
    c->next = tmp;
    s->cur[i].source = "redis";
    set_stamped(s, i, &s->cur[i]);
    if (c->mode & CAS_RECORD)
        record_route(s, op_kind(c->req.op), i, c->req.actor, c->req.reason, &c->next, &s->cur[i], NULL);
    if (differs)
        do_publish(s);
    cas_end(c, 200, NULL, &s->cur[i]);
}

static char **copy_list(const char *const *v, size_t n)
{
    char **out = calloc(n + 1, sizeof(char *));
    for (size_t k = 0; out != NULL && k < n; k++)
        if ((out[k] = strdup(v[k])) == NULL)
            return out; /* partial: counted by the caller through the NULL */
    return out;
}

/* A write of route i: queued behind the one in flight (then recomputed on a
 * fresh read), or sent now with next and expect. For CAS_ADOPT, ud is the
 * flags before the hand edit (for the record) and done is NULL. */
static void cas_write(sy_flagstore_t *s, size_t i, const sy_route_flags_t *next, const sy_flag_request_t *req,
                      const char *expect, int attempts, int mode, sy_flags_done_fn done, void *ud)
{
    if (s->wqlen[i] >= MAX_QUEUED_WRITES) {
        if (mode & CAS_PENDING)
            s->pending_queued[i] = false;
        if (mode & CAS_ADOPT)
            s->adopting[i] = false;
        finish(done, ud, 503, "too many writes waiting for this route; try again", NULL);
        return;
    }
    cas_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL || sy_route_flags_copy(&c->next, next) != 0) {
        free(c);
        if (mode & CAS_PENDING)
            s->pending_queued[i] = false;
        if (mode & CAS_ADOPT)
            s->adopting[i] = false;
        finish(done, ud, 500, "out of memory", NULL);
        return;
    }
    c->s = s;
    c->epoch = s->epoch;
    c->route = i;
    c->attempts_left = attempts;
    c->mode = mode;
    if (mode & CAS_ADOPT) {
        c->before = sy_flags_to_json((const sy_route_flags_t *)ud);
        ud = NULL;
    }
    c->done = done;
    c->ud = ud;
    c->req = *req;
    snprintf(c->actor, sizeof(c->actor), "%s", req->actor ? req->actor : "");
    snprintf(c->reason, sizeof(c->reason), "%s", req->reason ? req->reason : "");
    snprintf(c->now, sizeof(c->now), "%s", req->now ? req->now : "");
    snprintf(c->expect, sizeof(c->expect), "%s", expect);
    c->req.actor = c->actor;
    c->req.reason = c->reason;
    c->req.now = c->now;
    c->add = copy_list(req->add, req->nadd);
    c->rem = copy_list(req->remove, req->nremove);
    c->nadd = req->op == SY_OP_TEST_USERS || (mode & CAS_ADOPT) ? req->nadd : 0;
    c->nrem = req->op == SY_OP_TEST_USERS ? req->nremove : 0;
    c->req.add = (const char *const *)c->add;
    c->req.remove = (const char *const *)c->rem;
    if (c->add == NULL || c->rem == NULL) {
        if (mode & CAS_PENDING)
            s->pending_queued[i] = false;
        if (mode & CAS_ADOPT)
            s->adopting[i] = false;
        finish(done, ud, 500, "out of memory", NULL);
        cas_free(c);
        return;
    }
    cas_ctx_t **pp = &s->wq[i];
    while (*pp != NULL)
        pp = &(*pp)->qnext;
    *pp = c;
    s->wqlen[i]++;
    if (s->wq[i] == c) {
        c->ready = true;
        cas_send(c);
    }
    /* else: started by wq_start when the writes before it end */
}

/* An adoption writes no routing field (see ADOPT_SCRIPT); c->add holds the raw
 * values read: state, percent_bp, prev_percent_bp, salt, number of test users. */
static void cas_send_adopt(cas_ctx_t *c)
{
    sy_flagstore_t *s = c->s;
    size_t i = c->route;
    char hkey[256], skey[256], channel[128], ver[24];
    key_of(s, i, false, hkey, sizeof(hkey));
    key_of(s, i, true, skey, sizeof(skey));
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)c->next.version);
    if (c->nadd != 5) {
        cas_end(c, 500, "out of memory", NULL);
        return;
    }
    const char *argv[] = {"EVAL", ADOPT_SCRIPT, "2", hkey, skey, c->expect, c->add[0], c->add[1], c->add[2],
                          c->add[3], c->add[4], ver, HAND_ACTOR, HAND_REASON,
                          c->next.updated_at ? c->next.updated_at : "", channel, s->routes->routes[i].name};
    if (send_cmd(s, on_cas, c, (int)SY_ARRAY_LEN(argv), argv, NULL) != 0)
        cas_fail(c, "redis is unavailable");
}

static void cas_send(cas_ctx_t *c)
{
    sy_flagstore_t *s = c->s;
    size_t i = c->route;
    const sy_route_flags_t *next = &c->next;
    c->epoch = s->epoch;
    /* Versions only grow (a repaired one restarts at 0 in Redis, not here). */
    if (!(c->mode & CAS_ADOPT) && s->stamped[i].source != NULL && c->next.version <= s->stamped[i].version)
        c->next.version = s->stamped[i].version + 1;
    if (c->mode & CAS_ADOPT) {
        cas_send_adopt(c);
        return;
    }
    char hkey[256], skey[256], channel[128], bp[16], prev[16], ver[24], nfields[8], nadd[16], nrem[16];
    key_of(s, i, false, hkey, sizeof(hkey));
    key_of(s, i, true, skey, sizeof(skey));
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    snprintf(bp, sizeof(bp), "%d", next->percent_bp);
    snprintf(prev, sizeof(prev), "%d", next->prev_percent_bp);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)next->version);
    size_t nadd_n = c->nadd, nrem_n = c->nrem;
    snprintf(nadd, sizeof(nadd), "%zu", nadd_n);
    snprintf(nrem, sizeof(nrem), "%zu", nrem_n);
    const char *meta[] = {
        "version", ver, "actor", next->actor ? next->actor : "", "reason", next->reason ? next->reason : "",
        "updated_at", next->updated_at ? next->updated_at : "",
        "state", sy_state_name(next->state), "percent_bp", bp, "prev_percent_bp", prev, "salt", next->salt,
    };
    size_t nmeta = SY_ARRAY_LEN(meta);
    snprintf(nfields, sizeof(nfields), "%zu", nmeta / 2);
    size_t argc = 3 + 2 + 4 + 1 + nmeta + 1 + nadd_n + 1 + nrem_n;
    const char **argv = calloc(argc, sizeof(char *));
    if (argv == NULL) {
        cas_end(c, 500, "out of memory", NULL);
        return;
    }
    size_t a = 0;
    argv[a++] = "EVAL";
    argv[a++] = CAS_SCRIPT;
    argv[a++] = "2";
    argv[a++] = hkey;
    argv[a++] = skey;
    argv[a++] = c->expect;
    argv[a++] = channel;
    argv[a++] = s->routes->routes[i].name;
    argv[a++] = nfields;
    for (size_t k = 0; k < nmeta; k++)
        argv[a++] = meta[k];
    argv[a++] = nadd;
    for (size_t k = 0; k < nadd_n; k++)
        argv[a++] = c->add[k];
    argv[a++] = nrem;
    for (size_t k = 0; k < nrem_n; k++)
        argv[a++] = c->rem[k];
    int rc = send_cmd(s, on_cas, c, (int)a, argv, NULL);
    free(argv);
    if (rc != 0)
        cas_fail(c, "redis is unavailable");
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
    if (s->rc != NULL && next.ntest_users > (size_t)s->rc->max_test_users) {
        sy_route_flags_clear(&next);
        finish(done, ud, 400, "more test users than redis.max_test_users", NULL);
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

bool sy_flagstore_trip(sy_flagstore_t *s, const char *route, const char *reason)
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
    bool adopt;           /* stamping a hand swap (see POOL_ADOPT_SCRIPT) */
    json_t *before;       /* adopt: the pool before the hand swap */
    sy_flags_done_fn done;
    void *ud;
} pool_ctx_t;

/* Adoption of a hand swap: KEYS[1] the pool hash; ARGV: expected version,
 * expected active, new version, actor, reason, updated_at, channel, message. */
static const char POOL_ADOPT_SCRIPT[] =
    "local v = redis.call('HGET', KEYS[1], 'version')\n"
    "if not v or not string.match(v, '^%d+$') then v = '0' end\n"
    "if tonumber(v) ~= tonumber(ARGV[1]) then return redis.error_reply('CONFLICT version ' .. v) end\n"
    "if redis.call('HGET', KEYS[1], 'active') ~= ARGV[2] then return redis.error_reply('CONFLICT active') end\n"
    "redis.call('HSET', KEYS[1], 'version', ARGV[3], 'actor', ARGV[4], 'reason', ARGV[5], 'updated_at', ARGV[6])\n"
    "redis.call('PUBLISH', ARGV[7], ARGV[8])\n"
    "return ARGV[3]\n";

static void set_pstamped(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *f)
{
    sy_pool_flags_t copy;
    if (sy_pool_flags_copy(&copy, f) != 0)
        return;
    sy_pool_flags_clear(&s->pstamped[j]);
    s->pstamped[j] = copy;
    s->pstamped[j].source = "redis";
}

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
    if (c->adopt) {
        s->padopting[c->pool] = false;
        if (!s->destroying && c->epoch == s->epoch && rep != NULL && rep->type != REDIS_REPLY_ERROR) {
            size_t j = c->pool;
            sy_pool_flags_t *cur = &s->pcur[j];
            if (cur->version < c->next.version) {
                sy_pool_flags_t old = *cur;
                *cur = c->next;
                cur->active = old.active;
                c->next = old;
                set_pstamped(s, j, cur);
                sy_info("pool %s: the hand swap to %s is version %llu", s->cfg->pools[j].name,
                        color_names[cur->active], (unsigned long long)cur->version);
                record_hand_edit(s, "pool:", s->cfg->pools[j].name, cur->version, cur->updated_at, c->before,
                                 pool_json(cur));
                c->before = NULL;
            }
        }
        if (!s->destroying) {
            /* Read again: a hand swap seen while this one was adopted is handled next. */
            s->pdirty[c->pool] = true;
            mark_dirty(s, -1);
        }
    } else if (s->destroying || rep == NULL || c->epoch != s->epoch) {
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
        set_pstamped(s, c->pool, &s->pcur[c->pool]);
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
    json_decref(c->before);
    free(c);
}

/* Stamps a hand swap seen in Redis (raw: the version read, "0" if invalid). */
static void pool_adopt(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *seen, const char *raw_version)
{
    pool_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->s = s;
    c->epoch = s->epoch;
    c->pool = j;
    c->adopt = true;
    char now[32], ver[24], hkey[256], channel[128], msg[128];
    sy_flags_now(now);
    uint64_t v = seen->version > s->pstamped[j].version ? seen->version : s->pstamped[j].version;
    c->next.active = seen->active;
    c->next.version = v + 1;
    c->next.actor = strdup(HAND_ACTOR);
    c->next.reason = strdup(HAND_REASON);
    c->next.updated_at = strdup(now);
    c->next.source = "redis";
    c->before = pool_json(&s->pstamped[j]);
    pool_key(s, j, hkey, sizeof(hkey));
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    snprintf(msg, sizeof(msg), "pool:%s", s->cfg->pools[j].name);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)c->next.version);
    const char *argv[] = {"EVAL", POOL_ADOPT_SCRIPT, "1", hkey, raw_version, color_names[seen->active], ver,
                          HAND_ACTOR, HAND_REASON, now, channel, msg};
    if (c->next.actor == NULL || c->next.reason == NULL || c->next.updated_at == NULL ||
        send_cmd(s, on_pool_cas, c, (int)SY_ARRAY_LEN(argv), argv, NULL) != 0) {
        sy_pool_flags_clear(&c->next);
        json_decref(c->before);
        free(c);
        return;
    }
    s->padopting[j] = true;
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
    reflist_t *l = &s->prefs[j];
    const char *name = s->cfg->pools[j].name, *raw_active = NULL, *raw_version = NULL;
    char in_force[64];
    snprintf(in_force, sizeof(in_force), "active=%s", color_names[s->pcur[j].active]);
    snprintf(s->ref_version, sizeof(s->ref_version), "none");
    for (size_t k = 0; k + 1 < rep->elements; k += 2)
        if (rep->element[k]->str != NULL && rep->element[k + 1]->str != NULL &&
            strcmp(rep->element[k]->str, "version") == 0)
            snprintf(s->ref_version, sizeof(s->ref_version), "%.20s", rep->element[k + 1]->str);
    ref_begin(l);
    for (size_t k = 0; k + 1 < rep->elements; k += 2) {
        const char *f = rep->element[k]->str, *v = rep->element[k + 1]->str;
        if (f == NULL || v == NULL)
            continue;
        if (strcmp(f, "active") == 0) {
            raw_active = v;
            if (strcmp(v, "blue") == 0)
                next.active = SY_BLUE;
            else if (strcmp(v, "green") == 0)
                next.active = SY_GREEN;
            else
                ref_note(s, l, "pool:", name, "active", v, "active must be blue or green", in_force, false);
        } else if (strcmp(f, "version") == 0) {
            raw_version = v;
        } else if (strcmp(f, "actor") == 0 || strcmp(f, "reason") == 0 || strcmp(f, "updated_at") == 0) {
            char **dst = f[0] == 'a' ? &next.actor : f[0] == 'r' ? &next.reason : &next.updated_at;
            free(*dst);
            *dst = strdup(v);
        }
    }
    /* A missing or invalid version is repaired: 0 here, rewritten by the next write. */
    bool version_ok = raw_version != NULL && raw_version[0] != '\0' && strlen(raw_version) <= 19 &&
                      strspn(raw_version, "0123456789") == strlen(raw_version);
    next.version = version_ok ? strtoull(raw_version, NULL, 10) : 0;
    next.source = "redis";
    const sy_pool_flags_t *st = &s->pstamped[j];
    bool hand = st->source != NULL && next.active != st->active && (next.version == st->version || !version_ok);
    if (hand) {
        /* A swap made in Redis by hand: the same health gate as `ctl swap`. A
         * refused one stays refused while Redis holds it (ctl swap overrides). */
        char why[256], full[300];
        refusal_t *prior = ref_find(l, "active", raw_active);
        if (prior != NULL) {
            prior->seen = true;
            next.active = s->pcur[j].active;
        } else if (!sy_pool_color_ready(&s->cfg->pools[j], next.active, why, sizeof(why))) {
            snprintf(full, sizeof(full), "swap refused: %s", why);
            ref_note(s, l, "pool:", name, "active", raw_active, full, in_force, true);
            next.active = s->pcur[j].active;
        } else if (!s->padopting[j]) {
            pool_adopt(s, j, &next, version_ok ? raw_version : "0");
        }
    } else {
        set_pstamped(s, j, &next);
    }
    ref_end(l);
    bool differs = next.active != s->pcur[j].active;
    sy_pool_flags_clear(&s->pcur[j]);
    s->pcur[j] = next;
    if (differs) {
        sy_info("pool %s: active colour is now %s (by %s)", name, color_names[next.active],
                hand ? HAND_ACTOR : next.actor ? next.actor : "?");
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

/* Frees the per-route and per-pool state (what load_config moved to the new
 * arrays was cleared). The writes still queued for a route that is gone are
 * answered now, except a head that hiredis holds (a reload): it is marked
 * gone, answered and freed by its callback. At destroy hiredis is freed first. */
static void free_route_state(sy_flagstore_t *s, bool reload)
{
    for (size_t i = 0; s->cur != NULL && i < s->n; i++) {
        sy_route_flags_clear(&s->cur[i]);
        sy_route_flags_clear(&s->stamped[i]);
        ref_clear(&s->refs[i]);
        cas_ctx_t *c = s->wq[i];
        s->wq[i] = NULL;
        for (bool head = true; c != NULL; head = false) {
            cas_ctx_t *nx = c->qnext;
            c->gone = true;
            c->qnext = NULL;
            if (!(head && reload && !c->timer_on))
                cas_end(c, 503, NULL, NULL);
            c = nx;
        }
    }
    for (size_t j = 0; s->pcur != NULL && j < s->npools; j++) {
        sy_pool_flags_clear(&s->pcur[j]);
        sy_pool_flags_clear(&s->pstamped[j]);
        ref_clear(&s->prefs[j]);
    }
    free(s->cur);
    free(s->dirty);
    free(s->reading);
    free(s->pending);
    free(s->wq);
    free(s->wqlen);
    free(s->pending_queued);
    free(s->adopting);
    free(s->stamped);
    free(s->refs);
    free(s->prefs);
    free(s->pcur);
    free(s->pstamped);
    free(s->pdirty);
    free(s->padopting);
}

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
    cas_ctx_t **wq = calloc(rs->n + 1, sizeof(*wq));
    size_t *wqlen = calloc(rs->n + 1, sizeof(size_t));
    bool *pq = calloc(rs->n + 1, sizeof(bool)), *adopting = calloc(rs->n + 1, sizeof(bool));
    sy_route_flags_t *stamped = calloc(rs->n + 1, sizeof(*stamped));
    reflist_t *refs = calloc(rs->n + 1, sizeof(*refs)), *prefs = calloc(cfg->npools + 1, sizeof(*prefs));
    sy_pool_flags_t *pcur = calloc(cfg->npools + 1, sizeof(*pcur)), *pst = calloc(cfg->npools + 1, sizeof(*pst));
    bool *pdirty = calloc(cfg->npools + 1, sizeof(bool)), *padopting = calloc(cfg->npools + 1, sizeof(bool));
    if (cur == NULL || dirty == NULL || reading == NULL || pending == NULL || wq == NULL || wqlen == NULL ||
        pq == NULL || adopting == NULL || stamped == NULL || refs == NULL || prefs == NULL || pcur == NULL ||
        pst == NULL || pdirty == NULL || padopting == NULL)
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
    /* From here nothing fails: what belongs to a route or pool moves with its name. */
    for (size_t i = 0; i < rs->n; i++) {
        long old = s->routes && live ? route_index(s, rs->routes[i].name, strlen(rs->routes[i].name)) : -1;
        if (old < 0)
            continue;
        wq[i] = s->wq[old];
        wqlen[i] = s->wqlen[old];
        pq[i] = s->pending_queued[old];
        adopting[i] = s->adopting[old];
        stamped[i] = s->stamped[old];
        refs[i] = s->refs[old];
        s->wq[old] = NULL;
        s->wqlen[old] = 0;
        memset(&s->stamped[old], 0, sizeof(s->stamped[old]));
        memset(&s->refs[old], 0, sizeof(s->refs[old]));
        for (cas_ctx_t *c = wq[i]; c != NULL; c = c->qnext)
            c->route = i;
    }
    for (size_t j = 0; j < cfg->npools; j++)
        for (size_t o = 0; live && s->cfg != NULL && o < s->npools; o++)
            if (strcmp(s->cfg->pools[o].name, cfg->pools[j].name) == 0 && s->cfg->pools[o].colored &&
                cfg->pools[j].colored) {
                pst[j] = s->pstamped[o];
                prefs[j] = s->prefs[o];
                padopting[j] = s->padopting[o];
                memset(&s->pstamped[o], 0, sizeof(s->pstamped[o]));
                memset(&s->prefs[o], 0, sizeof(s->prefs[o]));
            }
    free_route_state(s, true);
    s->wq = wq;
    s->wqlen = wqlen;
    s->pending_queued = pq;
    s->adopting = adopting;
    s->stamped = stamped;
    s->refs = refs;
    s->prefs = prefs;
    s->pstamped = pst;
    s->padopting = padopting;
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
    s->st.configured = s->rc != NULL;
    return 0;
fail:
    for (size_t i = 0; cur != NULL && i < rs->n; i++)
        sy_route_flags_clear(&cur[i]);
    free(cur);
    free(dirty);
    free(reading);
    free(pending);
    free(wq);
    free(wqlen);
    free(pq);
    free(adopting);
    free(stamped);
    free(refs);
    free(prefs);
    for (size_t j = 0; pcur != NULL && j < cfg->npools; j++)
        sy_pool_flags_clear(&pcur[j]);
    free(pcur);
    free(pst);
    free(pdirty);
    free(padopting);
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
    free_route_state(s, false);
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
