/* libFuzzer: JWT parsing with an HS256 key and unverified, and the JSON body
 * key. */
#include "routing/jwt.h"
#include "routing/route.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static sy_jwt_key_t *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (key == NULL) {
        char path[] = "/tmp/sy-fuzz-jwt-XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0 || write(fd, "fuzz-secret-0123456789abcdef", 28) != 28)
            abort();
        close(fd);
        char err[128];
        key = sy_jwt_key_load("HS256", path, err, sizeof(err));
        unlink(path);
        if (key == NULL)
            abort();
    }
    char out[SY_USER_KEY_MAX + 1];
    (void)sy_jwt_claim(key, (const char *)data, size, "sub", 1700000000, out, sizeof(out));
    (void)sy_jwt_claim(NULL, (const char *)data, size, "sub", 1700000000, out, sizeof(out));
    (void)sy_json_key((const char *)data, size, "message.from.id", out, sizeof(out));
    return 0;
}
