#include "proxy/headers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool name_eq(const sy_header_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

bool sy_headers_hop_by_hop(const sy_h1_msg_t *m, const sy_header_t *h)
{
    static const char *const fixed[] = {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-authorization", "proxy-authenticate", "http2-settings",
    };
    for (size_t i = 0; i < SY_ARRAY_LEN(fixed); i++)
        if (name_eq(h, fixed[i]))
            return true;
    char token[64];
    if (h->name_len >= sizeof(token))
        return false;
    memcpy(token, h->name, h->name_len);
    token[h->name_len] = '\0';
    for (size_t i = 0; i < m->nheaders; i++) {
        const sy_header_t *c = &m->headers[i];
        if (name_eq(c, "connection") && sy_h1_has_token(c->value, c->value_len, token))
            return true;
    }
    return false;
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
    int rc = sy_buf_appendf(out, "%s %.*s HTTP/1.1\r\n", m->method, (int)m->target_len, m->target);
    const sy_header_t *xff_last = NULL;
    const sy_header_t *host = NULL;
    bool have_id = false;
    for (size_t i = 0; rc == 0 && i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (sy_headers_hop_by_hop(m, h) || name_eq(h, "x-forwarded-proto") ||
            name_eq(h, "x-forwarded-host") || name_eq(h, "forwarded"))
            continue;
        if (f->strip_header != NULL && name_eq(h, f->strip_header))
            continue;
        if (name_eq(h, "x-forwarded-for")) {
            xff_last = h;
            continue;
        }
        if (name_eq(h, "host"))
            host = h;
        if (name_eq(h, "x-request-id")) {
            if (have_id || !valid_request_id(h))
                continue;
            have_id = true;
        }
        rc = put_header(out, h);
    }
    /* X-Forwarded-For: every earlier value, in order, then the client. */
    if (rc == 0) {
        rc = sy_buf_append(out, "X-Forwarded-For: ", 17);
        for (size_t i = 0; rc == 0 && xff_last != NULL && i < m->nheaders; i++) {
            const sy_header_t *h = &m->headers[i];
            if (name_eq(h, "x-forwarded-for") && h->value_len > 0)
                rc = sy_buf_appendf(out, "%.*s, ", (int)h->value_len, h->value);
        }
        if (rc == 0)
            rc = sy_buf_appendf(out, "%s\r\n", f->client_ip);
    }
    if (rc == 0)
        rc = sy_buf_appendf(out, "X-Forwarded-Proto: %s\r\n", f->proto);
    if (rc == 0 && host != NULL)
        rc = sy_buf_appendf(out, "X-Forwarded-Host: %.*s\r\n", (int)host->value_len, host->value);
    if (rc == 0 && !have_id)
        rc = sy_buf_appendf(out, "X-Request-Id: %s\r\n", f->request_id);
    if (rc == 0 && m->chunked)
        rc = sy_buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
    if (rc == 0 && f->websocket)
        rc = sy_buf_append(out, "Connection: upgrade\r\nUpgrade: websocket\r\n", 41);
    if (rc == 0)
        rc = sy_buf_append(out, "\r\n", 2);
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
    int rc = sy_buf_appendf(out, "HTTP/1.1 %d %.*s\r\n", m->status, (int)m->reason_len, m->reason);
    for (size_t i = 0; rc == 0 && i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (sy_headers_hop_by_hop(m, h) || name_eq(h, "x-switchyard-variant"))
            continue;
        /* A body we re-frame loses its Content-Length; HEAD and 304 keep it. */
        if (name_eq(h, "content-length") && (f->framing == SY_FRAME_CHUNKED || f->framing == SY_FRAME_CLOSE))
            continue;
        rc = put_header(out, h);
    }
    if (rc == 0 && f->variant != NULL)
        rc = sy_buf_appendf(out, "X-Switchyard-Variant: %s\r\n", f->variant);
    if (rc == 0 && f->framing == SY_FRAME_CHUNKED)
        rc = sy_buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
    if (rc == 0 && f->tunnel)
        rc = sy_buf_append(out, "Connection: upgrade\r\nUpgrade: websocket\r\n", 41);
    else if (rc == 0 && (f->close || f->framing == SY_FRAME_CLOSE))
        rc = sy_buf_append(out, "Connection: close\r\n", 19);
    if (rc == 0)
        rc = sy_buf_append(out, "\r\n", 2);
    if (rc != 0)
        out->len = start_len;
    return rc;
}

const char *sy_headers_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    }
    return "Error";
}

int sy_headers_local_response(sy_buf_t *out, int status, const char *reason, bool close, bool head_only)
{
    char body[512];
    const char *text = sy_headers_status_text(status);
    /* Reasons are our own static strings: no quote or backslash to escape. */
    int blen = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"reason\":\"%s\"}\n", text, reason ? reason : text);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = (int)sizeof(body) - 1;
    return sy_buf_appendf(out,
                          "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          "Cache-Control: no-store\r\n%s\r\n%.*s",
                          status, text, blen, close ? "Connection: close\r\n" : "", head_only ? 0 : blen, body);
}
