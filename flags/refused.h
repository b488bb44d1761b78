/* Refused edits still in Redis: per key, the distinct (field, value) pairs a
 * read refused, so each is logged, counted and recorded once (when first
 * seen), shown in /status, and forgotten once Redis holds something else.
 * Embedded by the stores (exposed); control thread only. */
#ifndef SY_REFUSED_H
#define SY_REFUSED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct sy_refusal {
    char *field, *value, *why, *in_force;
    char since[32];
    bool seen;
} sy_refusal_t;

typedef struct sy_refused {
    sy_refusal_t *_v;
    size_t _n;
} sy_refused_t;

/* Frees every entry; the list is empty after. */
void sy_refused_clear(sy_refused_t *l);
/* A read of the key starts: what it does not see again is dropped at end. */
void sy_refused_begin(sy_refused_t *l);
void sy_refused_end(sy_refused_t *l);
/* True when (field, value) is already known: it is marked seen by this read. */
bool sy_refused_seen(sy_refused_t *l, const char *field, const char *value);
/* Remembers a new refusal (strings copied; value cut at 256 bytes), at most
 * `cap` of them per key; out of memory or over the cap: not remembered. */
void sy_refused_add(sy_refused_t *l, const char *field, const char *value, const char *why, const char *in_force,
                    size_t cap);
/* A new JSON array of {field, value, why, since, in_force}. */
json_t *sy_refused_json(const sy_refused_t *l);

#endif
