#include "proxy/config.h"

#include "proxy/h1.h"

#include "proxy/log.h"
#include "proxy/tls.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const sy_conf_field_t timeout_fields[] = {
    {"client_header", SY_CT_DURATION, offsetof(sy_timeouts_t, client_header), "10s", 1, 3600000},
    {"client_idle", SY_CT_DURATION, offsetof(sy_timeouts_t, client_idle), "60s", 1, 86400000},
    {"connect", SY_CT_DURATION, offsetof(sy_timeouts_t, connect), "2s", 1, 600000},
    {"upstream_header", SY_CT_DURATION, offsetof(sy_timeouts_t, upstream_header), "30s", 1, 86400000},
    {"body_idle", SY_CT_DURATION, offsetof(sy_timeouts_t, body_idle), "60s", 1, 86400000},
    {"tunnel_idle", SY_CT_DURATION, offsetof(sy_timeouts_t, tunnel_idle), "10m", 1, 86400000},
    {"drain", SY_CT_DURATION, offsetof(sy_timeouts_t, drain), "30s", 0, 86400000},
    {"upstream_idle", SY_CT_DURATION, offsetof(sy_timeouts_t, upstream_idle), "30s", 1, 86400000},
    /* while draining, how long an idle keep-alive connection stays open for a
     * request the client may have sent already */
    {"drain_idle", SY_CT_DURATION, offsetof(sy_timeouts_t, drain_idle), "1s", 0, 600000},
    /* a TLS client must finish its handshake within this */
    {"tls_handshake", SY_CT_DURATION, offsetof(sy_timeouts_t, tls_handshake), "10s", 1, 600000},
};

static const sy_conf_field_t limit_fields[] = {
    {"header_bytes", SY_CT_SIZE, offsetof(sy_limits_t, header_bytes), "16KiB", 1024, 1024 * 1024},
    {"uri_bytes", SY_CT_SIZE, offsetof(sy_limits_t, uri_bytes), "8KiB", 64, 1024 * 1024},
    {"body_bytes", SY_CT_SIZE, offsetof(sy_limits_t, body_bytes), "64MiB", 0, INT64_MAX},
    {"connections", SY_CT_INT, offsetof(sy_limits_t, connections), "20000", 1, 10000000},
    {"headers", SY_CT_INT, offsetof(sy_limits_t, headers), "100", 8, 1000},
    {"upstream_keepalive", SY_CT_INT, offsetof(sy_limits_t, upstream_keepalive), "256", 0, 100000},
};

static const sy_conf_field_t http2_fields[] = {
    {"max_concurrent_streams", SY_CT_INT, offsetof(sy_http2_conf_t, max_concurrent_streams), "100", 1, 10000},
    {"max_header_list_bytes", SY_CT_SIZE, offsetof(sy_http2_conf_t, max_header_list_bytes), "16KiB", 1024,
     1024 * 1024},
    {"stream_window_bytes", SY_CT_SIZE, offsetof(sy_http2_conf_t, stream_window_bytes), "64KiB", 16384,
     16 * 1024 * 1024},
    {"max_resets", SY_CT_INT, offsetof(sy_http2_conf_t, max_resets), "200", 1, 1000000},
    {"resets_per_second", SY_CT_INT, offsetof(sy_http2_conf_t, resets_per_second), "50", 1, 1000000},
    {"max_continuations", SY_CT_INT, offsetof(sy_http2_conf_t, max_continuations), "8", 1, 1000},
    {"max_control_acks", SY_CT_INT, offsetof(sy_http2_conf_t, max_control_acks), "1000", 8, 100000},
};

static const sy_conf_field_t health_fields[] = {
    {"path", SY_CT_STRING, offsetof(sy_health_conf_t, path), NULL, 0, 0},
    {"interval", SY_CT_DURATION, offsetof(sy_health_conf_t, interval), "2s", 100, 3600000},
    {"timeout", SY_CT_DURATION, offsetof(sy_health_conf_t, timeout), "1s", 10, 600000},
    {"rise", SY_CT_INT, offsetof(sy_health_conf_t, rise), "2", 1, 100},
    {"fall", SY_CT_INT, offsetof(sy_health_conf_t, fall), "3", 1, 100},
};

static void free_pools(sy_pool_t *pools, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(pools[i].health.path);
        for (size_t j = 0; j < pools[i].nendpoints; j++) {
            free(pools[i].endpoints[j].name);
            free(pools[i].endpoints[j].tls_sni);
            free(pools[i].endpoints[j].tls_host);
            free(pools[i].endpoints[j].tls_id);
            sy_tls_ctx_release(pools[i].endpoints[j].tls);
        }
        free(pools[i].endpoints);
        free(pools[i].name);
    }
    free(pools);
}

static void config_free(sy_config_t *cfg)
{
    for (size_t i = 0; i < cfg->next; i++)
        if (cfg->ext[i] != NULL && cfg->ext_sections[i]->destroy != NULL)
            cfg->ext_sections[i]->destroy(cfg->ext[i]);
    for (size_t i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i].address);
        sy_tls_ctx_release(cfg->listen[i].tls);
    }
    free(cfg->listen);
    free_pools(cfg->pools, cfg->npools);
    free(cfg->access_log);
    free(cfg->upgrade_socket);
    free(cfg->path);
    free(cfg);
}

sy_config_t *sy_config_ref(sy_config_t *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void sy_config_release(sy_config_t *cfg)
{
    if (cfg != NULL && atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
        config_free(cfg);
}

const sy_pool_t *sy_config_pool(const sy_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->npools; i++)
        if (strcmp(cfg->pools[i].name, name) == 0)
            return &cfg->pools[i];
    return NULL;
}

void *sy_config_ext(const sy_config_t *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->next; i++)
        if (strcmp(cfg->ext_sections[i]->key, key) == 0)
            return cfg->ext[i];
    return NULL;
}

static int parse_address(sy_conf_t *c, yaml_node_t *node, char **text, sy_addr_t *addr)
{
    if (sy_conf_string(c, node, text) != 0)
        return SY_EINVAL;
    const char *why = NULL;
    if (sy_addr_parse(*text, addr, &why) != 0)
        return sy_conf_error(c, node, "bad address '%s': %s", *text, why);
    return 0;
}

static int parse_listen(sy_conf_t *c, yaml_node_t *node, sy_config_t *cfg)
{
    if (sy_conf_expect(c, node, YAML_SEQUENCE_NODE, "a list of listeners") != 0)
        return SY_EINVAL;
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0)
        return sy_conf_error(c, node, "at least one listener is needed");
    cfg->listen = calloc(n, sizeof(*cfg->listen));
    if (cfg->listen == NULL)
        return sy_conf_error(c, node, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = sy_conf_node(c, node->data.sequence.items.start[i]);
        sy_listen_t *l = &cfg->listen[cfg->nlisten++];
        if (sy_conf_expect(c, item, YAML_MAPPING_NODE, "a listener ({address: host:port})") != 0) {
            rc = SY_EINVAL;
            continue;
        }
        yaml_node_t *k, *v;
        for (size_t it = 0; sy_conf_map_next(c, item, &it, &k, &v);) {
            if (sy_conf_key_is(k, "address")) {
                if (l->address != NULL)
                    rc = sy_conf_error(c, k, "key 'address' is repeated");
                else if (parse_address(c, v, &l->address, &l->addr) != 0)
                    rc = SY_EINVAL;
            } else if (sy_conf_key_is(k, "http2")) {
                if (sy_conf_bool(c, v, &l->http2) != 0)
                    rc = SY_EINVAL;
            } else if (sy_conf_key_is(k, "tls")) {
                if (l->tls != NULL)
                    rc = sy_conf_error(c, k, "key 'tls' is repeated");
                else if (sy_tls_server_parse(c, v, &l->tls) != 0)
                    rc = SY_EINVAL;
            } else {
                rc = sy_conf_error(c, k, "unknown key '%s' in a listener (known: address, http2, tls)",
                                   sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
            }
        }
        if (l->address == NULL && rc == 0)
            rc = sy_conf_error(c, item, "a listener needs an 'address'");
    }
    return rc;
}

/* One endpoint: "host:port", or "https://host:port" (TLS, verified against the
 * system trust store unless the pool's tls: says otherwise). */
static int parse_endpoint(sy_conf_t *c, yaml_node_t *node, sy_endpoint_t *e)
{
    const char *text = sy_conf_scalar(node);
    if (text == NULL || strncmp(text, "https://", 8) != 0)
        return parse_address(c, node, &e->name, &e->addr);
    if (sy_conf_string(c, node, &e->name) != 0)
        return SY_EINVAL;
    const char *why = NULL;
    if (sy_addr_parse(e->name + 8, &e->addr, &why) != 0)
        return sy_conf_error(c, node, "bad address '%s': %s", e->name, why);
    const char *host = e->name + 8;
    e->tls_host = host[0] == '[' ? strndup(host + 1, strcspn(host + 1, "]")) : strndup(host, strcspn(host, ":"));
    if (e->tls_host == NULL)
        return sy_conf_error(c, node, "out of memory");
    unsigned char ip[16];
    if (inet_pton(AF_INET, e->tls_host, ip) != 1 && host[0] != '[' &&
        (e->tls_sni = strdup(e->tls_host)) == NULL)
        return sy_conf_error(c, node, "out of memory");
    char *dummy_sni = NULL;
    int rc = sy_tls_client_parse(c, NULL, &e->tls, &dummy_sni, &e->tls_id);
    free(dummy_sni);
    return rc;
}

/* A pool's tls: applies to its endpoints (an https:// one keeps its own host for SNI). */
static int apply_pool_tls(sy_conf_t *c, yaml_node_t *node, sy_pool_t *pool)
{
    for (size_t i = 0; i < pool->nendpoints; i++) {
        sy_endpoint_t *e = &pool->endpoints[i];
        char *sni = NULL;
        sy_tls_ctx_release(e->tls);
        e->tls = NULL;
        free(e->tls_id);
        e->tls_id = NULL;
        if (sy_tls_client_parse(c, node, &e->tls, &sni, &e->tls_id) != 0)
            return SY_EINVAL;
        if (e->tls_host == NULL) {
            char ip[64];
            sy_addr_format_ip((const struct sockaddr *)&e->addr.ss, ip, sizeof(ip));
            e->tls_host = strdup(ip);
        }
        if (sni != NULL) {
            free(e->tls_host);
            e->tls_host = strdup(sni);
        } else if (e->tls_sni != NULL) {
            sni = e->tls_sni;
            e->tls_sni = NULL;
        }
        free(e->tls_sni);
        e->tls_sni = sni;
        if (e->tls_host == NULL)
            return sy_conf_error(c, node, "out of memory");
    }
    return 0;
}

static int parse_endpoints(sy_conf_t *c, yaml_node_t *node, sy_pool_t *pool)
{
    if (sy_conf_expect(c, node, YAML_SEQUENCE_NODE, "a list of endpoints (host:port)") != 0)
        return SY_EINVAL;
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0)
        return sy_conf_error(c, node, "a pool needs at least one endpoint");
    pool->endpoints = calloc(n, sizeof(*pool->endpoints));
    if (pool->endpoints == NULL)
        return sy_conf_error(c, node, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = sy_conf_node(c, node->data.sequence.items.start[i]);
        sy_endpoint_t *e = &pool->endpoints[pool->nendpoints++];
        if (parse_endpoint(c, item, e) != 0)
            rc = SY_EINVAL;
    }
    return rc;
}

/* colors: {blue: [...], green: [...]}: one endpoint array, blue's then green's. */
static int parse_colors(sy_conf_t *c, yaml_node_t *node, sy_pool_t *pool)
{
    static const char *const names[2] = {"blue", "green"};
    yaml_node_t *lists[2] = {NULL, NULL};
    if (sy_conf_expect(c, node, YAML_MAPPING_NODE, "a mapping {blue: [...], green: [...]}") != 0)
        return SY_EINVAL;
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, node, &it, &k, &v);) {
        int idx = sy_conf_key_is(k, "blue") ? 0 : sy_conf_key_is(k, "green") ? 1 : -1;
        if (idx < 0)
            return sy_conf_error(c, k, "colours are blue and green");
        if (sy_conf_expect(c, v, YAML_SEQUENCE_NODE, "a list of endpoints (host:port)") != 0)
            return SY_EINVAL;
        lists[idx] = v;
    }
    size_t total = 0;
    for (int i = 0; i < 2; i++) {
        if (lists[i] == NULL || lists[i]->data.sequence.items.top == lists[i]->data.sequence.items.start)
            return sy_conf_error(c, node, "colors needs a non-empty '%s' list", names[i]);
        total += (size_t)(lists[i]->data.sequence.items.top - lists[i]->data.sequence.items.start);
    }
    pool->endpoints = calloc(total, sizeof(*pool->endpoints));
    if (pool->endpoints == NULL)
        return sy_conf_error(c, node, "out of memory");
    pool->colored = true;
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        pool->color_first[i] = pool->nendpoints;
        for (yaml_node_item_t *it = lists[i]->data.sequence.items.start; it < lists[i]->data.sequence.items.top; it++) {
            sy_endpoint_t *e = &pool->endpoints[pool->nendpoints++];
            if (parse_endpoint(c, sy_conf_node(c, *it), e) != 0)
                rc = SY_EINVAL;
        }
        pool->color_count[i] = pool->nendpoints - pool->color_first[i];
    }
    return rc;
}

static int parse_pools(sy_conf_t *c, yaml_node_t *node, sy_config_t *cfg)
{
    if (sy_conf_expect(c, node, YAML_MAPPING_NODE, "a mapping of pool names to pools") != 0)
        return SY_EINVAL;
    size_t n = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
    cfg->pools = calloc(n ? n : 1, sizeof(*cfg->pools));
    if (cfg->pools == NULL)
        return sy_conf_error(c, node, "out of memory");
    int rc = 0;
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, node, &it, &k, &v);) {
        const char *name = sy_conf_scalar(k);
        if (name == NULL || *name == '\0') {
            rc = sy_conf_error(c, k, "a pool name must be a non-empty string");
            continue;
        }
        if (sy_config_pool(cfg, name) != NULL) {
            rc = sy_conf_error(c, k, "pool '%s' is defined twice", name);
            continue;
        }
        sy_pool_t *p = &cfg->pools[cfg->npools++];
        p->name = strdup(name);
        sy_conf_defaults(health_fields, SY_ARRAY_LEN(health_fields), &p->health);
        if (sy_conf_expect(c, v, YAML_MAPPING_NODE, "a pool ({endpoints: [host:port, ...]})") != 0) {
            rc = SY_EINVAL;
            continue;
        }
        yaml_node_t *pk, *pv, *tls = NULL;
        for (size_t pit = 0; sy_conf_map_next(c, v, &pit, &pk, &pv);) {
            if (sy_conf_key_is(pk, "tls")) {
                tls = pv;
            } else if (sy_conf_key_is(pk, "endpoints")) {
                if (p->colored)
                    rc = sy_conf_error(c, pk, "a pool has either 'endpoints' or 'colors'");
                else if (p->endpoints != NULL)
                    rc = sy_conf_error(c, pk, "key 'endpoints' is repeated");
                else if (parse_endpoints(c, pv, p) != 0)
                    rc = SY_EINVAL;
            } else if (sy_conf_key_is(pk, "colors")) {
                if (p->endpoints != NULL)
                    rc = sy_conf_error(c, pk, "a pool has either 'endpoints' or 'colors'");
                else if (parse_colors(c, pv, p) != 0)
                    rc = SY_EINVAL;
            } else if (sy_conf_key_is(pk, "active")) {
                const char *a = sy_conf_scalar(pv);
                if (a && strcmp(a, "blue") == 0)
                    p->active_default = SY_BLUE;
                else if (a && strcmp(a, "green") == 0)
                    p->active_default = SY_GREEN;
                else
                    rc = sy_conf_error(c, pv, "active must be blue or green");
            } else if (sy_conf_key_is(pk, "health")) {
                p->has_health = true;
                if (sy_conf_fields(c, pv, health_fields, SY_ARRAY_LEN(health_fields), &p->health, NULL) != 0)
                    rc = SY_EINVAL;
                else if (p->health.path != NULL && p->health.path[0] != '/')
                    rc = sy_conf_error(c, pv, "health.path must start with '/'");
            } else {
                rc = sy_conf_error(c, pk, "unknown key '%s' in pool '%s' (known: endpoints, colors, active, health, tls)",
                                   sy_conf_scalar(pk) ? sy_conf_scalar(pk) : "?", name);
            }
        }
        if (p->endpoints == NULL && rc == 0)
            rc = sy_conf_error(c, v, "pool '%s' needs 'endpoints' (or 'colors')", name);
        if (tls != NULL && rc == 0 && apply_pool_tls(c, tls, p) != 0)
            rc = SY_EINVAL;
        if (p->colored && !p->has_health && rc == 0)
            rc = sy_conf_error(c, v, "pool '%s' has colours: give it health checks (health: {path: ...}) so that a "
                                     "swap can check the target colour first", name);
    }
    size_t index = 0; /* the endpoints' rows in the state table */
    for (size_t i = 0; i < cfg->npools; i++)
        for (size_t e = 0; e < cfg->pools[i].nendpoints; e++)
            cfg->pools[i].endpoints[e].index = index++;
    return rc;
}

static int parse_workers(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg)
{
    return sy_conf_int(c, v, 1, 256, &cfg->workers);
}

static int parse_timeouts(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg)
{
    return sy_conf_fields(c, v, timeout_fields, SY_ARRAY_LEN(timeout_fields), &cfg->timeouts, NULL);
}

static int parse_limits(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg)
{
    return sy_conf_fields(c, v, limit_fields, SY_ARRAY_LEN(limit_fields), &cfg->limits, NULL);
}

static int parse_http2(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg)
{
    return sy_conf_fields(c, v, http2_fields, SY_ARRAY_LEN(http2_fields), &cfg->http2, NULL);
}

static int parse_access_log(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg)
{
    return sy_conf_string(c, v, &cfg->access_log);
}

static int parse_upgrade_socket(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg)
{
    return sy_conf_string(c, v, &cfg->upgrade_socket);
}

/* The proxy's own top-level keys, in the order they are applied. */
static const struct {
    const char *key;
    int (*parse)(sy_conf_t *c, yaml_node_t *v, sy_config_t *cfg);
    bool required;
    sy_reload_t reload;
} proxy_sections[] = {
    {"workers", parse_workers, false, SY_RELOAD_RESTART},
    {"listen", parse_listen, true, SY_RELOAD_RESTART},
    {"timeouts", parse_timeouts, false, SY_RELOAD_LIVE},
    {"limits", parse_limits, false, SY_RELOAD_LIVE},
    {"access_log", parse_access_log, false, SY_RELOAD_LIVE},
    {"pools", parse_pools, true, SY_RELOAD_LIVE},
    {"upgrade_socket", parse_upgrade_socket, false, SY_RELOAD_LIVE},
    {"http2", parse_http2, false, SY_RELOAD_LIVE},
};
_Static_assert(SY_ARRAY_LEN(proxy_sections) <= SY_CONF_PROXY_KEYS, "raise SY_CONF_PROXY_KEYS");

/* FNV-1a over a node's structure and scalars: equal text, equal print. */
static uint64_t print_node(sy_conf_t *c, yaml_node_t *n, uint64_t h, int depth)
{
    const uint64_t prime = 0x100000001b3ULL;
    h = (h ^ (uint64_t)(n != NULL ? n->type : 0) ^ 0x80) * prime;
    if (n == NULL || depth > 64)
        return h;
    if (n->type == YAML_SCALAR_NODE) {
        for (size_t i = 0; i < n->data.scalar.length; i++)
            h = (h ^ n->data.scalar.value[i]) * prime;
    } else if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
            h = print_node(c, sy_conf_node(c, *it), h, depth + 1);
    } else if (n->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            h = print_node(c, sy_conf_node(c, p->key), h, depth + 1);
            h = print_node(c, sy_conf_node(c, p->value), h, depth + 1);
        }
    }
    return h;
}

static uint64_t print_key(sy_conf_t *c, yaml_node_t *root, const char *key)
{
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, root, &it, &k, &v);)
        if (sy_conf_key_is(k, key))
            return print_node(c, v, 0xcbf29ce484222325ULL, 0) | 1;
    return 0;
}

/* The listeners' print covers their addresses and whether they speak TLS:
 * their tls settings and certificates are reloaded live (new connections get
 * the new context), turning TLS on or off needs a restart. */
static uint64_t print_listen(sy_conf_t *c, yaml_node_t *root)
{
    yaml_node_t *v = sy_conf_map_get(c, root, "listen");
    if (v == NULL || v->type != YAML_SEQUENCE_NODE)
        return print_key(c, root, "listen");
    uint64_t h = 0xcbf29ce484222325ULL;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        yaml_node_t *item = sy_conf_node(c, *it);
        yaml_node_t *addr = item != NULL && item->type == YAML_MAPPING_NODE ? sy_conf_map_get(c, item, "address") : item;
        h = print_node(c, addr, h, 1);
        bool tls = item != NULL && item->type == YAML_MAPPING_NODE && sy_conf_map_get(c, item, "tls") != NULL;
        h = (h ^ (tls ? 0x7f : 0x3f)) * 0x100000001b3ULL;
    }
    return h | 1;
}

size_t sy_config_restart_keys(const sy_config_t *old, const sy_config_t *cfg, const char **keys, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < SY_ARRAY_LEN(proxy_sections); i++)
        if (proxy_sections[i].reload == SY_RELOAD_RESTART && old->_print[i] != cfg->_print[i] && n++ < cap)
            keys[n - 1] = proxy_sections[i].key;
    for (size_t i = 0; i < cfg->next && i < old->next; i++) {
        const sy_conf_section_t *sec = cfg->ext_sections[i];
        if (sec->reload == SY_RELOAD_RESTART && old->_print[SY_CONF_PROXY_KEYS + i] != cfg->_print[SY_CONF_PROXY_KEYS + i] &&
            n++ < cap)
            keys[n - 1] = sec->key;
    }
    return n;
}

/* A snapshot with the defaults that do not come from a table. */
static sy_config_t *config_new(const char *path)
{
    sy_config_t *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    atomic_init(&cfg->refs, 1);
    cfg->path = strdup(path);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = ncpu > 0 ? ncpu : 1;
    cfg->access_log = strdup("-");
    sy_conf_defaults(timeout_fields, SY_ARRAY_LEN(timeout_fields), &cfg->timeouts);
    sy_conf_defaults(limit_fields, SY_ARRAY_LEN(limit_fields), &cfg->limits);
    sy_conf_defaults(http2_fields, SY_ARRAY_LEN(http2_fields), &cfg->http2);
    return cfg;
}

/* Checks every top-level key against the known ones before parsing any. */
static int check_top_keys(sy_conf_t *c, yaml_node_t *root, const sy_conf_section_t *const *sections,
                          size_t nsections)
{
    int rc = 0;
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, root, &it, &k, &v);) {
        const char *name = sy_conf_scalar(k);
        bool known = false;
        for (size_t i = 0; name && i < SY_ARRAY_LEN(proxy_sections); i++)
            known |= strcmp(proxy_sections[i].key, name) == 0;
        for (size_t i = 0; name && i < nsections; i++)
            known |= strcmp(sections[i]->key, name) == 0;
        if (!known)
            rc = sy_conf_error(c, k, "unknown top-level key '%s'", name ? name : "?");
        if (sy_conf_key_repeated(c, root, k))
            rc = sy_conf_error(c, k, "top-level key '%s' is repeated", name);
    }
    return rc;
}

static int parse_proxy_sections(sy_conf_t *c, yaml_node_t *root, sy_config_t *cfg)
{
    int rc = 0;
    for (size_t i = 0; i < SY_ARRAY_LEN(proxy_sections); i++) {
        cfg->_print[i] = strcmp(proxy_sections[i].key, "listen") == 0 ? print_listen(c, root)
                                                                       : print_key(c, root, proxy_sections[i].key);
        yaml_node_t *v = sy_conf_map_get(c, root, proxy_sections[i].key);
        if (v != NULL && proxy_sections[i].parse(c, v, cfg) != 0)
            rc = SY_EINVAL;
        if (v == NULL && proxy_sections[i].required)
            rc = sy_conf_error(c, root, "missing required key '%s'", proxy_sections[i].key);
    }
    if (cfg->limits.uri_bytes > cfg->limits.header_bytes)
        rc = sy_conf_error(c, NULL, "limits.uri_bytes (%llu) cannot exceed limits.header_bytes (%llu)",
                           (unsigned long long)cfg->limits.uri_bytes,
                           (unsigned long long)cfg->limits.header_bytes);
    /* One block must hold a whole rewritten request or response head, and serve
     * as a head reader's arena (the head's copy and its table of headers). */
    cfg->buffer_size = cfg->limits.header_bytes + 8192;
    if (cfg->buffer_size < 32768)
        cfg->buffer_size = 32768;
    size_t arena = sy_h1_arena_size(cfg->limits.header_bytes, cfg->limits.headers);
    if (cfg->buffer_size < arena)
        cfg->buffer_size = arena;
    return rc;
}

/* Registered sections see the proxy's sections (pools) already parsed; they
 * are skipped when those failed, so that their errors are not noise. */
static int parse_ext_sections(sy_conf_t *c, yaml_node_t *root, sy_config_t *cfg,
                              const sy_conf_section_t *const *sections, size_t nsections)
{
    int rc = 0;
    if (nsections > SY_CONF_EXT_MAX) /* a section left out would be ignored without a word */
        return sy_conf_error(c, root, "internal: %zu config sections registered, at most %d (raise SY_CONF_EXT_MAX)",
                             nsections, SY_CONF_EXT_MAX);
    for (size_t i = 0; i < nsections; i++) {
        cfg->ext_sections[i] = sections[i];
        cfg->next = i + 1;
        cfg->_print[SY_CONF_PROXY_KEYS + i] = print_key(c, root, sections[i]->key);
        yaml_node_t *v = sy_conf_map_get(c, root, sections[i]->key);
        if (v != NULL && sections[i]->parse(c, v, cfg, &cfg->ext[i]) != 0)
            rc = SY_EINVAL;
        if (v == NULL && sections[i]->required)
            rc = sy_conf_error(c, root, "missing required key '%s'", sections[i]->key);
    }
    return rc;
}

static sy_config_t *load(sy_conf_t *c, const char *path, const sy_conf_section_t *const *sections,
                         size_t nsections)
{
    yaml_node_t *root = sy_conf_root(c);
    if (root == NULL)
        return NULL;
    if (sy_conf_expect(c, root, YAML_MAPPING_NODE, "a mapping at the top of the file") != 0)
        return NULL;
    sy_config_t *cfg = config_new(path);
    if (cfg == NULL)
        return NULL;
    int rc = check_top_keys(c, root, sections, nsections);
    rc |= parse_proxy_sections(c, root, cfg);
    rc |= parse_ext_sections(c, root, cfg, sections, nsections);
    if (rc != 0 || c->nerrors > 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

sy_config_t *sy_config_load(sy_conf_t *errs, const char *path, const sy_conf_section_t *const *sections,
                            size_t nsections)
{
    if (sy_conf_open(errs, path) != 0)
        return NULL;
    return load(errs, path, sections, nsections);
}

sy_config_t *sy_config_load_string(sy_conf_t *errs, const char *name, const char *text,
                                   const sy_conf_section_t *const *sections, size_t nsections)
{
    if (sy_conf_open_string(errs, name, text, strlen(text)) != 0)
        return NULL;
    return load(errs, name, sections, nsections);
}
