/* libFuzzer: user-key extraction from cookies and query strings, and the
 * bucket. Input: name, NUL, header or query bytes. */
#include "routing/cohort.h"
#include "routing/route.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    if (nul == NULL || nul - data > 64)
        return 0;
    char name[65];
    memcpy(name, data, (size_t)(nul - data));
    name[nul - data] = '\0';
    const char *rest = (const char *)nul + 1;
    size_t len = size - (size_t)(nul - data) - 1;
    char out[SY_USER_KEY_MAX + 1];
    size_t n = sy_cookie_value(rest, len, name, out, sizeof(out));
    if (n > 0)
        (void)sy_cohort_bucket("salt", 4, out, n);
    n = sy_query_value(rest, len, name, out, sizeof(out));
    if (n > 0)
        (void)sy_cohort_bucket(out, n, out, n);
    return 0;
}
