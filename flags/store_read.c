/* The flag store's reads: a route's hash and test users, validated field by
 * field (refused values are noted, the last good ones stay), and the adoption
 * of hand edits. See store_int.h. */
#include "flags/store_int.h"

#include "proxy/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The test users of a route, read only when there are at most ARGV[1] of them:
 * the set's size (an integer) when there are more, its members otherwise. */
static const char USERS_SCRIPT[] =
    "local n = redis.call('SCARD', KEYS[1])\n"
    "if n > tonumber(ARGV[1]) then return n end\n"
    "return redis.call('SMEMBERS', KEYS[1])\n";

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
        fs_cas_write(s, i, &seeded, &req, "0", 1, CAS_SEED, NULL, NULL);
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
    fs_cas_write(s, i, &after, &p->req, expect, MAX_PENDING_ATTEMPTS, CAS_PENDING, NULL, NULL); /* recorded when applied */
    sy_route_flags_clear(&after);
}

static const char *kv_get(const read_ctx_t *r, const char *field)
{
    for (size_t k = 0; k + 1 < r->nkv; k += 2)
        if (strcmp(r->kv[k], field) == 0)
            return r->kv[k + 1];
    return NULL;
}

void fs_set_stamped(sy_flagstore_t *s, size_t i, const sy_route_flags_t *f)
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
        fs_set_stamped(s, i, next);
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
                fs_cas_write(s, i, &adopted, &req, expect, 1, CAS_ADOPT, NULL, (void *)st);
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
        fs_publish(s);
    }
}

typedef struct refuse_ud {
    sy_flagstore_t *s;
    size_t i;
} refuse_ud_t;

static void refuse_cb(void *ud, const char *route, const char *field, const char *value, const char *why)
{
    refuse_ud_t *u = ud;
    char in_force[320];
    fs_field_in_force(&u->s->cur[u->i], field, in_force, sizeof(in_force));
    fs_ref_note(u->s, &u->s->refs[u->i], "route:", route, field, value, why, in_force, false);
}

/* The key holds another type than a hash (or the :test_users key a set). */
static void refuse_wrong_type(sy_flagstore_t *s, size_t i, const read_ctx_t *r, cas_ctx_t *retry)
{
    char in_force[200];
    bool set = strcmp(r->wrong_type, "set") == 0;
    fs_field_in_force(&s->cur[i], "", in_force, sizeof(in_force));
    fs_ref_note(s, &s->refs[i], "route:", s->routes->routes[i].name, set ? "test_users" : "key",
                set ? "(not a set)" : "(not a hash)",
                set ? "the :test_users key must be a set" : "the route's key must be a hash", in_force, false);
    sy_refused_end(&s->refs[i]);
    if (retry != NULL)
        fs_cas_fail(retry, "the route's key in Redis has the wrong type");
}

/* The test users read into next: over the cap (an integer reply) they are
 * refused like any bad edit and the previous set stays. */
static int apply_members(sy_flagstore_t *s, size_t i, sy_route_flags_t *next, redisReply *members, refuse_ud_t *u)
{
    const char *name = s->routes->routes[i].name;
    if (members->type == REDIS_REPLY_INTEGER) {
        char v[48], why[96];
        snprintf(v, sizeof(v), "%lld members", members->integer);
        snprintf(why, sizeof(why), "more test users than redis.max_test_users (%lld)",
                 (long long)s->rc->max_test_users);
        refuse_cb(u, name, "test_users", v, why);
        return 0;
    }
    const char **mem = calloc(members->elements + 1, sizeof(char *));
    if (mem == NULL)
        return SY_ENOMEM;
    size_t nm = 0;
    for (size_t k = 0; k < members->elements; k++)
        if (members->element[k]->type == REDIS_REPLY_STRING)
            mem[nm++] = members->element[k]->str;
    int rc = sy_flags_apply_members(name, next, mem, nm, refuse_cb, u);
    free(mem);
    return rc < 0 ? SY_ENOMEM : 0;
}

static void apply_read(sy_flagstore_t *s, size_t i, read_ctx_t *r, redisReply *members, cas_ctx_t *retry)
{
    const char *name = s->routes->routes[i].name;
    sy_refused_t *l = &s->refs[i];
    const char *rv = kv_get(r, "version");
    if (rv != NULL)
        snprintf(s->ref_version, sizeof(s->ref_version), "%.20s", rv);
    else
        snprintf(s->ref_version, sizeof(s->ref_version), "last %llu", (unsigned long long)s->stamped[i].version);
    sy_refused_begin(l);
    if (r->wrong_type != NULL) {
        refuse_wrong_type(s, i, r, retry);
        return;
    }
    if (r->nkv == 0 && retry == NULL && !s->pending[i].active) {
        sy_refused_end(l);
        seed_route(s, i);
        return;
    }
    refuse_ud_t u = {s, i};
    sy_route_flags_t next;
    int refused = sy_flags_apply_hash(name, &s->cur[i], (const char *const *)r->kv, r->nkv, &next, refuse_cb, &u);
    if (refused < 0) {
        if (retry != NULL)
            fs_cas_fail(retry, "out of memory");
        return;
    }
    size_t nusers = members->type == REDIS_REPLY_INTEGER ? (size_t)members->integer : members->elements;
    int rc = apply_members(s, i, &next, members, &u);
    sy_refused_end(l);
    if (rc != 0) {
        sy_route_flags_clear(&next);
        if (retry != NULL)
            fs_cas_fail(retry, "out of memory");
        return;
    }
    if (s->pending[i].active) {
        /* The local change stands until written; it is computed on what Redis holds. */
        if (retry != NULL)
            fs_retry_after_read(s, retry, &next);
        else if (!s->pending_queued[i])
            start_pending(s, i, &next);
        sy_route_flags_clear(&next);
        return;
    }
    commit_read(s, i, &next, r, nusers);
    if (retry != NULL)
        fs_retry_after_read(s, retry, &s->cur[i]);
}

static void on_members(void *priv, redisReply *reply, const char *err)
{
    read_ctx_t *r = priv;
    sy_flagstore_t *s = r->s;
    cas_ctx_t *retry = r->retry;
    /* A reload may have removed the route (a write for it is then gone). */
    bool same = !s->destroying && r->epoch == s->epoch;
    bool live = same && r->route < s->n && (retry == NULL || !retry->gone);
    bool used = false;
    redisReply *rep = reply;
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
            fs_set_error(s, "test users", rep->str);
        }
        if (retry == NULL)
            sync_done_one(s);
    }
    size_t route = r->route;
    read_ctx_free(r);
    if (retry != NULL) {
        if (!used)
            fs_cas_fail(retry, s->destroying ? "shutting down" : "redis went away during the write");
        return;
    }
    /* Dirtied again while the read was on its way: read once more. */
    if (live && s->dirty[route])
        fs_mark_dirty(s, (long)route);
}

static void on_hash(void *priv, redisReply *reply, const char *err)
{
    read_ctx_t *r = priv;
    sy_flagstore_t *s = r->s;
    if (r->orphan) {
        cas_ctx_t *retry = r->retry;
        read_ctx_free(r);
        if (retry != NULL)
            fs_cas_fail(retry, "redis went away during the write");
        return;
    }
    if (s->destroying || r->epoch != s->epoch)
        return; /* the users callback frees r */
    redisReply *rep = reply;
    if (rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strstr(rep->str, "WRONGTYPE") != NULL)
            r->wrong_type = "hash";
        else
            fs_set_error(s, "HGETALL", rep->str);
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
void fs_read_route(sy_flagstore_t *s, size_t i, cas_ctx_t *retry)
{
    if (!fs_up(s) || (retry == NULL && s->reading[i])) {
        if (retry != NULL)
            fs_cas_fail(retry, "redis is unavailable");
        return;
    }
    read_ctx_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        if (retry != NULL)
            fs_cas_fail(retry, "out of memory");
        return;
    }
    r->s = s;
    r->epoch = s->epoch;
    r->route = i;
    r->retry = retry;
    char hkey[256], skey[256], cap[24];
    fs_key_of(s, i, false, hkey, sizeof(hkey));
    fs_key_of(s, i, true, skey, sizeof(skey));
    snprintf(cap, sizeof(cap), "%lld", (long long)s->rc->max_test_users);
    const char *a1[] = {"HGETALL", hkey};
    const char *a2[] = {"EVAL", USERS_SCRIPT, "1", skey, cap};
    /* Pipelined: the users' reply comes after HGETALL's, and owns r. */
    if (fs_send(s, on_hash, r, 2, a1) != 0) {
        free(r);
        if (retry != NULL)
            fs_cas_fail(retry, "redis is unavailable");
        return;
    }
    if (fs_send(s, on_members, r, 5, a2) != 0) {
        r->orphan = true; /* the connection is going away: on_hash frees r (and fails the retry) */
        return;
    }
    if (retry == NULL) {
        s->reading[i] = true;
        s->dirty[i] = false;
        s->sync_left++;
    }
}
