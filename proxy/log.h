/* Process log: one line per event on stderr, safe from any thread.
 *
 * Lines look like `2026-11-21T18:00:00.123Z warn  [w1] message`. A line never
 * exceeds 4 KiB; longer messages are cut. Writing is a single write(2) of the
 * whole line, so lines from different threads never interleave. The process log
 * is for operators (errors, state changes); per-request lines go to the access
 * log (accesslog.h), which never blocks a worker. */
#ifndef SY_LOG_H
#define SY_LOG_H

typedef enum sy_log_level {
    SY_LOG_DEBUG = 0,
    SY_LOG_INFO = 1,
    SY_LOG_WARN = 2,
    SY_LOG_ERROR = 3,
} sy_log_level_t;

/* Sets the minimum level written (default INFO; SWITCHYARD_LOG=debug|info|warn|error
 * in the environment overrides at start). Call before threads start. */
void sy_log_set_level(sy_log_level_t level);
void sy_log_init_from_env(void);

/* Names the calling thread in its log lines ("main", "w0", ...). `name` is copied. */
void sy_log_set_thread_name(const char *name);

void sy_log(sy_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define sy_debug(...) sy_log(SY_LOG_DEBUG, __VA_ARGS__)
#define sy_info(...) sy_log(SY_LOG_INFO, __VA_ARGS__)
#define sy_warn(...) sy_log(SY_LOG_WARN, __VA_ARGS__)
#define sy_error(...) sy_log(SY_LOG_ERROR, __VA_ARGS__)

#endif
