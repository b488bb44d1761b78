/* The two hooks between the engine and the rest of the gateway.
 *
 * The router decides, per request, which endpoint serves it (routing/ implements
 * it), and where a request goes when its endpoint failed before anything was
 * sent (fallback). The observer is told an exchange's outcome as soon as it is
 * known, before the response leaves the gateway (early), and how each exchange
 * ended (record); healthcheck/ feeds its windows and trip rules from them. The engine knows nothing of cohorts, flags or health beyond
 * these structs; `main` wires the implementations in. Both hooks are called on a
 * worker's loop and must not block. */
#ifndef SY_HOOKS_H
#define SY_HOOKS_H

#include "proxy/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct sy_snapshot;

typedef struct sy_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} sy_header_t;

/* A parsed request head, valid only during the call. */
typedef struct sy_request_view {
    const char *method;
    size_t method_len;
    const char *path;  /* request target up to '?' */
    size_t path_len;
    const char *query; /* after '?', NULL when absent */
    size_t query_len;
    const char *host;  /* Host header, NULL when absent */
    size_t host_len;
    const sy_header_t *headers;
    size_t nheaders;
    const struct sockaddr *client;
    /* The body, when the router asked for it (want_body): */
    bool has_body;         /* the request has a body at all */
    int body_state;        /* SY_BODY_NONE, SY_BODY_COMPLETE or SY_BODY_TOO_BIG */
    const char *body;      /* valid with SY_BODY_COMPLETE */
    size_t body_len;
} sy_request_view_t;

enum { SY_BODY_NONE = 0, SY_BODY_COMPLETE = 1, SY_BODY_TOO_BIG = 2 };

/* What the router says. Strings point into the snapshot (valid while the
 * request holds it) or are static. */
typedef struct sy_decision {
    const sy_endpoint_t *endpoint; /* NULL: answer locally with `status` */
    int status;                    /* 0 when an endpoint was chosen */
    const char *error;             /* reason for a local answer */
    int route_index;               /* -1: no route */
    const char *route;
    int variant_index;             /* 0 legacy, 1 new */
    const char *variant;
    const char *reason;            /* why this variant: bucket, test_user, ... */
    bool expose_variant;           /* add X-Switchyard-Variant to the response */
    size_t want_body;              /* >0: decide again with up to this many body bytes */
    const char *strip_header;      /* request header consumed by the router (override) */
    const char *fallback;          /* non-NULL: a fallback decision, and why the first choice failed */
    char user[64];                 /* user key, cut to fit, for the access log */
} sy_decision_t;

typedef struct sy_router {
    /* Fills out. `rr` is a per-worker counter for round robin. Returns 0. */
    int (*decide)(void *ctx, const struct sy_snapshot *snap, const sy_request_view_t *req,
                  uint32_t rr, sy_decision_t *out);
    /* `failed`'s endpoint failed before any byte of the request reached it (`why`:
     * "connect"). Fills out with where the request goes instead (out->fallback =
     * why) and returns 0, or returns SY_EDECLINED: the failure is the answer. The
     * engine asks at most once per request. May be NULL. */
    int (*fallback)(void *ctx, const struct sy_snapshot *snap, const sy_decision_t *failed, const char *why,
                    uint32_t rr, sy_decision_t *out);
    /* A healthy endpoint of route `route`'s variant (0 legacy, 1 new) for a
     * shadow request, or NULL. May be NULL (no shadowing). */
    const sy_endpoint_t *(*pick)(void *ctx, const struct sy_snapshot *snap, int route, int variant, uint32_t rr);
    void *ctx;
} sy_router_t;

typedef enum sy_xerr {
    SY_XERR_NONE = 0,
    SY_XERR_STATUS,  /* a 5xx (or listed status) from the backend */
    SY_XERR_CONNECT, /* connect failed or was refused */
    SY_XERR_RESET,   /* the backend closed or reset mid-exchange */
    SY_XERR_TIMEOUT, /* connect, header or body timeout on the backend side */
    SY_XERR_CLIENT,  /* the client went away: not the backend's fault */
} sy_xerr_t;

typedef struct sy_outcome {
    const sy_decision_t *decision;
    int status;           /* status sent to the client (0 if none was) */
    sy_xerr_t error;
    uint64_t ttfb_us;     /* request start to first response byte from the backend */
    uint64_t total_us;    /* request start to last byte sent */
    uint64_t bytes_in, bytes_out;
    bool fell_back;       /* this attempt failed and the request went on to a fallback */
    bool early;           /* `early` was told (early_status, early_error) for this exchange */
    int early_status;
    sy_xerr_t early_error;
} sy_outcome_t;

/* How a shadowed request ended (proxy/shadow.h): compared, or why not. */
typedef enum sy_shadow_outcome {
    SY_SHADOW_COMPARED = 0,
    SY_SHADOW_SKIP_METHOD,          /* the method is not listed: not shadowed */
    SY_SHADOW_SKIP_REQ_TOO_LARGE,   /* the request body exceeds max_body */
    SY_SHADOW_SKIP_INFLIGHT,        /* max_inflight shadows already alive on this worker */
    SY_SHADOW_SKIP_NO_ENDPOINT,     /* no healthy endpoint of new */
    SY_SHADOW_SKIP_LEGACY_FAILED,   /* the user's exchange did not end with a whole response */
    SY_SHADOW_SKIP_LEGACY_TOO_LARGE,/* legacy's body exceeds max_body: not comparable */
    SY_SHADOW_NEW_TOO_LARGE,        /* new's body exceeds max_body: not comparable */
    SY_SHADOW_NEW_TIMEOUT,          /* new did not answer within timeout */
    SY_SHADOW_NEW_ERROR,            /* new refused, reset or sent garbage */
    SY_SHADOW_SKIP_NOMEM,
    SY_SHADOW_OUTCOMES
} sy_shadow_outcome_t;

/* One side's answer to a shadowed request, valid during the hook's call. */
typedef struct sy_shadow_side {
    int status;
    const sy_header_t *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    uint64_t latency_us; /* the request read whole (legacy) or sent (shadow) to the response's end */
} sy_shadow_side_t;

struct sy_shadow_conf;

/* A shadow's end. With SY_SHADOW_COMPARED legacy and shadow are set, noise
 * too when the route asked for noise subtraction and legacy's second answer
 * came; otherwise only the outcome, the route and the request are. */
typedef struct sy_shadow_result {
    int route_index;
    const char *route;
    sy_shadow_outcome_t outcome;
    const struct sy_shadow_conf *conf;
    const char *method;
    const char *target;
    const sy_shadow_side_t *legacy, *shadow, *noise;
    bool noise_failed;   /* noise was asked for and legacy's second answer did not come */
} sy_shadow_result_t;

typedef struct sy_observer {
    /* The exchange ended (or an attempt that fell back: o->fell_back). */
    void (*record)(void *ctx, int worker, const struct sy_snapshot *snap, const sy_outcome_t *o);
    /* The outcome is known and nothing of it has reached the client yet: the
     * backend's final response head arrived (o->status), or the gateway is about
     * to answer an upstream failure itself (o->status, o->error). At most once
     * per exchange, before its response head is written; `record` follows at the
     * end with o->early set. Only decision, status and error are filled. May be
     * NULL. */
    void (*early)(void *ctx, int worker, const struct sy_snapshot *snap, const sy_outcome_t *o);
    void *ctx;
    /* A shadowed request ended (proxy/shadow.h): compare and count. Called on
     * the worker's loop, never with a user's response waiting on it. May be
     * NULL (nothing is shadowed). */
    void (*shadow)(void *shadow_ctx, int worker, const struct sy_snapshot *snap, const sy_shadow_result_t *r);
    void *shadow_ctx;
} sy_observer_t;

#endif
