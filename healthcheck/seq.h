/* Sequential evidence: always-valid tests that may be looked at after every
 * request, at any traffic level, without inflating false alarms. Pure (no
 * I/O, no clock): the monitor feeds it counts and asks it for a decision.
 *
 * One proportion (sy_seq_log_lr, sy_seq_rejects, sy_seq_needed): a mixture
 * sequential probability ratio test (mSPRT) of H0 "p <= p0" against the
 * alternatives above p0, mixed over a fixed grid of SY_SEQ_K alternatives with
 * equal weights. The statistic depends on (x hits, n trials) only. Under H0 it
 * is a non-negative supermartingale with mean <= 1, so by Ville's inequality
 * the probability that it EVER reaches 1/alpha, however long it is watched and
 * however often, is at most alpha. Used for the absolute rules (error rate
 * above 10 %, p99 above 10 s: exceedance counts over the limit against the
 * share 1-q) and, mirrored (H0 "p >= p0"), for the promotion gate.
 *
 * Two sides (sy_seq_pairs_*): legacy and new compared on a binary outcome (an
 * error; a latency above a limit taken from legacy's past). Each new-side
 * outcome is paired with one legacy outcome drawn at random from legacy's
 * unpaired outcomes of the same period; of a pair that disagrees, new is the
 * bad one with probability OR/(1+OR), OR being the odds ratio of the two
 * sides. With equal sides that is exactly 1/2 whatever the common rate, so the
 * one-proportion test above at p0 = 1/2 on the disagreeing pairs is exact and
 * always valid, and needs no estimate of legacy's rate. Legacy outcomes beyond
 * what new can use are thinned at random (SY_SEQ_LEGACY_CAP), which keeps the
 * pairs exchangeable. */
#ifndef SY_SEQ_H
#define SY_SEQ_H

#include <stdbool.h>
#include <stdint.h>

#define SY_SEQ_K 9
#define SY_SEQ_PEND_CAP 4096
#define SY_SEQ_LEGACY_CAP 256
/* The evidence path never acts on fewer bad outcomes than this. */
#define SY_SEQ_MIN_EVENTS 5

/* log of the mixture likelihood ratio of H0 p <= p0 (0 < p0 < 1) after x hits
 * in n trials; 0 <= x <= n. */
double sy_seq_log_lr(uint64_t x, uint64_t n, double p0);
/* The same for H0 p >= p0 (evidence that the share is BELOW p0). */
double sy_seq_log_lr_below(uint64_t x, uint64_t n, double p0);
/* Whether the evidence reached 1/alpha. */
bool sy_seq_rejects(uint64_t x, uint64_t n, double p0, double alpha);
bool sy_seq_rejects_below(uint64_t x, uint64_t n, double p0, double alpha);
/* How many more trials, going on at the rate x/n seen so far (or at `rate`
 * when x/n is not on the rejecting side: pass the rate you hope for), the
 * below-test needs to reject; 0 when it rejects now, UINT64_MAX when it never
 * can at that rate. */
uint64_t sy_seq_needed_below(uint64_t x, uint64_t n, double p0, double alpha, double rate);

typedef struct sy_seq_pairs {
    uint64_t pend_n[2], pend_x[2]; /* unpaired outcomes and hits: [0] legacy, [1] new */
    uint64_t pairs, discordant, new_only;
    uint64_t rng;                  /* xorshift state; 0: seeded on first use */
} sy_seq_pairs_t;

/* Adds n outcomes with x hits on side (0 legacy, 1 new), then pairs what can
 * be paired. Cost O(pairs made + SY_SEQ_PEND_CAP). */
void sy_seq_pairs_add(sy_seq_pairs_t *p, uint64_t n_legacy, uint64_t x_legacy, uint64_t n_new, uint64_t x_new);
/* Whether new is worse than legacy (odds ratio above 1) at level alpha. */
bool sy_seq_pairs_worse(const sy_seq_pairs_t *p, double alpha);
/* The evidence so far, log(LR) of "new worse". */
double sy_seq_pairs_log_lr(const sy_seq_pairs_t *p);

/* Latency is compared per second, not per request: a stall of one side's
 * process makes many slow requests at once, which are one piece of evidence,
 * not many. One second's outcomes of each side (n requests, x over a limit)
 * are brought to the same count by drawing at random without replacement from
 * the larger side, and compared: +1 new had more over the limit, -1 legacy
 * had, 0 a tie (or a side without data). With equal sides +1 and -1 are
 * equally likely, so the seconds that differ feed the one-proportion test at
 * p0 = 1/2. rng: xorshift state (0: seeded). */
int sy_seq_unit_compare(uint64_t n_legacy, uint64_t x_legacy, uint64_t n_new, uint64_t x_new, uint64_t *rng);

#endif
