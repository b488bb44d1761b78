/* HTTP/2 to clients: nghttp2's memory-in/memory-out session inside the
 * connection layer. See h2.h for the shape; here:
 *
 * The connection (phase PH_H2) feeds c->in to nghttp2_session_mem_recv and
 * copies what nghttp2_session_mem_send gives into c->out while it has room (the
 * piece that did not fit waits, valid until the next mem_send), so a client
 * that does not read stops the responses, never memory.
 *
 * A stream: its request head is composed as HTTP/1.1 into its child
 * connection's input; DATA lands in the stream's rx (at most its window: the
 * session sends no window update by itself, nghttp2_session_consume is called
 * as bytes move on into the child) and moves into the child as it has room.
 * The child's response goes through a response parser into HEADERS
 * (nghttp2_submit_response) and tx, one pool block; the data provider takes
 * from tx and answers NGHTTP2_ERR_DEFERRED when it is empty, and
 * nghttp2_session_resume_data follows new bytes. While tx is full the child's
 * output stays blocked, so it stops reading its upstream.
 *
 * nghttp2 callbacks only record (bytes into rx, flags, a stream marked dirty);
 * children are pumped from the connection's step, after mem_recv, never
 * inside the session. A child's own events (its upstream, its timer) end with
 * sy_h2_child_pumped, which asks for one more round of the parent's step when
 * it is running, else for one step before the loop polls again (an
 * ev_prepare), so that what all streams produced in one iteration leaves in
 * one write.
 *
 * Defences: nghttp2 bounds CONTINUATION frames (max_continuations), queued
 * SETTINGS/PING acks (max_outbound_ack) and SETTINGS entries; streams cancelled
 * by the client before their response ended draw on a token bucket
 * (http2.max_resets, http2.resets_per_second) and, when it is empty, the
 * connection gets GOAWAY ENHANCE_YOUR_CALM and is read no more (CVE-2023-44487).
 * Header lists over http2.max_header_list_bytes are answered 431. */
#include "proxy/h2.h"

#include "proxy/conn_impl.h"
#include "proxy/log.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

void sy_h2_close_streams(sy_conn_t *c);

typedef struct sy_h2 sy_h2_t;

/* A growable byte string with a hard cap. */
typedef struct hstr {
    char *p;
    size_t len, cap;
} hstr_t;

typedef struct sy_h2_stream {
    sy_list_t node;
    sy_h2_t *h2;
    int32_t id;
    sy_conn_t *child;
    bool dirty;
    /* the request */
    hstr_t cookie;            /* cookies joined */
    sy_buf_t hb;              /* while the head arrives (a pool block): :path, :authority, then the
                               * regular header lines as HTTP/1.1 */
    struct span {
        uint32_t off, len;
    } path, authority, lines;
    char method[32];
    size_t list_bytes;        /* RFC 9113 6.5.2 size of the header list so far */
    bool too_big, bad, has_length, head_composed, req_end, req_end_sent, chunked, head_req, expect;
    bool websocket;           /* extended CONNECT (RFC 8441) with :protocol websocket */
    bool tunnel;              /* the backend switched protocols: bytes both ways */
    char *rx;                 /* DATA not yet in the child: at most the window */
    size_t rx_off, rx_len, rx_cap;
    size_t consume;           /* bytes to give back to the window after mem_recv */
    /* the response */
    sy_h1_t resp;
    sy_buf_t arena_blk;       /* the response parser's arena: a pool block when it fits ... */
    char *arena;              /* ... else malloc'd */
    sy_buf_t tx;
    bool head_submitted, resp_done, deferred, eof_sent, sent_100;
    bool need_rst, rst_sent;
    bool direct;              /* the final head came from the exchange itself (sy_h2_child_head):
                               * the child's out holds raw body bytes */
    uint32_t rst_code;
} sy_h2_stream_t;

struct sy_h2 {
    sy_conn_t *c;
    nghttp2_session *sess;
    sy_list_t streams;
    size_t nstreams;
    const uint8_t *pend;      /* from mem_send, not yet in c->out */
    size_t pend_len;
    size_t conn_consume;      /* DATA for streams that are gone: back to the connection window */
    bool busy, again, stop_reading, notice, goaway, shut;
    ev_prepare kick;          /* children had events: the connection's step runs once before the loop polls */
    ev_tstamp t_notice, t_tokens, t_stop;
    double tokens;
    size_t stream_window;
};

static sy_h2_stream_t *stream_of(sy_h2_t *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2->sess, id);
}

static int hstr_add(hstr_t *s, const void *p, size_t n, size_t limit)
{
    if (s->len + n > limit)
        return -1;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        char *q = realloc(s->p, cap);
        if (q == NULL)
            return -1;
        s->p = q;
        s->cap = cap;
    }
    memcpy(s->p + s->len, p, n);
    s->len += n;
    return 0;
}

/* Into the stream's head block: a span of it, or -1 (full: 431). */
static int hb_add(sy_h2_stream_t *s, struct span *sp, const void *p, size_t n)
{
    if (sy_conn_take(s->h2->c, &s->hb) != 0 || sy_buf_room(&s->hb) < n)
        return -1;
    if (sp->len == 0)
        sp->off = s->hb.len;
    else if (sp->off + sp->len != s->hb.len)
        return -1; /* not contiguous (a pseudo-header after a regular one: nghttp2 refuses those first) */
    if (sy_buf_append(&s->hb, p, n) != 0)
        return -1;
    sp->len += (uint32_t)n;
    return 0;
}

static const char *span_p(const sy_h2_stream_t *s, struct span sp)
{
    return sy_buf_data(&s->hb) + sp.off;
}

static void hstr_free(hstr_t *s)
{
    free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

static void mark(sy_h2_stream_t *s)
{
    s->dirty = true;
    s->h2->again = true;
}

/* Too many early cancels: GOAWAY ENHANCE_YOUR_CALM and no more reading. */
static void calm_down(sy_h2_t *h2, const char *why)
{
    if (h2->stop_reading)
        return;
    h2->stop_reading = true;
    h2->t_stop = sy_conn_now(h2->c);
    nghttp2_session_terminate_session(h2->sess, NGHTTP2_ENHANCE_YOUR_CALM);
    sy_warn("http2: %s from %s: GOAWAY ENHANCE_YOUR_CALM", why, h2->c->peer_ip);
}

/* --- streams ------------------------------------------------------------------ */

static void stream_detach_child(sy_h2_stream_t *s, const char *reason)
{
    sy_conn_t *child = s->child;
    if (child == NULL)
        return;
    s->child = NULL;
    child->h2s = NULL;
    if (child->phase != PH_CLOSED)
        sy_conn_close(child, reason);
}

static void stream_free(sy_h2_stream_t *s)
{
    sy_h2_t *h2 = s->h2;
    stream_detach_child(s, s->resp_done ? NULL : "stream reset by the client");
    sy_list_remove(&s->node);
    hstr_free(&s->cookie);
    sy_conn_give(h2->c, &s->hb);
    free(s->rx);
    if (s->arena_blk.base == NULL)
        free(s->arena);
    sy_conn_give(h2->c, &s->arena_blk);
    sy_conn_give(h2->c, &s->tx);
    if (h2->nstreams > 0 && --h2->nstreams == 0)
        h2->c->t_idle = sy_conn_now(h2->c);
    free(s);
}

/* --- the response: the child's HTTP/1.1 answer into HEADERS and DATA ------- */

static ssize_t data_read(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *source, void *ud)
{
    (void)sess;
    (void)id;
    (void)ud;
    sy_h2_stream_t *s = source->ptr;
    size_t n = s->tx.len < length ? s->tx.len : length;
    if (n > 0) {
        memcpy(buf, sy_buf_data(&s->tx), n);
        sy_buf_consume(&s->tx, n);
        if (s->child != NULL && s->child->out.len > 0)
            mark(s); /* room again: the child's output can move */
    }
    if (s->tx.len == 0) {
        if (s->resp_done) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return (ssize_t)n;
        }
        if (n == 0) {
            s->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static void resume(sy_h2_stream_t *s)
{
    if (s->deferred) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h2->sess, s->id);
    }
    s->h2->again = true;
}

/* Hop-by-hop (and sec-websocket-accept): never in an HTTP/2 response. By
 * length first: most names are none of these. */
static bool not_forwarded(const sy_header_t *h)
{
    const char *n = h->name;
    switch (h->name_len) {
    case 2:
        return strncasecmp(n, "te", 2) == 0;
    case 7:
        return strncasecmp(n, "upgrade", 7) == 0 || strncasecmp(n, "trailer", 7) == 0;
    case 10:
        return strncasecmp(n, "connection", 10) == 0 || strncasecmp(n, "keep-alive", 10) == 0;
    case 14:
        return strncasecmp(n, "http2-settings", 14) == 0;
    case 16:
        return strncasecmp(n, "proxy-connection", 16) == 0;
    case 17:
        return strncasecmp(n, "transfer-encoding", 17) == 0;
    case 18:
        return strncasecmp(n, "proxy-authenticate", 18) == 0;
    case 19:
        return strncasecmp(n, "proxy-authorization", 19) == 0;
    case 20:
        return strncasecmp(n, "sec-websocket-accept", 20) == 0;
    default:
        return false;
    }
}

static void status_digits(char out[4], unsigned status)
{
    status %= 1000u;
    out[0] = (char)('0' + status / 100);
    out[1] = (char)('0' + status / 10 % 10);
    out[2] = (char)('0' + status % 10);
    out[3] = '\0';
}

static int resp_on_head(void *ud, sy_h1_msg_t *m)
{
    sy_h2_stream_t *s = ud;
    nghttp2_session *sess = s->h2->sess;
    bool switched = m->status == 101 && s->websocket;
    if (m->status < 200 && !switched) {
        if (m->status == 100 && !s->sent_100) {
            s->sent_100 = true;
            const nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
            nghttp2_submit_headers(sess, NGHTTP2_FLAG_NONE, s->id, NULL, &nv, 1, NULL);
            s->h2->again = true;
        }
        return 0;
    }
    /* nghttp2 copies the list: a short one lives on the stack. */
    nghttp2_nv local[48];
    nghttp2_nv *nva = local;
    if (m->nheaders + 1 > SY_ARRAY_LEN(local) && (nva = malloc((m->nheaders + 1) * sizeof(*nva))) == NULL)
        return sy_h1_fail(&s->resp, 502, "out of memory");
    char status[4];
    status_digits(status, switched ? 200u : (unsigned)m->status);
    size_t n = 0;
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < m->nheaders; i++) {
        sy_header_t *h = &m->headers[i];
        if (not_forwarded(h) ||
            (m->status == 204 && h->name_len == 14 && strncasecmp(h->name, "content-length", 14) == 0))
            continue; /* (RFC 9110 8.6: none in a 204, where an HTTP/2 client takes it as a length error) */
        /* The names are in the stream's own arena: lower-cased in place. */
        char *name = (char *)h->name;
        for (size_t k = 0; k < h->name_len; k++)
            if (name[k] >= 'A' && name[k] <= 'Z')
                name[k] = (char)(name[k] + ('a' - 'A'));
        nva[n++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)h->value, h->name_len, h->value_len,
                                NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    int rv = nghttp2_submit_response(sess, s->id, nva, n, &prd);
    if (nva != local)
        free(nva);
    if (rv != 0)
        return sy_h1_fail(&s->resp, 502, "response refused by the HTTP/2 session");
    s->head_submitted = true;
    s->h2->again = true;
    if (switched) {
        s->tunnel = true; /* what follows the 101 is the tunnel's */
        return SY_H1_HEAD_TUNNEL;
    }
    return s->head_req || m->status == 204 || m->status == 304 ? SY_H1_HEAD_NO_BODY : 0;
}

static int resp_on_body(void *ud, const char *data, size_t len)
{
    sy_h2_stream_t *s = ud;
    if (sy_buf_append(&s->tx, data, len) != 0)
        return sy_h1_fail(&s->resp, 502, "internal buffer overflow");
    resume(s);
    return 0;
}

static int resp_on_done(void *ud)
{
    sy_h2_stream_t *s = ud;
    if (!s->head_submitted)
        return SY_H1_DONE_CONTINUE; /* after a 1xx */
    if (s->tunnel)
        return 0; /* the 101's end: the tunnel goes on */
    s->resp_done = true;
    resume(s);
    return 0;
}

static const sy_h1_callbacks_t resp_callbacks = {resp_on_head, resp_on_body, resp_on_done};

/* A tunnel's bytes from the child, unparsed, as tx has room. */
static size_t tunnel_copy(sy_h2_stream_t *s, sy_conn_t *child)
{
    size_t moved = 0;
    while (child->out.len > 0 && sy_conn_take(s->h2->c, &s->tx) == 0) {
        sy_buf_compact(&s->tx);
        size_t n = child->out.len < sy_buf_room(&s->tx) ? child->out.len : sy_buf_room(&s->tx);
        if (n == 0 || sy_buf_append(&s->tx, sy_buf_data(&child->out), n) != 0)
            break;
        sy_buf_consume(&child->out, n);
        moved += n;
        resume(s);
    }
    return moved;
}

/* The field names a response's Connection headers list (RFC 9110 7.6.1),
 * but for close and keep-alive (those name no field we would forward). */
typedef struct conn_tokens {
    size_t n;
    bool many; /* more than fit: ask sy_headers_hop_by_hop */
    struct {
        const char *p;
        size_t len;
    } t[8];
} conn_tokens_t;

static void conn_tokens(const sy_h1_msg_t *m, conn_tokens_t *ct)
{
    ct->n = 0;
    ct->many = false;
    for (size_t i = 0; i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (h->name_len != 10 || strncasecmp(h->name, "connection", 10) != 0)
            continue;
        const char *v = h->value, *end = h->value + h->value_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *e = v;
            while (e < end && *e != ',' && *e != ' ' && *e != '\t')
                e++;
            size_t len = (size_t)(e - v);
            if (len > 0 && !(len == 5 && strncasecmp(v, "close", 5) == 0) &&
                !(len == 10 && strncasecmp(v, "keep-alive", 10) == 0)) {
                if (ct->n == SY_ARRAY_LEN(ct->t)) {
                    ct->many = true;
                    return;
                }
                ct->t[ct->n].p = v;
                ct->t[ct->n].len = len;
                ct->n++;
            }
            v = e;
        }
    }
}

static bool named_by(const conn_tokens_t *ct, const sy_h1_msg_t *m, const sy_header_t *h)
{
    if (ct->many)
        return sy_headers_hop_by_hop(m, h);
    for (size_t i = 0; i < ct->n; i++)
        if (ct->t[i].len == h->name_len && strncasecmp(ct->t[i].p, h->name, h->name_len) == 0)
            return true;
    return false;
}

/* A direct response ends when the exchange's did and its bytes are in tx. */
static void direct_settle(sy_h2_stream_t *s, sy_conn_t *child)
{
    if (s->direct && !s->resp_done && child->out.len == 0 && child->rs == RS_DONE) {
        s->resp_done = true;
        resume(s);
    }
}

int sy_h2_child_head(sy_conn_t *child, const sy_h1_msg_t *m, const sy_fwd_response_t *f)
{
    sy_h2_stream_t *s = child->h2s;
    if (s == NULL || s->websocket || f->tunnel || m->status < 200 || s->head_submitted)
        return 0;
    /* An interim response before it, still as HTTP/1.1 in out, goes first. */
    if (child->out.len > 0 && !s->need_rst && !s->resp_done)
        sy_h2_child_flush(child);
    if (child->out.len > 0 && !s->need_rst && !s->resp_done)
        return 0;
    if (child->resp_framing == SY_FRAME_CHUNKED || child->resp_framing == SY_FRAME_CLOSE)
        child->resp_framing = SY_FRAME_LENGTH; /* HTTP/2 frames the body: raw bytes */
    s->direct = true;
    if (s->need_rst || s->resp_done)
        return 1; /* nothing of it can reach the client */
    nghttp2_nv local[48];
    char names[2048];
    nghttp2_nv *nva = local;
    size_t cap = m->nheaders + 3;
    if (cap > SY_ARRAY_LEN(local) && (nva = malloc(cap * sizeof(*nva))) == NULL)
        return -1;
    char status[4];
    status_digits(status, (unsigned)m->status);
    size_t n = 0, used = 0;
    bool have_date = false;
    conn_tokens_t named;
    conn_tokens(m, &named);
    nva[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, 3, NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; i < m->nheaders; i++) {
        const sy_header_t *h = &m->headers[i];
        if (not_forwarded(h) || named_by(&named, m, h) ||
            (h->name_len == 20 && strncasecmp(h->name, "x-switchyard-variant", 20) == 0) ||
            ((m->chunked || m->status == 204) && h->name_len == 14 && strncasecmp(h->name, "content-length", 14) == 0))
            continue;
        if (h->name_len == 4 && strncasecmp(h->name, "date", 4) == 0)
            have_date = true;
        /* Lower-case names: copied (the exchange's message stays as it came). */
        uint8_t *name = (uint8_t *)h->name;
        bool upper = false;
        for (size_t k = 0; k < h->name_len && !upper; k++)
            upper = h->name[k] >= 'A' && h->name[k] <= 'Z';
        if (upper && used + h->name_len <= sizeof(names)) {
            name = (uint8_t *)names + used;
            for (size_t k = 0; k < h->name_len; k++) {
                char ch = h->name[k];
                names[used + k] = ch >= 'A' && ch <= 'Z' ? (char)(ch + ('a' - 'A')) : ch;
            }
            used += h->name_len;
        } else if (upper) { /* no room left: the rare long list is lower-cased in place */
            for (size_t k = 0; k < h->name_len; k++)
                if (name[k] >= 'A' && name[k] <= 'Z')
                    name[k] = (uint8_t)(name[k] + ('a' - 'A'));
        }
        nva[n++] = (nghttp2_nv){name, (uint8_t *)h->value, h->name_len, h->value_len, NGHTTP2_NV_FLAG_NONE};
    }
    if (!have_date && f->date != NULL)
        nva[n++] = (nghttp2_nv){(uint8_t *)"date", (uint8_t *)f->date, 4, strlen(f->date), NGHTTP2_NV_FLAG_NONE};
    if (f->variant != NULL)
        nva[n++] = (nghttp2_nv){(uint8_t *)"x-switchyard-variant", (uint8_t *)f->variant, 20, strlen(f->variant),
                                NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = data_read};
    int rv = nghttp2_submit_response(s->h2->sess, s->id, nva, n, &prd);
    if (nva != local)
        free(nva);
    if (rv != 0)
        return -1;
    s->head_submitted = true;
    s->h2->again = true;
    return 1;
}

int sy_h2_child_flush(sy_conn_t *child)
{
    sy_h2_stream_t *s = child->h2s;
    sy_h2_t *h2 = s->h2;
    if (child->out.len == 0)
        return 0;
    if (s->need_rst || s->resp_done) { /* nothing more can reach the client */
        sy_buf_consume(&child->out, child->out.len);
        return 1;
    }
    if (s->direct) {
        size_t moved = tunnel_copy(s, child);
        direct_settle(s, child);
        child->out_blocked = child->out.len > 0;
        if (moved == 0)
            return 0;
        child->bytes_out += moved;
        child->t_client_act = sy_conn_now(child);
        h2->again = true;
        return 1;
    }
    const sy_limits_t *l = &child->cfg->limits;
    if (s->arena == NULL) {
        size_t max_head = l->header_bytes + 2048, max_headers = l->headers + 16;
        size_t size = sy_h1_arena_size(max_head, max_headers);
        if (size <= h2->c->w->bufs.block_size && sy_conn_take(h2->c, &s->arena_blk) == 0)
            s->arena = s->arena_blk.base;
        else
            s->arena = malloc(size);
        if (s->arena == NULL || sy_conn_take(h2->c, &s->tx) != 0) {
            s->need_rst = true;
            s->rst_code = NGHTTP2_INTERNAL_ERROR;
            mark(s);
            return 0;
        }
        sy_h1_init(&s->resp, false, &resp_callbacks, s, max_head, l->uri_bytes, max_headers);
        sy_h1_set_arena(&s->resp, s->arena, size);
    }
    size_t moved = 0;
    while (!s->tunnel && child->out.len > 0 && !s->resp_done && !s->need_rst) {
        size_t limit = child->out.len;
        if (sy_conn_take(h2->c, &s->tx) != 0)
            break;
        if (sy_buf_room(&s->tx) < limit)
            sy_buf_compact(&s->tx);
        /* Body bytes are never more than the input bytes: limit by tx's room. */
        size_t room = sy_buf_room(&s->tx);
        if (room == 0)
            break;
        if (limit > room)
            limit = room;
        size_t used = 0;
        int rc = sy_h1_execute(&s->resp, sy_buf_data(&child->out), limit, &used);
        sy_buf_consume(&child->out, used);
        moved += used;
        if (rc == SY_H1_ERROR) {
            sy_debug("http2: stream %d: bad response from the exchange: %s", s->id,
                     s->resp.err_reason ? s->resp.err_reason : "?");
            s->need_rst = true;
            s->rst_code = NGHTTP2_INTERNAL_ERROR;
            mark(s);
            break;
        }
        if (rc == SY_H1_UPGRADE || s->tunnel)
            continue; /* the rest is the tunnel's */
        if (rc != SY_H1_OK || used == 0)
            break;
    }
    if (s->tunnel && !s->need_rst)
        moved += tunnel_copy(s, child);
    if (s->resp_done || s->need_rst)
        sy_buf_consume(&child->out, child->out.len);
    child->out_blocked = child->out.len > 0;
    if (moved == 0)
        return 0;
    child->bytes_out += moved;
    child->t_client_act = sy_conn_now(child);
    h2->again = true;
    return 1;
}

void sy_h2_child_closed(sy_conn_t *child)
{
    sy_h2_stream_t *s = child->h2s;
    direct_settle(s, child);
    child->h2s = NULL;
    s->child = NULL;
    if (s->tunnel && !s->need_rst) { /* the tunnel ended: the stream ends after its bytes */
        s->resp_done = true;
        resume(s);
    }
    if (!s->resp_done) {
        s->need_rst = true;
        s->rst_code = NGHTTP2_INTERNAL_ERROR;
    }
    mark(s);
}

/* Every child's events of one loop iteration are answered by one step of the
 * connection, just before the loop polls again: the frames they produced go
 * out in one write. */
static void kick_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    sy_conn_t *c = w->data;
    ev_prepare_stop(loop, w);
    if (c->phase == PH_H2)
        sy_conn_pump(c);
}

void sy_h2_child_pumped(sy_conn_t *child)
{
    sy_conn_t *c = child->h2_parent;
    if (child->h2s != NULL)
        child->h2s->dirty = true;
    if (c->phase != PH_H2 || c->h2 == NULL)
        return;
    c->h2->again = true;
    if (!c->h2->busy && !ev_is_active(&c->h2->kick))
        ev_prepare_start(c->w->loop, &c->h2->kick);
}

/* --- the request: HEADERS and DATA into the child as HTTP/1.1 -------------- */

/* The head as HTTP/1.1 into the child's input: false if it cannot be. */
static bool compose_head(sy_h2_stream_t *s, sy_conn_t *child)
{
    sy_buf_t *in = &child->in;
    if (sy_conn_take(child, in) != 0)
        return false;
    bool connect = strcmp(s->method, "CONNECT") == 0 && !s->websocket;
    struct span target = connect ? s->authority : s->path;
    if (s->method[0] == '\0' || target.len == 0)
        return false;
    const char *method = s->websocket ? "GET" : s->method;
    int rc = sy_buf_append(in, method, strlen(method));
    rc = rc ? rc : sy_buf_append(in, " ", 1);
    rc = rc ? rc : sy_buf_append(in, span_p(s, target), target.len);
    rc = rc ? rc : sy_buf_append(in, " HTTP/1.1\r\n", 11);
    if (s->websocket) {
        /* RFC 8441 5: the HTTP/1.1 upgrade it stands for. The key is ours (the
         * client has none; the accept that comes back is not passed on). */
        char key[33];
        sy_worker_request_id(child->w, key);
        rc = rc ? rc : sy_buf_appendf(in, "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: %.21sA==\r\n", key);
    }
    if (rc == 0 && s->authority.len > 0) {
        rc = sy_buf_append(in, "Host: ", 6);
        rc = rc ? rc : sy_buf_append(in, span_p(s, s->authority), s->authority.len);
        rc = rc ? rc : sy_buf_append(in, "\r\n", 2);
    }
    if (rc == 0 && s->lines.len > 0)
        rc = sy_buf_append(in, span_p(s, s->lines), s->lines.len);
    if (rc == 0 && s->cookie.len > 0) {
        rc = sy_buf_append(in, "Cookie: ", 8);
        rc = rc ? rc : sy_buf_append(in, s->cookie.p, s->cookie.len);
        rc = rc ? rc : sy_buf_append(in, "\r\n", 2);
    }
    s->chunked = !s->req_end && !s->has_length && !s->websocket;
    if (rc == 0 && s->chunked)
        rc = sy_buf_append(in, "Transfer-Encoding: chunked\r\n", 28);
    if (rc == 0)
        rc = sy_buf_append(in, "\r\n", 2);
    if (rc == 0) {
        hstr_free(&s->cookie);
        sy_conn_give(s->h2->c, &s->hb);
    }
    return rc == 0;
}

/* A local answer from the stream itself (no child: the head could not be made). */
static void answer_local(sy_h2_stream_t *s, int status)
{
    char st[4];
    status_digits(st, (unsigned)status);
    const nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-length", (uint8_t *)"0", 14, 1, NGHTTP2_NV_FLAG_NONE},
    };
    s->resp_done = s->head_submitted = true;
    sy_conn_give(s->h2->c, &s->hb);
    nghttp2_submit_response(s->h2->sess, s->id, nv, 2, NULL);
    s->h2->again = true;
}

/* The request head is complete: a child connection takes the exchange. */
static void start_exchange(sy_h2_stream_t *s)
{
    sy_h2_t *h2 = s->h2;
    if (s->too_big || s->bad) {
        answer_local(s, s->too_big ? 431 : 400);
        return;
    }
    sy_conn_t *child = sy_conn_child_new(h2->c);
    if (child == NULL) {
        answer_local(s, 503);
        return;
    }
    s->child = child;
    child->h2s = s;
    if (!compose_head(s, child)) {
        stream_detach_child(s, NULL);
        answer_local(s, 431);
        return;
    }
    s->head_composed = true;
    mark(s);
}

/* Moves request bytes from rx into the child (re-framed as chunks when the
 * length is unknown); the window opens as they move. */
static bool feed_child(sy_h2_stream_t *s, sy_conn_t *child)
{
    bool moved = false;
    /* A tunnel's bytes go where the tunnel takes client bytes. */
    sy_buf_t *in = child->phase == PH_TUNNEL ? &child->up_out : &child->in;
    if (s->websocket && s->rx_len == 0 && s->req_end && !s->req_end_sent && child->phase == PH_TUNNEL) {
        s->req_end_sent = true;
        child->client_eof = true; /* the client ended its side: the tunnel closes after its bytes */
        return true;
    }
    if (s->websocket && s->rx_len == 0)
        return false;
    while (s->rx_len > 0 || (s->req_end && !s->req_end_sent)) {
        if (sy_conn_take(child, in) != 0)
            break;
        if (sy_buf_room(in) < 64 + (s->rx_len < 4096 ? s->rx_len : 4096))
            sy_buf_compact(in);
        size_t room = sy_buf_room(in);
        if (s->rx_len == 0) { /* the end (a tunnel's is told above) */
            if (s->chunked && room < 5)
                break;
            if (s->chunked && sy_buf_append(in, "0\r\n\r\n", 5) != 0)
                break;
            s->req_end_sent = moved = true;
            break;
        }
        size_t framing = s->chunked ? 32 : 0;
        if (room <= framing)
            break;
        size_t n = s->rx_len < room - framing ? s->rx_len : room - framing;
        const char *p = s->rx + s->rx_off;
        int rc = 0;
        if (s->chunked) {
            rc = sy_buf_appendf(in, "%zx\r\n", n);
            rc = rc ? rc : sy_buf_append(in, p, n);
            rc = rc ? rc : sy_buf_append(in, "\r\n", 2);
        } else {
            rc = sy_buf_append(in, p, n);
        }
        if (rc != 0)
            break;
        s->rx_off += n;
        s->rx_len -= n;
        if (s->rx_len == 0)
            s->rx_off = 0;
        nghttp2_session_consume(s->h2->sess, s->id, n);
        moved = true;
    }
    if (moved)
        child->t_client_act = sy_conn_now(child);
    return moved;
}

/* One stream's turn in the connection's step. */
static void stream_work(sy_h2_stream_t *s)
{
    sy_h2_t *h2 = s->h2;
    s->dirty = false;
    if (s->need_rst && !s->rst_sent) {
        s->rst_sent = true;
        nghttp2_submit_rst_stream(h2->sess, NGHTTP2_FLAG_NONE, s->id, s->rst_code);
        h2->again = true;
    }
    sy_conn_t *child = s->child;
    if (child == NULL) {
        if (s->rx_len > 0) { /* nobody reads it any more */
            nghttp2_session_consume(h2->sess, s->id, s->rx_len);
            s->rx_len = s->rx_off = 0;
        }
        return;
    }
    bool pump = feed_child(s, child);
    if (child->out.len > 0 && child->out_blocked && s->tx.len < s->tx.cap) {
        child->out_blocked = false;
        pump = true;
    }
    if (child->phase == PH_IDLE && child->in.len > 0)
        pump = true; /* its exchange has not begun yet */
    if (pump)
        sy_conn_pump(child);
    child = s->child;
    if (child != NULL)
        direct_settle(s, child);
    if (child != NULL && child->phase == PH_IDLE && child->out.len == 0 && child->in.len == 0 && s->resp_done)
        stream_detach_child(s, NULL); /* its exchange ended and was recorded */
}

/* --- session callbacks ------------------------------------------------------ */

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    sy_h2_t *h2 = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    sy_h2_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->h2 = h2;
    s->id = frame->hd.stream_id;
    sy_list_init(&s->node);
    sy_list_push_back(&h2->streams, &s->node);
    h2->nstreams++;
    nghttp2_session_set_stream_user_data(sess, s->id, s);
    return 0;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)sess;
    (void)flags;
    sy_h2_t *h2 = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers are not forwarded */
    sy_h2_stream_t *s = stream_of(h2, frame->hd.stream_id);
    if (s == NULL || s->too_big)
        return 0;
    size_t limit = h2->c->cfg->http2.max_header_list_bytes;
    s->list_bytes += namelen + valuelen + 32;
    if (s->list_bytes > limit) {
        s->too_big = true;
        return 0;
    }
    int rc = 0;
    if (namelen > 0 && name[0] == ':') {
        if (name_is(name, namelen, ":method")) {
            if (valuelen >= sizeof(s->method))
                s->bad = true;
            else
                memcpy(s->method, value, valuelen), s->method[valuelen] = '\0';
        } else if (name_is(name, namelen, ":path")) {
            rc = hb_add(s, &s->path, value, valuelen);
        } else if (name_is(name, namelen, ":authority")) {
            rc = hb_add(s, &s->authority, value, valuelen);
        } else if (name_is(name, namelen, ":protocol")) {
            /* Extended CONNECT: WebSocket only, to a backend's HTTP/1.1 upgrade. */
            if (name_is(value, valuelen, "websocket"))
                s->websocket = true;
            else
                s->bad = true;
        }
    } else if (name_is(name, namelen, "cookie")) {
        if (s->cookie.len > 0)
            rc = hstr_add(&s->cookie, "; ", 2, limit);
        rc = rc ? rc : hstr_add(&s->cookie, value, valuelen, limit);
    } else if (name_is(name, namelen, "host") && s->authority.len > 0) {
        return 0; /* :authority wins */
    } else if (name_is(name, namelen, "te")) {
        return 0; /* only "trailers" is allowed, and it is hop-by-hop */
    } else {
        if (name_is(name, namelen, "content-length"))
            s->has_length = true;
        if (name_is(name, namelen, "expect"))
            s->expect = true;
        rc = hb_add(s, &s->lines, name, namelen);
        rc = rc ? rc : hb_add(s, &s->lines, ": ", 2);
        rc = rc ? rc : hb_add(s, &s->lines, value, valuelen);
        rc = rc ? rc : hb_add(s, &s->lines, "\r\n", 2);
    }
    if (rc != 0)
        s->too_big = true;
    return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    (void)sess;
    sy_h2_t *h2 = ud;
    sy_h2_stream_t *s = frame->hd.stream_id ? stream_of(h2, frame->hd.stream_id) : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (s == NULL)
            return 0;
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            s->req_end = true;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            s->head_req = strcmp(s->method, "HEAD") == 0;
            start_exchange(s);
        }
        mark(s);
        break;
    case NGHTTP2_DATA:
        if (s != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            s->req_end = true;
            mark(s);
        }
        break;
    case NGHTTP2_RST_STREAM:
        if (s != NULL && !s->eof_sent) {
            /* CVE-2023-44487: cancels before the response ended draw on a bucket. */
            const sy_http2_conf_t *hc = &h2->c->cfg->http2;
            ev_tstamp now = sy_conn_now(h2->c);
            h2->tokens += (now - h2->t_tokens) * (double)hc->resets_per_second;
            if (h2->tokens > (double)hc->max_resets)
                h2->tokens = (double)hc->max_resets;
            h2->t_tokens = now;
            if (h2->tokens < 1)
                calm_down(h2, "too many early stream resets");
            else
                h2->tokens -= 1;
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *ud)
{
    (void)sess;
    (void)flags;
    sy_h2_t *h2 = ud;
    sy_h2_stream_t *s = stream_of(h2, id);
    if (s == NULL) {
        h2->conn_consume += len;
        return 0;
    }
    if (s->child == NULL || s->need_rst) {
        s->consume += len; /* answered already: the rest is dropped */
        return 0;
    }
    if (s->rx == NULL) {
        s->rx_cap = h2->stream_window > 65535 ? h2->stream_window : 65535;
        s->rx = malloc(s->rx_cap);
        if (s->rx == NULL)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (s->rx_off + s->rx_len + len > s->rx_cap) {
        memmove(s->rx, s->rx + s->rx_off, s->rx_len);
        s->rx_off = 0;
    }
    if (s->rx_len + len > s->rx_cap) { /* past the window we gave */
        s->need_rst = true;
        s->rst_code = NGHTTP2_FLOW_CONTROL_ERROR;
        s->consume += len;
        mark(s);
        return 0;
    }
    memcpy(s->rx + s->rx_off + s->rx_len, data, len);
    s->rx_len += len;
    mark(s);
    return 0;
}

static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    sy_h2_t *h2 = ud;
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    sy_h2_stream_t *s = stream_of(h2, frame->hd.stream_id);
    if (s == NULL)
        return 0;
    s->eof_sent = true;
    /* The response is complete while the request is not: stop the upload
     * (RFC 9113 8.1). */
    if (!s->req_end && !s->rst_sent) {
        s->rst_sent = true;
        nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    sy_h2_t *h2 = ud;
    sy_h2_stream_t *s = stream_of(h2, id);
    if (s == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(sess, id, NULL);
    if (s->consume > 0)
        h2->conn_consume += s->consume;
    if (s->rx_len > 0)
        h2->conn_consume += s->rx_len;
    stream_free(s);
    return 0;
}

/* --- the connection's phase ------------------------------------------------- */

static void apply_consumes(sy_h2_t *h2)
{
    for (sy_list_t *n = h2->streams.next; n != &h2->streams; n = n->next) {
        sy_h2_stream_t *s = sy_container_of(n, sy_h2_stream_t, node);
        if (s->consume > 0) {
            nghttp2_session_consume(h2->sess, s->id, s->consume);
            s->consume = 0;
        }
    }
    if (h2->conn_consume > 0) {
        nghttp2_session_consume_connection(h2->sess, h2->conn_consume);
        h2->conn_consume = 0;
    }
}

/* What nghttp2 has to send goes into c->out as far as it has room. */
static int send_out(sy_conn_t *c, sy_h2_t *h2)
{
    for (;;) {
        if (h2->pend_len == 0) {
            if (sy_conn_take(c, &c->out) != 0 || c->out.cap - c->out.len < 1024)
                return 0; /* full: what waits stays in the session */
            ssize_t n = nghttp2_session_mem_send(h2->sess, &h2->pend);
            if (n < 0) {
                sy_conn_close(c, nghttp2_strerror((int)n));
                return -1;
            }
            if (n == 0)
                return 0;
            h2->pend_len = (size_t)n;
        }
        if (sy_buf_room(&c->out) < h2->pend_len)
            sy_buf_compact(&c->out);
        size_t room = sy_buf_room(&c->out);
        if (room == 0)
            return 0;
        size_t n = h2->pend_len < room ? h2->pend_len : room;
        if (sy_buf_append(&c->out, h2->pend, n) != 0)
            return 0;
        h2->pend += n;
        h2->pend_len -= n;
        if (c->out.len >= c->out.cap / 2 && sy_conn_flush_client(c) < 0)
            return -1;
    }
}

static bool h2_step(sy_conn_t *c)
{
    sy_h2_t *h2 = c->h2;
    h2->busy = true;
    bool progress = h2->again;
    h2->again = false;
    if (c->in.len > 0) {
        if (!h2->stop_reading) {
            ssize_t n = nghttp2_session_mem_recv(h2->sess, (const uint8_t *)sy_buf_data(&c->in), c->in.len);
            if (n < 0) {
                sy_debug("http2: %s: %s", c->peer_ip, nghttp2_strerror((int)n));
                int code = n == NGHTTP2_ERR_FLOODED || n == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                               ? NGHTTP2_ENHANCE_YOUR_CALM
                               : NGHTTP2_PROTOCOL_ERROR;
                if (code == NGHTTP2_ENHANCE_YOUR_CALM)
                    calm_down(h2, n == NGHTTP2_ERR_FLOODED ? "a control frame flood" : "a CONTINUATION flood");
                if (!h2->stop_reading)
                    h2->t_stop = sy_conn_now(c);
                h2->stop_reading = true;
                nghttp2_session_terminate_session(h2->sess, (uint32_t)code);
                n = (ssize_t)c->in.len;
            }
            sy_buf_consume(&c->in, (size_t)n);
        } else {
            sy_buf_consume(&c->in, c->in.len);
        }
        progress = true;
    }
    if (c->phase != PH_H2)
        return true;
    apply_consumes(h2);

    /* The streams that something happened to. */
    for (int round = 0; round < 4; round++) {
        bool any = false;
        sy_list_t *n = h2->streams.next;
        while (n != &h2->streams) {
            sy_h2_stream_t *s = sy_container_of(n, sy_h2_stream_t, node);
            n = n->next;
            if (s->dirty) {
                any = true;
                stream_work(s);
                if (c->phase != PH_H2)
                    return true;
            }
        }
        if (!any)
            break;
        progress = true;
    }

    /* Drain: a shutdown notice, then after drain_idle the final GOAWAY; the
     * open streams finish. */
    ev_tstamp now = sy_conn_now(c);
    if (c->w->draining && !h2->notice) {
        h2->notice = true;
        h2->t_notice = now;
        nghttp2_submit_shutdown_notice(h2->sess);
    }
    if (h2->notice && !h2->goaway && now >= h2->t_notice + c->cfg->timeouts.drain_idle / 1e3) {
        h2->goaway = true;
        nghttp2_submit_goaway(h2->sess, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2->sess),
                              NGHTTP2_NO_ERROR, NULL, 0);
    }

    if (send_out(c, h2) < 0)
        return true;
    int rc = sy_conn_flush_client(c);
    if (rc < 0)
        return true;
    progress |= rc > 0;
    h2->busy = false;

    bool idle_out = c->out.len == 0 && h2->pend_len == 0 && !nghttp2_session_want_write(h2->sess);
    if (idle_out && h2->stop_reading) {
        /* GOAWAY is out: say so with FIN and read (and drop) until the client
         * closes, so that a reset does not destroy the GOAWAY on its way. */
        if (!h2->shut && c->fd >= 0 && c->tls == NULL) /* over TLS the close follows instead */
            shutdown(c->fd, SHUT_WR);
        h2->shut = true;
        sy_h2_close_streams(c);
    }
    if (idle_out && !h2->stop_reading && ((h2->goaway && h2->nstreams == 0) ||
                     (!nghttp2_session_want_read(h2->sess) && h2->nstreams == 0))) {
        sy_conn_close(c, NULL);
        return true;
    }
    if (c->client_eof && c->in.len == 0) {
        sy_conn_close(c, h2->nstreams > 0 ? "client closed with streams open" : NULL);
        return true;
    }
    if (h2->again)
        progress = true;
    return progress;
}

static int h2_events(const sy_conn_t *c)
{
    return c->client_eof ? 0 : EV_READ;
}

static void h2_deadline(const sy_conn_t *c, sy_deadline_t *d)
{
    const sy_h2_t *h2 = c->h2;
    const sy_timeouts_t *t = &c->cfg->timeouts;
    if (c->out.len > 0 && c->out_blocked)
        sy_deadline_consider(d, c->t_client_act + t->body_idle / 1e3, DL_CLOSING);
    if (h2->stop_reading) /* the GOAWAY's grace, whatever the client still sends */
        sy_deadline_consider(d, h2->t_stop + t->drain_idle / 1e3 + 1, DL_CLOSING);
    if (h2->nstreams == 0)
        sy_deadline_consider(d, c->t_idle + t->client_idle / 1e3, DL_CLIENT_IDLE);
    if (c->w->draining && !h2->notice)
        sy_deadline_consider(d, sy_conn_now(c), DL_H2);
    else if (h2->notice && !h2->goaway)
        sy_deadline_consider(d, h2->t_notice + t->drain_idle / 1e3, DL_H2);
}

static sy_buf_t *h2_dst_in(sy_conn_t *c)
{
    return &c->in;
}

const sy_conn_phase_ops_t sy_h2_ops = {
    .name = "h2",
    .client_dst = h2_dst_in,
    .upstream_dst = h2_dst_in, /* never used: the connection itself has no upstream */
    .step = h2_step,
    .client_events = h2_events,
    .deadline = h2_deadline,
};

void sy_h2_close_streams(sy_conn_t *c)
{
    sy_h2_conn_closed(c);
}

void sy_h2_conn_closed(sy_conn_t *c)
{
    sy_h2_t *h2 = c->h2;
    ev_prepare_stop(c->w->loop, &h2->kick);
    for (sy_list_t *n = h2->streams.next; n != &h2->streams; n = n->next) {
        sy_h2_stream_t *s = sy_container_of(n, sy_h2_stream_t, node);
        stream_detach_child(s, s->resp_done ? NULL : "client connection closed");
    }
}

void sy_h2_free(sy_conn_t *c)
{
    sy_h2_t *h2 = c->h2;
    if (h2 == NULL)
        return;
    ev_prepare_stop(c->w->loop, &h2->kick);
    nghttp2_session_del(h2->sess);
    while (!sy_list_empty(&h2->streams))
        stream_free(sy_container_of(h2->streams.next, sy_h2_stream_t, node));
    free(h2);
    c->h2 = NULL;
}

void sy_h2_start(sy_conn_t *c)
{
    const sy_http2_conf_t *hc = &c->cfg->http2;
    sy_h2_t *h2 = calloc(1, sizeof(*h2));
    nghttp2_option *opt = NULL;
    nghttp2_session_callbacks *cbs = NULL;
    if (h2 == NULL || nghttp2_option_new(&opt) != 0 || nghttp2_session_callbacks_new(&cbs) != 0) {
        free(h2);
        nghttp2_option_del(opt);
        sy_conn_close(c, "out of memory");
        return;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, (size_t)hc->max_control_acks);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, (size_t)hc->max_continuations);
    /* Our own bucket acts first (ENHANCE_YOUR_CALM); nghttp2's is the backstop. */
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)hc->max_resets * 2, (uint64_t)hc->resets_per_second * 2);
    nghttp2_option_set_no_closed_streams(opt, 1);
    int rv = nghttp2_session_server_new2(&h2->sess, cbs, h2, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        free(h2);
        sy_conn_close(c, "out of memory");
        return;
    }
    h2->c = c;
    ev_prepare_init(&h2->kick, kick_cb);
    h2->kick.data = c;
    sy_list_init(&h2->streams);
    h2->stream_window = hc->stream_window_bytes;
    h2->tokens = (double)hc->max_resets;
    h2->t_tokens = sy_conn_now(c);
    c->h2 = h2;
    const nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)hc->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)hc->stream_window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)hc->max_header_list_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    nghttp2_submit_settings(h2->sess, NGHTTP2_FLAG_NONE, iv, SY_ARRAY_LEN(iv));
    /* The connection window: every stream may fill its own window at once, so
     * one stream waiting for its upstream never stalls the others. */
    uint64_t conn_window = hc->stream_window_bytes * (uint64_t)hc->max_concurrent_streams;
    if (conn_window > (1u << 30))
        conn_window = 1u << 30;
    if (conn_window > 65535)
        nghttp2_session_set_local_window_size(h2->sess, NGHTTP2_FLAG_NONE, 0, (int32_t)conn_window);
    sy_conn_enter(c, PH_H2);
}
