/* The record's sink: what the stores, the comparator and the trip owner call
 * to record an event or a per-period window row, with no knowledge of what
 * emits it (the record, flags/audit.c, implements it: sy_audit_sink). A sink
 * with NULL functions, or a NULL sink pointer, records nothing.
 *
 * Contract: every call is made on the control thread; everything passed is
 * borrowed for the duration of the call (the sink copies what it keeps); the
 * sink never calls back into the caller. Header only. */
#ifndef SY_SINK_H
#define SY_SINK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sy_event {
    const char *kind;   /* flag_change, rollback, resume, promote, trip, warning, hand_edit,
                         * refused_edit, swap, reload, start, stop */
    const char *route;  /* route or pool; NULL for the gateway itself */
    const char *actor, *reason;
    json_t *before, *after, *stats; /* borrowed; NULL: none */
    const char *id_text; /* NULL: a fresh random id; else the id is derived from
                          * this text (same text, same id: instances that see the
                          * same edit record one event) */
} sy_event_t;

typedef struct sy_window_row {
    int64_t at_ms;       /* start of the period, UTC epoch ms */
    const char *route, *variant; /* variant: "legacy" or "new" */
    uint64_t requests, errors;
    double p50_ms, p95_ms, p99_ms;
} sy_window_row_t;

typedef struct sy_sink {
    void (*event)(void *ctx, const sy_event_t *ev);
    void (*window)(void *ctx, const sy_window_row_t *w);
    void *ctx;
} sy_sink_t;

static inline void sy_sink_event(const sy_sink_t *k, const sy_event_t *ev)
{
    if (k != NULL && k->event != NULL)
        k->event(k->ctx, ev);
}

static inline void sy_sink_window(const sy_sink_t *k, const sy_window_row_t *w)
{
    if (k != NULL && k->window != NULL)
        k->window(k->ctx, w);
}

#endif
