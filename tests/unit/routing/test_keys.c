/* JWT and JSON user keys, without sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "routing/jwt.h"
#include "routing/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_base64url(void **state)
{
    (void)state;
    unsigned char out[16];
    assert_int_equal(sy_base64url_decode("aGk", 3, out, sizeof(out)), 2);
    assert_memory_equal(out, "hi", 2);
    assert_int_equal(sy_base64url_decode("-_8", 3, out, sizeof(out)), 2);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(sy_base64url_decode("a", 1, out, sizeof(out)), -1);
    assert_int_equal(sy_base64url_decode("a=b", 3, out, sizeof(out)), -1);
}

/* An HS256 token made with Python's hmac for the secret below. */
static const char *SECRET = "unit-test-secret-0123456789";

static void test_hs256(void **state)
{
    (void)state;
    char path[] = "/tmp/sy-jwt-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, SECRET, strlen(SECRET)), (ssize_t)strlen(SECRET));
    close(fd);
    char err[128];
    sy_jwt_key_t *k = sy_jwt_key_load("HS256", path, err, sizeof(err));
    unlink(path);
    assert_non_null(k);
    /* {"alg":"HS256","typ":"JWT"} . {"sub":"42","exp":4102444800} */
    const char *good = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAiNDIiLCAiZXhwIjogNDEwMjQ0NDgwMH0."
                       "tyLXb0zluv_5CO9CUhcXwP8-zUTjS19wQbWBo62ShnE";
    char out[64];
    assert_int_equal(sy_jwt_claim(k, good, strlen(good), "sub", 1700000000, out, sizeof(out)), SY_JWT_OK);
    assert_string_equal(out, "42");
    /* One character of the signature changed. */
    char bad[256];
    snprintf(bad, sizeof(bad), "%s", good);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'n' ? 'm' : 'n';
    assert_int_equal(sy_jwt_claim(k, bad, strlen(bad), "sub", 1700000000, out, sizeof(out)), SY_JWT_BAD_SIGNATURE);
    /* Past exp (4102444800 is 2100-01-01). */
    assert_int_equal(sy_jwt_claim(k, good, strlen(good), "sub", 4102444801, out, sizeof(out)), SY_JWT_EXPIRED);
    assert_int_equal(sy_jwt_claim(k, "a.b", 3, "sub", 0, out, sizeof(out)), SY_JWT_MALFORMED);
    assert_int_equal(sy_jwt_claim(k, "a.b.c.d", 7, "sub", 0, out, sizeof(out)), SY_JWT_MALFORMED);
    /* {"alg":"none"} . {"sub":"42"} . */
    const char *none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9.";
    assert_int_equal(sy_jwt_claim(k, none, strlen(none), "sub", 0, out, sizeof(out)), SY_JWT_BAD_ALG);
    /* Unverified: the claim is read, exp still checked. */
    assert_int_equal(sy_jwt_claim(NULL, none, strlen(none), "sub", 0, out, sizeof(out)), SY_JWT_OK);
    assert_string_equal(out, "42");
    /* {"alg":"none"} . {"sub":"42","exp":1} */
    const char *expired = "eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiIsImV4cCI6MX0.";
    assert_int_equal(sy_jwt_claim(NULL, expired, strlen(expired), "sub", 100, out, sizeof(out)), SY_JWT_EXPIRED);
    assert_int_equal(sy_jwt_claim(NULL, none, strlen(none), "uid", 0, out, sizeof(out)), SY_JWT_NO_CLAIM);
    sy_jwt_key_free(k);
    assert_null(sy_jwt_key_load("HS512", "/nonexistent", err, sizeof(err)));
    assert_null(sy_jwt_key_load("RS256", "/nonexistent", err, sizeof(err)));
}

static void test_json_key(void **state)
{
    (void)state;
    char out[300];
    const char *b = "{\"message\": {\"from\": {\"id\": 42, \"name\": \"x\"}, \"list\": [{\"id\": \"u7\"}]}}";
    assert_int_equal(sy_json_key(b, strlen(b), "message.from.id", out, sizeof(out)), 2);
    assert_string_equal(out, "42");
    assert_int_equal(sy_json_key(b, strlen(b), "message.list.0.id", out, sizeof(out)), 2);
    assert_string_equal(out, "u7");
    assert_int_equal(sy_json_key(b, strlen(b), "message.from", out, sizeof(out)), 0);
    assert_int_equal(sy_json_key(b, strlen(b), "message.nope.id", out, sizeof(out)), 0);
    assert_int_equal(sy_json_key("{bad", 4, "a", out, sizeof(out)), 0);
    assert_int_equal(sy_json_key("{\"a\": 1.5}", 10, "a", out, sizeof(out)), 0);
    assert_int_equal(sy_json_key("{\"a\": \"\"}", 9, "a", out, sizeof(out)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64url),
        cmocka_unit_test(test_hs256),
        cmocka_unit_test(test_json_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
