/* The `redis:` config section (parsed into an immutable sy_redis_conf_t, the
 * config extension "redis"). */
#ifndef SY_REDIS_CONF_H
#define SY_REDIS_CONF_H

#include "proxy/config.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct sy_redis_conf {
    char *address;
    sy_addr_t addr;
    char *prefix;
    uint64_t resync_interval;   /* ms */
    uint64_t connect_timeout;   /* ms */
    uint64_t command_timeout;   /* ms */
    int64_t db;
    bool set_notify;            /* may set notify-keyspace-events */
    int64_t max_test_users;     /* a larger test-user set is refused (default 10000) */
    char **sentinels;           /* "ip:port" each; instead of address (then address is a description) */
    size_t nsentinels;
    char *master;               /* the name the sentinels monitor */
} sy_redis_conf_t;

#define SY_REDIS_MAX_SENTINELS 16

/* The `redis:` config section. */
extern const sy_conf_section_t sy_redis_section;

#endif
