#include "proxy/buf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SY_BUF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SY_BUF_ASAN 1
#endif
#endif
#ifdef SY_BUF_ASAN
#include <sanitizer/asan_interface.h>
/* A cached block is poisoned: a use after sy_buf_release is reported. */
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

void sy_bufpool_init(sy_bufpool_t *pool, size_t block_size, size_t free_max)
{
    memset(pool, 0, sizeof(*pool));
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    pool->block_size = block_size;
    pool->_map_len = (block_size + pg - 1) / pg * pg;
    pool->free_max = free_max;
    pool->free_keep = free_max / 64;
}

static void *pop_free(sy_bufpool_t *pool)
{
    void *block = pool->free_list;
    if (block == NULL)
        return NULL;
    UNPOISON(block, pool->block_size);
    pool->free_list = *(void **)block;
    pool->free_count--;
    if (pool->free_count < pool->_free_low)
        pool->_free_low = pool->free_count;
    return block;
}

static void unmap_block(sy_bufpool_t *pool, void *block)
{
    /* The shadow must be clean when the kernel hands the range out again. */
    UNPOISON(block, pool->block_size);
    munmap(block, pool->_map_len);
    pool->mapped--;
}

void sy_bufpool_destroy(sy_bufpool_t *pool)
{
    assert(pool->in_use == 0);
    void *block;
    while ((block = pop_free(pool)) != NULL)
        unmap_block(pool, block);
    pool->_free_low = 0;
}

size_t sy_bufpool_trim(sy_bufpool_t *pool)
{
    /* Blocks below the low watermark were not needed for a whole period: those
     * above free_keep go back to the kernel. The most recently released blocks
     * (warm pages) are at the head of the list; the cold ones are unmapped. */
    size_t spare = pool->_free_low > pool->free_keep ? pool->_free_low - pool->free_keep : 0;
    size_t n = 0;
    if (spare > 0) {
        size_t keep = pool->free_count - spare;
        void *prev = NULL, *block = pool->free_list;
        for (size_t i = 0; i < keep; i++) {
            UNPOISON(block, sizeof(void *));
            void *next = *(void **)block;
            POISON(block, sizeof(void *));
            prev = block;
            block = next;
        }
        if (prev == NULL) {
            pool->free_list = NULL;
        } else {
            UNPOISON(prev, sizeof(void *));
            *(void **)prev = NULL;
            POISON(prev, sizeof(void *));
        }
        while (block != NULL) {
            UNPOISON(block, sizeof(void *));
            void *next = *(void **)block;
            unmap_block(pool, block);
            block = next;
            n++;
        }
        pool->free_count -= n;
    }
    pool->_free_low = pool->free_count;
    return n;
}

int sy_buf_take(sy_buf_t *buf, sy_bufpool_t *pool)
{
    if (buf->base != NULL)
        return 0;
    void *block = pop_free(pool);
    if (block == NULL) {
        block = mmap(NULL, pool->_map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED)
            return SY_ENOMEM;
        pool->mapped++;
    }
    pool->in_use++;
    buf->base = block;
    buf->off = 0;
    buf->len = 0;
    buf->cap = (uint32_t)pool->block_size;
    return 0;
}

void sy_buf_release(sy_buf_t *buf, sy_bufpool_t *pool)
{
    if (buf->base == NULL)
        return;
    assert(buf->cap == pool->block_size);
    pool->in_use--;
    if (pool->free_count < pool->free_max) {
        *(void **)buf->base = pool->free_list;
        POISON(buf->base, pool->block_size);
        pool->free_list = buf->base;
        pool->free_count++;
    } else {
        unmap_block(pool, buf->base);
    }
    buf->base = NULL;
    buf->off = buf->len = buf->cap = 0;
}

void sy_buf_release_if_empty(sy_buf_t *buf, sy_bufpool_t *pool)
{
    if (buf->len == 0)
        sy_buf_release(buf, pool);
}

void sy_buf_compact(sy_buf_t *b)
{
    if (b->off == 0)
        return;
    if (b->len > 0)
        memmove(b->base, b->base + b->off, b->len);
    b->off = 0;
}

void sy_buf_consume(sy_buf_t *b, size_t n)
{
    assert(n <= b->len);
    b->len -= (uint32_t)n;
    b->off = b->len == 0 ? 0 : b->off + (uint32_t)n;
}

int sy_buf_append(sy_buf_t *b, const void *p, size_t n)
{
    assert(b->base != NULL);
    if (sy_buf_room(b) < n) {
        if ((size_t)b->cap - b->len < n)
            return SY_ELIMIT;
        sy_buf_compact(b);
    }
    memcpy(sy_buf_tail(b), p, n);
    b->len += (uint32_t)n;
    return 0;
}

int sy_buf_appendf(sy_buf_t *b, const char *fmt, ...)
{
    assert(b->base != NULL);
    if (sy_buf_room(b) < 256)
        sy_buf_compact(b);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sy_buf_tail(b), sy_buf_room(b), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sy_buf_room(b))
        return SY_ELIMIT;
    b->len += (uint32_t)n;
    return 0;
}
