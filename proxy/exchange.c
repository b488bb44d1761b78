/* The exchange: a request parsed, routed, relayed to a pooled upstream
 * connection, its response relayed back; retries, fallbacks, and the record of
 * it for the observer and the access log. See conn_impl.h for the phases.
 *
 * The request side moves RQ_HEAD -> (RQ_HOLD ->) RQ_BODY -> RQ_DONE as its
 * parser reports; the response side RS_WAIT -> RS_RELAY -> RS_DONE, or
 * RS_WAIT -> RS_LOCAL when the gateway answers itself. The exchange ends when
 * the response is done and the request is too (or the connection closes after
 * the response). */
#include "proxy/conn_impl.h"

#include "proxy/accesslog.h"
#include "proxy/log.h"
#include "proxy/shadow.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void start_upstream(sy_conn_t *c);

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

/* --- the access log and the observer --------------------------------------- */

void sy_exchange_record(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    if (c->shadow != NULL) { /* the user's exchange ended without legacy's whole answer */
        sy_shadow_drop(c->shadow);
        c->shadow = NULL;
    }
    ev_tstamp now = sy_conn_now(c);
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
void sy_exchange_early(sy_conn_t *c, int status, sy_xerr_t xerr)
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

/* --- exchange lifecycle ---------------------------------------------------- */

void sy_exchange_hold_free(sy_conn_t *c)
{
    free(c->hold);
    c->hold = NULL;
    c->hold_len = c->hold_off = c->hold_cap = c->hold_want = 0;
    c->hold_end_pending = false;
    if (c->rq == RQ_HOLD)
        sy_req_enter(c, RQ_BODY);
}

static void detach_upstream_keep(sy_conn_t *c, bool reusable, bool keep_request);

void sy_exchange_detach_upstream(sy_conn_t *c, bool reusable)
{
    detach_upstream_keep(c, reusable, false);
}

/* keep_request: the bytes bound for the upstream stay (a retry elsewhere). */
static void detach_upstream_keep(sy_conn_t *c, bool reusable, bool keep_request)
{
    if (c->up == NULL)
        return;
    if (c->dec.endpoint != NULL && c->snap != NULL) /* this worker's shard: no shared read-modify-write */
        sy_epstate_inflight_add(c->snap->eps, c->w->id, c->dec.endpoint->index, -1);
    /* A reusable connection keeps reading (the pool watches it for EOF). */
    sy_conn_set_events(c->w->loop, &c->up->io, &c->up_events, reusable ? EV_READ : 0);
    sy_upstream_release(c->w->ups, c->up, reusable);
    c->up = NULL;
    c->up_events = 0;
    sy_conn_ready_forget_upstream(c);
    sy_conn_give(c, &c->up_in);
    if (!keep_request)
        sy_conn_give(c, &c->up_out);
    sy_conn_give(c, &c->resp_arena);
    sy_h1_reset(&c->resp);
}

/* The exchange is over on both sides: log it and get ready for the next one. */
static void exchange_end(sy_conn_t *c)
{
    bool reusable = c->upstream_reusable && c->up_in.len == 0 && c->up_out.len == 0 && sy_req_done(c) && !c->up_eof;
    sy_exchange_detach_upstream(c, reusable);
    sy_exchange_hold_free(c);
    sy_exchange_record(c);
    sy_snapshot_release(c->snap);
    c->snap = NULL;
    c->cfg = c->w->snap->config;
    sy_conn_give(c, &c->req_arena);
    sy_h1_reset(&c->req);
    /* Draining: a response that went out without Connection: close leaves the
     * connection idle (the client may be sending its next request already); that
     * request is answered with close, or the idle grace ends it. */
    if (c->close_after || c->client_eof || (c->w->draining && c->said_close)) {
        sy_conn_enter(c, PH_LINGER);
        return;
    }
    sy_conn_enter(c, PH_IDLE);
    sy_buf_release_if_empty(&c->in, &c->w->bufs);
}

/* --- retries and fallbacks ------------------------------------------------- */

static bool can_retry(const sy_conn_t *c)
{
    /* A request can be sent again only if it could not have been acted on:
     * nothing came back, it had no body, and the connection was a reused one
     * (the classic race with a backend closing an idle connection). */
    return c->up != NULL && c->up->reused && c->retries < 2 && sy_req_done(c) &&
           c->req_framing == SY_FRAME_NONE && sy_h1_idle(&c->resp) && !sy_resp_head_sent(c);
}

static int serialize_request(sy_conn_t *c)
{
    sy_fwd_request_t f = {
        .client_ip = c->peer_ip,
        .proto = sy_conn_is_tls(c) ? "https" : "http",
        .request_id = c->request_id,
        .strip_header = c->dec.strip_header,
        .websocket = c->want_tunnel,
    };
    if (sy_conn_take(c, &c->up_out) != 0)
        return SY_ENOMEM;
    return sy_headers_request(&c->up_out, &c->req.msg, &f);
}

static void build_view(sy_conn_t *c, sy_request_view_t *v, int body_state);

/* A connect failure sent nothing: the request can go to another endpoint of the
 * same route and variant, if the router has one (round robin moves on). */
static bool retry_elsewhere(sy_conn_t *c)
{
    if (c->up_wrote || c->retries >= 2 || c->dec.route_index < 0 || c->want_tunnel || c->rq == RQ_HOLD ||
        c->hold != NULL || sy_resp_head_sent(c))
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
        c->want_tunnel || c->rq == RQ_HOLD || sy_resp_head_sent(c) || c->rs == RS_LOCAL)
        return false;
    sy_decision_t d;
    if (w->router->fallback(w->router->ctx, c->snap, &c->dec, why, w->rr++, &d) != 0 || d.endpoint == NULL)
        return false;
    sy_outcome_t o = {
        .decision = &c->dec,
        .error = kind,
        .total_us = (uint64_t)((sy_conn_now(c) - c->t_start) * 1e6),
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

void sy_exchange_upstream_failed(sy_conn_t *c, sy_xerr_t kind, const char *reason)
{
    c->w->stats.upstream_errors++;
    if (kind == SY_XERR_CONNECT && c->dec.endpoint != NULL && c->snap != NULL)
        sy_epstate_connect_result(c->snap->eps, c->w->id, c->dec.endpoint->index, 0);
    if (kind == SY_XERR_CONNECT && retry_elsewhere(c))
        return;
    if (kind == SY_XERR_CONNECT && fall_back(c, kind, "connect"))
        return;
    if (kind != SY_XERR_TIMEOUT && can_retry(c)) {
        c->retries++;
        sy_exchange_detach_upstream(c, false);
        /* A kept-alive connection died under the request with nothing back. The
         * others idle to the same endpoint are as old: if the endpoint went away
         * they are dead too, and retrying on them would spend the retries (then
         * 502) where a fresh connect is refused and moves on to another endpoint. */
        if (c->dec.endpoint != NULL)
            sy_upstreams_close_idle_to(c->w->ups, c->dec.endpoint);
        if (serialize_request(c) != 0) {
            sy_local_respond(c, 502, "out of memory");
            return;
        }
        start_upstream(c);
        return;
    }
    c->xerr = kind;
    if (sy_resp_head_sent(c)) {
        /* Mid-body: the client sees a truncated response, as it should. */
        sy_exchange_detach_upstream(c, false);
        sy_conn_close(c, reason);
        return;
    }
    sy_exchange_early(c, kind == SY_XERR_TIMEOUT ? 504 : 502, kind);
    sy_local_respond(c, kind == SY_XERR_TIMEOUT ? 504 : 502, reason);
}

/* --- the request: routing and parser callbacks ----------------------------- */

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

/* A request legacy serves may be copied to new (proxy/shadow.h); the copy
 * never holds this exchange up. */
static void shadow_begin(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    if (c->dec.variant_index != 0 || c->dec.fallback != NULL || c->want_tunnel ||
        sy_shadow_conf_of(c->cfg, c->dec.route_index) == NULL)
        return;
    if (w->shadow == NULL)
        w->shadow = sy_shadow_engine_create(w->loop, w->id, w->ups, w->router, w->observer);
    c->shadow = sy_shadow_begin(w->shadow, c->snap, &c->dec, &c->req.msg, c->hold, c->hold_len);
}

/* The router chose (or refused): answer locally, or start the upstream side. */
static void route_chosen(sy_conn_t *c)
{
    if (c->dec.endpoint == NULL) {
        sy_local_respond(c, c->dec.status ? c->dec.status : 503, c->dec.error ? c->dec.error : "no endpoint");
        if (c->want_tunnel)
            c->close_after = true;
        return;
    }
    if (serialize_request(c) != 0) {
        sy_local_respond(c, 431, "request head too large to forward");
        return;
    }
    shadow_begin(c);
    start_upstream(c);
}

/* Ask again, now with the body (or knowing it is too big to look at). */
static void decide_with_body(sy_conn_t *c, int body_state)
{
    sy_req_enter(c, RQ_BODY);
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
    sy_req_enter(c, RQ_BODY);
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
        sy_local_respond(c, 501, "CONNECT is not supported: no route allows tunnelling");
        return 0;
    }
    if (m->form == SY_H1_FORM_ASTERISK) {
        sy_local_respond(c, 200, NULL);
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
        sy_req_enter(c, RQ_HOLD);
        c->hold_want = c->dec.want_body;
        c->hold_cap = c->dec.want_body + c->w->bufs.block_size; /* one parse step past the limit */
        c->hold = malloc(c->hold_cap);
        if (c->hold == NULL)
            return sy_h1_fail(&c->req, 500, "out of memory");
        if (m->expect_continue && c->client_http11 && sy_conn_take(c, &c->out) == 0 &&
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
    if (c->rs == RS_LOCAL)
        return 0; /* answered already; the connection closes after it */
    if (c->rq == RQ_HOLD) {
        /* hold_cap leaves one parse step of room past hold_want. */
        if (c->hold_len + len > c->hold_cap)
            return sy_h1_fail(&c->req, 500, "internal buffer overflow");
        memcpy(c->hold + c->hold_len, data, len);
        c->hold_len += len;
        if (c->hold_len > c->hold_want)
            decide_with_body(c, SY_BODY_TOO_BIG);
        return 0;
    }
    if (c->shadow != NULL && !sy_shadow_req_body(c->shadow, data, len))
        c->shadow = NULL; /* too large to shadow: dropped and counted */
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
    if (c->rq == RQ_HOLD)
        decide_with_body(c, SY_BODY_COMPLETE);
    if (c->hold != NULL && c->rs != RS_LOCAL)
        c->hold_end_pending = true; /* the terminator follows the held bytes */
    else if (c->rs != RS_LOCAL && c->req_framing == SY_FRAME_CHUNKED && sy_buf_append(&c->up_out, "0\r\n\r\n", 5) != 0)
        return sy_h1_fail(&c->req, 500, "internal buffer overflow");
    sy_req_enter(c, RQ_DONE);
    c->req_paused = true;
    if (c->shadow != NULL && (c->rs == RS_LOCAL || !sy_shadow_req_done(c->shadow))) {
        if (c->rs == RS_LOCAL)
            sy_shadow_drop(c->shadow);
        c->shadow = NULL;
    }
    return 0;
}

static const sy_h1_callbacks_t req_callbacks = {req_on_head, req_on_body, req_on_done};

void sy_exchange_begin(sy_conn_t *c)
{
    sy_worker_t *w = c->w;
    sy_conn_enter(c, PH_EXCHANGE);
    c->snap = sy_snapshot_ref(sy_snapshot_refresh(w->slot, (size_t)w->id, &w->snap));
    c->cfg = c->snap->config;
    memset(&c->dec, 0, sizeof(c->dec));
    c->dec.route_index = -1;
    sy_req_enter(c, RQ_HEAD);
    sy_resp_enter(c, RS_WAIT);
    c->req_paused = c->want_tunnel = c->head_req = c->upstream_reusable = false;
    c->up_wrote = c->up_eof = c->up_blocked = false;
    c->sent_continue = false;
    sy_exchange_hold_free(c);
    c->retries = 0;
    c->early_told = false;
    c->req_body = c->resp_body = c->bytes_in = c->bytes_out = 0;
    c->status = 0;
    c->xerr = SY_XERR_NONE;
    c->t_ttfb = c->t_connect = c->t_req_sent = c->t_up_act = 0;
    c->method[0] = c->target[0] = c->host[0] = c->request_id[0] = '\0';
    if (sy_conn_take(c, &c->req_arena) != 0) {
        sy_conn_close(c, "out of memory");
        return;
    }
    const sy_limits_t *l = &c->cfg->limits;
    sy_h1_init(&c->req, true, &req_callbacks, c, l->header_bytes, l->uri_bytes, l->headers);
    sy_h1_set_arena(&c->req, c->req_arena.base, c->req_arena.cap);
}

/* --- the response: parser callbacks ---------------------------------------- */

static int resp_on_head(void *ud, sy_h1_msg_t *m)
{
    sy_conn_t *c = ud;
    if (m->status >= 100 && m->status < 200 && m->status != 101) {
        /* Interim: relay 100 Continue to a client that can take it. */
        if (c->client_http11 && !sy_resp_head_sent(c) && !c->sent_continue &&
            sy_buf_appendf(&c->out, "HTTP/1.1 %d %.*s\r\n\r\n", m->status, (int)m->reason_len, m->reason) != 0)
            return sy_h1_fail(&c->resp, 502, "no room for an interim response");
        return 0;
    }
    if (m->status == 101 && !c->want_tunnel)
        return sy_h1_fail(&c->resp, 502, "upstream switched protocols unasked");
    c->t_ttfb = sy_conn_now(c);
    c->status = m->status;
    if (c->shadow != NULL)
        sy_shadow_resp_head(c->shadow, m);
    if (m->status >= 500)
        c->xerr = SY_XERR_STATUS;
    sy_exchange_early(c, c->status, c->xerr); /* before the head goes into c->out */
    bool tunnel = m->status == 101;
    if (!sy_req_done(c) && !tunnel)
        c->close_after = true;
    if (c->want_tunnel && !tunnel)
        c->close_after = true; /* the request parser stopped at the upgrade */
    c->resp_framing = tunnel ? SY_FRAME_NONE : sy_headers_response_framing(m, c->head_req, c->client_http11);
    sy_fwd_response_t f = {
        .variant = c->dec.expose_variant ? c->dec.variant : NULL,
        .close = c->close_after || c->w->draining,
        .framing = c->resp_framing,
        .tunnel = tunnel,
        .date = sy_headers_date((time_t)sy_conn_now(c)),
    };
    int direct = c->h2s != NULL ? sy_h2_child_head(c, m, &f) : 0; /* an HTTP/2 stream's: HEADERS at once */
    if (direct < 0)
        return sy_h1_fail(&c->resp, 502, "response refused by the HTTP/2 session");
    if (direct == 0 && sy_headers_response(&c->out, m, &f) != 0)
        return sy_h1_fail(&c->resp, 502, "response head too large");
    sy_resp_enter(c, RS_RELAY);
    c->said_close = f.close;
    c->upstream_reusable = m->keep_alive && !m->body_until_eof && !tunnel;
    if (tunnel)
        return SY_H1_HEAD_TUNNEL;
    /* RFC 9110 6.4.1: none after HEAD, 204 or 304, whatever Content-Length says (llhttp would wait for it). */
    return c->head_req || m->status == 204 || m->status == 304 ? SY_H1_HEAD_NO_BODY : 0;
}

static int resp_on_body(void *ud, const char *data, size_t len)
{
    sy_conn_t *c = ud;
    c->resp_body += len;
    if (put_body(&c->out, c->resp_framing, data, len) != 0)
        return sy_h1_fail(&c->resp, 502, "internal buffer overflow");
    if (c->shadow != NULL)
        sy_shadow_resp_body(c->shadow, data, len);
    return 0;
}

static int resp_on_done(void *ud)
{
    sy_conn_t *c = ud;
    if (!sy_resp_final_head(c))
        return SY_H1_DONE_CONTINUE; /* after a 1xx: the real response follows */
    if (c->resp_framing == SY_FRAME_CHUNKED && sy_buf_append(&c->out, "0\r\n\r\n", 5) != 0)
        return sy_h1_fail(&c->resp, 502, "internal buffer overflow");
    if (c->resp_framing == SY_FRAME_CLOSE)
        c->close_after = true;
    sy_resp_enter(c, RS_DONE);
    if (c->shadow != NULL) {
        sy_shadow_legacy_done(c->shadow); /* handed to the engine: compared once new answered */
        c->shadow = NULL;
    }
    return 0;
}

static const sy_h1_callbacks_t resp_callbacks = {resp_on_head, resp_on_body, resp_on_done};

/* --- the upstream side ----------------------------------------------------- */

static void start_upstream(sy_conn_t *c)
{
    sy_upconn_t *up = NULL;
    int rc = sy_upstream_acquire(c->w->ups, c->dec.endpoint, &up);
    if (rc != 0) {
        /* Refused at once: nothing was sent, as with a refusal seen later. */
        sy_exchange_upstream_failed(c, SY_XERR_CONNECT,
                                    rc == -ECONNREFUSED ? "upstream refused the connection" : "upstream connect failed");
        return;
    }
    c->up = up;
    sy_epstate_inflight_add(c->snap->eps, c->w->id, c->dec.endpoint->index, 1);
    /* A pooled connection's read watcher stays active across the hand-off. */
    c->up_events = ev_is_active(&up->io) ? (up->io.events & (EV_READ | EV_WRITE)) : 0;
    c->up_wrote = false;
    c->up_eof = false;
    c->t_req_sent = 0;
    c->up_blocked = !up->connected; /* connecting: wait for writability */
    c->t_connect = sy_conn_now(c);
    c->t_up_act = c->t_connect;
    ev_set_cb(&up->io, sy_conn_upstream_io_cb);
    up->io.data = c;
    if (sy_conn_take(c, &c->resp_arena) != 0) {
        sy_local_respond(c, 502, "out of memory");
        return;
    }
    sy_h1_init(&c->resp, false, &resp_callbacks, c, c->cfg->limits.header_bytes, c->cfg->limits.uri_bytes,
               c->cfg->limits.headers);
    sy_h1_set_arena(&c->resp, c->resp_arena.base, c->resp_arena.cap);
}

/* --- moving bytes through the parsers -------------------------------------- */

/* Moves held body bytes (kept for the router) into the upstream buffer. */
static bool drain_hold(sy_conn_t *c)
{
    if (c->hold == NULL || c->rq == RQ_HOLD || c->rs == RS_LOCAL || sy_conn_take(c, &c->up_out) != 0)
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
        sy_exchange_hold_free(c);
        if (end && c->req_framing == SY_FRAME_CHUNKED && sy_buf_append(&c->up_out, "0\r\n\r\n", 5) != 0)
            sy_conn_close(c, "internal buffer overflow");
    }
    return c->hold_off != before || c->hold == NULL;
}

static bool parse_request(sy_conn_t *c)
{
    if (c->phase != PH_EXCHANGE || c->req_paused || c->in.len == 0)
        return false;
    if (c->hold != NULL && c->rq != RQ_HOLD)
        return false; /* held bytes are still on their way to the upstream */
    size_t limit = c->in.len;
    if (c->rs != RS_LOCAL) {
        if (sy_conn_take(c, &c->up_out) != 0)
            return false;
        size_t room = room_for(&c->up_out, !sy_req_head_done(c));
        if (room == 0)
            return false; /* back-pressure: the upstream side must drain first */
        if (limit > room)
            limit = room;
    }
    size_t used = 0;
    int rc = sy_h1_execute(&c->req, sy_buf_data(&c->in), limit, &used);
    if (c->phase == PH_CLOSED)
        return false;
    sy_buf_consume(&c->in, used);
    c->bytes_in += used;
    if (rc == SY_H1_ERROR) {
        c->w->stats.parse_errors++;
        c->close_after = true;
        sy_local_respond(c, c->req.err_status, c->req.err_reason);
        return true;
    }
    return used > 0;
}

static bool parse_response(sy_conn_t *c)
{
    if (c->up == NULL || sy_resp_done(c) || c->phase != PH_EXCHANGE)
        return false;
    if (c->up_in.len == 0) {
        if (!c->up_eof)
            return false;
        int rc = sy_h1_finish(&c->resp);
        if (rc == SY_H1_PAUSED) {
            c->upstream_reusable = false;
            return true;
        }
        sy_exchange_upstream_failed(c, SY_XERR_RESET,
                                    sy_resp_head_sent(c) ? "upstream closed mid-response"
                                                         : "upstream closed without a response");
        return true;
    }
    if (sy_conn_take(c, &c->out) != 0)
        return false;
    size_t limit = c->up_in.len;
    /* A head is written whole: before it, wait until the client buffer can take
     * any head (it may still hold an interim response or an earlier one). */
    if (!sy_resp_final_head(c) && (size_t)c->out.cap - c->out.len < c->cfg->limits.header_bytes + HEAD_GROWTH + 64)
        return false;
    size_t room = room_for(&c->out, !sy_resp_final_head(c));
    if (room == 0)
        return false;
    if (limit > room)
        limit = room;
    size_t used = 0;
    int rc = sy_h1_execute(&c->resp, sy_buf_data(&c->up_in), limit, &used);
    if (c->phase == PH_CLOSED)
        return false;
    sy_buf_consume(&c->up_in, used);
    if (rc == SY_H1_ERROR) {
        c->upstream_reusable = false;
        sy_exchange_upstream_failed(c, SY_XERR_RESET,
                                    c->resp.err_reason ? c->resp.err_reason : "invalid upstream response");
        return true;
    }
    if (rc == SY_H1_UPGRADE)
        sy_tunnel_enter(c);
    return used > 0;
}

/* --- the exchange phase's handlers ----------------------------------------- */

/* Settles the exchange: a client gone mid-request, or both sides done. */
static bool exchange_settle(sy_conn_t *c)
{
    if (c->client_eof && !sy_req_done(c)) {
        c->xerr = SY_XERR_CLIENT;
        sy_conn_close(c, "client closed mid-request");
        return true;
    }
    if (c->client_eof)
        c->close_after = true;
    if (sy_resp_done(c) && (sy_req_done(c) || c->close_after)) {
        exchange_end(c);
        return true;
    }
    return false;
}

/* One round of the exchange: held bytes, the request, the upstream, the
 * response, the client; then settle. */
static bool exchange_step(sy_conn_t *c)
{
    bool progress = false;
    if (c->hold != NULL)
        progress |= drain_hold(c);
    progress |= parse_request(c);
    if (c->phase == PH_CLOSED)
        return true;

    int n = sy_conn_flush_upstream(c);
    if (n < 0) {
        sy_exchange_upstream_failed(c, SY_XERR_RESET, "upstream reset while sending the request");
        progress = true;
    } else if (n > 0) {
        progress = true;
    }
    if (c->phase == PH_EXCHANGE && c->up != NULL && sy_req_done(c) && c->up_out.len == 0 && c->t_req_sent == 0)
        c->t_req_sent = sy_conn_now(c);

    progress |= parse_response(c);
    if (c->phase == PH_CLOSED)
        return true;
    n = sy_conn_flush_client(c);
    if (n < 0)
        return true;
    progress |= n > 0;
    if (c->phase != PH_EXCHANGE)
        return true; /* it became a tunnel: the tunnel's step goes on */
    return exchange_settle(c) || progress;
}

static sy_buf_t *exchange_client_dst(sy_conn_t *c)
{
    return &c->in;
}

static sy_buf_t *exchange_upstream_dst(sy_conn_t *c)
{
    return &c->up_in;
}

/* Keep reading for pipelined requests while there is room; EOF shows up too. */
static int exchange_client_events(const sy_conn_t *c)
{
    return !c->client_eof && (c->in.base == NULL || c->in.len < c->in.cap) ? EV_READ : 0;
}

static void exchange_deadline(const sy_conn_t *c, sy_deadline_t *d)
{
    const sy_timeouts_t *t = &c->cfg->timeouts;
    if (!sy_req_head_done(c)) {
        sy_deadline_consider(d, c->t_start + t->client_header / 1e3, DL_CLIENT_HEADER);
        return;
    }
    /* Waiting on the client: its body, or its reading of our response. */
    if ((!sy_req_done(c) && !c->req_paused && c->in.len == 0) || (c->out.len > 0 && c->out_blocked))
        sy_deadline_consider(d, c->t_client_act + t->body_idle / 1e3, DL_CLIENT_BODY);
    if (c->up == NULL)
        return;
    if (!c->up->connected)
        sy_deadline_consider(d, c->t_connect + t->connect / 1e3, DL_CONNECT);
    else if (!sy_resp_final_head(c) && sy_req_done(c) && c->up_out.len == 0)
        sy_deadline_consider(d, (c->t_req_sent > 0 ? c->t_req_sent : c->t_connect) + t->upstream_header / 1e3,
                             DL_UPSTREAM_HEADER);
    else if (!sy_resp_done(c))
        sy_deadline_consider(d, c->t_up_act + t->body_idle / 1e3, DL_UPSTREAM_BODY);
}

const sy_conn_phase_ops_t sy_exchange_ops = {
    .name = "exchange",
    .client_dst = exchange_client_dst,
    .upstream_dst = exchange_upstream_dst,
    .step = exchange_step,
    .client_events = exchange_client_events,
    .deadline = exchange_deadline,
};
