/* HTTP/1.1 message reader: a sans-I/O wrapper around llhttp.
 *
 * It takes byte slices and produces events (head, body bytes, done) through a
 * const callbacks struct; it never reads or writes a socket. One sy_h1_t reads
 * one direction of one connection (requests from a client, or responses from a
 * backend), one message at a time: after each complete message it stops
 * (SY_H1_PAUSED) so the owner can finish the exchange before the next pipelined
 * message is looked at; sy_h1_next() lets it go on.
 *
 * Stricter than llhttp alone: the head is scanned first and refused on a bare CR
 * or LF, obs-fold, control characters in values, too many headers, or a head,
 * URI or header count over the limits. Errors carry the HTTP status to answer
 * with (400, 414, 431, 501, 505) and a static reason.
 *
 * Requests (RFC 9112 3.2, RFC 9110 2.5, 4.2, 7.2): the target is checked byte by
 * byte (RFC 3986 characters, well-formed percent-encoding) and classified into
 * one of the four forms; asterisk-form only with OPTIONS, authority-form only
 * with CONNECT, absolute-form only with an http or https scheme and an authority.
 * Host must appear once in HTTP/1.1, and when present be a valid
 * `uri-host [ ":" port ]` (no userinfo, path, list or empty value). HTTP/1.x with
 * a minor version above 1 is read as HTTP/1.1; any other major version -> 505.
 * msg.host is the authority requests are routed and forwarded by: the target's
 * in absolute-form (it wins over Host, RFC 9112 3.2.2), else the Host header.
 *
 * Memory: the head is copied, once, into an arena the owner lends with
 * sy_h1_set_arena() before the first byte of a message, and llhttp reads that
 * copy: the target, reason phrase, header names and values are spans of it (not
 * NUL-terminated: read them by their lengths). They stay valid until sy_h1_next()
 * or sy_h1_reset(). */
#ifndef SY_H1_H
#define SY_H1_H

#include "proxy/hooks.h"

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ASCII case-insensitive equality of n bytes, b in lower case (header names,
 * tokens): inline, as header names are compared several times per message. */
static inline bool sy_h1_lower_eq(const char *a, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c >= 'A' && c <= 'Z')
            c |= 0x20;
        if (c != (unsigned char)lower[i])
            return false;
    }
    return true;
}

/* RFC 9112 3.2: the four forms of a request target. */
typedef enum sy_h1_form {
    SY_H1_FORM_ORIGIN = 0, /* /path?query */
    SY_H1_FORM_ABSOLUTE,   /* http://authority/path?query */
    SY_H1_FORM_AUTHORITY,  /* host:port (CONNECT) */
    SY_H1_FORM_ASTERISK,   /* * (OPTIONS) */
} sy_h1_form_t;

typedef struct sy_h1_msg {
    const char *method;     /* requests: static name from llhttp */
    const char *target;     /* requests: request target as received */
    size_t target_len;
    sy_h1_form_t form;      /* requests: the target's form */
    const char *origin;     /* requests: path and query within target ("*" in asterisk-form,
                             * empty in authority-form; in absolute-form may be empty or start
                             * with '?': sent on as "/" + it) */
    size_t origin_len;
    const char *host;       /* requests: effective authority (see above); NULL when none */
    size_t host_len;
    bool host_from_target;  /* requests: host is the target's authority (Host is replaced) */
    int status;             /* responses */
    const char *reason;     /* responses: reason phrase */
    size_t reason_len;
    uint8_t major, minor;
    sy_header_t *headers;
    size_t nheaders;
    bool keep_alive;        /* llhttp_should_keep_alive at head end */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool has_length;        /* Content-Length present */
    uint64_t content_length;
    bool upgrade;           /* an upgrade (request: asked; response: 101) */
    bool body_until_eof;    /* response delimited by connection close */
    bool expect_continue;   /* Expect: 100-continue */
} sy_h1_msg_t;

enum {
    SY_H1_OK = 0,       /* every byte consumed */
    SY_H1_PAUSED = 1,   /* a message completed; *consumed bytes were used */
    SY_H1_UPGRADE = 2,  /* an upgrade message completed; the rest is another protocol */
    SY_H1_ERROR = -1,   /* see err_status / err_reason */
};

/* Return values of on_head beyond 0. */
enum {
    SY_H1_HEAD_NO_BODY = 1,   /* the message has no body whatever its headers say (HEAD) */
    SY_H1_HEAD_TUNNEL = 2,    /* accept the upgrade: stop after this message */
};
/* Return value of on_done: go on parsing the next message at once (1xx). */
enum { SY_H1_DONE_CONTINUE = 1 };

typedef struct sy_h1_callbacks {
    /* The head is complete. Return 0, SY_H1_HEAD_NO_BODY, SY_H1_HEAD_TUNNEL, or a
     * negative value to stop with an error (set via sy_h1_fail first). */
    int (*on_head)(void *ud, sy_h1_msg_t *msg);
    /* Body bytes (de-chunked). Return 0 or negative to stop with an error. */
    int (*on_body)(void *ud, const char *data, size_t len);
    /* The message is complete. Return 0 (pause), SY_H1_DONE_CONTINUE, or negative. */
    int (*on_done)(void *ud);
} sy_h1_callbacks_t;

typedef struct sy_h1 {
    llhttp_t _llh;
    const sy_h1_callbacks_t *_cb;
    void *_ud;
    sy_h1_msg_t msg;
    int err_status;              /* 400, 413, 414, 431, 501, 505 (requests) */
    const char *err_reason;      /* static */
    /* limits */
    size_t _max_head, _max_uri, _max_headers;
    /* arena */
    char *_arena;
    size_t _arena_len, _arena_cap;
    /* state */
    enum { SY_H1_PH_HEAD, SY_H1_PH_BODY, SY_H1_PH_DONE } _phase;
    size_t _head_bytes;
    int _scan;          /* head scanner state */
    bool _scan_first_line;
    int _last;          /* 0 none, 1 field, 2 value */
    bool _tunnel;
    bool _is_request;
    bool _any_bytes;    /* a byte of the current message was seen */
    /* request line: method token seen so far (for 400 versus 501) */
    bool _in_method;
    bool _method_tchar;
} sy_h1_t;

/* is_request: parse requests (else responses). Limits: head bytes, target bytes,
 * header count. */
void sy_h1_init(sy_h1_t *h, bool is_request, const sy_h1_callbacks_t *cb, void *ud, size_t max_head,
                size_t max_uri, size_t max_headers);
/* Lends the arena for the message heads (at least max_head + max_headers *
 * sizeof(sy_header_t) bytes is always enough). */
void sy_h1_set_arena(sy_h1_t *h, char *mem, size_t size);
/* Bytes of arena that a given set of limits needs. */
size_t sy_h1_arena_size(size_t max_head, size_t max_headers);

/* Feeds bytes. Returns SY_H1_OK, SY_H1_PAUSED, SY_H1_UPGRADE or SY_H1_ERROR and
 * sets *consumed (bytes used; the rest must be fed again after sy_h1_next for
 * PAUSED, or belongs to the tunnel for UPGRADE). May be called from nothing but
 * the owner's code; callbacks run inside it. */
int sy_h1_execute(sy_h1_t *h, const char *data, size_t len, size_t *consumed);
/* The peer closed its side: completes a body delimited by EOF (calls on_done and
 * returns SY_H1_PAUSED), returns SY_H1_OK if between messages, else SY_H1_ERROR. */
int sy_h1_finish(sy_h1_t *h);
/* After SY_H1_PAUSED: forget the message and accept the next one. */
void sy_h1_next(sy_h1_t *h);
/* Done with the message: drops the arena (and the head that was in it) and
 * reads as idle; sy_h1_init must come before the next message is fed. */
void sy_h1_reset(sy_h1_t *h);
/* Set by callbacks to refuse a message with a status and static reason. */
int sy_h1_fail(sy_h1_t *h, int status, const char *reason);

/* True while no byte of a message has been seen (between messages). */
static inline bool sy_h1_idle(const sy_h1_t *h) { return !h->_any_bytes; }
/* Head parsed, message not complete. */
static inline bool sy_h1_in_body(const sy_h1_t *h) { return h->_phase == SY_H1_PH_BODY; }

/* Finds a header (case-insensitive); NULL if absent. */
const sy_header_t *sy_h1_find(const sy_h1_msg_t *m, const char *name);
/* True when the comma-separated list in value contains token (case-insensitive). */
bool sy_h1_has_token(const char *value, size_t len, const char *token);
/* Checks an authority as Host and absolute-form targets carry it: RFC 3986
 * `host [ ":" port ]`, no userinfo, no list. Returns NULL when valid, else a
 * static reason ("empty", "userinfo is not allowed", ...). */
const char *sy_h1_check_authority(const char *s, size_t len);

#endif
