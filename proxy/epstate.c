#include "proxy/epstate.h"

#include <stdlib.h>
#include <string.h>

sy_epstate_t *sy_epstate_alloc(size_t nendpoints, size_t nworkers)
{
    sy_epstate_t *t = calloc(1, sizeof(*t));
    size_t n = nendpoints ? nendpoints : 1, w = nworkers ? nworkers : 1;
    if (t == NULL)
        return NULL;
    t->slots = calloc(n, sizeof(*t->slots));
    t->shards = aligned_alloc(_Alignof(sy_epshard_t), n * w * sizeof(*t->shards));
    if (t->slots == NULL || t->shards == NULL) {
        free(t->slots);
        free(t->shards);
        free(t);
        return NULL;
    }
    memset(t->shards, 0, n * w * sizeof(*t->shards));
    for (size_t i = 0; i < n; i++) {
        atomic_init(&t->slots[i].down, 0);
        atomic_init(&t->slots[i].probe_ok, 0);
        atomic_init(&t->slots[i].retired_ms, 0);
    }
    atomic_init(&t->refs, 1);
    t->nendpoints = nendpoints;
    t->nworkers = nworkers;
    return t;
}

sy_epstate_t *sy_epstate_ref(sy_epstate_t *t)
{
    if (t != NULL)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void sy_epstate_release(sy_epstate_t *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(t->slots);
    free(t->shards);
    free(t);
}
