/* The dashboard: GET / (one self-contained page, embedded in the binary at
 * build time from handlers/dashboard.html) and GET /history (the last minutes
 * of each route, one sample a second, from healthcheck/history.c). The page
 * reads /status, /history and /events every second or so and acts through the
 * admin API's own write endpoints with the token it asks for. */
#include "handlers/admin_conn.h"

#include "healthcheck/history.h"

#include <stdlib.h>
#include <string.h>

/* Generated from handlers/dashboard.html (cmake/embed.cmake). */
extern const unsigned char sy_dashboard_html[];
extern const size_t sy_dashboard_html_len;

void sy_admin_ep_dashboard(admin_conn_t *c, const char *name, json_t *body)
{
    (void)name;
    (void)body;
    char *page = malloc(sy_dashboard_html_len);
    if (page == NULL) {
        respond_error(c, 500, "out of memory");
        return;
    }
    memcpy(page, sy_dashboard_html, sy_dashboard_html_len);
    sy_admin_respond_big(c, page, sy_dashboard_html_len, "text/html; charset=utf-8", true);
}

/* GET /history?seconds=N (1..300, default 300). */
void sy_admin_ep_history(admin_conn_t *c, const char *name, json_t *body)
{
    (void)name;
    (void)body;
    if (c->a->history == NULL) {
        respond_error(c, 503, "no history is kept (out of memory at start)");
        return;
    }
    char v[16];
    bool bad = false;
    long seconds = SY_HISTORY_SECONDS;
    if (sy_admin_query_param(c, "seconds", v, sizeof(v), &bad)) {
        char *end = NULL;
        seconds = strtol(v, &end, 10);
        bad = *end != '\0' || seconds < 1 || seconds > SY_HISTORY_SECONDS;
    }
    if (bad) {
        respond_error(c, 400, "seconds must be a whole number 1..300");
        return;
    }
    respond_json(c, 200, sy_history_json(c->a->history, (size_t)seconds));
}
