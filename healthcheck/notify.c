#include "healthcheck/notify.h"

#include "proxy/log.h"
#include "proxy/net.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

struct sy_notify {
    struct ev_loop *loop;
    sy_config_t *cfg;
    const sy_notify_conf_t *conf;
    msg_t queue[SY_NOTIFY_QUEUE];
    size_t head, count;
    int fd;
    ev_io io;
    ev_timer timer;     /* the try's timeout, or the pause before the next try */
    bool busy;          /* a try is under way */
    char out[8192];
    size_t out_len, out_off;
    char in[256];
    size_t in_len;
    uint64_t sent, failed, dropped;
};

static void start_next(sy_notify_t *n);

static void end_try(sy_notify_t *n, bool ok, const char *why)
{
    if (n->fd >= 0) {
        ev_io_stop(n->loop, &n->io);
        close(n->fd);
        n->fd = -1;
    }
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

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    sy_notify_t *n = w->data;
    (void)loop;
    (void)revents;
    if (n->out_off == 0 && n->in_len == 0) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(n->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            end_try(n, false, strerror(err ? err : errno));
            return;
        }
    }
    if (n->out_off < n->out_len) {
        ssize_t w2 = send(n->fd, n->out + n->out_off, n->out_len - n->out_off, MSG_NOSIGNAL);
        if (w2 < 0 && errno != EAGAIN) {
            end_try(n, false, strerror(errno));
            return;
        }
        if (w2 > 0)
            n->out_off += (size_t)w2;
        if (n->out_off == n->out_len) {
            ev_io_stop(n->loop, &n->io);
            ev_io_modify(&n->io, EV_READ);
            ev_io_start(n->loop, &n->io);
        }
        return;
    }
    ssize_t r = recv(n->fd, n->in + n->in_len, sizeof(n->in) - 1 - n->in_len, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r > 0)
        n->in_len += (size_t)r;
    n->in[n->in_len] = '\0';
    int status = 0;
    if (sscanf(n->in, "HTTP/1.%*d %d", &status) == 1) {
        char why[64];
        snprintf(why, sizeof(why), "answered %d", status);
        end_try(n, status >= 200 && status < 300, why);
    } else if (r <= 0 || n->in_len >= sizeof(n->in) - 1) {
        end_try(n, false, "no HTTP answer");
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_notify_t *n = t->data;
    (void)loop;
    (void)revents;
    if (n->busy)
        end_try(n, false, "timed out");
    else
        start_next(n); /* the pause before a retry is over */
}

static void start_next(sy_notify_t *n)
{
    if (n->busy || n->count == 0 || ev_is_active(&n->timer))
        return;
    msg_t *m = &n->queue[n->head];
    int len = snprintf(n->out, sizeof(n->out),
                       "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                       "User-Agent: switchyard\r\nConnection: close\r\n\r\n%s",
                       n->conf->path, n->conf->host, strlen(m->body), m->body);
    if (len < 0 || (size_t)len >= sizeof(n->out)) {
        n->busy = true;
        end_try(n, false, "notification too large");
        return;
    }
    n->out_len = (size_t)len;
    n->out_off = n->in_len = 0;
    n->fd = sy_net_connect(&n->conf->addr);
    n->busy = true;
    if (n->fd < 0) {
        end_try(n, false, "cannot connect");
        return;
    }
    ev_io_init(&n->io, io_cb, n->fd, EV_WRITE);
    n->io.data = n;
    ev_io_start(n->loop, &n->io);
    ev_timer_set(&n->timer, (double)n->conf->timeout / 1e3, 0.);
    ev_timer_start(n->loop, &n->timer);
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
    n->fd = -1;
    ev_init(&n->timer, timer_cb);
    n->timer.data = n;
    return n;
}

void sy_notify_destroy(sy_notify_t *n)
{
    if (n == NULL)
        return;
    if (n->fd >= 0) {
        ev_io_stop(n->loop, &n->io);
        close(n->fd);
    }
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
