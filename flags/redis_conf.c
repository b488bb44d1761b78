/* The `redis:` config section. See redis_conf.h. */
#include "flags/redis_conf.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const sy_conf_field_t redis_fields[] = {
    {"address", SY_CT_STRING, offsetof(sy_redis_conf_t, address), NULL, 0, 0},
    {"prefix", SY_CT_STRING, offsetof(sy_redis_conf_t, prefix), "switchyard:", 0, 0},
    {"resync_interval", SY_CT_DURATION, offsetof(sy_redis_conf_t, resync_interval), "5s", 100, 3600000},
    {"connect_timeout", SY_CT_DURATION, offsetof(sy_redis_conf_t, connect_timeout), "2s", 10, 60000},
    {"command_timeout", SY_CT_DURATION, offsetof(sy_redis_conf_t, command_timeout), "2s", 10, 60000},
    {"db", SY_CT_INT, offsetof(sy_redis_conf_t, db), "0", 0, 15},
    {"set_notify_keyspace_events", SY_CT_BOOL, offsetof(sy_redis_conf_t, set_notify), "true", 0, 0},
    {"max_test_users", SY_CT_INT, offsetof(sy_redis_conf_t, max_test_users), "10000", 0, 1000000},
};

static void redis_conf_destroy(void *p)
{
    sy_redis_conf_t *rc = p;
    if (rc == NULL)
        return;
    free(rc->address);
    free(rc->prefix);
    free(rc);
}

static int redis_conf_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_redis_conf_t *rc = calloc(1, sizeof(*rc));
    if (rc == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = rc;
    sy_conf_defaults(redis_fields, SY_ARRAY_LEN(redis_fields), rc);
    if (sy_conf_fields(c, node, redis_fields, SY_ARRAY_LEN(redis_fields), rc, NULL) != 0)
        return SY_EINVAL;
    if (rc->address == NULL)
        return sy_conf_error(c, node, "redis needs an 'address' (host:port)");
    const char *why = NULL;
    if (sy_addr_parse(rc->address, &rc->addr, &why) != 0)
        return sy_conf_error(c, node, "bad redis address '%s': %s", rc->address, why);
    if (rc->prefix == NULL || strlen(rc->prefix) > 64 || strchr(rc->prefix, ' ') != NULL)
        return sy_conf_error(c, node, "redis prefix must be at most 64 bytes without spaces");
    return 0;
}

const sy_conf_section_t sy_redis_section = {
    .key = "redis",
    .required = false,
    .parse = redis_conf_parse,
    .destroy = redis_conf_destroy,
};
