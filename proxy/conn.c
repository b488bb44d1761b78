/* Client connections: lifecycle, I/O, phases. See conn.h and conn_impl.h.
 *
 * Data moves through four buffers, each owned by the connection:
 *   client fd -> in -> (request parser) -> up_out -> upstream fd
 *   upstream fd -> up_in -> (response parser) -> out -> client fd
 * Every step moves at most what the next buffer has room for, so a slow reader
 * on one side stops reads on the other (back-pressure) and memory per
 * connection is bounded by four blocks whatever the body size. Bodies are
 * re-framed on the way (chunked is re-chunked, lengths pass through), which is
 * what lets the parsers validate every byte that is forwarded.
 *
 * TLS sits under the same calls: a connection (or upstream connection) with
 * an SSL object reads and writes through proxy/tls.h instead of read/send, a
 * branch on the pointer, so the codecs above see plaintext bytes either way
 * and a plain connection pays one test per call.
 *
 * I/O results are folded into a few flags (eof, blocked), then conn_pump()
 * runs the step of the connection's phase until nothing moves, and re-arms
 * watchers and the one timer from the phase's handlers. Closing is deferred:
 * sy_conn_close() stops watchers and closes fds at once, and the reaper (an
 * ev_prepare, run before the loop blocks again) frees the memory once no
 * callback can still be on the stack. */
#include "proxy/conn_impl.h"

#include "proxy/h2.h"
#include "proxy/log.h"
#include "proxy/net.h"
#include "proxy/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_pump(sy_conn_t *c);

/* --- small helpers ------------------------------------------------------ */

ev_tstamp sy_conn_now(const sy_conn_t *c)
{
    return ev_now(c->w->loop);
}

/* Changes the events a watcher waits for. ev_io_modify, unlike ev_io_set, does
 * not mark the fd as new, so libev issues one EPOLL_CTL_MOD at most instead of
 * an ADD that fails with EEXIST and a retry. */
void sy_conn_set_events(struct ev_loop *loop, ev_io *io, int *cur, int events)
{
    if (*cur == events)
        return;
    ev_io_stop(loop, io);
    if (events != 0) {
        ev_io_modify(io, events);
        ev_io_start(loop, io);
    }
    *cur = events;
}

int sy_conn_take(sy_conn_t *c, sy_buf_t *b)
{
    return sy_buf_take(b, &c->w->bufs);
}

void sy_conn_give(sy_conn_t *c, sy_buf_t *b)
{
    sy_buf_release(b, &c->w->bufs);
}

void sy_deadline_consider(sy_deadline_t *d, ev_tstamp when, deadline_kind_t kind)
{
    if (d->kind == DL_NONE || when < d->when) {
        d->when = when;
        d->kind = kind;
    }
}

/* --- phases ----------------------------------------------------------------- */

static sy_buf_t *dst_in(sy_conn_t *c)
{
    return &c->in;
}

static sy_buf_t *dst_up_in(sy_conn_t *c)
{
    return &c->up_in;
}

static int events_read(const sy_conn_t *c)
{
    (void)c;
    return EV_READ;
}

static int events_none(const sy_conn_t *c)
{
    (void)c;
    return 0;
}

/* Idle: a first byte starts an exchange; the last response may still be going out. */
static bool idle_step(sy_conn_t *c)
{
    if (c->alpn_h2) { /* TLS with ALPN h2: the preface is the codec's to check */
        sy_h2_start(c);
        return true;
    }
    if (c->http2_ok && c->in.len > 0 && c->out.len == 0) {
        /* h2c with prior knowledge: the client preface instead of a request. */
        size_t n = c->in.len < SY_H2_PREFACE_LEN ? c->in.len : SY_H2_PREFACE_LEN;
        if (memcmp(sy_buf_data(&c->in), SY_H2_PREFACE, n) == 0) {
            if (n < SY_H2_PREFACE_LEN && !c->client_eof)
                return false; /* wait for the rest of it */
            if (n == SY_H2_PREFACE_LEN) {
                sy_h2_start(c);
                return true;
            }
        }
        c->http2_ok = false; /* an HTTP/1.1 connection from here on */
    }
    if (c->in.len > 0) {
        /* The exchange's first round runs in this one, so a pipelined
         * request costs no extra round of the pump's bound. */
        sy_exchange_begin(c);
        if (c->phase == PH_EXCHANGE)
            sy_exchange_ops.step(c);
        return true;
    }
    bool progress = sy_conn_flush_client(c) > 0;
    if (c->phase == PH_IDLE && c->client_eof && c->in.len == 0) {
        sy_conn_close(c, NULL);
        return true;
    }
    return progress;
}

/* The config of a connection between exchanges: the worker's current one.
 * c->cfg, cached when the last exchange ended, may be gone: a reload replaced
 * the worker's snapshot since, and no reference of this connection kept it. */
static const sy_config_t *between_cfg(const sy_conn_t *c)
{
    return c->snap != NULL ? c->snap->config : c->w->snap->config;
}

static void idle_deadline(const sy_conn_t *c, sy_deadline_t *d)
{
    const sy_timeouts_t *t = &between_cfg(c)->timeouts;
    if (c->tls != NULL && !c->tls_ready) /* a half-open handshake holds a slot: bounded */
        sy_deadline_consider(d, c->t_idle + t->tls_handshake / 1e3, DL_CLIENT_IDLE);
    sy_deadline_consider(d, c->t_idle + t->client_idle / 1e3, DL_CLIENT_IDLE);
    if (c->w->draining)
        sy_deadline_consider(d, (c->t_idle > c->w->drain_t0 ? c->t_idle : c->w->drain_t0) + t->drain_idle / 1e3,
                             DL_CLIENT_IDLE);
}

/* Lingering: the last bytes go out, then the connection closes. */
static bool linger_step(sy_conn_t *c)
{
    bool progress = sy_conn_flush_client(c) > 0;
    if (c->phase == PH_LINGER && c->out.len == 0) {
        sy_conn_close(c, NULL);
        return true;
    }
    return progress;
}

static void linger_deadline(const sy_conn_t *c, sy_deadline_t *d)
{
    sy_deadline_consider(d, c->t_closing + between_cfg(c)->timeouts.body_idle / 1e3, DL_CLOSING);
}

static const sy_conn_phase_ops_t idle_ops = {
    .name = "idle",
    .client_dst = dst_in,
    .upstream_dst = dst_up_in,
    .step = idle_step,
    .client_events = events_read,
    .deadline = idle_deadline,
};

static const sy_conn_phase_ops_t linger_ops = {
    .name = "linger",
    .client_dst = dst_in,
    .upstream_dst = dst_up_in,
    .step = linger_step,
    .client_events = events_none,
    .deadline = linger_deadline,
};

static const sy_conn_phase_ops_t *const phase_ops[] = {
    [PH_IDLE] = &idle_ops,
    [PH_EXCHANGE] = &sy_exchange_ops,
    [PH_TUNNEL] = &sy_tunnel_ops,
    [PH_LINGER] = &linger_ops,
    [PH_H2] = &sy_h2_ops,
    [PH_CLOSED] = NULL,
};

void sy_conn_enter(sy_conn_t *c, conn_phase_t phase)
{
    c->phase = phase;
    switch (phase) {
    case PH_IDLE:
        c->t_idle = sy_conn_now(c);
        break;
    case PH_EXCHANGE:
        c->t_start = c->t_client_act = sy_conn_now(c);
        break;
    case PH_TUNNEL:
        c->t_client_act = c->t_up_act = sy_conn_now(c);
        break;
    case PH_LINGER:
        c->t_closing = sy_conn_now(c);
        break;
    case PH_H2:
        c->t_idle = c->t_client_act = sy_conn_now(c);
        break;
    case PH_CLOSED:
        break;
    }
}

/* --- reading ------------------------------------------------------------------ */

static void upstream_read(sy_conn_t *c)
{
    sy_buf_t *b = phase_ops[c->phase]->upstream_dst(c);
    if (sy_conn_take(c, b) != 0)
        return;
    if (sy_buf_room(b) == 0)
        sy_buf_compact(b);
    size_t room = sy_buf_room(b);
    if (room == 0)
        return;
    sy_tls_io_t io;
    ssize_t n = c->up->tls == NULL ? recv(c->up->fd, sy_buf_tail(b), room, 0)
                                   : sy_tls_read(c->up->tls, sy_buf_tail(b), room, &io);
    if (n < 0 && errno == EAGAIN && c->up->tls != NULL && io.wants == EV_WRITE)
        c->up->tls_wants = EV_WRITE;
    if (n > 0) {
        b->len += (uint32_t)n;
        c->t_up_act = sy_conn_now(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        c->up_eof = true; /* the exchange's step decides what an early end means */
    }
}

/* The upstream finished connecting (TCP, then the TLS handshake if any):
 * 1, still on its way: 0, failed (c is done with it): -1. A failed handshake
 * is a failed connect for health, trips and fallbacks. */
static int upstream_connected(sy_conn_t *c)
{
    sy_upconn_t *up = c->up;
    if (!up->tls_started) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            sy_exchange_upstream_failed(c, SY_XERR_CONNECT,
                                        err == ECONNREFUSED ? "upstream refused the connection"
                                                            : "upstream connect failed");
            return -1;
        }
        up->tls_started = up->tls != NULL;
    }
    if (up->tls != NULL) {
        sy_tls_io_t io;
        int r = sy_tls_handshake(up->tls, &io);
        if (r == 0) {
            up->tls_wants = io.wants;
            return 0;
        }
        up->tls_wants = 0;
        if (r < 0) {
            sy_info("upstream %s: TLS handshake failed: %s", c->dec.endpoint != NULL ? c->dec.endpoint->name : "?",
                    io.why);
            sy_exchange_upstream_failed(c, SY_XERR_CONNECT, "upstream TLS handshake failed");
            return -1;
        }
    }
    c->up->connected = true;
    c->up_blocked = false;
    if (c->snap != NULL) /* ends this worker's run of failed connects to it */
        sy_epstate_connect_result(c->snap->eps, c->w->id, c->dec.endpoint->index, 1);
    return 1;
}

/* --- the ready queue ----------------------------------------------------------
 *
 * libev invokes the watchers that became pending in one loop iteration last
 * first: the socket epoll reported first, the one that has waited longest, ran
 * last, behind every other connection of the batch, on the request's way in and
 * again on the response's way out. Under load that put the oldest requests at
 * the back twice and made the tail. So the I/O callbacks only note their events
 * and queue the connection; a check watcher of the lowest priority, invoked
 * after them in the same iteration, runs the queue in epoll's order (oldest
 * first), each connection once whatever number of its sockets had events. */
static void ready_push(sy_conn_t *c, int client_rev, int up_rev)
{
    c->ready_client |= client_rev;
    c->ready_up |= up_rev;
    if (c->ready_queued)
        return;
    c->ready_queued = true;
    /* Invoked in reverse order, pushed at the head: the queue is in epoll's order. */
    c->ready_next = c->w->ready;
    c->w->ready = c;
}

static void client_ready(sy_conn_t *c, int revents);
static void upstream_ready(sy_conn_t *c, int revents);

void sy_conn_run_ready(sy_worker_t *w)
{
    while (w->ready != NULL) {
        sy_conn_t *c = w->ready;
        w->ready = c->ready_next;
        c->ready_next = NULL;
        c->ready_queued = false;
        int crev = c->ready_client, urev = c->ready_up;
        c->ready_client = c->ready_up = 0;
        /* The response's bytes first: they free a buffer the request may wait on. */
        if (urev != 0)
            upstream_ready(c, urev);
        if (crev != 0)
            client_ready(c, crev);
    }
}

void sy_conn_upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_conn_t *c = io->data;
    (void)loop;
    if (c->up != NULL && c->phase != PH_CLOSED)
        ready_push(c, 0, revents);
}

/* A detached upstream connection's events were not its connection's to run. */
void sy_conn_ready_forget_upstream(sy_conn_t *c)
{
    c->ready_up = 0;
}

static void upstream_ready(sy_conn_t *c, int revents)
{
    if (c->up == NULL || c->phase == PH_CLOSED)
        return;
    bool tls_retry = false;
    if (!c->up->connected) {
        if (upstream_connected(c) <= 0) {
            conn_pump(c);
            return;
        }
    } else {
        tls_retry = (revents & c->up->tls_wants) != 0;
        if ((revents & EV_WRITE) || tls_retry)
            c->up_blocked = false;
        if (tls_retry)
            c->up->tls_wants = 0;
    }
    if ((revents & EV_READ) || tls_retry)
        upstream_read(c);
    conn_pump(c);
}

/* The one place a TLS connection learns its protocol: when ALPN chose h2 the
 * idle step hands the connection to the HTTP/2 codec (c->alpn_h2). */
static void tls_established(sy_conn_t *c)
{
    c->tls_ready = true;
    c->alpn_h2 = sy_tls_alpn_h2(c->tls);
}

/* Advances the client's TLS handshake: true once it is done. */
static bool client_handshake(sy_conn_t *c)
{
    sy_tls_io_t io;
    int r = sy_tls_handshake(c->tls, &io);
    c->tls_wants = r == 0 ? io.wants : 0;
    if (r < 0)
        sy_conn_close(c, io.why != NULL ? io.why : "TLS handshake failed");
    else if (r > 0)
        tls_established(c);
    return r > 0 && c->phase != PH_CLOSED;
}

static void client_read(sy_conn_t *c)
{
    if (c->tls != NULL && !c->tls_ready && !client_handshake(c))
        return;
    sy_buf_t *b = phase_ops[c->phase]->client_dst(c);
    if (sy_conn_take(c, b) != 0) {
        sy_conn_close(c, "out of memory");
        return;
    }
    if (sy_buf_room(b) == 0)
        sy_buf_compact(b);
    size_t room = sy_buf_room(b);
    if (room == 0)
        return;
    sy_tls_io_t io;
    ssize_t n = c->tls == NULL ? recv(c->fd, sy_buf_tail(b), room, 0) : sy_tls_read(c->tls, sy_buf_tail(b), room, &io);
    if (n < 0 && errno == EAGAIN && c->tls != NULL && io.wants == EV_WRITE)
        c->tls_wants = EV_WRITE;
    if (n > 0) {
        b->len += (uint32_t)n;
        c->t_client_act = sy_conn_now(c);
        if (c->phase == PH_TUNNEL)
            c->bytes_in += (uint64_t)n;
    } else if (n == 0) {
        c->client_eof = true;
    } else if (errno != EAGAIN && errno != EINTR) {
        c->client_eof = true;
    }
}

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_conn_t *c = io->data;
    (void)loop;
    if (c->phase != PH_CLOSED)
        ready_push(c, revents, 0);
}

static void client_ready(sy_conn_t *c, int revents)
{
    if (c->phase == PH_CLOSED)
        return;
    /* A TLS call stalled on the other direction is retried (both ways). */
    bool tls_retry = (revents & c->tls_wants) != 0;
    if ((revents & EV_WRITE) || tls_retry)
        c->out_blocked = false;
    if (tls_retry)
        c->tls_wants = 0;
    if ((revents & EV_READ) || tls_retry)
        client_read(c);
    conn_pump(c);
}

/* --- writing ---------------------------------------------------------------- */

/* Writes b to fd (through tls when not NULL; a write that waits for a read
 * sets *tls_wants). Returns bytes written, 0 when blocked, -1 on a fatal error. */
static ssize_t flush(int fd, struct ssl_st *tls, int *tls_wants, sy_buf_t *b, bool *blocked)
{
    ssize_t total = 0;
    while (b->len > 0) {
        sy_tls_io_t io;
        ssize_t n = tls == NULL ? send(fd, sy_buf_data(b), b->len, MSG_NOSIGNAL)
                                : sy_tls_write(tls, sy_buf_data(b), b->len, &io);
        if (n < 0 && errno == EAGAIN && tls != NULL && io.wants == EV_READ)
            *tls_wants = EV_READ;
        if (n > 0) {
            sy_buf_consume(b, (size_t)n);
            total += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            *blocked = true;
            return total;
        }
        return -1;
    }
    return total;
}

int sy_conn_flush_upstream(sy_conn_t *c)
{
    if (c->up == NULL || !c->up->connected || c->up_out.len == 0 || c->up_blocked)
        return 0;
    ssize_t n = flush(c->up->fd, c->up->tls, &c->up->tls_wants, &c->up_out, &c->up_blocked);
    if (n < 0)
        return -1;
    if (n == 0)
        return 0;
    c->up_wrote = true;
    c->t_up_act = sy_conn_now(c);
    return 1;
}

int sy_conn_flush_client(sy_conn_t *c)
{
    if (c->h2_parent != NULL) /* an HTTP/2 stream's child: its stream reads out */
        return c->h2s != NULL ? sy_h2_child_flush(c) : 0;
    if (c->out.len == 0 || c->out_blocked)
        return 0;
    ssize_t n = flush(c->fd, c->tls, &c->tls_wants, &c->out, &c->out_blocked);
    if (n < 0) {
        c->xerr = c->xerr ? c->xerr : SY_XERR_CLIENT;
        sy_conn_close(c, "client went away");
        return -1;
    }
    if (n == 0)
        return 0;
    c->bytes_out += (uint64_t)n;
    c->t_client_act = sy_conn_now(c);
    return 1;
}

/* --- watchers and the deadline ---------------------------------------------- */

static void update_watchers(sy_conn_t *c)
{
    if (c->phase == PH_CLOSED)
        return;
    int ev = phase_ops[c->phase]->client_events(c);
    if (c->out.len > 0 && c->out_blocked && c->tls_wants != EV_READ)
        ev |= EV_WRITE;
    ev |= c->tls_wants;
    if (c->fd >= 0) /* an HTTP/2 stream's child has no socket of its own */
        sy_conn_set_events(c->w->loop, &c->io, &c->io_events, ev);

    if (c->up != NULL) {
        int uev = 0;
        if (!c->up->connected) {
            uev = c->up->tls_started ? c->up->tls_wants : EV_WRITE;
        } else {
            sy_buf_t *dst = phase_ops[c->phase]->upstream_dst(c);
            if (!c->up_eof && (c->phase == PH_TUNNEL || !sy_resp_done(c)) && (dst->base == NULL || dst->len < dst->cap))
                uev |= EV_READ;
            if (c->up_out.len > 0 && c->up_blocked && c->up->tls_wants != EV_READ)
                uev |= EV_WRITE;
            uev |= c->up->tls_wants;
        }
        sy_conn_set_events(c->w->loop, &c->up->io, &c->up_events, uev);
    }
}

static sy_deadline_t next_deadline(const sy_conn_t *c)
{
    sy_deadline_t d = {0, DL_NONE};
    if (c->phase == PH_CLOSED)
        return d;
    phase_ops[c->phase]->deadline(c, &d);
    /* Its backend's colour was swapped out: it finishes within timeouts.drain. */
    if ((c->phase == PH_EXCHANGE || c->phase == PH_TUNNEL) && c->up != NULL && c->dec.endpoint != NULL) {
        int64_t retired = c->snap != NULL ? sy_epstate_retired_ms(c->snap->eps, c->dec.endpoint->index) : 0;
        if (retired > 0)
            sy_deadline_consider(&d, (double)retired / 1e3 + c->cfg->timeouts.drain / 1e3, DL_RETIRED);
    }
    return d;
}

static void arm_timer(sy_conn_t *c)
{
    if (c->phase == PH_CLOSED)
        return;
    sy_deadline_t d = next_deadline(c);
    if (d.kind == DL_NONE) {
        ev_timer_stop(c->w->loop, &c->timer);
        c->armed = 0;
        return;
    }
    /* Re-arm only when the deadline moved earlier; a later one is found when the
     * timer fires, which keeps timer updates off the per-read path. */
    if (ev_is_active(&c->timer) && c->armed <= d.when)
        return;
    ev_timer_stop(c->w->loop, &c->timer);
    double after = d.when - sy_conn_now(c);
    ev_timer_set(&c->timer, after > 0 ? after : 0, 0.);
    ev_timer_start(c->w->loop, &c->timer);
    c->armed = d.when;
}

/* A deadline passed: returns false if c was closed. */
static bool deadline_passed(sy_conn_t *c, deadline_kind_t kind)
{
    switch (kind) {
    case DL_CLIENT_HEADER:
        c->xerr = SY_XERR_CLIENT;
        c->close_after = true;
        sy_local_respond(c, 408, "the request head did not arrive in time (timeouts.client_header)");
        return true;
    case DL_CLIENT_BODY:
        c->xerr = SY_XERR_CLIENT;
        if (sy_resp_head_sent(c)) {
            sy_conn_close(c, "client stalled");
            return false;
        }
        c->close_after = true;
        sy_local_respond(c, 408, "the request body stalled (timeouts.body_idle)");
        return true;
    case DL_CONNECT:
        sy_exchange_upstream_failed(c, SY_XERR_TIMEOUT, "upstream connect timed out (timeouts.connect)");
        return true;
    case DL_UPSTREAM_HEADER:
        sy_exchange_upstream_failed(c, SY_XERR_TIMEOUT, "upstream response timed out (timeouts.upstream_header)");
        return true;
    case DL_UPSTREAM_BODY:
        sy_exchange_upstream_failed(c, SY_XERR_TIMEOUT, "upstream body stalled (timeouts.body_idle)");
        return true;
    case DL_RETIRED:
        if (c->xerr == SY_XERR_NONE && c->phase == PH_EXCHANGE)
            c->xerr = SY_XERR_TIMEOUT;
        sy_conn_close(c, "its backend was swapped out and timeouts.drain passed");
        return false;
    case DL_H2:
        return true;
    case DL_CLIENT_IDLE:
        /* The timer may run in the same loop iteration as a read event not yet
         * handled: a request already on the wire is served (a draining gateway
         * says close in its answer), not reset with the connection. */
        if (c->phase == PH_IDLE && c->in.len == 0 && !c->client_eof && (c->tls == NULL || c->tls_ready)) {
            client_read(c);
            if (c->phase == PH_CLOSED)
                return false;
            if (c->in.len > 0)
                return true;
        }
        sy_conn_close(c, NULL);
        return false;
    case DL_TUNNEL:
    case DL_CLOSING:
        sy_conn_close(c, NULL);
        return false;
    case DL_NONE:
        break;
    }
    return true;
}

static void timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    sy_conn_t *c = tm->data;
    (void)loop;
    (void)revents;
    c->armed = 0;
    sy_deadline_t d = next_deadline(c);
    if (d.kind == DL_NONE)
        return;
    if (d.when > sy_conn_now(c) + 0.001) {
        arm_timer(c);
        return;
    }
    if (deadline_passed(c, d.kind))
        conn_pump(c);
    else if (c->h2_parent != NULL)
        sy_h2_child_pumped(c);
}

static void conn_pump_run(sy_conn_t *c);

/* An HTTP/2 stream's child tells its parent after each round. */
static void conn_pump(sy_conn_t *c)
{
    conn_pump_run(c);
    if (c->h2_parent != NULL)
        sy_h2_child_pumped(c);
}

void sy_conn_pump(sy_conn_t *c)
{
    conn_pump(c);
}

/* Bytes OpenSSL decrypted but nobody took yet raise no event: read them while
 * the phase wants them. Returns whether anything arrived. */
static bool tls_take_pending(sy_conn_t *c)
{
    bool moved = false;
    if (c->tls != NULL && c->tls_ready && sy_tls_pending(c->tls) &&
        (phase_ops[c->phase]->client_events(c) & EV_READ)) {
        sy_buf_t *b = phase_ops[c->phase]->client_dst(c);
        uint32_t before = b->len;
        client_read(c);
        moved = c->phase != PH_CLOSED && b->len != before;
    }
    if (c->phase != PH_CLOSED && c->up != NULL && c->up->tls != NULL && c->up->connected &&
        sy_tls_pending(c->up->tls) && !c->up_eof && (c->phase == PH_TUNNEL || !sy_resp_done(c))) {
        sy_buf_t *b = phase_ops[c->phase]->upstream_dst(c);
        uint32_t before = b->len;
        upstream_read(c);
        moved |= b->len != before;
    }
    return moved;
}


/* Runs the phase's step until nothing moves (bounded), then gives back empty
 * buffers and re-arms watchers and the timer for the phase it ended in. */
static void conn_pump_run(sy_conn_t *c)
{
    for (int guard = 0; guard < 256 && c->phase != PH_CLOSED; guard++) {
        bool progress = phase_ops[c->phase]->step(c);
        if (c->phase == PH_CLOSED)
            return;
        if (!progress && !tls_take_pending(c))
            break;
        if (c->phase == PH_CLOSED)
            return;
    }
    if (c->phase == PH_CLOSED)
        return;
    if (c->out.len == 0)
        sy_buf_release(&c->out, &c->w->bufs);
    if (c->up_out.len == 0 && c->phase != PH_TUNNEL)
        sy_buf_release(&c->up_out, &c->w->bufs);
    update_watchers(c);
    arm_timer(c);
}

/* --- open and close ----------------------------------------------------------- */

void sy_conn_close(sy_conn_t *c, const char *reason)
{
    if (c->phase == PH_CLOSED)
        return;
    if (reason != NULL)
        sy_debug("closing connection from %s: %s", c->peer_ip, reason);
    if (c->phase == PH_EXCHANGE || c->phase == PH_TUNNEL) {
        if (c->xerr == SY_XERR_NONE && !sy_resp_done(c) && c->phase == PH_EXCHANGE)
            c->xerr = SY_XERR_CLIENT;
        sy_exchange_record(c);
    }
    sy_exchange_detach_upstream(c, false);
    if (c->h2s != NULL)
        sy_h2_child_closed(c);
    sy_conn_set_events(c->w->loop, &c->io, &c->io_events, 0);
    ev_timer_stop(c->w->loop, &c->timer);
    sy_tls_free(c->tls);
    c->tls = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->h2 != NULL)
        sy_h2_conn_closed(c);
    sy_conn_enter(c, PH_CLOSED);
    sy_list_push_back(&c->w->dead, &c->node);
}

static void conn_free(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    bool child = c->h2_parent != NULL;
    if (c->h2 != NULL)
        sy_h2_free(c);
    sy_exchange_hold_free(c);
    sy_buf_t *bufs[] = {&c->in, &c->out, &c->up_out, &c->up_in, &c->req_arena, &c->resp_arena};
    for (size_t i = 0; i < SY_ARRAY_LEN(bufs); i++)
        sy_buf_release(bufs[i], &w->bufs);
    sy_snapshot_release(c->snap);
    sy_list_remove(&c->node);
    free(c);
    if (!child)
        sy_worker_conn_gone(w);
}

void sy_conn_reap(sy_worker_t *w)
{
    while (!sy_list_empty(&w->dead))
        conn_free(sy_container_of(w->dead.next, sy_conn_t, node));
}

sy_conn_t *sy_conn_child_new(sy_conn_t *parent)
{
    sy_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    sy_list_init(&c->node);
    c->w = parent->w;
    c->fd = -1;
    c->peer = parent->peer;
    memcpy(c->peer_ip, parent->peer_ip, sizeof(c->peer_ip));
    c->cfg = parent->w->snap->config;
    c->h2_parent = parent;
    sy_conn_enter(c, PH_IDLE);
    ev_init(&c->io, client_io_cb); /* never started: no fd */
    c->io.data = c;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    sy_list_push_back(&c->w->conns, &c->node);
    return c;
}

/* The TLS context for a connection on l: the current config's (a SIGHUP may
 * have brought new certificates), or the boot config's if the listeners were
 * changed by a reload that waits for a restart. */
static struct ssl_ctx_st *listener_tls(const sy_worker_t *w, const sy_listener_t *l)
{
    if (l->tls == NULL)
        return NULL;
    const sy_config_t *cfg = w->snap->config;
    if (l->index < cfg->nlisten && cfg->listen[l->index].tls != NULL)
        return cfg->listen[l->index].tls;
    return l->tls;
}

void sy_conn_accept(sy_worker_t *w, const sy_listener_t *l, int fd, const struct sockaddr *peer, socklen_t len)
{
    sy_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    struct ssl_ctx_st *ctx = listener_tls(w, l);
    if (ctx != NULL && (c->tls = sy_tls_accept(ctx, fd)) == NULL) {
        free(c);
        close(fd);
        return;
    }
    sy_list_init(&c->node);
    c->w = w;
    c->fd = fd;
    if (len > sizeof(c->peer))
        len = sizeof(c->peer);
    memcpy(&c->peer, peer, len);
    sy_addr_format_ip(peer, c->peer_ip, sizeof(c->peer_ip));
    sy_net_nodelay(fd);
    c->cfg = w->snap->config;
    c->http2_ok = l->http2;
    sy_conn_enter(c, PH_IDLE);
    ev_io_init(&c->io, client_io_cb, fd, EV_READ);
    c->io.data = c;
    ev_init(&c->timer, timer_cb);
    c->timer.data = c;
    sy_list_push_back(&w->conns, &c->node);
    w->nconns++;
    w->stats.accepted++;
    /* Most clients send at once: try reading before waiting for the loop. */
    client_read(c);
    conn_pump(c);
}

void sy_conn_drain_all(sy_worker_t *w)
{
    sy_list_t *n = w->conns.next;
    while (n != &w->conns) {
        sy_conn_t *c = sy_container_of(n, sy_conn_t, node);
        n = n->next;
        /* Not closed at once: a request may be on the wire (the next response
         * says close instead). Idle ones get timeouts.drain_idle. */
        arm_timer(c);
    }
}

void sy_conn_rearm_all(sy_worker_t *w)
{
    for (sy_list_t *n = w->conns.next; n != &w->conns; n = n->next)
        arm_timer(sy_container_of(n, sy_conn_t, node));
}

void sy_conn_close_all(sy_worker_t *w, const char *reason)
{
    while (!sy_list_empty(&w->conns)) {
        sy_conn_t *c = sy_container_of(w->conns.next, sy_conn_t, node);
        sy_conn_close(c, reason);
    }
}
