/* The record. See audit.h.
 *
 * The writer is a small state machine on the control loop: when the
 * connection comes up it migrates the schema, then keeps one batch per stream
 * in flight (journal -> INSERT -> ack -> next batch). Events go before windows
 * only in the sense that both are always moving; neither waits for the other.
 * A batch PostgreSQL rejects for its data (not for the connection) is retried a
 * record at a time, so one bad record cannot hold back the rest: that record
 * is logged whole and skipped. */
#include "flags/audit.h"

#include "flags/flags.h"
#include "flags/pg.h"
#include "proxy/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* --- the config section --------------------------------------------------------- */

static const sy_conf_field_t pg_fields[] = {
    {"conninfo", SY_CT_STRING, offsetof(sy_audit_conf_t, conninfo), NULL, 0, 0},
    {"conninfo_file", SY_CT_STRING, offsetof(sy_audit_conf_t, conninfo_file), NULL, 0, 0},
    {"password_file", SY_CT_STRING, offsetof(sy_audit_conf_t, password_file), NULL, 0, 0},
    {"journal", SY_CT_STRING, offsetof(sy_audit_conf_t, journal), "/var/lib/switchyard/journal", 0, 0},
    {"journal_max", SY_CT_SIZE, offsetof(sy_audit_conf_t, journal_max), "64MiB", 16384, INT64_MAX},
    {"window", SY_CT_DURATION, offsetof(sy_audit_conf_t, window), "1m", 1000, 3600000},
    {"instance", SY_CT_STRING, offsetof(sy_audit_conf_t, instance), NULL, 0, 0},
    {"connect_timeout", SY_CT_DURATION, offsetof(sy_audit_conf_t, connect_timeout), "5s", 100, 600000},
    {"query_timeout", SY_CT_DURATION, offsetof(sy_audit_conf_t, query_timeout), "10s", 100, 600000},
    {"batch", SY_CT_INT, offsetof(sy_audit_conf_t, batch), "500", 1, 10000},
};

static void pg_conf_destroy(void *p)
{
    sy_audit_conf_t *ac = p;
    if (ac == NULL)
        return;
    if (ac->password != NULL)
        OPENSSL_cleanse(ac->password, strlen(ac->password));
    if (ac->conninfo != NULL)
        OPENSSL_cleanse(ac->conninfo, strlen(ac->conninfo));
    free(ac->conninfo);
    free(ac->conninfo_file);
    free(ac->password_file);
    free(ac->password);
    free(ac->journal);
    free(ac->instance);
    free(ac);
}

/* The first line of a secret file, read at load (start or SIGHUP), never on a loop. */
static int read_secret(sy_conf_t *c, yaml_node_t *node, const char *what, const char *path, char **out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return sy_conf_error(c, node, "postgres.%s %s: %s", what, path, strerror(errno));
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    *out = strdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (*out == NULL)
        return sy_conf_error(c, node, "out of memory");
    return 0;
}

static int pg_conf_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_audit_conf_t *ac = calloc(1, sizeof(*ac));
    if (ac == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = ac;
    sy_conf_defaults(pg_fields, SY_ARRAY_LEN(pg_fields), ac);
    if (sy_conf_fields(c, node, pg_fields, SY_ARRAY_LEN(pg_fields), ac, NULL) != 0)
        return SY_EINVAL;
    if (ac->conninfo != NULL && ac->conninfo_file != NULL)
        return sy_conf_error(c, node, "postgres: give conninfo or conninfo_file, not both");
    if (ac->conninfo_file != NULL && read_secret(c, node, "conninfo_file", ac->conninfo_file, &ac->conninfo) != 0)
        return SY_EINVAL;
    if (ac->password_file != NULL && read_secret(c, node, "password_file", ac->password_file, &ac->password) != 0)
        return SY_EINVAL;
    if (ac->conninfo != NULL) {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(ac->conninfo, &err);
        if (opts == NULL) {
            /* libpq's message names the problem, never a value */
            int rc = sy_conf_error(c, node, "postgres conninfo is not valid: %.*s", (int)strcspn(err ? err : "?", "\n"),
                                   err ? err : "?");
            PQfreemem(err);
            return rc;
        }
        PQconninfoFree(opts);
    }
    if (ac->journal == NULL || ac->journal[0] != '/')
        return sy_conf_error(c, node, "postgres.journal must be an absolute directory path");
    if (ac->instance != NULL && (ac->instance[0] == '\0' || strlen(ac->instance) > 128))
        return sy_conf_error(c, node, "postgres.instance must be 1 to 128 characters");
    return 0;
}

const sy_conf_section_t sy_postgres_section = {
    .key = "postgres",
    .required = false,
    .parse = pg_conf_parse,
    .destroy = pg_conf_destroy,
    .reload = SY_RELOAD_RESTART, /* the record is opened once, at start */
};

/* --- the schema ----------------------------------------------------------------- */

/* Each step runs once, in order, inside one transaction with the others that
 * are missing. Append steps; never edit one that has shipped. */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE IF NOT EXISTS events ("
    " id uuid PRIMARY KEY, at timestamptz NOT NULL, instance text NOT NULL, kind text NOT NULL,"
    " route text, actor text, reason text, before jsonb, after jsonb, stats jsonb);"
    "CREATE INDEX IF NOT EXISTS events_at_idx ON events (at DESC);"
    "CREATE INDEX IF NOT EXISTS events_route_at_idx ON events (route, at DESC);"
    "CREATE TABLE IF NOT EXISTS windows ("
    " at timestamptz NOT NULL, route text NOT NULL, variant text NOT NULL, instance text NOT NULL DEFAULT '',"
    " requests bigint NOT NULL, errors bigint NOT NULL,"
    " p50_ms double precision, p95_ms double precision, p99_ms double precision,"
    " PRIMARY KEY (at, route, variant, instance));"
    "CREATE INDEX IF NOT EXISTS windows_route_at_idx ON windows (route, at DESC);",
};
#define SCHEMA_VERSION ((int)SY_ARRAY_LEN(migrations))
#define MIGRATION_LOCK "7420631978205113"

static char *migration_sql(void)
{
    size_t cap = 1024;
    for (size_t i = 0; i < SY_ARRAY_LEN(migrations); i++)
        cap += strlen(migrations[i]) + 128;
    char *sql = malloc(cap);
    if (sql == NULL)
        return NULL;
    size_t n = (size_t)snprintf(sql, cap,
                                "DO $sy$ DECLARE v integer; BEGIN "
                                "PERFORM pg_advisory_xact_lock(" MIGRATION_LOCK ");"
                                "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
                                " applied_at timestamptz NOT NULL DEFAULT now());"
                                "SELECT coalesce(max(version), 0) INTO v FROM schema_version;");
    for (size_t i = 0; i < SY_ARRAY_LEN(migrations); i++)
        n += (size_t)snprintf(sql + n, cap - n, "IF v < %zu THEN %s INSERT INTO schema_version (version) VALUES (%zu); END IF;",
                              i + 1, migrations[i], i + 1);
    snprintf(sql + n, cap - n, " END $sy$; SELECT max(version) FROM schema_version;");
    return sql;
}

static const char *const insert_sql[SY_JOURNAL_STREAMS] = {
    "INSERT INTO events (id, at, instance, kind, route, actor, reason, before, after, stats)"
    " SELECT id, at, instance, kind, route, actor, reason, before, after, stats"
    " FROM jsonb_populate_recordset(NULL::events, $1::jsonb) ON CONFLICT (id) DO NOTHING",
    "INSERT INTO windows (at, route, variant, instance, requests, errors, p50_ms, p95_ms, p99_ms)"
    " SELECT at, route, variant, instance, requests, errors, p50_ms, p95_ms, p99_ms"
    " FROM jsonb_populate_recordset(NULL::windows, $1::jsonb) ON CONFLICT (at, route, variant, instance) DO NOTHING",
};

/* --- the object ------------------------------------------------------------------- */

typedef struct batch {
    sy_audit_t *a;
    sy_jstream_t s;
    uint64_t first, last;
    char *json;
} batch_t;

struct sy_audit {
    struct ev_loop *loop;
    const sy_audit_conf_t *conf;
    sy_config_t *cfg; /* referenced: conf lives in it */
    char instance[160];
    sy_journal_t *journal;
    sy_pg_t *pg;
    bool schema_ready, migrating;
    int schema_version;
    bool in_flight[SY_JOURNAL_STREAMS];
    uint64_t single_until[SY_JOURNAL_STREAMS]; /* one record at a time up to here (after a rejected batch) */
    uint64_t inserted[SY_JOURNAL_STREAMS], rejected;
    char last_error[200];
};

void sy_audit_uuid(char out[37], const char *text)
{
    unsigned char b[SHA256_DIGEST_LENGTH];
    if (text != NULL) {
        SHA256((const unsigned char *)text, strlen(text), b);
        b[6] = (unsigned char)((b[6] & 0x0f) | 0x50); /* name-based */
    } else {
        if (RAND_bytes(b, 16) != 1) {
            /* no entropy from OpenSSL: time and counter still make it unique here */
            static uint64_t counter;
            struct timeval tv;
            gettimeofday(&tv, NULL);
            uint64_t x[2] = {(uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec, ++counter ^ (uint64_t)getpid()};
            memcpy(b, x, 16);
        }
        b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* random */
    }
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void pump(sy_audit_t *a, sy_jstream_t s);

static bool is_connection_error(const char *sqlstate)
{
    /* no code: libpq lost the connection; 08: connection; 57: shutdown/cancel; 53: resources */
    return sqlstate == NULL || sqlstate[0] == '\0' || strncmp(sqlstate, "08", 2) == 0 ||
           strncmp(sqlstate, "57", 2) == 0 || strncmp(sqlstate, "53", 2) == 0 || strncmp(sqlstate, "40", 2) == 0;
}

static void inserted_cb(void *ud, const char *err, const char *sqlstate, const PGresult *res)
{
    batch_t *b = ud;
    sy_audit_t *a = b->a;
    sy_jstream_t s = b->s;
    (void)res;
    a->in_flight[b->s] = false;
    if (err == NULL) {
        a->inserted[b->s] += b->last - b->first + 1;
        sy_journal_ack(a->journal, b->s, b->last);
    } else if (is_connection_error(sqlstate)) {
        snprintf(a->last_error, sizeof(a->last_error), "insert: %s", err);
        sy_journal_rewind(a->journal, b->s);
    } else if (b->first < b->last) {
        sy_warn("postgres: a batch of %s records %llu..%llu was refused (%s: %s); retrying them one at a time",
                b->s == SY_JOURNAL_EVENTS ? "events" : "windows", (unsigned long long)b->first,
                (unsigned long long)b->last, sqlstate, err);
        a->single_until[b->s] = b->last;
        sy_journal_rewind(a->journal, b->s);
    } else {
        a->rejected++;
        sy_error("postgres: refused a %s record for its data (%s: %s); it is skipped, kept only in this log: %.3000s",
                 b->s == SY_JOURNAL_EVENTS ? "event" : "windows", sqlstate, err, b->json);
        sy_journal_ack(a->journal, b->s, b->last);
    }
    free(b->json);
    free(b);
    if (a->schema_ready)
        pump(a, s);
}

static void batch_cb(void *ud, sy_jstream_t s, uint64_t first, uint64_t last, char *json, size_t len)
{
    sy_audit_t *a = ud;
    (void)len;
    if (!a->schema_ready || !sy_pg_connected(a->pg)) {
        free(json);
        a->in_flight[s] = false;
        sy_journal_rewind(a->journal, s);
        return;
    }
    batch_t *b = malloc(sizeof(*b));
    if (b == NULL) {
        free(json);
        a->in_flight[s] = false;
        sy_journal_rewind(a->journal, s);
        return;
    }
    *b = (batch_t){.a = a, .s = s, .first = first, .last = last, .json = json};
    const char *params[1] = {json};
    if (sy_pg_query(a->pg, insert_sql[s], 1, params, inserted_cb, b) != 0) {
        /* only without memory (the writer's room in the queue is reserved): the
         * stream moves again at the next reconnect */
        sy_warn("postgres: cannot queue an insert (out of memory); the records stay in the journal");
        free(json);
        free(b);
        a->in_flight[s] = false;
        sy_journal_rewind(a->journal, s);
    }
    /* the batch struct is owned by the query now; a->in_flight stays set */
}

static void pump(sy_audit_t *a, sy_jstream_t s)
{
    if (a->in_flight[s] || !a->schema_ready)
        return;
    a->in_flight[s] = true;
    sy_journal_stats_t js;
    sy_journal_stats(a->journal, &js);
    bool single = a->single_until[s] > js.acked[s];
    sy_journal_want(a->journal, s, single ? 1 : (size_t)a->conf->batch, 1024 * 1024, batch_cb, a);
}

static void on_migrated(void *ud, const char *err, const char *sqlstate, const PGresult *res)
{
    sy_audit_t *a = ud;
    a->migrating = false;
    if (err != NULL) {
        snprintf(a->last_error, sizeof(a->last_error), "schema: %s", err);
        if (!is_connection_error(sqlstate)) {
            sy_error("postgres: cannot create or migrate the schema (%s: %s); retrying with backoff, records wait "
                     "in the journal",
                     sqlstate, err);
            sy_pg_reset(a->pg, "schema migration failed");
        }
        return;
    }
    int v = res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? atoi(PQgetvalue(res, 0, 0)) : 0;
    a->schema_version = v;
    if (v > SCHEMA_VERSION)
        sy_warn("postgres: schema version %d is newer than this build's (%d); writing the columns it knows", v,
                SCHEMA_VERSION);
    else
        sy_info("postgres: schema at version %d; replaying the journal", v);
    a->schema_ready = true;
    a->in_flight[0] = a->in_flight[1] = false;
    pump(a, SY_JOURNAL_EVENTS);
    pump(a, SY_JOURNAL_WINDOWS);
}

static void on_pg_state(void *ud, bool up)
{
    sy_audit_t *a = ud;
    a->schema_ready = false;
    if (!up) {
        /* batches in flight were failed (and rewound) by their callbacks */
        return;
    }
    char *sql = migration_sql();
    if (sql == NULL || sy_pg_query(a->pg, sql, 0, NULL, on_migrated, a) != 0) {
        sy_error("postgres: cannot queue the schema migration (out of memory)");
        sy_pg_reset(a->pg, "out of memory");
    } else {
        a->migrating = true;
    }
    free(sql);
}

/* libpq resolves host names in PQconnectStart, on the calling thread: resolve
 * once here, at boot, and hand it the address (hostaddr), so the control loop
 * never waits for DNS. */
static char *resolve_host(const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &err);
    PQfreemem(err);
    if (opts == NULL)
        return NULL;
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    if (host == NULL)
        host = getenv("PGHOST");
    char *out = NULL;
    unsigned char tmp[sizeof(struct in6_addr)];
    if (host != NULL && host[0] != '\0' && host[0] != '/' && strchr(host, ',') == NULL &&
        (hostaddr == NULL || hostaddr[0] == '\0') && getenv("PGHOSTADDR") == NULL &&
        inet_pton(AF_INET, host, tmp) != 1 && inet_pton(AF_INET6, host, tmp) != 1) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        if (getaddrinfo(host, NULL, &hints, &ai) == 0 && ai != NULL) {
            char buf[INET6_ADDRSTRLEN];
            const void *src = ai->ai_family == AF_INET ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                                       : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            if (inet_ntop(ai->ai_family, src, buf, sizeof(buf)) != NULL)
                out = strdup(buf);
        } else {
            sy_warn("postgres: cannot resolve host %s at start; libpq will try (and may block the control loop "
                    "while it does)",
                    host);
        }
        if (ai != NULL)
            freeaddrinfo(ai);
    }
    PQconninfoFree(opts);
    return out;
}

static void set_instance(sy_audit_t *a, const sy_audit_conf_t *ac)
{
    if (ac->instance != NULL) {
        snprintf(a->instance, sizeof(a->instance), "%s", ac->instance);
        return;
    }
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(a->instance, sizeof(a->instance), "%s/%d", host, (int)getpid());
}

static sy_pg_t *connect_pg(struct ev_loop *loop, const sy_audit_conf_t *ac, sy_pg_state_fn state, void *ud)
{
    char *hostaddr = resolve_host(ac->conninfo);
    sy_pg_opts_t o = {
        .conninfo = ac->conninfo,
        .password = ac->password,
        .hostaddr = hostaddr,
        .connect_timeout_ms = ac->connect_timeout,
        .query_timeout_ms = ac->query_timeout,
        .backoff_max_ms = 5000,
        .max_queued = 64,
    };
    sy_pg_t *pg = sy_pg_create(loop, &o, state, ud);
    free(hostaddr);
    return pg;
}

int sy_audit_create(struct ev_loop *loop, const sy_config_t *cfg, sy_audit_t **out)
{
    *out = NULL;
    const sy_audit_conf_t *ac = sy_config_ext(cfg, "postgres");
    if (ac == NULL)
        return 0;
    sy_audit_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -1;
    a->loop = loop;
    a->cfg = sy_config_ref((sy_config_t *)cfg);
    a->conf = ac;
    set_instance(a, ac);
    char err[300] = "";
    a->journal = sy_journal_open(loop, ac->journal, ac->journal_max, err, sizeof(err));
    if (a->journal == NULL) {
        sy_error("postgres: the journal cannot be opened: %s", err);
        sy_config_release(a->cfg);
        free(a);
        return -1;
    }
    a->pg = connect_pg(loop, ac, on_pg_state, a);
    if (a->pg == NULL) {
        sy_journal_close(a->journal);
        sy_config_release(a->cfg);
        free(a);
        return -1;
    }
    sy_info("record: journal %s (bound %llu bytes), instance %s", ac->journal, (unsigned long long)ac->journal_max,
            a->instance);
    *out = a;
    return 0;
}

void sy_audit_destroy(sy_audit_t *a)
{
    if (a == NULL)
        return;
    /* Fail what is queued while a still exists, then stop the writer for good. */
    a->schema_ready = false;
    sy_pg_destroy(a->pg);
    sy_journal_close(a->journal);
    sy_config_release(a->cfg);
    free(a);
}

/* --- producing records ------------------------------------------------------------ */

static void append(sy_audit_t *a, sy_jstream_t s, json_t *obj)
{
    char *line = json_dumps(obj, JSON_COMPACT);
    if (line == NULL) {
        sy_error("record: out of memory: a %s record is lost", s == SY_JOURNAL_EVENTS ? "event" : "windows");
        return;
    }
    size_t len = strlen(line);
    if (len > SY_JOURNAL_MAX_LINE && s == SY_JOURNAL_EVENTS) {
        /* Huge test-user lists: keep who, what and why; the lists give way. */
        json_object_set_new(obj, "before", json_pack("{s:b, s:I}", "truncated", 1, "bytes", (json_int_t)len));
        json_object_set_new(obj, "after", json_pack("{s:b, s:I}", "truncated", 1, "bytes", (json_int_t)len));
        free(line);
        line = json_dumps(obj, JSON_COMPACT);
        len = line ? strlen(line) : 0;
    }
    int rc = line ? sy_journal_append(a->journal, s, line, len) : SY_ENOMEM;
    if (rc != 0 && s == SY_JOURNAL_EVENTS)
        sy_error("record: the journal cannot take this event (%s); it is only in this log: %.3500s",
                 rc == SY_ELIMIT ? "its queue is full: the disk is not keeping up" : sy_err_str(rc),
                 line ? line : "?");
    else if (rc != 0)
        sy_warn("record: the journal cannot take a windows row (%s)", sy_err_str(rc));
    free(line);
}

static json_t *str_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

void sy_audit_record(sy_audit_t *a, const sy_audit_event_t *ev)
{
    if (a == NULL)
        return;
    char id[37], at[32];
    if (ev->id != NULL)
        snprintf(id, sizeof(id), "%s", ev->id);
    else
        sy_audit_uuid(id, NULL);
    sy_flags_now(at);
    json_t *o = json_object();
    if (o == NULL)
        return;
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "at", json_string(at));
    json_object_set_new(o, "instance", json_string(a->instance));
    json_object_set_new(o, "kind", json_string(ev->kind));
    json_object_set_new(o, "route", str_or_null(ev->route));
    json_object_set_new(o, "actor", str_or_null(ev->actor));
    json_object_set_new(o, "reason", str_or_null(ev->reason));
    json_object_set(o, "before", ev->before ? ev->before : json_null());
    json_object_set(o, "after", ev->after ? ev->after : json_null());
    json_object_set(o, "stats", ev->stats ? ev->stats : json_null());
    append(a, SY_JOURNAL_EVENTS, o);
    json_decref(o);
}

void sy_audit_window(sy_audit_t *a, int64_t at_ms, const char *route, const char *variant, uint64_t requests,
                     uint64_t errors, double p50_ms, double p95_ms, double p99_ms)
{
    if (a == NULL)
        return;
    char at[40];
    time_t secs = (time_t)(at_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(at + n, sizeof(at) - n, ".%03dZ", (int)(at_ms % 1000));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "at", at, "route", route, "variant", variant, "instance",
                          a->instance, "requests", (json_int_t)requests, "errors", (json_int_t)errors);
    if (o == NULL)
        return;
    /* no requests: no latency to speak of */
    json_object_set_new(o, "p50_ms", requests ? json_real(p50_ms) : json_null());
    json_object_set_new(o, "p95_ms", requests ? json_real(p95_ms) : json_null());
    json_object_set_new(o, "p99_ms", requests ? json_real(p99_ms) : json_null());
    append(a, SY_JOURNAL_WINDOWS, o);
    json_decref(o);
}

static void sink_event(void *ctx, const sy_event_t *ev)
{
    char id[37];
    if (ev->id_text != NULL)
        sy_audit_uuid(id, ev->id_text);
    sy_audit_event_t ae = {.kind = ev->kind, .route = ev->route, .actor = ev->actor, .reason = ev->reason,
                           .before = ev->before, .after = ev->after, .stats = ev->stats,
                           .id = ev->id_text != NULL ? id : NULL};
    sy_audit_record(ctx, &ae);
}

static void sink_window(void *ctx, const sy_window_row_t *w)
{
    sy_audit_window(ctx, w->at_ms, w->route, w->variant, w->requests, w->errors, w->p50_ms, w->p95_ms, w->p99_ms);
}

sy_sink_t sy_audit_sink(sy_audit_t *a)
{
    sy_sink_t k = {.event = sink_event, .window = sink_window, .ctx = a};
    return k;
}

void sy_audit_sync(sy_audit_t *a, sy_journal_sync_fn cb, void *ud)
{
    if (a == NULL)
        cb(ud, true);
    else
        sy_journal_sync(a->journal, cb, ud);
}

uint64_t sy_audit_window_ms(const sy_audit_t *a)
{
    return a ? a->conf->window : 0;
}

/* --- reading back ------------------------------------------------------------------ */

typedef struct read_ctx {
    sy_audit_read_fn done;
    void *ud;
} read_ctx_t;

static void read_cb(void *ud, const char *err, const char *sqlstate, const PGresult *res)
{
    read_ctx_t *r = ud;
    if (err != NULL) {
        char msg[400];
        bool bad_input = sqlstate && (strncmp(sqlstate, "22", 2) == 0);
        snprintf(msg, sizeof(msg), "%s%s", bad_input ? "bad query parameter: " : "PostgreSQL: ", err);
        r->done(r->ud, bad_input ? SY_EINVAL : SY_EUNAVAILABLE, msg);
    } else if (res == NULL || PQntuples(res) != 1) {
        r->done(r->ud, SY_EUNAVAILABLE, "PostgreSQL gave no answer");
    } else {
        r->done(r->ud, SY_OK, PQgetvalue(res, 0, 0));
    }
    free(r);
}

/* since: a duration back from now, or a time stamp PostgreSQL will read. */
static int since_param(const char *since, char *out, size_t cap, const char **why)
{
    if (since == NULL || since[0] == '\0')
        return 1; /* none */
    uint64_t ms;
    if (sy_parse_duration_ms(since, &ms) == 0) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        int64_t at = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 - (int64_t)ms;
        time_t secs = (time_t)(at / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + n, cap - n, ".%03dZ", (int)(at % 1000));
        return 0;
    }
    if (strlen(since) >= cap || strspn(since, "0123456789-:T.Z+ ") != strlen(since) || strlen(since) < 10) {
        *why = "since must be an ISO 8601 time (2026-11-21T18:00:00Z) or a duration back from now (90s, 15m, 2h)";
        return -1;
    }
    snprintf(out, cap, "%s", since);
    return 0;
}

#define READS_MAX_QUEUED 48 /* of the connection's 64 */

static void run_read(sy_audit_t *a, const char *sql, int n, const char *const *params, sy_audit_read_fn done,
                     void *ud)
{
    if (a == NULL) {
        done(ud, SY_EUNAVAILABLE, "there is no record: the config has no postgres section");
        return;
    }
    if (!a->schema_ready) {
        done(ud, SY_EUNAVAILABLE, "PostgreSQL is unavailable (the journal keeps every record until it is back)");
        return;
    }
    /* Readers never take the writer's room in the queue (two batches at most). */
    if (sy_pg_queued(a->pg) >= READS_MAX_QUEUED) {
        done(ud, SY_EUNAVAILABLE, "too many reads waiting for PostgreSQL; try again");
        return;
    }
    read_ctx_t *r = malloc(sizeof(*r));
    if (r == NULL) {
        done(ud, SY_EUNAVAILABLE, "out of memory");
        return;
    }
    r->done = done;
    r->ud = ud;
    int rc = sy_pg_query(a->pg, sql, n, params, read_cb, r);
    if (rc != 0) {
        free(r);
        done(ud, SY_EUNAVAILABLE, rc == SY_ELIMIT ? "too many queries waiting for PostgreSQL; try again" : "PostgreSQL is unavailable");
    }
}

#define AT_TEXT "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at"

/* Parameters in order: route, kind (events only), since, limit; NULL is SQL NULL. */
static void read_back(sy_audit_t *a, const char *sql, bool with_kind, const char *route, const char *kind,
                      const char *since, long limit, sy_audit_read_fn done, void *ud)
{
    char ts[64], lim[24];
    const char *why = NULL;
    int sr = since_param(since, ts, sizeof(ts), &why);
    if (sr < 0) {
        done(ud, SY_EINVAL, why);
        return;
    }
    snprintf(lim, sizeof(lim), "%ld", limit);
    const char *params[4];
    int n = 0;
    params[n++] = route;
    if (with_kind)
        params[n++] = kind;
    params[n++] = sr == 0 ? ts : NULL;
    params[n++] = lim;
    run_read(a, sql, n, params, done, ud);
}

/* The two read-backs, newest first, each as one JSON array; parameters as read_back gives them. */
static const char events_sql[] =
    "SELECT coalesce(json_agg(e ORDER BY e.at DESC, e.id), '[]')::text FROM ("
    "SELECT id, " AT_TEXT ", instance, kind, route, actor, reason, before, after, stats FROM events"
    " WHERE ($1::text IS NULL OR route = $1) AND ($2::text IS NULL OR kind = $2)"
    " AND ($3::timestamptz IS NULL OR at >= $3::timestamptz) ORDER BY events.at DESC, id LIMIT $4::int) e";
static const char windows_sql[] =
    "SELECT coalesce(json_agg(w ORDER BY w.at DESC, w.route, w.variant, w.instance), '[]')::text FROM ("
    "SELECT " AT_TEXT ", route, variant, instance, requests, errors, p50_ms, p95_ms, p99_ms FROM windows"
    " WHERE ($1::text IS NULL OR route = $1) AND ($2::timestamptz IS NULL OR at >= $2::timestamptz)"
    " ORDER BY windows.at DESC, route, variant LIMIT $3::int) w";

void sy_audit_events(sy_audit_t *a, const char *route, const char *kind, const char *since, long limit,
                     sy_audit_read_fn done, void *ud)
{
    read_back(a, events_sql, true, route, kind, since, limit, done, ud);
}

void sy_audit_windows(sy_audit_t *a, const char *route, const char *since, long limit, sy_audit_read_fn done,
                      void *ud)
{
    read_back(a, windows_sql, false, route, NULL, since, limit, done, ud);
}

void sy_audit_status(sy_audit_t *a, sy_audit_status_t *out)
{
    memset(out, 0, sizeof(*out));
    if (a == NULL)
        return;
    out->configured = true;
    out->connected = sy_pg_connected(a->pg);
    out->schema_ready = a->schema_ready;
    out->schema_version = a->schema_version;
    out->inserted[0] = a->inserted[0];
    out->inserted[1] = a->inserted[1];
    out->rejected = a->rejected;
    sy_journal_stats(a->journal, &out->journal);
    sy_pg_status_t ps;
    sy_pg_status(a->pg, &ps);
    snprintf(out->last_error, sizeof(out->last_error), "%s", a->last_error[0] ? a->last_error : ps.last_error);
}

bool sy_audit_busy(sy_audit_t *a)
{
    if (a == NULL || !a->schema_ready)
        return false;
    sy_journal_stats_t js;
    sy_journal_stats(a->journal, &js);
    return js.queued > 0 || js.durable[0] > js.acked[0] || js.durable[1] > js.acked[1];
}

/* --- switchyard migrate -------------------------------------------------------------- */

typedef struct migrate_run {
    sy_pg_t *pg;
    int rc;
    bool finished;
    ev_timer deadline;
} migrate_run_t;

static void migrate_done(void *ud, const char *err, const char *sqlstate, const PGresult *res)
{
    migrate_run_t *m = ud;
    m->finished = true;
    if (err != NULL) {
        fprintf(stderr, "migrate: %s%s%s\n", sqlstate && *sqlstate ? sqlstate : "", sqlstate && *sqlstate ? ": " : "",
                err);
        m->rc = 1;
    } else {
        int v = res && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? atoi(PQgetvalue(res, 0, 0)) : 0;
        printf("schema at version %d (this build knows %d)\n", v, SCHEMA_VERSION);
        m->rc = 0;
    }
}

static void migrate_state(void *ud, bool up)
{
    migrate_run_t *m = ud;
    if (!up || m->finished)
        return;
    char *sql = migration_sql();
    if (sql == NULL || sy_pg_query(m->pg, sql, 0, NULL, migrate_done, m) != 0) {
        m->finished = true;
        m->rc = 1;
        fprintf(stderr, "migrate: out of memory\n");
    }
    free(sql);
}

static void migrate_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    migrate_run_t *m = w->data;
    (void)loop;
    if (!m->finished) {
        sy_pg_status_t ps;
        sy_pg_status(m->pg, &ps);
        fprintf(stderr, "migrate: cannot reach PostgreSQL: %s\n", ps.last_error[0] ? ps.last_error : "timeout");
        m->finished = true;
        m->rc = 1;
    }
}

static void migrate_check(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    migrate_run_t *m = w->data;
    if (m->finished)
        ev_break(loop, EVBREAK_ALL);
}

int sy_audit_migrate(const sy_config_t *cfg)
{
    const sy_audit_conf_t *ac = sy_config_ext(cfg, "postgres");
    if (ac == NULL) {
        fprintf(stderr, "migrate: the config has no postgres section\n");
        return 1;
    }
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (loop == NULL)
        return 1;
    migrate_run_t m = {.rc = 1};
    m.pg = connect_pg(loop, ac, migrate_state, &m);
    if (m.pg == NULL) {
        ev_loop_destroy(loop);
        return 1;
    }
    ev_timer_init(&m.deadline, migrate_deadline, (double)(ac->connect_timeout + ac->query_timeout) / 1000.0, 0.);
    m.deadline.data = &m;
    ev_timer_start(loop, &m.deadline);
    ev_prepare check;
    ev_prepare_init(&check, migrate_check);
    check.data = &m;
    ev_prepare_start(loop, &check);
    ev_run(loop, 0);
    ev_prepare_stop(loop, &check);
    ev_timer_stop(loop, &m.deadline);
    sy_pg_destroy(m.pg);
    ev_loop_destroy(loop);
    return m.rc;
}
