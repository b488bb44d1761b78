#include "proxy/buf.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sy_bufpool_init(sy_bufpool_t *pool, size_t block_size, size_t free_max)
{
    memset(pool, 0, sizeof(*pool));
    pool->block_size = block_size;
    pool->free_max = free_max;
}

void sy_bufpool_destroy(sy_bufpool_t *pool)
{
    assert(pool->in_use == 0);
    while (pool->free_list != NULL) {
        void *next = *(void **)pool->free_list;
        free(pool->free_list);
        pool->free_list = next;
    }
    pool->free_count = 0;
}

int sy_buf_take(sy_buf_t *buf, sy_bufpool_t *pool)
{
    if (buf->base != NULL)
        return 0;
    void *block = pool->free_list;
    if (block != NULL) {
        pool->free_list = *(void **)block;
        pool->free_count--;
    } else {
        block = malloc(pool->block_size);
        if (block == NULL)
            return SY_ENOMEM;
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
        pool->free_list = buf->base;
        pool->free_count++;
    } else {
        free(buf->base);
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
