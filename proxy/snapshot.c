#include "proxy/snapshot.h"

#include <assert.h>
#include <stdlib.h>

sy_snapshot_t *sy_snapshot_create(sy_config_t *cfg, void *data, void (*data_free)(void *))
{
    sy_snapshot_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        if (data_free != NULL)
            data_free(data);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->config = sy_config_ref(cfg);
    s->data = data;
    s->data_free = data_free;
    return s;
}

sy_snapshot_t *sy_snapshot_ref(sy_snapshot_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void sy_snapshot_release(sy_snapshot_t *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->data_free != NULL)
        s->data_free(s->data);
    sy_epstate_release(s->eps);
    sy_config_release(s->config);
    free(s);
}

void sy_snapshot_slot_init(sy_snapshot_slot_t *slot, size_t nreaders)
{
    assert(nreaders <= SY_SNAPSHOT_MAX_READERS);
    atomic_init(&slot->current, NULL);
    slot->next_generation = 1;
    slot->retired = NULL;
    slot->nreaders = nreaders;
    for (size_t i = 0; i < SY_SNAPSHOT_MAX_READERS; i++)
        atomic_init(&slot->seen[i], 0);
}

void sy_snapshot_publish(sy_snapshot_slot_t *slot, sy_snapshot_t *s)
{
    s->generation = slot->next_generation++;
    sy_snapshot_t *old = atomic_exchange_explicit(&slot->current, s, memory_order_acq_rel);
    if (old != NULL) {
        old->_retired_next = slot->retired;
        slot->retired = old;
    }
    sy_snapshot_reclaim(slot);
}

void sy_snapshot_reclaim(sy_snapshot_slot_t *slot)
{
    uint64_t min_seen = UINT64_MAX;
    for (size_t i = 0; i < slot->nreaders; i++) {
        uint64_t g = atomic_load_explicit(&slot->seen[i], memory_order_acquire);
        if (g < min_seen)
            min_seen = g;
    }
    /* A retired snapshot of generation g was replaced by one of generation > g;
     * once every reader announced >= g+1 none can load it any more. */
    sy_snapshot_t **pp = &slot->retired;
    while (*pp != NULL) {
        sy_snapshot_t *r = *pp;
        if (min_seen > r->generation) {
            *pp = r->_retired_next;
            sy_snapshot_release(r);
        } else {
            pp = &r->_retired_next;
        }
    }
}

void sy_snapshot_slot_destroy(sy_snapshot_slot_t *slot)
{
    for (size_t i = 0; i < slot->nreaders; i++)
        atomic_store(&slot->seen[i], UINT64_MAX);
    sy_snapshot_reclaim(slot);
    sy_snapshot_release(atomic_exchange(&slot->current, NULL));
}

sy_snapshot_t *sy_snapshot_refresh(sy_snapshot_slot_t *slot, size_t reader, sy_snapshot_t **held)
{
    sy_snapshot_t *cur = atomic_load_explicit(&slot->current, memory_order_acquire);
    if (cur == *held)
        return cur;
    /* Safe: cur is published or retired-but-unreclaimed, because this reader has
     * not yet announced a generation past it. */
    if (cur != NULL)
        sy_snapshot_ref(cur);
    sy_snapshot_release(*held);
    *held = cur;
    if (cur != NULL)
        atomic_store_explicit(&slot->seen[reader], cur->generation, memory_order_release);
    return cur;
}

void sy_snapshot_reader_exit(sy_snapshot_slot_t *slot, size_t reader, sy_snapshot_t **held)
{
    sy_snapshot_release(*held);
    *held = NULL;
    atomic_store_explicit(&slot->seen[reader], UINT64_MAX, memory_order_release);
}
