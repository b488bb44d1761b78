#include "handlers/admin.h"

#include "handlers/alertmanager.h"

#include "proxy/h1.h"
#include "proxy/headers.h"
#include "proxy/list.h"
#include "proxy/log.h"
#include "proxy/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "routing/route.h"
#include "routing/router.h"

#define ADMIN_MAX_HEAD 16384
#define ADMIN_MAX_BODY 65536
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

typedef struct admin_conn {
    sy_list_t node;
    struct sy_admin *a;
    int fd;
    ev_io io;
    ev_timer timer;
    sy_buf_t in, out;
    sy_h1_t req;
    char *arena;
    char body[ADMIN_MAX_BODY + 1];
    size_t body_len;
    bool head_done, done_reading, waiting, responded, closed, lingering;
    size_t linger_left; /* bytes still discarded while lingering */
    char *big;          /* a body larger than a buffer (metrics), owned, sent after `out` */
    json_t *answer;     /* a change's answer, held until its event is in the journal */
    size_t big_len, big_off;
    int refs; /* 1 for the connection, +1 while a store request is out */
} admin_conn_t;

struct sy_admin {
    struct ev_loop *loop;
    const sy_config_t *cfg;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
    sy_audit_t *audit;
    sy_trip_t *trip;
    int fd;
    ev_io accept_io;
    sy_bufpool_t bufs;
    sy_list_t conns;
    char *token;
    const char *alert_label;
    bool ready;
    bool reads_need_token; /* the listener is not on loopback */
};

typedef struct endpoint {
    const char *method;
    const char *prefix; /* path prefix; {name} follows for route endpoints */
    const char *suffix; /* after the route name, or NULL for exact paths */
    bool write;
    void (*fn)(admin_conn_t *c, const char *route, json_t *body);
} endpoint_t;

static void conn_release(admin_conn_t *c)
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
    conn_release(c);
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

static void respond_json(admin_conn_t *c, int status, json_t *j)
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
                                "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                       status, sy_headers_status_text(status), sy_headers_date(time(NULL)), len + 1) != 0 ||
        sy_buf_append(&c->out, text ? text : "", len) != 0 || sy_buf_append(&c->out, "\n", 1) != 0) {
        free(text);
        conn_close(c);
        return;
    }
    free(text);
    flush_out(c);
}

static void respond_error(admin_conn_t *c, int status, const char *reason)
{
    respond_json(c, status, json_pack("{s:s, s:s}", "error", sy_headers_error_kind(status), "reason", reason));
}

/* A JSON text made elsewhere (PostgreSQL's), of any size: sent after the head. */
static void respond_raw_json(admin_conn_t *c, const char *text)
{
    if (c->closed || c->responded)
        return;
    size_t len = strlen(text);
    c->big = malloc(len + 1);
    if (c->big == NULL) {
        respond_error(c, 500, "out of memory");
        return;
    }
    c->responded = true;
    memcpy(c->big, text, len);
    c->big[len] = '\n';
    c->big_len = len + 1;
    if (sy_buf_take(&c->out, &c->a->bufs) != 0 ||
        sy_buf_appendf(&c->out, "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: application/json\r\n"
                                "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                       sy_headers_date(time(NULL)), c->big_len) != 0) {
        conn_close(c);
        return;
    }
    flush_out(c);
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* One query-string parameter, percent-decoded. Returns false when absent;
 * *bad is set when it is present but malformed or too long. */
static bool query_param(const admin_conn_t *c, const char *name, char *out, size_t cap, bool *bad)
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

static json_t *route_json(const sy_route_t *r, const sy_route_flags_t *f)
{
    if (r->new_pool == NULL) /* a plain route: no cohort, no flags, legacy only */
        return json_pack("{s:s, s:b, s:s, s:n, s:I, s:I}", "name", r->name, "plain", 1, "legacy", r->legacy->name,
                         "new", "jwt_refused", (json_int_t)atomic_load_explicit(&r->jwt_refused, memory_order_relaxed),
                         "json_no_key", (json_int_t)atomic_load_explicit(&r->json_no_key, memory_order_relaxed));
    json_t *users = json_array();
    for (size_t i = 0; i < f->ntest_users && i < 100; i++)
        json_array_append_new(users, json_string(f->test_users[i]));
    json_t *j = json_pack("{s:s, s:s, s:i, s:f, s:i, s:s?, s:i, s:o, s:I, s:s, s:s?, s:s?, s:s?, s:s, s:s?, s:I, s:I}",
                     "name", r->name, "state", sy_state_name(f->state), "percent_bp", f->percent_bp, "percent",
                     f->percent_bp / 100.0, "prev_percent_bp", f->prev_percent_bp, "salt", f->salt,
                     "test_users_count", (int)f->ntest_users, "test_users", users, "version",
                     (json_int_t)f->version, "source", f->source ? f->source : "config", "actor", f->actor,
                     "reason", f->reason, "updated_at", f->updated_at, "legacy", r->legacy->name, "new",
                     r->new_pool ? r->new_pool->name : NULL, "jwt_refused",
                     (json_int_t)atomic_load_explicit(&r->jwt_refused, memory_order_relaxed), "json_no_key",
                     (json_int_t)atomic_load_explicit(&r->json_no_key, memory_order_relaxed));
    json_object_set_new(j, "plain", json_false());
    return j;
}

static json_t *pools_json(const sy_admin_t *a);
static json_t *record_json(sy_audit_t *a);

static json_t *window_json(const sy_monitor_t *m, const char *route)
{
    for (size_t i = 0; m != NULL && i < sy_monitor_nroutes(m); i++) {
        const sy_route_view_t *v = sy_monitor_route(m, i);
        if (strcmp(v->route, route) != 0)
            continue;
        return json_pack("{s:f, s:s, s:s?, s:s, s:o, s:o, s:I, s:I}", "seconds", v->window_s, "verdict",
                         sy_level_name(v->verdict.level), "rule", v->verdict.rule, "detail", v->verdict.detail,
                         "legacy", sy_trip_side_json(&v->window[0], v->window_s), "new", sy_trip_side_json(&v->window[1], v->window_s),
                         "trips", (json_int_t)v->trips, "warnings", (json_int_t)v->warnings);
    }
    return json_null();
}

static void ep_status(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    const sy_config_t *cfg = sy_flagstore_config(c->a->store);
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    const sy_route_flags_t *flags = sy_flagstore_flags(c->a->store);
    json_t *routes = json_array();
    for (size_t i = 0; rs != NULL && i < rs->n; i++) {
        json_t *r = route_json(&rs->routes[i], &flags[i]);
        json_t *w = window_json(c->a->monitor, rs->routes[i].name);
        if (rs->routes[i].new_pool == NULL && json_is_object(w))
            json_object_del(w, "new"); /* a plain route has one side */
        json_object_set_new(r, "window", w);
        json_object_set_new(r, "refused", sy_flagstore_route_refused(c->a->store, i));
        json_array_append_new(routes, r);
    }
    sy_flagstore_status_t st;
    sy_flagstore_status(c->a->store, &st);
    json_t *redis = json_pack("{s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:s}", "configured", st.configured, "connected",
                              st.connected, "keyspace_notifications", st.notifications, "synced", st.synced,
                              "refused_edits", (json_int_t)st.refused, "syncs", (json_int_t)st.syncs, "reconnects",
                              (json_int_t)st.reconnects, "last_error", st.last_error);
    respond_json(c, 200, json_pack("{s:o, s:o, s:o, s:o, s:s}", "routes", routes, "pools", pools_json(c->a), "redis",
                                   redis, "record", record_json(c->a->audit), "flags_from",
                                   !st.configured ? "config" : st.synced ? "redis" : "config (redis not read yet)"));
}

/* GET /routes/{name}/cohort?user=KEY: the bucket and the decision with the flags
 * this gateway routes with now (`switchyard cohort --live`). */
static void ep_cohort(admin_conn_t *c, const char *route, json_t *body)
{
    (void)body;
    const sy_routes_t *rs = sy_config_ext(sy_flagstore_config(c->a->store), "routes");
    const sy_route_t *r = sy_route_find(rs, route);
    if (r == NULL) {
        respond_error(c, 404, "no such route");
        return;
    }
    char user[512];
    bool bad = false;
    if (!query_param(c, "user", user, sizeof(user), &bad)) {
        respond_error(c, 400, bad ? "query parameter 'user' is malformed or longer than 511 bytes"
                                  : "send ?user=KEY (the user key, percent-encoded)");
        return;
    }
    const sy_route_flags_t *f = &sy_flagstore_flags(c->a->store)[r - rs->routes];
    uint32_t bucket;
    sy_variant_t v;
    sy_reason_t why;
    sy_route_cohort(r, f, user, &bucket, &v, &why);
    sy_flagstore_status_t st;
    sy_flagstore_status(c->a->store, &st);
    respond_json(c, 200, json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:i, s:I, s:s}", "route", r->name, "user", user,
                                   "bucket", (int)bucket, "variant", sy_variant_name(v), "reason", sy_reason_name(why),
                                   "flags_from",
                                   !st.configured ? "config" : st.synced ? "redis" : "config (redis not read yet)",
                                   "state", r->new_pool ? sy_state_name(f->state) : "plain", "percent_bp",
                                   (int)f->percent_bp, "version", (json_int_t)f->version, "salt", f->salt));
}

/* --- the record: /events and /windows ------------------------------------------------ */

static void read_done(void *ud, int status, const char *text)
{
    admin_conn_t *c = ud;
    c->waiting = false;
    if (status == 200)
        respond_raw_json(c, text);
    else
        respond_error(c, status, text);
    conn_release(c);
}

static bool read_params(admin_conn_t *c, const char *const *names, char (*vals)[160], bool *has, long *limit)
{
    bool bad = false;
    for (size_t i = 0; names[i] != NULL; i++) {
        has[i] = query_param(c, names[i], vals[i], sizeof(vals[i]), &bad);
        if (bad) {
            char why[200];
            snprintf(why, sizeof(why), "query parameter '%s' is malformed or longer than 159 bytes", names[i]);
            respond_error(c, 400, why);
            return false;
        }
    }
    char lim[32];
    *limit = 100;
    if (query_param(c, "limit", lim, sizeof(lim), &bad)) {
        char *end;
        *limit = strtol(lim, &end, 10);
        bad = *end != '\0' || *limit < 1 || *limit > 1000;
    }
    if (bad) {
        respond_error(c, 400, "limit must be a whole number from 1 to 1000");
        return false;
    }
    return true;
}

static void ep_events(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    static const char *const names[] = {"route", "kind", "since", NULL};
    char vals[3][160];
    bool has[3];
    long limit;
    if (!read_params(c, names, vals, has, &limit))
        return;
    c->refs++;
    c->waiting = true;
    sy_audit_events(c->a->audit, has[0] ? vals[0] : NULL, has[1] ? vals[1] : NULL, has[2] ? vals[2] : NULL, limit,
                    read_done, c);
}

static void ep_windows(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    static const char *const names[] = {"route", "since", NULL};
    char vals[2][160];
    bool has[2];
    long limit;
    if (!read_params(c, names, vals, has, &limit))
        return;
    c->refs++;
    c->waiting = true;
    sy_audit_windows(c->a->audit, has[0] ? vals[0] : NULL, has[1] ? vals[1] : NULL, limit, read_done, c);
}

static json_t *record_json(sy_audit_t *a)
{
    sy_audit_status_t st;
    sy_audit_status(a, &st);
    if (!st.configured)
        return json_pack("{s:b}", "configured", 0);
    const sy_journal_stats_t *j = &st.journal;
    return json_pack("{s:b, s:b, s:b, s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:I, s:I, s:I, s:s}",
                     "configured", 1, "connected", st.connected, "schema_ready", st.schema_ready, "schema_version",
                     st.schema_version, "journal", "bytes", (json_int_t)j->bytes, "max_bytes",
                     (json_int_t)j->max_bytes, "events_written", (json_int_t)(j->next[0] - 1), "events_durable",
                     (json_int_t)j->durable[0], "events_acked", (json_int_t)j->acked[0], "events_refused",
                     (json_int_t)j->dropped[0], "windows_written", (json_int_t)(j->next[1] - 1), "windows_acked",
                     (json_int_t)j->acked[1], "windows_dropped", (json_int_t)j->dropped[1], "fsyncs",
                     (json_int_t)j->fsyncs, "events_inserted", (json_int_t)st.inserted[0], "windows_inserted",
                     (json_int_t)st.inserted[1], "rejected", (json_int_t)st.rejected, "last_error", st.last_error);
}

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
    sy_flagstore_status_t st;
    sy_flagstore_status(c->a->store, &st);
    /* Traffic flows on the config's flags even before Redis answers: ready means
     * the workers run; the flags' origin is reported alongside. */
    respond_json(c, c->a->ready ? 200 : 503,
                 json_pack("{s:s, s:s}", "status", c->a->ready ? "ready" : "not ready", "flags_from",
                           !st.configured ? "config" : st.synced ? "redis" : "config (redis not read yet)"));
}

/* The change's event is on disk: now the change is answered. */
static void answer_synced(void *ud, bool durable)
{
    admin_conn_t *c = ud;
    c->waiting = false;
    json_t *answer = c->answer;
    c->answer = NULL;
    if (!durable)
        json_object_set_new(answer, "record_warning", json_string("the journal is behind: see the log"));
    respond_json(c, 200, answer);
    conn_release(c);
}

/* A change succeeded: the answer waits (the reference held for the store moves
 * to the journal sync) until its event is fsync'd in the journal. */
static void answer_after_record(admin_conn_t *c, json_t *answer)
{
    c->answer = answer;
    sy_audit_sync(c->a->audit, answer_synced, c);
}

static void store_done(void *ud, int status, const char *err, const sy_route_flags_t *result)
{
    admin_conn_t *c = ud;
    if (status == 200 && result != NULL) {
        const sy_config_t *cfg = sy_flagstore_config(c->a->store);
        const sy_routes_t *rs = sy_config_ext(cfg, "routes");
        const sy_route_flags_t *all = sy_flagstore_flags(c->a->store);
        size_t i = (size_t)(result - all);
        answer_after_record(c, result >= all && i < rs->n ? route_json(&rs->routes[i], result)
                                                          : json_pack("{s:s}", "status", "ok"));
        return;
    }
    c->waiting = false;
    respond_error(c, status, err ? err : "failed");
    conn_release(c);
}

static const char *actor_of(admin_conn_t *c, json_t *body)
{
    json_t *a = body ? json_object_get(body, "actor") : NULL;
    if (json_is_string(a) && json_string_length(a) > 0 && json_string_length(a) < 64)
        return json_string_value(a);
    const sy_header_t *h = sy_h1_find(&c->req.msg, "x-switchyard-actor");
    static char buf[64];
    if (h != NULL && h->value_len > 0 && h->value_len < sizeof(buf)) {
        memcpy(buf, h->value, h->value_len);
        buf[h->value_len] = '\0';
        return buf;
    }
    return "admin-api";
}

static bool reason_of(admin_conn_t *c, json_t *body, const char **out)
{
    json_t *r = body ? json_object_get(body, "reason") : NULL;
    *out = "";
    if (r == NULL)
        return true;
    if (!json_is_string(r) || json_string_length(r) > 255) {
        respond_error(c, 400, "\"reason\" must be a string of at most 255 characters");
        return false;
    }
    *out = json_string_value(r);
    return true;
}

static void submit(admin_conn_t *c, const char *route, sy_flag_request_t *req, json_t *body)
{
    char now[32];
    sy_flags_now(now);
    req->now = now;
    req->actor = actor_of(c, body);
    if (!reason_of(c, body, &req->reason))
        return;
    c->refs++;
    c->waiting = true;
    sy_flagstore_request(c->a->store, route, req, store_done, c);
}

static void ep_percent(admin_conn_t *c, const char *route, json_t *body)
{
    json_t *bp = body ? json_object_get(body, "percent_bp") : NULL;
    if (!json_is_integer(bp) || json_integer_value(bp) < 0 || json_integer_value(bp) > 10000) {
        respond_error(c, 400, "send {\"percent_bp\": N} with N a whole number 0..10000 (2500 is 25 %)");
        return;
    }
    sy_flag_request_t req = {.op = SY_OP_PERCENT, .percent_bp = (int32_t)json_integer_value(bp)};
    submit(c, route, &req, body);
}

static int string_list(json_t *v, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (v == NULL)
        return 0;
    if (!json_is_array(v) || json_array_size(v) > 1000)
        return -1;
    *out = calloc(json_array_size(v) + 1, sizeof(char *));
    if (*out == NULL)
        return -1;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[(*n)++] = json_string_value(e);
    }
    return 0;
}

static void ep_test_users(admin_conn_t *c, const char *route, json_t *body)
{
    const char **add = NULL, **rem = NULL;
    size_t nadd = 0, nrem = 0;
    if (body == NULL || string_list(json_object_get(body, "add"), &add, &nadd) != 0 ||
        string_list(json_object_get(body, "remove"), &rem, &nrem) != 0 || nadd + nrem == 0) {
        free(add);
        free(rem);
        respond_error(c, 400, "send {\"add\": [\"key\", ...], \"remove\": [\"key\", ...]} with strings");
        return;
    }
    sy_flag_request_t req = {.op = SY_OP_TEST_USERS, .add = add, .nadd = nadd, .remove = rem, .nremove = nrem};
    submit(c, route, &req, body);
    free(add);
    free(rem);
}

static void swap_done(void *ud, int status, const char *err, const sy_route_flags_t *result)
{
    admin_conn_t *c = ud;
    (void)result;
    if (status == 200) {
        answer_after_record(c, json_pack("{s:s}", "status", "swapped"));
        return;
    }
    c->waiting = false;
    respond_error(c, status, err ? err : "failed");
    conn_release(c);
}

static json_t *pools_json(const sy_admin_t *a)
{
    const sy_config_t *cfg = sy_flagstore_config(a->store);
    const sy_pool_flags_t *pf = sy_flagstore_pools(a->store);
    static const char *const colors[2] = {"blue", "green"};
    json_t *out = json_array();
    for (size_t i = 0; i < cfg->npools; i++) {
        const sy_pool_t *p = &cfg->pools[i];
        json_t *eps = json_array();
        long draining = 0;
        for (size_t e = 0; e < p->nendpoints; e++) {
            const sy_endpoint_t *ep = &p->endpoints[e];
            int color = p->colored && e >= p->color_first[1] ? 1 : 0;
            long inflight = atomic_load(&((sy_endpoint_t *)ep)->inflight);
            if (p->colored && color != pf[i].active)
                draining += inflight;
            json_array_append_new(eps, json_pack("{s:s, s:s?, s:b, s:i, s:I}", "endpoint", ep->name, "color",
                                                 p->colored ? colors[color] : NULL, "up", !atomic_load(&((sy_endpoint_t *)ep)->down),
                                                 "good_probes", atomic_load(&((sy_endpoint_t *)ep)->probe_ok),
                                                 "in_flight", (json_int_t)inflight));
        }
        json_array_append_new(out, json_pack("{s:s, s:b, s:s?, s:I, s:s?, s:s?, s:s?, s:I, s:o, s:o}", "name", p->name,
                                             "colored", p->colored, "active",
                                             p->colored ? colors[pf[i].active] : NULL, "version",
                                             (json_int_t)pf[i].version, "actor", pf[i].actor, "reason", pf[i].reason,
                                             "updated_at", pf[i].updated_at, "draining", (json_int_t)draining,
                                             "endpoints", eps, "refused", sy_flagstore_pool_refused(a->store, i)));
    }
    return out;
}

/* POST /pools/{name}/swap {"to": "green", "reason": "..."}: the target colour must
 * have passed `rise` probes in a row on every endpoint. */
static void ep_swap(admin_conn_t *c, const char *pool, json_t *body)
{
    const sy_config_t *cfg = sy_flagstore_config(c->a->store);
    const sy_pool_t *p = sy_config_pool(cfg, pool);
    if (p == NULL) {
        respond_error(c, 404, "no such pool");
        return;
    }
    if (!p->colored) {
        respond_error(c, 400, "the pool has no colours (colors: {blue, green})");
        return;
    }
    const char *to = body ? json_string_value(json_object_get(body, "to")) : NULL;
    int target;
    if (to == NULL)
        target = !sy_flagstore_pools(c->a->store)[p - cfg->pools].active;
    else if (strcmp(to, "blue") == 0)
        target = SY_BLUE;
    else if (strcmp(to, "green") == 0)
        target = SY_GREEN;
    else {
        respond_error(c, 400, "\"to\" must be \"blue\" or \"green\"");
        return;
    }
    char why[256], full[300];
    if (!sy_pool_color_ready(p, target, why, sizeof(why))) {
        snprintf(full, sizeof(full), "refused: %s", why);
        sy_warn("swap of pool %s %s", pool, full);
        respond_error(c, 409, full);
        return;
    }
    const char *reason = "";
    if (!reason_of(c, body, &reason))
        return;
    sy_info("swap: pool %s to %s requested by %s", pool, target ? "green" : "blue", actor_of(c, body));
    c->refs++;
    c->waiting = true;
    sy_flagstore_swap(c->a->store, pool, target, actor_of(c, body), reason, swap_done, c);
}

static void ep_rollback(admin_conn_t *c, const char *route, json_t *body)
{
    sy_flag_request_t req = {.op = SY_OP_ROLLBACK};
    submit(c, route, &req, body);
}

static void ep_resume(admin_conn_t *c, const char *route, json_t *body)
{
    sy_flag_request_t req = {.op = SY_OP_RESUME};
    submit(c, route, &req, body);
}

static void ep_promote(admin_conn_t *c, const char *route, json_t *body)
{
    sy_flag_request_t req = {.op = SY_OP_PROMOTE};
    submit(c, route, &req, body);
}

/* --- /metrics ---------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
    bool full;
} text_t;

static void metrics_append(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void metrics_append(text_t *t, const char *fmt, ...)
{
    if (t->full)
        return;
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = t->p ? vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2 + (n > 0 ? (size_t)n : 0) + 65536;
        char *np = ncap < (64u << 20) ? realloc(t->p, ncap) : NULL;
        if (np == NULL) {
            t->full = true;
            return;
        }
        t->p = np;
        t->cap = ncap;
    }
}

#define M(...) metrics_append(&t, __VA_ARGS__)

static void ep_metrics(admin_conn_t *c, const char *route, json_t *body)
{
    (void)route;
    (void)body;
    text_t t = {0};
    static const char *const variants[] = {"legacy", "new"};
    static const char *const kinds[] = {"status_listed", "status_5xx", "connect", "reset", "timeout", "client"};
    static const double le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    const sy_monitor_t *m = c->a->monitor;
    size_t n = m ? sy_monitor_nroutes(m) : 0;
    M("# HELP switchyard_requests_total Requests answered, by route and variant.\n"
      "# TYPE switchyard_requests_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int v = 0; v < 2; v++)
            M("switchyard_requests_total{route=\"%s\",variant=\"%s\"} %llu\n", sy_monitor_route(m, i)->route,
              variants[v], (unsigned long long)sy_monitor_route(m, i)->total[v].requests);
    M("# HELP switchyard_errors_total Errors by kind: a 5xx or listed status from the backend, a connect failure, "
      "a reset, a timeout; client aborts are counted apart and are not errors.\n"
      "# TYPE switchyard_errors_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int v = 0; v < 2; v++)
            for (int k = 0; k < 5; k++)
                M("switchyard_errors_total{route=\"%s\",variant=\"%s\",kind=\"%s\"} %llu\n",
                  sy_monitor_route(m, i)->route, variants[v], kinds[k],
                  (unsigned long long)sy_monitor_route(m, i)->total[v].by_kind[k]);
    M("# HELP switchyard_client_aborts_total Exchanges the client abandoned.\n"
      "# TYPE switchyard_client_aborts_total counter\n");
    for (size_t i = 0; i < n; i++)
        for (int v = 0; v < 2; v++)
            M("switchyard_client_aborts_total{route=\"%s\",variant=\"%s\"} %llu\n", sy_monitor_route(m, i)->route,
              variants[v], (unsigned long long)sy_monitor_route(m, i)->total[v].by_kind[5]);
    M("# HELP switchyard_fallbacks_total Requests bound for new served by legacy because new failed before "
      "anything was sent (each is also a connect error of new).\n"
      "# TYPE switchyard_fallbacks_total counter\n");
    for (size_t i = 0; i < n; i++)
        M("switchyard_fallbacks_total{route=\"%s\",reason=\"connect\"} %llu\n", sy_monitor_route(m, i)->route,
          (unsigned long long)sy_monitor_route(m, i)->fallbacks);
    M("# HELP switchyard_request_duration_seconds Time from the request's first byte to the response's last.\n"
      "# TYPE switchyard_request_duration_seconds histogram\n");
    for (size_t i = 0; i < n; i++) {
        for (int v = 0; v < 2; v++) {
            const sy_hist_t *h = &sy_monitor_route(m, i)->total[v].total;
            const char *rn = sy_monitor_route(m, i)->route;
            for (size_t k = 0; k < SY_ARRAY_LEN(le); k++)
                M("switchyard_request_duration_seconds_bucket{route=\"%s\",variant=\"%s\",le=\"%g\"} %llu\n", rn,
                  variants[v], le[k], (unsigned long long)sy_hist_count_le(h, (uint64_t)(le[k] * 1e6)));
            M("switchyard_request_duration_seconds_bucket{route=\"%s\",variant=\"%s\",le=\"+Inf\"} %llu\n", rn,
              variants[v], (unsigned long long)h->total);
            M("switchyard_request_duration_seconds_sum{route=\"%s\",variant=\"%s\"} %.6f\n", rn, variants[v],
              (double)h->sum_us / 1e6);
            M("switchyard_request_duration_seconds_count{route=\"%s\",variant=\"%s\"} %llu\n", rn, variants[v],
              (unsigned long long)h->total);
        }
    }
    const sy_config_t *cfg = sy_flagstore_config(c->a->store);
    const sy_routes_t *rs = sy_config_ext(cfg, "routes");
    const sy_route_flags_t *flags = sy_flagstore_flags(c->a->store);
    M("# HELP switchyard_route_percent Share of users routed to new, in percent.\n"
      "# TYPE switchyard_route_percent gauge\n");
    for (size_t i = 0; rs && i < rs->n; i++)
        M("switchyard_route_percent{route=\"%s\"} %.2f\n", rs->routes[i].name, flags[i].percent_bp / 100.0);
    M("# HELP switchyard_route_tripped 1 while the route is tripped (everyone on legacy).\n"
      "# TYPE switchyard_route_tripped gauge\n");
    for (size_t i = 0; rs && i < rs->n; i++)
        M("switchyard_route_tripped{route=\"%s\"} %d\n", rs->routes[i].name, flags[i].state == SY_STATE_TRIPPED);
    M("# HELP switchyard_route_state The route's state (1 for the current one).\n"
      "# TYPE switchyard_route_state gauge\n");
    for (size_t i = 0; rs && i < rs->n; i++)
        for (int st = 0; st < 4; st++)
            M("switchyard_route_state{route=\"%s\",state=\"%s\"} %d\n", rs->routes[i].name,
              sy_state_name((sy_route_state_t)st), flags[i].state == (sy_route_state_t)st);
    M("# HELP switchyard_trips_total Automatic trips by the comparator since start.\n"
      "# TYPE switchyard_trips_total counter\n");
    for (size_t i = 0; i < n; i++)
        M("switchyard_trips_total{route=\"%s\"} %llu\n", sy_monitor_route(m, i)->route,
          (unsigned long long)sy_monitor_route(m, i)->trips);
    M("# HELP switchyard_warnings_total Warnings (warn_* rules) since start.\n"
      "# TYPE switchyard_warnings_total counter\n");
    for (size_t i = 0; i < n; i++)
        M("switchyard_warnings_total{route=\"%s\"} %llu\n", sy_monitor_route(m, i)->route,
          (unsigned long long)sy_monitor_route(m, i)->warnings);
    sy_flagstore_status_t st;
    sy_flagstore_status(c->a->store, &st);
    M("# HELP switchyard_redis_connected 1 while the flag store is connected to Redis.\n"
      "# TYPE switchyard_redis_connected gauge\n"
      "switchyard_redis_connected %d\n"
      "# HELP switchyard_refused_edits_total Flag edits refused as invalid.\n"
      "# TYPE switchyard_refused_edits_total counter\n"
      "switchyard_refused_edits_total %llu\n",
      st.connected, (unsigned long long)st.refused);
    sy_audit_status_t as;
    sy_audit_status(c->a->audit, &as);
    if (as.configured) {
        static const char *const streams[] = {"events", "windows"};
        M("# HELP switchyard_postgres_connected 1 while the record's PostgreSQL connection is up and migrated.\n"
          "# TYPE switchyard_postgres_connected gauge\n"
          "switchyard_postgres_connected %d\n"
          "# HELP switchyard_journal_bytes Bytes in the local journal (records PostgreSQL may not have yet).\n"
          "# TYPE switchyard_journal_bytes gauge\n"
          "switchyard_journal_bytes %llu\n"
          "# HELP switchyard_journal_max_bytes The journal's bound (postgres.journal_max).\n"
          "# TYPE switchyard_journal_max_bytes gauge\n"
          "switchyard_journal_max_bytes %llu\n",
          as.schema_ready, (unsigned long long)as.journal.bytes, (unsigned long long)as.journal.max_bytes);
        M("# HELP switchyard_journal_pending Records journaled and not yet acknowledged by PostgreSQL.\n"
          "# TYPE switchyard_journal_pending gauge\n");
        for (int k = 0; k < 2; k++)
            M("switchyard_journal_pending{stream=\"%s\"} %llu\n", streams[k],
              (unsigned long long)(as.journal.next[k] - 1 - as.journal.acked[k]));
        M("# HELP switchyard_journal_dropped_total Records lost at the journal's bound or on a disk error (windows "
          "first; every event lost is also logged whole).\n"
          "# TYPE switchyard_journal_dropped_total counter\n");
        for (int k = 0; k < 2; k++)
            M("switchyard_journal_dropped_total{stream=\"%s\"} %llu\n", streams[k],
              (unsigned long long)as.journal.dropped[k]);
        M("# HELP switchyard_record_inserted_total Records inserted into PostgreSQL since start.\n"
          "# TYPE switchyard_record_inserted_total counter\n");
        for (int k = 0; k < 2; k++)
            M("switchyard_record_inserted_total{stream=\"%s\"} %llu\n", streams[k],
              (unsigned long long)as.inserted[k]);
    }
    M("# HELP switchyard_endpoint_up 1 when the endpoint takes traffic, 0 when health checks took it out.\n"
      "# TYPE switchyard_endpoint_up gauge\n");
    for (size_t p = 0; p < cfg->npools; p++)
        for (size_t e = 0; e < cfg->pools[p].nendpoints; e++)
            M("switchyard_endpoint_up{pool=\"%s\",endpoint=\"%s\"} %d\n", cfg->pools[p].name,
              cfg->pools[p].endpoints[e].name, !atomic_load(&cfg->pools[p].endpoints[e].down));
    if (t.full) {
        free(t.p);
        respond_error(c, 500, "metrics too large");
        return;
    }
    c->responded = true;
    c->big = t.p;
    c->big_len = t.len;
    if (sy_buf_take(&c->out, &c->a->bufs) != 0 ||
        sy_buf_appendf(&c->out, "HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                                "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                       sy_headers_date(time(NULL)), t.len) != 0) {
        conn_close(c);
        return;
    }
    flush_out(c);
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
    answer_after_record(c, answer);
}

/* The registry: every admin endpoint, in one table. */
static const endpoint_t endpoints[] = {
    {"GET", "/status", NULL, false, ep_status},
    {"GET", "/healthz", NULL, false, ep_healthz},
    {"GET", "/readyz", NULL, false, ep_readyz},
    {"GET", "/metrics", NULL, false, ep_metrics},
    {"POST", "/alerts/alertmanager", NULL, true, ep_alertmanager},
    {"POST", "/routes/", "/percent", true, ep_percent},
    {"POST", "/routes/", "/test-users", true, ep_test_users},
    {"POST", "/routes/", "/rollback", true, ep_rollback},
    {"POST", "/routes/", "/resume", true, ep_resume},
    {"POST", "/routes/", "/promote", true, ep_promote},
    {"POST", "/pools/", "/swap", true, ep_swap},
    {"GET", "/events", NULL, false, ep_events},
    {"GET", "/windows", NULL, false, ep_windows},
    {"GET", "/routes/", "/cohort", false, ep_cohort},
};

/* The probes (liveness, readiness) answer without the token whatever the address:
 * they say nothing about routes or users. */
static bool endpoint_open(const endpoint_t *e)
{
    return e->fn == ep_healthz || e->fn == ep_readyz;
}

static bool authorized(admin_conn_t *c)
{
    const char *token = c->a->token;
    const sy_header_t *h = sy_h1_find(&c->req.msg, "authorization");
    if (token == NULL || h == NULL || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0)
        return false;
    size_t tl = strlen(token), gl = h->value_len - 7;
    /* Constant time over the token's length; the length itself is not secret. */
    return gl == tl && CRYPTO_memcmp(h->value + 7, token, tl) == 0;
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
        char route[128] = "";
        if (e->suffix == NULL) {
            if (strcmp(path, e->prefix) != 0)
                continue;
        } else {
            size_t pl = strlen(e->prefix), sl = strlen(e->suffix);
            if (plen <= pl + sl || strncmp(path, e->prefix, pl) != 0 || strcmp(path + plen - sl, e->suffix) != 0)
                continue;
            size_t rl = plen - pl - sl;
            if (rl == 0 || rl >= sizeof(route) || memchr(path + pl, '/', rl) != NULL)
                continue;
            memcpy(route, path + pl, rl);
            route[rl] = '\0';
        }
        path_known = true;
        if (strcmp(m->method, e->method) != 0)
            continue;
        /* Writes always need the token; reads too when the listener is reachable
         * from other hosts (not loopback), except the probes. */
        bool need_token = e->write || (c->a->reads_need_token && !endpoint_open(e));
        if (need_token && c->a->token == NULL) {
            respond_error(c, 403, e->write ? "no admin token is configured (admin.token_file): writes are refused"
                                           : "no admin token is configured (admin.token_file) and the admin address "
                                             "is not loopback: reads are refused too");
            return;
        }
        if (need_token && !authorized(c)) {
            respond_error(c, 401, "a valid 'Authorization: Bearer TOKEN' header is needed");
            return;
        }
        json_t *body = NULL;
        if (c->body_len > 0) {
            json_error_t jerr;
            body = json_loadb(c->body, c->body_len, 0, &jerr);
            if (body == NULL || !json_is_object(body)) {
                char why[256];
                snprintf(why, sizeof(why), "the body is not a JSON object: %s (line %d, column %d)",
                         body ? "not an object" : jerr.text, jerr.line, jerr.column);
                json_decref(body);
                respond_error(c, 400, why);
                return;
            }
        }
        e->fn(c, route, body);
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
                            sy_monitor_t *monitor)
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
    if (a->token != NULL) {
        OPENSSL_cleanse(a->token, strlen(a->token));
        free(a->token);
    }
    free(a);
}
