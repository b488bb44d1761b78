#include "routing/cohort.h"

#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH64_state_t on the stack */
#include <xxhash.h>

uint32_t sy_cohort_bucket(const char *salt, size_t salt_len, const char *key, size_t key_len)
{
    char buf[512];
    if (salt_len + 1 + key_len <= sizeof(buf)) {
        memcpy(buf, salt, salt_len);
        buf[salt_len] = ':';
        memcpy(buf + salt_len + 1, key, key_len);
        return (uint32_t)(XXH64(buf, salt_len + 1 + key_len, 0) % SY_BUCKETS);
    }
    XXH64_state_t st;
    XXH64_reset(&st, 0);
    XXH64_update(&st, salt, salt_len);
    XXH64_update(&st, ":", 1);
    XXH64_update(&st, key, key_len);
    return (uint32_t)(XXH64_digest(&st) % SY_BUCKETS);
}

sy_variant_t sy_cohort_decide(const sy_cohort_input_t *in, sy_reason_t *reason)
{
    if (!in->has_new) {
        *reason = SY_REASON_DEFAULT;
        return SY_LEGACY;
    }
    if (in->state == SY_STATE_TRIPPED || in->state == SY_STATE_OFF) {
        if (in->test_user && in->keep_test_users_on_trip) {
            *reason = SY_REASON_TEST_USER;
            return SY_NEW;
        }
        *reason = in->state == SY_STATE_TRIPPED ? SY_REASON_TRIPPED : SY_REASON_DEFAULT;
        return SY_LEGACY;
    }
    if (in->override >= 0) {
        *reason = SY_REASON_OVERRIDE;
        return (sy_variant_t)in->override;
    }
    if (in->test_user) {
        *reason = SY_REASON_TEST_USER;
        return SY_NEW;
    }
    if (in->state == SY_STATE_PROMOTED) {
        *reason = SY_REASON_DEFAULT;
        return SY_NEW;
    }
    if (!in->has_key) {
        *reason = SY_REASON_DEFAULT;
        return SY_LEGACY;
    }
    *reason = SY_REASON_BUCKET;
    return (int64_t)in->bucket < (int64_t)in->percent_bp ? SY_NEW : SY_LEGACY;
}

const char *sy_variant_name(sy_variant_t v)
{
    return v == SY_NEW ? "new" : "legacy";
}

const char *sy_reason_name(sy_reason_t r)
{
    static const char *const names[] = {"default", "bucket", "test_user", "override", "tripped"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "default";
}

static const char *const state_names[] = {"off", "ramping", "tripped", "promoted"};

const char *sy_state_name(sy_route_state_t s)
{
    return (unsigned)s < 4 ? state_names[s] : "off";
}

int sy_state_parse(const char *s, sy_route_state_t *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, state_names[i]) == 0) {
            *out = (sy_route_state_t)i;
            return 0;
        }
    return -1;
}
