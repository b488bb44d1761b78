/* Endpoint health: active probes on the control thread, non-blocking (connect,
 * `GET health.path`, a 2xx or 3xx status within health.timeout is a success),
 * `rise` successes in a row bring an endpoint in, `fall` failures take it out.
 * Passive ejection: the data path takes an endpoint out after `fall` connect
 * failures in a row (see monitor.c); it is re-probed (a TCP connect for pools
 * without health checks) before it returns. The results are written through the
 * endpoints' state owner (healthcheck/endpoints.h), which workers read. */
#ifndef SY_HEALTH_H
#define SY_HEALTH_H

#include "healthcheck/endpoints.h"
#include "proxy/config.h"

#include <ev.h>

typedef struct sy_health sy_health_t;

sy_health_t *sy_health_create(struct ev_loop *loop, const sy_config_t *cfg, sy_endpoints_t *eps);
/* New config: probes start over for its endpoints. */
void sy_health_reload(sy_health_t *h, const sy_config_t *cfg);
void sy_health_destroy(sy_health_t *h);

#endif
