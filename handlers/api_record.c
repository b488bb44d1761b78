/* The record, read back: GET /events and GET /windows (from PostgreSQL, newest
 * first), and the record's part of /status. */
#include "handlers/admin_conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void read_done(void *ud, sy_err_t err, const char *text)
{
    admin_conn_t *c = ud;
    c->waiting = false;
    if (err == SY_OK) {
        size_t len = strlen(text);
        char *copy = malloc(len + 1);
        if (copy == NULL) {
            respond_error(c, 500, "out of memory");
        } else {
            memcpy(copy, text, len);
            copy[len] = '\n';
            sy_admin_respond_big(c, copy, len + 1, "application/json", true);
        }
    } else {
        respond_error(c, sy_http_status_of(err), text);
    }
    sy_admin_conn_release(c);
}

/* The named parameters (each at most 159 bytes) and limit (1..1000, default
 * 100); false when one is bad, answered 400. */
static bool read_params(admin_conn_t *c, const char *const *names, char (*vals)[160], bool *has, long *limit)
{
    bool bad = false;
    for (size_t i = 0; names[i] != NULL; i++) {
        has[i] = sy_admin_query_param(c, names[i], vals[i], sizeof(vals[i]), &bad);
        if (bad) {
            char why[200];
            snprintf(why, sizeof(why), "query parameter '%s' is malformed or longer than 159 bytes", names[i]);
            respond_error(c, 400, why);
            return false;
        }
    }
    char lim[32];
    *limit = 100;
    if (sy_admin_query_param(c, "limit", lim, sizeof(lim), &bad)) {
        char *end;
        *limit = strtol(lim, &end, 10);
        bad = *end != '\0' || *limit < 1 || *limit > 1000;
    }
    if (bad) {
        respond_error(c, 400, "limit must be a whole number from 1 to 1000");
        return false;
    }
    return true;
}

/* GET /events?route=&kind=&since=&limit= and GET /windows?route=&since=&limit=:
 * the same reading, with or without the kind. */
static void read_back(admin_conn_t *c, bool events)
{
    static const char *const event_names[] = {"route", "kind", "since", NULL};
    static const char *const window_names[] = {"route", "since", NULL};
    char vals[3][160];
    bool has[3] = {false, false, false};
    long limit;
    if (!read_params(c, events ? event_names : window_names, vals, has, &limit))
        return;
#define PARAM(i) (has[i] ? vals[i] : NULL) /* absent: SQL NULL, no filter */
    c->refs++;
    c->waiting = true;
    if (events)
        sy_audit_events(c->a->audit, PARAM(0), PARAM(1), PARAM(2), limit, read_done, c);
    else
        sy_audit_windows(c->a->audit, PARAM(0), PARAM(1), limit, read_done, c);
#undef PARAM
}

void sy_admin_ep_events(admin_conn_t *c, const char *name, json_t *body)
{
    (void)name;
    (void)body;
    read_back(c, true);
}

void sy_admin_ep_windows(admin_conn_t *c, const char *name, json_t *body)
{
    (void)name;
    (void)body;
    read_back(c, false);
}

json_t *sy_admin_record_json(sy_audit_t *a)
{
    sy_audit_status_t st;
    sy_audit_status(a, &st);
    if (!st.configured)
        return json_pack("{s:b}", "configured", 0);
    const sy_journal_stats_t *j = &st.journal;
    return json_pack("{s:b, s:b, s:b, s:i, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:I, s:I, s:I, s:s}",
                     "configured", 1, "connected", st.connected, "schema_ready", st.schema_ready, "schema_version",
                     st.schema_version, "journal", "bytes", (json_int_t)j->bytes, "max_bytes",
                     (json_int_t)j->max_bytes, "events_written", (json_int_t)(j->next[0] - 1), "events_durable",
                     (json_int_t)j->durable[0], "events_acked", (json_int_t)j->acked[0], "events_refused",
                     (json_int_t)j->dropped[0], "windows_written", (json_int_t)(j->next[1] - 1), "windows_acked",
                     (json_int_t)j->acked[1], "windows_dropped", (json_int_t)j->dropped[1], "fsyncs",
                     (json_int_t)j->fsyncs, "events_inserted", (json_int_t)st.inserted[0], "windows_inserted",
                     (json_int_t)st.inserted[1], "rejected", (json_int_t)st.rejected, "last_error", st.last_error);
}
