/* The journal: an append-only, fsync'd local file record that every audit row
 * goes through before PostgreSQL sees it.
 *
 * Two streams of JSON lines, each numbered from 1 in append order:
 * - events (flag changes, trips, swaps, ...): never dropped at the bound; an
 *   event that cannot be kept is refused loudly (logged whole at error level,
 *   counted), never silently;
 * - windows (per-minute numbers): the oldest are dropped first, a whole
 *   segment at a time, when the journal reaches its bound.
 *
 * On disk, in DIR: segments `events.N` / `windows.N` (N: the first record's
 * number, 20 digits), each one line per record, and `events.ack` /
 * `windows.ack` (the highest number PostgreSQL is known to hold, written with
 * rename). Segments that are wholly acknowledged are deleted. A torn last line
 * (a crash mid-write) is cut off at open.
 *
 * Threads: every read, write, fsync and unlink runs on the journal's own thread.
 * The control thread appends (a bounded queue: it never waits on the disk),
 * asks for batches of durable records for the writer, and acknowledges them.
 * Callbacks run on the control loop. */
#ifndef SY_JOURNAL_H
#define SY_JOURNAL_H

#include "proxy/err.h"

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sy_jstream { SY_JOURNAL_EVENTS = 0, SY_JOURNAL_WINDOWS = 1 } sy_jstream_t;
#define SY_JOURNAL_STREAMS 2
/* One record's line, at most (the JSON of an event with long test-user lists
 * is shortened by its producer before it gets here). */
#define SY_JOURNAL_MAX_LINE (1024 * 1024)

typedef struct sy_journal sy_journal_t;

typedef struct sy_journal_stats {
    uint64_t next[SY_JOURNAL_STREAMS];     /* the number the next record gets */
    uint64_t durable[SY_JOURNAL_STREAMS];  /* every record up to this is on disk (fsync'd) */
    uint64_t acked[SY_JOURNAL_STREAMS];    /* ... and in PostgreSQL */
    uint64_t dropped[SY_JOURNAL_STREAMS];  /* records lost at the bound (windows; events: refused) */
    uint64_t bytes, max_bytes;             /* on disk now, and the bound */
    uint64_t fsyncs, queued;               /* queued: appended, not yet written */
    char last_error[160];
} sy_journal_stats_t;

/* Opens (creating it if need be) the journal in dir with a bound of max_bytes,
 * recovering what a previous run left: unacknowledged records are delivered
 * again. Runs at boot on the calling thread (before the loop serves anything),
 * then starts the journal thread. The directory is locked (flock) while open:
 * if another process holds it (the old process of a binary upgrade, draining),
 * appends queue in memory and the journal thread takes the directory over,
 * recovering what that process left, once it lets go. Returns NULL with *err
 * (static or in errbuf). */
sy_journal_t *sy_journal_open(struct ev_loop *loop, const char *dir, uint64_t max_bytes, char *errbuf,
                              size_t errcap);

/* Queues one record (a JSON object on one line, no newline; copied). 0, or
 * SY_ELIMIT when the in-memory queue is full (the disk stalls) or the line is
 * too long: the caller must report the record loudly. Control thread. */
int sy_journal_append(sy_journal_t *j, sy_jstream_t s, const char *line, size_t len) SY_MUST_USE;

/* A batch of durable records first..last as a JSON array "[...]" of len bytes;
 * json is the callee's to free. */
typedef void (*sy_journal_batch_fn)(void *ud, sy_jstream_t s, uint64_t first, uint64_t last, char *json, size_t len);

/* Asks for the next batch of stream s after what was handed out last (at most
 * max_records and about max_bytes; one record at least). `cb` is called once on
 * the control loop as soon as durable records are there. One want per stream
 * at a time; a new want replaces the old one. */
void sy_journal_want(sy_journal_t *j, sy_jstream_t s, size_t max_records, size_t max_bytes, sy_journal_batch_fn cb,
                     void *ud);
/* PostgreSQL holds every record of s up to last (persisted lazily; a replay of
 * acknowledged records after a crash is harmless, the inserts are idempotent). */
void sy_journal_ack(sy_journal_t *j, sy_jstream_t s, uint64_t last);
/* What was handed out after the last ack was not stored: hand it out again. */
void sy_journal_rewind(sy_journal_t *j, sy_jstream_t s);

/* Calls `cb` on the control loop once everything appended so far is on disk
 * (fsync'd), or was refused at the bound (and logged). At most 1024 waiters:
 * beyond, cb is called at once with durable=false; at close, the waiters
 * still there are called after the final flush. */
typedef void (*sy_journal_sync_fn)(void *ud, bool durable);
void sy_journal_sync(sy_journal_t *j, sy_journal_sync_fn cb, void *ud);

void sy_journal_stats(sy_journal_t *j, sy_journal_stats_t *out);
/* Writes and fsyncs what is queued, persists the ack, stops the thread. */
void sy_journal_close(sy_journal_t *j);

#endif
