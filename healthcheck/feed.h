/* The monitor's per-period numbers to the record's `windows` table: the
 * adapter between the monitor's window hook and the record. Control thread. */
#ifndef SY_FEED_H
#define SY_FEED_H

#include "healthcheck/rules.h"

#include <stdint.h>

/* A sy_window_fn (monitor.h) whose ud is a sy_sink_t (flags/sink.h; may be NULL). */
void sy_feed_window(void *sink, int64_t at_ms, const char *route, int variant, const sy_side_t *sd);

#endif
