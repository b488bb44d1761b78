/* Trip notifications: a JSON POST per trip to notify.webhook_url, from the
 * control loop, never blocking anything. At most SY_NOTIFY_QUEUE messages wait
 * (the oldest is dropped, and logged, beyond that); each is tried `retries`
 * times with a doubling pause (1 s, 2 s, 4 s ...), each try bounded by
 * `timeout`. Plain http:// with a numeric address. */
#ifndef SY_NOTIFY_H
#define SY_NOTIFY_H

#include "proxy/config.h"

#include <ev.h>

#define SY_NOTIFY_QUEUE 64

typedef struct sy_notify_conf {
    char *webhook_url;
    sy_addr_t addr;
    char host[128];
    char path[256];
    uint64_t timeout;   /* ms */
    int64_t retries;
} sy_notify_conf_t;

extern const sy_conf_section_t sy_notify_section;

typedef struct sy_notify sy_notify_t;

/* NULL (and nothing to do) when the config has no notify section. */
sy_notify_t *sy_notify_create(struct ev_loop *loop, const sy_config_t *cfg);
void sy_notify_destroy(sy_notify_t *n);
/* Queues one JSON document (copied). */
void sy_notify_send(sy_notify_t *n, const char *json);
/* Delivered, given up (after retries), dropped (queue full) so far. */
void sy_notify_counts(const sy_notify_t *n, uint64_t *sent, uint64_t *failed, uint64_t *dropped);

#endif
