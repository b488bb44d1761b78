/* The access log: one JSON object per line, written without blocking a worker.
 *
 * Each worker owns one ring (single producer); a writer thread drains the rings
 * every few milliseconds into the file (or stdout). When a ring is full the line
 * is dropped and counted (sy_alog_dropped): the data path never waits for disk.
 * SIGHUP-style reopen is not needed: the file is opened with O_APPEND and
 * reopened when it was moved away (checked once a second by the writer). */
#ifndef SY_ACCESSLOG_H
#define SY_ACCESSLOG_H

#include "proxy/err.h"

#include <stddef.h>
#include <stdint.h>

typedef struct sy_alog sy_alog_t;

/* path: a file, "-" for stdout, or "off" (returns a log that drops nothing and
 * writes nothing). nrings: one per worker. Returns NULL on error (logged). */
sy_alog_t *sy_alog_create(const char *path, size_t nrings, size_t ring_bytes);
/* Flushes what is left and stops the writer. */
void sy_alog_destroy(sy_alog_t *a);
/* Worker `ring` appends one line (without newline: it is added). Never blocks. */
void sy_alog_write(sy_alog_t *a, size_t ring, const char *line, size_t len);
uint64_t sy_alog_dropped(const sy_alog_t *a);
/* The facts of one exchange, as the access-log line shows them. Strings are
 * NUL-terminated; a NULL one (route, variant, reason, fallback, upstream,
 * error) is written as JSON null. host, target and user are escaped here; the
 * others must already be safe inside a JSON string. */
typedef struct sy_alog_entry {
    int worker;
    const char *request_id, *client, *method, *host, *target;
    const char *route, *variant, *reason, *fallback, *user, *upstream;
    int status;
    const char *error;
    uint64_t bytes_in, bytes_out;
    double ttfb_ms, duration_ms;
} sy_alog_entry_t;

/* Formats e as one JSON object stamped with the current UTC time, without the
 * newline, into line (cap bytes, cut to fit). Returns its length (< cap), 0 if
 * nothing could be formatted. Any thread; touches nothing shared. */
size_t sy_alog_format(char *line, size_t cap, const sy_alog_entry_t *e);
/* Appends s to dst (at most cap bytes in all) JSON-escaped; returns bytes written. */
size_t sy_json_escape(char *dst, size_t cap, const char *s, size_t len);

#endif
