#include "proxy/accesslog.h"

#include "proxy/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef struct ring {
    char *data;
    size_t size;                 /* power of two */
    _Atomic uint64_t head;       /* written by the worker */
    _Atomic uint64_t tail;       /* written by the writer thread */
    _Atomic uint64_t dropped;
} ring_t;

struct sy_alog {
    char *path;
    int fd;
    bool off;
    ino_t ino;
    size_t nrings;
    ring_t *rings;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
};

static int open_log(sy_alog_t *a)
{
    if (strcmp(a->path, "-") == 0) {
        a->fd = STDOUT_FILENO;
        return 0;
    }
    int fd = open(a->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) == 0)
        a->ino = st.st_ino;
    if (a->fd > STDERR_FILENO)
        close(a->fd);
    a->fd = fd;
    return 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* disk full or gone: the lines are lost, the proxy is not */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void drain(sy_alog_t *a)
{
    for (size_t i = 0; i < a->nrings; i++) {
        ring_t *r = &a->rings[i];
        uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        while (tail < head) {
            size_t off = (size_t)(tail & (r->size - 1));
            size_t n = (size_t)(head - tail);
            if (n > r->size - off)
                n = r->size - off;
            write_all(a->fd, r->data + off, n);
            tail += n;
        }
        atomic_store_explicit(&r->tail, tail, memory_order_release);
    }
}

static void *writer_main(void *arg)
{
    sy_alog_t *a = arg;
    sy_log_set_thread_name("alog");
    unsigned ticks = 0;
    while (!atomic_load(&a->stop)) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        drain(a);
        if (++ticks % 50 == 0 && a->fd > STDERR_FILENO) {
            struct stat st;
            if (stat(a->path, &st) != 0 || st.st_ino != a->ino)
                (void)open_log(a); /* rotated away: start a new file */
        }
    }
    drain(a);
    return NULL;
}

sy_alog_t *sy_alog_create(const char *path, size_t nrings, size_t ring_bytes)
{
    sy_alog_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->fd = -1;
    a->path = strdup(path);
    a->off = strcmp(path, "off") == 0;
    if (a->off)
        return a;
    size_t size = 4096;
    while (size < ring_bytes)
        size <<= 1;
    a->nrings = nrings;
    a->rings = calloc(nrings, sizeof(*a->rings));
    if (a->path == NULL || a->rings == NULL)
        goto fail;
    for (size_t i = 0; i < nrings; i++) {
        a->rings[i].size = size;
        a->rings[i].data = malloc(size);
        if (a->rings[i].data == NULL)
            goto fail;
    }
    int rc = open_log(a);
    if (rc != 0) {
        sy_error("access log %s: cannot open: %s", path, strerror(-rc));
        goto fail;
    }
    if (pthread_create(&a->thread, NULL, writer_main, a) != 0)
        goto fail;
    a->thread_started = true;
    return a;
fail:
    sy_alog_destroy(a);
    return NULL;
}

void sy_alog_destroy(sy_alog_t *a)
{
    if (a == NULL)
        return;
    if (a->thread_started) {
        atomic_store(&a->stop, true);
        pthread_join(a->thread, NULL);
    }
    for (size_t i = 0; a->rings && i < a->nrings; i++)
        free(a->rings[i].data);
    free(a->rings);
    if (a->fd > STDERR_FILENO)
        close(a->fd);
    free(a->path);
    free(a);
}

void sy_alog_write(sy_alog_t *a, size_t ring, const char *line, size_t len)
{
    if (a == NULL || a->off)
        return;
    ring_t *r = &a->rings[ring];
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (len + 1 > r->size - (size_t)(head - tail)) {
        atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
        return;
    }
    for (size_t i = 0; i <= len; i++) /* byte copy across the wrap; lines are short */
        r->data[(head + i) & (r->size - 1)] = i < len ? line[i] : '\n';
    atomic_store_explicit(&r->head, head + len + 1, memory_order_release);
}

uint64_t sy_alog_dropped(const sy_alog_t *a)
{
    uint64_t n = 0;
    for (size_t i = 0; a && a->rings && i < a->nrings; i++)
        n += atomic_load_explicit(&a->rings[i].dropped, memory_order_relaxed);
    return n;
}

size_t sy_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
        } else {
            dst[o++] = (char)c;
        }
    }
    return o;
}

/* The three pieces that print a nullable string: a quote, the text, a quote. */
#define NULLABLE(s) (s) ? "\"" : "", (s) ? (s) : "null", (s) ? "\"" : ""

size_t sy_alog_format(char *line, size_t cap, const sy_alog_entry_t *e)
{
    char esc_target[600], esc_host[300], esc_user[200];
    size_t tl = sy_json_escape(esc_target, sizeof(esc_target), e->target, strlen(e->target));
    size_t hl = sy_json_escape(esc_host, sizeof(esc_host), e->host, strlen(e->host));
    size_t ul = sy_json_escape(esc_user, sizeof(esc_user), e->user, strlen(e->user));
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, cap,
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"worker\":%d,\"request_id\":\"%s\","
                     "\"client\":\"%s\",\"method\":\"%s\",\"host\":\"%.*s\",\"target\":\"%.*s\","
                     "\"route\":%s%s%s,\"variant\":%s%s%s,\"reason\":%s%s%s,\"fallback\":%s%s%s,\"user\":\"%.*s\","
                     "\"upstream\":%s%s%s,\"status\":%d,\"error\":%s%s%s,\"bytes_in\":%llu,"
                     "\"bytes_out\":%llu,\"ttfb_ms\":%.3f,\"duration_ms\":%.3f}",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000), e->worker, e->request_id, e->client, e->method, (int)hl, esc_host,
                     (int)tl, esc_target, NULLABLE(e->route), NULLABLE(e->variant), NULLABLE(e->reason),
                     NULLABLE(e->fallback), (int)ul, esc_user, NULLABLE(e->upstream), e->status,
                     NULLABLE(e->error), (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
                     e->ttfb_ms, e->duration_ms);
    if (n <= 0)
        return 0;
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
