/* Answers from the gateway itself: errors (404, 413, 502, 504, ...) and the
 * 200 to OPTIONS *. See conn_impl.h. */
#include "proxy/conn_impl.h"

#include "proxy/log.h"

#include <time.h>

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
void sy_local_respond(sy_conn_t *c, int status, const char *reason)
{
    if (sy_resp_head_sent(c)) {
        sy_conn_close(c, reason);
        return;
    }
    sy_exchange_detach_upstream(c, false);
    sy_exchange_hold_free(c);
    c->status = status;
    /* A body still to come is not read: the connection cannot be reused. A request
     * without a body (its head just parsed) leaves the connection clean. */
    bool body_pending = !sy_req_done(c) && !(sy_req_head_done(c) && c->req_framing == SY_FRAME_NONE);
    if (body_pending || c->want_tunnel) {
        c->close_after = true;
        c->req_paused = true;
    }
    if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431)
        c->close_after = true;
    bool close = c->close_after || c->w->draining;
    const char *date = sy_headers_date((time_t)sy_conn_now(c));
    if (sy_conn_take(c, &c->out) != 0 ||
        (status == 200 ? sy_headers_options_response(&c->out, date, close)
                       : sy_headers_local_response(&c->out, status, local_kind(c, status), reason, date, close,
                                                   c->head_req)) != 0) {
        sy_conn_close(c, "out of memory");
        return;
    }
    c->said_close = c->close_after || c->w->draining;
    sy_resp_enter(c, RS_LOCAL);
    if (status >= 400 && c->w->stats.local_responses++ < 3)
        sy_debug("local %d to %s: %s", status, c->peer_ip, reason);
}
