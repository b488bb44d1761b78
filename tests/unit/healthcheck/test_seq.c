/* The sequential tests (healthcheck/seq.c): the mixture statistic's basic
 * shape, the false-trip count on equal sides over 2,000 simulated windows
 * (against Ville's bound alpha), and how many new-side requests a clear
 * regression needs at the bot team's 5 % phase with 2 requests/s in total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "healthcheck/seq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ULL;

static double unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static uint64_t binom(uint64_t n, double p)
{
    uint64_t x = 0;
    for (uint64_t i = 0; i < n; i++)
        x += unif() < p;
    return x;
}

static void test_shape(void **state)
{
    (void)state;
    assert_true(sy_seq_log_lr(0, 0, 0.1) == 0);
    /* Data at the null's edge carries no evidence; far above it a lot. */
    assert_true(sy_seq_log_lr(10, 100, 0.1) < 0.5);
    assert_true(sy_seq_rejects(40, 100, 0.1, 0.01));
    assert_false(sy_seq_rejects(12, 100, 0.1, 0.01));
    /* More of the same rate is more evidence. */
    assert_true(sy_seq_log_lr(40, 200, 0.1) > sy_seq_log_lr(20, 100, 0.1));
    /* Below: zero errors in a few hundred is not yet "under 0.5 %"; in 2,000 it is. */
    assert_false(sy_seq_rejects_below(0, 300, 0.005, 0.01));
    assert_true(sy_seq_rejects_below(0, 2000, 0.005, 0.01));
    uint64_t need = sy_seq_needed_below(0, 300, 0.005, 0.01, 0);
    assert_true(need > 0 && need < 2000);
    assert_true(sy_seq_rejects_below(0, 300 + need, 0.005, 0.01));
    assert_false(sy_seq_rejects_below(0, 300 + need - 1, 0.005, 0.01));
    assert_int_equal(sy_seq_needed_below(0, 300 + need, 0.005, 0.01, 0), 0);
    assert_true(sy_seq_needed_below(10, 100, 0.005, 0.01, 0.01) == UINT64_MAX);
    /* Pairs: new always worse trips within a few dozen disagreeing pairs. */
    sy_seq_pairs_t p;
    memset(&p, 0, sizeof(p));
    for (int i = 0; i < 40 && !sy_seq_pairs_worse(&p, 0.01); i++)
        sy_seq_pairs_add(&p, 1, 0, 1, 1);
    assert_true(sy_seq_pairs_worse(&p, 0.01));
    assert_true(p.discordant <= 15);
    /* Legacy's surplus is thinned, new's outcomes all wait for a partner. */
    sy_seq_pairs_add(&p, 100000, 1000, 0, 0);
    assert_true(p.pend_n[0] == SY_SEQ_LEGACY_CAP);
    sy_seq_pairs_add(&p, 0, 0, 10, 0);
    assert_int_equal(p.pend_n[1], 0);
    /* Seconds: equal counts compared as drawn; a side without data is a tie. */
    uint64_t r = 0;
    assert_int_equal(sy_seq_unit_compare(0, 0, 5, 5, &r), 0);
    assert_int_equal(sy_seq_unit_compare(100, 0, 5, 5, &r), 1);
    assert_int_equal(sy_seq_unit_compare(100, 100, 5, 0, &r), -1);
    /* Equal sides at 1 % over the limit, 5 % vs 95 % of 100 requests a
     * second: new slower as often as legacy. */
    int plus = 0, minus = 0;
    for (int i = 0; i < 20000; i++) {
        int d = sy_seq_unit_compare(95, binom(95, 0.05), 5, binom(5, 0.05), &r);
        plus += d > 0;
        minus += d < 0;
    }
    assert_true(abs(plus - minus) < 4 * sqrt(plus + minus));
}

/* 2,000 windows of equal sides (both 1 % errors), each a long step of 10,000
 * requests a side looked at after every 20, with the two rules that judge
 * errors on evidence: new worse than legacy (pairs), and new above the
 * warning's 2 % (one proportion). A false trip is a window in which either
 * ever fires. Ville's inequality bounds each at alpha per window. */
static void test_equal_sides(void **state)
{
    (void)state;
    const int windows = 2000, per_side = 10000, batch = 20;
    const double alpha = 0.01, p = 0.01;
    int pair_trips = 0, warn_trips = 0, rule_trips = 0;
    for (int w = 0; w < windows; w++) {
        sy_seq_pairs_t pr;
        memset(&pr, 0, sizeof(pr));
        pr.rng = (uint64_t)w * 2654435761ULL + 1;
        uint64_t n = 0, x = 0, xo = 0;
        bool pt = false, wt = false, rt = false;
        for (int i = 0; i < per_side; i += batch) {
            uint64_t xl = binom(batch, p), xn = binom(batch, p);
            sy_seq_pairs_add(&pr, batch, xl, batch, xn);
            n += batch;
            x += xn;
            xo += xl;
            bool worse = sy_seq_pairs_worse(&pr, alpha);
            pt = pt || worse;
            /* the delta rule as the monitor applies it: worse, and 5 points apart */
            rt = rt || (worse && (double)x / (double)n - (double)xo / (double)n > 0.05);
            wt = wt || sy_seq_rejects(x, n, 0.02, alpha);
        }
        pair_trips += pt;
        warn_trips += wt;
        rule_trips += rt;
    }
    printf("equal sides, %d windows of %d requests a side: %d false trips of the delta rule (5 points), %d "
           "windows where the bare new-worse test fired, %d false warnings above 2 %%; bound alpha=%.2f per "
           "window (at most %.0f expected)\n",
           windows, per_side, rule_trips, pair_trips, warn_trips, alpha, alpha * windows);
    assert_int_equal(rule_trips, 0);
    assert_true(pair_trips <= (int)(alpha * windows));
    assert_true(warn_trips <= (int)(alpha * windows));
}

/* The bot team's 5 % phase at 2 requests/s in total: 0.1 requests/s reach
 * new. New at 20 % errors, legacy at 1 %: ticks of 100 ms, the rule being
 * "new worse (pairs, alpha 0.01) and new's rate since the change more than 5
 * points above legacy's". */
static void test_low_traffic_power(void **state)
{
    (void)state;
    const int runs = 500;
    uint64_t *need = calloc(runs, sizeof(*need));
    assert_non_null(need);
    int never = 0;
    for (int r = 0; r < runs; r++) {
        sy_seq_pairs_t pr;
        memset(&pr, 0, sizeof(pr));
        uint64_t nn = 0, xn = 0, nl = 0, xl = 0;
        for (int tick = 0; tick < 100000; tick++) {
            if (unif() >= 0.2)
                continue; /* 2 requests/s: one in five ticks has one */
            bool to_new = unif() < 0.05;
            bool err = unif() < (to_new ? 0.20 : 0.01);
            if (to_new) {
                nn++;
                xn += err;
                sy_seq_pairs_add(&pr, 0, 0, 1, err);
            } else {
                nl++;
                xl += err;
                sy_seq_pairs_add(&pr, 1, err, 0, 0);
            }
            double d = (double)xn / (double)(nn ? nn : 1) - (double)xl / (double)(nl ? nl : 1);
            if (d > 0.05 && sy_seq_pairs_worse(&pr, 0.01)) {
                need[r] = nn;
                break;
            }
        }
        never += need[r] == 0;
    }
    uint64_t sorted[500];
    memcpy(sorted, need, sizeof(sorted));
    for (int i = 1; i < runs; i++)
        for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            uint64_t t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    printf("low traffic (2 req/s, 5 %% on new, 20 %% vs 1 %% errors), %d runs: tripped after a median of %llu "
           "new-side requests (%.0f s), 90th percentile %llu (%.0f s); %d runs never tripped in 10,000 s\n",
           runs, (unsigned long long)sorted[runs / 2], sorted[runs / 2] / 0.1,
           (unsigned long long)sorted[runs * 9 / 10], sorted[runs * 9 / 10] / 0.1, never);
    assert_int_equal(never, 0);
    assert_true(sorted[runs / 2] <= 100);
    free(need);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_equal_sides),
        cmocka_unit_test(test_low_traffic_power),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
