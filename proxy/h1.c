#include "proxy/h1.h"

#include <assert.h>
#include <stdalign.h>
#include <string.h>
#include <strings.h>

#define H1(p) ((sy_h1_t *)(p)->data)

enum { SCAN_TEXT, SCAN_CR, SCAN_LINE_START, SCAN_END_CR, SCAN_END };

int sy_h1_fail(sy_h1_t *h, int status, const char *reason)
{
    if (h->err_status == 0) {
        h->err_status = status;
        h->err_reason = reason;
    }
    return -1;
}

size_t sy_h1_arena_size(size_t max_head, size_t max_headers)
{
    return max_headers * sizeof(sy_header_t) + max_head + 64;
}

static void msg_clear(sy_h1_t *h)
{
    sy_header_t *hdrs = h->msg.headers;
    memset(&h->msg, 0, sizeof(h->msg));
    h->msg.headers = hdrs;
    h->_arena_len = 0;
    h->_head_bytes = 0;
    h->_scan = SCAN_LINE_START;
    h->_scan_first_line = true;
    h->_last = 0;
    h->_tunnel = false;
    h->_any_bytes = false;
    h->_in_method = h->_is_request; /* a status line has no method: straight to the fast path */
    h->_method_tchar = true;
    h->_phase = SY_H1_PH_HEAD;
}

void sy_h1_set_arena(sy_h1_t *h, char *mem, size_t size)
{
    size_t hdr_bytes = h->_max_headers * sizeof(sy_header_t);
    assert(size >= hdr_bytes + 64);
    assert(((uintptr_t)mem % alignof(sy_header_t)) == 0);
    h->msg.headers = (sy_header_t *)mem;
    h->_arena = mem + hdr_bytes;
    h->_arena_cap = size - hdr_bytes;
}

/* Where a span of the head (target, reason, a name, a value) stays. The head is
 * copied into the arena before llhttp reads it (sy_h1_execute), so such a span is
 * there already, and one that goes on in the next piece continues right after it:
 * nothing is copied per span. A span read from elsewhere (a trailer field after a
 * chunked body) is copied in after the head. NULL when the arena is full. The
 * spans are not NUL-terminated: every reader goes by their lengths. */
static const char *keep(sy_h1_t *h, const char *at, size_t len)
{
    uintptr_t a = (uintptr_t)at, base = (uintptr_t)h->_arena;
    if (a >= base && a - base < h->_arena_len)
        return at;
    if (h->_arena_cap - h->_arena_len < len)
        return NULL;
    char *dst = h->_arena + h->_arena_len;
    memcpy(dst, at, len);
    h->_arena_len += len;
    return dst;
}

static int on_message_begin(llhttp_t *p)
{
    (void)p;
    return 0;
}

/* A piece of a span (*start, *slen) that may arrive in several pieces; the
 * first piece of an empty span sets where it starts. */
static int extend(sy_h1_t *h, const char *at, size_t len, const char **start, size_t *slen)
{
    const char *s = keep(h, at, len);
    if (s == NULL)
        return sy_h1_fail(h, 431, "request header fields too large");
    if (*slen == 0)
        *start = s;
    assert(s == *start + *slen);
    *slen += len;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    sy_h1_t *h = H1(p);
    if (h->msg.target_len + len > h->_max_uri)
        return sy_h1_fail(h, 414, "request target too long");
    return extend(h, at, len, &h->msg.target, &h->msg.target_len);
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    sy_h1_t *h = H1(p);
    return extend(h, at, len, &h->msg.reason, &h->msg.reason_len);
}

/* Character classes, one table lookup per byte on the head's path, built by
 * the compiler. CC_TCHAR: RFC 9110 5.6.2 token characters. CC_URI: RFC 3986
 * unreserved / sub-delims (percent-encoding is checked apart). */
enum { CC_TCHAR = 1, CC_URI = 2, CC_HOST = 4 };
#define CC_ALNUM(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || ((c) >= '0' && (c) <= '9'))
#define CC_IS_T(c)                                                                                                  \
    ((c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' || (c) == '*' || (c) == '+' || \
     (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' || (c) == '`' || (c) == '|' || (c) == '~')
#define CC_IS_U(c)                                                                                                  \
    ((c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' || (c) == '!' || (c) == '$' || (c) == '&' || (c) == '\'' || \
     (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' || (c) == ',' || (c) == ';' || (c) == '=')
/* CC_HOST: what the usual authority is made of (RFC 3986 unreserved). */
#define CC_IS_H(c) (CC_ALNUM(c) || (c) == '-' || (c) == '.' || (c) == '_' || (c) == '~')
#define CC(c)                                                                                                   \
    ((CC_ALNUM(c) || CC_IS_T(c) ? CC_TCHAR : 0) | (CC_ALNUM(c) || CC_IS_U(c) ? CC_URI : 0) | \
     (CC_IS_H(c) ? CC_HOST : 0))
#define CC4(n) CC(n), CC((n) + 1), CC((n) + 2), CC((n) + 3)
#define CC16(n) CC4(n), CC4((n) + 4), CC4((n) + 8), CC4((n) + 12)
#define CC64(n) CC16(n), CC16((n) + 16), CC16((n) + 32), CC16((n) + 48)
static const unsigned char cc_table[256] = {CC64(0), CC64(64), CC64(128), CC64(192)};

static bool is_tchar(unsigned char c)
{
    return (cc_table[c] & CC_TCHAR) != 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    sy_h1_t *h = H1(p);
    unsigned char all = CC_TCHAR;
    for (size_t i = 0; i < len; i++)
        all &= cc_table[(unsigned char)at[i]];
    if (!(all & CC_TCHAR))
        return sy_h1_fail(h, 400, "invalid character in a header name");
    if (h->_last != 1) {
        if (h->msg.nheaders >= h->_max_headers)
            return sy_h1_fail(h, 431, "too many header fields");
        h->msg.headers[h->msg.nheaders++] = (sy_header_t){.name = "", .value = ""};
        h->_last = 1;
    }
    sy_header_t *hd = &h->msg.headers[h->msg.nheaders - 1];
    return extend(h, at, len, &hd->name, &hd->name_len);
}

/* A control character other than HTAB, or DEL (RFC 9110 5.5). Eight bytes at a
 * time (SWAR): each test below is exact per byte, as no sum carries into the
 * next byte; the last word of a value of 8 bytes or more overlaps the one before
 * it, so only a value shorter than a word goes byte by byte. */
static uint64_t word_ctl(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, high = ones * 0x80, low7 = ones * 0x7f;
    uint64_t below20 = ~(((x & low7) + ones * 0x60) | x) & high; /* byte < 0x20 */
    uint64_t t = x ^ (ones * 0x09);
    uint64_t tab = ~(((t & low7) + low7) | t) & high; /* byte == 0x09 */
    uint64_t d = x ^ (ones * 0x7f);
    uint64_t del = ~(((d & low7) + low7) | d) & high; /* byte == 0x7f */
    return (below20 & ~tab) | del;
}

static bool value_has_ctl(const char *at, size_t len)
{
    if (len < 8) {
        unsigned bad = 0;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)at[i];
            bad |= (unsigned)((c < 0x20) & (c != '\t')) | (unsigned)(c == 0x7f);
        }
        return bad != 0;
    }
    uint64_t bad = 0, x;
    size_t i = 0;
    for (; i + 8 < len; i += 8) {
        memcpy(&x, at + i, 8);
        bad |= word_ctl(x);
    }
    memcpy(&x, at + len - 8, 8);
    return (bad | word_ctl(x)) != 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    sy_h1_t *h = H1(p);
    if (value_has_ctl(at, len))
        return sy_h1_fail(h, 400, "control character in a header value");
    sy_header_t *hd = &h->msg.headers[h->msg.nheaders - 1];
    h->_last = 2;
    return extend(h, at, len, &hd->value, &hd->value_len);
}

static int on_header_value_complete(llhttp_t *p)
{
    sy_h1_t *h = H1(p);
    if (h->msg.nheaders == 0)
        return 0;
    sy_header_t *hd = &h->msg.headers[h->msg.nheaders - 1];
    while (hd->value_len > 0 && (hd->value[hd->value_len - 1] == ' ' || hd->value[hd->value_len - 1] == '\t'))
        hd->value_len--;
    if (h->_last == 1) { /* empty value: no value callback came */
        h->_last = 2;
    }
    return 0;
}

/* name: a lower-case literal. */
static bool name_is(const sy_header_t *hd, const char *name)
{
    return hd->name_len == strlen(name) && sy_h1_lower_eq(hd->name, name, hd->name_len);
}

/* RFC 9110 2.5: a recipient answers 505 to a major version it does not speak
 * (HTTP/2 and HTTP/3 have their own framing; in an h1 request line they are an
 * error). A higher minor version of HTTP/1 is read as the highest we speak. */
static int on_version_complete(llhttp_t *p)
{
    sy_h1_t *h = H1(p);
    if (h->_is_request && p->http_major != 1)
        return sy_h1_fail(h, 505, "HTTP version not supported (this listener speaks HTTP/1.1)");
    return 0;
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 unreserved / sub-delims (percent-encoding is checked apart). */
static bool is_unreserved_or_sub(unsigned char c)
{
    return (cc_table[c] & CC_URI) != 0;
}

/* Byte by byte, what an origin-form target (and the path and query of an
 * absolute-form one) may hold: pchar, '/', '?' (RFC 9112 3.2.1, RFC 3986 3.3,
 * 3.4). Raw controls, spaces, DEL, '#', and every byte above 0x7f (UTF-8, overlong
 * forms included) are refused; percent-encoded, they pass. */
static const char *origin_check(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || !is_hex((unsigned char)s[i + 1]) || !is_hex((unsigned char)s[i + 2]))
                return "malformed percent-encoding in the request target";
            i += 2;
        } else if (!is_unreserved_or_sub(c) && c != ':' && c != '@' && c != '/' && c != '?') {
            return "invalid character in the request target";
        }
    }
    return NULL;
}

enum {
    AUTH_OK,
    AUTH_EMPTY,
    AUTH_USERINFO,
    AUTH_PATH,
    AUTH_LIST,
    AUTH_CHAR,
    AUTH_IP_LITERAL,
    AUTH_PORT,
};

/* Same order as the AUTH_ codes: one static reason per check, per place. */
static const char *const auth_reason[] = {
    NULL, "empty", "userinfo is not allowed", "a path is not allowed", "a list is not allowed",
    "invalid character", "invalid IP literal", "invalid port",
};
static const char *const host_reason[] = {
    NULL,
    "invalid Host: empty",
    "invalid Host: userinfo is not allowed",
    "invalid Host: a path is not allowed",
    "invalid Host: a list is not allowed",
    "invalid Host: invalid character",
    "invalid Host: invalid IP literal",
    "invalid Host: invalid port",
};
static const char *const target_auth_reason[] = {
    NULL,
    "invalid request target: empty authority",
    "invalid request target: userinfo is not allowed",
    "invalid request target: a path is not allowed in the authority",
    "invalid request target: a list is not allowed in the authority",
    "invalid request target: invalid character in the authority",
    "invalid request target: invalid IP literal",
    "invalid request target: invalid port",
};

/* RFC 3986 3.2.2, 3.2.3 and RFC 9110 7.2: `uri-host [ ":" port ]`. A comma is a
 * legal reg-name character in RFC 3986, but in a Host value it can only be a list
 * (two Host lines folded into one by an intermediary): refused. */
static int check_authority_full(const char *s, size_t n);

/* The usual authority, a name of unreserved characters and perhaps a port,
 * passes in one pass; anything else gets the full check (and its reason). */
static int check_authority(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (cc_table[(unsigned char)s[i]] & CC_HOST))
        i++;
    if (i > 0 && i == n)
        return AUTH_OK;
    if (i > 0 && s[i] == ':' && n - i - 1 <= 5) {
        unsigned port = 0;
        size_t j = i + 1;
        for (; j < n && s[j] >= '0' && s[j] <= '9'; j++)
            port = port * 10 + (unsigned)(s[j] - '0');
        if (j == n && port <= 65535)
            return AUTH_OK;
    }
    return check_authority_full(s, n);
}

static int check_authority_full(const char *s, size_t n)
{
    if (n == 0)
        return AUTH_EMPTY;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '@')
            return AUTH_USERINFO;
        if (s[i] == ',')
            return AUTH_LIST;
        if (s[i] == '/' || s[i] == '?' || s[i] == '#' || s[i] == '\\')
            return AUTH_PATH;
    }
    size_t i = 0;
    if (s[0] == '[') {
        const char *e = memchr(s, ']', n);
        if (e == NULL || e - s < 3)
            return AUTH_IP_LITERAL;
        for (i = 1; s + i < e; i++)
            if (!is_hex((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
                return AUTH_IP_LITERAL;
        i++;
    } else {
        for (; i < n && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (i + 2 >= n || !is_hex((unsigned char)s[i + 1]) || !is_hex((unsigned char)s[i + 2]))
                    return AUTH_CHAR;
                i += 2;
            } else if (!is_unreserved_or_sub(c)) {
                return AUTH_CHAR;
            }
        }
        if (i == 0)
            return AUTH_EMPTY;
    }
    if (i == n)
        return AUTH_OK;
    if (s[i] != ':')
        return AUTH_CHAR;
    /* port = *DIGIT: an empty one is allowed by the grammar */
    if (n - i - 1 > 5)
        return AUTH_PORT;
    unsigned port = 0;
    for (i++; i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            return AUTH_PORT;
        port = port * 10 + (unsigned)(s[i] - '0');
    }
    return port > 65535 ? AUTH_PORT : AUTH_OK;
}

const char *sy_h1_check_authority(const char *s, size_t len)
{
    return auth_reason[check_authority(s, len)];
}

/* RFC 9112 3.2: sorts the target into its form and checks it. Sets form, origin
 * and (absolute-form, authority-form) host. Returns 0 or fails the message. */
static int classify_target(sy_h1_t *h, sy_h1_msg_t *m)
{
    const char *t = m->target;
    size_t n = m->target_len;
    if (strcmp(m->method, "CONNECT") == 0) {
        m->form = SY_H1_FORM_AUTHORITY;
        m->origin = t + n; /* no path: an empty one, never NULL */
        int rc = check_authority(t, n);
        if (rc != AUTH_OK)
            return sy_h1_fail(h, 400, target_auth_reason[rc]);
        m->host = t;
        m->host_len = n;
        m->host_from_target = true;
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (strcmp(m->method, "OPTIONS") != 0)
            return sy_h1_fail(h, 400, "asterisk-form target (*) is only allowed with OPTIONS");
        m->form = SY_H1_FORM_ASTERISK;
        m->origin = t;
        m->origin_len = n;
        return 0;
    }
    if (t[0] == '/') {
        m->form = SY_H1_FORM_ORIGIN;
        m->origin = t;
        m->origin_len = n;
        const char *bad = origin_check(t, n);
        return bad != NULL ? sy_h1_fail(h, 400, bad) : 0;
    }
    /* absolute-form: scheme "://" authority [ path-abempty ] [ "?" query ] */
    size_t i = 0;
    while (i < n && (is_alpha((unsigned char)t[i]) || is_digit((unsigned char)t[i]) || t[i] == '+' || t[i] == '-' ||
                     t[i] == '.'))
        i++;
    if (i == 0 || !is_alpha((unsigned char)t[0]) || n - i < 3 || memcmp(t + i, "://", 3) != 0)
        return sy_h1_fail(h, 400, "invalid request target");
    if (!((i == 4 && strncasecmp(t, "http", 4) == 0) || (i == 5 && strncasecmp(t, "https", 5) == 0)))
        return sy_h1_fail(h, 400, "invalid request target: the scheme must be http or https");
    size_t a = i + 3, e = a;
    while (e < n && t[e] != '/' && t[e] != '?' && t[e] != '#')
        e++;
    int rc = check_authority(t + a, e - a);
    if (rc != AUTH_OK)
        return sy_h1_fail(h, 400, target_auth_reason[rc]);
    const char *bad = origin_check(t + e, n - e);
    if (bad != NULL)
        return sy_h1_fail(h, 400, bad);
    m->form = SY_H1_FORM_ABSOLUTE;
    m->origin = t + e;
    m->origin_len = n - e;
    m->host = t + a;
    m->host_len = e - a;
    m->host_from_target = true;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sy_h1_t *h = H1(p);
    sy_h1_msg_t *m = &h->msg;
    m->major = p->http_major;
    m->minor = p->http_minor;
    if (h->_is_request) {
        m->method = llhttp_method_name((llhttp_method_t)p->method);
        if (m->target == NULL)
            return sy_h1_fail(h, 400, "missing request target");
        if (m->major != 1)
            return sy_h1_fail(h, 505, "HTTP version not supported (this listener speaks HTTP/1.1)");
        if (m->minor > 1)
            m->minor = 1; /* RFC 9110 2.5: HTTP/1.2 and up are read as HTTP/1.1 */
        if (classify_target(h, m) != 0)
            return -1;
    } else {
        m->status = p->status_code;
        if (m->reason == NULL)
            m->reason = "";
    }
    m->keep_alive = llhttp_should_keep_alive(p);
    m->chunked = (p->flags & F_CHUNKED) != 0;
    m->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
    m->content_length = m->has_length ? p->content_length : 0;
    m->upgrade = p->upgrade != 0;
    m->body_until_eof = !h->_is_request && llhttp_message_needs_eof(p);
    bool host_seen = false;
    for (size_t i = 0; i < m->nheaders; i++) {
        const sy_header_t *hd = &m->headers[i];
        if (name_is(hd, "expect")) {
            if (hd->value_len == 12 && strncasecmp(hd->value, "100-continue", 12) == 0)
                m->expect_continue = true;
        } else if (name_is(hd, "host") && h->_is_request) {
            if (host_seen)
                return sy_h1_fail(h, 400, "repeated Host header");
            host_seen = true;
            int rc = check_authority(hd->value, hd->value_len);
            if (rc != AUTH_OK)
                return sy_h1_fail(h, 400, host_reason[rc]);
            /* RFC 9112 3.2.2: an absolute-form target's authority wins over Host. */
            if (!m->host_from_target) {
                m->host = hd->value;
                m->host_len = hd->value_len;
            }
        } else if (name_is(hd, "transfer-encoding") && h->_is_request && !m->chunked) {
            return sy_h1_fail(h, 400, "unsupported transfer coding");
        }
    }
    if (h->_is_request && m->major == 1 && m->minor == 1 && !host_seen)
        return sy_h1_fail(h, 400, "missing Host header");
    h->_phase = SY_H1_PH_BODY;
    int rc = h->_cb->on_head(h->_ud, m);
    if (rc < 0) {
        if (h->err_status == 0)
            sy_h1_fail(h, 400, "refused");
        return -1;
    }
    if (rc == SY_H1_HEAD_TUNNEL) {
        h->_tunnel = true;
        return 0;
    }
    /* RFC 9110 15.2: a 1xx ends with its head, whatever Content-Length or
     * Transfer-Encoding it carries (llhttp 8.1 would read a body); what follows
     * is the next response's head, read (and scanned) as such. */
    bool interim = !h->_is_request && m->status >= 100 && m->status < 200 && m->status != 101;
    return rc == SY_H1_HEAD_NO_BODY || interim ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sy_h1_t *h = H1(p);
    if (h->_cb->on_body(h->_ud, at, len) < 0) {
        if (h->err_status == 0)
            sy_h1_fail(h, 400, "body refused");
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    sy_h1_t *h = H1(p);
    h->_phase = SY_H1_PH_DONE;
    int rc = h->_cb->on_done(h->_ud);
    if (rc < 0) {
        if (h->err_status == 0)
            sy_h1_fail(h, 400, "refused");
        return -1;
    }
    if (p->upgrade)
        return 0; /* llhttp stops with HPE_PAUSED_UPGRADE by itself */
    if (rc == SY_H1_DONE_CONTINUE) {
        msg_clear(h);
        return 0;
    }
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_version_complete = on_version_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void sy_h1_init(sy_h1_t *h, bool is_request, const sy_h1_callbacks_t *cb, void *ud, size_t max_head,
                size_t max_uri, size_t max_headers)
{
    memset(h, 0, sizeof(*h));
    h->_cb = cb;
    h->_ud = ud;
    h->_is_request = is_request;
    h->_max_head = max_head;
    h->_max_uri = max_uri;
    h->_max_headers = max_headers;
    llhttp_init(&h->_llh, is_request ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    h->_llh.data = h;
    if (is_request)
        h->_llh.lenient_flags |= LENIENT_VERSION; /* any digits: on_version_complete decides */
    msg_clear(h);
}

void sy_h1_reset(sy_h1_t *h)
{
    /* The parser itself is initialised by sy_h1_init before its next message:
     * doing it here too was a second llhttp_init per message. */
    h->err_status = 0;
    h->err_reason = NULL;
    h->msg.headers = NULL;
    h->msg.nheaders = 0;
    h->_arena = NULL;
    h->_arena_len = h->_arena_cap = 0;
    h->_any_bytes = false;
    h->_phase = SY_H1_PH_HEAD;
}

void sy_h1_next(sy_h1_t *h)
{
    if (llhttp_get_errno(&h->_llh) == HPE_PAUSED)
        llhttp_resume(&h->_llh);
    msg_clear(h);
}

/* Scans head bytes for what llhttp lets through or what we refuse anyway: bare CR
 * or LF, obs-fold. Returns how many bytes belong to the head (up to and including
 * the blank line), or -1 on error. Sets *end when the blank line was seen. A line
 * at a time: its first byte, then (memchr is vectorized) straight to its CR with
 * no LF before it, then the LF. Only a request line's method goes byte by byte,
 * to tell a malformed method from one we do not implement. */
static long scan_head(sy_h1_t *h, const char *data, size_t len, bool *end)
{
    *end = false;
    size_t i = 0;
    while (i < len) {
        switch (h->_scan) {
        case SCAN_LINE_START: {
            char c = data[i];
            if (c == '\r') {
                h->_scan = SCAN_END_CR;
                i++;
                break;
            }
            if (c == '\n')
                return sy_h1_fail(h, 400, "bare LF in the message head");
            if ((c == ' ' || c == '\t') && !h->_scan_first_line)
                return sy_h1_fail(h, 400, "obsolete line folding in a header");
            h->_scan = SCAN_TEXT; /* this byte is the line's first: read as text */
            break;
        }
        case SCAN_TEXT: {
            if (h->_in_method && h->_scan_first_line) {
                for (; i < len && data[i] != '\r' && data[i] != '\n'; i++) {
                    if (data[i] == ' ') {
                        h->_in_method = false;
                        i++;
                        break;
                    }
                    if (!is_tchar((unsigned char)data[i]))
                        h->_method_tchar = false;
                }
            }
            const char *cr = memchr(data + i, '\r', len - i);
            size_t stop = cr != NULL ? (size_t)(cr - data) : len;
            if (memchr(data + i, '\n', stop - i) != NULL)
                return sy_h1_fail(h, 400, "bare LF in the message head");
            if (cr == NULL)
                return (long)len;
            h->_scan = SCAN_CR;
            i = stop + 1;
            break;
        }
        case SCAN_CR:
            if (data[i] != '\n')
                return sy_h1_fail(h, 400, "bare CR in the message head");
            h->_scan = SCAN_LINE_START;
            h->_scan_first_line = false;
            i++;
            break;
        case SCAN_END_CR:
            if (data[i] != '\n')
                return sy_h1_fail(h, 400, "bare CR in the message head");
            i++;
            if (h->_scan_first_line) {
                /* An empty line before the request line: tolerated (RFC 9112 2.2). */
                h->_scan = SCAN_LINE_START;
                break;
            }
            h->_scan = SCAN_END;
            *end = true;
            return (long)i;
        default: return (long)len; /* SCAN_END: not called again for this head */
        }
    }
    return (long)len;
}

static int map_llhttp_error(sy_h1_t *h, llhttp_errno_t e)
{
    if (h->err_status != 0)
        return SY_H1_ERROR;
    switch (e) {
    case HPE_INVALID_CHUNK_SIZE: return sy_h1_fail(h, 400, "invalid chunk size"), SY_H1_ERROR;
    case HPE_UNEXPECTED_CONTENT_LENGTH: /* duplicate, or alongside Transfer-Encoding */
        return sy_h1_fail(h, 400, llhttp_get_error_reason(&h->_llh)), SY_H1_ERROR;
    case HPE_INVALID_CONTENT_LENGTH: return sy_h1_fail(h, 400, "invalid Content-Length"), SY_H1_ERROR;
    case HPE_INVALID_HEADER_TOKEN: return sy_h1_fail(h, 400, "invalid header field"), SY_H1_ERROR;
    case HPE_INVALID_METHOD:
        /* A well-formed token we do not know is a method not implemented (RFC
         * 9110 9.1), however long; anything else is a malformed request line. */
        if (h->_is_request && h->_method_tchar)
            return sy_h1_fail(h, 501, "method not implemented"), SY_H1_ERROR;
        return sy_h1_fail(h, 400, "invalid method"), SY_H1_ERROR;
    case HPE_INVALID_URL: return sy_h1_fail(h, 400, "invalid request target"), SY_H1_ERROR;
    case HPE_INVALID_VERSION: return sy_h1_fail(h, 400, "invalid HTTP version"), SY_H1_ERROR;
    case HPE_INVALID_TRANSFER_ENCODING:
        return sy_h1_fail(h, 400, "invalid Transfer-Encoding"), SY_H1_ERROR;
    case HPE_CR_EXPECTED:
    case HPE_LF_EXPECTED: return sy_h1_fail(h, 400, "malformed line ending"), SY_H1_ERROR;
    default: break;
    }
    /* llhttp's reasons are static strings. */
    return sy_h1_fail(h, 400, llhttp_get_error_reason(&h->_llh) ? llhttp_get_error_reason(&h->_llh)
                                                                 : "malformed message"),
           SY_H1_ERROR;
}

int sy_h1_execute(sy_h1_t *h, const char *data, size_t len, size_t *consumed)
{
    assert(h->_arena != NULL);
    size_t off = 0;
    *consumed = 0;
    if (h->err_status != 0)
        return SY_H1_ERROR;
    while (off < len) {
        size_t n = len - off;
        const char *src = data + off;
        if (h->_phase == SY_H1_PH_HEAD) {
            bool end;
            h->_any_bytes = true;
            long r = scan_head(h, data + off, n, &end);
            if (r < 0)
                return SY_H1_ERROR;
            n = (size_t)r;
            /* llhttp reads the head from its copy in the arena (one copy of the
             * piece, however many spans it holds; see keep()). The arena holds
             * max_head bytes and more, and only this head's bytes are in it. */
            size_t allowed = h->_max_head - h->_head_bytes;
            size_t take = n > allowed ? allowed : n;
            if (h->_arena_cap - h->_arena_len < take)
                return sy_h1_fail(h, 431, "request header fields too large"), SY_H1_ERROR;
            char *copy = h->_arena + h->_arena_len;
            memcpy(copy, src, take);
            h->_arena_len += take;
            src = copy;
            /* Over the head limit: llhttp still reads the bytes within it first, so
             * that a bad method, target or version is answered as such and not as
             * 431 only because it came in one piece with what follows. */
            if (n > allowed) {
                llhttp_errno_t e = llhttp_execute(&h->_llh, src, allowed);
                if (e != HPE_OK && e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) {
                    *consumed = off;
                    return map_llhttp_error(h, e);
                }
                return sy_h1_fail(h, 431, "request header fields too large"), SY_H1_ERROR;
            }
            h->_head_bytes += n;
        }
        llhttp_errno_t e = llhttp_execute(&h->_llh, src, n);
        if (e == HPE_OK) {
            off += n;
            continue;
        }
        if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            off += (size_t)(llhttp_get_error_pos(&h->_llh) - src);
            *consumed = off;
            if (e == HPE_PAUSED)
                return SY_H1_PAUSED;
            if (h->_tunnel)
                return SY_H1_UPGRADE;
            /* An upgrade we do not take (h2c, ...): the message is an ordinary one. */
            llhttp_resume_after_upgrade(&h->_llh);
            return SY_H1_PAUSED;
        }
        *consumed = off;
        return map_llhttp_error(h, e);
    }
    *consumed = off;
    return SY_H1_OK;
}

int sy_h1_finish(sy_h1_t *h)
{
    if (h->_phase == SY_H1_PH_HEAD && !h->_any_bytes)
        return SY_H1_OK;
    if (h->_phase == SY_H1_PH_BODY && h->msg.body_until_eof) {
        llhttp_errno_t e = llhttp_finish(&h->_llh);
        if (e == HPE_OK || e == HPE_PAUSED)
            return SY_H1_PAUSED;
    }
    sy_h1_fail(h, 400, "connection closed mid-message");
    return SY_H1_ERROR;
}

const sy_header_t *sy_h1_find(const sy_h1_msg_t *m, const char *name)
{
    for (size_t i = 0; i < m->nheaders; i++)
        if (m->headers[i].name_len == strlen(name) && strncasecmp(m->headers[i].name, name, m->headers[i].name_len) == 0)
            return &m->headers[i];
    return NULL;
}

bool sy_h1_has_token(const char *value, size_t len, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(value + start, token, tl) == 0)
            return true;
    }
    return false;
}
