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
 * (a connection direction); it is never shared between threads.
 *
 * Pool memory: each block is its own anonymous mapping (mmap), never a malloc
 * chunk, so a block given back goes back to the kernel whole and big blocks
 * cannot pin the heap (interleaved with small long-lived objects, 32 KiB malloc
 * chunks freed after a connection spike left the worker arenas fragmented and
 * the RSS creeping from one spike to the next). Released blocks are cached on a
 * free list of at most free_max; sy_bufpool_trim(), called about once a second,
 * unmaps the cached blocks that no take needed since the previous call (the low
 * watermark of the free list), keeping free_keep, so a spike's blocks are
 * returned within two calls after it ends and steady traffic keeps its blocks. */
#ifndef SY_BUF_H
#define SY_BUF_H

#include "proxy/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sy_bufpool {
    size_t block_size;   /* every block is this many bytes (cap of a buffer) */
    size_t _map_len;     /* block_size rounded up to pages: the mapping's length */
    void *free_list;     /* singly linked through the first word of each block */
    size_t free_count;
    size_t free_max;     /* blocks cached for reuse; more are unmapped at once */
    size_t free_keep;    /* blocks sy_bufpool_trim leaves cached (free_max / 64) */
    size_t _free_low;    /* lowest free_count since the last trim */
    size_t in_use;       /* blocks handed out and not yet returned */
    size_t mapped;       /* blocks mapped: in_use + free_count */
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
/* Unmaps the cached blocks above free_keep that stayed unused since the previous
 * call. Call it periodically (about once a second) from the pool's thread.
 * Returns the number of blocks unmapped. */
size_t sy_bufpool_trim(sy_bufpool_t *pool);

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
