/* The admin listener: the config section, the connections (one request each,
 * read with the project's HTTP/1 codec, answered and closed lingering), the
 * registry of endpoints and the dispatch through it. The endpoints themselves
 * live by area: api_routes.c, api_record.c, metrics.c (and, until they move,
 * the swap and the Alertmanager webhook below). */
#include "handlers/admin.h"
#include "handlers/admin_body.h"
#include "handlers/admin_conn.h"

#include "flags/pools.h"
#include "handlers/alertmanager.h"
#include "healthcheck/history.h"

#include "proxy/h1.h"
#include "proxy/headers.h"
#include "proxy/list.h"
#include "proxy/log.h"
#include "proxy/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "routing/route.h"
#include "routing/router.h"

#define ADMIN_TIMEOUT 10.0
/* Lingering close: after the answer, what the client still sends is read and
 * discarded for at most this long and this many bytes. */
#define ADMIN_LINGER_TIME 5.0
#define ADMIN_LINGER_BYTES (8u << 20)

/* --- the config section ---------------------------------------------------- */

static void admin_conf_destroy(void *p)
{
    sy_admin_conf_t *ac = p;
    if (ac == NULL)
        return;
    free(ac->address);
    free(ac->token_file);
    if (ac->token != NULL)
        OPENSSL_cleanse(ac->token, strlen(ac->token));
    free(ac->token);
    free(ac);
}

static const sy_conf_field_t admin_fields[] = {
    {"address", SY_CT_STRING, offsetof(sy_admin_conf_t, address), "127.0.0.1:9901", 0, 0},
    {"token_file", SY_CT_STRING, offsetof(sy_admin_conf_t, token_file), NULL, 0, 0},
};

static int admin_conf_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_admin_conf_t *ac = calloc(1, sizeof(*ac));
    if (ac == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = ac;
    sy_conf_defaults(admin_fields, SY_ARRAY_LEN(admin_fields), ac);
    if (sy_conf_fields(c, node, admin_fields, SY_ARRAY_LEN(admin_fields), ac, NULL) != 0)
        return SY_EINVAL;
    const char *why = NULL;
    if (sy_addr_parse(ac->address, &ac->addr, &why) != 0)
        return sy_conf_error(c, node, "bad admin address '%s': %s", ac->address, why);
    if (ac->token_file != NULL) {
        /* Read once at load (start or SIGHUP), never on a loop. */
        FILE *f = fopen(ac->token_file, "r");
        if (f == NULL)
            return sy_conf_error(c, node, "admin.token_file %s: %s", ac->token_file, strerror(errno));
        char buf[512];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        if (strlen(buf) < 16)
            return sy_conf_error(c, node, "admin.token_file %s: the token must be at least 16 characters",
                                 ac->token_file);
        ac->token = strdup(buf);
        OPENSSL_cleanse(buf, sizeof(buf));
    }
    return 0;
}

const sy_conf_section_t sy_admin_section = {
    .key = "admin",
    .required = false,
    .parse = admin_conf_parse,
    .destroy = admin_conf_destroy,
};

/* --- connections ------------------------------------------------------------ */

int sy_http_status_of(sy_err_t err)
{
    switch (err) {
    case SY_OK: return 200;
    case SY_EINVAL: return 400;
    case SY_ENOTFOUND: return 404;
    case SY_ECONFLICT: return 409;
    case SY_ELIMIT: return 413;
    case SY_EUNAVAILABLE: return 503;
    case SY_EAGAIN: return 503;
    case SY_EDECLINED: return 403;
    case SY_ENOMEM:
    case SY_EIO:
    case SY_ECLOSED: return 500;
    }
    return 500;
}

void sy_admin_conn_release(admin_conn_t *c)
{
    if (--c->refs > 0)
        return;
    sy_buf_release(&c->in, &c->a->bufs);
    sy_buf_release(&c->out, &c->a->bufs);
    free(c->big);
    free(c->arena);
    json_decref(c->answer);
    free(c);
}

static void conn_close(admin_conn_t *c)
{
    if (c->closed)
        return;
    c->closed = true;
    ev_io_stop(c->a->loop, &c->io);
    ev_timer_stop(c->a->loop, &c->timer);
    close(c->fd);
    sy_list_remove(&c->node);
    sy_admin_conn_release(c);
}

/* The answer is out: close lingering, as nginx does. Closing with bytes of the
 * client's still unread (a body refused with 413, a pipelined request) would
 * reset the connection and could destroy the answer before the client reads
 * it; so the write side is shut first, and what comes is read and discarded
 * until the client closes, for a bounded time and byte count. */
static void linger(admin_conn_t *c)
{
    if (c->closed)
        return;
    if (shutdown(c->fd, SHUT_WR) != 0) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    c->linger_left = ADMIN_LINGER_BYTES;
    ev_io_stop(c->a->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ);
    ev_io_start(c->a->loop, &c->io);
    ev_timer_stop(c->a->loop, &c->timer);
    ev_timer_set(&c->timer, ADMIN_LINGER_TIME, 0.);
    ev_timer_start(c->a->loop, &c->timer);
}

static void linger_read(admin_conn_t *c)
{
    char scrap[16384];
    for (;;) {
        ssize_t n = recv(c->fd, scrap, sizeof(scrap), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0 || (size_t)n >= c->linger_left) {
            conn_close(c); /* the client closed, or the bound is reached */
            return;
        }
        c->linger_left -= (size_t)n;
    }
}

static void flush_out(admin_conn_t *c)
{
    while (c->out.len > 0 || c->big_off < c->big_len) {
        bool head = c->out.len > 0;
        ssize_t n = head ? send(c->fd, sy_buf_data(&c->out), c->out.len, MSG_NOSIGNAL)
                         : send(c->fd, c->big + c->big_off, c->big_len - c->big_off, MSG_NOSIGNAL);
        if (n > 0) {
            if (head)
                sy_buf_consume(&c->out, (size_t)n);
            else
                c->big_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_stop(c->a->loop, &c->io);
            ev_io_set(&c->io, c->fd, EV_WRITE);
            ev_io_start(c->a->loop, &c->io);
            return;
        }
        conn_close(c); /* the client is gone */
        return;
    }
    linger(c);
}

void sy_admin_respond_json(admin_conn_t *c, int status, json_t *j)
{
    if (c->closed || c->responded) {
        json_decref(j);
        return;
    }
    c->responded = true;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    size_t len = text ? strlen(text) : 0;
    if (sy_buf_take(&c->out, &c->a->bufs) != 0 ||
        sy_buf_appendf(&c->out, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n"
                                "Content-Length: %zu\r\nCache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                       status, sy_headers_status_text(status), sy_headers_date(time(NULL)), len + 1,
                       c->extra_head ? c->extra_head : "") != 0 ||
        sy_buf_append(&c->out, text ? text : "", len) != 0 || sy_buf_append(&c->out, "\n", 1) != 0) {
        free(text);
        conn_close(c);
        return;
    }
    free(text);
    flush_out(c);
}

void sy_admin_respond_error(admin_conn_t *c, int status, const char *reason)
{
    respond_json(c, status, json_pack("{s:s, s:s}", "error", sy_headers_error_kind(status), "reason", reason));
}

/* A 200 with a body of any size (PostgreSQL's JSON, the metrics): the head
 * goes through `out`, the body is sent from `big` after it. */
void sy_admin_respond_big(admin_conn_t *c, char *text, size_t len, const char *content_type, bool no_store)
{
    if (c->closed || c->responded) {
        free(text);
        return;
    }
    c->responded = true;
    c->big = text;
    c->big_len = len;
    if (sy_buf_take(&c->out, &c->a->bufs) != 0 ||
        sy_buf_appendf(&c->out, "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: %s\r\n"
                                "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
                       sy_headers_date(time(NULL)), content_type, len, no_store ? "Cache-Control: no-store\r\n" : "") != 0) {
        conn_close(c);
        return;
    }
    flush_out(c);
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

bool sy_admin_query_param(const admin_conn_t *c, const char *name, char *out, size_t cap, bool *bad)
{
    const sy_h1_msg_t *m = &c->req.msg;
    const char *q = memchr(m->target, '?', m->target_len);
    if (q == NULL)
        return false;
    const char *p = q + 1, *end = m->target + m->target_len;
    size_t nl = strlen(name);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t o = 0;
            for (const char *x = p + nl + 1; x < e; x++) {
                char ch = *x;
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    int hi, lo;
                    if (e - x < 3 || (hi = hexval(x[1])) < 0 || (lo = hexval(x[2])) < 0) {
                        *bad = true;
                        return false;
                    }
                    ch = (char)(hi * 16 + lo);
                    x += 2;
                }
                if (o + 1 >= cap || ch == '\0') {
                    *bad = true;
                    return false;
                }
                out[o++] = ch;
            }
            out[o] = '\0';
            return o > 0;
        }
        p = e + 1;
    }
    return false;
}

/* --- the endpoints ---------------------------------------------------------------- */

/* The probes: liveness and readiness. */
static void ep_healthz(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    respond_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

static void ep_readyz(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    /* Traffic flows on the config's flags even before Redis answers: ready means
     * the workers run; the flags' origin is reported alongside. */
    respond_json(c, c->a->ready ? 200 : 503,
                 json_pack("{s:s, s:s}", "status", c->a->ready ? "ready" : "not ready", "flags_from",
                           sy_admin_flags_from(c->a->store)));
}

static void swap_done(void *ud, sy_err_t err, const char *reason, const sy_route_flags_t *result)
{
    admin_conn_t *c = ud;
    (void)result;
    if (err == SY_OK) {
        sy_admin_answer_after_record(c, json_pack("{s:s}", "status", "swapped"));
        return;
    }
    sy_admin_change_failed(c, err, reason);
}

/* POST /pools/{name}/swap {"to": "green", "reason": "..."}: the swap's owner
 * (flags/pools.c) checks the pool, the colour and its health. */
static void ep_swap(admin_conn_t *c, const char *pool, json_t *body)
{
    const char *to = body ? json_string_value(json_object_get(body, "to")) : NULL;
    const char *reason = "";
    if (!reason_of(c, body, &reason))
        return;
    c->refs++;
    c->waiting = true;
    sy_pools_swap(c->a->store, pool, to, actor_of(c, body), reason, swap_done, c);
}

/* GET /fleet: the instances on this Redis and their numbers summed (healthcheck/fleet.c). */
static void ep_fleet(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    if (c->a->fleet == NULL) {
        respond_error(c, 404, "no fleet view");
        return;
    }
    respond_json(c, 200, sy_fleet_json(c->a->fleet));
}

/* --- Alertmanager ----------------------------------------------------------------- */

static void ep_alertmanager(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    json_t *answer = NULL;
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(c->a->store), "routes");
    int status = sy_alertmanager_handle(c->a->trip, rs, c->a->alert_label, body, &answer);
    if (status != 200) {
        respond_json(c, status, answer);
        return;
    }
    /* Like every change: answered once the trips' events are in the journal. */
    c->refs++;
    c->waiting = true;
    sy_admin_answer_after_record(c, answer);
}

/* The registry: every admin endpoint, in one table. A pattern is an exact path,
 * or a path with one {name} segment (a route or pool name, no '/'). `write`:
 * always needs the token. `open`: a read answered without the token even when
 * the listener is not on loopback (the probes: they say nothing about routes
 * or users); other reads need it there. */
typedef struct endpoint {
    const char *method;
    const char *pattern;
    sy_admin_ep_fn *fn;
    bool write;
    bool open;
} endpoint_t;

static const endpoint_t endpoints[] = {
    {"GET", "/", sy_admin_ep_dashboard, false, false},
    {"GET", "/history", sy_admin_ep_history, false, false},
    {"GET", "/status", sy_admin_ep_status, false, false},
    {"GET", "/fleet", ep_fleet, false, false},
    {"GET", "/healthz", ep_healthz, false, true},
    {"GET", "/readyz", ep_readyz, false, true},
    {"GET", "/metrics", sy_admin_ep_metrics, false, false},
    {"POST", "/alerts/alertmanager", ep_alertmanager, true, false},
    {"POST", "/routes/{name}/percent", sy_admin_ep_percent, true, false},
    {"POST", "/routes/{name}/test-users", sy_admin_ep_test_users, true, false},
    {"POST", "/routes/{name}/rollback", sy_admin_ep_rollback, true, false},
    {"POST", "/routes/{name}/resume", sy_admin_ep_resume, true, false},
    {"POST", "/routes/{name}/promote", sy_admin_ep_promote, true, false},
    {"POST", "/pools/{name}/swap", ep_swap, true, false},
    {"GET", "/events", sy_admin_ep_events, false, false},
    {"GET", "/windows", sy_admin_ep_windows, false, false},
    {"GET", "/routes/{name}/cohort", sy_admin_ep_cohort, false, false},
    {"GET", "/routes/{name}/diffs", sy_admin_ep_diffs, false, false},
    {"GET", "/routes/{name}", sy_admin_ep_route, false, false},
    {"GET", "/routes/{name}/plan", sy_admin_ep_plan, false, false},
    {"POST", "/routes/{name}/pause", sy_admin_ep_plan_pause, true, false},
    {"POST", "/routes/{name}/continue", sy_admin_ep_plan_continue, true, false},
};

/* Does path match the pattern? The {name} segment, if any, goes to name. */
static bool pattern_match(const char *pattern, const char *path, char *name, size_t cap)
{
    const char *hole = strstr(pattern, "{name}");
    name[0] = '\0';
    if (hole == NULL)
        return strcmp(path, pattern) == 0;
    size_t plen = strlen(path), pl = (size_t)(hole - pattern);
    const char *suffix = hole + strlen("{name}");
    size_t sl = strlen(suffix);
    if (plen <= pl + sl || strncmp(path, pattern, pl) != 0 || strcmp(path + plen - sl, suffix) != 0)
        return false;
    size_t rl = plen - pl - sl;
    if (rl == 0 || rl >= cap || memchr(path + pl, '/', rl) != NULL)
        return false;
    memcpy(name, path + pl, rl);
    name[rl] = '\0';
    return true;
}

/* Basic credentials "user:TOKEN" (any user): what a browser sends after its own
 * prompt, so that the dashboard can be opened where reads need the token. For
 * reads only: a browser would also send them with a form another site posts
 * here, so a write needs the Bearer header, which no other site can set. */
static bool basic_ok(const sy_header_t *h, const char *token)
{
    char dec[400];
    size_t el = h->value_len - 6;
    if (el == 0 || el % 4 != 0 || el / 4 * 3 >= sizeof(dec))
        return false;
    int n = EVP_DecodeBlock((unsigned char *)dec, (const unsigned char *)h->value + 6, (int)el);
    if (n < 0)
        return false;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    n -= (h->value[6 + el - 1] == '=') + (h->value[6 + el - 2] == '=');
    if (n < 0)
        return false;
    const char *colon = memchr(dec, ':', (size_t)n);
    bool ok = false;
    if (colon != NULL) {
        size_t tl = strlen(token), gl = (size_t)n - (size_t)(colon + 1 - dec);
        ok = gl == tl && CRYPTO_memcmp(colon + 1, token, tl) == 0;
    }
    OPENSSL_cleanse(dec, sizeof(dec));
    return ok;
}

static bool authorized(admin_conn_t *c)
{
    const char *token = c->a->token;
    const sy_header_t *h = sy_h1_find(&c->req.msg, "authorization");
    if (token != NULL && h != NULL && h->value_len > 6 && strncasecmp(h->value, "Basic ", 6) == 0)
        return strcmp(c->req.msg.method, "GET") == 0 && basic_ok(h, token);
    if (token == NULL || h == NULL || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0)
        return false;
    size_t tl = strlen(token), gl = h->value_len - 7;
    /* Constant time over the token's length; the length itself is not secret. */
    return gl == tl && CRYPTO_memcmp(h->value + 7, token, tl) == 0;
}

/* Writes always need the token; reads too when the listener is reachable from
 * other hosts (not loopback), except the open ones. False when refused (answered). */
static bool token_ok(admin_conn_t *c, const endpoint_t *e)
{
    bool need_token = e->write || (c->a->reads_need_token && !e->open);
    if (need_token && c->a->token == NULL) {
        respond_error(c, 403, e->write ? "no admin token is configured (admin.token_file): writes are refused"
                                       : "no admin token is configured (admin.token_file) and the admin address "
                                         "is not loopback: reads are refused too");
        return false;
    }
    if (need_token && !authorized(c)) {
        if (e->fn == sy_admin_ep_dashboard) /* a browser asks for it (any user name, the token as password) */
            c->extra_head = "WWW-Authenticate: Basic realm=\"switchyard admin: the token is the password\"\r\n";
        respond_error(c, 401, "a valid 'Authorization: Bearer TOKEN' header is needed");
        return false;
    }
    return true;
}

/* The body as a JSON object (NULL when there is none); false when it is not
 * one (answered 400). */
static bool body_json(admin_conn_t *c, json_t **out)
{
    char why[256];
    if (sy_admin_body_parse(c->body, c->body_len, out, why, sizeof(why)) != 0) {
        respond_error(c, 400, why);
        return false;
    }
    return true;
}

static void dispatch(admin_conn_t *c)
{
    const sy_h1_msg_t *m = &c->req.msg;
    char path[512];
    size_t plen = m->target_len;
    const char *q = memchr(m->target, '?', m->target_len);
    if (q != NULL)
        plen = (size_t)(q - m->target);
    if (plen >= sizeof(path)) {
        respond_error(c, 414, "path too long");
        return;
    }
    memcpy(path, m->target, plen);
    path[plen] = '\0';
    bool path_known = false;
    for (size_t i = 0; i < SY_ARRAY_LEN(endpoints); i++) {
        const endpoint_t *e = &endpoints[i];
        char name[128];
        if (!pattern_match(e->pattern, path, name, sizeof(name)))
            continue;
        path_known = true;
        if (strcmp(m->method, e->method) != 0)
            continue;
        json_t *body;
        if (!token_ok(c, e) || !body_json(c, &body))
            return;
        e->fn(c, name, body);
        json_decref(body);
        return;
    }
    respond_error(c, path_known ? 405 : 404, path_known ? "method not allowed here" : "no such endpoint");
}

static int on_head(void *ud, sy_h1_msg_t *m)
{
    admin_conn_t *c = ud;
    c->head_done = true;
    if (m->has_length && m->content_length > ADMIN_MAX_BODY)
        return sy_h1_fail(&c->req, 413, "admin request bodies are limited to 64 KiB");
    return 0;
}

static int on_body(void *ud, const char *data, size_t len)
{
    admin_conn_t *c = ud;
    if (c->body_len + len > ADMIN_MAX_BODY)
        return sy_h1_fail(&c->req, 413, "admin request bodies are limited to 64 KiB");
    memcpy(c->body + c->body_len, data, len);
    c->body_len += len;
    return 0;
}

static int on_done(void *ud)
{
    ((admin_conn_t *)ud)->done_reading = true;
    return 0;
}

static const sy_h1_callbacks_t admin_cbs = {on_head, on_body, on_done};

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    admin_conn_t *c = io->data;
    (void)loop;
    if (c->lingering) {
        linger_read(c);
        return;
    }
    if (revents & EV_WRITE) {
        flush_out(c);
        return;
    }
    if (c->done_reading) {
        /* The answer is pending (a write through Redis): only EOF matters now. */
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            conn_close(c);
        else if (n > 0)
            ev_io_stop(loop, &c->io); /* pipelining is not served here */
        return;
    }
    if (sy_buf_take(&c->in, &c->a->bufs) != 0) {
        conn_close(c);
        return;
    }
    sy_buf_compact(&c->in);
    ssize_t n = read(c->fd, sy_buf_tail(&c->in), sy_buf_room(&c->in));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    if (n < 0)
        return;
    c->in.len += (uint32_t)n;
    size_t used = 0;
    int rc = sy_h1_execute(&c->req, sy_buf_data(&c->in), c->in.len, &used);
    sy_buf_consume(&c->in, used);
    if (rc == SY_H1_ERROR) {
        respond_error(c, c->req.err_status, c->req.err_reason);
        return;
    }
    if (c->done_reading)
        dispatch(c);
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    admin_conn_t *c = t->data;
    (void)loop;
    (void)revents;
    if (c->waiting)
        return; /* the store answers within its own command timeout */
    conn_close(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    sy_admin_t *a = io->data;
    (void)revents;
    for (int i = 0; i < 16; i++) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        admin_conn_t *c = calloc(1, sizeof(*c));
        char *arena = malloc(sy_h1_arena_size(ADMIN_MAX_HEAD, 64));
        if (c == NULL || arena == NULL) {
            free(c);
            free(arena);
            close(fd);
            continue;
        }
        c->a = a;
        c->fd = fd;
        c->refs = 1;
        c->arena = arena;
        sy_list_init(&c->node);
        sy_list_push_back(&a->conns, &c->node);
        sy_h1_init(&c->req, true, &admin_cbs, c, ADMIN_MAX_HEAD, 4096, 64);
        sy_h1_set_arena(&c->req, arena, sy_h1_arena_size(ADMIN_MAX_HEAD, 64));
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_init(&c->timer, conn_timeout_cb, ADMIN_TIMEOUT, ADMIN_TIMEOUT);
        c->timer.data = c;
        ev_timer_start(loop, &c->timer);
    }
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: only this host can connect. */
static bool addr_is_loopback(const sy_addr_t *addr)
{
    if (addr->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&addr->ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (addr->ss.ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&addr->ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return false;
}

static void set_token(sy_admin_t *a, const sy_config_t *cfg)
{
    const sy_admin_conf_t *ac = sy_config_ext(cfg, "admin");
    if (a->token != NULL) {
        OPENSSL_cleanse(a->token, strlen(a->token));
        free(a->token);
    }
    a->token = ac && ac->token ? strdup(ac->token) : NULL;
}

sy_admin_t *sy_admin_create(struct ev_loop *loop, const sy_config_t *cfg, sy_flagstore_t *store,
                            sy_monitor_t *monitor, const sy_endpoints_t *eps)
{
    const sy_admin_conf_t *ac = sy_config_ext(cfg, "admin");
    sy_addr_t addr;
    const char *why = NULL;
    if (ac != NULL)
        addr = ac->addr;
    else if (sy_addr_parse("127.0.0.1:9901", &addr, &why) != 0)
        return NULL;
    sy_admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->loop = loop;
    a->store = store;
    a->monitor = monitor;
    a->endpoints = eps;
    a->alert_label = "route";
    sy_list_init(&a->conns);
    sy_bufpool_init(&a->bufs, ADMIN_MAX_HEAD + 4096, 4);
    set_token(a, cfg);
    a->fd = sy_net_listen(&addr, 128);
    if (a->fd < 0) {
        char msg[512];
        sy_net_listen_error(&addr, -a->fd, msg, sizeof(msg));
        sy_error("admin: %s", msg);
        sy_bufpool_destroy(&a->bufs);
        free(a->token);
        free(a);
        return NULL;
    }
    ev_io_init(&a->accept_io, accept_cb, a->fd, EV_READ);
    a->accept_io.data = a;
    ev_io_start(loop, &a->accept_io);
    a->reads_need_token = !addr_is_loopback(&addr);
    a->history = monitor ? sy_history_create(loop, monitor) : NULL;
    if (monitor != NULL && a->history == NULL)
        sy_warn("admin: out of memory: the dashboard has no history");
    if (a->token == NULL)
        sy_warn("admin: no token_file configured: the admin API refuses every write%s",
                a->reads_need_token ? ", and every read but /healthz and /readyz (the address is not loopback)" : "");
    else if (a->reads_need_token)
        sy_info("admin: the address is not loopback: reads need the token too (all but /healthz and /readyz)");
    return a;
}

void sy_admin_reload(sy_admin_t *a, const sy_config_t *cfg)
{
    set_token(a, cfg);
}

void sy_admin_set_audit(sy_admin_t *a, sy_audit_t *audit)
{
    a->audit = audit;
}

void sy_admin_set_trip(sy_admin_t *a, sy_trip_t *trip)
{
    a->trip = trip;
}

void sy_admin_set_shadow(sy_admin_t *a, struct sy_shadowmon *shadow)
{
    a->shadow = shadow;
}

void sy_admin_set_fleet(sy_admin_t *a, sy_fleet_t *fleet)
{
    a->fleet = fleet;
}

void sy_admin_set_plan(sy_admin_t *a, sy_plan_t *plan)
{
    a->plan = plan;
}

void sy_admin_set_ready(sy_admin_t *a, bool ready)
{
    a->ready = ready;
}

void sy_admin_stop_listening(sy_admin_t *a)
{
    if (a->fd < 0)
        return;
    ev_io_stop(a->loop, &a->accept_io);
    sy_net_close_listener(a->fd);
    a->fd = -1;
}

void sy_admin_destroy(sy_admin_t *a)
{
    if (a == NULL)
        return;
    sy_admin_stop_listening(a);
    while (!sy_list_empty(&a->conns)) {
        admin_conn_t *c = sy_container_of(a->conns.next, admin_conn_t, node);
        conn_close(c);
    }
    sy_bufpool_destroy(&a->bufs);
    sy_history_destroy(a->history);
    if (a->token != NULL) {
        OPENSSL_cleanse(a->token, strlen(a->token));
        free(a->token);
    }
    free(a);
}
