/* One PostgreSQL connection on the control loop, through libpq's non-blocking
 * API only (PQconnectStartParams/PQconnectPoll, PQsendQuery*, PQflush,
 * PQconsumeInput, PQgetResult on an ev_io). Nothing here ever waits for the
 * server: queries are queued (bounded) and answered by callback.
 *
 * It connects at once and, whenever the connection fails or a query takes
 * longer than the query timeout, drops it, fails what was queued, and connects
 * again after a capped backoff. The connection parameters are never logged.
 * Control thread only. */
#ifndef SY_PG_H
#define SY_PG_H

#include "proxy/err.h"

#include <ev.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct sy_pg sy_pg_t;

/* A query ended. err NULL: res is the result (of the last statement; owned by
 * sy_pg, valid during the call). err set: a static or connection message, and
 * sqlstate the server's code when it answered with an error ("" otherwise).
 * May not destroy the sy_pg. */
typedef void (*sy_pg_done_fn)(void *ud, const char *err, const char *sqlstate, const PGresult *res);
/* The connection came up (true) or went down (false). */
typedef void (*sy_pg_state_fn)(void *ud, bool up);

typedef struct sy_pg_opts {
    const char *conninfo;     /* "" or NULL: libpq's defaults and the PG* environment */
    const char *password;     /* NULL: from conninfo, PGPASSWORD or the password file */
    const char *hostaddr;     /* resolved at boot so libpq never resolves on the loop; NULL: none */
    uint64_t connect_timeout_ms, query_timeout_ms, backoff_max_ms;
    size_t max_queued;
} sy_pg_opts_t;

sy_pg_t *sy_pg_create(struct ev_loop *loop, const sy_pg_opts_t *opts, sy_pg_state_fn state, void *ud);
/* Fails what is queued with "shutting down" and closes the connection. */
void sy_pg_destroy(sy_pg_t *p);

/* Queues a query (sql and params are copied). Without params it is sent as a
 * simple query (several statements allowed). `done` is called exactly once,
 * never before this returns. Returns 0, or SY_ECLOSED (not connected) or
 * SY_ELIMIT (queue full) or SY_ENOMEM without calling `done`. */
int sy_pg_query(sy_pg_t *p, const char *sql, int nparams, const char *const *params, sy_pg_done_fn done,
                void *ud) SY_MUST_USE;

bool sy_pg_connected(const sy_pg_t *p);
/* Queries waiting (not counting the one in flight). */
size_t sy_pg_queued(const sy_pg_t *p);
/* Drops the connection and connects again after the backoff (after a failed migration, say). */
void sy_pg_reset(sy_pg_t *p, const char *why);

typedef struct sy_pg_status {
    bool connected;
    uint64_t connects, failures, queries, query_errors;
    char last_error[200];
} sy_pg_status_t;
void sy_pg_status(const sy_pg_t *p, sy_pg_status_t *out);

#endif
