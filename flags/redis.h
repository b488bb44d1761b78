/* A small generic async Redis client on the control thread's loop: hiredis
 * async with its libev adapter, plus what hiredis 0.14 lacks.
 *
 * Two connections to one server: one for commands, one for subscriptions.
 * The client is "up" when both are connected. It connects with a deadline,
 * gives every command a deadline (our own ev_timer: a command without a reply
 * in command_timeout drops both connections), and after any failure reconnects
 * with a backoff that doubles from 100 ms up to 5 s. Commands are pipelined:
 * send as many as you like, replies come back in the order sent.
 *
 * Every command's callback is called exactly once: with the reply (err NULL),
 * or with reply NULL and err (a static string) when the connection went away
 * or the client is destroyed. Control thread only; none of these may be
 * called from inside a hiredis callback of another client. */
#ifndef SY_REDIS_H
#define SY_REDIS_H

#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sy_redis sy_redis_t;

/* A reply (borrowed for the call) or err. */
typedef void (*sy_redis_reply_fn)(void *ud, redisReply *reply, const char *err);

typedef struct sy_redis_ops {
    /* Both connections are up (after each (re)connect): subscribe, read. */
    void (*up)(void *ud);
    /* The connections are dropped (why: static; detail: hiredis's text or
     * NULL; was_up: a connection was up before). Called before the pending
     * commands are answered with an error; a reconnect is scheduled after. */
    void (*down)(void *ud, const char *why, const char *detail, bool was_up);
    /* A message or pmessage on the subscription connection (borrowed). */
    void (*message)(void *ud, redisReply *msg);
} sy_redis_ops_t;

/* Starts connecting at once. ip is copied. Returns NULL when out of memory. */
sy_redis_t *sy_redis_create(struct ev_loop *loop, const char *ip, int port, uint64_t connect_timeout_ms,
                            uint64_t command_timeout_ms, const sy_redis_ops_t *ops, void *ud);
/* Through Redis Sentinel: the master of `master` as named by the sentinels
 * ("ip:port" each, copied), followed across failovers (+switch-master, or a
 * fresh question when the connection drops or a reply says READONLY). A
 * server is "up" only after ROLE says master. */
sy_redis_t *sy_redis_create_sentinel(struct ev_loop *loop, const char *const *sentinels, size_t n,
                                     const char *master, uint64_t connect_timeout_ms, uint64_t command_timeout_ms,
                                     const sy_redis_ops_t *ops, void *ud);
/* The server in use, "ip:port" ("" while none is known), into buf. */
const char *sy_redis_peer(const sy_redis_t *r, char *buf, size_t cap);
/* Closes both connections; pending commands get err "shutting down". */
void sy_redis_destroy(sy_redis_t *r);

bool sy_redis_up(const sy_redis_t *r);
/* Reconnect attempts so far. */
uint64_t sy_redis_reconnects(const sy_redis_t *r);

/* Sends a command (argv copied; lens NULL: C strings). Returns 0 when sent
 * (fn is then called exactly once, never before this returns), or -1 when the
 * client is not up (fn is not called). */
int sy_redis_command(sy_redis_t *r, sy_redis_reply_fn fn, void *ud, int argc, const char **argv, const size_t *lens);
/* SUBSCRIBE or PSUBSCRIBE on the subscription connection: its messages go to
 * ops.message. Returns -1 when not up. Subscriptions end with the connection:
 * renew them in ops.up. */
int sy_redis_subscribe(sy_redis_t *r, int argc, const char **argv);

#endif
