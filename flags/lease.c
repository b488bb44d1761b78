#include "flags/lease.h"

#include <stdio.h>
#include <string.h>

static const char take_or_renew[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end "
    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
    "return 0";

static const char give_up[] = SY_LEASE_CHECK "return redis.call('DEL', KEYS[1])";

void sy_lease_init(sy_lease_t *l, struct ev_loop *loop, const char *key, const char *owner, uint64_t ttl_ms)
{
    memset(l, 0, sizeof(*l));
    l->loop = loop;
    snprintf(l->key, sizeof(l->key), "%s", key);
    snprintf(l->owner, sizeof(l->owner), "%s", owner);
    l->ttl_ms = ttl_ms;
}

static void renewed(void *ud, redisReply *reply, const char *err)
{
    sy_lease_t *l = ud;
    double asked = l->asked_at;
    l->asked_at = 0;
    if (err == NULL && reply != NULL && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1)
        l->confirmed_at = asked;
    else if (err == NULL)
        l->confirmed_at = 0; /* someone else holds it */
    /* err: Redis went away; the lease runs out by itself (sy_lease_held) */
}

void sy_lease_renew(sy_lease_t *l, sy_redis_t *r)
{
    if (l->asked_at != 0 || r == NULL || !sy_redis_up(r))
        return;
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)l->ttl_ms);
    const char *argv[] = {"EVAL", take_or_renew, "1", l->key, l->owner, ttl};
    l->asked_at = ev_now(l->loop);
    if (sy_redis_command(r, renewed, l, 6, argv, NULL) != 0)
        l->asked_at = 0;
}

static void released(void *ud, redisReply *reply, const char *err)
{
    (void)ud;
    (void)reply;
    (void)err;
}

void sy_lease_release(sy_lease_t *l, sy_redis_t *r)
{
    if (l->confirmed_at != 0 && r != NULL && sy_redis_up(r)) {
        const char *argv[] = {"EVAL", give_up, "1", l->key, l->owner};
        (void)sy_redis_command(r, released, NULL, 5, argv, NULL);
    }
    l->confirmed_at = 0;
}

bool sy_lease_held(const sy_lease_t *l)
{
    return l->confirmed_at != 0 && ev_now(l->loop) - l->confirmed_at < (double)l->ttl_ms / 1000.0;
}
