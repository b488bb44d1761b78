/* Client connection and exchange. See conn.h.
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
 * All I/O results are folded into flags, then conn_pump() moves bytes until
 * nothing moves, settles the exchange and re-arms watchers and the one timer.
 * Closing is deferred: conn_close() stops watchers and closes fds at once, and
 * the reaper (an ev_prepare, run before the loop blocks again) frees the memory
 * once no callback can still be on the stack. */
#include "proxy/conn.h"

#include "proxy/h1.h"
#include "proxy/headers.h"
#include "proxy/log.h"
#include "proxy/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef enum conn_state {
    CS_IDLE,    /* keep-alive, between requests */
    CS_ACTIVE,  /* an exchange is in progress */
    CS_TUNNEL,  /* an upgraded connection: bytes both ways */
    CS_CLOSING, /* flushing the last bytes, then close */
    CS_CLOSED,  /* waiting for the reaper */
} conn_state_t;

typedef enum deadline_kind {
    DL_NONE,
    DL_CLIENT_IDLE,
    DL_CLIENT_HEADER,
    DL_CLIENT_BODY,
    DL_CONNECT,
    DL_UPSTREAM_HEADER,
    DL_UPSTREAM_BODY,
    DL_TUNNEL,
    DL_CLOSING,
    DL_RETIRED,
} deadline_kind_t;

typedef struct sy_conn {
    sy_list_t node;
    sy_worker_t *w;
    int fd;
    ev_io io;
    ev_timer timer;
    int io_events;
    conn_state_t state;
    char peer_ip[48];
    struct sockaddr_storage peer;

    sy_buf_t in, out, up_out, up_in, req_arena, resp_arena;
    sy_h1_t req, resp;

    /* the exchange */
    sy_snapshot_t *snap;
    const sy_config_t *cfg;  /* snap->config, or the worker's for an idle connection */
    sy_decision_t dec;
    sy_upconn_t *up;
    int up_events;
    bool client_eof, up_eof, out_blocked, up_blocked;
    bool req_head_done, req_done, req_paused, want_tunnel, head_req, client_http11;
    bool resp_head_sent, resp_done, resp_final_head, local, close_after, upstream_reusable;
    bool said_close;         /* the response head sent says Connection: close */
    bool up_wrote;           /* bytes of this request reached this upstream connection */
    /* A body held for the router (it asked for it to find the user key): */
    char *hold;
    size_t hold_len, hold_off, hold_cap, hold_want;
    bool holding;            /* still collecting: no upstream chosen yet */
    bool hold_end_pending;   /* the request ended while held bytes wait to be sent */
    bool sent_continue;      /* we answered Expect: 100-continue ourselves */
    int retries;
    bool early_told;         /* the observer's early hook has this exchange's outcome */
    int early_status;
    sy_xerr_t early_xerr;
    sy_framing_t req_framing, resp_framing;
    uint64_t req_body, resp_body, bytes_in, bytes_out;
    int status;
    sy_xerr_t xerr;
    ev_tstamp t_start, t_ttfb, t_connect, t_req_sent, t_client_act, t_up_act, t_idle, t_closing;
    ev_tstamp armed;
    char request_id[33];
    char method[16];
    char target[256];
    char host[128];
} sy_conn_t;

static void conn_pump(sy_conn_t *c);
static void conn_close(sy_conn_t *c, const char *reason);
static void start_upstream(sy_conn_t *c);

/* --- small helpers ------------------------------------------------------ */

static ev_tstamp now_of(const sy_conn_t *c)
{
    return ev_now(c->w->loop);
}

/* Changes the events a watcher waits for. ev_io_modify, unlike ev_io_set, does
 * not mark the fd as new, so libev issues one EPOLL_CTL_MOD at most instead of
 * an ADD that fails with EEXIST and a retry. */
static void set_events(struct ev_loop *loop, ev_io *io, int fd, int *cur, int events)
{
    (void)fd;
    if (*cur == events)
        return;
    ev_io_stop(loop, io);
    if (events != 0) {
        ev_io_modify(io, events);
        ev_io_start(loop, io);
    }
    *cur = events;
}

static int take(sy_conn_t *c, sy_buf_t *b)
{
    return sy_buf_take(b, &c->w->bufs);
}

static void give(sy_conn_t *c, sy_buf_t *b)
{
    sy_buf_release(b, &c->w->bufs);
}

/* Appends a body piece with the framing the receiver expects. The caller made
 * sure there is room for len + 64 bytes. */
static int put_body(sy_buf_t *b, sy_framing_t framing, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    if (framing == SY_FRAME_CHUNKED) {
        if (sy_buf_appendf(b, "%zx\r\n", len) != 0)
            return SY_ELIMIT;
        if (sy_buf_append(b, data, len) != 0 || sy_buf_append(b, "\r\n", 2) != 0)
            return SY_ELIMIT;
        return 0;
    }
    return sy_buf_append(b, data, len);
}

/* How many input bytes may be parsed into b. Body bytes grow by at most 64
 * bytes of chunk framing per parse call; a head is rewritten with at most
 * HEAD_GROWTH bytes more than it had (the headers we add), so while a head may
 * still come, that much more is kept free. */
#define HEAD_GROWTH 1024
static size_t room_for(const sy_buf_t *b, bool head_pending)
{
    size_t free_bytes = (size_t)b->cap - b->len;
    size_t reserve = 64 + (head_pending ? HEAD_GROWTH : 0);
    return free_bytes > reserve ? free_bytes - reserve : 0;
}

/* --- the access log and the observer ------------------------------------ */

static void exchange_record(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    ev_tstamp now = now_of(c);
    sy_outcome_t o = {
        .decision = &c->dec,
        .status = c->status,
        .error = c->xerr,
        .ttfb_us = c->t_ttfb > 0 ? (uint64_t)((c->t_ttfb - c->t_start) * 1e6) : 0,
        .total_us = (uint64_t)((now - c->t_start) * 1e6),
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .early = c->early_told,
        .early_status = c->early_status,
        .early_error = c->early_xerr,
    };
    w->stats.requests++;
    if (c->snap != NULL && c->dec.route_index >= 0 && w->observer != NULL && w->observer->record != NULL)
        w->observer->record(w->observer->ctx, w->id, c->snap, &o);
    if (w->alog == NULL)
        return;

    static const char *const xerr_names[] = {"", "status", "connect", "reset", "timeout", "client"};
    sy_alog_entry_t e = {
        .worker = w->id,
        .request_id = c->request_id,
        .client = c->peer_ip,
        .method = c->method,
        .host = c->host,
        .target = c->target,
        .route = c->dec.route,
        .variant = c->dec.variant,
        .reason = c->dec.reason,
        .fallback = c->dec.fallback,
        .user = c->dec.user,
        .upstream = c->dec.endpoint ? c->dec.endpoint->name : NULL,
        .status = c->status,
        .error = c->xerr ? xerr_names[c->xerr] : NULL,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .ttfb_ms = o.ttfb_us / 1000.0,
        .duration_ms = o.total_us / 1000.0,
    };
    char line[2048];
    size_t n = sy_alog_format(line, sizeof(line), &e);
    if (n > 0)
        sy_alog_write(w->alog, (size_t)w->id, line, n);
}

/* The outcome is known and none of it reached the client yet: the observer
 * hears it now (the trip rules act before the client can send its next
 * request), once per exchange. */
static void exchange_early(sy_conn_t *c, int status, sy_xerr_t xerr)
{
    sy_worker_t *w = c->w;
    if (c->early_told || c->snap == NULL || c->dec.route_index < 0 || w->observer == NULL || w->observer->early == NULL)
        return;
    c->early_told = true;
    c->early_status = status;
    c->early_xerr = xerr;
    sy_outcome_t o = {.decision = &c->dec, .status = status, .error = xerr};
    w->observer->early(w->observer->ctx, w->id, c->snap, &o);
}

/* --- exchange lifecycle --------------------------------------------------- */

static void hold_free(sy_conn_t *c)
{
    free(c->hold);
    c->hold = NULL;
    c->hold_len = c->hold_off = c->hold_cap = c->hold_want = 0;
    c->holding = c->hold_end_pending = false;
}

static void exchange_begin(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    c->state = CS_ACTIVE;
    c->t_start = now_of(c);
    c->t_client_act = c->t_start;
    c->snap = sy_snapshot_ref(sy_snapshot_refresh(w->slot, (size_t)w->id, &w->snap));
    c->cfg = c->snap->config;
    memset(&c->dec, 0, sizeof(c->dec));
    c->dec.route_index = -1;
    c->req_head_done = c->req_done = c->req_paused = c->want_tunnel = c->head_req = false;
    c->resp_head_sent = c->resp_done = c->resp_final_head = c->local = c->upstream_reusable = false;
    c->up_wrote = c->up_eof = c->up_blocked = false;
    c->sent_continue = false;
    hold_free(c);
    c->retries = 0;
    c->early_told = false;
    c->req_body = c->resp_body = c->bytes_in = c->bytes_out = 0;
    c->status = 0;
    c->xerr = SY_XERR_NONE;
    c->t_ttfb = c->t_connect = c->t_req_sent = c->t_up_act = 0;
    c->method[0] = c->target[0] = c->host[0] = c->request_id[0] = '\0';
}

static void detach_upstream_keep(sy_conn_t *c, bool reusable, bool keep_request);

static void detach_upstream(sy_conn_t *c, bool reusable)
{
    detach_upstream_keep(c, reusable, false);
}

/* keep_request: the bytes bound for the upstream stay (a retry elsewhere). */
static void detach_upstream_keep(sy_conn_t *c, bool reusable, bool keep_request)
{
    if (c->up == NULL)
        return;
    if (c->dec.endpoint != NULL)
        atomic_fetch_sub_explicit(&((sy_endpoint_t *)c->dec.endpoint)->inflight, 1, memory_order_relaxed);
    /* A reusable connection keeps reading (the pool watches it for EOF). */
    set_events(c->w->loop, &c->up->io, c->up->fd, &c->up_events, reusable ? EV_READ : 0);
    sy_upstream_release(c->w->ups, c->up, reusable);
    c->up = NULL;
    c->up_events = 0;
    give(c, &c->up_in);
    if (!keep_request)
        give(c, &c->up_out);
    give(c, &c->resp_arena);
    sy_h1_reset(&c->resp);
}

/* The exchange is over on both sides: log it and get ready for the next one. */
static void exchange_end(sy_conn_t *c)
{
    bool reusable = c->upstream_reusable && c->up_in.len == 0 && c->up_out.len == 0 && c->req_done && !c->up_eof;
    detach_upstream(c, reusable);
    hold_free(c);
    exchange_record(c);
    sy_snapshot_release(c->snap);
    c->snap = NULL;
    c->cfg = c->w->snap->config;
    give(c, &c->req_arena);
    sy_h1_reset(&c->req);
    /* Draining: a response that went out without Connection: close leaves the
     * connection idle (the client may be sending its next request already); that
     * request is answered with close, or the idle grace ends it. */
    if (c->close_after || c->client_eof || (c->w->draining && c->said_close)) {
        c->state = CS_CLOSING;
        c->t_closing = now_of(c);
        return;
    }
    c->state = CS_IDLE;
    c->t_idle = now_of(c);
    sy_buf_release_if_empty(&c->in, &c->w->bufs);
}

/* What kind of error a local answer reports: the failure itself when we know it
 * (the backend's side, the router's), else the status's kind. */
static const char *local_kind(const sy_conn_t *c, int status)
{
    if (status == 502 || status == 504) {
        switch (c->xerr) {
        case SY_XERR_CONNECT: return "upstream_connect";
        case SY_XERR_RESET: return "upstream_reset";
        case SY_XERR_TIMEOUT: return "upstream_timeout";
        default: break;
        }
    }
    if (c->dec.endpoint == NULL && c->dec.status == status) {
        if (status == 404)
            return "no_route";
        if (status == 503)
            return "no_healthy_endpoint";
    }
    return sy_headers_error_kind(status);
}

/* Answers locally (404, 413, 502, ...; 200 only for OPTIONS *). If part of the
 * response already went out, the only honest thing left is to cut the connection. */
static void respond_local(sy_conn_t *c, int status, const char *reason)
{
    if (c->resp_head_sent) {
        conn_close(c, reason);
        return;
    }
    detach_upstream(c, false);
    hold_free(c);
    c->local = true;
    c->status = status;
    /* A body still to come is not read: the connection cannot be reused. A request
     * without a body (its head just parsed) leaves the connection clean. */
    bool body_pending = !c->req_done && !(c->req_head_done && c->req_framing == SY_FRAME_NONE);
    if (body_pending || c->want_tunnel) {
        c->close_after = true;
        c->req_paused = true;
    }
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431)
        c->close_after = true;
    bool close = c->close_after || c->w->draining;
    const char *date = sy_headers_date((time_t)now_of(c));
    if (take(c, &c->out) != 0 ||
        (status == 200 ? sy_headers_options_response(&c->out, date, close)
                       : sy_headers_local_response(&c->out, status, local_kind(c, status), reason, date, close,
                                                   c->head_req)) != 0) {
        conn_close(c, "out of memory");
        return;
    }
    c->said_close = c->close_after || c->w->draining;
    c->resp_head_sent = true;
    c->resp_done = true;
    if (status >= 400 && c->w->stats.local_responses++ < 3)
        sy_debug("local %d to %s: %s", status, c->peer_ip, reason);
}

static bool can_retry(const sy_conn_t *c)
{
    /* A request can be sent again only if it could not have been acted on:
     * nothing came back, it had no body, and the connection was a reused one
     * (the classic race with a backend closing an idle connection). */
    return c->up != NULL && c->up->reused && c->retries < 2 && c->req_done &&
           c->req_framing == SY_FRAME_NONE && sy_h1_idle(&c->resp) && !c->resp_head_sent;
}

static int serialize_request(sy_conn_t *c)
{
    sy_fwd_request_t f = {
        .client_ip = c->peer_ip,
        .proto = "http",
        .request_id = c->request_id,
        .strip_header = c->dec.strip_header,
        .websocket = c->want_tunnel,
    };
    if (take(c, &c->up_out) != 0)
        return SY_ENOMEM;
    return sy_headers_request(&c->up_out, &c->req.msg, &f);
}

static void build_view(sy_conn_t *c, sy_request_view_t *v, int body_state);

/* A connect failure sent nothing: the request can go to another endpoint of the
 * same route and variant, if the router has one (round robin moves on). */
static bool retry_elsewhere(sy_conn_t *c)
{
    if (c->up_wrote || c->retries >= 2 || c->dec.route_index < 0 || c->want_tunnel || c->holding ||
        c->hold != NULL || c->resp_head_sent)
        return false;
    const sy_endpoint_t *failed = c->dec.endpoint;
    sy_request_view_t view;
    build_view(c, &view, SY_BODY_NONE);
    for (int k = 0; k < 4; k++) {
        sy_decision_t d;
        memset(&d, 0, sizeof(d));
        d.route_index = -1;
        c->w->router->decide(c->w->router->ctx, c->snap, &view, c->w->rr++, &d);
        if (d.want_body > 0 || d.endpoint == NULL || d.route_index != c->dec.route_index ||
            d.variant_index != c->dec.variant_index)
            return false;
        if (d.endpoint == failed)
            continue;
        if (c->dec.fallback != NULL) { /* still the fallback, on another endpoint */
            d.reason = c->dec.reason;
            d.fallback = c->dec.fallback;
        }
        detach_upstream_keep(c, false, true);
        c->dec = d;
        c->retries++;
        start_upstream(c);
        return true;
    }
    return false;
}

/* Nothing was sent and the pool has no other endpoint to try: the router may
 * name a fallback (new's request served by legacy). The failed attempt is an
 * exchange of its own for the observer (an error of its variant, counted
 * before anything reaches the client); the access log shows the one served. */
static bool fall_back(sy_conn_t *c, sy_xerr_t kind, const char *why)
{
    sy_worker_t *w = c->w;
    if (w->router->fallback == NULL || c->dec.fallback != NULL || c->up_wrote || c->dec.route_index < 0 ||
        c->want_tunnel || c->holding || c->resp_head_sent || c->local)
        return false;
    sy_decision_t d;
    if (w->router->fallback(w->router->ctx, c->snap, &c->dec, why, w->rr++, &d) != 0 || d.endpoint == NULL)
        return false;
    sy_outcome_t o = {
        .decision = &c->dec,
        .error = kind,
        .total_us = (uint64_t)((now_of(c) - c->t_start) * 1e6),
        .fell_back = true,
    };
    if (w->observer != NULL && w->observer->record != NULL)
        w->observer->record(w->observer->ctx, w->id, c->snap, &o);
    detach_upstream_keep(c, false, true);
    c->dec = d;
    c->xerr = SY_XERR_NONE;
    start_upstream(c);
    return true;
}

static void upstream_failed(sy_conn_t *c, sy_xerr_t kind, const char *reason)
{
    c->w->stats.upstream_errors++;
    if (kind == SY_XERR_CONNECT && c->dec.endpoint != NULL)
        atomic_fetch_add_explicit(&((sy_endpoint_t *)c->dec.endpoint)->connect_failures, 1, memory_order_relaxed);
    if (kind == SY_XERR_CONNECT && retry_elsewhere(c))
        return;
    if (kind == SY_XERR_CONNECT && fall_back(c, kind, "connect"))
        return;
    if (kind != SY_XERR_TIMEOUT && can_retry(c)) {
        c->retries++;
        detach_upstream(c, false);
        if (serialize_request(c) != 0) {
            respond_local(c, 502, "out of memory");
            return;
        }
        start_upstream(c);
        return;
    }
    c->xerr = kind;
    if (c->resp_head_sent) {
        /* Mid-body: the client sees a truncated response, as it should. */
        detach_upstream(c, false);
        conn_close(c, reason);
        return;
    }
    exchange_early(c, kind == SY_XERR_TIMEOUT ? 504 : 502, kind);
    respond_local(c, kind == SY_XERR_TIMEOUT ? 504 : 502, reason);
}

/* --- request parser callbacks --------------------------------------------- */

static void copy_str(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void build_view(sy_conn_t *c, sy_request_view_t *v, int body_state)
{
    const sy_h1_msg_t *m = &c->req.msg;
    /* Routed by path and authority: in absolute-form both come from the target. */
    const char *q = memchr(m->origin, '?', m->origin_len);
    memset(v, 0, sizeof(*v));
    v->method = m->method;
    v->method_len = strlen(m->method);
    v->path = m->origin;
    v->path_len = q ? (size_t)(q - m->origin) : m->origin_len;
    if (v->path_len == 0) /* http://host or http://host?q: the path is "/" */
        v->path = "/", v->path_len = 1;
    v->query = q ? q + 1 : NULL;
    v->query_len = q ? m->origin_len - (size_t)(q - m->origin) - 1 : 0;
    v->host = m->host;
    v->host_len = m->host_len;
    v->headers = m->headers;
    v->nheaders = m->nheaders;
    v->client = (const struct sockaddr *)&c->peer;
    v->has_body = m->chunked || (m->has_length && m->content_length > 0);
    v->body_state = body_state;
    if (body_state == SY_BODY_COMPLETE) {
        v->body = c->hold;
        v->body_len = c->hold_len;
    }
}

/* The router chose (or refused): answer locally, or start the upstream side. */
static void route_chosen(sy_conn_t *c)
{
    if (c->dec.endpoint == NULL) {
        respond_local(c, c->dec.status ? c->dec.status : 503, c->dec.error ? c->dec.error : "no endpoint");
        if (c->want_tunnel)
            c->close_after = true;
        return;
    }
    if (serialize_request(c) != 0) {
        respond_local(c, 431, "request head too large to forward");
        return;
    }
    start_upstream(c);
}

/* Ask again, now with the body (or knowing it is too big to look at). */
static void decide_with_body(sy_conn_t *c, int body_state)
{
    c->holding = false;
    sy_request_view_t view;
    build_view(c, &view, body_state);
    c->dec.want_body = 0;
    c->dec.route_index = -1;
    c->w->router->decide(c->w->router->ctx, c->snap, &view, c->w->rr++, &c->dec);
    c->dec.want_body = 0;
    route_chosen(c);
}

static int req_on_head(void *ud, sy_h1_msg_t *m)
{
    sy_conn_t *c = ud;
    sy_worker_t *w = c->w;
    c->req_head_done = true;
    copy_str(c->method, sizeof(c->method), m->method, strlen(m->method));
    copy_str(c->target, sizeof(c->target), m->target, m->target_len);
    if (m->host != NULL)
        copy_str(c->host, sizeof(c->host), m->host, m->host_len);
    c->head_req = strcmp(m->method, "HEAD") == 0;
    c->client_http11 = m->minor >= 1;
    if (!m->keep_alive)
        c->close_after = true;
    c->req_framing = sy_headers_request_framing(m);
    const sy_header_t *rid = sy_h1_find(m, "x-request-id");
    if (rid != NULL && rid->value_len > 0 && rid->value_len < sizeof(c->request_id)) {
        copy_str(c->request_id, sizeof(c->request_id), rid->value, rid->value_len);
        for (char *p = c->request_id; *p; p++)
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '"' || *p == '\\')
                *p = '_';
    } else {
        sy_worker_request_id(w, c->request_id);
    }

    if (m->has_length && m->content_length > c->cfg->limits.body_bytes)
        return sy_h1_fail(&c->req, 413, "request body larger than limits.body_bytes");

    /* Asked of the gateway itself, never of a route (RFC 9110 9.3.6, 9.3.7). */
    if (m->form == SY_H1_FORM_AUTHORITY) {
        c->close_after = true; /* tunnel bytes may follow the head */
        respond_local(c, 501, "CONNECT is not supported: no route allows tunnelling");
        return 0;
    }
    if (m->form == SY_H1_FORM_ASTERISK) {
        respond_local(c, 200, NULL);
        return 0;
    }

    if (m->upgrade) {
        const sy_header_t *up = sy_h1_find(m, "upgrade");
        c->want_tunnel = up != NULL && strcmp(m->method, "GET") == 0 &&
                         sy_h1_has_token(up->value, up->value_len, "websocket");
    }

    c->dec.route_index = -1;
    sy_request_view_t view;
    build_view(c, &view, SY_BODY_NONE);
    w->router->decide(w->router->ctx, c->snap, &view, w->rr++, &c->dec);
    if (c->dec.want_body > 0 && view.has_body && c->dec.endpoint == NULL) {
        /* The user key is in the body: hold it (bounded) before choosing. */
        c->holding = true;
        c->hold_want = c->dec.want_body;
        c->hold_cap = c->dec.want_body + c->w->bufs.block_size; /* one parse step past the limit */
        c->hold = malloc(c->hold_cap);
        if (c->hold == NULL)
            return sy_h1_fail(&c->req, 500, "out of memory");
        if (m->expect_continue && c->client_http11 && take(c, &c->out) == 0 &&
            sy_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0)
            c->sent_continue = true;
        return 0;
    }
    route_chosen(c);
    return c->want_tunnel ? SY_H1_HEAD_TUNNEL : 0;
}

static int req_on_body(void *ud, const char *data, size_t len)
{
    sy_conn_t *c = ud;
    c->req_body += len;
    if (c->req_body > c->cfg->limits.body_bytes)
        return sy_h1_fail(&c->req, 413, "request body larger than limits.body_bytes");
    if (c->local)
        return 0; /* answered already; the connection closes after it */
    if (c->holding) {
        /* hold_cap leaves one parse step of room past hold_want. */
        if (c->hold_len + len > c->hold_cap)
            return sy_h1_fail(&c->req, 500, "internal buffer overflow");
        memcpy(c->hold + c->hold_len, data, len);
        c->hold_len += len;
        if (c->hold_len > c->hold_want)
            decide_with_body(c, SY_BODY_TOO_BIG);
        return 0;
    }
    if (c->hold != NULL) {
        /* Held bytes go first: this piece waits its turn with them. */
        if (c->hold_len + len > c->hold_cap)
            return sy_h1_fail(&c->req, 500, "internal buffer overflow");
        memcpy(c->hold + c->hold_len, data, len);
        c->hold_len += len;
        return 0;
    }
    if (put_body(&c->up_out, c->req_framing, data, len) != 0)
        return sy_h1_fail(&c->req, 500, "internal buffer overflow");
    return 0;
}

static int req_on_done(void *ud)
{
    sy_conn_t *c = ud;
    if (c->holding)
        decide_with_body(c, SY_BODY_COMPLETE);
    if (c->hold != NULL && !c->local)
        c->hold_end_pending = true; /* the terminator follows the held bytes */
    else if (!c->local && c->req_framing == SY_FRAME_CHUNKED && sy_buf_append(&c->up_out, "0\r\n\r\n", 5) != 0)
        return sy_h1_fail(&c->req, 500, "internal buffer overflow");
    c->req_done = true;
    c->req_paused = true;
    return 0;
}

static const sy_h1_callbacks_t req_callbacks = {req_on_head, req_on_body, req_on_done};

/* --- response parser callbacks ------------------------------------------- */

static int resp_on_head(void *ud, sy_h1_msg_t *m)
{
    sy_conn_t *c = ud;
    if (m->status >= 100 && m->status < 200 && m->status != 101) {
        /* Interim: relay 100 Continue to a client that can take it. */
        if (c->client_http11 && !c->resp_head_sent && !c->sent_continue &&
            sy_buf_appendf(&c->out, "HTTP/1.1 %d %.*s\r\n\r\n", m->status, (int)m->reason_len, m->reason) != 0)
            return sy_h1_fail(&c->resp, 502, "no room for an interim response");
        return 0;
    }
    if (m->status == 101 && !c->want_tunnel)
        return sy_h1_fail(&c->resp, 502, "upstream switched protocols unasked");
    c->resp_final_head = true;
    c->t_ttfb = now_of(c);
    c->status = m->status;
    if (m->status >= 500)
        c->xerr = SY_XERR_STATUS;
    exchange_early(c, c->status, c->xerr); /* before the head goes into c->out */
    bool tunnel = m->status == 101;
    if (!c->req_done && !tunnel)
        c->close_after = true;
    if (c->want_tunnel && !tunnel)
        c->close_after = true; /* the request parser stopped at the upgrade */
    c->resp_framing = tunnel ? SY_FRAME_NONE : sy_headers_response_framing(m, c->head_req, c->client_http11);
    sy_fwd_response_t f = {
        .variant = c->dec.expose_variant ? c->dec.variant : NULL,
        .close = c->close_after || c->w->draining,
        .framing = c->resp_framing,
        .tunnel = tunnel,
        .date = sy_headers_date((time_t)now_of(c)),
    };
    if (sy_headers_response(&c->out, m, &f) != 0)
        return sy_h1_fail(&c->resp, 502, "response head too large");
    c->resp_head_sent = true;
    c->said_close = f.close;
    c->upstream_reusable = m->keep_alive && !m->body_until_eof && !tunnel;
    if (tunnel)
        return SY_H1_HEAD_TUNNEL;
    return c->head_req ? SY_H1_HEAD_NO_BODY : 0;
}

static int resp_on_body(void *ud, const char *data, size_t len)
{
    sy_conn_t *c = ud;
    c->resp_body += len;
    if (put_body(&c->out, c->resp_framing, data, len) != 0)
        return sy_h1_fail(&c->resp, 502, "internal buffer overflow");
    return 0;
}

static int resp_on_done(void *ud)
{
    sy_conn_t *c = ud;
    if (!c->resp_final_head)
        return SY_H1_DONE_CONTINUE; /* after a 1xx: the real response follows */
    if (c->resp_framing == SY_FRAME_CHUNKED && sy_buf_append(&c->out, "0\r\n\r\n", 5) != 0)
        return sy_h1_fail(&c->resp, 502, "internal buffer overflow");
    if (c->resp_framing == SY_FRAME_CLOSE)
        c->close_after = true;
    c->resp_done = true;
    return 0;
}

static const sy_h1_callbacks_t resp_callbacks = {resp_on_head, resp_on_body, resp_on_done};

/* --- upstream side ------------------------------------------------------- */

static void upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents);

static void start_upstream(sy_conn_t *c)
{
    sy_upconn_t *up = NULL;
    int rc = sy_upstream_acquire(c->w->ups, c->dec.endpoint, &up);
    if (rc != 0) {
        /* Refused at once: nothing was sent, as with a refusal seen later. */
        upstream_failed(c, SY_XERR_CONNECT,
                        rc == -ECONNREFUSED ? "upstream refused the connection" : "upstream connect failed");
        return;
    }
    c->up = up;
    atomic_fetch_add_explicit(&((sy_endpoint_t *)c->dec.endpoint)->inflight, 1, memory_order_relaxed);
    /* A pooled connection's read watcher stays active across the hand-off. */
    c->up_events = ev_is_active(&up->io) ? (up->io.events & (EV_READ | EV_WRITE)) : 0;
    c->up_wrote = false;
    c->up_eof = false;
    c->t_req_sent = 0;
    c->up_blocked = !up->connected; /* connecting: wait for writability */
    c->t_connect = now_of(c);
    c->t_up_act = c->t_connect;
    ev_set_cb(&up->io, upstream_io_cb);
    up->io.data = c;
    if (take(c, &c->resp_arena) != 0) {
        respond_local(c, 502, "out of memory");
        return;
    }
    sy_h1_init(&c->resp, false, &resp_callbacks, c, c->cfg->limits.header_bytes, c->cfg->limits.uri_bytes,
               c->cfg->limits.headers);
    sy_h1_set_arena(&c->resp, c->resp_arena.base, c->resp_arena.cap);
}

static void upstream_read(sy_conn_t *c)
{
    /* In a tunnel the bytes go straight to the client's buffer. */
    sy_buf_t *b = c->state == CS_TUNNEL ? &c->out : &c->up_in;
    if (take(c, b) != 0)
        return;
    if (sy_buf_room(b) == 0)
        sy_buf_compact(b);
    size_t room = sy_buf_room(b);
    if (room == 0)
        return;
    ssize_t n = read(c->up->fd, sy_buf_tail(b), room);
    if (n > 0) {
        b->len += (uint32_t)n;
        c->t_up_act = now_of(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        c->up_eof = true; /* parse_response decides what an early end means */
    }
}

static void upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_conn_t *c = io->data;
    (void)loop;
    if (c->up == NULL || c->state == CS_CLOSED)
        return;
    if (!c->up->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->up->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            upstream_failed(c, SY_XERR_CONNECT,
                            err == ECONNREFUSED ? "upstream refused the connection" : "upstream connect failed");
            conn_pump(c);
            return;
        }
        c->up->connected = true;
        c->up_blocked = false;
        sy_endpoint_t *ep = (sy_endpoint_t *)c->dec.endpoint;
        if (atomic_load_explicit(&ep->connect_failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&ep->connect_failures, 0, memory_order_relaxed);
    } else if (revents & EV_WRITE) {
        c->up_blocked = false;
    }
    if (revents & EV_READ)
        upstream_read(c);
    conn_pump(c);
}

/* --- client side -------------------------------------------------------- */

static void client_read(sy_conn_t *c)
{
    sy_buf_t *b = c->state == CS_TUNNEL ? &c->up_out : &c->in;
    if (take(c, b) != 0) {
        conn_close(c, "out of memory");
        return;
    }
    if (sy_buf_room(b) == 0)
        sy_buf_compact(b);
    size_t room = sy_buf_room(b);
    if (room == 0)
        return;
    ssize_t n = read(c->fd, sy_buf_tail(b), room);
    if (n > 0) {
        b->len += (uint32_t)n;
        c->t_client_act = now_of(c);
        if (c->state == CS_TUNNEL)
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
    if (c->state == CS_CLOSED)
        return;
    if (revents & EV_WRITE)
        c->out_blocked = false;
    if (revents & EV_READ)
        client_read(c);
    conn_pump(c);
}

/* --- moving bytes ---------------------------------------------------------- */

/* Writes b to fd. Returns bytes written, 0 when blocked, -1 on a fatal error. */
static ssize_t flush(int fd, sy_buf_t *b, bool *blocked)
{
    ssize_t total = 0;
    while (b->len > 0) {
        ssize_t n = send(fd, sy_buf_data(b), b->len, MSG_NOSIGNAL);
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

/* Moves held body bytes (kept for the router) into the upstream buffer. */
static bool drain_hold(sy_conn_t *c)
{
    if (c->hold == NULL || c->holding || c->local || take(c, &c->up_out) != 0)
        return false;
    size_t before = c->hold_off;
    while (c->hold_off < c->hold_len) {
        size_t room = room_for(&c->up_out, false);
        if (room == 0)
            break;
        size_t n = c->hold_len - c->hold_off;
        if (n > room)
            n = room;
        if (put_body(&c->up_out, c->req_framing, c->hold + c->hold_off, n) != 0)
            break;
        c->hold_off += n;
    }
    if (c->hold_off == c->hold_len) {
        bool end = c->hold_end_pending;
        hold_free(c);
        if (end && c->req_framing == SY_FRAME_CHUNKED && sy_buf_append(&c->up_out, "0\r\n\r\n", 5) != 0)
            conn_close(c, "internal buffer overflow");
    }
    return c->hold_off != before || c->hold == NULL;
}

static bool parse_request(sy_conn_t *c)
{
    if (c->state == CS_IDLE) {
        if (c->in.len == 0)
            return false;
        exchange_begin(c);
        if (take(c, &c->req_arena) != 0) {
            conn_close(c, "out of memory");
            return false;
        }
        const sy_limits_t *l = &c->cfg->limits;
        sy_h1_init(&c->req, true, &req_callbacks, c, l->header_bytes, l->uri_bytes, l->headers);
        sy_h1_set_arena(&c->req, c->req_arena.base, c->req_arena.cap);
    }
    if (c->state != CS_ACTIVE || c->req_paused || c->in.len == 0)
        return false;
    if (c->hold != NULL && !c->holding)
        return false; /* held bytes are still on their way to the upstream */
    size_t limit = c->in.len;
    if (!c->local) {
        if (take(c, &c->up_out) != 0)
            return false;
        size_t room = room_for(&c->up_out, !c->req_head_done);
        if (room == 0)
            return false; /* back-pressure: the upstream side must drain first */
        if (limit > room)
            limit = room;
    }
    size_t used = 0;
    int rc = sy_h1_execute(&c->req, sy_buf_data(&c->in), limit, &used);
    if (c->state == CS_CLOSED)
        return false;
    sy_buf_consume(&c->in, used);
    c->bytes_in += used;
    if (rc == SY_H1_ERROR) {
        c->w->stats.parse_errors++;
        c->close_after = true;
        respond_local(c, c->req.err_status, c->req.err_reason);
        return true;
    }
    return used > 0;
}

static void enter_tunnel(sy_conn_t *c)
{
    c->state = CS_TUNNEL;
    c->t_client_act = c->t_up_act = now_of(c);
    /* Bytes that came after the heads belong to the tunnel already. */
    if (c->in.len > 0) {
        if (take(c, &c->up_out) != 0 || sy_buf_append(&c->up_out, sy_buf_data(&c->in), c->in.len) != 0) {
            conn_close(c, "tunnel: no room for early bytes");
            return;
        }
        sy_buf_consume(&c->in, c->in.len);
    }
    if (c->up_in.len > 0) {
        if (sy_buf_append(&c->out, sy_buf_data(&c->up_in), c->up_in.len) != 0) {
            conn_close(c, "tunnel: no room for early bytes");
            return;
        }
        sy_buf_consume(&c->up_in, c->up_in.len);
    }
    give(c, &c->in);
    give(c, &c->up_in);
}

static bool parse_response(sy_conn_t *c)
{
    if (c->up == NULL || c->resp_done || c->state != CS_ACTIVE)
        return false;
    if (c->up_in.len == 0) {
        if (!c->up_eof)
            return false;
        int rc = sy_h1_finish(&c->resp);
        if (rc == SY_H1_PAUSED) {
            c->upstream_reusable = false;
            return true;
        }
        upstream_failed(c, SY_XERR_RESET,
                        c->resp_head_sent ? "upstream closed mid-response" : "upstream closed without a response");
        return true;
    }
    if (take(c, &c->out) != 0)
        return false;
    size_t limit = c->up_in.len;
    /* A head is written whole: before it, wait until the client buffer can take
     * any head (it may still hold an interim response or an earlier one). */
    if (!c->resp_final_head && (size_t)c->out.cap - c->out.len < c->cfg->limits.header_bytes + HEAD_GROWTH + 64)
        return false;
    size_t room = room_for(&c->out, !c->resp_final_head);
    if (room == 0)
        return false;
    if (limit > room)
        limit = room;
    size_t used = 0;
    int rc = sy_h1_execute(&c->resp, sy_buf_data(&c->up_in), limit, &used);
    if (c->state == CS_CLOSED)
        return false;
    sy_buf_consume(&c->up_in, used);
    if (rc == SY_H1_ERROR) {
        c->upstream_reusable = false;
        upstream_failed(c, SY_XERR_RESET, c->resp.err_reason ? c->resp.err_reason : "invalid upstream response");
        return true;
    }
    if (rc == SY_H1_UPGRADE)
        enter_tunnel(c);
    return used > 0;
}

static void update_watchers(sy_conn_t *c)
{
    if (c->state == CS_CLOSED)
        return;
    int ev = 0;
    switch (c->state) {
    case CS_IDLE:
        ev = EV_READ;
        break;
    case CS_ACTIVE:
        /* Keep reading for pipelined requests while there is room; EOF shows up too. */
        if (!c->client_eof && (c->in.base == NULL || c->in.len < c->in.cap))
            ev |= EV_READ;
        break;
    case CS_TUNNEL:
        if (!c->client_eof && (c->up_out.base == NULL || c->up_out.len < c->up_out.cap))
            ev |= EV_READ;
        break;
    default:
        break;
    }
    if (c->out.len > 0 && c->out_blocked)
        ev |= EV_WRITE;
    set_events(c->w->loop, &c->io, c->fd, &c->io_events, ev);

    if (c->up != NULL) {
        int uev = 0;
        if (!c->up->connected) {
            uev = EV_WRITE;
        } else {
            sy_buf_t *dst = c->state == CS_TUNNEL ? &c->out : &c->up_in;
            if (!c->up_eof && (c->state == CS_TUNNEL || !c->resp_done) && (dst->base == NULL || dst->len < dst->cap))
                uev |= EV_READ;
            if (c->up_out.len > 0 && c->up_blocked)
                uev |= EV_WRITE;
        }
        set_events(c->w->loop, &c->up->io, c->up->fd, &c->up_events, uev);
    }
}

static ev_tstamp next_deadline(const sy_conn_t *c, deadline_kind_t *kind)
{
    const sy_timeouts_t *t = &c->cfg->timeouts;
    ev_tstamp best = 0;
    *kind = DL_NONE;
#define CONSIDER(when, k)                                                                          \
    do {                                                                                           \
        ev_tstamp _w = (when);                                                                     \
        if (best == 0 || _w < best) {                                                              \
            best = _w;                                                                             \
            *kind = (k);                                                                           \
        }                                                                                          \
    } while (0)
    switch (c->state) {
    case CS_IDLE:
        CONSIDER(c->t_idle + t->client_idle / 1e3, DL_CLIENT_IDLE);
        if (c->w->draining)
            CONSIDER((c->t_idle > c->w->drain_t0 ? c->t_idle : c->w->drain_t0) + t->drain_idle / 1e3, DL_CLIENT_IDLE);
        break;
    case CS_ACTIVE:
        if (!c->req_head_done) {
            CONSIDER(c->t_start + t->client_header / 1e3, DL_CLIENT_HEADER);
            break;
        }
        /* Waiting on the client: its body, or its reading of our response. */
        if ((!c->req_done && !c->req_paused && c->in.len == 0) || (c->out.len > 0 && c->out_blocked))
            CONSIDER(c->t_client_act + t->body_idle / 1e3, DL_CLIENT_BODY);
        if (c->up != NULL) {
            if (!c->up->connected)
                CONSIDER(c->t_connect + t->connect / 1e3, DL_CONNECT);
            else if (!c->resp_final_head && c->req_done && c->up_out.len == 0)
                CONSIDER((c->t_req_sent > 0 ? c->t_req_sent : c->t_connect) + t->upstream_header / 1e3,
                         DL_UPSTREAM_HEADER);
            else if (!c->resp_done)
                CONSIDER(c->t_up_act + t->body_idle / 1e3, DL_UPSTREAM_BODY);
        }
        break;
    case CS_TUNNEL:
        CONSIDER((c->t_client_act > c->t_up_act ? c->t_client_act : c->t_up_act) + t->tunnel_idle / 1e3, DL_TUNNEL);
        break;
    case CS_CLOSING:
        CONSIDER(c->t_closing + t->body_idle / 1e3, DL_CLOSING);
        break;
    default:
        break;
    }
    /* Its backend's colour was swapped out: it finishes within timeouts.drain. */
    if ((c->state == CS_ACTIVE || c->state == CS_TUNNEL) && c->up != NULL && c->dec.endpoint != NULL) {
        int64_t retired = atomic_load_explicit(&((sy_endpoint_t *)c->dec.endpoint)->retired_ms, memory_order_relaxed);
        if (retired > 0)
            CONSIDER((double)retired / 1e3 + t->drain / 1e3, DL_RETIRED);
    }
#undef CONSIDER
    return best;
}

static void arm_timer(sy_conn_t *c)
{
    if (c->state == CS_CLOSED)
        return;
    deadline_kind_t kind;
    ev_tstamp dl = next_deadline(c, &kind);
    if (kind == DL_NONE) {
        ev_timer_stop(c->w->loop, &c->timer);
        c->armed = 0;
        return;
    }
    /* Re-arm only when the deadline moved earlier; a later one is found when the
     * timer fires, which keeps timer updates off the per-read path. */
    if (ev_is_active(&c->timer) && c->armed <= dl)
        return;
    ev_timer_stop(c->w->loop, &c->timer);
    double after = dl - now_of(c);
    ev_timer_set(&c->timer, after > 0 ? after : 0, 0.);
    ev_timer_start(c->w->loop, &c->timer);
    c->armed = dl;
}

static void timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    sy_conn_t *c = tm->data;
    (void)loop;
    (void)revents;
    c->armed = 0;
    deadline_kind_t kind;
    ev_tstamp dl = next_deadline(c, &kind);
    if (kind == DL_NONE)
        return;
    if (dl > now_of(c) + 0.001) {
        arm_timer(c);
        return;
    }
    switch (kind) {
    case DL_CLIENT_IDLE:
        conn_close(c, NULL);
        return;
    case DL_CLIENT_HEADER:
        c->xerr = SY_XERR_CLIENT;
        c->close_after = true;
        respond_local(c, 408, "the request head did not arrive in time (timeouts.client_header)");
        break;
    case DL_CLIENT_BODY:
        c->xerr = SY_XERR_CLIENT;
        if (!c->resp_head_sent) {
            c->close_after = true;
            respond_local(c, 408, "the request body stalled (timeouts.body_idle)");
        } else {
            conn_close(c, "client stalled");
            return;
        }
        break;
    case DL_CONNECT:
        upstream_failed(c, SY_XERR_TIMEOUT, "upstream connect timed out (timeouts.connect)");
        break;
    case DL_UPSTREAM_HEADER:
        upstream_failed(c, SY_XERR_TIMEOUT, "upstream response timed out (timeouts.upstream_header)");
        break;
    case DL_UPSTREAM_BODY:
        upstream_failed(c, SY_XERR_TIMEOUT, "upstream body stalled (timeouts.body_idle)");
        break;
    case DL_TUNNEL:
    case DL_CLOSING:
        conn_close(c, NULL);
        return;
    case DL_RETIRED:
        if (c->xerr == SY_XERR_NONE && c->state == CS_ACTIVE)
            c->xerr = SY_XERR_TIMEOUT;
        conn_close(c, "its backend was swapped out and timeouts.drain passed");
        return;
    case DL_NONE:
        break;
    }
    conn_pump(c);
}

static void conn_pump(sy_conn_t *c)
{
    for (int guard = 0; guard < 256 && c->state != CS_CLOSED; guard++) {
        bool progress = false;
        if (c->state == CS_ACTIVE && c->hold != NULL)
            progress |= drain_hold(c);
        if (c->state == CS_IDLE || c->state == CS_ACTIVE)
            progress |= parse_request(c);
        if (c->state == CS_CLOSED)
            return;

        /* Request bytes to the upstream. */
        if (c->up != NULL && c->up->connected && c->up_out.len > 0 && !c->up_blocked) {
            ssize_t n = flush(c->up->fd, &c->up_out, &c->up_blocked);
            if (n < 0) {
                if (c->state == CS_TUNNEL) {
                    conn_close(c, NULL);
                    return;
                }
                upstream_failed(c, SY_XERR_RESET, "upstream reset while sending the request");
                progress = true;
            } else if (n > 0) {
                c->up_wrote = true;
                c->t_up_act = now_of(c);
                progress = true;
            }
        }
        if (c->state == CS_ACTIVE && c->up != NULL && c->req_done && c->up_out.len == 0 && c->t_req_sent == 0)
            c->t_req_sent = now_of(c);

        progress |= parse_response(c);
        if (c->state == CS_CLOSED)
            return;

        /* Response bytes to the client. */
        if (c->out.len > 0 && !c->out_blocked) {
            ssize_t n = flush(c->fd, &c->out, &c->out_blocked);
            if (n < 0) {
                c->xerr = c->xerr ? c->xerr : SY_XERR_CLIENT;
                conn_close(c, "client went away");
                return;
            }
            if (n > 0) {
                c->bytes_out += (uint64_t)n;
                c->t_client_act = now_of(c);
                progress = true;
            }
        }

        /* Settle. */
        if (c->state == CS_ACTIVE) {
            if (c->client_eof && !c->req_done) {
                c->xerr = SY_XERR_CLIENT;
                conn_close(c, "client closed mid-request");
                return;
            }
            if (c->client_eof)
                c->close_after = true;
            if (c->resp_done && (c->req_done || c->close_after)) {
                exchange_end(c);
                progress = true;
            }
        }
        if (c->state == CS_TUNNEL && ((c->client_eof && c->up_out.len == 0) || (c->up_eof && c->out.len == 0))) {
            conn_close(c, NULL);
            return;
        }
        if (c->state == CS_CLOSING && c->out.len == 0) {
            conn_close(c, NULL);
            return;
        }
        if (c->state == CS_IDLE && c->client_eof && c->in.len == 0) {
            conn_close(c, NULL);
            return;
        }
        if (!progress)
            break;
    }
    if (c->out.len == 0)
        sy_buf_release(&c->out, &c->w->bufs);
    if (c->up_out.len == 0 && c->state != CS_TUNNEL)
        sy_buf_release(&c->up_out, &c->w->bufs);
    update_watchers(c);
    arm_timer(c);
}

/* --- open and close ----------------------------------------------------------- */

static void conn_close(sy_conn_t *c, const char *reason)
{
    if (c->state == CS_CLOSED)
        return;
    if (reason != NULL)
        sy_debug("closing connection from %s: %s", c->peer_ip, reason);
    if (c->state == CS_ACTIVE || c->state == CS_TUNNEL) {
        if (c->xerr == SY_XERR_NONE && !c->resp_done && c->state == CS_ACTIVE)
            c->xerr = SY_XERR_CLIENT;
        exchange_record(c);
    }
    detach_upstream(c, false);
    set_events(c->w->loop, &c->io, c->fd, &c->io_events, 0);
    ev_timer_stop(c->w->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    c->state = CS_CLOSED;
    sy_list_push_back(&c->w->dead, &c->node);
}

static void conn_free(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    hold_free(c);
    sy_buf_t *bufs[] = {&c->in, &c->out, &c->up_out, &c->up_in, &c->req_arena, &c->resp_arena};
    for (size_t i = 0; i < SY_ARRAY_LEN(bufs); i++)
        sy_buf_release(bufs[i], &w->bufs);
    sy_snapshot_release(c->snap);
    sy_list_remove(&c->node);
    free(c);
    sy_worker_conn_gone(w);
}

void sy_conn_reap(sy_worker_t *w)
{
    while (!sy_list_empty(&w->dead))
        conn_free(sy_container_of(w->dead.next, sy_conn_t, node));
}

void sy_conn_accept(sy_worker_t *w, int fd, const struct sockaddr *peer, socklen_t len)
{
    sy_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
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
    c->state = CS_IDLE;
    c->t_idle = ev_now(w->loop);
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
        conn_close(c, reason);
    }
}
