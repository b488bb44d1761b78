/* The record: every change, trip and swap, and per-minute numbers per route x
 * variant, kept in PostgreSQL (tables `events` and `windows`, see README).
 *
 * Every record gets its key here (a UUID for events; (at, route, variant,
 * instance) for windows), goes to the journal (journal.h: fsync'd, bounded)
 * first, and is then inserted by the writer: batches of journal lines through
 * `jsonb_populate_recordset`, `ON CONFLICT DO NOTHING`, so a replay (after a
 * reconnect, or after a crash between the journal and the insert) stores each
 * record exactly once. A request never waits for any of it; PostgreSQL away
 * means the journal grows (up to its bound) and nothing is lost.
 *
 * The schema is created and migrated when the connection comes up (table
 * `schema_version`; concurrent instances serialise on an advisory lock).
 * Without a `postgres` section there is no record beyond the log, and every
 * function here accepts a NULL sy_audit_t and does nothing. Control thread. */
#ifndef SY_AUDIT_H
#define SY_AUDIT_H

#include "flags/journal.h"
#include "flags/sink.h"
#include "proxy/config.h"
#include "proxy/err.h"

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct sy_audit_conf {
    char *conninfo;       /* never logged */
    char *conninfo_file;  /* or from this file (first line) */
    char *password_file;
    char *password;       /* read at load from password_file; never logged */
    char *journal;        /* directory */
    uint64_t journal_max; /* bytes */
    uint64_t window;      /* ms: the period of `windows` rows (1m) */
    char *instance;       /* default: hostname/pid */
    uint64_t connect_timeout, query_timeout; /* ms */
    int64_t batch;        /* rows per insert */
} sy_audit_conf_t;

/* The `postgres:` config section. */
extern const sy_conf_section_t sy_postgres_section;

typedef struct sy_audit sy_audit_t;

/* With a postgres section: opens the journal (recovering an earlier run's
 * records) and starts connecting. Without one: *out = NULL and 0. Returns
 * nonzero with a logged reason when the journal cannot be opened. */
int sy_audit_create(struct ev_loop *loop, const sy_config_t *cfg, sy_audit_t **out) SY_MUST_USE;
/* Journals what is queued (fsync'd) and closes; what PostgreSQL did not take
 * stays in the journal for the next start. */
void sy_audit_destroy(sy_audit_t *a);

typedef struct sy_audit_event {
    const char *kind;   /* flag_change, rollback, resume, promote, trip, warning, hand_edit,
                         * refused_edit, swap, reload, start, stop */
    const char *route;  /* route or pool; NULL for the gateway itself */
    const char *actor, *reason;
    json_t *before, *after, *stats; /* borrowed; NULL: SQL NULL */
    const char *id;     /* NULL: a random UUID; else this one */
} sy_audit_event_t;

/* Records one event (journal first, then PostgreSQL). Never fails silently:
 * an event that cannot be journaled is logged whole at error level. */
void sy_audit_record(sy_audit_t *a, const sy_audit_event_t *ev);
/* The record as a sink (flags/sink.h): events and window rows go to
 * sy_audit_record / sy_audit_window. a may be NULL (records nothing); it must
 * outlive every user of the sink. */
sy_sink_t sy_audit_sink(sy_audit_t *a);
/* Calls `cb` once everything recorded so far is on disk in the journal (at
 * once without a record). The admin API answers a change only then: a 200
 * means the change is in Redis and its event will reach PostgreSQL. */
void sy_audit_sync(sy_audit_t *a, sy_journal_sync_fn cb, void *ud);
/* One `windows` row: the interval starting at at_ms (UTC epoch ms). */
void sy_audit_window(sy_audit_t *a, int64_t at_ms, const char *route, const char *variant, uint64_t requests,
                     uint64_t errors, double p50_ms, double p95_ms, double p99_ms);
/* The period of windows rows (ms); 0 without a record. */
uint64_t sy_audit_window_ms(const sy_audit_t *a);

/* A UUID (36 characters and NUL): random, or derived from text (the same text
 * gives the same UUID, so that instances seeing the same hand edit agree). */
void sy_audit_uuid(char out[37], const char *text);

/* Reading back. `done` gets SY_OK and the JSON text of the answer (an array,
 * newest first), or SY_EINVAL (bad input) / SY_EUNAVAILABLE and a reason; the
 * text is valid only during the call. Called exactly once,
 * maybe before this returns. since: an ISO 8601 time, a duration back from now
 * ("1h"), or NULL. limit: 1..1000. */
typedef void (*sy_audit_read_fn)(void *ud, sy_err_t err, const char *text);
void sy_audit_events(sy_audit_t *a, const char *route, const char *kind, const char *since, long limit,
                     sy_audit_read_fn done, void *ud);
void sy_audit_windows(sy_audit_t *a, const char *route, const char *since, long limit, sy_audit_read_fn done,
                      void *ud);

typedef struct sy_audit_status {
    bool configured, connected, schema_ready;
    int schema_version;
    uint64_t inserted[SY_JOURNAL_STREAMS], rejected;
    sy_journal_stats_t journal;
    char last_error[200];
} sy_audit_status_t;
void sy_audit_status(sy_audit_t *a, sy_audit_status_t *out);

/* True while PostgreSQL is up and records wait to be written (at stop, the
 * gateway gives them a moment to go before it exits). */
bool sy_audit_busy(sy_audit_t *a);

/* The gateway's `migrate` command: connects, creates or migrates the schema,
 * and returns 0, or 1 with the reason on stderr. Runs its own loop. */
int sy_audit_migrate(const sy_config_t *cfg);

#endif
