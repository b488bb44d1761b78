/* The flag store. See store.h; its insides are in store_int.h.
 *
 * This file: the helpers the other parts share, the record (through the sink),
 * the Redis session (on the generic client, redis.h: notifications, the events
 * channel, full re-syncs) and the life cycle. Reads are in store_read.c, writes
 * in store_write.c, pools in pools.c. Replies are matched to the connection
 * "epoch" they were sent on, so a reply that arrives for an older connection
 * is dropped. */
#include "flags/store_int.h"

#include "proxy/log.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- helpers ---------------------------------------------------------------- */

void fs_key_of(const sy_flagstore_t *s, size_t i, bool users, char *out, size_t cap)
{
    snprintf(out, cap, "%sroute:%s%s", s->rc->prefix, s->routes->routes[i].name, users ? ":test_users" : "");
}

void fs_channel(const sy_flagstore_t *s, char *out, size_t cap)
{
    snprintf(out, cap, "%sevents", s->rc->prefix);
}

long fs_route_index(const sy_flagstore_t *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->routes->routes[i].name) == len && memcmp(s->routes->routes[i].name, name, len) == 0)
            return (long)i;
    return -1;
}

void fs_set_error(sy_flagstore_t *s, const char *what, const char *detail)
{
    snprintf(s->st.last_error, sizeof(s->st.last_error), "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

void fs_publish(sy_flagstore_t *s)
{
    s->st.publishes++;
    uint64_t serial = fs_pools_retire(s, (int64_t)(ev_now(s->loop) * 1000));
    s->publish(s->ud, s->cfg, s->cur, s->pcur, serial);
}

bool fs_up(const sy_flagstore_t *s)
{
    return sy_redis_up(s->redis);
}

int fs_send(sy_flagstore_t *s, sy_redis_reply_fn fn, void *ud, int argc, const char **argv)
{
    return sy_redis_command(s->redis, fn, ud, argc, argv, NULL);
}

/* --- the record ------------------------------------------------------------ */

const char *fs_op_kind(sy_flag_op_t op)
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

void fs_record(sy_flagstore_t *s, const char *kind, const char *name, const char *actor, const char *reason,
               json_t *before, json_t *after, json_t *stats, const char *id_text)
{
    sy_event_t ev = {.kind = kind, .route = name, .actor = actor, .reason = reason,
                     .before = before, .after = after, .stats = stats, .id_text = id_text};
    sy_sink_event(&s->sink, &ev);
    json_decref(before);
    json_decref(after);
}

void fs_record_route(sy_flagstore_t *s, const char *kind, size_t i, const char *actor, const char *reason,
                     const sy_route_flags_t *before, const sy_route_flags_t *after, json_t *stats)
{
    if (s->sink.event != NULL)
        fs_record(s, kind, s->routes->routes[i].name, actor, reason, sy_flags_to_json(before),
                  sy_flags_to_json(after), stats, NULL);
}

/* A hand edit seen in Redis and adopted: the instance whose compare-and-set
 * stamped it with a new version records it, so its id is derived from the
 * key, that version and its time stamp: one event per edit, however often the
 * same values come back. */
void fs_record_hand_edit(sy_flagstore_t *s, const char *what, const char *name, uint64_t version, const char *stamp,
                         json_t *before, json_t *after)
{
    if (s->sink.event == NULL) {
        json_decref(before);
        json_decref(after);
        return;
    }
    char text[512];
    snprintf(text, sizeof(text), "%s%s%s|hand|%llu|%s", s->rc->prefix, what, name, (unsigned long long)version,
             stamp ? stamp : "");
    fs_record(s, "hand_edit", name, HAND_ACTOR, HAND_REASON, before, after, NULL, text);
}

void sy_flagstore_set_sink(sy_flagstore_t *s, const sy_sink_t *sink)
{
    sy_sink_t none = {0};
    s->sink = sink != NULL ? *sink : none;
}

/* --- refused edits ------------------------------------------------------------ */

void fs_ref_note(sy_flagstore_t *s, sy_refused_t *l, const char *what, const char *name, const char *field,
                 const char *value, const char *why, const char *in_force, bool error_level)
{
    if (sy_refused_seen(l, field, value))
        return;
    s->st.refused++;
    if (error_level)
        sy_error("redis: refused %s=\"%.256s\" on %s%s%s (a hand edit): %s; %s stays in force", field, value,
                 s->rc->prefix, what, name, why, in_force);
    else
        sy_warn("redis: refused %s=\"%.256s\" on %s%s%s (a hand edit): %s; %s stays in force", field, value,
                s->rc->prefix, what, name, why, in_force);
    if (s->sink.event != NULL) {
        /* Every instance sees the same refusal under the same version: one event. */
        char text[512];
        snprintf(text, sizeof(text), "%s%s%s|refused|%s|%.256s|%s", s->rc->prefix, what, name, field, value,
                 s->ref_version);
        fs_record(s, "refused_edit", name, HAND_ACTOR, why, NULL,
                  json_pack("{s:s, s:s%, s:s}", "field", field, "value", value, strnlen(value, 256), "in_force",
                            in_force),
                  NULL, text);
    }
    sy_refused_add(l, field, value, why, in_force, MAX_REFUSALS);
}

/* The value in force of a route's field, as text for the log and status. */
void fs_field_in_force(const sy_route_flags_t *f, const char *field, char *out, size_t cap)
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

json_t *sy_flagstore_route_refused(const sy_flagstore_t *s, size_t i)
{
    return i < s->n ? sy_refused_json(&s->refs[i]) : json_array();
}

json_t *sy_flagstore_pool_refused(const sy_flagstore_t *s, size_t j)
{
    return j < s->npools ? sy_refused_json(&s->prefs[j]) : json_array();
}

/* --- dirty keys and full syncs ------------------------------------------------ */

static void sync_all(sy_flagstore_t *s)
{
    s->full_sync = true;
    for (size_t i = 0; i < s->n; i++) {
        s->dirty[i] = true;
        fs_read_route(s, i, NULL);
    }
    for (size_t j = 0; j < s->npools; j++)
        if (s->cfg->pools[j].colored)
            fs_read_pool(s, j);
}

static void dirty_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)loop;
    (void)revents;
    for (size_t i = 0; i < s->n; i++)
        if (s->dirty[i])
            fs_read_route(s, i, NULL);
    for (size_t j = 0; j < s->npools; j++)
        if (s->pdirty[j])
            fs_read_pool(s, j);
}

void fs_mark_dirty(sy_flagstore_t *s, long i)
{
    if (i >= 0)
        s->dirty[i] = true;
    if (!ev_is_active(&s->dirty_timer)) {
        ev_timer_set(&s->dirty_timer, 0., 0.);
        ev_timer_start(s->loop, &s->dirty_timer);
    }
}

/* --- the session ------------------------------------------------------------------ */

static void mark_pool_dirty(sy_flagstore_t *s, const char *name, size_t len)
{
    long j = fs_pool_index(s, name, len);
    if (j >= 0) {
        s->pdirty[j] = true;
        fs_mark_dirty(s, -1);
    }
}

/* A keyspace notification (__keyspace@0__:switchyard:route:NAME[:test_users],
 * ...:pool:NAME) or a message on the events channel (NAME or pool:NAME). */
static void on_message(void *ud, redisReply *r)
{
    sy_flagstore_t *s = ud;
    if (s->destroying || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    const char *kind = r->element[0]->str;
    if (kind == NULL)
        return;
    if (strcmp(kind, "pmessage") == 0 && r->elements >= 4) {
        const char *ch = r->element[2]->str;
        const char *k = ch ? strchr(ch, ':') : NULL;
        size_t plen = strlen(s->rc->prefix);
        if (k == NULL || strncmp(k + 1, s->rc->prefix, plen) != 0)
            return;
        const char *rest = k + 1 + plen;
        if (strncmp(rest, "pool:", 5) == 0) {
            mark_pool_dirty(s, rest + 5, strlen(rest + 5));
            return;
        }
        if (strncmp(rest, "route:", 6) != 0)
            return;
        const char *name = rest + 6;
        const char *end = strstr(name, ":test_users");
        fs_mark_dirty(s, fs_route_index(s, name, end ? (size_t)(end - name) : strlen(name)));
    } else if (strcmp(kind, "message") == 0 && r->elements >= 3 && r->element[2]->str != NULL) {
        if (r->element[2]->len > 5 && strncmp(r->element[2]->str, "pool:", 5) == 0)
            mark_pool_dirty(s, r->element[2]->str + 5, r->element[2]->len - 5);
        else
            fs_mark_dirty(s, fs_route_index(s, r->element[2]->str, r->element[2]->len));
    } else if (strcmp(kind, "psubscribe") == 0) {
        sy_debug("redis: watching keyspace notifications");
    }
}

static void on_config_set(void *ud, redisReply *r, const char *err)
{
    sy_flagstore_t *s = ud;
    if (s->destroying || r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        sy_warn("redis: cannot enable keyspace notifications (%s); hand edits apply within resync_interval", r->str);
        s->st.notifications = false;
    } else {
        sy_info("redis: keyspace notifications enabled");
        s->st.notifications = true;
    }
}

static void on_config_get(void *ud, redisReply *r, const char *err)
{
    sy_flagstore_t *s = ud;
    if (s->destroying || r == NULL)
        return;
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
    (void)fs_send(s, on_config_set, s, 4, argv);
}

static void on_selected(void *ud, redisReply *r, const char *err)
{
    sy_flagstore_t *s = ud;
    if (s->destroying || r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR)
        fs_set_error(s, "SELECT", r->str);
}

/* Both connections are up: enable notifications, subscribe, read it all. */
static void on_up(void *ud)
{
    sy_flagstore_t *s = ud;
    s->st.connected = true;
    s->st.last_error[0] = '\0';
    char peer[80];
    sy_info("redis: connected to %s%s%s%s", sy_redis_peer(s->redis, peer, sizeof(peer)),
            s->rc->nsentinels ? " (" : "", s->rc->nsentinels ? s->rc->address : "", s->rc->nsentinels ? ")" : "");
    char db[8];
    snprintf(db, sizeof(db), "%lld", (long long)s->rc->db);
    const char *sel[] = {"SELECT", db};
    (void)fs_send(s, on_selected, s, 2, sel);
    const char *get[] = {"CONFIG", "GET", "notify-keyspace-events"};
    (void)fs_send(s, on_config_get, s, 3, get);
    char pattern[256], ppattern[256], channel[128];
    snprintf(pattern, sizeof(pattern), "__keyspace@%lld__:%sroute:*", (long long)s->rc->db, s->rc->prefix);
    snprintf(ppattern, sizeof(ppattern), "__keyspace@%lld__:%spool:*", (long long)s->rc->db, s->rc->prefix);
    fs_channel(s, channel, sizeof(channel));
    const char *psub[] = {"PSUBSCRIBE", pattern};
    const char *ppsub[] = {"PSUBSCRIBE", ppattern};
    const char *sub[] = {"SUBSCRIBE", channel};
    sy_redis_subscribe(s->redis, 2, ppsub);
    sy_redis_subscribe(s->redis, 2, psub);
    sy_redis_subscribe(s->redis, 2, sub);
    sync_all(s);
}

/* The connections dropped (a timeout, an error, a failed connect): the last
 * good flags stay in force; replies still on their way are stale. */
static void on_down(void *ud, const char *why, const char *detail, bool was_up)
{
    sy_flagstore_t *s = ud;
    if (s->destroying)
        return;
    if (detail != NULL && (s->st.last_error[0] == '\0' || sy_redis_reconnects(s->redis) % 20 == 0))
        sy_warn("redis %s: cannot connect (%s); routing stays on the last good flags", s->rc->address, detail);
    if (was_up)
        sy_warn("redis %s: %s; routing stays on the last good flags while reconnecting", s->rc->address, why);
    fs_set_error(s, why, NULL);
    s->epoch++;
    s->st.connected = false;
    memset(s->reading, 0, s->n * sizeof(bool));
    s->sync_left = 0;
}

static void resync_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_flagstore_t *s = t->data;
    (void)loop;
    (void)revents;
    if (fs_up(s))
        sync_all(s);
}

static int start_redis(sy_flagstore_t *s)
{
    static const sy_redis_ops_t ops = {.up = on_up, .down = on_down, .message = on_message};
    char ip[64];
    sy_addr_format_ip((const struct sockaddr *)&s->rc->addr.ss, ip, sizeof(ip));
    int port = ntohs(((const struct sockaddr_in *)&s->rc->addr.ss)->sin_port);
    double every = (double)s->rc->resync_interval / 1e3;
    ev_timer_set(&s->resync_timer, every, every);
    ev_timer_start(s->loop, &s->resync_timer);
    if (s->rc->nsentinels > 0)
        s->redis = sy_redis_create_sentinel(s->loop, (const char *const *)s->rc->sentinels, s->rc->nsentinels,
                                            s->rc->master, s->rc->connect_timeout, s->rc->command_timeout, &ops, s);
    else
        s->redis = sy_redis_create(s->loop, ip, port, s->rc->connect_timeout, s->rc->command_timeout, &ops, s);
    return s->redis != NULL ? 0 : SY_ENOMEM;
}

/* --- life cycle ------------------------------------------------------------------ */

/* Frees the per-route and per-pool state (what load_config moved to the new
 * arrays was cleared). The writes still queued for a route that is gone are
 * answered now, except a head that the client holds (a reload): it is marked
 * gone, answered and freed by its callback. At destroy the client is freed first. */
static void free_route_state(sy_flagstore_t *s, bool reload)
{
    for (size_t i = 0; s->cur != NULL && i < s->n; i++) {
        sy_route_flags_clear(&s->cur[i]);
        sy_route_flags_clear(&s->stamped[i]);
        sy_refused_clear(&s->refs[i]);
        cas_ctx_t *c = s->wq[i];
        s->wq[i] = NULL;
        for (bool head = true; c != NULL; head = false) {
            cas_ctx_t *nx = c->qnext;
            c->gone = true;
            c->qnext = NULL;
            if (!(head && reload && !c->timer_on))
                fs_cas_end(c, SY_EUNAVAILABLE, NULL, NULL);
            c = nx;
        }
    }
    for (size_t j = 0; s->pcur != NULL && j < s->npools; j++) {
        sy_pool_flags_clear(&s->pcur[j]);
        sy_pool_flags_clear(&s->pstamped[j]);
        sy_refused_clear(&s->prefs[j]);
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

/* The per-route and per-pool arrays of a config being loaded. */
typedef struct state_arrays {
    size_t n, npools;
    sy_route_flags_t *cur, *stamped;
    bool *dirty, *reading, *pq, *adopting;
    pending_local_t *pending;
    cas_ctx_t **wq;
    size_t *wqlen;
    sy_refused_t *refs, *prefs;
    sy_pool_flags_t *pcur, *pst;
    bool *pdirty, *padopting;
} state_arrays_t;

static void arrays_free(state_arrays_t *a)
{
    for (size_t i = 0; a->cur != NULL && i < a->n; i++)
        sy_route_flags_clear(&a->cur[i]);
    for (size_t j = 0; a->pcur != NULL && j < a->npools; j++)
        sy_pool_flags_clear(&a->pcur[j]);
    free(a->cur);
    free(a->dirty);
    free(a->reading);
    free(a->pending);
    free(a->wq);
    free(a->wqlen);
    free(a->pq);
    free(a->adopting);
    free(a->stamped);
    free(a->refs);
    free(a->prefs);
    free(a->pcur);
    free(a->pst);
    free(a->pdirty);
    free(a->padopting);
}

static int arrays_alloc(state_arrays_t *a, size_t n, size_t npools)
{
    memset(a, 0, sizeof(*a));
    a->n = n;
    a->npools = npools;
    a->cur = calloc(n + 1, sizeof(*a->cur));
    a->dirty = calloc(n + 1, sizeof(bool));
    a->reading = calloc(n + 1, sizeof(bool));
    a->pending = calloc(n + 1, sizeof(*a->pending));
    a->wq = calloc(n + 1, sizeof(*a->wq));
    a->wqlen = calloc(n + 1, sizeof(size_t));
    a->pq = calloc(n + 1, sizeof(bool));
    a->adopting = calloc(n + 1, sizeof(bool));
    a->stamped = calloc(n + 1, sizeof(*a->stamped));
    a->refs = calloc(n + 1, sizeof(*a->refs));
    a->prefs = calloc(npools + 1, sizeof(*a->prefs));
    a->pcur = calloc(npools + 1, sizeof(*a->pcur));
    a->pst = calloc(npools + 1, sizeof(*a->pst));
    a->pdirty = calloc(npools + 1, sizeof(bool));
    a->padopting = calloc(npools + 1, sizeof(bool));
    if (a->cur == NULL || a->dirty == NULL || a->reading == NULL || a->pending == NULL || a->wq == NULL ||
        a->wqlen == NULL || a->pq == NULL || a->adopting == NULL || a->stamped == NULL || a->refs == NULL ||
        a->prefs == NULL || a->pcur == NULL || a->pst == NULL || a->pdirty == NULL || a->padopting == NULL)
        return SY_ENOMEM;
    return 0;
}

/* The index of new pool j among the old config's coloured pools, or -1. */
static long old_pool(const sy_flagstore_t *s, const sy_config_t *cfg, size_t j, bool live)
{
    for (size_t o = 0; live && s->cfg != NULL && o < s->npools; o++)
        if (strcmp(s->cfg->pools[o].name, cfg->pools[j].name) == 0 && s->cfg->pools[o].colored &&
            cfg->pools[j].colored)
            return (long)o;
    return -1;
}

static long old_route(const sy_flagstore_t *s, const sy_routes_t *rs, size_t i, bool live)
{
    return s->routes && live ? fs_route_index(s, rs->routes[i].name, strlen(rs->routes[i].name)) : -1;
}

/* The flags in force of the new config (copies: may fail). With Redis, a route
 * or pool that existed before keeps its live flags (and pending writes) until
 * Redis is read again; without it the config is the source. */
static int copy_flags(sy_flagstore_t *s, sy_config_t *cfg, const sy_routes_t *rs, state_arrays_t *a, bool live)
{
    sy_routing_t *def = sy_routing_from_config(cfg);
    if (def == NULL)
        return SY_ENOMEM;
    for (size_t j = 0; j < cfg->npools; j++) {
        a->pcur[j].active = cfg->pools[j].active_default;
        a->pcur[j].source = "config";
        long o = old_pool(s, cfg, j, live);
        if (o >= 0 && sy_pool_flags_copy(&a->pcur[j], &s->pcur[o]) != 0)
            goto fail;
    }
    for (size_t i = 0; i < rs->n; i++) {
        long old = old_route(s, rs, i, live);
        if (sy_route_flags_copy(&a->cur[i], old >= 0 ? &s->cur[old] : &def->flags[i]) != 0)
            goto fail;
        if (old >= 0)
            a->pending[i] = s->pending[old];
    }
    sy_routing_free(def);
    return 0;
fail:
    sy_routing_free(def);
    return SY_ENOMEM;
}

/* What belongs to a route or pool moves with its name (cannot fail). */
static void carry_state(sy_flagstore_t *s, sy_config_t *cfg, const sy_routes_t *rs, state_arrays_t *a, bool live)
{
    for (size_t i = 0; i < rs->n; i++) {
        long old = old_route(s, rs, i, live);
        if (old < 0)
            continue;
        a->wq[i] = s->wq[old];
        a->wqlen[i] = s->wqlen[old];
        a->pq[i] = s->pending_queued[old];
        a->adopting[i] = s->adopting[old];
        a->stamped[i] = s->stamped[old];
        a->refs[i] = s->refs[old];
        s->wq[old] = NULL;
        s->wqlen[old] = 0;
        memset(&s->stamped[old], 0, sizeof(s->stamped[old]));
        memset(&s->refs[old], 0, sizeof(s->refs[old]));
        for (cas_ctx_t *c = a->wq[i]; c != NULL; c = c->qnext)
            c->route = i;
    }
    for (size_t j = 0; j < cfg->npools; j++) {
        long o = old_pool(s, cfg, j, live);
        if (o < 0)
            continue;
        a->pst[j] = s->pstamped[o];
        a->prefs[j] = s->prefs[o];
        a->padopting[j] = s->padopting[o];
        memset(&s->pstamped[o], 0, sizeof(s->pstamped[o]));
        memset(&s->prefs[o], 0, sizeof(s->prefs[o]));
    }
}

static void install(sy_flagstore_t *s, sy_config_t *cfg, const sy_routes_t *rs, const state_arrays_t *a)
{
    s->wq = a->wq;
    s->wqlen = a->wqlen;
    s->pending_queued = a->pq;
    s->adopting = a->adopting;
    s->stamped = a->stamped;
    s->refs = a->refs;
    s->prefs = a->prefs;
    s->pstamped = a->pst;
    s->padopting = a->padopting;
    s->pcur = a->pcur;
    s->pdirty = a->pdirty;
    s->npools = cfg->npools;
    if (s->cfg != NULL)
        sy_config_release(s->cfg);
    s->cfg = sy_config_ref(cfg);
    s->routes = rs;
    s->rc = sy_config_ext(cfg, "redis");
    s->cur = a->cur;
    s->n = rs->n;
    s->dirty = a->dirty;
    s->reading = a->reading;
    s->pending = a->pending;
    s->st.configured = s->rc != NULL;
}

static int load_config(sy_flagstore_t *s, sy_config_t *cfg)
{
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    if (rs == NULL)
        return SY_ENOMEM;
    bool live = sy_config_ext(cfg, "redis") != NULL;
    state_arrays_t a;
    if (arrays_alloc(&a, rs->n, cfg->npools) != 0 || copy_flags(s, cfg, rs, &a, live) != 0) {
        arrays_free(&a);
        return SY_ENOMEM;
    }
    carry_state(s, cfg, rs, &a, live);
    free_route_state(s, true);
    install(s, cfg, rs, &a);
    return 0;
}

sy_flagstore_t *sy_flagstore_create(struct ev_loop *loop, sy_config_t *cfg, sy_flags_publish_fn publish, void *ud)
{
    sy_flagstore_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->publish = publish;
    s->ud = ud;
    if (load_config(s, cfg) != 0) {
        free(s);
        return NULL;
    }
    ev_init(&s->dirty_timer, dirty_cb);
    ev_init(&s->resync_timer, resync_cb);
    s->dirty_timer.data = s->resync_timer.data = s;
    fs_publish(s);
    if (s->rc != NULL && start_redis(s) != 0) {
        sy_flagstore_destroy(s);
        return NULL;
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
    fs_publish(s);
    if (fs_up(s))
        sync_all(s);
}

/* Writes still waiting for Redis are answered with 503 from here, so destroy
 * the store before whoever waits for those answers. */
void sy_flagstore_destroy(sy_flagstore_t *s)
{
    if (s == NULL)
        return;
    s->destroying = true;
    ev_timer_stop(s->loop, &s->dirty_timer);
    ev_timer_stop(s->loop, &s->resync_timer);
    sy_redis_destroy(s->redis);
    s->redis = NULL;
    free_route_state(s, false);
    free(s->retire.last_active);
    sy_config_release(s->cfg);
    free(s);
}

void sy_flagstore_status(const sy_flagstore_t *s, sy_flagstore_status_t *out)
{
    *out = s->st;
    out->reconnects = sy_redis_reconnects(s->redis);
    sy_redis_peer(s->redis, out->server, sizeof(out->server));
}

const sy_route_flags_t *sy_flagstore_flags(const sy_flagstore_t *s)
{
    return s->cur;
}

const sy_config_t *sy_flagstore_config(const sy_flagstore_t *s)
{
    return s->cfg;
}

const sy_pool_flags_t *sy_flagstore_pools(const sy_flagstore_t *s)
{
    return s->pcur;
}

struct sy_redis *sy_flagstore_redis(sy_flagstore_t *s)
{
    return s != NULL ? s->redis : NULL;
}

const char *sy_flagstore_redis_prefix(const sy_flagstore_t *s)
{
    return s != NULL && s->rc != NULL ? s->rc->prefix : "switchyard:";
}
