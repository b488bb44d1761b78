/* Immutable, reference-counted snapshots of what the data path needs (config,
 * routes, flags, endpoint choice), published by the control thread and read by
 * the workers without locks.
 *
 * Publication is one atomic pointer store. Readers (one per worker) compare the
 * published pointer with the one they hold at the start of each request and, when
 * it changed, take a reference on the new one and announce the generation they
 * now use. The control thread keeps its own reference on each replaced snapshot
 * until every reader has announced a newer generation (sy_snapshot_reclaim), so a
 * reader can never take a reference on a freed snapshot. A request holds its own
 * reference from start to end; the last release frees, on whatever thread. */
#ifndef SY_SNAPSHOT_H
#define SY_SNAPSHOT_H

#include "proxy/config.h"
#include "proxy/epstate.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct sy_snapshot {
    atomic_long refs;
    uint64_t generation;      /* set by sy_snapshot_publish */
    sy_config_t *config;      /* a reference, dropped with the snapshot */
    void *data;               /* the router's state for this snapshot; owned */
    void (*data_free)(void *data);
    sy_epstate_t *eps;        /* the endpoints' state for config (a reference, or NULL: all up) */
    uint64_t close_idle_serial; /* changed: workers close their idle upstream connections (a swap) */
    struct sy_snapshot *_retired_next; /* control thread only */
} sy_snapshot_t;

#define SY_SNAPSHOT_MAX_READERS 256

typedef struct sy_snapshot_slot {
    _Atomic(sy_snapshot_t *) current;
    uint64_t next_generation;                          /* control thread only */
    sy_snapshot_t *retired;                            /* control thread only */
    size_t nreaders;
    _Atomic uint64_t seen[SY_SNAPSHOT_MAX_READERS];    /* generation each reader uses */
} sy_snapshot_slot_t;

/* Creates a snapshot (refs = 1) taking a new reference on cfg and ownership of
 * data. Returns NULL on allocation failure (data is then freed). */
sy_snapshot_t *sy_snapshot_create(sy_config_t *cfg, void *data, void (*data_free)(void *));
sy_snapshot_t *sy_snapshot_ref(sy_snapshot_t *s);
void sy_snapshot_release(sy_snapshot_t *s);

void sy_snapshot_slot_init(sy_snapshot_slot_t *slot, size_t nreaders);
/* Control thread. Publishes s, taking over the caller's reference. The replaced
 * snapshot is retired until every reader has moved past it. */
void sy_snapshot_publish(sy_snapshot_slot_t *slot, sy_snapshot_t *s);
/* Control thread. Drops retired snapshots no reader can still pick up. */
void sy_snapshot_reclaim(sy_snapshot_slot_t *slot);
/* Control thread, at exit once readers are gone: drops everything. */
void sy_snapshot_slot_destroy(sy_snapshot_slot_t *slot);

/* Reader `reader`: makes *held the published snapshot (moving its reference) and
 * returns it. Cheap when nothing changed: one atomic load. */
sy_snapshot_t *sy_snapshot_refresh(sy_snapshot_slot_t *slot, size_t reader, sy_snapshot_t **held);
/* Reader leaves for good: drops *held and stops holding back reclamation. */
void sy_snapshot_reader_exit(sy_snapshot_slot_t *slot, size_t reader, sy_snapshot_t **held);

#endif
