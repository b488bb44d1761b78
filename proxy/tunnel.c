/* An upgraded connection (WebSocket): bytes both ways, unparsed, until either
 * side ends and what it sent went out. See conn_impl.h. */
#include "proxy/conn_impl.h"

/* Moves all of from into to (bytes that came after the heads belong to the
 * tunnel already). */
static int move_all(sy_conn_t *c, sy_buf_t *from, sy_buf_t *to)
{
    if (from->len == 0)
        return 0;
    if (sy_conn_take(c, to) != 0 || sy_buf_append(to, sy_buf_data(from), from->len) != 0)
        return SY_ELIMIT;
    sy_buf_consume(from, from->len);
    return 0;
}

void sy_tunnel_enter(sy_conn_t *c)
{
    sy_conn_enter(c, PH_TUNNEL);
    if (move_all(c, &c->in, &c->up_out) != 0 || move_all(c, &c->up_in, &c->out) != 0) {
        sy_conn_close(c, "tunnel: no room for early bytes");
        return;
    }
    sy_conn_give(c, &c->in);
    sy_conn_give(c, &c->up_in);
}

static bool tunnel_step(sy_conn_t *c)
{
    int up = sy_conn_flush_upstream(c);
    if (up < 0) {
        sy_conn_close(c, NULL);
        return true;
    }
    int out = sy_conn_flush_client(c);
    if (out < 0)
        return true;
    if ((c->client_eof && c->up_out.len == 0) || (c->up_eof && c->out.len == 0)) {
        sy_conn_close(c, NULL);
        return true;
    }
    return up > 0 || out > 0;
}

/* Client bytes go straight to the upstream's buffer, and back. */
static sy_buf_t *tunnel_client_dst(sy_conn_t *c)
{
    return &c->up_out;
}

static sy_buf_t *tunnel_upstream_dst(sy_conn_t *c)
{
    return &c->out;
}

static int tunnel_client_events(const sy_conn_t *c)
{
    return !c->client_eof && (c->up_out.base == NULL || c->up_out.len < c->up_out.cap) ? EV_READ : 0;
}

static void tunnel_deadline(const sy_conn_t *c, sy_deadline_t *d)
{
    ev_tstamp last = c->t_client_act > c->t_up_act ? c->t_client_act : c->t_up_act;
    sy_deadline_consider(d, last + c->cfg->timeouts.tunnel_idle / 1e3, DL_TUNNEL);
}

const sy_conn_phase_ops_t sy_tunnel_ops = {
    .name = "tunnel",
    .client_dst = tunnel_client_dst,
    .upstream_dst = tunnel_upstream_dst,
    .step = tunnel_step,
    .client_events = tunnel_client_events,
    .deadline = tunnel_deadline,
};
