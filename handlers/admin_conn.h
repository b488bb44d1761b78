/* Inside handlers/: the admin connection as the endpoint handlers see it, the
 * answers they may give, and the one mapping from sy_err_t to an HTTP status.
 * Not for other folders (the public API is handlers/admin.h). Everything here
 * runs on the control thread; a connection is answered at most once (a second
 * answer is dropped), and an answer after close is dropped too. */
#ifndef SY_ADMIN_CONN_H
#define SY_ADMIN_CONN_H

#include "handlers/admin.h"

#include "proxy/buf.h"
#include "proxy/err.h"
#include "proxy/h1.h"
#include "proxy/list.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define ADMIN_MAX_HEAD 16384
#define ADMIN_MAX_BODY 65536

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
    const char *extra_head; /* a static header line ("Name: value\r\n") for the answer, or NULL */
    char plan_route[128]; /* the route of a plan request in flight */
} admin_conn_t;

struct sy_admin {
    struct ev_loop *loop;
    const sy_config_t *cfg;
    sy_flagstore_t *store;
    sy_monitor_t *monitor;
    const sy_endpoints_t *endpoints; /* the endpoints' state, for /status and /metrics */
    sy_audit_t *audit;
    sy_trip_t *trip; /* the trip owner, for the Alertmanager webhook */
    struct sy_history *history; /* the dashboard's last minutes (owned; NULL: none) */
    struct sy_shadowmon *shadow; /* shadow traffic results (NULL: none) */
    sy_fleet_t *fleet; /* the fleet's view, for GET /fleet (NULL: none) */
    sy_plan_t *plan; /* the plans' owner (GET plan, pause, continue) */
    int fd;
    ev_io accept_io;
    sy_bufpool_t bufs;
    sy_list_t conns;
    char *token;
    const char *alert_label;
    bool ready;
    bool reads_need_token; /* the listener is not on loopback */
};

/* An endpoint: `name` is the {name} of the path pattern ("" when it has none);
 * `body` is the request's JSON object or NULL (borrowed for the call). */
typedef void sy_admin_ep_fn(admin_conn_t *c, const char *name, json_t *body);

/* The one place where an error becomes an HTTP status. */
int sy_http_status_of(sy_err_t err);

/* Answers. respond_json takes j; respond_big takes text (malloc'd, len bytes)
 * and sends it after the head; both close lingering once it is out. */
void sy_admin_respond_json(admin_conn_t *c, int status, json_t *j);
void sy_admin_respond_error(admin_conn_t *c, int status, const char *reason);
void sy_admin_respond_big(admin_conn_t *c, char *text, size_t len, const char *content_type, bool no_store);
/* Drops the reference a pending store or record request held. */
void sy_admin_conn_release(admin_conn_t *c);

/* One query-string parameter, percent-decoded. Returns false when absent;
 * *bad is set when it is present but malformed or too long. */
bool sy_admin_query_param(const admin_conn_t *c, const char *name, char *out, size_t cap, bool *bad);

/* The request's actor (body "actor", else X-Switchyard-Actor, else
 * "admin-api"); valid until the next request is read. */
const char *sy_admin_actor_of(admin_conn_t *c, json_t *body);
/* The body's "reason" (or ""): false, answered 400, when it is not a string
 * of at most 255 characters. */
bool sy_admin_reason_of(admin_conn_t *c, json_t *body, const char **out);
/* A change succeeded: the answer (taken) waits, with the reference held for the
 * store, until its event is fsync'd in the journal. */
void sy_admin_answer_after_record(admin_conn_t *c, json_t *answer);
/* A change failed: answered with the status of err, the store's reference dropped. */
void sy_admin_change_failed(admin_conn_t *c, sy_err_t err, const char *reason);
/* Where the flags in force come from, for /status, /readyz and the cohort. */
const char *sy_admin_flags_from(const sy_flagstore_t *store);

/* Short names for the endpoint files. */
static inline void respond_json(admin_conn_t *c, int status, json_t *j) { sy_admin_respond_json(c, status, j); }
static inline void respond_error(admin_conn_t *c, int status, const char *reason)
{
    sy_admin_respond_error(c, status, reason);
}
static inline const char *actor_of(admin_conn_t *c, json_t *body) { return sy_admin_actor_of(c, body); }
static inline bool reason_of(admin_conn_t *c, json_t *body, const char **out)
{
    return sy_admin_reason_of(c, body, out);
}

/* The endpoints, by area (the registry table in admin.c lists them all). */
sy_admin_ep_fn sy_admin_ep_status, sy_admin_ep_cohort, sy_admin_ep_percent, sy_admin_ep_test_users,
    sy_admin_ep_rollback, sy_admin_ep_resume, sy_admin_ep_promote, sy_admin_ep_route, sy_admin_ep_plan,
    sy_admin_ep_plan_pause, sy_admin_ep_plan_continue; /* api_routes.c */
sy_admin_ep_fn sy_admin_ep_events, sy_admin_ep_windows;           /* api_record.c */
sy_admin_ep_fn sy_admin_ep_metrics;                               /* metrics.c */
sy_admin_ep_fn sy_admin_ep_dashboard, sy_admin_ep_history;        /* dashboard.c */
sy_admin_ep_fn sy_admin_ep_diffs;                                 /* api_shadow.c */
/* For /status: the pools with their endpoints (api_routes.c), the record (api_record.c). */
json_t *sy_admin_pools_json(const sy_admin_t *a);
json_t *sy_admin_record_json(sy_audit_t *a);

#endif
