/* Header rewriting between client and backend (pure: no I/O, unit-tested).
 *
 * Requests to a backend: hop-by-hop headers (Connection and what it names,
 * Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
 * Proxy-Authorization, HTTP2-Settings) are removed; X-Forwarded-For gets the
 * client address appended, X-Forwarded-Proto and X-Forwarded-Host are set,
 * X-Request-Id is kept or set. Responses to a client: hop-by-hop headers removed,
 * framing chosen for the client, X-Switchyard-Variant added when asked. */
#ifndef SY_HEADERS_H
#define SY_HEADERS_H

#include "proxy/buf.h"
#include "proxy/h1.h"

#include <stdbool.h>
#include <time.h>

typedef struct sy_fwd_request {
    const char *client_ip;
    const char *proto;        /* "http" or "https" */
    const char *request_id;   /* used when the request has none */
    const char *strip_header; /* one more header to drop (the override header), or NULL */
    bool websocket;           /* keep Upgrade: websocket and Connection: upgrade */
} sy_fwd_request_t;

typedef enum sy_framing {
    SY_FRAME_NONE,     /* no body */
    SY_FRAME_LENGTH,   /* Content-Length passed through */
    SY_FRAME_CHUNKED,  /* we send chunked */
    SY_FRAME_CLOSE,    /* body ends when the connection closes */
} sy_framing_t;

typedef struct sy_fwd_response {
    const char *variant;      /* value for X-Switchyard-Variant, or NULL */
    bool close;               /* send Connection: close */
    sy_framing_t framing;     /* what the client gets; see sy_headers_response_framing */
    bool tunnel;              /* 101: keep Upgrade and Connection: upgrade */
    const char *date;         /* added as Date when the backend sent none, or NULL */
} sy_fwd_response_t;

/* True for headers never forwarded (hop-by-hop), including those named in the
 * message's Connection header. */
bool sy_headers_hop_by_hop(const sy_h1_msg_t *m, const sy_header_t *h);

/* Writes the request head for the backend into out: always in origin-form; an
 * absolute-form request goes with its path and query, and its authority as Host
 * (replacing the Host header, RFC 9112 3.2.2). Returns 0 or SY_ELIMIT. */
int sy_headers_request(sy_buf_t *out, const sy_h1_msg_t *m, const sy_fwd_request_t *f) SY_MUST_USE;
/* How the request body is framed towards the backend. */
sy_framing_t sy_headers_request_framing(const sy_h1_msg_t *m);

/* Framing for the response to the client, given the backend response, whether
 * the request was HEAD, and the client's HTTP version. */
sy_framing_t sy_headers_response_framing(const sy_h1_msg_t *resp, bool head_request, bool client_http11);
/* Writes the response head for the client into out. Returns 0 or SY_ELIMIT. */
int sy_headers_response(sy_buf_t *out, const sy_h1_msg_t *m, const sy_fwd_response_t *f) SY_MUST_USE;

/* A local answer: status line, Date (when date is not NULL), JSON body
 * {"error": kind, "reason": reason}. kind NULL: sy_headers_error_kind(status).
 * kind and reason are our own static strings (nothing to escape). */
int sy_headers_local_response(sy_buf_t *out, int status, const char *kind, const char *reason, const char *date,
                              bool close, bool head_only) SY_MUST_USE;
/* The answer to OPTIONS * (RFC 9110 9.3.7): 200, Allow, no body. */
int sy_headers_options_response(sy_buf_t *out, const char *date, bool close) SY_MUST_USE;
const char *sy_headers_status_text(int status);
/* A machine-readable kind for an error status: "bad_request", "not_found", ... */
const char *sy_headers_error_kind(int status);

/* RFC 9110 5.6.7 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT". */
#define SY_HTTP_DATE_LEN 29
void sy_headers_format_date(char out[SY_HTTP_DATE_LEN + 1], time_t t);
/* The date for `now`, formatted once per second per thread (each worker and the
 * control thread keep their own copy); valid until the thread's next call. */
const char *sy_headers_date(time_t now);

#endif
