/* The llhttp glue, sans I/O: heads, bodies, pipelining, splits at every byte,
 * and the strictness we add on top of llhttp. Includes the .c to reach statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/h1.c"

#include <stdio.h>
#include <stdlib.h>

typedef struct rec {
    int heads, dones;
    char body[4096];
    size_t body_len;
    char target[256];
    int status;
    size_t nheaders;
    bool chunked, keep_alive, upgrade, expect;
    int head_ret;
} rec_t;

static int t_on_head(void *ud, sy_h1_msg_t *m)
{
    rec_t *r = ud;
    r->heads++;
    if (m->target)
        snprintf(r->target, sizeof(r->target), "%.*s", (int)m->target_len, m->target);
    r->status = m->status;
    r->nheaders = m->nheaders;
    r->chunked = m->chunked;
    r->keep_alive = m->keep_alive;
    r->upgrade = m->upgrade;
    r->expect = m->expect_continue;
    return r->head_ret;
}

static int t_on_body(void *ud, const char *d, size_t n)
{
    rec_t *r = ud;
    memcpy(r->body + r->body_len, d, n);
    r->body_len += n;
    return 0;
}

static int t_on_done(void *ud)
{
    ((rec_t *)ud)->dones++;
    return 0;
}

static const sy_h1_callbacks_t cbs = {t_on_head, t_on_body, t_on_done};

typedef struct fixture {
    sy_h1_t h;
    rec_t r;
    _Alignas(16) char arena[65536];
} fixture_t;

static fixture_t *fx_new(bool request)
{
    fixture_t *f = calloc(1, sizeof(*f));
    sy_h1_init(&f->h, request, &cbs, &f->r, 16384, 8192, 100);
    sy_h1_set_arena(&f->h, f->arena, sizeof(f->arena));
    return f;
}

static int feed(fixture_t *f, const char *s, size_t *used)
{
    return sy_h1_execute(&f->h, s, strlen(s), used);
}

static void test_simple_get(void **state)
{
    (void)state;
    fixture_t *f = fx_new(true);
    size_t used;
    const char *req = "GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-User-Id:  42 \r\n\r\n";
    assert_int_equal(feed(f, req, &used), SY_H1_PAUSED);
    assert_int_equal(used, strlen(req));
    assert_int_equal(f->r.heads, 1);
    assert_int_equal(f->r.dones, 1);
    assert_string_equal(f->r.target, "/a?b=c");
    const sy_header_t *h = sy_h1_find(&f->h.msg, "x-user-id");
    assert_non_null(h);
    assert_int_equal(h->value_len, 2);
    assert_memory_equal(h->value, "42", 2);
    assert_true(f->r.keep_alive);
    free(f);
}

static void test_pipelining_pauses_between_messages(void **state)
{
    (void)state;
    fixture_t *f = fx_new(true);
    const char *two = "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t used;
    assert_int_equal(feed(f, two, &used), SY_H1_PAUSED);
    assert_string_equal(f->r.target, "/1");
    assert_int_equal(f->r.dones, 1);
    sy_h1_next(&f->h);
    size_t used2;
    assert_int_equal(sy_h1_execute(&f->h, two + used, strlen(two) - used, &used2), SY_H1_PAUSED);
    assert_string_equal(f->r.target, "/2");
    assert_int_equal(used + used2, strlen(two));
    free(f);
}

static void test_chunked_body_split_at_every_byte(void **state)
{
    (void)state;
    const char *req = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    for (size_t split = 1; split < strlen(req); split++) {
        fixture_t *f = fx_new(true);
        size_t used, total = 0;
        int rc = sy_h1_execute(&f->h, req, split, &used);
        assert_int_equal(rc, SY_H1_OK);
        total += used;
        rc = sy_h1_execute(&f->h, req + split, strlen(req) - split, &used);
        assert_int_equal(rc, SY_H1_PAUSED);
        total += used;
        assert_int_equal(total, strlen(req));
        assert_int_equal(f->r.body_len, 11);
        assert_memory_equal(f->r.body, "hello world", 11);
        assert_true(f->r.chunked);
        free(f);
    }
}

static void expect_error(const char *req, int status)
{
    fixture_t *f = fx_new(true);
    size_t used;
    assert_int_equal(feed(f, req, &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, status);
    assert_non_null(f->h.err_reason);
    free(f);
}

static void test_strictness(void **state)
{
    (void)state;
    expect_error("GET / HTTP/1.1\nHost: x\n\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: x\r\nA B: c\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: x\r\nA: b\x01\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400);
    expect_error("GET / HTTP/1.1\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

static void test_limits(void **state)
{
    (void)state;
    fixture_t *f = calloc(1, sizeof(*f));
    sy_h1_init(&f->h, true, &cbs, &f->r, 1024, 64, 4);
    sy_h1_set_arena(&f->h, f->arena, sizeof(f->arena));
    char req[4096];
    size_t used;
    snprintf(req, sizeof(req), "GET /%0100d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    assert_int_equal(feed(f, req, &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 414);
    free(f);

    f = calloc(1, sizeof(*f));
    sy_h1_init(&f->h, true, &cbs, &f->r, 1024, 64, 4);
    sy_h1_set_arena(&f->h, f->arena, sizeof(f->arena));
    assert_int_equal(feed(f, "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", &used),
                     SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 431);
    free(f);

    f = calloc(1, sizeof(*f));
    sy_h1_init(&f->h, true, &cbs, &f->r, 1024, 64, 4);
    sy_h1_set_arena(&f->h, f->arena, sizeof(f->arena));
    memset(req, 'a', sizeof(req));
    memcpy(req, "GET / HTTP/1.1\r\nHost: x\r\nA: ", 28);
    req[2000] = '\0';
    assert_int_equal(feed(f, req, &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 431);
    free(f);
}

static void test_response_interim_and_head(void **state)
{
    (void)state;
    fixture_t *f = fx_new(false);
    size_t used;
    /* 100 Continue is a message of its own: t_on_done returns 0 here, so it pauses. */
    assert_int_equal(feed(f, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", &used),
                     SY_H1_PAUSED);
    assert_int_equal(f->r.status, 100);
    free(f);

    f = fx_new(false);
    f->r.head_ret = SY_H1_HEAD_NO_BODY; /* response to HEAD */
    assert_int_equal(feed(f, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", &used), SY_H1_PAUSED);
    assert_int_equal(f->r.dones, 1);
    assert_int_equal(f->r.body_len, 0);
    free(f);
}

static void test_response_until_eof(void **state)
{
    (void)state;
    fixture_t *f = fx_new(false);
    size_t used;
    assert_int_equal(feed(f, "HTTP/1.1 200 OK\r\n\r\nsome bytes", &used), SY_H1_OK);
    assert_true(f->h.msg.body_until_eof);
    assert_int_equal(sy_h1_finish(&f->h), SY_H1_PAUSED);
    assert_int_equal(f->r.body_len, 10);
    assert_int_equal(f->r.dones, 1);
    free(f);
}

static void test_websocket_upgrade(void **state)
{
    (void)state;
    fixture_t *f = fx_new(true);
    f->r.head_ret = SY_H1_HEAD_TUNNEL;
    size_t used;
    const char *req = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00";
    assert_int_equal(sy_h1_execute(&f->h, req, strlen(req) + 1, &used), SY_H1_UPGRADE);
    assert_true(f->r.upgrade);
    assert_int_equal(used, strlen(req) - 1); /* the frame bytes (\x81 \x00) are the tunnel's */
    free(f);

    /* The same upgrade, not taken: an ordinary message. */
    f = fx_new(true);
    assert_int_equal(feed(f, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", &used),
                     SY_H1_PAUSED);
    free(f);
}

static void test_tokens(void **state)
{
    (void)state;
    assert_true(sy_h1_has_token("keep-alive, Upgrade", 19, "upgrade"));
    assert_false(sy_h1_has_token("keep-alive, Upgraded", 20, "upgrade"));
    assert_true(sy_h1_has_token(" close ", 7, "close"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_pipelining_pauses_between_messages),
        cmocka_unit_test(test_chunked_body_split_at_every_byte),
        cmocka_unit_test(test_strictness),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_response_interim_and_head),
        cmocka_unit_test(test_response_until_eof),
        cmocka_unit_test(test_websocket_upgrade),
        cmocka_unit_test(test_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
