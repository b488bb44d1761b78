#include "healthcheck/feed.h"

#include "flags/audit.h"

void sy_feed_window(void *audit, int64_t at_ms, const char *route, int variant, const sy_side_t *sd)
{
    sy_audit_window(audit, at_ms, route, variant ? "new" : "legacy", sd->requests, sd->errors,
                    sy_hist_quantile_us(&sd->total, 0.5) / 1e3, sy_hist_quantile_us(&sd->total, 0.95) / 1e3,
                    sy_hist_quantile_us(&sd->total, 0.99) / 1e3);
}
