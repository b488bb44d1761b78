/* libFuzzer: the admin API's JSON bodies (handlers/admin_body.c), as the admin
 * reads them: the body parsed, then every endpoint's validation on it (percent,
 * test users, reason). */
#include "handlers/admin_body.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* assert() is gone in release builds: a broken invariant must crash the fuzzer. */
#define CHECK(x)                                                                      \
    do {                                                                              \
        if (!(x)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);     \
            abort();                                                                  \
        }                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = NULL;
    char why[256];
    if (sy_admin_body_parse((const char *)data, size, &body, why, sizeof(why)) != 0) {
        CHECK(body == NULL && why[0] != '\0');
        return 0;
    }
    CHECK(size == 0 || json_is_object(body));
    const char *w = NULL, *reason = NULL;
    int32_t bp = -1;
    if (sy_admin_body_percent(body, &bp, &w) == 0)
        CHECK(bp >= 0 && bp <= 10000);
    else
        CHECK(w != NULL);
    const char **add, **rem;
    size_t nadd, nrem;
    if (sy_admin_body_test_users(body, &add, &nadd, &rem, &nrem, &w) == 0) {
        CHECK(nadd + nrem > 0 && nadd <= 1000 && nrem <= 1000);
        size_t total = 0;
        for (size_t i = 0; i < nadd; i++)
            total += strlen(add[i]);
        for (size_t i = 0; i < nrem; i++)
            total += strlen(rem[i]);
        CHECK(add == NULL || add[nadd] == NULL);
        (void)total;
    } else {
        CHECK(add == NULL && rem == NULL && nadd == 0 && nrem == 0);
    }
    free(add);
    free(rem);
    if (sy_admin_body_reason(body, &reason, &w) == 0)
        CHECK(reason != NULL && strlen(reason) <= 255 * 4);
    json_decref(body);
    return 0;
}
