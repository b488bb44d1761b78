/* The one I/O buffer type.
 *
 * A sy_buf_t is a window [off, off+len) of valid bytes inside a block of `cap`
 * bytes at `base`. Invariants:
 *   - base == NULL  <=>  cap == 0 (no memory held; the buffer is "released");
 *   - off + len <= cap;
 *   - len == 0 implies the holder may hand the block back (sy_buf_release) at any
 *     time: an empty buffer keeps no state worth keeping.
 * Blocks come from a per-thread sy_bufpool_t (one size class), taken lazily when
 * there is something to store and returned when empty, so an idle keep-alive
 * connection holds no buffer memory. A buffer is owned by exactly one object
 * (a connection direction); it is never shared between threads. */
#ifndef SY_BUF_H
#define SY_BUF_H

#include "proxy/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sy_bufpool {
    size_t block_size;   /* every block is this many bytes */
    void *free_list;     /* singly linked through the first word of each block */
    size_t free_count;
    size_t free_max;     /* blocks kept for reuse; more are given back to malloc */
    size_t in_use;       /* blocks handed out and not yet returned */
} sy_bufpool_t;

typedef struct sy_buf {
    char *base;
    uint32_t off;
    uint32_t len;
    uint32_t cap;
} sy_buf_t;

void sy_bufpool_init(sy_bufpool_t *pool, size_t block_size, size_t free_max);
/* Frees every cached block. Blocks still in use stay the caller's bug (asserted). */
void sy_bufpool_destroy(sy_bufpool_t *pool);

/* Makes sure buf holds a block. Returns 0 or SY_ENOMEM. */
int sy_buf_take(sy_buf_t *buf, sy_bufpool_t *pool) SY_MUST_USE;
/* Returns the block to the pool (whatever it holds) and resets buf. Idempotent. */
void sy_buf_release(sy_buf_t *buf, sy_bufpool_t *pool);
/* Releases the block if the buffer is empty. */
void sy_buf_release_if_empty(sy_buf_t *buf, sy_bufpool_t *pool);

static inline char *sy_buf_data(const sy_buf_t *b) { return b->base + b->off; }
static inline char *sy_buf_tail(const sy_buf_t *b) { return b->base + b->off + b->len; }
static inline size_t sy_buf_room(const sy_buf_t *b) { return (size_t)b->cap - b->off - b->len; }

/* Moves the valid bytes to the start of the block so that room is maximal. */
void sy_buf_compact(sy_buf_t *b);
/* Drops n bytes from the front. */
void sy_buf_consume(sy_buf_t *b, size_t n);
/* Appends n bytes; compacts first if needed. Returns 0, or SY_ELIMIT when they do
 * not fit (nothing is appended then). The buffer must hold a block. */
int sy_buf_append(sy_buf_t *b, const void *p, size_t n) SY_MUST_USE;
/* printf-style append with the same all-or-nothing rule. */
int sy_buf_appendf(sy_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3))) SY_MUST_USE;

#endif
