#include "healthcheck/seq.h"

#include <math.h>
#include <stddef.h>

/* Where the alternatives sit, as a share of the way from p0 to 1: dense near
 * p0 (small regressions, a lot of data) and sparse far from it (a clear
 * regression shows after a few dozen trials). */
static const double grid[SY_SEQ_K] = {0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9};

double sy_seq_log_lr(uint64_t x, uint64_t n, double p0)
{
    if (n == 0 || !(p0 > 0 && p0 < 1))
        return 0;
    double xs = (double)x, fs = (double)(n - x);
    double terms[SY_SEQ_K], top = -INFINITY;
    for (int k = 0; k < SY_SEQ_K; k++) {
        double q = p0 + (1 - p0) * grid[k];
        terms[k] = xs * log(q / p0) + (fs > 0 ? fs * log((1 - q) / (1 - p0)) : 0);
        if (terms[k] > top)
            top = terms[k];
    }
    double s = 0;
    for (int k = 0; k < SY_SEQ_K; k++)
        s += exp(terms[k] - top);
    return top + log(s / SY_SEQ_K);
}

double sy_seq_log_lr_below(uint64_t x, uint64_t n, double p0)
{
    return sy_seq_log_lr(n - x, n, 1 - p0);
}

bool sy_seq_rejects(uint64_t x, uint64_t n, double p0, double alpha)
{
    return alpha > 0 && sy_seq_log_lr(x, n, p0) >= log(1 / alpha);
}

bool sy_seq_rejects_below(uint64_t x, uint64_t n, double p0, double alpha)
{
    return alpha > 0 && sy_seq_log_lr_below(x, n, p0) >= log(1 / alpha);
}

uint64_t sy_seq_needed_below(uint64_t x, uint64_t n, double p0, double alpha, double rate)
{
    if (sy_seq_rejects_below(x, n, p0, alpha))
        return 0;
    double r = n > 0 && (double)x / (double)n < p0 ? (double)x / (double)n : rate;
    if (!(r < p0) || r < 0)
        return UINT64_MAX;
    /* Doubling then bisection on m: the statistic grows with m at a rate below p0. */
    uint64_t lo = 0, hi = 1;
    while (!sy_seq_rejects_below(x + (uint64_t)floor(r * (double)hi), n + hi, p0, alpha)) {
        lo = hi;
        hi *= 2;
        if (hi > (1ULL << 40))
            return UINT64_MAX;
    }
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (sy_seq_rejects_below(x + (uint64_t)floor(r * (double)mid), n + mid, p0, alpha))
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

static uint64_t next(uint64_t *s)
{
    if (*s == 0)
        *s = 0x9e3779b97f4a7c15ULL;
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

/* Draws one outcome without replacement from side s's unpaired ones. */
static int draw(sy_seq_pairs_t *p, int s)
{
    uint64_t n = p->pend_n[s], x = p->pend_x[s];
    int hit = x > 0 && next(&p->rng) % n < x;
    p->pend_n[s] = n - 1;
    p->pend_x[s] = x - (uint64_t)hit;
    return hit;
}

/* Keeps a random `cap` of side s's unpaired outcomes (without replacement). */
static void thin(sy_seq_pairs_t *p, int s, uint64_t cap)
{
    if (p->pend_n[s] <= cap)
        return;
    uint64_t kept = 0;
    for (uint64_t i = 0; i < cap; i++)
        kept += (uint64_t)draw(p, s);
    p->pend_n[s] = cap;
    p->pend_x[s] = kept;
}

void sy_seq_pairs_add(sy_seq_pairs_t *p, uint64_t n_legacy, uint64_t x_legacy, uint64_t n_new, uint64_t x_new)
{
    p->pend_n[0] += n_legacy;
    p->pend_x[0] += x_legacy;
    p->pend_n[1] += n_new;
    p->pend_x[1] += x_new;
    while (p->pend_n[0] > 0 && p->pend_n[1] > 0) {
        int a = draw(p, 1), b = draw(p, 0);
        p->pairs++;
        if (a != b) {
            p->discordant++;
            p->new_only += (uint64_t)a;
        }
    }
    /* Legacy's leftovers are kept few, so a pair's two outcomes are close in
     * time (a drift both sides share cancels out). */
    thin(p, 0, SY_SEQ_LEGACY_CAP);
    thin(p, 1, SY_SEQ_PEND_CAP);
}

double sy_seq_pairs_log_lr(const sy_seq_pairs_t *p)
{
    return sy_seq_log_lr(p->new_only, p->discordant, 0.5);
}

bool sy_seq_pairs_worse(const sy_seq_pairs_t *p, double alpha)
{
    return sy_seq_rejects(p->new_only, p->discordant, 0.5, alpha);
}

/* x hits among k drawn without replacement from n with h hits. */
static uint64_t draw_k(uint64_t n, uint64_t h, uint64_t k, uint64_t *rng)
{
    uint64_t got = 0;
    for (uint64_t i = 0; i < k && n > 0; i++, n--) {
        if (h > 0 && next(rng) % n < h) {
            got++;
            h--;
        }
    }
    return got;
}

int sy_seq_unit_compare(uint64_t n_legacy, uint64_t x_legacy, uint64_t n_new, uint64_t x_new, uint64_t *rng)
{
    if (n_legacy == 0 || n_new == 0)
        return 0;
    uint64_t k = n_legacy < n_new ? n_legacy : n_new;
    uint64_t a = draw_k(n_new, x_new, k, rng), b = draw_k(n_legacy, x_legacy, k, rng);
    return a > b ? 1 : a < b ? -1 : 0;
}
