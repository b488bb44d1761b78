#include "routing/route.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <time.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- matching ------------------------------------------------------------- */

static int host_rank(const char *pattern, const char *host, size_t host_len)
{
    /* Compare without the port. */
    const char *colon = host ? memchr(host, ':', host_len) : NULL;
    if (host != NULL && host_len > 0 && host[0] == '[') {
        const char *bracket = memchr(host, ']', host_len);
        colon = bracket != NULL ? bracket + 1 : NULL;
    }
    if (colon != NULL && colon < host + host_len && *colon == ':')
        host_len = (size_t)(colon - host);
    if (strcmp(pattern, "*") == 0)
        return 1;
    if (host == NULL)
        return 0;
    if (pattern[0] == '*' && pattern[1] == '.') {
        size_t sl = strlen(pattern + 1); /* ".example.com" */
        return host_len > sl && strncasecmp(host + host_len - sl, pattern + 1, sl) == 0 ? 2 : 0;
    }
    return strlen(pattern) == host_len && strncasecmp(pattern, host, host_len) == 0 ? 3 : 0;
}

const sy_route_t *sy_route_match(const sy_routes_t *rs, const char *host, size_t host_len, const char *path,
                                 size_t path_len)
{
    const sy_route_t *best = NULL;
    int best_rank = 0;
    for (size_t i = 0; rs != NULL && i < rs->n; i++) {
        const sy_route_t *r = &rs->routes[i];
        int rank = host_rank(r->host, host, host_len);
        if (rank == 0 || r->path_prefix_len > path_len || memcmp(r->path_prefix, path, r->path_prefix_len) != 0)
            continue;
        if (best == NULL || r->path_prefix_len > best->path_prefix_len ||
            (r->path_prefix_len == best->path_prefix_len && rank > best_rank)) {
            best = r;
            best_rank = rank;
        }
    }
    return best;
}

const sy_route_t *sy_route_find(const sy_routes_t *rs, const char *name)
{
    for (size_t i = 0; rs != NULL && i < rs->n; i++)
        if (rs->routes[i].name != NULL && strcmp(rs->routes[i].name, name) == 0) /* NULL: a route in error */
            return &rs->routes[i];
    return NULL;
}

/* --- user keys -------------------------------------------------------------- */

static size_t copy_key(const char *v, size_t len, char *out, size_t cap)
{
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= cap)
        return 0; /* empty, or too long to be a user id: no key */
    memcpy(out, v, len);
    out[len] = '\0';
    return len;
}

size_t sy_cookie_value(const char *h, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < len) {
        while (i < len && (h[i] == ' ' || h[i] == ';' || h[i] == '\t'))
            i++;
        size_t start = i;
        while (i < len && h[i] != ';')
            i++;
        const char *pair = h + start;
        size_t plen = i - start;
        const char *eq = memchr(pair, '=', plen);
        if (eq == NULL)
            continue;
        size_t klen = (size_t)(eq - pair);
        while (klen > 0 && pair[klen - 1] == ' ')
            klen--;
        if (klen == nl && memcmp(pair, name, nl) == 0) {
            const char *v = eq + 1;
            size_t vlen = (size_t)(pair + plen - v);
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            while (vlen > 0 && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
            }
            if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
                v++;
                vlen -= 2;
            }
            return copy_key(v, vlen, out, cap);
        }
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

size_t sy_query_value(const char *q, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    size_t i = 0;
    while (q != NULL && i < len) {
        size_t start = i;
        while (i < len && q[i] != '&')
            i++;
        const char *pair = q + start;
        size_t plen = i - start;
        i++;
        const char *eq = memchr(pair, '=', plen);
        if (eq == NULL || (size_t)(eq - pair) != nl || memcmp(pair, name, nl) != 0)
            continue;
        /* Percent-decode the value. */
        const char *v = eq + 1;
        size_t vlen = (size_t)(pair + plen - v);
        char tmp[SY_USER_KEY_MAX + 1];
        size_t o = 0;
        for (size_t k = 0; k < vlen; k++) {
            if (o >= sizeof(tmp) - 1)
                return 0;
            if (v[k] == '%' && k + 2 < vlen && hexval(v[k + 1]) >= 0 && hexval(v[k + 2]) >= 0) {
                tmp[o++] = (char)(hexval(v[k + 1]) * 16 + hexval(v[k + 2]));
                k += 2;
            } else if (v[k] == '+') {
                tmp[o++] = ' ';
            } else {
                tmp[o++] = v[k];
            }
        }
        return copy_key(tmp, o, out, cap);
    }
    return 0;
}

size_t sy_json_key(const char *body, size_t len, const char *path, char *out, size_t cap)
{
    json_t *root = json_loadb(body, len, 0, NULL);
    if (root == NULL)
        return 0;
    json_t *v = root;
    const char *p = path;
    while (v != NULL && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char seg[128];
        if (n == 0 || n >= sizeof(seg)) {
            v = NULL;
            break;
        }
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (json_is_object(v)) {
            v = json_object_get(v, seg);
        } else if (json_is_array(v) && seg[0] >= '0' && seg[0] <= '9') {
            v = json_array_get(v, (size_t)strtoul(seg, NULL, 10));
        } else {
            v = NULL;
        }
        p += n + (dot ? 1 : 0);
    }
    size_t out_len = 0;
    if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < cap) {
        out_len = json_string_length(v);
        memcpy(out, json_string_value(v), out_len);
        out[out_len] = '\0';
    } else if (json_is_integer(v)) {
        int n = snprintf(out, cap, "%lld", (long long)json_integer_value(v));
        out_len = n > 0 && (size_t)n < cap ? (size_t)n : 0;
    }
    json_decref(root);
    return out_len;
}

static size_t jwt_key_of(const sy_route_t *r, const sy_key_source_t *src, const sy_request_view_t *req, char *out,
                         size_t cap)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const sy_header_t *h = &req->headers[i];
        if (h->name_len != 13 || strncasecmp(h->name, "authorization", 13) != 0)
            continue;
        if (h->value_len <= 7 || strncasecmp(h->value, "Bearer ", 7) != 0)
            return 0;
        sy_jwt_result_t res = sy_jwt_claim(r->jwt_verify ? r->jwt_key : NULL, h->value + 7, h->value_len - 7,
                                           src->name, time(NULL), out, cap);
        if (res == SY_JWT_OK)
            return strlen(out);
        atomic_fetch_add_explicit(&((sy_route_t *)r)->jwt_refused, 1, memory_order_relaxed);
        return 0;
    }
    return 0;
}

int sy_route_user_key(const sy_route_t *r, const sy_request_view_t *req, char *out, size_t *len)
{
    const size_t cap = SY_USER_KEY_MAX + 1;
    for (size_t k = 0; k < r->nkeys; k++) {
        const sy_key_source_t *src = &r->keys[k];
        size_t n = 0;
        size_t nl = strlen(src->name);
        switch (src->kind) {
        case SY_KEY_HEADER:
            for (size_t i = 0; i < req->nheaders && n == 0; i++) {
                const sy_header_t *h = &req->headers[i];
                if (h->name_len == nl && strncasecmp(h->name, src->name, nl) == 0)
                    n = copy_key(h->value, h->value_len, out, cap);
            }
            break;
        case SY_KEY_COOKIE:
            for (size_t i = 0; i < req->nheaders && n == 0; i++) {
                const sy_header_t *h = &req->headers[i];
                if (h->name_len == 6 && strncasecmp(h->name, "cookie", 6) == 0)
                    n = sy_cookie_value(h->value, h->value_len, src->name, out, cap);
            }
            break;
        case SY_KEY_QUERY:
            n = sy_query_value(req->query, req->query_len, src->name, out, cap);
            break;
        case SY_KEY_JWT:
            n = jwt_key_of(r, src, req, out, cap);
            break;
        case SY_KEY_JSON:
            if (!req->has_body)
                break;
            if (req->body_state == SY_BODY_NONE)
                return SY_KEY_NEED_BODY;
            if (req->body_state == SY_BODY_COMPLETE)
                n = sy_json_key(req->body, req->body_len, src->name, out, cap);
            if (n == 0)
                atomic_fetch_add_explicit(&((sy_route_t *)r)->json_no_key, 1, memory_order_relaxed);
            break;
        }
        if (n > 0) {
            *len = n;
            return SY_KEY_FOUND;
        }
    }
    *len = 0;
    return SY_KEY_NO_KEY;
}

/* --- CIDRs and test users ---------------------------------------------------- */

int sy_cidr_parse(const char *text, sy_cidr_t *out)
{
    char buf[64];
    memset(out, 0, sizeof(*out));
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    if (alen == 0 || alen >= sizeof(buf))
        return -1;
    memcpy(buf, text, alen);
    buf[alen] = '\0';
    int max;
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return -1;
    }
    out->prefix = max;
    if (slash != NULL) {
        char *end = NULL;
        long p = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || p < 0 || p > max)
            return -1;
        out->prefix = (int)p;
    }
    return 0;
}

bool sy_cidr_contains(const sy_cidr_t *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    uint8_t mapped[4];
    if (sa->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        if (c->family != AF_INET)
            return false;
    } else if (sa->sa_family == AF_INET6) {
        a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (c->family == AF_INET) {
            /* ::ffff:a.b.c.d matches IPv4 ranges */
            static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            if (memcmp(a, prefix, 12) != 0)
                return false;
            memcpy(mapped, a + 12, 4);
            a = mapped;
        }
    } else {
        return false;
    }
    int bits = c->prefix;
    int bytes = bits / 8;
    if (memcmp(a, c->addr, (size_t)bytes) != 0)
        return false;
    if (bits % 8 == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
    return (a[bytes] & mask) == (c->addr[bytes] & mask);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void sy_sort_strings(char **v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_str);
}

bool sy_route_is_test_user(char *const *sorted, size_t n, const char *key)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(sorted[mid], key);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* --- the config section ---------------------------------------------------------- */

static void route_free(sy_route_t *r)
{
    free(r->name);
    free(r->host);
    free(r->path_prefix);
    for (size_t i = 0; i < r->nkeys; i++)
        free(r->keys[i].name);
    free(r->keys);
    free(r->salt);
    for (size_t i = 0; i < r->ntest_users; i++)
        free(r->test_users[i]);
    free(r->test_users);
    free(r->override_header);
    free(r->trusted);
    sy_jwt_key_free(r->jwt_key);
}

static void routes_destroy(void *data)
{
    sy_routes_t *rs = data;
    if (rs == NULL)
        return;
    for (size_t i = 0; i < rs->n; i++)
        route_free(&rs->routes[i]);
    free(rs->routes);
    free(rs);
}

static size_t seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static bool valid_name(const char *s)
{
    if (*s == '\0' || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return false;
    return true;
}

static int parse_match(sy_conf_t *c, yaml_node_t *v, sy_route_t *r)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping ({host: ..., path_prefix: ...})") != 0)
        return SY_EINVAL;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        if (sy_conf_key_is(k, "host")) {
            if (sy_conf_string(c, x, &r->host) != 0)
                rc = SY_EINVAL;
            else if (r->host[0] == '\0' || (strchr(r->host, '*') != NULL && strcmp(r->host, "*") != 0 &&
                                            (strncmp(r->host, "*.", 2) != 0 || strchr(r->host + 1, '*'))))
                rc = sy_conf_error(c, x, "host must be \"*\", a name, or \"*.suffix\"");
        } else if (sy_conf_key_is(k, "path_prefix")) {
            if (sy_conf_string(c, x, &r->path_prefix) != 0)
                rc = SY_EINVAL;
            else if (r->path_prefix[0] != '/')
                rc = sy_conf_error(c, x, "path_prefix must start with '/'");
        } else {
            rc = sy_conf_error(c, k, "unknown key '%s' in match (known: host, path_prefix)",
                               sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
        }
    }
    return rc;
}

static int parse_user_key(sy_conf_t *c, yaml_node_t *v, sy_route_t *r)
{
    if (sy_conf_expect(c, v, YAML_SEQUENCE_NODE, "a list of key sources (- header: X-User-Id)") != 0)
        return SY_EINVAL;
    r->keys = calloc(seq_len(v) + 1, sizeof(*r->keys));
    if (r->keys == NULL)
        return sy_conf_error(c, v, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < seq_len(v); i++) {
        yaml_node_t *item = sy_conf_node(c, v->data.sequence.items.start[i]);
        yaml_node_t *k, *x;
        size_t it = 0;
        if (sy_conf_expect(c, item, YAML_MAPPING_NODE, "a key source (header, cookie, query, jwt or json)") != 0 ||
            !sy_conf_map_next(c, item, &it, &k, &x)) {
            rc = SY_EINVAL;
            continue;
        }
        if (item->data.mapping.pairs.top - item->data.mapping.pairs.start != 1) {
            rc = sy_conf_error(c, item, "a key source has exactly one key (header, cookie, query, jwt or json)");
            continue;
        }
        sy_key_source_t *src = &r->keys[r->nkeys];
        if (sy_conf_key_is(k, "header"))
            src->kind = SY_KEY_HEADER;
        else if (sy_conf_key_is(k, "cookie"))
            src->kind = SY_KEY_COOKIE;
        else if (sy_conf_key_is(k, "query"))
            src->kind = SY_KEY_QUERY;
        else if (sy_conf_key_is(k, "jwt"))
            src->kind = SY_KEY_JWT;
        else if (sy_conf_key_is(k, "json"))
            src->kind = SY_KEY_JSON;
        else {
            rc = sy_conf_error(c, k, "unknown user key source '%s' (known: header, cookie, query, jwt, json)",
                               sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
            continue;
        }
        if (sy_conf_string(c, x, &src->name) != 0) {
            rc = SY_EINVAL;
            continue;
        }
        if (src->name[0] == '\0') {
            rc = sy_conf_error(c, x, "the key source needs a name");
            free(src->name);
            src->name = NULL;
            continue;
        }
        r->nkeys++;
    }
    return rc;
}

static int parse_test_users(sy_conf_t *c, yaml_node_t *v, sy_route_t *r)
{
    if (sy_conf_expect(c, v, YAML_SEQUENCE_NODE, "a list of user keys") != 0)
        return SY_EINVAL;
    r->test_users = calloc(seq_len(v) + 1, sizeof(char *));
    if (r->test_users == NULL)
        return sy_conf_error(c, v, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < seq_len(v); i++) {
        yaml_node_t *item = sy_conf_node(c, v->data.sequence.items.start[i]);
        char *s = NULL;
        if (sy_conf_string(c, item, &s) != 0) {
            rc = SY_EINVAL;
            continue;
        }
        if (s[0] == '\0' || strlen(s) > SY_USER_KEY_MAX) {
            rc = sy_conf_error(c, item, "a test user key must be 1..%d bytes", SY_USER_KEY_MAX);
            free(s);
            continue;
        }
        r->test_users[r->ntest_users++] = s;
    }
    sy_sort_strings(r->test_users, r->ntest_users);
    return rc;
}

static int parse_override(sy_conf_t *c, yaml_node_t *v, sy_route_t *r)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping ({header: ..., trusted_cidrs: [...]})") != 0)
        return SY_EINVAL;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        if (sy_conf_key_is(k, "header")) {
            if (sy_conf_string(c, x, &r->override_header) != 0)
                rc = SY_EINVAL;
        } else if (sy_conf_key_is(k, "trusted_cidrs")) {
            if (sy_conf_expect(c, x, YAML_SEQUENCE_NODE, "a list of CIDRs") != 0) {
                rc = SY_EINVAL;
                continue;
            }
            free(r->trusted);
            r->ntrusted = 0;
            r->trusted = calloc(seq_len(x) + 1, sizeof(*r->trusted));
            if (r->trusted == NULL)
                return sy_conf_error(c, x, "out of memory");
            for (size_t i = 0; i < seq_len(x); i++) {
                yaml_node_t *item = sy_conf_node(c, x->data.sequence.items.start[i]);
                const char *s = sy_conf_scalar(item);
                if (s == NULL || sy_cidr_parse(s, &r->trusted[r->ntrusted]) != 0)
                    rc = sy_conf_error(c, item, "'%s' is not a CIDR (e.g. 127.0.0.0/8)", s ? s : "");
                else
                    r->ntrusted++;
            }
        } else {
            rc = sy_conf_error(c, k, "unknown key '%s' in override (known: header, trusted_cidrs)",
                               sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
        }
    }
    if (r->override_header == NULL && rc == 0)
        rc = sy_conf_error(c, v, "override needs a 'header'");
    return rc;
}

static int parse_jwt(sy_conf_t *c, yaml_node_t *v, sy_route_t *r)
{
    if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a mapping ({alg: HS256|RS256|ES256, key_file: PATH})") != 0)
        return SY_EINVAL;
    char *alg = NULL, *file = NULL;
    int rc = 0;
    yaml_node_t *k, *x;
    for (size_t it = 0; sy_conf_map_next(c, v, &it, &k, &x);) {
        if (sy_conf_key_is(k, "alg"))
            rc |= sy_conf_string(c, x, &alg);
        else if (sy_conf_key_is(k, "key_file"))
            rc |= sy_conf_string(c, x, &file);
        else
            rc = sy_conf_error(c, k, "unknown key '%s' in jwt (known: alg, key_file)",
                               sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
    }
    if (rc == 0 && (alg == NULL || file == NULL))
        rc = sy_conf_error(c, v, "jwt needs both 'alg' and 'key_file'");
    if (rc == 0) {
        char err[256];
        r->jwt_key = sy_jwt_key_load(alg, file, err, sizeof(err));
        if (r->jwt_key == NULL)
            rc = sy_conf_error(c, v, "jwt: %s", err);
    }
    free(alg);
    free(file);
    return rc ? SY_EINVAL : 0;
}

/* What a route's keys need besides the route: the config (pools), the routes so far (names), the key. */
typedef struct {
    sy_conf_t *c;
    sy_route_t *r;
    const sy_config_t *cfg;
    const sy_routes_t *rs;
    const char *key;
    bool have_percent;
} route_ctx_t;

static int key_name(route_ctx_t *x, yaml_node_t *v)
{
    sy_route_t *r = x->r;
    int rc = sy_conf_string(x->c, v, &r->name);
    if (rc == 0 && !valid_name(r->name))
        rc = sy_conf_error(x->c, v, "route name '%s' must be 1..64 of [A-Za-z0-9._-]", r->name);
    else if (rc == 0 && sy_route_find(x->rs, r->name) != NULL)
        rc = sy_conf_error(x->c, v, "route '%s' is defined twice", r->name);
    return rc;
}

/* legacy, new */
static int key_pool(route_ctx_t *x, yaml_node_t *v)
{
    const char *pn = sy_conf_scalar(v);
    const sy_pool_t *p = pn ? sy_config_pool(x->cfg, pn) : NULL;
    if (p == NULL)
        return sy_conf_error(x->c, v, "unknown pool '%s' (define it under pools:)", pn ? pn : "");
    if (x->key[0] == 'l')
        x->r->legacy = p;
    else
        x->r->new_pool = p;
    return 0;
}

static int key_percent(route_ctx_t *x, yaml_node_t *v)
{
    int64_t p;
    int rc = sy_conf_int(x->c, v, 0, SY_BUCKETS, &p);
    if (rc == 0) {
        x->r->percent_bp = (int32_t)p;
        x->have_percent = true;
    }
    return rc;
}

static int key_salt(route_ctx_t *x, yaml_node_t *v)
{
    int rc = sy_conf_string(x->c, v, &x->r->salt);
    if (rc == 0 && (x->r->salt[0] == '\0' || strlen(x->r->salt) > 128))
        rc = sy_conf_error(x->c, v, "salt must be 1..128 bytes");
    return rc;
}

static int key_anonymous(route_ctx_t *x, yaml_node_t *v)
{
    const char *s = sy_conf_scalar(v);
    if (s && strcmp(s, "legacy") == 0)
        x->r->anonymous = SY_ANON_LEGACY;
    else if (s && strcmp(s, "hash-client-ip") == 0)
        x->r->anonymous = SY_ANON_HASH_CLIENT_IP;
    else
        return sy_conf_error(x->c, v, "anonymous must be 'legacy' or 'hash-client-ip'");
    return 0;
}

static int key_state(route_ctx_t *x, yaml_node_t *v)
{
    const char *s = sy_conf_scalar(v);
    if (s == NULL || sy_state_parse(s, &x->r->state) != 0 || x->r->state == SY_STATE_TRIPPED)
        return sy_conf_error(x->c, v, "state must be off, ramping or promoted");
    return 0;
}

static int key_expose_variant(route_ctx_t *x, yaml_node_t *v)
{
    return sy_conf_bool(x->c, v, &x->r->expose_variant);
}

static int key_keep_test_users(route_ctx_t *x, yaml_node_t *v)
{
    return sy_conf_bool(x->c, v, &x->r->keep_test_users_on_trip);
}

static int key_jwt_verify(route_ctx_t *x, yaml_node_t *v)
{
    return sy_conf_bool(x->c, v, &x->r->jwt_verify);
}

static int key_json_body_limit(route_ctx_t *x, yaml_node_t *v)
{
    return sy_conf_size(x->c, v, 1, 16 * 1024 * 1024, &x->r->json_body_limit);
}

/* A route's keys: a nested section parser, or a key parser; neither for a key another section parses. */
static const struct {
    const char *key;
    int (*section)(sy_conf_t *c, yaml_node_t *v, sy_route_t *r);
    int (*parse)(route_ctx_t *x, yaml_node_t *v);
} route_keys[] = {
    {"name", NULL, key_name},
    {"match", parse_match, NULL},
    {"user_key", parse_user_key, NULL},
    {"legacy", NULL, key_pool},
    {"new", NULL, key_pool},
    {"percent_bp", NULL, key_percent},
    {"test_users", parse_test_users, NULL},
    {"salt", NULL, key_salt},
    {"expose_variant", NULL, key_expose_variant},
    {"override", parse_override, NULL},
    {"anonymous", NULL, key_anonymous},
    {"state", NULL, key_state},
    {"keep_test_users_on_trip", NULL, key_keep_test_users},
    {"trip", NULL, NULL}, /* parsed by the healthcheck's section */
    {"shadow", NULL, NULL}, /* parsed by proxy/shadow.c's section */
    {"plan", NULL, NULL}, /* parsed by healthcheck/plan.c */
    {"baseline", NULL, NULL}, /* parsed by healthcheck/baseline.c */
    {"jwt", parse_jwt, NULL},
    {"jwt_verify", NULL, key_jwt_verify},
    {"json_body_limit", NULL, key_json_body_limit},
};

/* Parses one key of the route mapping `node` after checking it is known and not repeated. */
static int parse_route_key(route_ctx_t *x, yaml_node_t *node, yaml_node_t *k, yaml_node_t *v)
{
    const char *key = sy_conf_scalar(k);
    size_t i = 0;
    while (key && i < SY_ARRAY_LEN(route_keys) && strcmp(route_keys[i].key, key) != 0)
        i++;
    if (key == NULL || i == SY_ARRAY_LEN(route_keys))
        return sy_conf_error(x->c, k, "unknown key '%s' in a route", key ? key : "?");
    /* A repeated key is an error and its value is not parsed again: each
     * key's parser fills its fields once (a second user_key list would
     * overrun the first one's array). */
    if (sy_conf_key_repeated(x->c, node, k))
        return sy_conf_error(x->c, k, "key '%s' is repeated in this route", key);
    x->key = key;
    int r1 = route_keys[i].section ? route_keys[i].section(x->c, v, x->r)
             : route_keys[i].parse ? route_keys[i].parse(x, v)
                                   : 0;
    return r1 != 0 ? SY_EINVAL : 0;
}

/* The checks across keys, then the defaults that depend on them. */
static int route_finish(sy_conf_t *c, yaml_node_t *node, sy_route_t *r, bool have_percent, int rc)
{
    if (r->name == NULL && rc == 0)
        rc = sy_conf_error(c, node, "a route needs a 'name'");
    if (r->legacy == NULL && rc == 0)
        rc = sy_conf_error(c, node, "route '%s' needs a 'legacy' pool", r->name ? r->name : "?");
    if (have_percent && r->new_pool == NULL && r->percent_bp > 0 && rc == 0)
        rc = sy_conf_error(c, node, "route '%s' has percent_bp but no 'new' pool", r->name);
    for (size_t ki = 0; ki < r->nkeys && rc == 0; ki++)
        if (r->keys[ki].kind == SY_KEY_JWT && r->jwt_key == NULL && r->jwt_verify)
            rc = sy_conf_error(c, node, "route '%s' takes a user key from a JWT: give it a key (jwt: {alg: HS256, "
                                        "key_file: ...}) or say jwt_verify: false", r->name ? r->name : "?");
    if (r->host == NULL)
        r->host = strdup("*");
    if (r->path_prefix == NULL)
        r->path_prefix = strdup("/");
    if (r->salt == NULL && r->name != NULL)
        r->salt = strdup(r->name);
    if (r->host == NULL || r->path_prefix == NULL || (r->name && r->salt == NULL))
        return sy_conf_error(c, node, "out of memory");
    r->path_prefix_len = strlen(r->path_prefix);
    return rc;
}

static int parse_route(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, sy_routes_t *rs, sy_route_t *r)
{
    if (sy_conf_expect(c, node, YAML_MAPPING_NODE, "a route (a mapping with name, match, legacy, ...)") != 0)
        return SY_EINVAL;
    int rc = 0;
    r->state = SY_STATE_RAMPING;
    r->anonymous = SY_ANON_LEGACY;
    r->jwt_verify = true;
    r->json_body_limit = 64 * 1024;
    route_ctx_t x = {.c = c, .r = r, .cfg = cfg, .rs = rs};
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, node, &it, &k, &v);)
        if (parse_route_key(&x, node, k, v) != 0)
            rc = SY_EINVAL;
    return route_finish(c, node, r, x.have_percent, rc);
}

static int routes_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    if (sy_conf_expect(c, node, YAML_SEQUENCE_NODE, "a list of routes") != 0)
        return SY_EINVAL;
    sy_routes_t *rs = calloc(1, sizeof(*rs));
    if (rs == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = rs;
    size_t n = seq_len(node);
    rs->routes = calloc(n + 1, sizeof(*rs->routes));
    if (rs->routes == NULL)
        return sy_conf_error(c, node, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = sy_conf_node(c, node->data.sequence.items.start[i]);
        if (parse_route(c, item, cfg, rs, &rs->routes[rs->n]) != 0)
            rc = SY_EINVAL;
        rs->n++;
    }
    return rc;
}

const sy_conf_section_t sy_routes_section = {
    .key = "routes",
    .required = true,
    .parse = routes_parse,
    .destroy = routes_destroy,
};
