#include "healthcheck/colours.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* One pool x colour in one worker's shard. Written by that worker only. */
typedef struct ccell {
    _Atomic uint64_t requests, errors, sum_us;
    _Atomic uint32_t hist[SY_HIST_BUCKETS];
} ccell_t;

struct sy_colours {
    size_t nworkers;
    ccell_t *cells; /* [worker][pool][colour] */
};

#define BUMP(x, n) atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n), \
                                         memory_order_relaxed)
#define READ(x) atomic_load_explicit(&(x), memory_order_relaxed)

static ccell_t *cell_of(const sy_colours_t *c, size_t worker, size_t pool, int colour)
{
    return &c->cells[(worker * SY_COLOURS_MAX_POOLS + pool) * 2 + (size_t)colour];
}

sy_colours_t *sy_colours_create(size_t nworkers)
{
    sy_colours_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nworkers = nworkers;
    c->cells = calloc(nworkers * SY_COLOURS_MAX_POOLS * 2, sizeof(ccell_t));
    if (c->cells == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void sy_colours_destroy(sy_colours_t *c)
{
    if (c == NULL)
        return;
    free(c->cells);
    free(c);
}

void sy_colours_record(sy_colours_t *c, int worker, const sy_config_t *cfg, const sy_endpoint_t *ep, bool err,
                       uint64_t total_us)
{
    if (c == NULL || ep == NULL || worker < 0 || (size_t)worker >= c->nworkers)
        return;
    /* An endpoint lies inside its pool's array: a pointer comparison finds it. */
    for (size_t p = 0; p < cfg->npools && p < SY_COLOURS_MAX_POOLS; p++) {
        const sy_pool_t *pool = &cfg->pools[p];
        if (ep < pool->endpoints || ep >= pool->endpoints + pool->nendpoints)
            continue;
        if (!pool->colored)
            return;
        size_t e = (size_t)(ep - pool->endpoints);
        int colour = e >= pool->color_first[SY_GREEN] && pool->color_count[SY_GREEN] > 0 ? SY_GREEN : SY_BLUE;
        ccell_t *cell = cell_of(c, (size_t)worker, p, colour);
        BUMP(cell->requests, 1);
        if (err)
            BUMP(cell->errors, 1);
        BUMP(cell->sum_us, total_us);
        BUMP(cell->hist[sy_hist_index(total_us)], 1);
        return;
    }
}

void sy_colours_get(const sy_colours_t *c, size_t pool, int colour, sy_side_t *out)
{
    memset(out, 0, sizeof(*out));
    if (c == NULL || pool >= SY_COLOURS_MAX_POOLS || colour < 0 || colour > 1)
        return;
    for (size_t w = 0; w < c->nworkers; w++) {
        ccell_t *cell = cell_of(c, w, pool, colour);
        out->requests += READ(cell->requests);
        out->errors += READ(cell->errors);
        out->total.sum_us += READ(cell->sum_us);
        for (unsigned i = 0; i < SY_HIST_BUCKETS; i++)
            out->total.counts[i] += READ(cell->hist[i]);
    }
    for (unsigned i = 0; i < SY_HIST_BUCKETS; i++)
        out->total.total += out->total.counts[i];
}
