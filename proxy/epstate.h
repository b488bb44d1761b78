/* The endpoints' run-time state, out of the immutable config: one table per
 * config, indexed by sy_endpoint_t.index, reference-counted (each snapshot built
 * on that config holds a reference, so a request reads and writes the table its
 * decision came from).
 *
 * The table's owner is healthcheck/endpoints.c: it creates it from a config,
 * carries the state over by endpoint name on a reload, and is the only writer of
 * the per-endpoint part (down, good probes, retirement), on the control thread
 * (and the observer's passive ejection, through it). proxy/ only declares the
 * type and gives the workers their part:
 *
 *   shard(w, i)  written by worker w only (plain relaxed loads and stores, no
 *                read-modify-write on shared memory): the exchanges in flight on
 *                endpoint i and its failed connects; summed on the control thread
 *                (/status, the drain counts, passive ejection).
 *   slot(i)      down and retired_ms, read by the router and the workers.
 */
#ifndef SY_EPSTATE_H
#define SY_EPSTATE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sy_epslot {
    atomic_int down;                  /* 1: out (probes or passive ejection) */
    atomic_int probe_ok;              /* good probes in a row (control thread) */
    atomic_int_fast64_t retired_ms;   /* its colour stopped being active (ms); 0: active */
} sy_epslot_t;

/* One worker's counters for one endpoint, alone on its cache line. */
typedef struct sy_epshard {
    _Alignas(64) atomic_long inflight;   /* exchanges holding a connection to it */
    atomic_ulong connect_failed;         /* failed connects, ever (grows only) */
    atomic_ulong connect_mark;           /* connect_failed at its last good connect */
    atomic_ulong connect_base;           /* connect_failed when it came back (written by the owner) */
} sy_epshard_t;

typedef struct sy_epstate {
    atomic_long refs;
    size_t nendpoints, nworkers;
    sy_epslot_t *slots;               /* [nendpoints] */
    sy_epshard_t *shards;             /* [nworkers][nendpoints] */
} sy_epstate_t;

/* A table of n endpoints x w workers, all up, refs = 1. NULL when out of memory. */
sy_epstate_t *sy_epstate_alloc(size_t nendpoints, size_t nworkers);
sy_epstate_t *sy_epstate_ref(sy_epstate_t *t);
void sy_epstate_release(sy_epstate_t *t);

static inline sy_epshard_t *sy_epstate_shard(const sy_epstate_t *t, int worker, size_t i)
{
    return &t->shards[(size_t)worker * t->nendpoints + i];
}

static inline int sy_epstate_down(const sy_epstate_t *t, size_t i)
{
    return t != NULL && i < t->nendpoints && atomic_load_explicit(&t->slots[i].down, memory_order_relaxed);
}

static inline int64_t sy_epstate_retired_ms(const sy_epstate_t *t, size_t i)
{
    return t != NULL && i < t->nendpoints ? atomic_load_explicit(&t->slots[i].retired_ms, memory_order_relaxed) : 0;
}

/* Worker `worker` only: its own shard, one load and one store. */
static inline void sy_epstate_inflight_add(const sy_epstate_t *t, int worker, size_t i, long d)
{
    if (t == NULL || i >= t->nendpoints || worker < 0 || (size_t)worker >= t->nworkers)
        return;
    atomic_long *n = &sy_epstate_shard(t, worker, i)->inflight;
    atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + d, memory_order_relaxed);
}

static inline void sy_epstate_connect_result(const sy_epstate_t *t, int worker, size_t i, int ok)
{
    if (t == NULL || i >= t->nendpoints || worker < 0 || (size_t)worker >= t->nworkers)
        return;
    sy_epshard_t *s = sy_epstate_shard(t, worker, i);
    unsigned long failed = atomic_load_explicit(&s->connect_failed, memory_order_relaxed);
    if (!ok)
        atomic_store_explicit(&s->connect_failed, failed + 1, memory_order_relaxed);
    else if (atomic_load_explicit(&s->connect_mark, memory_order_relaxed) != failed)
        atomic_store_explicit(&s->connect_mark, failed, memory_order_relaxed);
}

#endif
