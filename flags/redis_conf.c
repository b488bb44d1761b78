/* The `redis:` config section. See redis_conf.h. */
#include "flags/redis_conf.h"

#include <stddef.h>
#include <stdio.h>
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
    {"master", SY_CT_STRING, offsetof(sy_redis_conf_t, master), NULL, 0, 0},
};

/* sentinels: [ip:port, ...] */
static int redis_unknown(sy_conf_t *c, yaml_node_t *key, yaml_node_t *value, void *out)
{
    sy_redis_conf_t *rc = out;
    if (!sy_conf_key_is(key, "sentinels"))
        return sy_conf_error(c, key, "unknown key '%s'", sy_conf_scalar(key) ? sy_conf_scalar(key) : "?");
    if (sy_conf_expect(c, value, YAML_SEQUENCE_NODE, "a list of sentinels (host:port)") != 0)
        return SY_EINVAL;
    size_t n = (size_t)(value->data.sequence.items.top - value->data.sequence.items.start);
    if (n == 0 || n > SY_REDIS_MAX_SENTINELS)
        return sy_conf_error(c, value, "redis sentinels: 1 to %d addresses", SY_REDIS_MAX_SENTINELS);
    if (rc->sentinels != NULL)
        return sy_conf_error(c, key, "redis sentinels given twice");
    rc->sentinels = calloc(n, sizeof(char *));
    if (rc->sentinels == NULL)
        return sy_conf_error(c, value, "out of memory");
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = sy_conf_node(c, value->data.sequence.items.start[i]);
        const char *text = sy_conf_scalar(item), *why = NULL;
        sy_addr_t a;
        if (text == NULL || sy_addr_parse(text, &a, &why) != 0)
            return sy_conf_error(c, item, "bad redis sentinel address '%s': %s", text ? text : "", why ? why : "not a scalar");
        rc->sentinels[i] = strdup(text);
        rc->nsentinels++;
        if (rc->sentinels[i] == NULL)
            return sy_conf_error(c, item, "out of memory");
    }
    return 0;
}

static void redis_conf_destroy(void *p)
{
    sy_redis_conf_t *rc = p;
    if (rc == NULL)
        return;
    free(rc->address);
    free(rc->prefix);
    for (size_t i = 0; i < rc->nsentinels; i++)
        free(rc->sentinels[i]);
    free(rc->sentinels);
    free(rc->master);
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
    if (sy_conf_fields(c, node, redis_fields, SY_ARRAY_LEN(redis_fields), rc, redis_unknown) != 0)
        return SY_EINVAL;
    if (rc->nsentinels > 0 || rc->master != NULL) {
        if (rc->address != NULL)
            return sy_conf_error(c, node, "redis: give either 'address' or 'sentinels' with 'master', not both");
        if (rc->nsentinels == 0 || rc->master == NULL || rc->master[0] == '\0' || strlen(rc->master) > 100 ||
            strpbrk(rc->master, " \r\n") != NULL)
            return sy_conf_error(c, node, "redis through Sentinel needs 'sentinels' (a list of host:port) and "
                                          "'master' (the monitored name, no spaces)");
        /* address describes the source in logs and is compared on reload */
        size_t len = strlen("sentinel:") + strlen(rc->master) + 1;
        for (size_t i = 0; i < rc->nsentinels; i++)
            len += strlen(rc->sentinels[i]) + 1;
        rc->address = malloc(len + 1);
        if (rc->address == NULL)
            return sy_conf_error(c, node, "out of memory");
        char *p = rc->address;
        p += sprintf(p, "sentinel:%s@", rc->master);
        for (size_t i = 0; i < rc->nsentinels; i++)
            p += sprintf(p, "%s%s", i ? "," : "", rc->sentinels[i]);
        if (rc->prefix == NULL || strlen(rc->prefix) > 64 || strchr(rc->prefix, ' ') != NULL)
            return sy_conf_error(c, node, "redis prefix must be at most 64 bytes without spaces");
        return 0;
    }
    if (rc->address == NULL)
        return sy_conf_error(c, node, "redis needs an 'address' (host:port), or 'sentinels' and 'master'");
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
