/* Routes: the `routes:` config section, request matching and user keys.
 *
 * The route list is part of the immutable config. The flags a route starts
 * with (state, percent_bp, salt, test users) are its config defaults; the flag
 * store replaces them per snapshot (see router.h), never in place. Matching:
 * among routes whose host pattern matches, the longest path prefix wins; on a
 * tie the more specific host (exact, then *.suffix, then *), then the first
 * declared. Pure: no I/O. */
#ifndef SY_ROUTE_H
#define SY_ROUTE_H

#include "proxy/conf.h"
#include "proxy/config.h"
#include "proxy/hooks.h"
#include "routing/cohort.h"

#include "routing/jwt.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define SY_USER_KEY_MAX 256

typedef enum sy_key_kind { SY_KEY_HEADER, SY_KEY_COOKIE, SY_KEY_QUERY, SY_KEY_JWT, SY_KEY_JSON } sy_key_kind_t;

typedef struct sy_key_source {
    sy_key_kind_t kind;
    char *name;     /* header, cookie or query name; JWT claim; JSON path (a.b.c) */
} sy_key_source_t;

typedef struct sy_cidr {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int prefix;
} sy_cidr_t;

typedef enum sy_anonymous { SY_ANON_LEGACY, SY_ANON_HASH_CLIENT_IP } sy_anonymous_t;

typedef struct sy_route {
    char *name;
    char *host;              /* "*", "example.com" or "*.example.com" */
    char *path_prefix;
    size_t path_prefix_len;
    sy_key_source_t *keys;
    size_t nkeys;
    const sy_pool_t *legacy; /* points into the config */
    const sy_pool_t *new_pool; /* NULL: everyone gets legacy */
    /* flag defaults */
    sy_route_state_t state;
    int32_t percent_bp;
    char *salt;
    char **test_users;       /* sorted */
    size_t ntest_users;
    /* behaviour */
    bool expose_variant;
    bool keep_test_users_on_trip;
    sy_anonymous_t anonymous;
    char *override_header;   /* NULL: overrides off */
    sy_cidr_t *trusted;
    size_t ntrusted;
    /* JWT and JSON body sources */
    sy_jwt_key_t *jwt_key;   /* NULL: unverified (only with jwt_verify: false) */
    bool jwt_verify;
    uint64_t json_body_limit;
    /* counters, bumped by workers (relaxed) */
    atomic_ulong jwt_refused;    /* tokens that failed checks: no key from them */
    atomic_ulong json_no_key;    /* bodies too big or not JSON, or no such field */
} sy_route_t;

typedef struct sy_routes {
    sy_route_t *routes;
    size_t n;
} sy_routes_t;

/* The config section; register it with the config loader. */
extern const sy_conf_section_t sy_routes_section;

/* The route for a request, or NULL. */
const sy_route_t *sy_route_match(const sy_routes_t *rs, const char *host, size_t host_len, const char *path,
                                 size_t path_len);
const sy_route_t *sy_route_find(const sy_routes_t *rs, const char *name);

/* Finds the user key: SY_KEY_FOUND with the key in out (NUL-terminated, at most
 * SY_USER_KEY_MAX bytes) and its length in *len; SY_KEY_NO_KEY; or
 * SY_KEY_NEED_BODY when a JSON source comes next and the body has not been
 * seen yet (ask again with it, up to json_body_limit bytes). */
enum { SY_KEY_NO_KEY = 0, SY_KEY_FOUND = 1, SY_KEY_NEED_BODY = 2 };
int sy_route_user_key(const sy_route_t *r, const sy_request_view_t *req, char *out, size_t *len);
/* The value at a dotted path (a.b.0.c) of a JSON object: a string, or an
 * integer in decimal. Returns its length, or 0. */
size_t sy_json_key(const char *body, size_t len, const char *path, char *out, size_t cap);
/* Helpers behind it, exposed for tests. Return the value length or 0. */
size_t sy_cookie_value(const char *header, size_t len, const char *name, char *out, size_t cap);
size_t sy_query_value(const char *query, size_t len, const char *name, char *out, size_t cap);

int sy_cidr_parse(const char *text, sy_cidr_t *out);
bool sy_cidr_contains(const sy_cidr_t *c, const struct sockaddr *sa);

/* Sorted-set membership for test users. */
bool sy_route_is_test_user(char *const *sorted, size_t n, const char *key);
void sy_sort_strings(char **v, size_t n);

#endif
