#include "proxy/log.h"

#include "proxy/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static sy_log_level_t min_level = SY_LOG_INFO;
static _Thread_local char thread_name[16] = "main";

static const char *const level_names[] = {"debug", "info ", "warn ", "error"};

const char *sy_err_str(int err)
{
    switch (err) {
    case SY_OK: return "ok";
    case SY_EAGAIN: return "again";
    case SY_EDECLINED: return "declined";
    case SY_ENOMEM: return "out of memory";
    case SY_EINVAL: return "invalid argument";
    case SY_EIO: return "i/o error";
    case SY_ELIMIT: return "limit reached";
    case SY_ECLOSED: return "closed";
    case SY_ENOTFOUND: return "not found";
    case SY_ECONFLICT: return "conflict";
    case SY_EUNAVAILABLE: return "unavailable";
    }
    return "unknown error";
}

void sy_log_set_level(sy_log_level_t level)
{
    min_level = level;
}

void sy_log_init_from_env(void)
{
    const char *v = getenv("SWITCHYARD_LOG");
    if (v == NULL)
        return;
    for (int i = 0; i < 4; i++) {
        if (strncasecmp(v, level_names[i], strlen(v)) == 0) {
            min_level = (sy_log_level_t)i;
            return;
        }
    }
}

void sy_log_set_thread_name(const char *name)
{
    snprintf(thread_name, sizeof(thread_name), "%s", name);
}

void sy_log(sy_log_level_t level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), level_names[level], thread_name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line: atomic for pipes and O_APPEND files at this size. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
