/* The access-log line: sy_alog_format over an exchange's facts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/accesslog.h"

#include <string.h>

/* Everything after the time stamp, which is the only part that moves. */
static const char *after_time(const char *line)
{
    const char *p = strstr(line, "\",\"worker\":");
    assert_non_null(p);
    assert_memory_equal(line, "{\"time\":\"", 9);
    assert_int_equal(p - line, 9 + 24); /* 2026-01-02T03:04:05.678Z */
    assert_int_equal(line[9 + 23], 'Z');
    return p + 2;
}

static void test_full_entry(void **state)
{
    (void)state;
    sy_alog_entry_t e = {
        .worker = 3, .request_id = "abc", .client = "127.0.0.1", .method = "GET", .host = "h.example",
        .target = "/a?b=1", .route = "r1", .variant = "new", .reason = "bucket", .fallback = NULL,
        .user = "u-7", .upstream = "ep1", .status = 502, .error = "reset", .bytes_in = 10, .bytes_out = 20,
        .ttfb_ms = 1.5, .duration_ms = 2.25,
    };
    char line[2048];
    size_t n = sy_alog_format(line, sizeof(line), &e);
    assert_int_equal(n, strlen(line));
    assert_string_equal(after_time(line),
                        "\"worker\":3,\"request_id\":\"abc\",\"client\":\"127.0.0.1\",\"method\":\"GET\","
                        "\"host\":\"h.example\",\"target\":\"/a?b=1\",\"route\":\"r1\",\"variant\":\"new\","
                        "\"reason\":\"bucket\",\"fallback\":null,\"user\":\"u-7\",\"upstream\":\"ep1\","
                        "\"status\":502,\"error\":\"reset\",\"bytes_in\":10,\"bytes_out\":20,"
                        "\"ttfb_ms\":1.500,\"duration_ms\":2.250}");
}

/* No route (a local 404): the optional fields are JSON null; host, target and
 * user are escaped. */
static void test_nulls_and_escaping(void **state)
{
    (void)state;
    sy_alog_entry_t e = {
        .request_id = "r", .client = "::1", .method = "POST", .host = "a\"b", .target = "/x\\y\n",
        .user = "\x01", .status = 404,
    };
    char line[2048];
    sy_alog_format(line, sizeof(line), &e);
    assert_string_equal(after_time(line),
                        "\"worker\":0,\"request_id\":\"r\",\"client\":\"::1\",\"method\":\"POST\","
                        "\"host\":\"a\\\"b\",\"target\":\"/x\\\\y\\u000a\",\"route\":null,\"variant\":null,"
                        "\"reason\":null,\"fallback\":null,\"user\":\"\\u0001\",\"upstream\":null,"
                        "\"status\":404,\"error\":null,\"bytes_in\":0,\"bytes_out\":0,"
                        "\"ttfb_ms\":0.000,\"duration_ms\":0.000}");
}

static void test_cut_to_fit(void **state)
{
    (void)state;
    sy_alog_entry_t e = {.request_id = "r", .client = "c", .method = "GET", .host = "", .target = "/", .user = ""};
    char line[40];
    memset(line, 'x', sizeof(line));
    size_t n = sy_alog_format(line, sizeof(line), &e);
    assert_int_equal(n, sizeof(line) - 1);
    assert_int_equal(line[n], '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_entry),
        cmocka_unit_test(test_nulls_and_escaping),
        cmocka_unit_test(test_cut_to_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
