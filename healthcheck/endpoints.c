#include "healthcheck/endpoints.h"

#include <stdlib.h>
#include <string.h>

typedef struct table {
    const sy_config_t *cfg;   /* identity only: the table belongs to this config */
    sy_epstate_t *state;      /* a reference */
    size_t *prev_row;         /* [n]: its row in the previous table, or SIZE_MAX */
} table_t;

struct sy_endpoints {
    size_t nworkers;
    table_t cur, prev;
};

static size_t count_endpoints(const sy_config_t *cfg)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->npools; i++)
        n += cfg->pools[i].nendpoints;
    return n;
}

static void table_clear(table_t *t)
{
    sy_epstate_release(t->state);
    free(t->prev_row);
    memset(t, 0, sizeof(*t));
}

static int table_init(table_t *t, const sy_config_t *cfg, size_t nworkers)
{
    size_t n = count_endpoints(cfg);
    t->cfg = cfg;
    t->state = sy_epstate_alloc(n, nworkers);
    t->prev_row = malloc((n ? n : 1) * sizeof(size_t));
    if (t->state == NULL || t->prev_row == NULL) {
        table_clear(t);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        t->prev_row[i] = SIZE_MAX;
    return 0;
}

sy_endpoints_t *sy_endpoints_create(const sy_config_t *cfg, size_t nworkers)
{
    sy_endpoints_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->nworkers = nworkers;
    if (table_init(&o->cur, cfg, nworkers) != 0) {
        free(o);
        return NULL;
    }
    return o;
}

void sy_endpoints_destroy(sy_endpoints_t *o)
{
    if (o == NULL)
        return;
    table_clear(&o->cur);
    table_clear(&o->prev);
    free(o);
}

/* The row of the endpoint named `name` (of pool `pool` when it has one there) in cfg. */
static size_t find_row(const sy_config_t *cfg, const char *pool, const char *name)
{
    size_t any = SIZE_MAX;
    for (size_t i = 0; i < cfg->npools; i++)
        for (size_t e = 0; e < cfg->pools[i].nendpoints; e++) {
            const sy_endpoint_t *ep = &cfg->pools[i].endpoints[e];
            if (strcmp(ep->name, name) != 0)
                continue;
            if (strcmp(cfg->pools[i].name, pool) == 0)
                return ep->index;
            if (any == SIZE_MAX)
                any = ep->index;
        }
    return any;
}

int sy_endpoints_reload(sy_endpoints_t *o, const sy_config_t *cfg)
{
    table_t next = {0};
    if (cfg == o->cur.cfg)
        return 0;
    if (table_init(&next, cfg, o->nworkers) != 0)
        return -1;
    const sy_epstate_t *old = o->cur.state;
    for (size_t i = 0; i < cfg->npools; i++)
        for (size_t e = 0; e < cfg->pools[i].nendpoints; e++) {
            const sy_endpoint_t *ep = &cfg->pools[i].endpoints[e];
            size_t r = find_row(o->cur.cfg, cfg->pools[i].name, ep->name);
            if (r == SIZE_MAX || r >= old->nendpoints)
                continue;
            sy_epslot_t *to = &next.state->slots[ep->index];
            const sy_epslot_t *from = &old->slots[r];
            atomic_store(&to->down, atomic_load(&from->down));
            atomic_store(&to->probe_ok, atomic_load(&from->probe_ok));
            atomic_store(&to->retired_ms, atomic_load(&from->retired_ms));
            next.prev_row[ep->index] = r;
        }
    table_clear(&o->prev);
    o->prev = o->cur;
    o->cur = next;
    return 0;
}

static const table_t *table_of(const sy_endpoints_t *o, const sy_config_t *cfg)
{
    if (o == NULL || cfg == NULL)
        return NULL;
    if (cfg == o->cur.cfg)
        return &o->cur;
    if (cfg == o->prev.cfg && o->prev.state != NULL)
        return &o->prev;
    return NULL;
}

sy_epstate_t *sy_endpoints_table(const sy_endpoints_t *o, const sy_config_t *cfg)
{
    const table_t *t = table_of(o, cfg);
    return t != NULL ? t->state : NULL;
}

/* The slot of ep in cfg's table; NULL when there is none. */
static sy_epslot_t *slot_of(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep)
{
    const table_t *t = table_of(o, cfg);
    return t != NULL && ep != NULL && ep->index < t->state->nendpoints ? &t->state->slots[ep->index] : NULL;
}

bool sy_endpoints_is_down(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep)
{
    const sy_epslot_t *s = slot_of(o, cfg, ep);
    return s != NULL && atomic_load_explicit(&s->down, memory_order_relaxed);
}

int sy_endpoints_good_probes(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep)
{
    const sy_epslot_t *s = slot_of(o, cfg, ep);
    return s != NULL ? atomic_load_explicit(&s->probe_ok, memory_order_relaxed) : 0;
}

static long inflight_row(const sy_epstate_t *t, size_t i)
{
    long n = 0;
    for (size_t w = 0; t != NULL && i < t->nendpoints && w < t->nworkers; w++)
        n += atomic_load_explicit(&sy_epstate_shard(t, (int)w, i)->inflight, memory_order_relaxed);
    return n;
}

long sy_endpoints_inflight(const sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep)
{
    const table_t *t = table_of(o, cfg);
    if (t == NULL || ep == NULL)
        return 0;
    long n = inflight_row(t->state, ep->index);
    if (t == &o->cur && o->prev.state != NULL && ep->index < t->state->nendpoints &&
        t->prev_row[ep->index] != SIZE_MAX)
        n += inflight_row(o->prev.state, t->prev_row[ep->index]);
    return n;
}

unsigned long sy_endpoints_connect_failures(const sy_epstate_t *t, size_t i)
{
    unsigned long run = 0;
    for (size_t w = 0; t != NULL && i < t->nendpoints && w < t->nworkers; w++) {
        const sy_epshard_t *s = sy_epstate_shard(t, (int)w, i);
        unsigned long failed = atomic_load_explicit(&s->connect_failed, memory_order_relaxed);
        unsigned long mark = atomic_load_explicit(&s->connect_mark, memory_order_relaxed);
        unsigned long base = atomic_load_explicit(&s->connect_base, memory_order_relaxed);
        unsigned long from = mark > base ? mark : base;
        run += failed > from ? failed - from : 0;
    }
    return run;
}

void sy_endpoints_probed(sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep, int good_in_a_row)
{
    sy_epslot_t *s = slot_of(o, cfg, ep);
    if (s != NULL)
        atomic_store_explicit(&s->probe_ok, good_in_a_row, memory_order_relaxed);
}

bool sy_endpoints_set_down(sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep, bool down)
{
    sy_epslot_t *s = slot_of(o, cfg, ep);
    if (s == NULL)
        return false;
    if (!down) { /* back in: its failed connects so far no longer count */
        const sy_epstate_t *t = table_of(o, cfg)->state;
        for (size_t w = 0; w < t->nworkers; w++) {
            sy_epshard_t *sh = sy_epstate_shard(t, (int)w, ep->index);
            atomic_store_explicit(&sh->connect_base, atomic_load_explicit(&sh->connect_failed, memory_order_relaxed),
                                  memory_order_relaxed);
        }
    }
    return atomic_exchange(&s->down, down ? 1 : 0) != (down ? 1 : 0);
}

bool sy_endpoints_eject(sy_epstate_t *t, size_t i, unsigned long *run)
{
    if (t == NULL || i >= t->nendpoints)
        return false;
    unsigned long n = sy_endpoints_connect_failures(t, i);
    if (run != NULL)
        *run = n;
    if (n < SY_EJECT_CONNECT_FAILURES || atomic_load_explicit(&t->slots[i].down, memory_order_relaxed))
        return false;
    return atomic_exchange(&t->slots[i].down, 1) == 0;
}

void sy_endpoints_retire(sy_endpoints_t *o, const sy_config_t *cfg, const sy_endpoint_t *ep, int64_t since_ms)
{
    sy_epslot_t *s = slot_of(o, cfg, ep);
    if (s != NULL)
        atomic_store_explicit(&s->retired_ms, since_ms, memory_order_relaxed);
}

/* --- the swap's view ------------------------------------------------------------ */

static int pool_good_probes(void *ud, const sy_config_t *cfg, const sy_endpoint_t *ep)
{
    return sy_endpoints_is_down(ud, cfg, ep) ? -1 : sy_endpoints_good_probes(ud, cfg, ep);
}

static int64_t pool_retired(void *ud, const sy_config_t *cfg, const sy_endpoint_t *ep)
{
    return sy_epstate_retired_ms(sy_endpoints_table(ud, cfg), ep->index);
}

static void pool_retire(void *ud, const sy_config_t *cfg, const sy_endpoint_t *ep, int64_t since_ms)
{
    sy_endpoints_retire(ud, cfg, ep, since_ms);
}

sy_pool_endpoints_t sy_endpoints_pool_ops(sy_endpoints_t *o)
{
    return (sy_pool_endpoints_t){.good_probes = pool_good_probes, .retired = pool_retired, .retire = pool_retire, .ud = o};
}
