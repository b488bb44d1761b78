#include "proxy/headers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* name: a lower-case literal. */
static bool name_eq(const sy_header_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && sy_h1_lower_eq(h->name, name, n);
}

/* Fixed hop-by-hop names, by length for a quick first test. */
static bool fixed_hop(const sy_header_t *h)
{
    switch (h->name_len) {
    case 2: return name_eq(h, "te");
    case 7: return name_eq(h, "upgrade") || name_eq(h, "trailer");
    case 10: return name_eq(h, "connection") || name_eq(h, "keep-alive");
    case 14: return name_eq(h, "http2-settings");
    case 16: return name_eq(h, "proxy-connection");
    case 17: return name_eq(h, "transfer-encoding");
    case 18: return name_eq(h, "proxy-authenticate");
    case 19: return name_eq(h, "proxy-authorization");
    default: return false;
    }
}

/* True when one of the Connection headers (found once per message by the
 * caller) names h. */
static bool named_by_connection(const sy_h1_msg_t *m, const sy_header_t *first_conn, const sy_header_t *h)
{
    if (first_conn == NULL || h->name_len >= 64)
        return false;
    char token[64];
    memcpy(token, h->name, h->name_len);
    token[h->name_len] = '\0';
    for (const sy_header_t *c = first_conn; c < m->headers + m->nheaders; c++)
        if (name_eq(c, "connection") && sy_h1_has_token(c->value, c->value_len, token))
            return true;
    return false;
}

static const sy_header_t *first_connection(const sy_h1_msg_t *m)
{
    for (size_t i = 0; i < m->nheaders; i++)
        if (name_eq(&m->headers[i], "connection"))
            return &m->headers[i];
    return NULL;
}

bool sy_headers_hop_by_hop(const sy_h1_msg_t *m, const sy_header_t *h)
{
    return fixed_hop(h) || named_by_connection(m, first_connection(m), h);
}

/* Bit n set: some Connection header of m lists a token of n bytes (n < 64; a
 * longer name is never looked up). Most messages list keep-alive or close
 * only, so most names are ruled out by their length without a token scan. */
static uint64_t connection_token_lengths(const sy_h1_msg_t *m, const sy_header_t *first_conn)
{
    uint64_t lens = 0;
    for (const sy_header_t *c = first_conn; c != NULL && c < m->headers + m->nheaders; c++) {
        if (!name_eq(c, "connection"))
            continue;
        size_t i = 0, len = c->value_len;
        const char *v = c->value;
        while (i < len) {
            while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
                i++;
            size_t start = i;
            while (i < len && v[i] != ',')
                i++;
            size_t end = i;
            while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
                end--;
            if (end - start < 64)
                lens |= (uint64_t)1 << (end - start);
        }
    }
    return lens;
}

static bool hop(const sy_h1_msg_t *m, const sy_header_t *conn, uint64_t conn_lens, const sy_header_t *h)
{
    if (fixed_hop(h))
        return true;
    if (h->name_len >= 64 || !((conn_lens >> h->name_len) & 1))
        return false;
    return named_by_connection(m, conn, h);
}

/* Appends strings without printf: the head is built on every request. The
 * rule of sy_buf_append (all or nothing), inline: most pieces are literals,
 * whose copies the compiler turns into a few moves. */
static inline int put(sy_buf_t *out, const char *s, size_t n)
{
    if (sy_buf_room(out) < n) {
        if ((size_t)out->cap - out->len < n)
            return SY_ELIMIT;
        sy_buf_compact(out);
    }
    memcpy(sy_buf_tail(out), s, n);
    out->len += (uint32_t)n;
    return 0;
}
#define PUT_LIT(out, lit) put((out), (lit), sizeof(lit) - 1)

static int put_uint(sy_buf_t *out, unsigned v)
{
    char tmp[12];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return put(out, tmp + i, sizeof(tmp) - i);
}

static int put_header(sy_buf_t *out, const sy_header_t *h)
{
    size_t need = h->name_len + h->value_len + 4;
    if ((size_t)out->cap - out->len < need)
        return SY_ELIMIT;
    if (sy_buf_room(out) < need)
        sy_buf_compact(out);
    char *p = sy_buf_tail(out);
    memcpy(p, h->name, h->name_len);
    p += h->name_len;
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, h->value, h->value_len);
    p += h->value_len;
    *p++ = '\r';
    *p++ = '\n';
    out->len += (uint32_t)need;
    return 0;
}

sy_framing_t sy_headers_request_framing(const sy_h1_msg_t *m)
{
    if (m->chunked)
        return SY_FRAME_CHUNKED;
    if (m->has_length && m->content_length > 0)
        return SY_FRAME_LENGTH;
    return m->has_length ? SY_FRAME_LENGTH : SY_FRAME_NONE;
}

static bool valid_request_id(const sy_header_t *h)
{
    if (h->value_len == 0 || h->value_len > 128)
        return false;
    for (size_t i = 0; i < h->value_len; i++)
        if ((unsigned char)h->value[i] <= 0x20 || (unsigned char)h->value[i] >= 0x7f)
            return false;
    return true;
}

int sy_headers_request(sy_buf_t *out, const sy_h1_msg_t *m, const sy_fwd_request_t *f)
{
    uint32_t start_len = out->len;
    const sy_header_t *conn = first_connection(m);
    uint64_t conn_lens = connection_token_lengths(m, conn);
    bool absolute = m->form == SY_H1_FORM_ABSOLUTE;
    int rc = put(out, m->method, strlen(m->method));
    rc = rc ? rc : PUT_LIT(out, " ");
    if (absolute) {
        /* RFC 9112 3.2.1: an empty path is sent as "/". */
        if (m->origin_len == 0 || m->origin[0] == '?')
            rc = rc ? rc : PUT_LIT(out, "/");
        rc = rc ? rc : put(out, m->origin, m->origin_len);
    } else {
        rc = rc ? rc : put(out, m->target, m->target_len);
    }
    rc = rc ? rc : PUT_LIT(out, " HTTP/1.1\r\n");
    if (absolute) {
        rc = rc ? rc : PUT_LIT(out, "Host: ");
        rc = rc ? rc : put(out, m->host, m->host_len);
        rc = rc ? rc : PUT_LIT(out, "\r\n");
    }
    const sy_header_t *xff_first = NULL;
    const sy_header_t *host = NULL;
    bool have_id = false;
    for (size_t i = 0; rc == 0 && i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (hop(m, conn, conn_lens, h) || name_eq(h, "x-forwarded-proto") || name_eq(h, "x-forwarded-host") ||
            name_eq(h, "forwarded"))
            continue;
        if (f->strip_header != NULL && h->name_len == strlen(f->strip_header) &&
            strncasecmp(h->name, f->strip_header, h->name_len) == 0) /* as configured: any case */
            continue;
        if (name_eq(h, "x-forwarded-for")) {
            if (xff_first == NULL)
                xff_first = h;
            continue;
        }
        if (name_eq(h, "host")) {
            if (absolute)
                continue; /* replaced by the target's authority */
            host = h;
        }
        if (name_eq(h, "x-request-id")) {
            if (have_id || !valid_request_id(h))
                continue;
            have_id = true;
        }
        rc = put_header(out, h);
    }
    /* X-Forwarded-For: every earlier value, in order, then the client. */
    rc = rc ? rc : PUT_LIT(out, "X-Forwarded-For: ");
    for (const sy_header_t *h = xff_first; rc == 0 && h != NULL && h < m->headers + m->nheaders; h++) {
        if (name_eq(h, "x-forwarded-for") && h->value_len > 0) {
            rc = put(out, h->value, h->value_len);
            rc = rc ? rc : PUT_LIT(out, ", ");
        }
    }
    rc = rc ? rc : put(out, f->client_ip, strlen(f->client_ip));
    rc = rc ? rc : PUT_LIT(out, "\r\nX-Forwarded-Proto: ");
    rc = rc ? rc : put(out, f->proto, strlen(f->proto));
    rc = rc ? rc : PUT_LIT(out, "\r\n");
    if (host != NULL || absolute) {
        rc = rc ? rc : PUT_LIT(out, "X-Forwarded-Host: ");
        rc = rc ? rc : absolute ? put(out, m->host, m->host_len) : put(out, host->value, host->value_len);
        rc = rc ? rc : PUT_LIT(out, "\r\n");
    }
    if (!have_id) {
        rc = rc ? rc : PUT_LIT(out, "X-Request-Id: ");
        rc = rc ? rc : put(out, f->request_id, strlen(f->request_id));
        rc = rc ? rc : PUT_LIT(out, "\r\n");
    }
    if (m->chunked)
        rc = rc ? rc : PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
    if (f->websocket)
        rc = rc ? rc : PUT_LIT(out, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    rc = rc ? rc : PUT_LIT(out, "\r\n");
    if (rc != 0)
        out->len = start_len;
    return rc;
}

sy_framing_t sy_headers_response_framing(const sy_h1_msg_t *r, bool head_request, bool client_http11)
{
    if (head_request || r->status == 204 || r->status == 304 || (r->status >= 100 && r->status < 200))
        return SY_FRAME_NONE;
    if (r->has_length && !r->chunked)
        return SY_FRAME_LENGTH;
    return client_http11 ? SY_FRAME_CHUNKED : SY_FRAME_CLOSE;
}

int sy_headers_response(sy_buf_t *out, const sy_h1_msg_t *m, const sy_fwd_response_t *f)
{
    uint32_t start_len = out->len;
    const sy_header_t *conn = first_connection(m);
    uint64_t conn_lens = connection_token_lengths(m, conn);
    int rc = PUT_LIT(out, "HTTP/1.1 ");
    rc = rc ? rc : put_uint(out, (unsigned)m->status);
    rc = rc ? rc : PUT_LIT(out, " ");
    rc = rc ? rc : put(out, m->reason, m->reason_len);
    rc = rc ? rc : PUT_LIT(out, "\r\n");
    bool have_date = false;
    for (size_t i = 0; rc == 0 && i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (hop(m, conn, conn_lens, h) || name_eq(h, "x-switchyard-variant"))
            continue;
        if (!have_date && h->name_len == 4 && name_eq(h, "date"))
            have_date = true;
        /* A body we re-frame loses its Content-Length; HEAD and 304 keep it. */
        if ((f->framing == SY_FRAME_CHUNKED || f->framing == SY_FRAME_CLOSE) && name_eq(h, "content-length"))
            continue;
        rc = put_header(out, h);
    }
    /* RFC 9110 6.6.1: a response from an origin with a clock carries Date; the
     * gateway has one, so it supplies what the backend left out. */
    if (!have_date && f->date != NULL) {
        rc = rc ? rc : PUT_LIT(out, "Date: ");
        rc = rc ? rc : put(out, f->date, strlen(f->date));
        rc = rc ? rc : PUT_LIT(out, "\r\n");
    }
    if (f->variant != NULL) {
        rc = rc ? rc : PUT_LIT(out, "X-Switchyard-Variant: ");
        rc = rc ? rc : put(out, f->variant, strlen(f->variant));
        rc = rc ? rc : PUT_LIT(out, "\r\n");
    }
    if (f->framing == SY_FRAME_CHUNKED)
        rc = rc ? rc : PUT_LIT(out, "Transfer-Encoding: chunked\r\n");
    if (f->tunnel)
        rc = rc ? rc : PUT_LIT(out, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    else if (f->close || f->framing == SY_FRAME_CLOSE)
        rc = rc ? rc : PUT_LIT(out, "Connection: close\r\n");
    rc = rc ? rc : PUT_LIT(out, "\r\n");
    if (rc != 0)
        out->len = start_len;
    return rc;
}

const char *sy_headers_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Unknown";
}

const char *sy_headers_error_kind(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 409: return "conflict";
    case 411: return "length_required";
    case 413: return "body_too_large";
    case 414: return "target_too_long";
    case 415: return "unsupported_media_type";
    case 417: return "expectation_failed";
    case 422: return "invalid_value";
    case 429: return "too_many_requests";
    case 431: return "head_too_large";
    case 500: return "internal_error";
    case 501: return "not_implemented";
    case 502: return "bad_gateway";
    case 503: return "unavailable";
    case 504: return "gateway_timeout";
    case 505: return "http_version_not_supported";
    }
    return status >= 500 ? "server_error" : "client_error";
}

void sy_headers_format_date(char out[SY_HTTP_DATE_LEN + 1], time_t t)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    unsigned year = (unsigned)(tm.tm_year + 1900) % 10000;
    char *p = out;
    memcpy(p, days[(unsigned)tm.tm_wday % 7], 3), p += 3;
    *p++ = ',', *p++ = ' ';
    *p++ = (char)('0' + tm.tm_mday / 10 % 10), *p++ = (char)('0' + tm.tm_mday % 10), *p++ = ' ';
    memcpy(p, months[(unsigned)tm.tm_mon % 12], 3), p += 3;
    *p++ = ' ';
    *p++ = (char)('0' + year / 1000), *p++ = (char)('0' + year / 100 % 10);
    *p++ = (char)('0' + year / 10 % 10), *p++ = (char)('0' + year % 10), *p++ = ' ';
    *p++ = (char)('0' + tm.tm_hour / 10 % 10), *p++ = (char)('0' + tm.tm_hour % 10), *p++ = ':';
    *p++ = (char)('0' + tm.tm_min / 10 % 10), *p++ = (char)('0' + tm.tm_min % 10), *p++ = ':';
    *p++ = (char)('0' + tm.tm_sec / 10 % 10), *p++ = (char)('0' + tm.tm_sec % 10);
    memcpy(p, " GMT", 5); /* with the terminating NUL */
}

const char *sy_headers_date(time_t now)
{
    /* One per thread: workers never share it, and it changes once a second. */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[SY_HTTP_DATE_LEN + 1];
    if (now != cached_sec) {
        sy_headers_format_date(cached, now);
        cached_sec = now;
    }
    return cached;
}

int sy_headers_local_response(sy_buf_t *out, int status, const char *kind, const char *reason, const char *date,
                              bool close, bool head_only)
{
    char body[512];
    const char *text = sy_headers_status_text(status);
    if (kind == NULL)
        kind = sy_headers_error_kind(status);
    /* Kinds and reasons are our own static strings: no quote or backslash to escape. */
    int blen = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"reason\":\"%s\"}\n", kind, reason ? reason : text);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = (int)sizeof(body) - 1;
    return sy_buf_appendf(out,
                          "HTTP/1.1 %d %s\r\n%s%s%sContent-Type: application/json\r\nContent-Length: %d\r\n"
                          "Cache-Control: no-store\r\n%s\r\n%.*s",
                          status, text, date ? "Date: " : "", date ? date : "", date ? "\r\n" : "", blen,
                          close ? "Connection: close\r\n" : "", head_only ? 0 : blen, body);
}

int sy_headers_options_response(sy_buf_t *out, const char *date, bool close)
{
    return sy_buf_appendf(out,
                          "HTTP/1.1 200 OK\r\n%s%s%sAllow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\n"
                          "Content-Length: 0\r\n%s\r\n",
                          date ? "Date: " : "", date ? date : "", date ? "\r\n" : "",
                          close ? "Connection: close\r\n" : "");
}
