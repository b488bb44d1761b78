/* The +switch-master payload parser of the Sentinel client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "flags/sentinel.h"

#include <string.h>

static int parse(const char *text, const char *master, char *ip, int *port)
{
    return sy_sentinel_parse_switch(text, strlen(text), master, ip, 64, port);
}

static void test_switch_master(void **state)
{
    (void)state;
    char ip[64];
    int port = 0;
    assert_int_equal(parse("sy 127.0.0.1 6379 10.0.0.7 6380", "sy", ip, &port), 0);
    assert_string_equal(ip, "10.0.0.7");
    assert_int_equal(port, 6380);
    /* another master's failover is not ours */
    assert_int_equal(parse("other 127.0.0.1 6379 10.0.0.7 6380", "sy", ip, &port), -1);
    assert_int_equal(parse("syx 127.0.0.1 6379 10.0.0.7 6380", "sy", ip, &port), -1);
    /* short, bad ports, empty */
    assert_int_equal(parse("sy 127.0.0.1 6379 10.0.0.7", "sy", ip, &port), -1);
    assert_int_equal(parse("sy 127.0.0.1 6379 10.0.0.7 0", "sy", ip, &port), -1);
    assert_int_equal(parse("sy 127.0.0.1 6379 10.0.0.7 70000", "sy", ip, &port), -1);
    assert_int_equal(parse("", "sy", ip, &port), -1);
    assert_int_equal(sy_sentinel_parse_switch(NULL, 0, "sy", ip, sizeof(ip), &port), -1);
    /* an address longer than the caller's buffer */
    assert_int_equal(sy_sentinel_parse_switch("sy a 1 0123456789abcdef 2", 25, "sy", ip, 8, &port), -1);
    /* an embedded NUL */
    assert_int_equal(sy_sentinel_parse_switch("sy a 1\0b 2 c 3", 14, "sy", ip, sizeof(ip), &port), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_switch_master),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
