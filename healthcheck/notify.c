#include "healthcheck/notify.h"

#include "proxy/h1client.h"
#include "proxy/log.h"
#include "proxy/net.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the config section ------------------------------------------------------ */

static const sy_conf_field_t notify_fields[] = {
    {"webhook_url", SY_CT_STRING, offsetof(sy_notify_conf_t, webhook_url), NULL, 0, 0},
    {"timeout", SY_CT_DURATION, offsetof(sy_notify_conf_t, timeout), "2s", 10, 60000},
    {"retries", SY_CT_INT, offsetof(sy_notify_conf_t, retries), "3", 1, 10},
};

static void conf_destroy(void *p)
{
    sy_notify_conf_t *c = p;
    if (c != NULL)
        free(c->webhook_url);
    free(c);
}

static int conf_parse(sy_conf_t *c, yaml_node_t *node, const sy_config_t *cfg, void **out)
{
    (void)cfg;
    sy_notify_conf_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return sy_conf_error(c, node, "out of memory");
    *out = n;
    sy_conf_defaults(notify_fields, SY_ARRAY_LEN(notify_fields), n);
    if (sy_conf_fields(c, node, notify_fields, SY_ARRAY_LEN(notify_fields), n, NULL) != 0)
        return SY_EINVAL;
    if (n->webhook_url == NULL)
        return sy_conf_error(c, node, "notify needs a webhook_url");
    const char *u = n->webhook_url;
    if (strncmp(u, "http://", 7) != 0)
        return sy_conf_error(c, node, "webhook_url must be http://HOST:PORT/PATH (numeric host; no TLS yet)");
    u += 7;
    const char *slash = strchr(u, '/');
    size_t hl = slash ? (size_t)(slash - u) : strlen(u);
    if (hl == 0 || hl >= sizeof(n->host))
        return sy_conf_error(c, node, "webhook_url has no host");
    memcpy(n->host, u, hl);
    n->host[hl] = '\0';
    snprintf(n->path, sizeof(n->path), "%s", slash ? slash : "/");
    const char *why = NULL;
    if (sy_addr_parse(n->host, &n->addr, &why) != 0)
        return sy_conf_error(c, node, "webhook_url host '%s': %s", n->host, why);
    return 0;
}

const sy_conf_section_t sy_notify_section = {
    .key = "notify",
    .required = false,
    .parse = conf_parse,
    .destroy = conf_destroy,
};

/* --- delivery ----------------------------------------------------------------- */

typedef struct msg {
    char *body;
    int tries;
} msg_t;

/* A notification is one small JSON document; the answer only tells its status. */
#define NOTIFY_MAX_BODY 8192
static const sy_h1client_limits_t answer_limits = {
    .max_head = 8192,
    .max_headers = 64,
    .max_body = 64 * 1024, /* past this the status decides */
    .keep_body = false,
};

struct sy_notify {
    struct ev_loop *loop;
    sy_config_t *cfg;
    const sy_notify_conf_t *conf;
    msg_t queue[SY_NOTIFY_QUEUE];
    size_t head, count;
    sy_h1client_t *client; /* owned: the try under way */
    ev_timer timer;        /* the pause before the next try */
    bool busy;             /* a try is under way */
    uint64_t sent, failed, dropped;
};

static void start_next(sy_notify_t *n);

static void end_try(sy_notify_t *n, bool ok, const char *why)
{
    ev_timer_stop(n->loop, &n->timer);
    n->busy = false;
    msg_t *m = &n->queue[n->head];
    if (ok) {
        n->sent++;
    } else if (++m->tries < n->conf->retries) {
        double pause = (double)(1 << (m->tries - 1));
        sy_warn("notify: %s: %s; retrying in %.0f s", n->conf->webhook_url, why, pause);
        ev_timer_set(&n->timer, pause, 0.);
        ev_timer_start(n->loop, &n->timer);
        return;
    } else {
        n->failed++;
        sy_warn("notify: %s: %s; giving up on this notification after %d tries", n->conf->webhook_url, why,
                m->tries);
    }
    free(m->body);
    m->body = NULL;
    n->head = (n->head + 1) % SY_NOTIFY_QUEUE;
    n->count--;
    start_next(n);
}

/* The try ended: once the webhook's status is known it decides (the
 * notification reached it), whatever became of the rest of the answer. */
static void on_answer(sy_h1client_t *c, void *ud, const char *err)
{
    sy_notify_t *n = ud;
    const sy_h1client_resp_t *r = sy_h1client_response(c);
    if (r->status == 0) {
        end_try(n, false, err != NULL ? err : "no HTTP answer");
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "answered %d", r->status);
    end_try(n, r->status >= 200 && r->status < 300, why);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_notify_t *n = t->data;
    (void)loop;
    (void)revents;
    start_next(n); /* the pause before a retry is over */
}

static void start_next(sy_notify_t *n)
{
    if (n->busy || n->count == 0 || ev_is_active(&n->timer))
        return;
    msg_t *m = &n->queue[n->head];
    n->busy = true;
    size_t len = strlen(m->body);
    if (len > NOTIFY_MAX_BODY) {
        end_try(n, false, "notification too large");
        return;
    }
    sy_h1client_request_t req = {
        .method = "POST",
        .target = n->conf->path,
        .host = n->conf->host,
        .headers = "Content-Type: application/json\r\nUser-Agent: switchyard\r\n",
        .body = m->body,
        .body_len = len,
    };
    int rc = sy_h1client_start(n->client, &n->conf->addr, &req, (double)n->conf->timeout / 1e3, on_answer, n);
    if (rc != 0)
        end_try(n, false, rc == SY_ENOMEM ? "out of memory" : "the webhook_url's path cannot be sent");
}

void sy_notify_send(sy_notify_t *n, const char *json)
{
    if (n == NULL)
        return;
    if (n->count == SY_NOTIFY_QUEUE) {
        /* Full: the oldest waiting one (not the one being tried) makes room. */
        size_t victim = n->busy ? (n->head + 1) % SY_NOTIFY_QUEUE : n->head;
        free(n->queue[victim].body);
        for (size_t i = victim; i != (n->head + n->count - 1) % SY_NOTIFY_QUEUE; i = (i + 1) % SY_NOTIFY_QUEUE)
            n->queue[i] = n->queue[(i + 1) % SY_NOTIFY_QUEUE];
        n->count--;
        n->dropped++;
        sy_warn("notify: queue full (%d): dropped the oldest waiting notification", SY_NOTIFY_QUEUE);
    }
    msg_t *m = &n->queue[(n->head + n->count) % SY_NOTIFY_QUEUE];
    m->body = strdup(json);
    m->tries = 0;
    if (m->body == NULL)
        return;
    n->count++;
    start_next(n);
}

sy_notify_t *sy_notify_create(struct ev_loop *loop, const sy_config_t *cfg)
{
    const sy_notify_conf_t *conf = sy_config_ext(cfg, "notify");
    if (conf == NULL)
        return NULL;
    sy_notify_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    n->loop = loop;
    n->cfg = sy_config_ref((sy_config_t *)cfg);
    n->conf = conf;
    n->client = sy_h1client_create(loop, &answer_limits);
    if (n->client == NULL) {
        sy_config_release(n->cfg);
        free(n);
        return NULL;
    }
    ev_init(&n->timer, timer_cb);
    n->timer.data = n;
    return n;
}

void sy_notify_destroy(sy_notify_t *n)
{
    if (n == NULL)
        return;
    sy_h1client_destroy(n->client);
    ev_timer_stop(n->loop, &n->timer);
    for (size_t i = 0; i < n->count; i++)
        free(n->queue[(n->head + i) % SY_NOTIFY_QUEUE].body);
    if (n->count > 0)
        sy_warn("notify: %zu notifications not delivered at shutdown", n->count);
    sy_config_release(n->cfg);
    free(n);
}

void sy_notify_counts(const sy_notify_t *n, uint64_t *sent, uint64_t *failed, uint64_t *dropped)
{
    *sent = n ? n->sent : 0;
    *failed = n ? n->failed : 0;
    *dropped = n ? n->dropped : 0;
}
