/* The flag store's insides, shared by its files and by nothing else:
 * store.c (life cycle, the Redis session, the record), store_read.c (reads and
 * the adoption of hand edits), store_write.c (compare-and-set writes, one
 * queue per route) and pools.c (blue-green: the swap's owner). */
#ifndef SY_STORE_INT_H
#define SY_STORE_INT_H

#include "flags/pools.h"
#include "flags/redis.h"
#include "flags/refused.h"
#include "flags/sink.h"
#include "flags/store.h"
#include "routing/route.h"

#define MAX_CAS_ATTEMPTS 3
#define MAX_PENDING_ATTEMPTS 5 /* then again at the next read (resync or notification) */
#define MAX_QUEUED_WRITES 16   /* per route, the one in flight included */
#define MAX_REFUSALS 32        /* distinct refused values remembered per key */

#define HAND_ACTOR "hand"
#define HAND_REASON "changed in Redis directly, not through Switchyard"

typedef struct cas_ctx cas_ctx_t;

/* What the retirement of an old colour remembers between publishes. */
typedef struct pools_retire {
    int *last_active;          /* per pool, to notice swaps */
    size_t last_npools;
    uint64_t close_idle_serial;
} pools_retire_t;

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

    sy_redis_t *redis;       /* NULL without a redis section */
    uint64_t epoch;          /* bumped when the connection drops: older replies are stale */
    ev_timer resync_timer, dirty_timer;
    bool *dirty;
    bool *reading;
    pending_local_t *pending;
    size_t sync_left;        /* reads left in the current full sync */
    bool full_sync;
    bool destroying;
    cas_ctx_t **wq;          /* per route: its writes in order, the head in flight (one per key) */
    size_t *wqlen;
    bool *pending_queued;    /* per route: the pending local change has a write in wq */
    bool *adopting;          /* per route: a hand edit's adoption is in wq */
    sy_route_flags_t *stamped; /* per route: the flags at the last version written (by anyone) */
    sy_pool_flags_t *pstamped; /* per pool: the same (source NULL: not read yet) */
    bool *padopting;
    sy_refused_t *refs, *prefs; /* per route, per pool: refused values still in Redis */
    char ref_version[24];    /* the version of the key being read: in a refused edit's id */
    sy_sink_t sink;          /* the record (no functions: none) */
    pools_retire_t retire;    /* pools.c: the old colour's retirement */
    sy_pool_endpoints_t eps;  /* pools.c: the endpoints' state (healthcheck/endpoints.c) */
    sy_flagstore_status_t st;
};

/* cas_write's mode: a change to record when written, the seeding of a missing
 * key, the adoption of a hand edit (only version, actor, reason, updated_at are
 * written), or the local change that waits for Redis (pending). */
enum { CAS_RECORD = 1, CAS_SEED = 2, CAS_ADOPT = 4, CAS_PENDING = 8 };

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

/* store.c */
void fs_key_of(const sy_flagstore_t *s, size_t i, bool users, char *out, size_t cap);
void fs_channel(const sy_flagstore_t *s, char *out, size_t cap);
long fs_route_index(const sy_flagstore_t *s, const char *name, size_t len);
void fs_set_error(sy_flagstore_t *s, const char *what, const char *detail);
void fs_publish(sy_flagstore_t *s);
void fs_mark_dirty(sy_flagstore_t *s, long i);
bool fs_up(const sy_flagstore_t *s);
int fs_send(sy_flagstore_t *s, sy_redis_reply_fn fn, void *ud, int argc, const char **argv);
const char *fs_op_kind(sy_flag_op_t op);
/* The record: before and after are taken; stats borrowed. */
void fs_record(sy_flagstore_t *s, const char *kind, const char *name, const char *actor, const char *reason,
               json_t *before, json_t *after, json_t *stats, const char *id_text);
void fs_record_route(sy_flagstore_t *s, const char *kind, size_t i, const char *actor, const char *reason,
                     const sy_route_flags_t *before, const sy_route_flags_t *after, json_t *stats);
void fs_record_hand_edit(sy_flagstore_t *s, const char *what, const char *name, uint64_t version, const char *stamp,
                         json_t *before, json_t *after);
/* A refused (field, value) of key `what``name`: logged, counted and recorded
 * the first time a read sees it. */
void fs_ref_note(sy_flagstore_t *s, sy_refused_t *l, const char *what, const char *name, const char *field,
                 const char *value, const char *why, const char *in_force, bool error_level);
void fs_field_in_force(const sy_route_flags_t *f, const char *field, char *out, size_t cap);

/* store_read.c */
/* Reads route i's hash and test users; with retry, for that write. */
void fs_read_route(sy_flagstore_t *s, size_t i, cas_ctx_t *retry);
void fs_set_stamped(sy_flagstore_t *s, size_t i, const sy_route_flags_t *f);

/* store_write.c */
void fs_finish(sy_flags_done_fn done, void *ud, sy_err_t status, const char *err, const sy_route_flags_t *res);
void fs_cas_write(sy_flagstore_t *s, size_t i, const sy_route_flags_t *next, const sy_flag_request_t *req,
                  const char *expect, int attempts, int mode, sy_flags_done_fn done, void *ud);
void fs_cas_end(cas_ctx_t *c, sy_err_t status, const char *err, const sy_route_flags_t *res);
void fs_cas_fail(cas_ctx_t *c, const char *why);
/* After a read, a write (queued, or after a CONFLICT) is computed on base and sent. */
void fs_retry_after_read(sy_flagstore_t *s, cas_ctx_t *c, const sy_route_flags_t *base);

/* pools.c */
void fs_read_pool(sy_flagstore_t *s, size_t j);
long fs_pool_index(const sy_flagstore_t *s, const char *name, size_t len);
json_t *fs_pool_json(const sy_pool_flags_t *p);
/* At every publish: endpoints of an inactive colour are retired (what still
 * runs on them gets timeouts.drain from now), and a change of active colour
 * bumps the serial that closes idle connections to the old colour. Returns
 * that serial. */
uint64_t fs_pools_retire(sy_flagstore_t *s, int64_t now_ms);

#endif
