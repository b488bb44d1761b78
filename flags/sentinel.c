/* Finding the Redis master through Sentinel. See sentinel.h.
 *
 * Contexts being freed by us get data = NULL first: their callbacks (hiredis
 * calls the disconnect callback and answers pending replies with NULL while
 * freeing) then do nothing. */
#include "flags/sentinel.h"

#include "proxy/log.h"

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SENTINELS 16
#define POLL_EVERY 1.0
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 2.0

struct sy_sentinel {
    struct ev_loop *loop;
    char host[MAX_SENTINELS][64];
    int port[MAX_SENTINELS];
    size_t n, cur;
    char master[128];
    double connect_timeout, command_timeout;
    sy_sentinel_found_fn found;
    void *ud;
    redisAsyncContext *cmd, *sub;
    bool cmd_up, sub_up, asking;
    double backoff;
    unsigned failures;          /* in a row, for the log */
    char current[80];
    ev_timer reconnect, deadline, poll;
};

static void start(sy_sentinel_t *s);

static void release(redisAsyncContext *ac)
{
    if (ac == NULL)
        return;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* This sentinel failed: the next one, after a pause that grows while none answers. */
static void fail(sy_sentinel_t *s, const char *why)
{
    if (s->failures++ % 20 == 0)
        sy_warn("redis sentinel %s:%d: %s; trying the next sentinel", s->host[s->cur], s->port[s->cur], why);
    ev_timer_stop(s->loop, &s->deadline);
    redisAsyncContext *c = s->cmd, *b = s->sub;
    s->cmd = s->sub = NULL;
    s->cmd_up = s->sub_up = s->asking = false;
    s->current[0] = '\0';
    release(c);
    release(b);
    s->cur = (s->cur + 1) % s->n;
    if (!ev_is_active(&s->reconnect)) {
        /* A full round without an answer before the pause grows. */
        double wait = s->cur == 0 ? s->backoff : 0.;
        if (s->cur == 0)
            s->backoff = s->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : s->backoff * 2;
        ev_timer_set(&s->reconnect, wait, 0.);
        ev_timer_start(s->loop, &s->reconnect);
    }
}

int sy_sentinel_parse_switch(const char *payload, size_t len, const char *master, char *ip, size_t cap, int *port)
{
    char buf[512], name[128], oip[64], nip[64];
    int oport = 0, nport = 0;
    if (payload == NULL || len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, payload, len);
    buf[len] = '\0';
    if (memchr(buf, '\0', len) != NULL)
        return -1;
    if (sscanf(buf, "%127s %63s %d %63s %d", name, oip, &oport, nip, &nport) != 5)
        return -1;
    if (strcmp(name, master) != 0 || nport <= 0 || nport > 65535 || strlen(nip) >= cap)
        return -1;
    memcpy(ip, nip, strlen(nip) + 1);
    *port = nport;
    return 0;
}

static void on_addr(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)priv;
    sy_sentinel_t *s = ac->data;
    if (s == NULL)
        return;
    redisReply *r = reply;
    s->asking = false;
    ev_timer_stop(s->loop, &s->deadline);
    if (r == NULL)
        return; /* the disconnect callback says why */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        int port = atoi(r->element[1]->str);
        if (port > 0 && port <= 65535 && r->element[0]->len < 64) {
            s->failures = 0;
            s->backoff = BACKOFF_MIN;
            s->found(s->ud, r->element[0]->str, port);
            return;
        }
    }
    fail(s, r->type == REDIS_REPLY_ERROR ? r->str : "it does not know the master (get-master-addr-by-name)");
}

static void ask(sy_sentinel_t *s)
{
    if (!s->cmd_up || s->asking)
        return;
    if (redisAsyncCommand(s->cmd, on_addr, NULL, "SENTINEL get-master-addr-by-name %s", s->master) != REDIS_OK) {
        fail(s, "cannot send a query");
        return;
    }
    s->asking = true;
    ev_timer_set(&s->deadline, s->command_timeout, 0.);
    ev_timer_start(s->loop, &s->deadline);
}

void sy_sentinel_ask(sy_sentinel_t *s)
{
    if (s != NULL)
        ask(s);
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)priv;
    sy_sentinel_t *s = ac->data;
    redisReply *r = reply;
    if (s == NULL || r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return;
    if (r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    char ip[64];
    int port;
    if (sy_sentinel_parse_switch(r->element[2]->str, r->element[2]->len, s->master, ip, sizeof(ip), &port) == 0) {
        sy_info("redis sentinel %s: +switch-master %s -> %s:%d", s->current, s->master, ip, port);
        s->found(s->ud, ip, port);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sy_sentinel_t *s = ac->data;
    if (s == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees this context after the callback */
        if (ac == s->cmd)
            s->cmd = NULL;
        else
            s->sub = NULL;
        fail(s, ac->errstr[0] ? ac->errstr : "cannot connect");
        return;
    }
    if (ac == s->cmd)
        s->cmd_up = true;
    else
        s->sub_up = true;
    if (s->cmd_up && s->sub_up) {
        ev_timer_stop(s->loop, &s->deadline);
        snprintf(s->current, sizeof(s->current), "%s:%d", s->host[s->cur], s->port[s->cur]);
        if (redisAsyncCommand(s->sub, on_message, NULL, "SUBSCRIBE +switch-master") != REDIS_OK) {
            fail(s, "cannot subscribe to +switch-master");
            return;
        }
        ask(s);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    sy_sentinel_t *s = ac->data;
    if (s == NULL)
        return;
    if (ac == s->cmd)
        s->cmd = NULL;
    if (ac == s->sub)
        s->sub = NULL;
    fail(s, ac->errstr[0] ? ac->errstr : "connection closed");
}

static redisAsyncContext *open_ctx(sy_sentinel_t *s)
{
    redisAsyncContext *ac = redisAsyncConnect(s->host[s->cur], s->port[s->cur]);
    if (ac == NULL)
        return NULL;
    if (ac->err) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    redisLibevAttach(s->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void start(sy_sentinel_t *s)
{
    s->cmd = open_ctx(s);
    s->sub = s->cmd != NULL ? open_ctx(s) : NULL;
    if (s->cmd == NULL || s->sub == NULL) {
        fail(s, "cannot start a connection");
        return;
    }
    ev_timer_set(&s->deadline, s->connect_timeout, 0.);
    ev_timer_start(s->loop, &s->deadline);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    start(t->data);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    sy_sentinel_t *s = t->data;
    fail(s, s->cmd_up && s->sub_up ? "no answer in time (redis.command_timeout)"
                                   : "connect timed out (redis.connect_timeout)");
}

static void poll_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    ask(t->data);
}

sy_sentinel_t *sy_sentinel_create(struct ev_loop *loop, const char *const *hosts, size_t n, const char *master,
                                  uint64_t connect_timeout_ms, uint64_t command_timeout_ms,
                                  sy_sentinel_found_fn found, void *ud)
{
    if (n == 0 || n > MAX_SENTINELS)
        return NULL;
    sy_sentinel_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    for (size_t i = 0; i < n; i++) {
        const char *colon = strrchr(hosts[i], ':');
        size_t hl = colon != NULL ? (size_t)(colon - hosts[i]) : 0;
        if (colon == NULL || hl == 0 || hl >= sizeof(s->host[i])) {
            free(s);
            return NULL;
        }
        memcpy(s->host[i], hosts[i], hl);
        s->host[i][hl] = '\0';
        s->port[i] = atoi(colon + 1);
    }
    s->n = n;
    snprintf(s->master, sizeof(s->master), "%s", master);
    s->connect_timeout = (double)connect_timeout_ms / 1e3;
    s->command_timeout = (double)command_timeout_ms / 1e3;
    s->found = found;
    s->ud = ud;
    s->backoff = BACKOFF_MIN;
    ev_init(&s->reconnect, reconnect_cb);
    ev_init(&s->deadline, deadline_cb);
    ev_timer_init(&s->poll, poll_cb, POLL_EVERY, POLL_EVERY);
    s->reconnect.data = s->deadline.data = s->poll.data = s;
    ev_timer_start(loop, &s->poll);
    start(s);
    return s;
}

void sy_sentinel_destroy(sy_sentinel_t *s)
{
    if (s == NULL)
        return;
    ev_timer_stop(s->loop, &s->reconnect);
    ev_timer_stop(s->loop, &s->deadline);
    ev_timer_stop(s->loop, &s->poll);
    release(s->cmd);
    release(s->sub);
    free(s);
}

const char *sy_sentinel_current(const sy_sentinel_t *s)
{
    return s != NULL ? s->current : "";
}
