/* The flag store's writes: every change of a route is a compare-and-set in a
 * Lua script, in a per-route queue (one write in flight per key), retried with
 * a growing pause and a fresh read after a conflict. See store_int.h. */
#include "flags/store_int.h"

#include "proxy/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void fs_finish(sy_flags_done_fn done, void *ud, sy_err_t status, const char *err, const sy_route_flags_t *res)
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
        fs_read_route(s, i, c);
}

/* The end of a write (answered with status): out of the queue, the next starts. */
void fs_cas_end(cas_ctx_t *c, sy_err_t status, const char *err, const sy_route_flags_t *res)
{
    sy_flagstore_t *s = c->s;
    if (c->timer_on)
        ev_timer_stop(s->loop, &c->backoff);
    if (c->gone) {
        fs_finish(c->done, c->ud, SY_EUNAVAILABLE, "the route was removed from the config", NULL);
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
            fs_mark_dirty(s, (long)i);
    }
    fs_finish(c->done, c->ud, status, err, res);
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

void fs_cas_fail(cas_ctx_t *c, const char *why)
{
    fs_cas_end(c, SY_EUNAVAILABLE, why, NULL);
}

static void backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    cas_ctx_t *c = t->data;
    c->timer_on = false;
    fs_read_route(c->s, c->route, c); /* the read owns c now */
}

/* After a read, a write (queued, or after a CONFLICT) is computed on what
 * Redis holds (base) and sent. */
void fs_retry_after_read(sy_flagstore_t *s, cas_ctx_t *c, const sy_route_flags_t *base)
{
    (void)s;
    if (c->mode & (CAS_SEED | CAS_ADOPT)) {
        /* Only meant for what was read when they were made: anything since makes them moot. */
        fs_cas_end(c, SY_OK, NULL, NULL);
        return;
    }
    sy_route_flags_t after;
    const char *err = NULL;
    int rc = sy_flags_op(base, &c->req, &after, &err);
    if (rc != 0) {
        fs_cas_end(c, rc == SY_EDECLINED ? SY_ECONFLICT : rc == SY_EINVAL ? SY_EINVAL : SY_ENOMEM, err ? err : "out of memory", NULL);
        return;
    }
    sy_route_flags_clear(&c->next);
    c->next = after;
    snprintf(c->expect, sizeof(c->expect), "%llu", (unsigned long long)base->version);
    c->ready = true;
    cas_send(c);
}

/* Another write got there first: seeds and adoptions are moot (read what it
 * wrote); other writes pause (25, 50, 100 ms ...), read afresh and try again. */
static void on_conflict(cas_ctx_t *c)
{
    sy_flagstore_t *s = c->s;
    size_t i = c->route;
    if (c->mode & (CAS_SEED | CAS_ADOPT)) {
        fs_mark_dirty(s, (long)i);
        fs_cas_end(c, SY_OK, NULL, NULL);
        return;
    }
    if (--c->attempts_left <= 0) {
        if (c->mode & CAS_PENDING)
            sy_warn("redis: the local change of route %s met %d conflicts; written again at the next read",
                    s->routes->routes[i].name, c->attempt + 1);
        fs_cas_end(c, SY_ECONFLICT, "the route kept changing under the write; try again", NULL);
        return;
    }
    c->attempt++;
    c->ready = false;
    double pause = 0.025 * (double)(1 << (c->attempt < 6 ? c->attempt - 1 : 5));
    pause *= 1.0 + (double)(rand() % 50) / 100.0;
    ev_timer_init(&c->backoff, backoff_cb, pause, 0.);
    c->backoff.data = c;
    c->timer_on = true;
    ev_timer_start(s->loop, &c->backoff);
}

/* The hand edit now has its own version, stamped by this instance: record it. */
static void on_adopted(cas_ctx_t *c)
{
    sy_flagstore_t *s = c->s;
    size_t i = c->route;
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
    fs_set_stamped(s, i, &c->next);
    sy_info("flags: route %s: the hand edit (state=%s percent_bp=%d test_users=%zu) is version %llu",
            s->routes->routes[i].name, sy_state_name(c->next.state), c->next.percent_bp, c->next.ntest_users,
            (unsigned long long)c->next.version);
    fs_record_hand_edit(s, "route:", s->routes->routes[i].name, c->next.version, c->next.updated_at, c->before,
                        sy_flags_to_json(&c->next));
    c->before = NULL;
    fs_cas_end(c, SY_OK, NULL, NULL);
}

/* Written: this is the new truth; publish it without waiting for the watch. */
static void on_written(cas_ctx_t *c)
{
    sy_flagstore_t *s = c->s;
    size_t i = c->route;
    if ((c->mode & CAS_SEED) && s->pending[i].active) {
        /* A local change (a trip) came while the seed was on its way: the seed
         * is what Redis holds now, and the change still stands, in force here
         * and written on top of it after a read. */
        fs_set_stamped(s, i, &c->next);
        fs_mark_dirty(s, (long)i);
        fs_cas_end(c, SY_OK, NULL, NULL);
        return;
    }
    s->pending[i].active = false;
    bool differs = sy_flags_routing_differs(&s->cur[i], &c->next);
    sy_route_flags_t tmp = s->cur[i];
    s->cur[i] = c->next;
    c->next = tmp;
    s->cur[i].source = "redis";
    fs_set_stamped(s, i, &s->cur[i]);
    if (c->mode & CAS_RECORD)
        fs_record_route(s, fs_op_kind(c->req.op), i, c->req.actor, c->req.reason, &c->next, &s->cur[i], NULL);
    if (differs)
        fs_publish(s);
    fs_cas_end(c, SY_OK, NULL, &s->cur[i]);
}

static void on_cas(void *priv, redisReply *rep, const char *err)
{
    cas_ctx_t *c = priv;
    sy_flagstore_t *s = c->s;
    if (c->gone || s->destroying) {
        fs_cas_end(c, SY_EUNAVAILABLE, "shutting down", NULL);
        return;
    }
    if (rep == NULL || c->epoch != s->epoch) {
        fs_cas_fail(c, "redis went away during the write");
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "CONFLICT", 8) == 0) {
        on_conflict(c);
    } else if (rep->type == REDIS_REPLY_ERROR) {
        fs_set_error(s, "EVAL", rep->str);
        sy_warn("redis: write to route %s failed: %s", s->routes->routes[c->route].name, rep->str);
        fs_cas_fail(c, "redis refused the write");
    } else if (c->mode & CAS_ADOPT) {
        on_adopted(c);
    } else {
        on_written(c);
    }
}

static char **copy_list(const char *const *v, size_t n)
{
    char **out = calloc(n + 1, sizeof(char *));
    for (size_t k = 0; out != NULL && k < n; k++)
        if ((out[k] = strdup(v[k])) == NULL)
            return out; /* partial: counted by the caller through the NULL */
    return out;
}

/* A write that could not be queued: answered, and its route's marks cleared. */
static void cas_refuse(sy_flagstore_t *s, size_t i, int mode, sy_flags_done_fn done, void *ud, sy_err_t status,
                       const char *err)
{
    if (mode & CAS_PENDING)
        s->pending_queued[i] = false;
    if (mode & CAS_ADOPT)
        s->adopting[i] = false;
    fs_finish(done, ud, status, err, NULL);
}

/* A write of route i: queued behind the one in flight (then recomputed on a
 * fresh read), or sent now with next and expect. For CAS_ADOPT, ud is the
 * flags before the hand edit (for the record) and done is NULL. */
void fs_cas_write(sy_flagstore_t *s, size_t i, const sy_route_flags_t *next, const sy_flag_request_t *req,
                      const char *expect, int attempts, int mode, sy_flags_done_fn done, void *ud)
{
    if (s->wqlen[i] >= MAX_QUEUED_WRITES) {
        cas_refuse(s, i, mode, done, ud, SY_EUNAVAILABLE, "too many writes waiting for this route; try again");
        return;
    }
    cas_ctx_t *c = calloc(1, sizeof(*c));
    if (c == NULL || sy_route_flags_copy(&c->next, next) != 0) {
        free(c);
        cas_refuse(s, i, mode, done, ud, SY_ENOMEM, "out of memory");
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
        cas_refuse(s, i, mode, done, ud, SY_ENOMEM, "out of memory");
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
    fs_key_of(s, i, false, hkey, sizeof(hkey));
    fs_key_of(s, i, true, skey, sizeof(skey));
    snprintf(channel, sizeof(channel), "%sevents", s->rc->prefix);
    snprintf(ver, sizeof(ver), "%llu", (unsigned long long)c->next.version);
    if (c->nadd != 5) {
        fs_cas_end(c, SY_ENOMEM, "out of memory", NULL);
        return;
    }
    const char *argv[] = {"EVAL", ADOPT_SCRIPT, "2", hkey, skey, c->expect, c->add[0], c->add[1], c->add[2],
                          c->add[3], c->add[4], ver, HAND_ACTOR, HAND_REASON,
                          c->next.updated_at ? c->next.updated_at : "", channel, s->routes->routes[i].name};
    if (fs_send(s, on_cas, c, (int)SY_ARRAY_LEN(argv), argv) != 0)
        fs_cas_fail(c, "redis is unavailable");
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
    fs_key_of(s, i, false, hkey, sizeof(hkey));
    fs_key_of(s, i, true, skey, sizeof(skey));
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
        fs_cas_end(c, SY_ENOMEM, "out of memory", NULL);
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
    int rc = fs_send(s, on_cas, c, (int)a, argv);
    free(argv);
    if (rc != 0)
        fs_cas_fail(c, "redis is unavailable");
}

void sy_flagstore_request(sy_flagstore_t *s, const char *route, const sy_flag_request_t *req, sy_flags_done_fn done,
                          void *ud)
{
    long i = fs_route_index(s, route, strlen(route));
    if (i < 0) {
        fs_finish(done, ud, SY_ENOTFOUND, "no such route", NULL);
        return;
    }
    sy_route_flags_t next;
    const char *err = NULL;
    int rc = sy_flags_op(&s->cur[i], req, &next, &err);
    if (rc != 0) {
        fs_finish(done, ud, rc == SY_EDECLINED ? SY_ECONFLICT : rc == SY_EINVAL ? SY_EINVAL : SY_ENOMEM, err ? err : "out of memory", NULL);
        return;
    }
    if (s->rc != NULL && next.ntest_users > (size_t)s->rc->max_test_users) {
        sy_route_flags_clear(&next);
        fs_finish(done, ud, SY_EINVAL, "more test users than redis.max_test_users", NULL);
        return;
    }
    if (s->rc == NULL) {
        /* No Redis: the config is the store; the change lives until restart. */
        bool differs = sy_flags_routing_differs(&s->cur[i], &next);
        fs_record_route(s, fs_op_kind(req->op), (size_t)i, req->actor, req->reason, &s->cur[i], &next, NULL);
        sy_route_flags_clear(&s->cur[i]);
        s->cur[i] = next;
        if (differs)
            fs_publish(s);
        fs_finish(done, ud, SY_OK, NULL, &s->cur[i]);
        return;
    }
    if (!fs_up(s)) {
        if (req->op != SY_OP_ROLLBACK) {
            sy_route_flags_clear(&next);
            fs_finish(done, ud, SY_EUNAVAILABLE, "redis is unavailable: flags not changed (a rollback would still apply)", NULL);
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
        fs_record_route(s, "rollback", (size_t)i, req->actor, req->reason, &s->cur[i], &next, NULL);
        sy_route_flags_clear(&s->cur[i]);
        s->cur[i] = next;
        s->cur[i].source = "local (redis write pending)";
        fs_publish(s);
        sy_warn("flags: route %s rolled back locally; Redis is unavailable, the write is retried on reconnect",
                route);
        fs_finish(done, ud, SY_OK, NULL, &s->cur[i]);
        return;
    }
    char expect[24];
    snprintf(expect, sizeof(expect), "%llu", (unsigned long long)s->cur[i].version);
    fs_cas_write(s, (size_t)i, &next, req, expect, MAX_CAS_ATTEMPTS, CAS_RECORD, done, ud);
    sy_route_flags_clear(&next);
}

bool sy_flagstore_trip(sy_flagstore_t *s, const char *route, const char *reason)
{
    long i = fs_route_index(s, route, strlen(route));
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
    fs_publish(s); /* the workers route everyone to legacy from now on */
    if (s->rc == NULL)
        return true;
    pending_local_t *p = &s->pending[i];
    p->active = true;
    p->req = req;
    snprintf(p->actor, sizeof(p->actor), "switchyard");
    snprintf(p->reason, sizeof(p->reason), "%s", reason);
    /* The write goes through a fresh read: the change is recomputed on what
     * Redis holds, then compare-and-set (retried after reconnect if need be). */
    if (fs_up(s))
        fs_mark_dirty(s, i);
    return true;
}

