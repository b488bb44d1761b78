/* The PostgreSQL connection. See pg.h.
 *
 * States: DOWN (waiting for the backoff timer), CONNECTING (PQconnectPoll
 * driven by the socket), IDLE, BUSY (one query in flight: results are read as
 * the socket becomes readable, the rest of the query is flushed as it becomes
 * writable). One ev_io follows libpq's socket, which may change while
 * connecting. */
#include "flags/pg.h"

#include "proxy/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { PG_DOWN, PG_CONNECTING, PG_IDLE, PG_BUSY } pg_state_t;

typedef struct job {
    struct job *next;
    char *sql;
    int nparams;
    char **params;
    sy_pg_done_fn done;
    void *ud;
} job_t;

struct sy_pg {
    struct ev_loop *loop;
    sy_pg_opts_t o;
    char *conninfo, *password, *hostaddr;
    sy_pg_state_fn state_cb;
    void *ud;
    PGconn *conn;
    pg_state_t state;
    int fd;
    ev_io io;
    ev_timer timer;  /* backoff, connect timeout or query timeout, by state */
    ev_timer kick;   /* starts the next queued query from the loop, not from a caller */
    job_t *head, *tail, *cur;
    size_t queued;
    PGresult *keep;  /* the result the current query will report */
    uint64_t backoff_ms;
    bool warned;     /* a failure to connect was logged: quiet until connected again */
    sy_pg_status_t st;
};

static void connect_start(sy_pg_t *p);
static void io_cb(struct ev_loop *loop, ev_io *w, int revents);

static void job_free(job_t *j)
{
    for (int i = 0; i < j->nparams; i++)
        free(j->params[i]);
    free(j->params);
    free(j->sql);
    free(j);
}

static void set_last_error(sy_pg_t *p, const char *msg)
{
    snprintf(p->st.last_error, sizeof(p->st.last_error), "%s", msg ? msg : "?");
    for (char *c = p->st.last_error; *c != '\0'; c++) {
        if (*c == '\n') {
            *c = '\0';
            break;
        }
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?'; /* the status is JSON: no control bytes, no half characters */
    }
}

/* Watches fd for read, plus write when asked. */
static void watch(sy_pg_t *p, bool want_write)
{
    int fd = PQsocket(p->conn);
    int ev = EV_READ | (want_write ? EV_WRITE : 0);
    if (ev_is_active(&p->io) && (fd != p->fd || p->io.events != ev))
        ev_io_stop(p->loop, &p->io);
    if (!ev_is_active(&p->io) && fd >= 0) {
        ev_io_set(&p->io, fd, ev);
        ev_io_start(p->loop, &p->io);
    }
    p->fd = fd;
}

static void fail_queue(sy_pg_t *p, const char *why)
{
    job_t *list = p->head;
    p->head = p->tail = NULL;
    p->queued = 0;
    while (list != NULL) {
        job_t *j = list;
        list = j->next;
        j->done(j->ud, why, "", NULL);
        job_free(j);
    }
}

/* The connection is gone or unusable: fail what was asked, retry later. */
static void drop(sy_pg_t *p, const char *why)
{
    bool was_up = p->state == PG_IDLE || p->state == PG_BUSY;
    set_last_error(p, why); /* why may be libpq's buffer: copy it before PQfinish frees it */
    if (ev_is_active(&p->io))
        ev_io_stop(p->loop, &p->io);
    ev_timer_stop(p->loop, &p->timer);
    ev_timer_stop(p->loop, &p->kick);
    if (p->conn != NULL) {
        PQfinish(p->conn);
        p->conn = NULL;
    }
    p->fd = -1;
    p->state = PG_DOWN;
    p->st.connected = false;
    p->st.failures++;
    if (p->keep != NULL) {
        PQclear(p->keep);
        p->keep = NULL;
    }
    job_t *cur = p->cur;
    p->cur = NULL;
    if (cur != NULL) {
        cur->done(cur->ud, "the PostgreSQL connection was lost during the query", "", NULL);
        job_free(cur);
    }
    fail_queue(p, "PostgreSQL is unavailable");
    if (was_up)
        sy_warn("postgres: connection lost: %s; the journal keeps every record until it is back",
                p->st.last_error);
    else if (!p->warned)
        sy_warn("postgres: cannot connect: %s; retrying (backoff up to %llu ms), records wait in the journal",
                p->st.last_error, (unsigned long long)p->o.backoff_max_ms);
    p->warned = true;
    if (was_up && p->state_cb != NULL)
        p->state_cb(p->ud, false);
    if (p->state != PG_DOWN || ev_is_active(&p->timer))
        return; /* the callback reset or reconnected already */
    ev_timer_set(&p->timer, (double)p->backoff_ms / 1000.0, 0.);
    ev_timer_start(p->loop, &p->timer);
    p->backoff_ms = p->backoff_ms * 2 > p->o.backoff_max_ms ? p->o.backoff_max_ms : p->backoff_ms * 2;
}

static void start_next(sy_pg_t *p)
{
    if (p->state != PG_IDLE || p->head == NULL)
        return;
    job_t *j = p->head;
    p->head = j->next;
    if (p->head == NULL)
        p->tail = NULL;
    p->queued--;
    j->next = NULL;
    p->cur = j;
    int ok = j->nparams == 0
                 ? PQsendQuery(p->conn, j->sql)
                 : PQsendQueryParams(p->conn, j->sql, j->nparams, NULL, (const char *const *)j->params, NULL, NULL, 0);
    p->st.queries++;
    if (!ok) {
        drop(p, PQerrorMessage(p->conn));
        return;
    }
    p->state = PG_BUSY;
    int f = PQflush(p->conn);
    if (f < 0) {
        drop(p, PQerrorMessage(p->conn));
        return;
    }
    watch(p, f == 1);
    ev_timer_stop(p->loop, &p->timer);
    ev_timer_set(&p->timer, (double)p->o.query_timeout_ms / 1000.0, 0.);
    ev_timer_start(p->loop, &p->timer);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    start_next(w->data);
}

static void query_done(sy_pg_t *p)
{
    job_t *j = p->cur;
    PGresult *res = p->keep;
    p->cur = NULL;
    p->keep = NULL;
    p->state = PG_IDLE;
    ev_timer_stop(p->loop, &p->timer);
    watch(p, false);
    ExecStatusType es = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK || es == PGRES_EMPTY_QUERY) {
        p->backoff_ms = 100; /* a query worked: the next failure retries quickly again */
        j->done(j->ud, NULL, "", res);
    } else {
        static char msg[300];
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        snprintf(msg, sizeof(msg), "%s", res ? PQresultErrorMessage(res) : "no result");
        msg[strcspn(msg, "\n")] = '\0';
        p->st.query_errors++;
        j->done(j->ud, msg, state ? state : "", NULL);
    }
    job_free(j);
    if (res != NULL)
        PQclear(res);
    if (p->state == PG_IDLE && p->head != NULL)
        start_next(p);
}

static void on_connected(sy_pg_t *p)
{
    if (PQsetnonblocking(p->conn, 1) != 0) {
        drop(p, PQerrorMessage(p->conn));
        return;
    }
    ev_timer_stop(p->loop, &p->timer);
    p->state = PG_IDLE;
    p->st.connected = true;
    p->st.connects++;
    p->warned = false;
    watch(p, false);
    sy_info("postgres: connected (server %d, database %s)", PQserverVersion(p->conn), PQdb(p->conn));
    if (p->state_cb != NULL)
        p->state_cb(p->ud, true);
    if (p->state == PG_IDLE)
        start_next(p);
}

static void poll_connect(sy_pg_t *p)
{
    PostgresPollingStatusType st = PQconnectPoll(p->conn);
    /* While connecting, libpq may close its socket and open another (the next
     * host of a multi-host conninfo, or a read-only server refused by
     * target_session_attrs), often under the same number: the kernel forgot
     * the old one, so the watcher is set afresh at every step. */
    if (ev_is_active(&p->io))
        ev_io_stop(p->loop, &p->io);
    switch (st) {
    case PGRES_POLLING_READING:
        watch(p, false);
        break;
    case PGRES_POLLING_WRITING:
        /* read is watched too, harmlessly: libpq says which it needs next */
        watch(p, true);
        break;
    case PGRES_POLLING_OK:
        on_connected(p);
        break;
    default:
        drop(p, PQerrorMessage(p->conn));
        break;
    }
}

static void notice_cb(void *arg, const char *message)
{
    (void)arg;
    sy_debug("postgres: %.*s", (int)strcspn(message, "\n"), message);
}

static void connect_start(sy_pg_t *p)
{
    const char *keys[6], *vals[6];
    int n = 0;
    keys[n] = "dbname"; /* expanded: the whole conninfo string */
    vals[n++] = p->conninfo;
    if (p->password != NULL) {
        keys[n] = "password";
        vals[n++] = p->password;
    }
    if (p->hostaddr != NULL) {
        keys[n] = "hostaddr";
        vals[n++] = p->hostaddr;
    }
    keys[n] = "fallback_application_name";
    vals[n++] = "switchyard";
    keys[n] = NULL;
    vals[n] = NULL;
    p->conn = PQconnectStartParams(keys, vals, 1);
    if (p->conn == NULL) {
        p->state = PG_CONNECTING;
        drop(p, "out of memory");
        return;
    }
    PQsetNoticeProcessor(p->conn, notice_cb, p);
    p->state = PG_CONNECTING;
    if (PQstatus(p->conn) == CONNECTION_BAD) {
        drop(p, PQerrorMessage(p->conn));
        return;
    }
    ev_timer_set(&p->timer, (double)p->o.connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(p->loop, &p->timer);
    watch(p, true); /* libpq's first step wants a writable socket */
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    sy_pg_t *p = w->data;
    (void)loop;
    (void)revents;
    switch (p->state) {
    case PG_DOWN:
        connect_start(p);
        break;
    case PG_CONNECTING:
        drop(p, "connect timeout");
        break;
    case PG_BUSY:
        drop(p, "query timeout");
        break;
    case PG_IDLE:
        break;
    }
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    sy_pg_t *p = w->data;
    (void)loop;
    if (p->state == PG_CONNECTING) {
        poll_connect(p);
        return;
    }
    if (revents & EV_WRITE) {
        int f = PQflush(p->conn);
        if (f < 0) {
            drop(p, PQerrorMessage(p->conn));
            return;
        }
        watch(p, f == 1);
    }
    if (!(revents & EV_READ))
        return;
    if (!PQconsumeInput(p->conn)) {
        drop(p, PQerrorMessage(p->conn));
        return;
    }
    if (p->state != PG_BUSY) {
        /* Idle input: a notice or the server closing the connection. */
        if (PQstatus(p->conn) == CONNECTION_BAD)
            drop(p, PQerrorMessage(p->conn));
        return;
    }
    while (!PQisBusy(p->conn)) {
        PGresult *r = PQgetResult(p->conn);
        if (r == NULL) {
            query_done(p);
            return;
        }
        /* Several statements give several results: keep the last, or the first error. */
        ExecStatusType es = PQresultStatus(r);
        bool is_err = es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK && es != PGRES_EMPTY_QUERY;
        bool keep_is_err = p->keep != NULL && PQresultStatus(p->keep) != PGRES_COMMAND_OK &&
                           PQresultStatus(p->keep) != PGRES_TUPLES_OK;
        if (keep_is_err && !is_err) {
            PQclear(r);
            continue;
        }
        if (p->keep != NULL)
            PQclear(p->keep);
        p->keep = r;
    }
    if (PQstatus(p->conn) == CONNECTION_BAD)
        drop(p, PQerrorMessage(p->conn));
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

sy_pg_t *sy_pg_create(struct ev_loop *loop, const sy_pg_opts_t *opts, sy_pg_state_fn state, void *ud)
{
    sy_pg_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->o = *opts;
    p->conninfo = strdup(opts->conninfo ? opts->conninfo : "");
    p->password = dup_or_null(opts->password);
    p->hostaddr = dup_or_null(opts->hostaddr);
    if (p->conninfo == NULL || (opts->password && !p->password) || (opts->hostaddr && !p->hostaddr)) {
        free(p->conninfo);
        free(p->password);
        free(p->hostaddr);
        free(p);
        return NULL;
    }
    if (p->o.max_queued == 0)
        p->o.max_queued = 64;
    if (p->o.backoff_max_ms == 0)
        p->o.backoff_max_ms = 5000;
    p->backoff_ms = 100;
    p->fd = -1;
    p->state_cb = state;
    p->ud = ud;
    ev_io_init(&p->io, io_cb, -1, EV_READ);
    p->io.data = p;
    ev_timer_init(&p->timer, timer_cb, 0., 0.);
    p->timer.data = p;
    ev_timer_init(&p->kick, kick_cb, 0., 0.);
    p->kick.data = p;
    connect_start(p);
    return p;
}

void sy_pg_destroy(sy_pg_t *p)
{
    if (p == NULL)
        return;
    p->state_cb = NULL;
    ev_timer_stop(p->loop, &p->timer);
    ev_timer_stop(p->loop, &p->kick);
    if (ev_is_active(&p->io))
        ev_io_stop(p->loop, &p->io);
    if (p->cur != NULL) {
        p->cur->done(p->cur->ud, "shutting down", "", NULL);
        job_free(p->cur);
        p->cur = NULL;
    }
    fail_queue(p, "shutting down");
    if (p->keep != NULL)
        PQclear(p->keep);
    if (p->conn != NULL)
        PQfinish(p->conn);
    if (p->password != NULL)
        explicit_bzero(p->password, strlen(p->password));
    free(p->password);
    free(p->conninfo);
    free(p->hostaddr);
    free(p);
}

int sy_pg_query(sy_pg_t *p, const char *sql, int nparams, const char *const *params, sy_pg_done_fn done, void *ud)
{
    if (p->state != PG_IDLE && p->state != PG_BUSY)
        return SY_ECLOSED;
    if (p->queued >= p->o.max_queued)
        return SY_ELIMIT;
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return SY_ENOMEM;
    j->sql = strdup(sql);
    j->params = nparams > 0 ? calloc((size_t)nparams, sizeof(char *)) : NULL;
    j->nparams = nparams;
    bool ok = j->sql != NULL && (nparams == 0 || j->params != NULL);
    for (int i = 0; ok && i < nparams; i++)
        ok = params[i] == NULL || (j->params[i] = strdup(params[i])) != NULL;
    if (!ok) {
        job_free(j);
        return SY_ENOMEM;
    }
    j->done = done;
    j->ud = ud;
    if (p->tail != NULL)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->queued++;
    if (p->state == PG_IDLE && !ev_is_active(&p->kick)) {
        ev_timer_set(&p->kick, 0., 0.);
        ev_timer_start(p->loop, &p->kick);
    }
    return 0;
}

bool sy_pg_connected(const sy_pg_t *p)
{
    return p->state == PG_IDLE || p->state == PG_BUSY;
}

size_t sy_pg_queued(const sy_pg_t *p)
{
    return p->queued;
}

void sy_pg_reset(sy_pg_t *p, const char *why)
{
    if (p->state != PG_DOWN)
        drop(p, why);
}

void sy_pg_status(const sy_pg_t *p, sy_pg_status_t *out)
{
    *out = p->st;
}
