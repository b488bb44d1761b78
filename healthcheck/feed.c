#include "healthcheck/feed.h"

#include "flags/sink.h"

void sy_feed_window(void *sink, int64_t at_ms, const char *route, int variant, const sy_side_t *sd)
{
    sy_window_row_t row = {.at_ms = at_ms,
                           .route = route,
                           .variant = variant ? "new" : "legacy",
                           .requests = sd->requests,
                           .errors = sd->errors,
                           .p50_ms = sy_hist_quantile_us(&sd->total, 0.5) / 1e3,
                           .p95_ms = sy_hist_quantile_us(&sd->total, 0.95) / 1e3,
                           .p99_ms = sy_hist_quantile_us(&sd->total, 0.99) / 1e3};
    sy_sink_window(sink, &row);
}
