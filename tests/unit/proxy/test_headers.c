/* Header rewriting: hop-by-hop removal, X-Forwarded-*, request ids, response
 * framing and the variant header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/headers.h"

#include <stdlib.h>
#include <string.h>

static sy_header_t H(const char *n, const char *v)
{
    sy_header_t h = {n, strlen(n), v, strlen(v)};
    return h;
}

static char *render_request(sy_header_t *hs, size_t n, const sy_fwd_request_t *f, bool chunked)
{
    static char block[8192];
    sy_buf_t b = {block, 0, 0, sizeof(block)};
    sy_h1_msg_t m = {.method = "GET", .target = "/p?q=1", .target_len = 6, .headers = hs, .nheaders = n,
                     .chunked = chunked};
    assert_int_equal(sy_headers_request(&b, &m, f), 0);
    block[b.len] = '\0';
    return block;
}

static void test_request_rewrite(void **state)
{
    (void)state;
    sy_header_t hs[] = {
        H("Host", "example.com"), H("Connection", "keep-alive, X-Secret"), H("X-Secret", "1"),
        H("Keep-Alive", "timeout=5"), H("TE", "trailers"), H("Proxy-Authorization", "x"),
        H("X-Forwarded-For", "1.2.3.4"), H("X-Forwarded-For", "5.6.7.8"), H("X-Forwarded-Proto", "https"),
        H("Upgrade", "h2c"), H("X-Switchyard-Variant", "new"), H("Accept", "*/*"),
    };
    sy_fwd_request_t f = {.client_ip = "127.0.0.1", .proto = "http", .request_id = "abc",
                          .strip_header = "X-Switchyard-Variant"};
    char *out = render_request(hs, SY_ARRAY_LEN(hs), &f, false);
    assert_non_null(strstr(out, "GET /p?q=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(out, "Host: example.com\r\n"));
    assert_non_null(strstr(out, "Accept: */*\r\n"));
    assert_non_null(strstr(out, "X-Forwarded-For: 1.2.3.4, 5.6.7.8, 127.0.0.1\r\n"));
    assert_non_null(strstr(out, "X-Forwarded-Proto: http\r\n"));
    assert_non_null(strstr(out, "X-Forwarded-Host: example.com\r\n"));
    assert_non_null(strstr(out, "X-Request-Id: abc\r\n"));
    const char *gone[] = {"Connection", "X-Secret", "Keep-Alive", "TE:", "Proxy-Authorization", "https",
                          "Upgrade", "X-Switchyard-Variant"};
    for (size_t i = 0; i < SY_ARRAY_LEN(gone); i++)
        assert_null(strstr(out, gone[i]));
    assert_int_equal(strcmp(out + strlen(out) - 4, "\r\n\r\n"), 0);
}

static void test_request_keeps_valid_id_and_websocket(void **state)
{
    (void)state;
    sy_header_t hs[] = {H("Host", "h"), H("X-Request-Id", "r-1"), H("Upgrade", "websocket"),
                        H("Connection", "Upgrade")};
    sy_fwd_request_t f = {.client_ip = "::1", .proto = "http", .request_id = "gen", .websocket = true};
    char *out = render_request(hs, SY_ARRAY_LEN(hs), &f, false);
    assert_non_null(strstr(out, "X-Request-Id: r-1\r\n"));
    assert_null(strstr(out, "gen"));
    assert_non_null(strstr(out, "Connection: upgrade\r\nUpgrade: websocket\r\n"));

    sy_header_t bad[] = {H("Host", "h"), H("X-Request-Id", "has space")};
    out = render_request(bad, SY_ARRAY_LEN(bad), &f, true);
    assert_non_null(strstr(out, "X-Request-Id: gen\r\n"));
    assert_non_null(strstr(out, "Transfer-Encoding: chunked\r\n"));
}

static void test_response_framing(void **state)
{
    (void)state;
    sy_h1_msg_t r = {.status = 200, .has_length = true, .content_length = 5};
    assert_int_equal(sy_headers_response_framing(&r, false, true), SY_FRAME_LENGTH);
    assert_int_equal(sy_headers_response_framing(&r, true, true), SY_FRAME_NONE);
    r.has_length = false;
    r.chunked = true;
    assert_int_equal(sy_headers_response_framing(&r, false, true), SY_FRAME_CHUNKED);
    assert_int_equal(sy_headers_response_framing(&r, false, false), SY_FRAME_CLOSE);
    r.status = 304;
    assert_int_equal(sy_headers_response_framing(&r, false, true), SY_FRAME_NONE);
}

static void test_response_rewrite(void **state)
{
    (void)state;
    static char block[4096];
    sy_buf_t b = {block, 0, 0, sizeof(block)};
    sy_header_t hs[] = {H("Content-Length", "5"), H("Connection", "keep-alive"), H("X-Switchyard-Variant", "fake"),
                        H("Server", "s")};
    sy_h1_msg_t m = {.status = 200, .reason = "OK", .reason_len = 2, .headers = hs, .nheaders = 4};
    sy_fwd_response_t f = {.variant = "new", .framing = SY_FRAME_CHUNKED, .close = true};
    assert_int_equal(sy_headers_response(&b, &m, &f), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(block, "X-Switchyard-Variant: new\r\n"));
    assert_null(strstr(block, "fake"));
    assert_null(strstr(block, "Content-Length")); /* re-framed */
    assert_non_null(strstr(block, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(block, "Connection: close\r\n"));
    assert_non_null(strstr(block, "Server: s\r\n"));
}

static void test_local_response_and_overflow(void **state)
{
    (void)state;
    static char block[512];
    sy_buf_t b = {block, 0, 0, sizeof(block)};
    assert_int_equal(sy_headers_local_response(&b, 404, NULL, "no route", NULL, false, false), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "HTTP/1.1 404 Not Found\r\n"));
    assert_non_null(strstr(block, "{\"error\":\"not_found\",\"reason\":\"no route\"}"));
    assert_null(strstr(block, "Date:")); /* none asked for */
    /* A head that does not fit leaves the buffer as it was. */
    char tiny_block[64];
    sy_buf_t tiny = {tiny_block, 0, 0, sizeof(tiny_block)};
    sy_header_t hs[] = {H("Host", "a-rather-long-host-name.example.com")};
    sy_h1_msg_t m = {.method = "GET", .target = "/", .target_len = 1, .headers = hs, .nheaders = 1};
    sy_fwd_request_t f = {.client_ip = "127.0.0.1", .proto = "http", .request_id = "x"};
    assert_int_equal(sy_headers_request(&tiny, &m, &f), SY_ELIMIT);
    assert_int_equal(tiny.len, 0);
}

static void test_date(void **state)
{
    (void)state;
    char d[SY_HTTP_DATE_LEN + 1];
    sy_headers_format_date(d, 784111777);
    assert_string_equal(d, "Sun, 06 Nov 1994 08:49:37 GMT"); /* RFC 9110 5.6.7 */
    sy_headers_format_date(d, 951782400);
    assert_string_equal(d, "Tue, 29 Feb 2000 00:00:00 GMT");
    const char *a = sy_headers_date(784111777);
    assert_string_equal(a, "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_ptr_equal(sy_headers_date(784111777), a); /* cached for the second */
    assert_string_equal(sy_headers_date(784111778), "Sun, 06 Nov 1994 08:49:38 GMT");
    a = sy_headers_date(784111777); /* the cache holds one second: a is that second's text again */

    static char block[4096];
    sy_buf_t b = {block, 0, 0, sizeof(block)};
    sy_header_t hs[] = {H("Content-Length", "0")};
    sy_h1_msg_t m = {.status = 200, .reason = "OK", .reason_len = 2, .headers = hs, .nheaders = 1};
    sy_fwd_response_t f = {.framing = SY_FRAME_LENGTH, .date = "Sun, 06 Nov 1994 08:49:37 GMT"};
    assert_int_equal(sy_headers_response(&b, &m, &f), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    /* The origin's own Date is kept, not doubled. */
    sy_header_t hs2[] = {H("date", "Mon, 01 Jan 2001 00:00:00 GMT"), H("Content-Length", "0")};
    m.headers = hs2;
    m.nheaders = 2;
    b.len = 0;
    assert_int_equal(sy_headers_response(&b, &m, &f), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "date: Mon, 01 Jan 2001 00:00:00 GMT\r\n"));
    assert_null(strstr(block, "1994"));
    /* Local answers. */
    b.len = 0;
    assert_int_equal(sy_headers_local_response(&b, 400, NULL, "invalid Host: empty", a, true, false), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "HTTP/1.1 400 Bad Request\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    assert_non_null(strstr(block, "{\"error\":\"bad_request\",\"reason\":\"invalid Host: empty\"}"));
    b.len = 0;
    assert_int_equal(sy_headers_options_response(&b, a, false), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    assert_non_null(strstr(block, "Allow: "));
    assert_non_null(strstr(block, "Content-Length: 0\r\n"));
}

static void test_error_kinds(void **state)
{
    (void)state;
    static const int statuses[] = {400, 401, 403, 404, 405, 408, 409, 413, 414, 422, 429, 431,
                                   500, 501, 502, 503, 504, 505, 418, 599};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        assert_string_not_equal(sy_headers_status_text(statuses[i]), "Error");
        const char *k = sy_headers_error_kind(statuses[i]);
        for (const char *p = k; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
    }
    assert_string_equal(sy_headers_error_kind(505), "http_version_not_supported");
    static char block[512];
    sy_buf_t b = {block, 0, 0, sizeof(block)};
    assert_int_equal(sy_headers_local_response(&b, 502, "upstream_connect", "refused", NULL, false, false), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "{\"error\":\"upstream_connect\",\"reason\":\"refused\"}"));
}

static void test_absolute_form_goes_out_in_origin_form(void **state)
{
    (void)state;
    static char block[4096];
    sy_buf_t b = {block, 0, 0, sizeof(block)};
    sy_header_t hs[] = {H("Host", "other.example"), H("Accept", "*/*")};
    const char *t = "http://api.example:81?q=1";
    sy_h1_msg_t m = {.method = "GET", .target = t, .target_len = strlen(t), .form = SY_H1_FORM_ABSOLUTE,
                     .origin = t + 21, .origin_len = 4, .host = t + 7, .host_len = 14, .host_from_target = true,
                     .headers = hs, .nheaders = 2};
    sy_fwd_request_t f = {.client_ip = "127.0.0.1", .proto = "http", .request_id = "x"};
    assert_int_equal(sy_headers_request(&b, &m, &f), 0);
    block[b.len] = '\0';
    assert_non_null(strstr(block, "GET /?q=1 HTTP/1.1\r\nHost: api.example:81\r\n"));
    assert_null(strstr(block, "other.example"));
    assert_non_null(strstr(block, "X-Forwarded-Host: api.example:81\r\n"));
    assert_non_null(strstr(block, "Accept: */*\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_rewrite),
        cmocka_unit_test(test_request_keeps_valid_id_and_websocket),
        cmocka_unit_test(test_response_framing),
        cmocka_unit_test(test_response_rewrite),
        cmocka_unit_test(test_local_response_and_overflow),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_error_kinds),
        cmocka_unit_test(test_absolute_form_goes_out_in_origin_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
