#include "healthcheck/hist.h"

#include <string.h>

unsigned sy_hist_index(uint64_t us)
{
    if (us > SY_HIST_MAX_US)
        us = SY_HIST_MAX_US;
    if (us < 2 * SY_HIST_SUB)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* 2^e <= us < 2^(e+1), e >= 7 */
    unsigned shift = e - 6;                            /* us >> shift in [64, 127] */
    return (e - 6) * SY_HIST_SUB + (unsigned)(us >> shift);
}

uint64_t sy_hist_low(unsigned i)
{
    if (i < 2 * SY_HIST_SUB)
        return i;
    unsigned shift = i / SY_HIST_SUB - 1;
    return (uint64_t)(i - shift * SY_HIST_SUB) << shift;
}

uint64_t sy_hist_high(unsigned i)
{
    if (i < 2 * SY_HIST_SUB)
        return i;
    unsigned shift = i / SY_HIST_SUB - 1;
    return sy_hist_low(i) + ((uint64_t)1 << shift) - 1;
}

void sy_hist_add(sy_hist_t *h, uint64_t us)
{
    h->counts[sy_hist_index(us)]++;
    h->total++;
    h->sum_us += us;
}

void sy_hist_merge(sy_hist_t *dst, const sy_hist_t *src)
{
    if (src->total == 0)
        return;
    for (unsigned i = 0; i < SY_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum_us += src->sum_us;
}

double sy_hist_quantile_us(const sy_hist_t *h, double q)
{
    if (h->total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    /* The rank of the sample, 1-based, rounded up (nearest-rank). */
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < SY_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank)
            return ((double)sy_hist_low(i) + (double)sy_hist_high(i)) / 2.0;
    }
    return (double)SY_HIST_MAX_US;
}

uint64_t sy_hist_count_le(const sy_hist_t *h, uint64_t us)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < SY_HIST_BUCKETS && sy_hist_high(i) <= us; i++)
        n += h->counts[i];
    return n;
}
