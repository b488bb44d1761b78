/* The async Redis client. See redis.h.
 *
 * Commands in flight are kept in the order sent (hiredis answers them in that
 * order on one connection): the oldest one's deadline is the one timer. When
 * a connection goes, hiredis answers every pending callback with a NULL reply;
 * the callback here turns that into an error for the caller. */
#include "flags/redis.h"

#include "flags/sentinel.h"
#include "proxy/log.h"

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 5.0

typedef struct sy_redis_cmd {
    sy_redis_t *r;
    sy_redis_reply_fn fn;
    void *ud;
    ev_tstamp deadline;
    struct sy_redis_cmd *next;
} sy_redis_cmd_t;

struct sy_redis {
    struct ev_loop *loop;
    char ip[64];
    int port;
    double connect_timeout, command_timeout;
    sy_redis_ops_t ops;
    void *ud;
    redisAsyncContext *cmd, *sub;
    bool cmd_up, sub_up, destroying;
    sy_sentinel_t *sentinel;   /* NULL: ip:port is fixed */
    bool role_ok;              /* the server said it is the master (always true without sentinel) */
    double backoff;
    uint64_t reconnects;
    ev_timer reconnect_timer, connect_deadline, command_deadline;
    sy_redis_cmd_t *head, *tail; /* in flight, oldest first */
};

static void connect_all(sy_redis_t *r);

static void schedule_reconnect(sy_redis_t *r)
{
    if (r->destroying || ev_is_active(&r->reconnect_timer))
        return;
    ev_timer_set(&r->reconnect_timer, r->backoff, 0.);
    ev_timer_start(r->loop, &r->reconnect_timer);
    r->backoff = r->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : r->backoff * 2;
}

/* Both connections go (a failure on either): the owner hears it first, then
 * hiredis answers the pending commands, then a reconnect is scheduled. */
static void drop(sy_redis_t *r, const char *why, const char *detail)
{
    bool was_up = r->cmd_up || r->sub_up;
    ev_timer_stop(r->loop, &r->connect_deadline);
    ev_timer_stop(r->loop, &r->command_deadline);
    r->cmd_up = r->sub_up = false;
    r->role_ok = r->sentinel == NULL;
    if (r->sentinel != NULL)
        sy_sentinel_ask(r->sentinel); /* the master may have moved */
    if (r->ops.down != NULL)
        r->ops.down(r->ud, why, detail, was_up);
    redisAsyncContext *c = r->cmd, *b = r->sub;
    r->cmd = r->sub = NULL;
    if (c != NULL)
        redisAsyncFree(c);
    if (b != NULL)
        redisAsyncFree(b);
    schedule_reconnect(r);
}

static void arm_deadline(sy_redis_t *r)
{
    ev_timer_stop(r->loop, &r->command_deadline);
    if (r->head == NULL)
        return;
    double left = r->head->deadline - ev_now(r->loop);
    ev_timer_set(&r->command_deadline, left > 0 ? left : 0., 0.);
    ev_timer_start(r->loop, &r->command_deadline);
}

static void unlink_cmd(sy_redis_t *r, sy_redis_cmd_t *c)
{
    sy_redis_cmd_t **pp = &r->head, *prev = NULL;
    while (*pp != NULL && *pp != c) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = c->next;
    if (r->tail == c)
        r->tail = prev;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)ac;
    sy_redis_cmd_t *c = priv;
    sy_redis_t *r = c->r;
    bool was_head = r->head == c;
    unlink_cmd(r, c);
    if (was_head && !r->destroying && reply != NULL)
        arm_deadline(r);
    const char *err = reply != NULL ? NULL : r->destroying ? "shutting down" : "redis went away";
    redisReply *rep = reply;
    bool readonly = rep != NULL && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "READONLY", 8) == 0;
    c->fn(c->ud, reply, err);
    free(c);
    /* A master demoted under us: what we write is refused; find the new one. */
    if (readonly && r->sentinel != NULL && !r->destroying && r->cmd != NULL)
        drop(r, "the server became a replica (READONLY)", NULL);
}

static int send_cmd(sy_redis_t *r, sy_redis_reply_fn fn, void *ud, int argc, const char **argv, const size_t *lens)
{
    sy_redis_cmd_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->r = r;
    c->fn = fn;
    c->ud = ud;
    c->deadline = ev_now(r->loop) + r->command_timeout;
    if (redisAsyncCommandArgv(r->cmd, on_reply, c, argc, argv, lens) != REDIS_OK) {
        free(c);
        return -1;
    }
    if (r->tail != NULL)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (r->head == c)
        arm_deadline(r);
    return 0;
}

int sy_redis_command(sy_redis_t *r, sy_redis_reply_fn fn, void *ud, int argc, const char **argv, const size_t *lens)
{
    if (r == NULL || !sy_redis_up(r))
        return -1;
    return send_cmd(r, fn, ud, argc, argv, lens);
}

/* Sentinel mode: ROLE on a fresh connection; only a master is "up". */
static void on_role(void *ud, redisReply *rep, const char *err)
{
    sy_redis_t *r = ud;
    if (err != NULL || r->destroying || r->cmd == NULL)
        return;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(rep->element[0]->str, "master") == 0) {
        r->role_ok = true;
        ev_timer_stop(r->loop, &r->connect_deadline);
        r->backoff = BACKOFF_MIN;
        if (r->ops.up != NULL)
            r->ops.up(r->ud);
        return;
    }
    sy_warn("redis %s:%d is not the master (ROLE: %s); asking the sentinels again", r->ip, r->port,
            rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_STRING
                ? rep->element[0]->str
                : rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
    drop(r, "not the master", NULL);
}

static void on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    (void)priv;
    sy_redis_t *r = ac->data;
    if (r == NULL || r->destroying || reply == NULL || r->ops.message == NULL)
        return;
    r->ops.message(r->ud, reply);
}

int sy_redis_subscribe(sy_redis_t *r, int argc, const char **argv)
{
    if (r == NULL || !sy_redis_up(r))
        return -1;
    return redisAsyncCommandArgv(r->sub, on_message, NULL, argc, argv, NULL) == REDIS_OK ? 0 : -1;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sy_redis_t *r = ac->data;
    if (r == NULL || r->destroying)
        return;
    bool is_cmd = ac == r->cmd;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        if (is_cmd)
            r->cmd = NULL;
        else
            r->sub = NULL;
        drop(r, "connect failed", ac->errstr[0] ? ac->errstr : "error");
        return;
    }
    if (is_cmd)
        r->cmd_up = true;
    else
        r->sub_up = true;
    if (r->cmd_up && r->sub_up) {
        if (r->sentinel != NULL) {
            const char *argv[] = {"ROLE"};
            if (send_cmd(r, on_role, r, 1, argv, NULL) != 0)
                drop(r, "cannot send ROLE", NULL);
            return;
        }
        ev_timer_stop(r->loop, &r->connect_deadline);
        r->backoff = BACKOFF_MIN;
        if (r->ops.up != NULL)
            r->ops.up(r->ud);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sy_redis_t *r = ac->data;
    (void)status;
    if (r == NULL || r->destroying)
        return;
    if (ac == r->cmd)
        r->cmd = NULL;
    if (ac == r->sub)
        r->sub = NULL;
    drop(r, ac->errstr[0] ? ac->errstr : "connection closed", NULL);
}

static redisAsyncContext *open_ctx(sy_redis_t *r, const char **err)
{
    redisAsyncContext *ac = redisAsyncConnect(r->ip, r->port);
    if (ac == NULL)
        return NULL;
    if (ac->err) {
        *err = "cannot start a connection";
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = r;
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void connect_all(sy_redis_t *r)
{
    const char *err = NULL;
    if (r->ip[0] == '\0')
        return; /* sentinel mode, no master known yet: sentinel_found starts it */
    r->cmd = open_ctx(r, &err);
    r->sub = r->cmd ? open_ctx(r, &err) : NULL;
    if (r->cmd == NULL || r->sub == NULL) {
        drop(r, "cannot start a connection", NULL);
        return;
    }
    ev_timer_stop(r->loop, &r->connect_deadline);
    ev_timer_set(&r->connect_deadline, r->connect_timeout, 0.);
    ev_timer_start(r->loop, &r->connect_deadline);
}

static void reconnect_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_redis_t *r = t->data;
    (void)loop;
    (void)revents;
    r->reconnects++;
    if (r->cmd == NULL && r->sub == NULL)
        connect_all(r);
}

static void connect_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_redis_t *r = t->data;
    (void)loop;
    (void)revents;
    if (!sy_redis_up(r))
        drop(r, "connect timed out (redis.connect_timeout)", NULL);
}

static void command_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    sy_redis_t *r = t->data;
    (void)revents;
    if (r->head != NULL && ev_now(loop) >= r->head->deadline)
        drop(r, "no reply in time (redis.command_timeout)", NULL);
    else
        arm_deadline(r);
}

sy_redis_t *sy_redis_create(struct ev_loop *loop, const char *ip, int port, uint64_t connect_timeout_ms,
                            uint64_t command_timeout_ms, const sy_redis_ops_t *ops, void *ud)
{
    sy_redis_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->loop = loop;
    snprintf(r->ip, sizeof(r->ip), "%s", ip);
    r->port = port;
    r->connect_timeout = (double)connect_timeout_ms / 1e3;
    r->command_timeout = (double)command_timeout_ms / 1e3;
    r->ops = *ops;
    r->ud = ud;
    r->backoff = BACKOFF_MIN;
    ev_init(&r->reconnect_timer, reconnect_cb);
    ev_init(&r->connect_deadline, connect_deadline_cb);
    ev_init(&r->command_deadline, command_deadline_cb);
    r->reconnect_timer.data = r->connect_deadline.data = r->command_deadline.data = r;
    r->role_ok = true;
    connect_all(r);
    return r;
}

/* The sentinels name the master: a new address drops what we have (if
 * anything) and connects there at once. */
static void sentinel_found(void *ud, const char *ip, int port)
{
    sy_redis_t *r = ud;
    if (r->destroying)
        return;
    bool same = strcmp(r->ip, ip) == 0 && r->port == port;
    if (same && (r->cmd != NULL || ev_is_active(&r->reconnect_timer)))
        return;
    if (!same) {
        char was[96] = "";
        if (r->ip[0] != '\0')
            snprintf(was, sizeof(was), " (was %s:%d)", r->ip, r->port);
        sy_info("redis: the sentinels name %s:%d as the master%s", ip, port, was);
    }
    snprintf(r->ip, sizeof(r->ip), "%s", ip);
    r->port = port;
    if (r->cmd != NULL || r->sub != NULL)
        drop(r, "the master moved (sentinel)", NULL);
    ev_timer_stop(r->loop, &r->reconnect_timer);
    r->backoff = BACKOFF_MIN;
    ev_timer_set(&r->reconnect_timer, 0., 0.);
    ev_timer_start(r->loop, &r->reconnect_timer);
}

sy_redis_t *sy_redis_create_sentinel(struct ev_loop *loop, const char *const *sentinels, size_t n,
                                     const char *master, uint64_t connect_timeout_ms, uint64_t command_timeout_ms,
                                     const sy_redis_ops_t *ops, void *ud)
{
    sy_redis_t *r = sy_redis_create(loop, "", 0, connect_timeout_ms, command_timeout_ms, ops, ud);
    if (r == NULL)
        return NULL;
    r->role_ok = false;
    r->sentinel = sy_sentinel_create(loop, sentinels, n, master, connect_timeout_ms, command_timeout_ms,
                                     sentinel_found, r);
    if (r->sentinel == NULL) {
        sy_redis_destroy(r);
        return NULL;
    }
    return r;
}

const char *sy_redis_peer(const sy_redis_t *r, char *buf, size_t cap)
{
    if (r == NULL || r->ip[0] == '\0')
        snprintf(buf, cap, "%s", "");
    else
        snprintf(buf, cap, "%s:%d", r->ip, r->port);
    return buf;
}

void sy_redis_destroy(sy_redis_t *r)
{
    if (r == NULL)
        return;
    r->destroying = true;
    sy_sentinel_destroy(r->sentinel);
    r->sentinel = NULL;
    ev_timer_stop(r->loop, &r->reconnect_timer);
    ev_timer_stop(r->loop, &r->connect_deadline);
    ev_timer_stop(r->loop, &r->command_deadline);
    if (r->cmd != NULL)
        redisAsyncFree(r->cmd);
    if (r->sub != NULL)
        redisAsyncFree(r->sub);
    free(r);
}

bool sy_redis_up(const sy_redis_t *r)
{
    return r != NULL && r->cmd_up && r->sub_up && r->role_ok && r->cmd != NULL && r->sub != NULL;
}

uint64_t sy_redis_reconnects(const sy_redis_t *r)
{
    return r != NULL ? r->reconnects : 0;
}
