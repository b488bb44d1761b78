/* libFuzzer: flag validation of a Redis hash and test-user set, as an operator's
 * hand edit could write them. Input: NUL-separated field, value, ... */
#include "flags/flags.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *kv[64];
    size_t n = 0;
    for (char *p = copy; p <= copy + size && n < 64;) {
        kv[n++] = p;
        p += strlen(p) + 1;
    }
    static char *users[] = {"42"};
    sy_route_flags_t cur = {.state = SY_STATE_RAMPING, .percent_bp = 2500, .salt = "nav", .test_users = users,
                            .ntest_users = 1};
    sy_route_flags_t out;
    if (sy_flags_apply_hash("nav", &cur, kv, n & ~(size_t)1, &out, NULL, NULL) >= 0) {
        (void)sy_flags_apply_members("nav", &out, kv, n, NULL, NULL);
        sy_route_flags_t after;
        const char *err;
        sy_flag_request_t req = {.op = (sy_flag_op_t)(size % 5), .percent_bp = (int32_t)(size * 37 % 12000),
                                 .add = kv, .nadd = n, .remove = kv, .nremove = n / 2};
        if (sy_flags_op(&out, &req, &after, &err) == 0)
            sy_route_flags_clear(&after);
        sy_route_flags_clear(&out);
    }
    free(copy);
    return 0;
}
