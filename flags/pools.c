/* Blue-green pools: the swap's single owner. See pools.h.
 *
 * A pool's colour lives in switchyard:pool:{name} (active, actor, reason,
 * updated_at, version). A swap asked through the admin API and a hand edit
 * seen in Redis pass the same health gate (sy_pool_color_ready); the first is
 * written by compare-and-set, the second adopted (stamped with a version and
 * actor=hand) by the instance that sees it first. Each publish then retires
 * the endpoints of the colour no longer active. */
#include "flags/store_int.h"

#include "proxy/log.h"

#include <ev.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Compare-and-set of a pool: KEYS[1] the hash. ARGV: expected version ("0" =
 * only if the hash has none), channel, message, then field/value pairs. */
static const char POOL_CAS_SCRIPT[] =
    "local v = redis.call('HGET', KEYS[1], 'version')\n"
    "if not v or not string.match(v, '^%d+$') then v = '0' end\n"
    "if ARGV[1] ~= '' and tonumber(v) ~= tonumber(ARGV[1]) then return redis.error_reply('CONFLICT version ' .. v) end\n"
    "redis.call('HSET', KEYS[1], unpack(ARGV, 4))\n"
    "redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
    "return redis.call('HGET', KEYS[1], 'version')\n";

long fs_pool_index(const sy_flagstore_t *s, const char *name, size_t len)
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
static void record_swap(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *before, const sy_pool_flags_t *after);

static void on_pool_cas(void *priv, redisReply *reply, const char *err)
{
    pool_ctx_t *c = priv;
    sy_flagstore_t *s = c->s;
    redisReply *rep = reply;
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
                fs_record_hand_edit(s, "pool:", s->cfg->pools[j].name, cur->version, cur->updated_at, c->before,
                                 fs_pool_json(cur));
                c->before = NULL;
            }
        }
        if (!s->destroying) {
            /* Read again: a hand swap seen while this one was adopted is handled next. */
            s->pdirty[c->pool] = true;
            fs_mark_dirty(s, -1);
        }
    } else if (s->destroying || rep == NULL || c->epoch != s->epoch) {
        fs_finish(c->done, c->ud, SY_EUNAVAILABLE, s->destroying ? "shutting down" : "redis went away during the write", NULL);
    } else if (rep->type == REDIS_REPLY_ERROR) {
        if (!c->seed)
            fs_finish(c->done, c->ud, SY_ECONFLICT, "the pool changed at the same time; try again", NULL);
        s->pdirty[c->pool] = true;
        fs_mark_dirty(s, -1);
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
            fs_publish(s);
        }
        fs_finish(c->done, c->ud, SY_OK, NULL, NULL);
    }
    sy_pool_flags_clear(&c->next);
    json_decref(c->before);
    free(c);
}

static pool_ctx_t *pool_ctx_new(sy_flagstore_t *s, size_t j)
{
    pool_ctx_t *c = calloc(1, sizeof(*c));
    if (c != NULL) {
        c->s = s;
        c->epoch = s->epoch;
        c->pool = j;
    }
    return c;
}

/* Stamps a hand swap seen in Redis (raw: the version read, "0" if invalid). */
static void pool_adopt(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *seen, const char *raw_version)
{
    pool_ctx_t *c = pool_ctx_new(s, j);
    if (c == NULL)
        return;
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
    c->before = fs_pool_json(&s->pstamped[j]);
    pool_key(s, j, hkey, sizeof(hkey));
    fs_channel(s, channel, sizeof(channel));
    snprintf(msg, sizeof(msg), "pool:%s", s->cfg->pools[j].name);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)c->next.version);
    const char *argv[] = {"EVAL", POOL_ADOPT_SCRIPT, "1", hkey, raw_version, color_names[seen->active], ver,
                          HAND_ACTOR, HAND_REASON, now, channel, msg};
    if (c->next.actor == NULL || c->next.reason == NULL || c->next.updated_at == NULL ||
        fs_send(s, on_pool_cas, c, (int)SY_ARRAY_LEN(argv), argv) != 0) {
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
    pool_ctx_t *c = pool_ctx_new(s, j);
    if (c == NULL || sy_pool_flags_copy(&c->next, next) != 0) {
        free(c);
        fs_finish(done, ud, SY_ENOMEM, "out of memory", NULL);
        return;
    }
    c->seed = seed;
    c->done = done;
    c->ud = ud;
    char hkey[256], channel[128], msg[128], ver[24];
    pool_key(s, j, hkey, sizeof(hkey));
    fs_channel(s, channel, sizeof(channel));
    snprintf(msg, sizeof(msg), "pool:%s", s->cfg->pools[j].name);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)next->version);
    const char *argv[] = {"EVAL", POOL_CAS_SCRIPT, "1", hkey, expect, channel, msg,
                          "active", color_names[next->active], "version", ver,
                          "actor", next->actor ? next->actor : "", "reason", next->reason ? next->reason : "",
                          "updated_at", next->updated_at ? next->updated_at : ""};
    if (fs_send(s, on_pool_cas, c, (int)SY_ARRAY_LEN(argv), argv) != 0) {
        fs_finish(done, ud, SY_EUNAVAILABLE, "redis is unavailable", NULL);
        sy_pool_flags_clear(&c->next);
        free(c);
    }
}

typedef struct pool_read {
    sy_flagstore_t *s;
    uint64_t epoch;
    size_t pool;
} pool_read_t;

/* The pool's key is missing: seed it from the config, once for all instances. */
static void pool_seed(sy_flagstore_t *s, size_t j, sy_pool_flags_t *next)
{
    char now[32];
    sy_flags_now(now);
    free(next->actor);
    free(next->reason);
    free(next->updated_at);
    next->actor = strdup("switchyard");
    next->reason = strdup("seeded from the config");
    next->updated_at = strdup(now);
    next->version = 1;
    pool_cas(s, j, next, "0", true, NULL, NULL);
}

typedef struct pool_raw {
    const char *active, *version; /* as read; NULL: absent */
    bool version_ok;
} pool_raw_t;

/* The fields of a pool's hash into next; an invalid colour is refused. */
static void pool_parse(sy_flagstore_t *s, size_t j, const redisReply *rep, sy_pool_flags_t *next, pool_raw_t *raw,
                       const char *in_force)
{
    const char *name = s->cfg->pools[j].name;
    for (size_t k = 0; k + 1 < rep->elements; k += 2) {
        const char *f = rep->element[k]->str, *v = rep->element[k + 1]->str;
        if (f == NULL || v == NULL)
            continue;
        if (strcmp(f, "active") == 0) {
            raw->active = v;
            if (strcmp(v, "blue") == 0)
                next->active = SY_BLUE;
            else if (strcmp(v, "green") == 0)
                next->active = SY_GREEN;
            else
                fs_ref_note(s, &s->prefs[j], "pool:", name, "active", v, "active must be blue or green", in_force,
                            false);
        } else if (strcmp(f, "version") == 0) {
            raw->version = v;
        } else if (strcmp(f, "actor") == 0 || strcmp(f, "reason") == 0 || strcmp(f, "updated_at") == 0) {
            char **dst = f[0] == 'a' ? &next->actor : f[0] == 'r' ? &next->reason : &next->updated_at;
            free(*dst);
            *dst = strdup(v);
        }
    }
    /* A missing or invalid version is repaired: 0 here, rewritten by the next write. */
    const char *rv = raw->version;
    raw->version_ok = rv != NULL && rv[0] != '\0' && strlen(rv) <= 19 && strspn(rv, "0123456789") == strlen(rv);
    next->version = raw->version_ok ? strtoull(rv, NULL, 10) : 0;
    next->source = "redis";
}

/* A swap made in Redis by hand: the same health gate as `ctl swap`. A refused
 * one stays refused while Redis holds it (ctl swap overrides). */
static void pool_hand_swap(sy_flagstore_t *s, size_t j, sy_pool_flags_t *next, const pool_raw_t *raw,
                           const char *in_force)
{
    char why[256], full[300];
    if (sy_refused_seen(&s->prefs[j], "active", raw->active)) {
        next->active = s->pcur[j].active;
    } else if (!sy_pool_color_ready(&s->eps, s->cfg, &s->cfg->pools[j], next->active, why, sizeof(why))) {
        snprintf(full, sizeof(full), "swap refused: %s", why);
        fs_ref_note(s, &s->prefs[j], "pool:", s->cfg->pools[j].name, "active", raw->active, full, in_force, true);
        next->active = s->pcur[j].active;
    } else if (!s->padopting[j]) {
        pool_adopt(s, j, next, raw->version_ok ? raw->version : "0");
    }
}

static void pool_apply(sy_flagstore_t *s, size_t j, const redisReply *rep)
{
    sy_pool_flags_t next;
    if (sy_pool_flags_copy(&next, &s->pcur[j]) != 0)
        return;
    if (rep->elements == 0) {
        pool_seed(s, j, &next);
        sy_pool_flags_clear(&next);
        return;
    }
    char in_force[64];
    snprintf(in_force, sizeof(in_force), "active=%s", color_names[s->pcur[j].active]);
    snprintf(s->ref_version, sizeof(s->ref_version), "none");
    for (size_t k = 0; k + 1 < rep->elements; k += 2)
        if (rep->element[k]->str != NULL && rep->element[k + 1]->str != NULL &&
            strcmp(rep->element[k]->str, "version") == 0)
            snprintf(s->ref_version, sizeof(s->ref_version), "%.20s", rep->element[k + 1]->str);
    sy_refused_begin(&s->prefs[j]);
    pool_raw_t raw = {0};
    pool_parse(s, j, rep, &next, &raw, in_force);
    const sy_pool_flags_t *st = &s->pstamped[j];
    bool hand = st->source != NULL && next.active != st->active && (next.version == st->version || !raw.version_ok);
    if (hand)
        pool_hand_swap(s, j, &next, &raw, in_force);
    else
        set_pstamped(s, j, &next);
    sy_refused_end(&s->prefs[j]);
    bool differs = next.active != s->pcur[j].active;
    sy_pool_flags_clear(&s->pcur[j]);
    s->pcur[j] = next;
    if (differs) {
        sy_info("pool %s: active colour is now %s (by %s)", s->cfg->pools[j].name, color_names[next.active],
                hand ? HAND_ACTOR : next.actor ? next.actor : "?");
        fs_publish(s);
    }
}

static void on_pool_hash(void *priv, redisReply *rep, const char *err)
{
    pool_read_t *r = priv;
    sy_flagstore_t *s = r->s;
    size_t j = r->pool;
    bool live = !s->destroying && r->epoch == s->epoch && rep != NULL && rep->type == REDIS_REPLY_ARRAY;
    free(r);
    if (live)
        pool_apply(s, j, rep);
}

void fs_read_pool(sy_flagstore_t *s, size_t j)
{
    if (!fs_up(s))
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
    if (fs_send(s, on_pool_hash, r, 2, argv) != 0)
        free(r);
    s->pdirty[j] = false;
}

/* --- the swap ------------------------------------------------------------------ */

json_t *fs_pool_json(const sy_pool_flags_t *p)
{
    return json_pack("{s:s, s:I, s:s?, s:s?, s:s?}", "active", p->active == SY_GREEN ? "green" : "blue", "version",
                     (json_int_t)p->version, "actor", p->actor, "reason", p->reason, "updated_at", p->updated_at);
}

/* A swap of pool j, recorded with the colour before and after. */
static void record_swap(sy_flagstore_t *s, size_t j, const sy_pool_flags_t *before, const sy_pool_flags_t *after)
{
    if (s->sink.event != NULL)
        fs_record(s, "swap", s->cfg->pools[j].name, after->actor, after->reason, fs_pool_json(before),
                  fs_pool_json(after), NULL, NULL);
}

static void retire_colors(sy_flagstore_t *s, int64_t now_ms);

void sy_pools_bind_endpoints(sy_flagstore_t *s, sy_pool_endpoints_t eps)
{
    s->eps = eps;
    retire_colors(s, (int64_t)(ev_now(s->loop) * 1000)); /* the inactive colours, from now */
}

bool sy_pool_color_ready(const sy_pool_endpoints_t *eps, const sy_config_t *cfg, const sy_pool_t *p, int color,
                         char *why, size_t cap)
{
    if (eps == NULL || eps->good_probes == NULL) {
        snprintf(why, cap, "the endpoints' health is not known");
        return false;
    }
    for (size_t e = p->color_first[color]; e < p->color_first[color] + p->color_count[color]; e++) {
        const sy_endpoint_t *ep = &p->endpoints[e];
        int good = eps->good_probes(eps->ud, cfg, ep);
        if (good < p->health.rise) {
            snprintf(why, cap, "%s endpoint %s has not passed %lld health probes in a row (%d so far)",
                     color ? "green" : "blue", ep->name, (long long)p->health.rise, good < 0 ? 0 : good);
            return false;
        }
    }
    return true;
}

/* The pool named, coloured, and the target colour: SY_OK, or the error with err. */
static sy_err_t swap_target(sy_flagstore_t *s, const char *pool, const char *to, long *j, int *target, const char **err)
{
    *j = -1;
    for (size_t i = 0; i < s->npools; i++)
        if (strcmp(s->cfg->pools[i].name, pool) == 0)
            *j = (long)i;
    if (*j < 0) {
        *err = "no such pool";
        return SY_ENOTFOUND;
    }
    if (!s->cfg->pools[*j].colored) {
        *err = "the pool has no colours (colors: {blue, green})";
        return SY_EINVAL;
    }
    if (to == NULL)
        *target = !s->pcur[*j].active;
    else if (strcmp(to, "blue") == 0)
        *target = SY_BLUE;
    else if (strcmp(to, "green") == 0)
        *target = SY_GREEN;
    else {
        *err = "\"to\" must be \"blue\" or \"green\"";
        return SY_EINVAL;
    }
    return 0;
}

void sy_pools_swap(sy_flagstore_t *s, const char *pool, const char *to, const char *actor, const char *reason,
                   sy_flags_done_fn done, void *ud)
{
    long j;
    int target;
    const char *err = NULL;
    sy_err_t status = swap_target(s, pool, to, &j, &target, &err);
    if (status != SY_OK) {
        fs_finish(done, ud, status, err, NULL);
        return;
    }
    char why[256], full[300];
    if (!sy_pool_color_ready(&s->eps, s->cfg, &s->cfg->pools[j], target, why, sizeof(why))) {
        snprintf(full, sizeof(full), "refused: %s", why);
        sy_warn("swap of pool %s %s", pool, full);
        fs_finish(done, ud, SY_ECONFLICT, full, NULL);
        return;
    }
    sy_info("swap: pool %s to %s requested by %s", pool, target ? "green" : "blue", actor ? actor : "unknown");
    sy_pool_flags_t next;
    if (sy_pool_flags_copy(&next, &s->pcur[j]) != 0) {
        fs_finish(done, ud, SY_ENOMEM, "out of memory", NULL);
        return;
    }
    char now[32];
    sy_flags_now(now);
    next.active = target;
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
        fs_publish(s);
        fs_finish(done, ud, SY_OK, NULL, NULL);
        return;
    }
    if (!fs_up(s)) {
        sy_pool_flags_clear(&next);
        fs_finish(done, ud, SY_EUNAVAILABLE, "redis is unavailable: the swap is not made (every instance must agree)", NULL);
        return;
    }
    char expect[24];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)s->pcur[j].version);
    pool_cas(s, (size_t)j, &next, expect, false, done, ud);
    sy_pool_flags_clear(&next);
}

/* --- retirement of the old colour ------------------------------------------------ */

uint64_t fs_pools_retire(sy_flagstore_t *s, int64_t now_ms)
{
    const sy_config_t *cfg = s->cfg;
    const sy_pool_flags_t *pools = s->pcur;
    pools_retire_t *r = &s->retire;
    /* A colour swap: the workers drop idle connections to the old colour. */
    bool swapped = r->last_npools != cfg->npools;
    int *active = calloc(cfg->npools + 1, sizeof(int));
    for (size_t i = 0; active != NULL && i < cfg->npools; i++) {
        active[i] = pools[i].active;
        swapped |= !swapped && r->last_active != NULL && r->last_active[i] != active[i];
    }
    free(r->last_active);
    r->last_active = active;
    r->last_npools = cfg->npools;
    if (swapped)
        r->close_idle_serial++;
    retire_colors(s, now_ms);
    return r->close_idle_serial;
}

/* Endpoints of an inactive colour are retired: what still runs on them gets
 * timeouts.drain from now. */
static void retire_colors(sy_flagstore_t *s, int64_t now_ms)
{
    const sy_config_t *cfg = s->cfg;
    const sy_pool_flags_t *pools = s->pcur;
    if (s->eps.retire == NULL || s->eps.retired == NULL || pools == NULL)
        return;
    for (size_t i = 0; i < cfg->npools; i++) {
        const sy_pool_t *p = &cfg->pools[i];
        for (size_t e = 0; p->colored && e < p->nendpoints; e++) {
            const sy_endpoint_t *ep = &p->endpoints[e];
            bool inactive = (e >= p->color_first[1]) != (pools[i].active == SY_GREEN);
            int64_t cur = s->eps.retired(s->eps.ud, cfg, ep);
            if (inactive && cur == 0)
                s->eps.retire(s->eps.ud, cfg, ep, now_ms);
            else if (!inactive && cur != 0)
                s->eps.retire(s->eps.ud, cfg, ep, 0);
        }
    }
}
