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

/* The tests' pseudo-random numbers (a fixed seed: the same inputs every run). */
static unsigned rnd(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

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

    /* A 1xx has no body, whatever its framing headers say (RFC 9110 15.2): its
     * message ends with its head, and the next bytes are read, and scanned, as the
     * next response's head; here they are not one. */
    f = fx_new(false);
    const char *r1 = "HTTP/1.1 100 Continue\r\nContent-Length: 1\r\n\r\n";
    assert_int_equal(feed(f, "HTTP/1.1 100 Continue\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\nX: a", &used),
                     SY_H1_PAUSED);
    assert_int_equal(used, strlen(r1));
    assert_int_equal(f->r.dones, 1);
    assert_int_equal(f->r.body_len, 0);
    sy_h1_next(&f->h);
    assert_int_equal(feed(f, "xHTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 400);
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

/* RFC 9112 3.2 and RFC 9110 2.5, 7.2: each form of target and each kind of Host,
 * with the status it gets (0: accepted) and, when accepted, what the message says. */
typedef struct target_case {
    const char *req;
    int status;
    sy_h1_form_t form;
    const char *host;   /* effective authority, NULL when none */
    const char *origin; /* path and query */
} target_case_t;

static const target_case_t target_cases[] = {
    {"GET /a?b=%C0%AF HTTP/1.1\r\nHost: h\r\n\r\n", 0, SY_H1_FORM_ORIGIN, "h", "/a?b=%C0%AF"},
    {"GET /a;b=c,d@e:f!$&'()*+ HTTP/1.1\r\nHost: h\r\n\r\n", 0, SY_H1_FORM_ORIGIN, "h", "/a;b=c,d@e:f!$&'()*+"},
    {"GET http://api.example/p?q HTTP/1.1\r\nHost: api.example\r\n\r\n", 0, SY_H1_FORM_ABSOLUTE, "api.example", "/p?q"},
    {"GET http://api.example:81/p HTTP/1.1\r\nHost: other\r\n\r\n", 0, SY_H1_FORM_ABSOLUTE, "api.example:81", "/p"},
    {"GET HTTPS://[::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n", 0, SY_H1_FORM_ABSOLUTE, "[::1]:8443", ""},
    {"GET http://api.example?q HTTP/1.1\r\nHost: x\r\n\r\n", 0, SY_H1_FORM_ABSOLUTE, "api.example", "?q"},
    {"GET http://u@api.example/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, NULL, NULL},
    {"GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, NULL, NULL},
    {"GET ftp://a/p HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, NULL, NULL},
    {"GET http://a:99999/ HTTP/1.1\r\nHost: x\r\n\r\n", 400, 0, NULL, NULL},
    {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 0, SY_H1_FORM_ASTERISK, "h", "*"},
    {"GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"DELETE * HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 0, SY_H1_FORM_AUTHORITY, "a.example:443", NULL},
    {"CONNECT u@a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a:80\r\n\r\n", 0, SY_H1_FORM_ORIGIN, "a:80", "/"},
    {"GET / HTTP/1.1\r\nHost: [fe80::1]\r\n\r\n", 0, SY_H1_FORM_ORIGIN, "[fe80::1]", "/"},
    {"GET / HTTP/1.1\r\nHost: a%41b\r\n\r\n", 0, SY_H1_FORM_ORIGIN, "a%41b", "/"},
    {"GET / HTTP/1.0\r\n\r\n", 0, SY_H1_FORM_ORIGIN, NULL, "/"},
    {"GET / HTTP/1.1\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: u:p@a\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", 400, 0, NULL, NULL},
    {"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /\xc0\xaf HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /?q=\xe2\x82\xac HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a%g0 HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a{b} HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a HTTP/1.2\r\nHost: h\r\n\r\n", 0, SY_H1_FORM_ORIGIN, "h", "/a"},
    {"GET /a HTTP/1.2\r\n\r\n", 400, 0, NULL, NULL},
    {"GET /a HTTP/2.0\r\nHost: h\r\n\r\n", 505, 0, NULL, NULL},
    {"GET /a HTTP/3.0\r\nHost: h\r\n\r\n", 505, 0, NULL, NULL},
    {"GET /a HTTP/0.9\r\nHost: h\r\n\r\n", 505, 0, NULL, NULL},
    {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, 0, NULL, NULL},
    {"FROBNICATE / HTTP/1.1\r\nHost: h\r\n\r\n", 501, 0, NULL, NULL},
    {"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, 0, NULL, NULL},
};

static void check_target_case(const target_case_t *tc, size_t split)
{
    fixture_t *f = fx_new(true);
    size_t len = strlen(tc->req), used = 0, used2 = 0;
    int rc = SY_H1_OK;
    if (split > 0 && split < len) {
        rc = sy_h1_execute(&f->h, tc->req, split, &used);
        if (rc == SY_H1_OK)
            rc = sy_h1_execute(&f->h, tc->req + split, len - split, &used2);
    } else {
        rc = sy_h1_execute(&f->h, tc->req, len, &used);
    }
    if (tc->status != 0) {
        if (rc != SY_H1_ERROR || f->h.err_status != tc->status)
            fail_msg("%s (split %zu): rc %d status %d (%s), want %d", tc->req, split, rc, f->h.err_status,
                     f->h.err_reason ? f->h.err_reason : "", tc->status);
        assert_non_null(f->h.err_reason);
        assert_int_equal(f->r.heads, 0);
    } else {
        if (rc != SY_H1_PAUSED)
            fail_msg("%s (split %zu): rc %d status %d (%s)", tc->req, split, rc, f->h.err_status,
                     f->h.err_reason ? f->h.err_reason : "");
        const sy_h1_msg_t *m = &f->h.msg;
        assert_int_equal(m->form, tc->form);
        assert_int_equal(m->major, 1);
        assert_true(m->minor <= 1);
        if (tc->host == NULL) {
            assert_null(m->host);
        } else {
            assert_int_equal(m->host_len, strlen(tc->host));
            assert_memory_equal(m->host, tc->host, m->host_len);
        }
        if (tc->origin != NULL) {
            assert_int_equal(m->origin_len, strlen(tc->origin));
            assert_memory_equal(m->origin, tc->origin, m->origin_len);
        }
    }
    free(f);
}

static void test_target_forms_and_host(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(target_cases) / sizeof(target_cases[0]); i++) {
        check_target_case(&target_cases[i], 0);
        /* the same at every split: the target and Host arrive in pieces */
        for (size_t split = 1; split < strlen(target_cases[i].req); split++)
            check_target_case(&target_cases[i], split);
    }
}

static void test_http_1_2_is_read_as_1_1(void **state)
{
    (void)state;
    fixture_t *f = fx_new(true);
    size_t used;
    assert_int_equal(feed(f, "GET / HTTP/1.2\r\nHost: h\r\n\r\n", &used), SY_H1_PAUSED);
    assert_int_equal(f->h.msg.minor, 1);
    assert_true(f->r.keep_alive);
    free(f);
}

static void test_overlong_method_is_not_431(void **state)
{
    (void)state;
    /* Longer than the head limit (16384), in one piece with what follows. */
    static char req[20100];
    memset(req, 'A', 20000);
    strcpy(req + 20000, " / HTTP/1.1\r\nHost: h\r\n\r\n");
    fixture_t *f = fx_new(true);
    size_t used;
    assert_int_equal(feed(f, req, &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 501);
    free(f);
    /* A target over limits.uri_bytes in one piece with the rest: 414, not 431. */
    memcpy(req, "GET /", 5);
    memset(req + 5, 'a', 19000);
    strcpy(req + 19005, " HTTP/1.1\r\nHost: h\r\n\r\n");
    f = fx_new(true);
    assert_int_equal(feed(f, req, &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 414);
    free(f);
    /* Headers over the limit are still 431. */
    memcpy(req, "GET / HTTP/1.1\r\nHost: h\r\nX: ", 28);
    memset(req + 28, 'a', 19000);
    strcpy(req + 19028, "\r\n\r\n");
    f = fx_new(true);
    assert_int_equal(feed(f, req, &used), SY_H1_ERROR);
    assert_int_equal(f->h.err_status, 431);
    free(f);
}

static void test_check_authority(void **state)
{
    (void)state;
    fixture_t *f = fx_new(true);
    size_t used;
    assert_int_equal(feed(f, "GET /?r=%zz HTTP/1.1\r\nHost: h\r\n\r\n", &used), SY_H1_ERROR);
    assert_non_null(strstr(f->h.err_reason, "percent-encoding"));
    free(f);
    f = fx_new(true);
    assert_int_equal(feed(f, "GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", &used), SY_H1_ERROR);
    assert_non_null(strstr(f->h.err_reason, "invalid character"));
    free(f);
    assert_null(sy_h1_check_authority("a.example", 9));
    assert_null(sy_h1_check_authority("a.example:", 10)); /* port = *DIGIT */
    assert_null(sy_h1_check_authority("[::1]", 5));
    assert_string_equal(sy_h1_check_authority("", 0), "empty");
    assert_string_equal(sy_h1_check_authority("u@a", 3), "userinfo is not allowed");
    assert_string_equal(sy_h1_check_authority("a,b", 3), "a list is not allowed");
    assert_string_equal(sy_h1_check_authority("a/b", 3), "a path is not allowed");
    assert_string_equal(sy_h1_check_authority("a:65536", 7), "invalid port");
    assert_string_equal(sy_h1_check_authority("[::1", 4), "invalid IP literal");
}

/* The one-pass authority check agrees with the full one on every input (random
 * strings over the characters that matter), and the blockwise value check with
 * a byte-by-byte reference at every length and position. */
static void test_fast_paths_agree(void **state)
{
    (void)state;
    static const char alpha[] = "aZ09-._~:@,/?#\\[]%!$&'()*+;= \t\x01\x7f\x80";
    unsigned seed = 12345;
    char s[24];
    for (int k = 0; k < 200000; k++) {
        size_t n = rnd(&seed) % sizeof(s);
        for (size_t i = 0; i < n; i++) {
            /* mostly host-like characters, so the fast path is taken often */
            unsigned r = rnd(&seed) % 64;
            s[i] = r < 40 ? "abc019-.:"[r % 9] : alpha[r % (sizeof(alpha) - 1)];
        }
        assert_int_equal(check_authority(s, n), check_authority_full(s, n));
    }
    assert_int_equal(check_authority("a:65535", 7), AUTH_OK);
    assert_int_equal(check_authority("a:65536", 7), AUTH_PORT);
    assert_int_equal(check_authority("a:123456", 8), AUTH_PORT);
    assert_int_equal(check_authority(":80", 3), AUTH_EMPTY);

    char v[80];
    for (size_t len = 0; len <= sizeof(v); len++) {
        memset(v, 'x', sizeof(v));
        if (len > 3)
            v[len / 2] = '\t';
        assert_false(value_has_ctl(v, len));
        for (size_t pos = 0; pos < len; pos++) {
            const unsigned char bad[] = {0x00, 0x01, 0x0a, 0x0d, 0x1f, 0x7f};
            const unsigned char good[] = {0x09, 0x20, 0x7e, 0x80, 0xff};
            for (size_t b = 0; b < sizeof(bad); b++) {
                char save = v[pos];
                v[pos] = (char)bad[b];
                assert_true(value_has_ctl(v, len));
                v[pos] = save;
            }
            for (size_t g = 0; g < sizeof(good); g++) {
                char save = v[pos];
                v[pos] = (char)good[g];
                assert_false(value_has_ctl(v, len));
                v[pos] = save;
            }
        }
    }
    /* Every byte value at every position of values up to three words long. */
    for (size_t len = 1; len <= 24; len++) {
        memset(v, 'x', sizeof(v));
        for (size_t pos = 0; pos < len; pos++) {
            for (unsigned b = 0; b < 256; b++) {
                char save = v[pos];
                v[pos] = (char)b;
                bool want = (b < 0x20 && b != 0x09) || b == 0x7f;
                assert_int_equal(value_has_ctl(v, len), want);
                v[pos] = save;
            }
        }
    }
    expect_error("GET / HTTP/1.1\r\nHost: x\r\nA: 0123456789abcdefghij\x01klmnopqrstuvwxyz\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost: x\r\nA: 0123456789abcdefghij\x7fklmnopqrstuvwxyz\r\n\r\n", 400);
}

/* The exchange's pattern: a message, sy_h1_reset (the arena given back), then
 * sy_h1_init and a new arena for the next one. */
static void test_reset_then_init(void **state)
{
    (void)state;
    fixture_t *f = fx_new(false);
    size_t used;
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_int_equal(feed(f, resp, &used), SY_H1_PAUSED);
    assert_false(sy_h1_idle(&f->h));
    sy_h1_reset(&f->h);
    assert_true(sy_h1_idle(&f->h));
    assert_null(f->h.msg.headers);
    sy_h1_init(&f->h, false, &cbs, &f->r, 16384, 8192, 100);
    sy_h1_set_arena(&f->h, f->arena, sizeof(f->arena));
    const char *resp2 = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    assert_int_equal(feed(f, resp2, &used), SY_H1_PAUSED);
    assert_int_equal(used, strlen(resp2));
    assert_int_equal(f->r.status, 404);
    assert_int_equal(f->r.dones, 2);
    free(f);
}

static void test_tokens(void **state)
{
    (void)state;
    assert_true(sy_h1_has_token("keep-alive, Upgrade", 19, "upgrade"));
    assert_false(sy_h1_has_token("keep-alive, Upgraded", 20, "upgrade"));
    assert_true(sy_h1_has_token(" close ", 7, "close"));
}

/* The line scan as it was before it went a line at a time (byte by byte with a
 * memchr inside lines): the reference the new one must agree with. */
static long scan_head_ref(sy_h1_t *h, const char *data, size_t len, bool *end)
{
    *end = false;
    for (size_t i = 0; i < len; i++) {
        if (h->_scan == SCAN_TEXT && !(h->_in_method && h->_scan_first_line)) {
            /* Inside a line: straight to its CR (memchr is vectorized), a bare
             * LF before it is refused as below. */
            const char *cr = memchr(data + i, '\r', len - i);
            size_t stop = cr != NULL ? (size_t)(cr - data) : len;
            if (memchr(data + i, '\n', stop - i) != NULL)
                return sy_h1_fail(h, 400, "bare LF in the message head");
            i = stop;
            if (i == len)
                break;
        }
        char c = data[i];
        if (h->_in_method && h->_scan_first_line && c != '\r' && c != '\n') {
            if (c == ' ')
                h->_in_method = false;
            else if (!is_tchar((unsigned char)c))
                h->_method_tchar = false;
        }
        switch (h->_scan) {
        case SCAN_LINE_START:
            if (c == '\r') {
                h->_scan = SCAN_END_CR;
                break;
            }
            if (c == '\n')
                return sy_h1_fail(h, 400, "bare LF in the message head");
            if ((c == ' ' || c == '\t') && !h->_scan_first_line)
                return sy_h1_fail(h, 400, "obsolete line folding in a header");
            h->_scan = SCAN_TEXT;
            break;
        case SCAN_TEXT:
            if (c == '\r')
                h->_scan = SCAN_CR;
            else if (c == '\n')
                return sy_h1_fail(h, 400, "bare LF in the message head");
            break;
        case SCAN_CR:
            if (c != '\n')
                return sy_h1_fail(h, 400, "bare CR in the message head");
            h->_scan = SCAN_LINE_START;
            h->_scan_first_line = false;
            break;
        case SCAN_END_CR:
            if (c != '\n')
                return sy_h1_fail(h, 400, "bare CR in the message head");
            if (h->_scan_first_line) {
                /* An empty line before the request line: tolerated (RFC 9112 2.2). */
                h->_scan = SCAN_LINE_START;
                break;
            }
            h->_scan = SCAN_END;
            *end = true;
            return (long)i + 1;
        }
    }
    return (long)len;
}

/* The line scan against its reference, on random heads made of the bytes that
 * matter (CR, LF, SP, HTAB, token and non-token bytes), cut into random pieces:
 * the same lengths, the same end, the same refusal, the same method verdict. */
static void test_scan_head_agrees(void **state)
{
    (void)state;
    static const char alpha[] = "\r\n \t:GETabcz/.1\x01\x7f(@";
    unsigned seed = 777;
    char buf[64];
    for (int k = 0; k < 300000; k++) {
        size_t n = 1 + rnd(&seed) % sizeof(buf);
        for (size_t i = 0; i < n; i++) {
            unsigned r = rnd(&seed) % 100;
            /* mostly well-formed lines, so that heads end often */
            buf[i] = r < 30 ? "GET / HTTP/1.1\r\nA: b\r\n\r\n"[(k + i) % 24] : alpha[r % (sizeof(alpha) - 1)];
        }
        bool request = (k & 1) == 0;
        sy_h1_t a, b;
        memset(&a, 0, sizeof(a));
        a._is_request = request;
        msg_clear(&a);
        b = a;
        size_t off = 0;
        while (off < n) {
            size_t piece = 1 + rnd(&seed) % (n - off);
            bool ea, eb;
            long ra = scan_head(&a, buf + off, piece, &ea);
            long rb = scan_head_ref(&b, buf + off, piece, &eb);
            assert_int_equal(ra, rb);
            if (ra < 0) {
                assert_string_equal(a.err_reason, b.err_reason);
                break;
            }
            assert_int_equal(ea, eb);
            assert_int_equal(a._scan, b._scan);
            assert_int_equal(a._method_tchar, b._method_tchar);
            assert_int_equal(a._in_method, b._in_method);
            if (ea)
                break;
            off += piece;
        }
    }
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
        cmocka_unit_test(test_target_forms_and_host),
        cmocka_unit_test(test_http_1_2_is_read_as_1_1),
        cmocka_unit_test(test_overlong_method_is_not_431),
        cmocka_unit_test(test_check_authority),
        cmocka_unit_test(test_fast_paths_agree),
        cmocka_unit_test(test_reset_then_init),
        cmocka_unit_test(test_scan_head_agrees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
