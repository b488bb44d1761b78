/* A small HTTP/1.1 client on the project's codec (h1.c): one request, one
 * response, one connection (`Connection: close`), for the gateway's own peers
 * (health probes, trip notifications, `switchyard ctl`).
 *
 * Two layers share one response parser:
 * - sy_h1client_resp_t, the parse step, sans I/O: bytes in, a status, a head
 *   and a body out, with limits on the head and the body. Interim (1xx)
 *   responses are skipped; a 101 is refused.
 * - sy_h1client_t, the exchange on a libev loop, non-blocking: connect, write the
 *   request, read and parse the answer to its end, all within one timeout, then
 *   one completion callback. And sy_h1client_fetch, the same exchange blocking
 *   with poll timeouts, for command-line tools only (never on a loop).
 *
 * Errors are static strings, compared by pointer where a caller must tell them
 * apart (the sy_h1client_err_* below); the parser's own reasons pass through. */
#ifndef SY_H1CLIENT_H
#define SY_H1CLIENT_H

#include "proxy/err.h"
#include "proxy/h1.h"
#include "proxy/net.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

extern const char sy_h1client_err_timeout[];        /* "timed out" */
extern const char sy_h1client_err_refused[];        /* "connection refused" */
extern const char sy_h1client_err_connect[];        /* "connect failed" */
extern const char sy_h1client_err_io[];             /* "the connection failed" */
extern const char sy_h1client_err_no_answer[];      /* the peer closed before a response */
extern const char sy_h1client_err_closed_early[];   /* the peer closed mid-response */
extern const char sy_h1client_err_head_too_large[]; /* over max_head or max_headers */
extern const char sy_h1client_err_body_too_large[]; /* over max_body: status and head are set */
extern const char sy_h1client_err_nomem[];          /* "out of memory" */
extern const char sy_h1client_err_tls[];            /* "TLS handshake failed" */

typedef struct sy_h1client_limits {
    size_t max_head;    /* bytes of the response head (status line and headers) */
    size_t max_headers; /* header count */
    size_t max_body;    /* body bytes read; past them the exchange ends with
                         * sy_h1client_err_body_too_large (the status is known) */
    bool keep_body;     /* keep the body in resp.body (else only count it) */
    bool head_request;  /* the request is a HEAD: the response has no body */
} sy_h1client_limits_t;

/* One response being parsed. Embedded by its owner; fields without a leading
 * underscore are read-only results. */
typedef struct sy_h1client_resp {
    int status;              /* the final status; 0 until its head is parsed */
    const sy_h1_msg_t *msg;  /* the final head (sy_h1client_find); NULL until then */
    char *body;              /* keep_body: the body, NUL-terminated (NULL while empty) */
    size_t body_len;         /* body bytes seen, kept or not */
    bool complete;           /* the response was read to its end */
    const char *err;         /* why the parse stopped; NULL while fine */
    /* private */
    sy_h1_t _h1;
    char *_arena;
    sy_h1client_limits_t _lim;
    size_t _body_cap;
    int _rc;                 /* what the parse returns once stopped */
    bool _trailing;          /* bytes came after the complete response */
} sy_h1client_resp_t;

/* Takes the limits (copied) and allocates the head arena. Returns 0 or
 * SY_ENOMEM (r then needs no sy_h1client_resp_free, but it is harmless). */
int sy_h1client_resp_init(sy_h1client_resp_t *r, const sy_h1client_limits_t *lim) SY_MUST_USE;
/* Forgets the response (the body is freed), ready for the next one. */
void sy_h1client_resp_reset(sy_h1client_resp_t *r);
/* Frees what r holds; idempotent. */
void sy_h1client_resp_free(sy_h1client_resp_t *r);
/* Feeds bytes read from the peer. Returns SY_EAGAIN (more is needed), 0 (the
 * response is complete: bytes after it are ignored), or SY_EINVAL / SY_ELIMIT /
 * SY_ENOMEM with r->err set. Once it returned other than SY_EAGAIN it returns
 * the same again. */
int sy_h1client_parse_response(sy_h1client_resp_t *r, const char *data, size_t len) SY_MUST_USE;
/* The peer closed its side: completes a body delimited by the close. Returns
 * 0 or SY_EINVAL with r->err (sy_h1client_err_no_answer or _closed_early). */
int sy_h1client_parse_eof(sy_h1client_resp_t *r) SY_MUST_USE;
/* A header of the final head (case-insensitive name); NULL when absent. */
const sy_header_t *sy_h1client_find(const sy_h1client_resp_t *r, const char *name);

typedef struct sy_h1client_request {
    const char *method;   /* "GET", "POST" */
    const char *target;   /* origin-form, "/path?query": no space, CR or LF */
    const char *host;     /* the Host header's value: no CR or LF */
    const char *headers;  /* more header lines, each ending in CRLF; may be NULL */
    const char *body;     /* NULL: no body and no Content-Length */
    size_t body_len;
} sy_h1client_request_t;

/* --- the exchange on a loop ---------------------------------------------------- */

typedef struct sy_h1client sy_h1client_t;

/* The exchange ended: err is NULL when the whole response was read, else why
 * not (sy_h1client_response(c) still tells the status when its head came).
 * Called once per started exchange, from the loop, never from inside
 * sy_h1client_start/_connect. Inside it the client may be started again,
 * cancelled or destroyed: the client touches nothing after the callback. */
typedef void (*sy_h1client_cb)(sy_h1client_t *c, void *ud, const char *err);

/* The next exchanges (until set again) speak TLS with ctx (proxy/tls.h; NULL:
 * plain), sending sni (may be NULL) and checking the certificate against host
 * when ctx verifies. A connect-only exchange then succeeds once the handshake
 * does. The pointers are borrowed: they must outlive the exchanges. */
struct ssl_ctx_st;
void sy_h1client_set_tls(sy_h1client_t *c, struct ssl_ctx_st *ctx, const char *sni, const char *host);

/* A client for one exchange at a time on `loop` (control thread). lim is
 * copied. Returns NULL when out of memory. */
sy_h1client_t *sy_h1client_create(struct ev_loop *loop, const sy_h1client_limits_t *lim);
/* Cancels any exchange (no callback) and frees c. Safe inside the callback. */
void sy_h1client_destroy(sy_h1client_t *c);
/* Starts an exchange: connect to addr, send req (copied), read the response;
 * all within timeout seconds. Returns 0 (cb will be called), or without a
 * callback SY_EINVAL (busy, or a target or host that cannot be sent) or
 * SY_ENOMEM. */
int sy_h1client_start(sy_h1client_t *c, const sy_addr_t *addr, const sy_h1client_request_t *req, double timeout,
                      sy_h1client_cb cb, void *ud) SY_MUST_USE;
/* The same exchange on a connection the caller holds (an upstream pool's,
 * proxy/upstream.h): fd stays the caller's and is never closed here;
 * `connecting`: its non-blocking connect is still under way. The request asks
 * for keep-alive. The caller watches nothing on fd until the callback; then
 * sy_h1client_reusable(c) says whether fd can carry another request. Same
 * contract as sy_h1client_start otherwise. */
int sy_h1client_start_on(sy_h1client_t *c, int fd, bool connecting, const sy_h1client_request_t *req, double timeout,
                         sy_h1client_cb cb, void *ud) SY_MUST_USE;
/* After an exchange of sy_h1client_start_on: the response was read whole, the
 * peer keeps the connection open, and nothing followed the response. */
bool sy_h1client_reusable(const sy_h1client_t *c);
/* A TCP connect only (probes of pools without an HTTP check): cb with err NULL
 * once connected. Same contract as sy_h1client_start. */
int sy_h1client_connect(sy_h1client_t *c, const sy_addr_t *addr, double timeout, sy_h1client_cb cb,
                        void *ud) SY_MUST_USE;
/* Ends the exchange under way, if any, without a callback; idempotent. */
void sy_h1client_cancel(sy_h1client_t *c);
/* True while an exchange is under way. */
bool sy_h1client_busy(const sy_h1client_t *c);
/* The response of the exchange under way or last ended; valid until the next
 * start or destroy. */
const sy_h1client_resp_t *sy_h1client_response(const sy_h1client_t *c);

/* --- the same, blocking (command-line tools only) ------------------------------ */

/* Connects, sends req and reads the response into resp (initialised by the
 * caller with its limits, reset here first), waiting at most timeout seconds
 * for each step. Returns NULL when the whole response was read, else why not
 * (sy_h1client_err_refused, _connect, _timeout, _io, or resp->err). Blocks:
 * never call it on a loop. */
const char *sy_h1client_fetch(const sy_addr_t *addr, const sy_h1client_request_t *req, double timeout,
                              sy_h1client_resp_t *resp);

#endif
