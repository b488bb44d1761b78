/* The gateway's configuration: the proxy's own sections (workers, listen,
 * timeouts, limits, access_log, pools) and sections owned by other folders,
 * registered as sy_conf_section_t (routing registers `routes`).
 *
 * A sy_config_t is immutable once loaded and reference-counted: snapshots hold a
 * reference; the last sy_config_release() frees it and the section data. Nothing in
 * it changes after the load: the endpoints' run-time state (down, in flight,
 * connect failures, retirement) is a table apart, proxy/epstate.h, indexed by
 * sy_endpoint_t.index and owned by healthcheck/endpoints.c. */
#ifndef SY_CONFIG_H
#define SY_CONFIG_H

#include "proxy/conf.h"
#include "proxy/net.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define SY_CONF_EXT_MAX 16

struct ssl_ctx_st;

typedef struct sy_endpoint {
    char *name;           /* as written, e.g. "127.0.0.1:7001"; also the pool key */
    sy_addr_t addr;
    size_t index;         /* 0.. over all pools in order: its row in the state table (proxy/epstate.h) */
    struct ssl_ctx_st *tls; /* NULL: plain TCP; else a reference (proxy/tls.h) */
    char *tls_sni;        /* the server name sent (NULL: none, for an IP address) */
    char *tls_host;       /* the name or IP the certificate is checked against */
    char *tls_id;         /* the TLS settings as text (upstream pools key on name and this) */
} sy_endpoint_t;

/* Active health checks of a pool's endpoints (run by healthcheck/). */
typedef struct sy_health_conf {
    char *path;           /* NULL: a TCP connect is the probe */
    uint64_t interval, timeout; /* ms */
    int64_t rise, fall;
} sy_health_conf_t;

enum { SY_BLUE = 0, SY_GREEN = 1 };

typedef struct sy_pool {
    char *name;
    sy_endpoint_t *endpoints;   /* all of them; with colours, blue's first, then green's */
    size_t nendpoints;
    bool colored;               /* colors: {blue, green}; the active one comes from the flags */
    size_t color_first[2], color_count[2];
    int active_default;         /* SY_BLUE or SY_GREEN, from `active:` */
    bool has_health;      /* health: was configured (else only passive ejection and TCP re-probes) */
    sy_health_conf_t health;
} sy_pool_t;

typedef struct sy_listen {
    char *address;
    sy_addr_t addr;
    bool http2;           /* h2c with prior knowledge next to HTTP/1.1 (proxy/h2.c) */
    struct ssl_ctx_st *tls; /* NULL: plain; else the server context (a reference, proxy/tls.h) */
} sy_listen_t;

typedef struct sy_timeouts {   /* milliseconds */
    uint64_t client_header, client_idle, connect, upstream_header, body_idle, tunnel_idle,
        drain, upstream_idle, drain_idle, tls_handshake;
} sy_timeouts_t;

typedef struct sy_limits {
    uint64_t header_bytes, uri_bytes, body_bytes, connections, headers, upstream_keepalive;
} sy_limits_t;

/* HTTP/2 to clients (the `http2` section; see proxy/h2.c). */
typedef struct sy_http2_conf {
    int64_t max_concurrent_streams;
    uint64_t max_header_list_bytes;  /* SETTINGS_MAX_HEADER_LIST_SIZE and the per-stream cap */
    uint64_t stream_window_bytes;    /* SETTINGS_INITIAL_WINDOW_SIZE: request bytes buffered per stream */
    int64_t max_resets;              /* early resets a connection may burst ... */
    int64_t resets_per_second;       /* ... and the rate they refill at; past it: GOAWAY ENHANCE_YOUR_CALM */
    int64_t max_continuations;       /* CONTINUATION frames after one HEADERS */
    int64_t max_control_acks;        /* queued SETTINGS/PING acks before the client counts as flooding */
} sy_http2_conf_t;

struct sy_config;

/* The reload column of the config table: whether a change of a top-level key
 * takes effect on SIGHUP or only after a restart. */
typedef enum sy_reload { SY_RELOAD_LIVE = 0, SY_RELOAD_RESTART } sy_reload_t;

/* A top-level section owned by another module. parse() gets the section's node
 * and the config as loaded so far (proxy sections first, then the registered ones
 * in order); it stores its result in *out and records errors in c. */
typedef struct sy_conf_section {
    const char *key;
    bool required;
    int (*parse)(sy_conf_t *c, yaml_node_t *node, const struct sy_config *cfg, void **out);
    void (*destroy)(void *data);
    sy_reload_t reload;
} sy_conf_section_t;

#define SY_CONF_PROXY_KEYS 12

typedef struct sy_config {
    atomic_long refs;
    char *path;
    int64_t workers;
    sy_listen_t *listen;
    size_t nlisten;
    sy_timeouts_t timeouts;
    sy_limits_t limits;
    sy_http2_conf_t http2;
    char *access_log;      /* path, "-" for stdout, or "off" */
    char *upgrade_socket;  /* unix socket for the binary upgrade hand-off; NULL: the default */
    sy_pool_t *pools;
    size_t npools;
    size_t buffer_size;    /* I/O block size, derived from limits */
    void *ext[SY_CONF_EXT_MAX];
    const sy_conf_section_t *ext_sections[SY_CONF_EXT_MAX];
    size_t next;
    /* Fingerprints of each top-level key's YAML (0: absent), proxy keys then
     * registered sections: what sy_config_restart_keys compares. */
    uint64_t _print[SY_CONF_PROXY_KEYS + SY_CONF_EXT_MAX];
} sy_config_t;

/* Loads and validates path. Returns the config (refs = 1), or NULL with every
 * error recorded in errs (the caller closes errs with sy_conf_close). */
sy_config_t *sy_config_load(sy_conf_t *errs, const char *path, const sy_conf_section_t *const *sections,
                            size_t nsections);
/* Same from a string, for tests and fuzzers. */
sy_config_t *sy_config_load_string(sy_conf_t *errs, const char *name, const char *text,
                                   const sy_conf_section_t *const *sections, size_t nsections);

sy_config_t *sy_config_ref(sy_config_t *cfg);
/* Drops a reference; frees on the last one. Safe from any thread. */
void sy_config_release(sy_config_t *cfg);

const sy_pool_t *sy_config_pool(const sy_config_t *cfg, const char *name);
/* The data a registered section stored, by its key; NULL if absent. */
void *sy_config_ext(const sy_config_t *cfg, const char *key);
/* The top-level keys marked SY_RELOAD_RESTART whose text differs between old
 * and cfg (same sections registered): up to cap of them into keys (static
 * strings). Returns how many differ. */
size_t sy_config_restart_keys(const sy_config_t *old, const sy_config_t *cfg, const char **keys, size_t cap);

#endif
