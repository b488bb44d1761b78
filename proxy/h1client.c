#include "proxy/h1client.h"
#include "proxy/tls.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char sy_h1client_err_timeout[] = "timed out";
const char sy_h1client_err_refused[] = "connection refused";
const char sy_h1client_err_connect[] = "connect failed";
const char sy_h1client_err_io[] = "the connection failed";
const char sy_h1client_err_no_answer[] = "the peer closed the connection without an answer";
const char sy_h1client_err_closed_early[] = "the peer closed the connection mid-answer";
const char sy_h1client_err_tls[] = "TLS handshake failed";
const char sy_h1client_err_head_too_large[] = "response head too large";
const char sy_h1client_err_body_too_large[] = "response body too large";
const char sy_h1client_err_nomem[] = "out of memory";
static const char err_request[] = "the request cannot be sent (a space, CR or LF in its target, or CR or LF in "
                                  "its host or method)";

/* --- the parse step ------------------------------------------------------------ */

static int resp_fail(sy_h1client_resp_t *r, const char *err, int rc)
{
    if (r->err == NULL) {
        r->err = err;
        r->_rc = rc;
    }
    return sy_h1_fail(&r->_h1, 502, err);
}

static int resp_on_head(void *ud, sy_h1_msg_t *m)
{
    sy_h1client_resp_t *r = ud;
    if (m->status == 101)
        return resp_fail(r, "the peer switched protocols unasked", SY_EINVAL);
    if (m->status < 200)
        return 0; /* interim: the final answer follows (on_done goes on) */
    r->status = m->status;
    r->msg = m;
    return r->_lim.head_request ? SY_H1_HEAD_NO_BODY : 0;
}

static int resp_on_body(void *ud, const char *data, size_t len)
{
    sy_h1client_resp_t *r = ud;
    if (len > r->_lim.max_body - r->body_len)
        return resp_fail(r, sy_h1client_err_body_too_large, SY_ELIMIT);
    if (r->_lim.keep_body) {
        if (r->body_len + len + 1 > r->_body_cap) {
            /* Doubles, so a body read in small pieces costs few copies; never
             * past the limit (and its NUL). */
            size_t cap = r->_body_cap ? r->_body_cap * 2 : 4096;
            if (cap < r->body_len + len + 1)
                cap = r->body_len + len + 1;
            if (cap > r->_lim.max_body + 1)
                cap = r->_lim.max_body + 1;
            char *nb = realloc(r->body, cap);
            if (nb == NULL)
                return resp_fail(r, sy_h1client_err_nomem, SY_ENOMEM);
            r->body = nb;
            r->_body_cap = cap;
        }
        memcpy(r->body + r->body_len, data, len);
        r->body[r->body_len + len] = '\0';
    }
    r->body_len += len;
    return 0;
}

static int resp_on_done(void *ud)
{
    sy_h1client_resp_t *r = ud;
    if (r->status == 0)
        return SY_H1_DONE_CONTINUE; /* the end of a 1xx */
    r->complete = true;
    return 0;
}

static const sy_h1_callbacks_t resp_callbacks = {resp_on_head, resp_on_body, resp_on_done};

int sy_h1client_resp_init(sy_h1client_resp_t *r, const sy_h1client_limits_t *lim)
{
    assert(lim->max_head > 0 && lim->max_headers > 0);
    memset(r, 0, sizeof(*r));
    r->_lim = *lim;
    r->_arena = malloc(sy_h1_arena_size(lim->max_head, lim->max_headers));
    if (r->_arena == NULL)
        return SY_ENOMEM;
    sy_h1client_resp_reset(r);
    return 0;
}

void sy_h1client_resp_reset(sy_h1client_resp_t *r)
{
    free(r->body);
    r->body = NULL;
    r->_body_cap = 0;
    r->body_len = 0;
    r->status = 0;
    r->msg = NULL;
    r->complete = false;
    r->err = NULL;
    r->_rc = 0;
    r->_trailing = false;
    const sy_h1client_limits_t *l = &r->_lim;
    sy_h1_init(&r->_h1, false, &resp_callbacks, r, l->max_head, l->max_head, l->max_headers);
    sy_h1_set_arena(&r->_h1, r->_arena, sy_h1_arena_size(l->max_head, l->max_headers));
}

void sy_h1client_resp_free(sy_h1client_resp_t *r)
{
    free(r->body);
    r->body = NULL;
    free(r->_arena);
    r->_arena = NULL;
    r->msg = NULL;
}

/* The codec stopped: keep our own reason when a callback gave one, else name
 * the codec's (its 431 is worded for requests). */
static int resp_codec_error(sy_h1client_resp_t *r)
{
    if (r->err == NULL) {
        r->_rc = r->_h1.err_status == 431 ? SY_ELIMIT : SY_EINVAL;
        r->err = r->_h1.err_status == 431   ? sy_h1client_err_head_too_large
                 : r->_h1.err_reason != NULL ? r->_h1.err_reason
                                             : "malformed response";
    }
    return r->_rc;
}

int sy_h1client_parse_response(sy_h1client_resp_t *r, const char *data, size_t len)
{
    if (r->complete)
        return 0;
    if (r->err != NULL)
        return r->_rc;
    size_t used = 0;
    int rc = sy_h1_execute(&r->_h1, data, len, &used);
    if (rc == SY_H1_ERROR)
        return resp_codec_error(r);
    if (r->complete && used < len)
        r->_trailing = true;
    return r->complete ? 0 : SY_EAGAIN;
}

int sy_h1client_parse_eof(sy_h1client_resp_t *r)
{
    if (r->complete)
        return 0;
    if (r->err != NULL)
        return r->_rc;
    /* Between messages (nothing yet, or only 1xx answers): no answer at all. */
    bool idle = sy_h1_idle(&r->_h1);
    if (sy_h1_finish(&r->_h1) == SY_H1_PAUSED && r->complete)
        return 0;
    r->err = idle ? sy_h1client_err_no_answer : sy_h1client_err_closed_early;
    r->_rc = SY_EINVAL;
    return r->_rc;
}

const sy_header_t *sy_h1client_find(const sy_h1client_resp_t *r, const char *name)
{
    return r->msg != NULL ? sy_h1_find(r->msg, name) : NULL;
}

/* --- the request ----------------------------------------------------------------- */

static bool sendable(const char *s, bool space_ok)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (*s == '\r' || *s == '\n' || (!space_ok && *s == ' '))
            return false;
    return true;
}

/* The request's bytes, in one allocation (*out, owned by the caller). */
static int format_request(const sy_h1client_request_t *req, bool keep_alive, char **out, size_t *out_len)
{
    if (!sendable(req->method, false) || !sendable(req->target, false) || !sendable(req->host, true))
        return SY_EINVAL;
    char clen[48] = "";
    if (req->body != NULL)
        snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", req->body_len);
    const char *more = req->headers ? req->headers : "";
    static const char fmt[] = "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n";
    const char *conn = keep_alive ? "" : "Connection: close\r\n";
    int n = snprintf(NULL, 0, fmt, req->method, req->target, req->host, more, clen, conn);
    if (n < 0)
        return SY_EINVAL;
    size_t body_len = req->body != NULL ? req->body_len : 0;
    char *buf = malloc((size_t)n + body_len + 1);
    if (buf == NULL)
        return SY_ENOMEM;
    snprintf(buf, (size_t)n + 1, fmt, req->method, req->target, req->host, more, clen, conn);
    if (body_len > 0)
        memcpy(buf + n, req->body, body_len);
    *out = buf;
    *out_len = (size_t)n + body_len;
    return 0;
}

static const char *connect_error(int err)
{
    return err == ECONNREFUSED ? sy_h1client_err_refused : sy_h1client_err_connect;
}

/* --- the exchange on a loop ------------------------------------------------------ */

typedef enum { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_WRITING, ST_READING } state_t;

struct sy_h1client {
    struct ev_loop *loop;
    sy_h1client_resp_t resp;
    state_t state;
    int fd;
    ev_io io;
    ev_timer timer;      /* the whole exchange's timeout */
    const char *pending; /* a failure of the start, told from the loop */
    bool connect_only;
    bool borrowed;       /* fd is the caller's (sy_h1client_start_on): never closed here */
    struct ssl_ctx_st *tls_ctx; /* borrowed (sy_h1client_set_tls); NULL: plain */
    const char *tls_sni, *tls_host;
    struct ssl_st *ssl;  /* owned while an exchange runs over TLS */
    char *out;           /* the request */
    size_t out_len, out_off;
    sy_h1client_cb cb;
    void *ud;
};

static void io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

sy_h1client_t *sy_h1client_create(struct ev_loop *loop, const sy_h1client_limits_t *lim)
{
    sy_h1client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (sy_h1client_resp_init(&c->resp, lim) != 0) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->fd = -1;
    ev_init(&c->io, io_cb);
    c->io.data = c;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    return c;
}

/* Back to idle: watchers stopped, the socket closed, the request freed. */
static void stop(sy_h1client_t *c)
{
    ev_io_stop(c->loop, &c->io);
    ev_timer_stop(c->loop, &c->timer);
    sy_tls_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0 && !c->borrowed)
        close(c->fd);
    c->fd = -1;
    free(c->out);
    c->out = NULL;
    c->state = ST_IDLE;
    c->pending = NULL;
}

/* Ends the exchange and calls back, as the very last thing: the callback may
 * start, cancel or destroy c. */
static void finish(sy_h1client_t *c, const char *err)
{
    stop(c);
    sy_h1client_cb cb = c->cb;
    void *ud = c->ud;
    c->cb = NULL;
    c->ud = NULL;
    cb(c, ud, err);
}

static int begin(sy_h1client_t *c, const sy_addr_t *addr, double timeout, sy_h1client_cb cb, void *ud)
{
    sy_h1client_resp_reset(&c->resp);
    c->out_off = 0;
    c->cb = cb;
    c->ud = ud;
    c->borrowed = false;
    c->state = ST_CONNECTING;
    int fd = sy_net_connect(addr);
    if (fd < 0) {
        /* Told from the loop, as every other end: the caller's stack may not
         * expect its callback yet. */
        c->pending = connect_error(-fd);
        ev_timer_set(&c->timer, 0., 0.);
    } else {
        c->fd = fd;
        ev_io_set(&c->io, fd, EV_WRITE);
        ev_io_start(c->loop, &c->io);
        ev_timer_set(&c->timer, timeout, 0.);
    }
    ev_timer_start(c->loop, &c->timer);
    return 0;
}

int sy_h1client_start(sy_h1client_t *c, const sy_addr_t *addr, const sy_h1client_request_t *req, double timeout,
                      sy_h1client_cb cb, void *ud)
{
    if (c->state != ST_IDLE || cb == NULL)
        return SY_EINVAL;
    int rc = format_request(req, false, &c->out, &c->out_len);
    if (rc != 0)
        return rc;
    c->connect_only = false;
    return begin(c, addr, timeout, cb, ud);
}

int sy_h1client_start_on(sy_h1client_t *c, int fd, bool connecting, const sy_h1client_request_t *req, double timeout,
                         sy_h1client_cb cb, void *ud)
{
    if (c->state != ST_IDLE || cb == NULL || fd < 0)
        return SY_EINVAL;
    int rc = format_request(req, true, &c->out, &c->out_len);
    if (rc != 0)
        return rc;
    sy_h1client_resp_reset(&c->resp);
    c->connect_only = false;
    c->borrowed = true;
    c->out_off = 0;
    c->cb = cb;
    c->ud = ud;
    c->fd = fd;
    c->state = connecting ? ST_CONNECTING : ST_WRITING;
    ev_io_set(&c->io, fd, EV_WRITE);
    ev_io_start(c->loop, &c->io);
    ev_timer_set(&c->timer, timeout, 0.);
    ev_timer_start(c->loop, &c->timer);
    return 0;
}

bool sy_h1client_reusable(const sy_h1client_t *c)
{
    const sy_h1client_resp_t *r = &c->resp;
    return c->borrowed && r->complete && r->err == NULL && !r->_trailing && r->msg != NULL && r->msg->keep_alive &&
           !r->msg->body_until_eof;
}

int sy_h1client_connect(sy_h1client_t *c, const sy_addr_t *addr, double timeout, sy_h1client_cb cb, void *ud)
{
    if (c->state != ST_IDLE || cb == NULL)
        return SY_EINVAL;
    c->connect_only = true;
    return begin(c, addr, timeout, cb, ud);
}

void sy_h1client_set_tls(sy_h1client_t *c, struct ssl_ctx_st *ctx, const char *sni, const char *host)
{
    c->tls_ctx = ctx;
    c->tls_sni = sni;
    c->tls_host = host;
}

void sy_h1client_cancel(sy_h1client_t *c)
{
    if (c == NULL)
        return;
    stop(c);
    c->cb = NULL;
    c->ud = NULL;
}

void sy_h1client_destroy(sy_h1client_t *c)
{
    if (c == NULL)
        return;
    sy_h1client_cancel(c);
    sy_h1client_resp_free(&c->resp);
    free(c);
}

bool sy_h1client_busy(const sy_h1client_t *c)
{
    return c->state != ST_IDLE;
}

const sy_h1client_resp_t *sy_h1client_response(const sy_h1client_t *c)
{
    return &c->resp;
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_h1client_t *c = t->data;
    (void)loop;
    (void)revents;
    finish(c, c->pending != NULL ? c->pending : sy_h1client_err_timeout);
}

/* Writes what the socket takes; on the last byte turns to reading. */
static void write_request(sy_h1client_t *c)
{
    while (c->out_off < c->out_len) {
        sy_tls_io_t io;
        ssize_t w = c->ssl == NULL ? send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL)
                                   : sy_tls_write(c->ssl, c->out + c->out_off, c->out_len - c->out_off, &io);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* EV_WRITE stays armed */
        if (w < 0) {
            finish(c, sy_h1client_err_io);
            return;
        }
        c->out_off += (size_t)w;
    }
    free(c->out);
    c->out = NULL;
    c->state = ST_READING;
    ev_io_stop(c->loop, &c->io);
    ev_io_modify(&c->io, EV_READ);
    ev_io_start(c->loop, &c->io);
}

/* Reads and parses until the socket is dry or the answer is complete. */
static void read_response(sy_h1client_t *c)
{
    char chunk[8192];
    for (;;) {
        sy_tls_io_t io;
        ssize_t r = c->ssl == NULL ? recv(c->fd, chunk, sizeof(chunk), 0) : sy_tls_read(c->ssl, chunk, sizeof(chunk), &io);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r < 0) {
            finish(c, sy_h1client_err_io);
            return;
        }
        int rc = r == 0 ? sy_h1client_parse_eof(&c->resp) : sy_h1client_parse_response(&c->resp, chunk, (size_t)r);
        if (rc != SY_EAGAIN) {
            finish(c, rc == 0 ? NULL : c->resp.err);
            return;
        }
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    sy_h1client_t *c = w->data;
    (void)loop;
    (void)revents;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            finish(c, connect_error(err));
            return;
        }
        if (c->tls_ctx != NULL) {
            c->ssl = sy_tls_connect(c->tls_ctx, c->fd, c->tls_sni, c->tls_host, NULL, NULL);
            if (c->ssl == NULL) {
                finish(c, sy_h1client_err_nomem);
                return;
            }
            c->state = ST_HANDSHAKE;
        } else if (c->connect_only) {
            finish(c, NULL);
            return;
        } else {
            c->state = ST_WRITING;
        }
    }
    if (c->state == ST_HANDSHAKE) {
        sy_tls_io_t io;
        int r = sy_tls_handshake(c->ssl, &io);
        if (r < 0) {
            finish(c, sy_h1client_err_tls);
            return;
        }
        if (r == 0) {
            ev_io_stop(c->loop, &c->io);
            ev_io_modify(&c->io, io.wants);
            ev_io_start(c->loop, &c->io);
            return;
        }
        if (c->connect_only) {
            finish(c, NULL);
            return;
        }
        c->state = ST_WRITING;
        ev_io_stop(c->loop, &c->io);
        ev_io_modify(&c->io, EV_WRITE);
        ev_io_start(c->loop, &c->io);
    }
    if (c->state == ST_WRITING)
        write_request(c);
    else
        read_response(c);
}

/* --- the same, blocking ------------------------------------------------------------ */

/* Waits for events on fd at most timeout seconds: 0, SY_EAGAIN (timed out) or
 * SY_EIO. */
static int wait_for(int fd, short events, double timeout)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, (int)(timeout * 1000));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return SY_EIO;
        return n == 0 ? SY_EAGAIN : 0;
    }
}

static const char *fetch_on(int fd, const char *out, size_t out_len, double timeout, sy_h1client_resp_t *resp)
{
    if (wait_for(fd, POLLOUT, timeout) != 0)
        return sy_h1client_err_timeout;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
        return connect_error(err);
    for (size_t off = 0; off < out_len;) {
        ssize_t w = send(fd, out + off, out_len - off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (errno != EINTR && wait_for(fd, POLLOUT, timeout) != 0)
                return sy_h1client_err_timeout;
            continue;
        }
        if (w < 0)
            return sy_h1client_err_io;
        off += (size_t)w;
    }
    char chunk[16384];
    for (;;) {
        ssize_t r = recv(fd, chunk, sizeof(chunk), 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (errno != EINTR && wait_for(fd, POLLIN, timeout) != 0)
                return sy_h1client_err_timeout;
            continue;
        }
        if (r < 0)
            return sy_h1client_err_io;
        int rc = r == 0 ? sy_h1client_parse_eof(resp) : sy_h1client_parse_response(resp, chunk, (size_t)r);
        if (rc != SY_EAGAIN)
            return rc == 0 ? NULL : resp->err;
    }
}

const char *sy_h1client_fetch(const sy_addr_t *addr, const sy_h1client_request_t *req, double timeout,
                              sy_h1client_resp_t *resp)
{
    sy_h1client_resp_reset(resp);
    char *out = NULL;
    size_t out_len = 0;
    int rc = format_request(req, false, &out, &out_len);
    if (rc != 0)
        return rc == SY_ENOMEM ? sy_h1client_err_nomem : err_request;
    int fd = sy_net_connect(addr);
    if (fd < 0) {
        free(out);
        return connect_error(-fd);
    }
    const char *err = fetch_on(fd, out, out_len, timeout, resp);
    close(fd);
    free(out);
    return err;
}
