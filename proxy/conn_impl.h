/* Inside the connection layer (conn.c, exchange.c, tunnel.c, local.c): the
 * connection object, its phases and the calls between those files. Nothing
 * outside proxy/conn*.c, exchange.c, tunnel.c and local.c includes this.
 *
 * A connection is in one phase at a time (conn_phase_t); each phase has one
 * const row of handlers (sy_conn_phase_ops_t): where client and upstream bytes
 * are read into, the step that moves bytes and settles, the client events it
 * waits for and the deadline it keeps. sy_conn_enter() is the one place a phase
 * changes. Inside PH_EXCHANGE the request and the response each have their own
 * phase (req_phase_t, resp_phase_t), changed by sy_req_enter/sy_resp_enter.
 * Worker thread only. */
#ifndef SY_CONN_IMPL_H
#define SY_CONN_IMPL_H

#include "proxy/conn.h"
#include "proxy/h1.h"
#include "proxy/headers.h"

#include <stdbool.h>
#include <sys/socket.h>

struct ssl_st;

typedef enum conn_phase {
    PH_IDLE,     /* keep-alive, between requests */
    PH_EXCHANGE, /* a request/response exchange is in progress */
    PH_TUNNEL,   /* an upgraded connection: bytes both ways */
    PH_LINGER,   /* flushing the last bytes, then close */
    PH_H2,       /* an HTTP/2 connection: each stream is a child connection (h2.c) */
    PH_CLOSED,   /* waiting for the reaper */
} conn_phase_t;

/* The request side of an exchange, in order. */
typedef enum req_phase {
    RQ_HEAD, /* reading the request head */
    RQ_HOLD, /* collecting the body the router asked for; no upstream chosen yet */
    RQ_BODY, /* head routed: the body (if any) streams to the upstream */
    RQ_DONE, /* the whole request was parsed */
} req_phase_t;

/* The response side of an exchange. */
typedef enum resp_phase {
    RS_WAIT,  /* no response head sent to the client yet (routing, connecting, waiting) */
    RS_RELAY, /* the upstream's final head went out: relaying its body */
    RS_DONE,  /* the upstream's response ended */
    RS_LOCAL, /* answered by the gateway itself (whole, at once) */
} resp_phase_t;

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
    DL_H2,       /* the HTTP/2 codec's own timing (drain steps): its step looks at the clock */
} deadline_kind_t;

/* The earliest deadline found so far. */
typedef struct sy_deadline {
    ev_tstamp when;
    deadline_kind_t kind;
} sy_deadline_t;

typedef struct sy_conn {
    sy_list_t node;
    sy_worker_t *w;
    int fd;
    ev_io io;
    ev_timer timer;
    int io_events;
    /* Ready to run in this loop iteration (see sy_conn_run_ready): the events
     * epoll reported for the client's socket and the upstream's, and the next
     * connection in the worker's queue. */
    struct sy_conn *ready_next;
    int ready_client, ready_up;
    bool ready_queued;
    conn_phase_t phase;
    req_phase_t rq;
    resp_phase_t rs;
    char peer_ip[48];
    struct sockaddr_storage peer;
    struct ssl_st *tls;      /* NULL: plain TCP (proxy/tls.h; owned, freed at close) */
    int tls_wants;           /* a stalled TLS call waits for this event (0: none) */
    bool tls_ready;          /* the TLS handshake is done */
    bool alpn_h2;            /* ALPN chose h2 (see tls_established in conn.c) */

    sy_buf_t in, out, up_out, up_in, req_arena, resp_arena;
    sy_h1_t req, resp;

    /* the exchange */
    sy_snapshot_t *snap;
    const sy_config_t *cfg;  /* snap->config during an exchange; between exchanges a cache of the worker's that a
                              * reload may free: conn.c reads the worker's own then (between_cfg) */
    sy_decision_t dec;
    sy_upconn_t *up;
    int up_events;
    bool client_eof, up_eof, out_blocked, up_blocked;
    bool req_paused, want_tunnel, head_req, client_http11;
    bool close_after, upstream_reusable;
    bool said_close;         /* the response head sent says Connection: close */
    bool up_wrote;           /* bytes of this request reached this upstream connection */
    /* A body held for the router (it asked for it to find the user key): */
    char *hold;
    size_t hold_len, hold_off, hold_cap, hold_want;
    bool hold_end_pending;   /* the request ended while held bytes wait to be sent */
    bool sent_continue;      /* we answered Expect: 100-continue ourselves */
    struct sy_shadow *shadow; /* this exchange is shadowed (proxy/shadow.h): owned until handed back */
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

    /* HTTP/2 (h2.c). A client connection speaking HTTP/2 has h2; each of its
     * streams runs the exchange above in a child connection (no fd: its `in` is
     * the stream's request as HTTP/1.1, its `out` is read by the stream), which
     * has h2_parent and, while attached, h2s. */
    bool http2_ok;              /* the listener allows h2c with prior knowledge */
    struct sy_h2 *h2;
    struct sy_h2_stream *h2s;
    struct sy_conn *h2_parent;
} sy_conn_t;

/* One phase's handlers; one const row per phase, shared by all connections. */
typedef struct sy_conn_phase_ops {
    const char *name;
    /* Where bytes read from the client / the upstream go. */
    sy_buf_t *(*client_dst)(sy_conn_t *c);
    sy_buf_t *(*upstream_dst)(sy_conn_t *c);
    /* Moves what can move and settles; true if anything changed. May close c
     * or change its phase. */
    bool (*step)(sy_conn_t *c);
    /* The client events to wait for (EV_WRITE for blocked output is added). */
    int (*client_events)(const sy_conn_t *c);
    /* Offers this phase's deadlines to d. */
    void (*deadline)(const sy_conn_t *c, sy_deadline_t *d);
} sy_conn_phase_ops_t;

extern const sy_conn_phase_ops_t sy_exchange_ops, sy_tunnel_ops;

/* The request side has its head (routed, or being answered). */
static inline bool sy_req_head_done(const sy_conn_t *c)
{
    return c->rq != RQ_HEAD;
}
static inline bool sy_req_done(const sy_conn_t *c)
{
    return c->rq == RQ_DONE;
}
/* Something of the response (a head, local or relayed) went to the client. */
static inline bool sy_resp_head_sent(const sy_conn_t *c)
{
    return c->rs != RS_WAIT;
}
static inline bool sy_resp_done(const sy_conn_t *c)
{
    return c->rs == RS_DONE || c->rs == RS_LOCAL;
}
/* The upstream's final (non-1xx) head arrived. */
static inline bool sy_resp_final_head(const sy_conn_t *c)
{
    return c->rs == RS_RELAY || c->rs == RS_DONE;
}

/* conn.c: the connection's lifecycle and I/O. */
/* The one place a connection changes phase; stamps what the new phase times. */
void sy_conn_enter(sy_conn_t *c, conn_phase_t phase);
static inline void sy_req_enter(sy_conn_t *c, req_phase_t rq)
{
    c->rq = rq;
}
static inline void sy_resp_enter(sy_conn_t *c, resp_phase_t rs)
{
    c->rs = rs;
}
/* Idempotent; stops watchers and closes the fd at once, the reaper frees c.
 * Safe from any of c's callbacks. reason: NULL for an ordinary end. */
void sy_conn_close(sy_conn_t *c, const char *reason);
ev_tstamp sy_conn_now(const sy_conn_t *c);
int sy_conn_take(sy_conn_t *c, sy_buf_t *b) SY_MUST_USE;
void sy_conn_give(sy_conn_t *c, sy_buf_t *b);
void sy_conn_set_events(struct ev_loop *loop, ev_io *io, int *cur, int events);
/* Sends what c->up_out holds to the upstream. Returns -1 on a fatal error, else
 * whether bytes went. */
int sy_conn_flush_upstream(sy_conn_t *c);
/* Sends what c->out holds to the client; on a fatal error closes c (and returns
 * -1), else returns whether bytes went. */
int sy_conn_flush_client(sy_conn_t *c);
/* Offers `when` as a deadline of `kind` to d (keeps the earliest). */
void sy_deadline_consider(sy_deadline_t *d, ev_tstamp when, deadline_kind_t kind);
/* The upstream io callback (the exchange hands it to its upstream connection). */
void sy_conn_upstream_io_cb(struct ev_loop *loop, ev_io *io, int revents);
/* Drops upstream events noted for c but not run yet (its upstream was detached). */
void sy_conn_ready_forget_upstream(sy_conn_t *c);

/* Runs c's step until nothing moves, then re-arms watchers and the timer. */
void sy_conn_pump(sy_conn_t *c);
/* A child connection for one HTTP/2 stream of parent (idle, no fd; not counted
 * as a connection of the worker). NULL when out of memory. */
sy_conn_t *sy_conn_child_new(sy_conn_t *parent);

/* Whether the client reached us over TLS (an HTTP/2 stream's child: its parent did). */
static inline bool sy_conn_is_tls(const sy_conn_t *c)
{
    return c->tls != NULL || (c->h2_parent != NULL && c->h2_parent->tls != NULL);
}

/* h2.c (see h2.h): the HTTP/2 phase. */
extern const sy_conn_phase_ops_t sy_h2_ops;
/* A child's `out` has bytes for its stream: moves what the stream can take.
 * Returns 1 if bytes moved, else 0. */
int sy_h2_child_flush(sy_conn_t *child);
/* The exchange of a child has its upstream's final head: the stream sends it
 * as HEADERS itself (then the child's out carries the body unframed) and
 * returns 1, or returns 0 (the exchange writes the head as HTTP/1.1, read back
 * by the stream), or -1 (refused). */
int sy_h2_child_head(sy_conn_t *child, const sy_h1_msg_t *m, const sy_fwd_response_t *f);
/* A child was pumped (or closed): its parent gets its turn. */
void sy_h2_child_pumped(sy_conn_t *child);
/* A child is closing: its stream is told. */
void sy_h2_child_closed(sy_conn_t *child);
/* The HTTP/2 connection c is closing: its streams' children close too. */
void sy_h2_conn_closed(sy_conn_t *c);
/* Frees the session (the reaper, from conn_free). */
void sy_h2_free(sy_conn_t *c);

/* exchange.c: the request/response exchange. */
/* Starts an exchange on the bytes in c->in (c leaves PH_IDLE). */
void sy_exchange_begin(sy_conn_t *c);
/* Logs the exchange and tells the observer (at its end, or when c closes mid-way). */
void sy_exchange_record(sy_conn_t *c);
/* Tells the observer the outcome before any of it reaches the client, once. */
void sy_exchange_early(sy_conn_t *c, int status, sy_xerr_t xerr);
/* Gives the upstream connection back (reusable: to the pool). */
void sy_exchange_detach_upstream(sy_conn_t *c, bool reusable);
void sy_exchange_hold_free(sy_conn_t *c);
/* The upstream failed (connect, reset, timeout): retry, fall back, or answer
 * 502/504 (or cut the connection if the response began). */
void sy_exchange_upstream_failed(sy_conn_t *c, sy_xerr_t kind, const char *reason);

/* local.c: answers from the gateway itself. */
/* Answers status locally (or cuts the connection if a response already began). */
void sy_local_respond(sy_conn_t *c, int status, const char *reason);

/* tunnel.c */
/* The upstream agreed to switch protocols: the exchange becomes a byte tunnel. */
void sy_tunnel_enter(sy_conn_t *c);

#endif
