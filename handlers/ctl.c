#include "handlers/ctl.h"

#include "flags/audit.h"
#include "flags/store.h"
#include "handlers/admin.h"
#include "handlers/top.h"
#include "healthcheck/baseline.h"
#include "healthcheck/notify.h"
#include "healthcheck/plan.h"
#include "healthcheck/rules.h"
#include "proxy/config.h"
#include "proxy/h1client.h"
#include "proxy/net.h"
#include "routing/route.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sy_ctl_parse_percent(const char *s, int *bp)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || v < 0)
        return -1;
    if (strcmp(end, "bp") == 0) {
        if (v != (int)v || v > 10000)
            return -1;
        *bp = (int)v;
        return 0;
    }
    if (*end != '\0' && strcmp(end, "%") != 0)
        return -1;
    if (v > 100)
        return -1;
    double b = v * 100.0;
    if (b - (int)(b + 0.5) > 1e-6 || (int)(b + 0.5) - b > 1e-6)
        return -1; /* finer than a basis point */
    *bp = (int)(b + 0.5);
    return 0;
}

static size_t url_encode(char *out, size_t cap, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *v != '\0' && n + 4 < cap; v++) {
        unsigned char ch = (unsigned char)*v;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch)) {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
    return n;
}

/* What changed, in a few words: percent before -> after, a colour, or a trip's numbers. */
static void event_summary(json_t *e, char *out, size_t cap)
{
    json_t *b = json_object_get(e, "before"), *a = json_object_get(e, "after"), *st = json_object_get(e, "stats");
    out[0] = '\0';
    if (json_is_object(st) && json_is_object(json_object_get(st, "new"))) {
        json_t *l = json_object_get(st, "legacy"), *n = json_object_get(st, "new");
        snprintf(out, cap, "new %lld/%lld errors, p99 %.1f ms; legacy %lld/%lld, p99 %.1f ms",
                 (long long)json_integer_value(json_object_get(n, "errors")),
                 (long long)json_integer_value(json_object_get(n, "requests")),
                 json_number_value(json_object_get(n, "p99_ms")),
                 (long long)json_integer_value(json_object_get(l, "errors")),
                 (long long)json_integer_value(json_object_get(l, "requests")),
                 json_number_value(json_object_get(l, "p99_ms")));
    } else if (json_is_object(a) && json_object_get(a, "active") != NULL) {
        snprintf(out, cap, "%s -> %s", json_string_value(json_object_get(b, "active")) ? json_string_value(json_object_get(b, "active")) : "?",
                 json_string_value(json_object_get(a, "active")));
    } else if (json_is_object(a) && json_object_get(a, "field") != NULL) {
        snprintf(out, cap, "%s=\"%s\"", json_string_value(json_object_get(a, "field")),
                 json_string_value(json_object_get(a, "value")));
    } else if (json_is_object(a) && json_is_object(b)) {
        snprintf(out, cap, "%s %.2f%% -> %s %.2f%%", json_string_value(json_object_get(b, "state")),
                 (double)json_integer_value(json_object_get(b, "percent_bp")) / 100.0,
                 json_string_value(json_object_get(a, "state")),
                 (double)json_integer_value(json_object_get(a, "percent_bp")) / 100.0);
    }
}

static void print_events(json_t *events)
{
    size_t k;
    json_t *e;
    printf("%-24s %-13s %-14s %-14s %s\n", "AT", "KIND", "ROUTE", "ACTOR", "REASON / CHANGE");
    json_array_foreach(events, k, e) {
        char summary[200];
        event_summary(e, summary, sizeof(summary));
        const char *route = json_string_value(json_object_get(e, "route"));
        const char *actor = json_string_value(json_object_get(e, "actor"));
        const char *reason = json_string_value(json_object_get(e, "reason"));
        printf("%-24s %-13s %-14s %-14s %s%s%s\n", json_string_value(json_object_get(e, "at")),
               json_string_value(json_object_get(e, "kind")), route ? route : "-", actor ? actor : "-",
               reason ? reason : "", reason && *reason && *summary ? " | " : "", summary);
    }
}

static int usage(void)
{
    fprintf(stderr,
            "usage: switchyard ctl [-a ADDR] [-t TOKENFILE] [-c CONFIG] [--json] COMMAND\n"
            "  status [--fleet]              (--fleet: every instance on this Redis, routes summed)\n"
            "  set ROUTE PERCENT [--reason R]        PERCENT: 25, 25%%, 2.5%% or 2500bp\n"
            "  test-users ROUTE add|rm KEY...\n"
            "  rollback ROUTE [--reason R]\n"
            "  resume ROUTE [--reason R]\n"
            "  promote ROUTE [--reason R]\n"
            "  swap POOL [--to blue|green] [--reason R]\n"
            "  top                                   live view of routes, pools and events (q quits)\n"
            "  plan ROUTE                            the rollout plan: step, hold, what it waits for\n"
            "  pause ROUTE | continue ROUTE [--reason R]   a plan (continue restarts the step's clock)\n"
            "  events [ROUTE] [--since 1h|2026-11-21T18:00:00Z] [--kind K] [--limit N]   newest first\n"
            "  windows [ROUTE] [--since ...] [--limit N]   per-minute numbers, newest first\n"
            "  diffs ROUTE                           shadow traffic: mismatches and the last mismatching pairs\n"
            "ADDR defaults to the config's admin.address, else 127.0.0.1:9901; TOKENFILE to\n"
            "admin.token_file, else $SWITCHYARD_TOKEN_FILE.\n");
    return 2;
}

/* The admin API's answers: a head, and a JSON body up to 16 MiB. */
static const sy_h1client_limits_t answer_limits = {
    .max_head = 16384,
    .max_headers = 100,
    .max_body = 16u << 20,
    .keep_body = true,
};

/* One request, blocking, each step within 10 s. Returns the status and the
 * body (*resp_body, owned by the caller), or 0 on a transport error, after
 * saying why on stderr. */
static int request(const char *addr_text, const char *token, const char *method, const char *path,
                   const char *body, char **resp_body)
{
    *resp_body = NULL;
    sy_addr_t addr;
    const char *why = NULL;
    if (sy_addr_parse(addr_text, &addr, &why) != 0) {
        fprintf(stderr, "ctl: bad address %s: %s\n", addr_text, why);
        return 0;
    }
    char *headers = NULL;
    if (asprintf(&headers, "%s%s%sContent-Type: application/json\r\nX-Switchyard-Actor: %s\r\n",
                 token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
                 getenv("USER") ? getenv("USER") : "ctl") < 0)
        return 0;
    sy_h1client_request_t req = {
        .method = method,
        .target = path,
        .host = addr_text,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
    };
    sy_h1client_resp_t resp;
    int status = 0;
    if (sy_h1client_resp_init(&resp, &answer_limits) != 0) {
        fprintf(stderr, "ctl: out of memory\n");
    } else {
        const char *err = sy_h1client_fetch(&addr, &req, 10.0, &resp);
        if (err == sy_h1client_err_refused || err == sy_h1client_err_connect)
            fprintf(stderr, "ctl: cannot reach the admin API at %s: %s\n", addr_text, err);
        else if (err != NULL)
            fprintf(stderr, "ctl: no HTTP answer from %s: %s\n", addr_text, err);
        else if ((*resp_body = strdup(resp.body ? resp.body : "")) != NULL)
            status = resp.status;
        sy_h1client_resp_free(&resp);
    }
    memset(headers, 0, strlen(headers)); /* it holds the token */
    free(headers);
    return status;
}

/* The refused hand edits still in Redis: which field, which value, why, since when, what is in force. */
static void print_refused(json_t *list)
{
    size_t k;
    json_t *x;
    json_array_foreach(list, k, x) printf("%-20s REFUSED %s=\"%s\" since %s: %s; in force: %s\n", "",
                                          json_string_value(json_object_get(x, "field")),
                                          json_string_value(json_object_get(x, "value")),
                                          json_string_value(json_object_get(x, "since")),
                                          json_string_value(json_object_get(x, "why")),
                                          json_string_value(json_object_get(x, "in_force")));
}

static void print_route(json_t *r)
{
    const char *name = json_string_value(json_object_get(r, "name"));
    bool plain = json_is_true(json_object_get(r, "plain"));
    const char *state = json_string_value(json_object_get(r, "state"));
    int bp = (int)json_integer_value(json_object_get(r, "percent_bp"));
    if (plain) /* no new pool: nothing ramps, nothing to compare */
        printf("%-20s %-9s  -> pool %s\n", name ? name : "?", "plain",
               json_string_value(json_object_get(r, "legacy")) ? json_string_value(json_object_get(r, "legacy")) : "?");
    else
        printf("%-20s %-9s %7.2f%% %6d  test users %-4d  v%-5lld %-8s %s%s\n", name ? name : "?", state ? state : "?",
           bp / 100.0, bp, (int)json_integer_value(json_object_get(r, "test_users_count")),
           (long long)json_integer_value(json_object_get(r, "version")),
           json_string_value(json_object_get(r, "source")) ? json_string_value(json_object_get(r, "source")) : "",
           json_string_value(json_object_get(r, "actor")) ? "by " : "",
           json_string_value(json_object_get(r, "actor")) ? json_string_value(json_object_get(r, "actor")) : "");
    const char *reason = json_string_value(json_object_get(r, "reason"));
    if (reason != NULL && *reason)
        printf("%-20s reason: %s\n", "", reason);
    json_t *w = json_object_get(r, "window");
    if (json_is_object(w)) {
        if (plain)
            printf("%-20s window %.0fs:\n", "", json_number_value(json_object_get(w, "seconds")));
        else
            printf("%-20s window %.0fs: %s%s%s\n", "", json_number_value(json_object_get(w, "seconds")),
                   json_string_value(json_object_get(w, "verdict")), json_string_value(json_object_get(w, "rule")) ? " " : "",
                   json_string_value(json_object_get(w, "rule")) ? json_string_value(json_object_get(w, "detail")) : "");
        static const char *const sides[] = {"legacy", "new"};
        for (int i = 0; i < 2; i++) {
            json_t *sd = json_object_get(w, sides[i]);
            if (!json_is_object(sd))
                continue;
            printf("%-20s   %-6s %8.1f req/s  errors %6.2f%% (%lld/%lld)  p50 %8.1f  p95 %8.1f  p99 %8.1f ms\n", "",
                   sides[i], json_number_value(json_object_get(sd, "rps")),
                   json_number_value(json_object_get(sd, "error_rate")) * 100,
                   (long long)json_integer_value(json_object_get(sd, "errors")),
                   (long long)json_integer_value(json_object_get(sd, "requests")),
                   json_number_value(json_object_get(sd, "p50_ms")), json_number_value(json_object_get(sd, "p95_ms")),
                   json_number_value(json_object_get(sd, "p99_ms")));
        }
    }
}

static char *read_token(const char *path)
{
    if (path == NULL)
        return NULL;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "ctl: cannot read the token file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

/* The config, when given, says where the admin API is and where its token is.
 * Returns 0 (*addr and *token_file owned by the caller, NULL when not set), or 2
 * after printing the config's errors. */
static int admin_of_config(const char *config_path, char **addr, char **token_file)
{
    *addr = NULL;
    *token_file = NULL;
    if (config_path != NULL) {
        static const sy_conf_section_t *const sections[] = {&sy_routes_section, &sy_redis_section, &sy_admin_section,
                                                            &sy_trip_section,   &sy_notify_section, &sy_postgres_section,
                                                            &sy_plan_section,   &sy_baseline_section};
        sy_conf_t errs;
        sy_config_t *cfg = sy_config_load(&errs, config_path, sections, SY_ARRAY_LEN(sections));
        if (cfg == NULL) {
            sy_conf_print_errors(&errs, stderr);
            sy_conf_close(&errs);
            return 2;
        }
        sy_conf_close(&errs);
        const sy_admin_conf_t *ac = sy_config_ext(cfg, "admin");
        if (ac != NULL) {
            *addr = strdup(ac->address);
            *token_file = ac->token_file ? strdup(ac->token_file) : NULL;
        }
        sy_config_release(cfg);
    }
    return 0;
}

/* The command line: options, then the command and its arguments (pos[0] is the command). */
typedef struct {
    const char *addr, *token_file, *reason, *to, *since, *kind, *limit;
    bool as_json, fleet;
    const char *pos[64];
    int npos;
} ctl_args_t;

/* What a command asks of the admin API; body NULL for none. */
typedef struct {
    const char *method;
    char path[300];
    json_t *body;
} ctl_req_t;

/* Returns 0 (the request is filled in), or 2 after saying why (usage, or a bad argument). */
typedef int (*ctl_build_fn)(const ctl_args_t *a, ctl_req_t *rq);
/* Prints a 200 answer; returns false when it does not print it (the route printer then does, if r is set). */
typedef bool (*ctl_print_fn)(const ctl_args_t *a, json_t *r);

typedef struct {
    const char *name;
    int min_args, max_args; /* after the command's name */
    ctl_build_fn build;
    ctl_print_fn print; /* NULL: the answer is a route */
} ctl_cmd_t;

static const char *reason_of(const ctl_args_t *a)
{
    return a->reason ? a->reason : "";
}

static int build_status(const ctl_args_t *a, ctl_req_t *rq)
{
    rq->method = "GET";
    snprintf(rq->path, sizeof(rq->path), "%s", a->fleet ? "/fleet" : "/status");
    return 0;
}

/* status --fleet: the instances (a differing config flagged) and the routes' numbers summed. */
static bool print_fleet(json_t *r)
{
    printf("%-32s %-8s %-16s %-20s %8s %s\n", "INSTANCE", "VERSION", "CONFIG", "STARTED", "SEEN", "");
    size_t k;
    json_t *in;
    json_array_foreach(json_object_get(r, "instances"), k, in) {
        printf("%-32s %-8s %-16s %-20s %6llds %s%s\n", json_string_value(json_object_get(in, "id")),
               json_string_value(json_object_get(in, "version")), json_string_value(json_object_get(in, "config_hash")),
               json_string_value(json_object_get(in, "started_at")),
               (long long)(json_integer_value(json_object_get(in, "seen_ms_ago")) / 1000),
               json_is_true(json_object_get(in, "config_differs")) ? "CONFIG DIFFERS " : "",
               json_is_true(json_object_get(in, "self")) ? "(this one)" : "");
    }
    printf("%-20s %-7s %10s %8s %10s %8s\n", "ROUTE", "VARIANT", "REQUESTS", "ERRORS", "WIN_REQ", "WIN_ERR");
    const char *name;
    json_t *route;
    json_object_foreach(json_object_get(r, "routes"), name, route) {
        static const char *const variants[] = {"legacy", "new"};
        for (int v = 0; v < 2; v++) {
            json_t *s = json_object_get(route, variants[v]);
            printf("%-20s %-7s %10lld %8lld %10lld %8lld\n", name, variants[v],
                   (long long)json_integer_value(json_object_get(s, "requests")),
                   (long long)json_integer_value(json_object_get(s, "errors")),
                   (long long)json_integer_value(json_object_get(s, "window_requests")),
                   (long long)json_integer_value(json_object_get(s, "window_errors")));
        }
    }
    return true;
}

static int build_set(const ctl_args_t *a, ctl_req_t *rq)
{
    int bp;
    if (sy_ctl_parse_percent(a->pos[2], &bp) != 0) {
        fprintf(stderr, "ctl: '%s' is not a percentage (25, 25%%, 2.5%% or 2500bp; 0..100%%)\n", a->pos[2]);
        return 2;
    }
    snprintf(rq->path, sizeof(rq->path), "/routes/%s/percent", a->pos[1]);
    rq->body = json_pack("{s:i, s:s}", "percent_bp", bp, "reason", reason_of(a));
    return 0;
}

static int build_test_users(const ctl_args_t *a, ctl_req_t *rq)
{
    bool add = strcmp(a->pos[2], "add") == 0;
    if (!add && strcmp(a->pos[2], "rm") != 0)
        return usage();
    json_t *keys = json_array();
    for (int i = 3; i < a->npos; i++)
        json_array_append_new(keys, json_string(a->pos[i]));
    snprintf(rq->path, sizeof(rq->path), "/routes/%s/test-users", a->pos[1]);
    rq->body = json_pack("{s:o, s:s}", add ? "add" : "remove", keys, "reason", reason_of(a));
    return 0;
}

/* rollback, resume, promote */
static int build_route_action(const ctl_args_t *a, ctl_req_t *rq)
{
    snprintf(rq->path, sizeof(rq->path), "/routes/%s/%s", a->pos[1], a->pos[0]);
    rq->body = json_pack("{s:s}", "reason", reason_of(a));
    return 0;
}

/* events, windows: the record's query string */
static int build_record_query(const ctl_args_t *a, ctl_req_t *rq)
{
    rq->method = "GET";
    size_t cap = sizeof(rq->path);
    size_t n = (size_t)snprintf(rq->path, cap, "/%s?limit=", a->pos[0]);
    n += url_encode(rq->path + n, cap - n, a->limit ? a->limit : "50");
    const char *names[] = {"route", "since", "kind"}, *vals[] = {a->npos == 2 ? a->pos[1] : NULL, a->since, a->kind};
    for (int k = 0; k < 3; k++) {
        if (vals[k] == NULL || (k == 2 && strcmp(a->pos[0], "windows") == 0))
            continue;
        n += (size_t)snprintf(rq->path + n, cap - n, "&%s=", names[k]);
        n += url_encode(rq->path + n, cap - n, vals[k]);
    }
    return 0;
}

static int build_plan(const ctl_args_t *a, ctl_req_t *rq)
{
    rq->method = "GET";
    snprintf(rq->path, sizeof(rq->path), "/routes/%s/plan", a->pos[1]);
    return 0;
}

/* plan, pause, continue: the plan's state, step, and what it waits for. */
static bool print_plan(const ctl_args_t *a, json_t *r)
{
    json_t *p = json_object_get(r, "plan");
    if (a->as_json || !json_is_object(p))
        return false;
    const char *w = json_string_value(json_object_get(p, "waiting_for"));
    printf("%s: plan %s, step %lld of %zu, hold left %lld s, waiting for: %s (needs %lld more requests on new)\n",
           a->pos[1], json_string_value(json_object_get(p, "state")),
           (long long)json_integer_value(json_object_get(p, "step")), json_array_size(json_object_get(p, "steps")),
           (long long)json_integer_value(json_object_get(p, "hold_left_s")), w && *w ? w : "nothing",
           (long long)json_integer_value(json_object_get(p, "needed_requests")));
    return true;
}

static int build_swap(const ctl_args_t *a, ctl_req_t *rq)
{
    snprintf(rq->path, sizeof(rq->path), "/pools/%s/swap", a->pos[1]);
    rq->body = a->to ? json_pack("{s:s, s:s}", "to", a->to, "reason", reason_of(a))
                     : json_pack("{s:s}", "reason", reason_of(a));
    return 0;
}

static void print_pool(json_t *pool)
{
    json_t *eps = json_object_get(pool, "endpoints"), *ep;
    size_t e;
    bool colored = json_is_true(json_object_get(pool, "colored"));
    printf("pool %-15s %s%s%s draining %lld\n", json_string_value(json_object_get(pool, "name")),
           colored ? "active " : "", colored ? json_string_value(json_object_get(pool, "active")) : "",
           colored ? "," : "", (long long)json_integer_value(json_object_get(pool, "draining")));
    static const char *const colors[] = {"blue", "green"};
    for (int k = 0; colored && k < 2; k++) {
        json_t *c = json_object_get(json_object_get(pool, "colors"), colors[k]);
        if (json_is_object(c))
            printf("  %-6s%s requests %lld  errors %lld (%.2f%%)  p50 %.1f  p95 %.1f  p99 %.1f ms  in flight %lld\n",
                   colors[k], json_is_true(json_object_get(c, "active")) ? " (active)" : "         ",
                   (long long)json_integer_value(json_object_get(c, "requests")),
                   (long long)json_integer_value(json_object_get(c, "errors")),
                   json_number_value(json_object_get(c, "error_rate")) * 100.0,
                   json_number_value(json_object_get(c, "p50_ms")), json_number_value(json_object_get(c, "p95_ms")),
                   json_number_value(json_object_get(c, "p99_ms")),
                   (long long)json_integer_value(json_object_get(c, "in_flight")));
    }
    json_array_foreach(eps, e, ep) printf("  %-22s %-6s %-4s in flight %lld\n",
                                          json_string_value(json_object_get(ep, "endpoint")),
                                          json_string_value(json_object_get(ep, "color")) ? json_string_value(json_object_get(ep, "color")) : "",
                                          json_is_true(json_object_get(ep, "up")) ? "up" : "DOWN",
                                          (long long)json_integer_value(json_object_get(ep, "in_flight")));
    print_refused(json_object_get(pool, "refused"));
}

static bool print_status(const ctl_args_t *a, json_t *r)
{
    if (r == NULL)
        return false;
    if (a->fleet)
        return print_fleet(r);
    json_t *routes = json_object_get(r, "routes"), *redis = json_object_get(r, "redis");
    printf("%-20s %-9s %8s %6s\n", "ROUTE", "STATE", "PERCENT", "BP");
    size_t k;
    json_t *route;
    json_array_foreach(routes, k, route) {
        print_route(route);
        print_refused(json_object_get(route, "refused"));
    }
    json_t *pools = json_object_get(r, "pools"), *pool;
    json_array_foreach(pools, k, pool) print_pool(pool);
    printf("flags from %s; redis: %s%s%s\n", json_string_value(json_object_get(r, "flags_from")),
           !json_is_true(json_object_get(redis, "configured")) ? "not configured"
           : json_is_true(json_object_get(redis, "connected")) ? "connected"
                                                               : "DISCONNECTED",
           json_is_true(json_object_get(redis, "keyspace_notifications")) ? ", keyspace notifications on" : "",
           "");
    if (json_integer_value(json_object_get(redis, "refused_edits")))
        printf("refused hand edits so far: %lld (those still in Redis are listed above)\n",
               (long long)json_integer_value(json_object_get(redis, "refused_edits")));
    return true;
}

static bool print_events_answer(const ctl_args_t *a, json_t *r)
{
    (void)a;
    if (!json_is_array(r))
        return false;
    print_events(r);
    return true;
}

static bool print_windows(const ctl_args_t *a, json_t *r)
{
    (void)a;
    if (!json_is_array(r))
        return false;
    size_t k;
    json_t *w;
    printf("%-24s %-16s %-7s %9s %7s %9s %9s %9s\n", "AT", "ROUTE", "VARIANT", "REQUESTS", "ERRORS", "P50_MS",
           "P95_MS", "P99_MS");
    json_array_foreach(r, k, w) printf("%-24s %-16s %-7s %9lld %7lld %9.2f %9.2f %9.2f\n",
                                       json_string_value(json_object_get(w, "at")),
                                       json_string_value(json_object_get(w, "route")),
                                       json_string_value(json_object_get(w, "variant")),
                                       (long long)json_integer_value(json_object_get(w, "requests")),
                                       (long long)json_integer_value(json_object_get(w, "errors")),
                                       json_number_value(json_object_get(w, "p50_ms")),
                                       json_number_value(json_object_get(w, "p95_ms")),
                                       json_number_value(json_object_get(w, "p99_ms")));
    return true;
}

static bool print_swapped(const ctl_args_t *a, json_t *r)
{
    (void)r;
    printf("pool %s swapped\n", a->pos[1]);
    return true;
}

static int build_diffs(const ctl_args_t *a, ctl_req_t *rq)
{
    rq->method = "GET";
    snprintf(rq->path, sizeof(rq->path), "/routes/%s/diffs", a->pos[1]);
    return 0;
}

/* The numbers on a few lines, then each kept pair: what differed, and where. */
static bool print_diffs(const ctl_args_t *a, json_t *r)
{
    (void)a;
    json_t *k = json_object_get(r, "by_kind"), *lat = json_object_get(r, "latency");
    printf("route %s: %lld shadowed, %lld compared, %lld mismatches (%.2f%%): status %lld, header %lld, body %lld, "
           "json %lld; noise removed %lld\n",
           json_string_value(json_object_get(r, "route")), (long long)json_integer_value(json_object_get(r, "shadowed")),
           (long long)json_integer_value(json_object_get(r, "compared")),
           (long long)json_integer_value(json_object_get(r, "mismatches")),
           100.0 * json_number_value(json_object_get(r, "mismatch_rate")),
           (long long)json_integer_value(json_object_get(k, "status")),
           (long long)json_integer_value(json_object_get(k, "header")),
           (long long)json_integer_value(json_object_get(k, "body")),
           (long long)json_integer_value(json_object_get(k, "json")),
           (long long)json_integer_value(json_object_get(r, "noise_removed")));
    static const char *const sides[] = {"legacy", "new"};
    for (int v = 0; v < 2; v++) {
        json_t *s = json_object_get(lat, sides[v]);
        printf("  %-6s p50 %.1f ms  p99 %.1f ms  (%lld)\n", sides[v], json_number_value(json_object_get(s, "p50_ms")),
               json_number_value(json_object_get(s, "p99_ms")), (long long)json_integer_value(json_object_get(s, "count")));
    }
    const char *on;
    json_t *n;
    printf("  skipped:");
    json_object_foreach(json_object_get(r, "outcomes"), on, n)
        if (strcmp(on, "compared") != 0 && json_integer_value(n) > 0)
            printf(" %s %lld", on, (long long)json_integer_value(n));
    printf("\n");
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(r, "samples"), i, s)
    {
        json_t *p;
        size_t j;
        printf("  %s %s: legacy %lld, new %lld;", json_string_value(json_object_get(s, "method")),
               json_string_value(json_object_get(s, "target")),
               (long long)json_integer_value(json_object_get(json_object_get(s, "legacy"), "status")),
               (long long)json_integer_value(json_object_get(json_object_get(s, "new"), "status")));
        json_array_foreach(json_object_get(s, "paths"), j, p)
            printf(" %s", json_string_value(p));
        printf("\n");
    }
    return true;
}

static const ctl_cmd_t ctl_cmds[] = {
    {"status", 0, 0, build_status, print_status},
    {"set", 2, 2, build_set, NULL},
    {"test-users", 3, 64, build_test_users, NULL},
    {"rollback", 1, 1, build_route_action, NULL},
    {"resume", 1, 1, build_route_action, NULL},
    {"promote", 1, 1, build_route_action, NULL},
    {"events", 0, 1, build_record_query, print_events_answer},
    {"windows", 0, 1, build_record_query, print_windows},
    {"swap", 1, 1, build_swap, print_swapped},
    {"diffs", 1, 1, build_diffs, print_diffs},
    {"plan", 1, 1, build_plan, print_plan},
    {"pause", 1, 1, build_route_action, print_plan},
    {"continue", 1, 1, build_route_action, print_plan},
};

static const ctl_cmd_t *find_cmd(const ctl_args_t *a)
{
    for (size_t i = 0; i < SY_ARRAY_LEN(ctl_cmds); i++)
        if (strcmp(ctl_cmds[i].name, a->pos[0]) == 0)
            return a->npos - 1 >= ctl_cmds[i].min_args && a->npos - 1 <= ctl_cmds[i].max_args ? &ctl_cmds[i] : NULL;
    return NULL;
}

/* Returns 0, or 2 after the usage on an unknown option or no command. */
static int parse_args(int argc, char **argv, ctl_args_t *a)
{
    const struct {
        const char *flag;
        const char **slot;
    } opts[] = {
        {"-a", &a->addr},         {"-t", &a->token_file}, {"--reason", &a->reason}, {"--to", &a->to},
        {"--since", &a->since}, {"--kind", &a->kind},   {"--limit", &a->limit},
    };
    for (int i = 1; i < argc; i++) {
        size_t o = 0;
        while (o < SY_ARRAY_LEN(opts) && !(strcmp(argv[i], opts[o].flag) == 0 && i + 1 < argc))
            o++;
        if (o < SY_ARRAY_LEN(opts))
            *opts[o].slot = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            a->as_json = true;
        else if (strcmp(argv[i], "--fleet") == 0)
            a->fleet = true;
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            return usage();
        else if (a->npos < (int)SY_ARRAY_LEN(a->pos))
            a->pos[a->npos++] = argv[i];
    }
    return a->npos == 0 ? usage() : 0;
}

/* Sends the request and prints the answer. Returns the exit code. */
static int run_cmd(const ctl_cmd_t *cmd, const ctl_args_t *a, const char *addr, const char *token)
{
    ctl_req_t rq = {.method = "POST"};
    int rc = cmd->build(a, &rq);
    if (rc != 0) {
        json_decref(rq.body);
        return rc;
    }
    char *body = rq.body ? json_dumps(rq.body, JSON_COMPACT) : NULL, *resp = NULL;
    json_decref(rq.body);
    int status = request(addr, token, rq.method, rq.path, body, &resp);
    free(body);
    if (status == 0) {
        free(resp);
        return 1;
    }
    json_t *r = resp ? json_loads(resp, 0, NULL) : NULL;
    if (a->as_json) {
        fputs(resp ? resp : "", stdout);
    } else if (status != 200) {
        const char *why = r ? json_string_value(json_object_get(r, "reason")) : NULL;
        fprintf(stderr, "ctl: %d: %s\n", status, why ? why : (resp ? resp : ""));
    } else if ((cmd->print == NULL || !cmd->print(a, r)) && r != NULL) {
        print_route(r);
    }
    json_decref(r);
    free(resp);
    return status == 200 ? 0 : 1;
}

static void free_secret(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

int sy_ctl_main(int argc, char **argv, const char *config_path)
{
    ctl_args_t a = {.token_file = getenv("SWITCHYARD_TOKEN_FILE")};
    if (parse_args(argc, argv, &a) != 0)
        return 2;
    char *cfg_addr = NULL, *cfg_token_file = NULL;
    if (admin_of_config(config_path, &cfg_addr, &cfg_token_file) != 0)
        return 2;
    const char *addr = a.addr ? a.addr : cfg_addr ? cfg_addr : "127.0.0.1:9901";
    char *token = read_token(a.token_file ? a.token_file : cfg_token_file);
    const ctl_cmd_t *cmd = find_cmd(&a);
    int rc = a.npos == 1 && strcmp(a.pos[0], "top") == 0 ? sy_top_run(addr, token, request)
             : cmd                                        ? run_cmd(cmd, &a, addr, token)
                                                          : usage();
    free_secret(token);
    free(cfg_addr);
    free(cfg_token_file);
    return rc;
}

/* One user: the gateway's answer, printed as the offline command prints it. */
static int cohort_one(const char *addr, const char *token, const char *route, const char *user)
{
    char path[2048], *resp = NULL;
    size_t n = (size_t)snprintf(path, sizeof(path), "/routes/");
    if (strlen(route) > 200 || strlen(user) > 511) {
        fprintf(stderr, "cohort: the route name or the user key is too long\n");
        return 1;
    }
    n += url_encode(path + n, sizeof(path) - n, route);
    n += (size_t)snprintf(path + n, sizeof(path) - n, "/cohort?user=");
    url_encode(path + n, sizeof(path) - n, user);
    int status = request(addr, token, "GET", path, NULL, &resp);
    json_t *r = resp ? json_loads(resp, 0, NULL) : NULL;
    int rc = 1;
    if (status == 200 && json_is_object(r)) {
        printf("route=%s user=%s bucket=%lld variant=%s reason=%s flags=live\n", route, user,
               (long long)json_integer_value(json_object_get(r, "bucket")),
               json_string_value(json_object_get(r, "variant")), json_string_value(json_object_get(r, "reason")));
        rc = 0;
    } else if (status != 0) {
        const char *why = r ? json_string_value(json_object_get(r, "reason")) : NULL;
        fprintf(stderr, "cohort: the gateway at %s answered %d: %s\n", addr, status, why ? why : (resp ? resp : ""));
    }
    json_decref(r);
    free(resp);
    return rc;
}

int sy_ctl_cohort_live(const char *config_path, const char *route, const char *user)
{
    char *cfg_addr = NULL, *cfg_token_file = NULL;
    if (admin_of_config(config_path, &cfg_addr, &cfg_token_file) != 0)
        return 2;
    const char *token_file = getenv("SWITCHYARD_TOKEN_FILE") ? getenv("SWITCHYARD_TOKEN_FILE") : cfg_token_file;
    char *token = read_token(token_file);
    const char *addr = cfg_addr ? cfg_addr : "127.0.0.1:9901";
    int rc = 0;
    if (strcmp(user, "-") != 0) {
        rc = cohort_one(addr, token, route, user);
    } else {
        char line[1024];
        while (rc == 0 && fgets(line, sizeof(line), stdin) != NULL) {
            line[strcspn(line, "\r\n")] = '\0';
            rc = cohort_one(addr, token, route, line);
        }
    }
    free_secret(token);
    free(cfg_addr);
    free(cfg_token_file);
    return rc;
}
