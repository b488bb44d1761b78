/* The HTTP/1 client: its parse step sans I/O (splits at every byte, bad status
 * lines, oversized heads, the three body framings, a peer that closes early),
 * then the exchange on a libev loop and the blocking fetch against a real
 * loopback listener this test runs in a thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/h1client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const sy_h1client_limits_t keep = {.max_head = 1024, .max_headers = 16, .max_body = 4096, .keep_body = true};

/* Feeds s whole, or a byte at a time; returns the last result. */
static int feed(sy_h1client_resp_t *r, const char *s, bool bytewise)
{
    size_t n = strlen(s);
    if (!bytewise)
        return sy_h1client_parse_response(r, s, n);
    int rc = SY_EAGAIN;
    for (size_t i = 0; i < n; i++) {
        rc = sy_h1client_parse_response(r, s + i, 1);
        if (rc != SY_EAGAIN && i + 1 < n)
            return rc; /* ended before its last byte: the callers check what */
    }
    return rc;
}

/* --- the parse step ---------------------------------------------------------- */

static void test_content_length_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-A: b\r\n"
                               "Content-Length: 11\r\n\r\n{\"ok\":true}";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        sy_h1client_resp_t r;
        assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
        /* Every prefix leaves it waiting for more. */
        for (size_t i = 0; bytewise && i + 1 < sizeof(resp) - 1; i++) {
            assert_int_equal(sy_h1client_parse_response(&r, resp + i, 1), SY_EAGAIN);
            assert_false(r.complete);
        }
        int rc = bytewise ? sy_h1client_parse_response(&r, resp + sizeof(resp) - 2, 1) : feed(&r, resp, false);
        assert_int_equal(rc, 0);
        assert_true(r.complete);
        assert_null(r.err);
        assert_int_equal(r.status, 201);
        assert_int_equal(r.body_len, 11);
        assert_string_equal(r.body, "{\"ok\":true}");
        const sy_header_t *h = sy_h1client_find(&r, "x-a");
        assert_non_null(h);
        assert_int_equal(h->value_len, 1);
        assert_memory_equal(h->value, "b", 1);
        assert_null(sy_h1client_find(&r, "x-missing"));
        /* Bytes after the answer are ignored; it stays complete. */
        assert_int_equal(sy_h1client_parse_response(&r, "HTTP/1.1 500 X\r\n\r\n", 18), 0);
        assert_int_equal(r.status, 201);
        sy_h1client_resp_free(&r);
        sy_h1client_resp_free(&r); /* idempotent */
    }
}

static void test_chunked_split_at_every_byte(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        sy_h1client_resp_t r;
        assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
        assert_int_equal(feed(&r, resp, bytewise), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello world");
        assert_true(r.complete);
        sy_h1client_resp_free(&r);
    }
}

static void test_body_until_close(void **state)
{
    (void)state;
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome", true), SY_EAGAIN);
    assert_int_equal(feed(&r, " text", true), SY_EAGAIN);
    assert_int_equal(r.status, 200);
    assert_false(r.complete);
    assert_int_equal(sy_h1client_parse_eof(&r), 0);
    assert_true(r.complete);
    assert_string_equal(r.body, "some text");
    sy_h1client_resp_free(&r);
}

static void test_peer_closes_early(void **state)
{
    (void)state;
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
    /* Nothing at all. */
    assert_int_equal(sy_h1client_parse_eof(&r), SY_EINVAL);
    assert_ptr_equal(r.err, sy_h1client_err_no_answer);
    /* Mid-head. */
    sy_h1client_resp_reset(&r);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Le", false), SY_EAGAIN);
    assert_int_equal(sy_h1client_parse_eof(&r), SY_EINVAL);
    assert_ptr_equal(r.err, sy_h1client_err_closed_early);
    assert_int_equal(r.status, 0);
    /* Mid-body: the status is known, the answer is not whole. */
    sy_h1client_resp_reset(&r);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false), SY_EAGAIN);
    assert_int_equal(sy_h1client_parse_eof(&r), SY_EINVAL);
    assert_ptr_equal(r.err, sy_h1client_err_closed_early);
    assert_int_equal(r.status, 200);
    assert_false(r.complete);
    /* Mid-chunk. */
    sy_h1client_resp_reset(&r);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", false), SY_EAGAIN);
    assert_int_equal(sy_h1client_parse_eof(&r), SY_EINVAL);
    assert_ptr_equal(r.err, sy_h1client_err_closed_early);
    /* After an interim answer only: no answer. */
    sy_h1client_resp_reset(&r);
    assert_int_equal(feed(&r, "HTTP/1.1 100 Continue\r\n\r\n", true), SY_EAGAIN);
    assert_int_equal(sy_h1client_parse_eof(&r), SY_EINVAL);
    assert_ptr_equal(r.err, sy_h1client_err_no_answer);
    sy_h1client_resp_free(&r);
}

static void test_bad_status_lines(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\n\r\n",
        "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",     /* bare LF */
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",       /* obs-fold */
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            sy_h1client_resp_t r;
            assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
            int rc = feed(&r, bad[i], bytewise);
            if (rc != SY_EINVAL)
                fail_msg("%s (bytewise %d): %d", bad[i], bytewise, rc);
            assert_non_null(r.err);
            assert_false(r.complete);
            /* Stopped for good, and the close changes nothing. */
            assert_int_equal(sy_h1client_parse_response(&r, "HTTP/1.1 200 OK\r\n\r\n", 19), SY_EINVAL);
            assert_int_equal(sy_h1client_parse_eof(&r), SY_EINVAL);
            sy_h1client_resp_free(&r);
        }
    }
}

static void test_oversized_head(void **state)
{
    (void)state;
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
    char big[2048];
    snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nX-Big: %01500d\r\n\r\n", 7);
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        sy_h1client_resp_reset(&r);
        assert_int_equal(feed(&r, big, bytewise), SY_ELIMIT);
        assert_ptr_equal(r.err, sy_h1client_err_head_too_large);
        assert_int_equal(r.status, 0);
    }
    /* Too many header fields, each small. */
    char many[1024];
    size_t n = (size_t)snprintf(many, sizeof(many), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 20; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "H%d: v\r\n", i);
    snprintf(many + n, sizeof(many) - n, "\r\n");
    sy_h1client_resp_reset(&r);
    assert_int_equal(feed(&r, many, false), SY_ELIMIT);
    assert_ptr_equal(r.err, sy_h1client_err_head_too_large);
    sy_h1client_resp_free(&r);
}

static void test_interim_answers_are_skipped(void **state)
{
    (void)state;
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
    assert_int_equal(feed(&r,
                          "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                          "HTTP/1.1 204 No Content\r\nX-Final: 1\r\n\r\n",
                          true),
                     0);
    assert_int_equal(r.status, 204);
    assert_non_null(sy_h1client_find(&r, "x-final"));
    assert_null(sy_h1client_find(&r, "link"));
    assert_int_equal(r.body_len, 0);
    sy_h1client_resp_free(&r);
}

static void test_body_limit(void **state)
{
    (void)state;
    sy_h1client_limits_t lim = keep;
    lim.max_body = 8;
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &lim), 0);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678", true), 0);
    assert_string_equal(r.body, "12345678");
    sy_h1client_resp_reset(&r);
    assert_null(r.body);
    assert_int_equal(feed(&r, "HTTP/1.1 503 Busy\r\nContent-Length: 9\r\n\r\n123456789", false), SY_ELIMIT);
    assert_ptr_equal(r.err, sy_h1client_err_body_too_large);
    assert_int_equal(r.status, 503); /* the status is known */
    /* Counted, not kept. */
    lim.keep_body = false;
    lim.max_body = 100;
    sy_h1client_resp_free(&r);
    assert_int_equal(sy_h1client_resp_init(&r, &lim), 0);
    assert_int_equal(feed(&r, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabcde", false), 0);
    assert_null(r.body);
    assert_int_equal(r.body_len, 5);
    sy_h1client_resp_free(&r);
}

/* --- a loopback peer --------------------------------------------------------------- */

typedef enum { PEER_ANSWER, PEER_SILENT, PEER_CLOSE, PEER_NONE } peer_mode_t;

typedef struct peer {
    int lfd;
    sy_addr_t addr;
    peer_mode_t mode;
    const char *answer;  /* PEER_ANSWER: sent, then the peer closes */
    bool bytewise;       /* one send per byte */
    int exchanges;       /* connections to serve */
    char req[4096];      /* the last request head and body received */
    size_t req_len;
    pthread_t th;
} peer_t;

/* Reads a request: the head, and a body by its Content-Length. */
static void read_request(peer_t *p, int fd)
{
    p->req_len = 0;
    size_t want = 0;
    for (;;) {
        ssize_t r = read(fd, p->req + p->req_len, sizeof(p->req) - 1 - p->req_len);
        if (r <= 0)
            return;
        p->req_len += (size_t)r;
        p->req[p->req_len] = '\0';
        char *end = strstr(p->req, "\r\n\r\n");
        if (end == NULL)
            continue;
        if (want == 0) {
            const char *cl = strstr(p->req, "Content-Length: ");
            want = (size_t)(end + 4 - p->req) + (cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0);
        }
        if (p->req_len >= want)
            return;
    }
}

static void *peer_main(void *arg)
{
    peer_t *p = arg;
    for (int i = 0; i < p->exchanges; i++) {
        int fd = accept(p->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        if (p->mode != PEER_NONE)
            read_request(p, fd);
        if (p->mode == PEER_ANSWER) {
            size_t n = strlen(p->answer);
            for (size_t off = 0; off < n;) {
                ssize_t w = send(fd, p->answer + off, p->bytewise ? 1 : n - off, MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                off += (size_t)w;
            }
        } else if (p->mode == PEER_SILENT || p->mode == PEER_NONE) {
            char b[256];
            while (read(fd, b, sizeof(b)) > 0) /* until the client gives up */
                ;
        }
        close(fd);
    }
    return NULL;
}

static void peer_start(peer_t *p, peer_mode_t mode, const char *answer, bool bytewise, int exchanges)
{
    memset(p, 0, sizeof(*p));
    p->mode = mode;
    p->answer = answer;
    p->bytewise = bytewise;
    p->exchanges = exchanges;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->lfd >= 0);
    struct sockaddr_in *sin = (struct sockaddr_in *)&p->addr.ss;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->addr.len = sizeof(*sin);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)sin, sizeof(*sin)), 0);
    assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&p->addr.ss, &p->addr.len), 0);
    assert_int_equal(listen(p->lfd, 8), 0);
    assert_int_equal(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_join(peer_t *p)
{
    pthread_join(p->th, NULL);
    close(p->lfd);
}

/* --- the exchange on a loop ------------------------------------------------------- */

typedef struct result {
    int calls;
    const char *err;
    int status;
    size_t body_len;
    char body[256];
    enum { THEN_STOP, THEN_DESTROY, THEN_AGAIN } then;
    const sy_addr_t *again_addr;
    struct ev_loop *loop;
} result_t;

static void on_done(sy_h1client_t *c, void *ud, const char *err)
{
    result_t *res = ud;
    const sy_h1client_resp_t *r = sy_h1client_response(c);
    res->calls++;
    res->err = err;
    res->status = r->status;
    res->body_len = r->body_len;
    snprintf(res->body, sizeof(res->body), "%s", r->body ? r->body : "");
    assert_false(sy_h1client_busy(c));
    if (res->then == THEN_DESTROY) {
        sy_h1client_destroy(c);
    } else if (res->then == THEN_AGAIN) {
        res->then = THEN_STOP;
        assert_int_equal(sy_h1client_connect(c, res->again_addr, 5.0, on_done, res), 0);
        return;
    }
    ev_break(res->loop, EVBREAK_ALL);
}

static void guard_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)t;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
    fail_msg("the exchange never ended");
}

/* Runs the loop until the callback stops it (a guard fails a hang). */
static void run(struct ev_loop *loop)
{
    ev_timer guard;
    ev_timer_init(&guard, guard_cb, 30., 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
}

static const sy_h1client_request_t get_req = {
    .method = "GET",
    .target = "/health?x=1",
    .host = "backend:80",
    .headers = "User-Agent: test\r\n",
};

static void exchange(peer_mode_t mode, const char *answer, bool bytewise, double timeout, result_t *res,
                     peer_t *p)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    peer_start(p, mode, answer, bytewise, 1);
    sy_h1client_t *c = sy_h1client_create(loop, &keep);
    assert_non_null(c);
    memset(res, 0, sizeof(*res));
    res->loop = loop;
    assert_int_equal(sy_h1client_start(c, &p->addr, &get_req, timeout, on_done, res), 0);
    assert_true(sy_h1client_busy(c));
    assert_int_equal(res->calls, 0); /* never from inside start */
    run(loop);
    sy_h1client_destroy(c); /* closes the socket: a silent peer sees it */
    peer_join(p);
    ev_loop_destroy(loop);
    assert_int_equal(res->calls, 1);
}

static void test_exchange_byte_at_a_time(void **state)
{
    (void)state;
    result_t res;
    peer_t p;
    exchange(PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true, 10.0, &res, &p);
    assert_null(res.err);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.body, "hello");
    /* What went out: one request, closed after. */
    assert_non_null(strstr(p.req, "GET /health?x=1 HTTP/1.1\r\nHost: backend:80\r\nUser-Agent: test\r\n"));
    assert_non_null(strstr(p.req, "Connection: close\r\n\r\n"));
    assert_null(strstr(p.req, "Content-Length"));
}

static void test_exchange_framings(void **state)
{
    (void)state;
    result_t res;
    peer_t p;
    exchange(PEER_ANSWER, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true, 10.0,
             &res, &p);
    assert_null(res.err);
    assert_string_equal(res.body, "abc");
    exchange(PEER_ANSWER, "HTTP/1.0 200 OK\r\n\r\nuntil the close", false, 10.0, &res, &p);
    assert_null(res.err);
    assert_string_equal(res.body, "until the close");
}

static void test_exchange_failures(void **state)
{
    (void)state;
    result_t res;
    peer_t p;
    /* Closes before the body's end. */
    exchange(PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", false, 10.0, &res, &p);
    assert_ptr_equal(res.err, sy_h1client_err_closed_early);
    assert_int_equal(res.status, 200);
    /* Closes without a word. */
    exchange(PEER_CLOSE, NULL, false, 10.0, &res, &p);
    assert_ptr_equal(res.err, sy_h1client_err_no_answer);
    assert_int_equal(res.status, 0);
    /* Not HTTP. */
    exchange(PEER_ANSWER, "SSH-2.0-OpenSSH_9.2\r\n", false, 10.0, &res, &p);
    assert_non_null(res.err);
    assert_int_equal(res.status, 0);
    /* Says nothing: the timeout ends it. */
    exchange(PEER_SILENT, NULL, false, 0.2, &res, &p);
    assert_ptr_equal(res.err, sy_h1client_err_timeout);
    /* An oversized head. */
    char big[4096];
    snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nX-Big: %03000d\r\n\r\n", 1);
    exchange(PEER_ANSWER, big, false, 10.0, &res, &p);
    assert_ptr_equal(res.err, sy_h1client_err_head_too_large);
}

static void test_refused_and_unsendable(void **state)
{
    (void)state;
    /* A bound socket that does not listen refuses connections. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sy_addr_t addr = {0};
    struct sockaddr_in *sin = (struct sockaddr_in *)&addr.ss;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.len = sizeof(*sin);
    assert_int_equal(bind(fd, (struct sockaddr *)sin, sizeof(*sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr.ss, &addr.len), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    sy_h1client_t *c = sy_h1client_create(loop, &keep);
    result_t res = {.loop = loop};
    assert_int_equal(sy_h1client_start(c, &addr, &get_req, 10.0, on_done, &res), 0);
    assert_int_equal(res.calls, 0);
    run(loop);
    assert_int_equal(res.calls, 1);
    assert_ptr_equal(res.err, sy_h1client_err_refused);
    assert_int_equal(sy_h1client_connect(c, &addr, 10.0, on_done, &res), 0);
    run(loop);
    assert_ptr_equal(res.err, sy_h1client_err_refused);
    /* Blocking, the same. */
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
    assert_ptr_equal(sy_h1client_fetch(&addr, &get_req, 10.0, &r), sy_h1client_err_refused);
    /* A target that would split the request is refused before anything is sent. */
    sy_h1client_request_t bad = get_req;
    bad.target = "/a b";
    assert_int_equal(sy_h1client_start(c, &addr, &bad, 10.0, on_done, &res), SY_EINVAL);
    assert_false(sy_h1client_busy(c));
    bad.target = "/a";
    bad.host = "h\r\nX-Injected: 1";
    assert_int_equal(sy_h1client_start(c, &addr, &bad, 10.0, on_done, &res), SY_EINVAL);
    assert_non_null(sy_h1client_fetch(&addr, &bad, 10.0, &r));
    assert_int_equal(res.calls, 2);
    sy_h1client_resp_free(&r);
    sy_h1client_destroy(c);
    ev_loop_destroy(loop);
    close(fd);
}

static void test_destroy_and_restart_inside_the_callback(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    peer_t p;
    peer_start(&p, PEER_ANSWER, "HTTP/1.1 204 No Content\r\n\r\n", false, 2);
    sy_h1client_t *c = sy_h1client_create(loop, &keep);
    /* Started again from its own callback (a connect), then done. */
    result_t res = {.loop = loop, .then = THEN_AGAIN, .again_addr = &p.addr};
    assert_int_equal(sy_h1client_start(c, &p.addr, &get_req, 10.0, on_done, &res), 0);
    run(loop);
    assert_int_equal(res.calls, 2);
    assert_null(res.err);
    assert_int_equal(res.status, 0); /* the connect's: no answer asked */
    sy_h1client_destroy(c);
    peer_join(&p);
    /* Destroyed inside its callback (ASan sees any use after). */
    peer_start(&p, PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 1);
    c = sy_h1client_create(loop, &keep);
    result_t res2 = {.loop = loop, .then = THEN_DESTROY};
    assert_int_equal(sy_h1client_start(c, &p.addr, &get_req, 10.0, on_done, &res2), 0);
    run(loop);
    assert_int_equal(res2.calls, 1);
    assert_string_equal(res2.body, "ok");
    peer_join(&p);
    ev_loop_destroy(loop);
}

/* An exchange on the caller's connection (shadow traffic on pooled
 * connections): keep-alive asked, the socket left open, reuse told. */
static void on_pooled(peer_mode_t mode, const char *answer, bool *reusable)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    peer_t p;
    peer_start(&p, mode, answer, false, 1);
    sy_h1client_t *c = sy_h1client_create(loop, &keep);
    result_t res = {.loop = loop};
    int fd = sy_net_connect(&p.addr);
    assert_true(fd >= 0);
    assert_int_equal(sy_h1client_start_on(c, fd, true, &get_req, 10.0, on_done, &res), 0);
    run(loop);
    assert_int_equal(res.calls, 1);
    assert_null(res.err);
    assert_string_equal(res.body, "ok");
    *reusable = sy_h1client_reusable(c);
    sy_h1client_destroy(c);
    assert_true(fcntl(fd, F_GETFD) != -1); /* still the caller's */
    close(fd);
    peer_join(&p);
    assert_null(strstr(p.req, "Connection: close"));
    ev_loop_destroy(loop);
}

static void test_start_on_a_pooled_connection(void **state)
{
    (void)state;
    bool reusable = false;
    on_pooled(PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", &reusable);
    assert_true(reusable);
    on_pooled(PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", &reusable);
    assert_false(reusable);
    on_pooled(PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", &reusable);
    assert_false(reusable); /* bytes after the answer */
}

static void test_cancel_calls_nothing(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    peer_t p;
    peer_start(&p, PEER_NONE, NULL, false, 1);
    sy_h1client_t *c = sy_h1client_create(loop, &keep);
    result_t res = {.loop = loop};
    assert_int_equal(sy_h1client_start(c, &p.addr, &get_req, 0.2, on_done, &res), 0);
    assert_int_equal(sy_h1client_start(c, &p.addr, &get_req, 0.2, on_done, &res), SY_EINVAL); /* busy */
    sy_h1client_cancel(c);
    sy_h1client_cancel(c);
    assert_false(sy_h1client_busy(c));
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(res.calls, 0); /* no watcher left: nothing calls back */
    assert_int_equal(ev_run(loop, 0), 0); /* the loop has nothing to wait for */
    assert_int_equal(res.calls, 0);
    sy_h1client_destroy(c);
    peer_join(&p); /* the peer saw the close */
    ev_loop_destroy(loop);
}

/* --- blocking ----------------------------------------------------------------------- */

static void test_fetch(void **state)
{
    (void)state;
    peer_t p;
    peer_start(&p, PEER_ANSWER,
               "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               "4\r\n{\"re\r\nd\r\nason\":\"none\"}\r\n0\r\n\r\n",
               true, 1);
    sy_h1client_resp_t r;
    assert_int_equal(sy_h1client_resp_init(&r, &keep), 0);
    sy_h1client_request_t req = {.method = "POST", .target = "/routes/nav/percent", .host = "127.0.0.1:9901",
                                 .body = "{\"percent_bp\":5}", .body_len = 16};
    assert_null(sy_h1client_fetch(&p.addr, &req, 10.0, &r));
    peer_join(&p);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\"reason\":\"none\"}");
    assert_non_null(strstr(p.req, "POST /routes/nav/percent HTTP/1.1\r\n"));
    assert_non_null(strstr(p.req, "Content-Length: 16\r\n"));
    assert_non_null(strstr(p.req, "\r\n\r\n{\"percent_bp\":5}"));
    /* A silent peer: the timeout. */
    peer_start(&p, PEER_SILENT, NULL, false, 1);
    assert_ptr_equal(sy_h1client_fetch(&p.addr, &req, 0.2, &r), sy_h1client_err_timeout);
    peer_join(&p);
    /* A peer that hangs up mid-answer. */
    peer_start(&p, PEER_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{", false, 1);
    assert_ptr_equal(sy_h1client_fetch(&p.addr, &req, 10.0, &r), sy_h1client_err_closed_early);
    peer_join(&p);
    sy_h1client_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_split_at_every_byte),
        cmocka_unit_test(test_chunked_split_at_every_byte),
        cmocka_unit_test(test_body_until_close),
        cmocka_unit_test(test_peer_closes_early),
        cmocka_unit_test(test_bad_status_lines),
        cmocka_unit_test(test_oversized_head),
        cmocka_unit_test(test_interim_answers_are_skipped),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_exchange_byte_at_a_time),
        cmocka_unit_test(test_exchange_framings),
        cmocka_unit_test(test_exchange_failures),
        cmocka_unit_test(test_refused_and_unsendable),
        cmocka_unit_test(test_destroy_and_restart_inside_the_callback),
        cmocka_unit_test(test_cancel_calls_nothing),
        cmocka_unit_test(test_start_on_a_pooled_connection),
        cmocka_unit_test(test_fetch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
