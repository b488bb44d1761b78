/* Cohorts: which variant a user gets on a route. Pure functions, no I/O.
 *
 * bucket(salt, key) = XXH64(salt ":" key, seed 0) mod 10000, so percentages are
 * in basis points (0..10000) and a user's bucket never changes for a given salt:
 * raising the percentage only ever adds users. The decision order is fixed:
 *   1. route tripped or off: legacy (test users too, unless kept on trip);
 *   2. an allowed override: as it says;
 *   3. a test user: new;
 *   4. promoted: new;
 *   5. no user key: legacy;
 *   6. bucket < percent_bp: new; else legacy. */
#ifndef SY_COHORT_H
#define SY_COHORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SY_BUCKETS 10000

typedef enum sy_route_state {
    SY_STATE_OFF = 0,
    SY_STATE_RAMPING,
    SY_STATE_TRIPPED,
    SY_STATE_PROMOTED,
} sy_route_state_t;

typedef enum sy_variant { SY_LEGACY = 0, SY_NEW = 1 } sy_variant_t;

typedef enum sy_reason {
    SY_REASON_DEFAULT = 0,
    SY_REASON_BUCKET,
    SY_REASON_TEST_USER,
    SY_REASON_OVERRIDE,
    SY_REASON_TRIPPED,
} sy_reason_t;

typedef struct sy_cohort_input {
    sy_route_state_t state;
    int32_t percent_bp;
    bool has_new;                 /* the route has a new pool at all */
    bool keep_test_users_on_trip;
    int override;                 /* -1 none, else an allowed sy_variant_t */
    bool test_user;
    bool has_key;
    uint32_t bucket;              /* valid when has_key */
} sy_cohort_input_t;

uint32_t sy_cohort_bucket(const char *salt, size_t salt_len, const char *key, size_t key_len);
sy_variant_t sy_cohort_decide(const sy_cohort_input_t *in, sy_reason_t *reason);

const char *sy_variant_name(sy_variant_t v);
const char *sy_reason_name(sy_reason_t r);
const char *sy_state_name(sy_route_state_t s);
/* Returns 0 and *out, or -1 for an unknown name. */
int sy_state_parse(const char *s, sy_route_state_t *out);

#endif
