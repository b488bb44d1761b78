/* Latency histogram, log-linear in the style of HdrHistogram: fixed memory
 * (SY_HIST_BUCKETS counters), microseconds from 0 to 10 minutes, and a
 * percentile reported within 1 % of the true value (64 linear sub-buckets per
 * power of two, reported at the bucket's middle: error <= 1/128). Pure. */
#ifndef SY_HIST_H
#define SY_HIST_H

#include <stdint.h>

#define SY_HIST_SUB 64
#define SY_HIST_BUCKETS (2 * SY_HIST_SUB + 23 * SY_HIST_SUB) /* exact below 128 us, then octaves to 2^30 us */
#define SY_HIST_MAX_US 600000000ULL                          /* 10 minutes */

typedef struct sy_hist {
    uint32_t counts[SY_HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_us;
} sy_hist_t;

unsigned sy_hist_index(uint64_t us);
/* Lowest and highest value (us) that land in bucket i. */
uint64_t sy_hist_low(unsigned i);
uint64_t sy_hist_high(unsigned i);

void sy_hist_add(sy_hist_t *h, uint64_t us);
void sy_hist_merge(sy_hist_t *dst, const sy_hist_t *src);
/* The value below which a fraction q (0..1) of the samples fall (bucket middle);
 * 0 when empty. */
double sy_hist_quantile_us(const sy_hist_t *h, double q);
/* Samples at or below us (for Prometheus buckets). */
uint64_t sy_hist_count_le(const sy_hist_t *h, uint64_t us);

#endif
