/* The admin token in Basic credentials (what a browser sends after the
 * dashboard's 401 asks for them): any user, the token as the password, compared
 * whole; malformed or other values refused. admin.c is included to reach it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "handlers/admin.c"

static bool basic(const char *value, const char *token)
{
    sy_header_t h = {.name = "authorization", .name_len = 13, .value = value, .value_len = strlen(value)};
    return basic_ok(&h, token);
}

static void test_basic(void **state)
{
    (void)state;
    const char *token = "dashboard-token-0123456789abcdef";
    /* base64("ops:dashboard-token-0123456789abcdef") and with an empty user */
    assert_true(basic("Basic b3BzOmRhc2hib2FyZC10b2tlbi0wMTIzNDU2Nzg5YWJjZGVm", token));
    assert_true(basic("Basic OmRhc2hib2FyZC10b2tlbi0wMTIzNDU2Nzg5YWJjZGVm", token));
    /* padded: "ops:dashboard-token-0123456789abcde" (one character short) */
    assert_false(basic("Basic b3BzOmRhc2hib2FyZC10b2tlbi0wMTIzNDU2Nzg5YWJjZGU=", token));
    assert_true(basic("Basic b3BzOmRhc2hib2FyZC10b2tlbi0wMTIzNDU2Nzg5YWJjZGU=", "dashboard-token-0123456789abcde"));
    /* no colon, a wrong token, not base64, empty, too long */
    assert_false(basic("Basic ZGFzaGJvYXJkLXRva2VuLTAxMjM0NTY3ODlhYmNkZWY=", token));
    assert_false(basic("Basic b3BzOndyb25nLXRva2VuLTAxMjM0NTY3ODlhYmNkZWZn", token));
    assert_false(basic("Basic !!!!", token));
    assert_false(basic("Basic abc", token));
    char big[700] = "Basic ";
    memset(big + 6, 'A', 600);
    big[606] = '\0';
    assert_false(basic(big, token));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
