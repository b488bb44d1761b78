#include "flags/flags.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int parse_u64(const char *s, uint64_t *out);

bool sy_flags_version_ok(const char *const *kv, size_t nkv)
{
    uint64_t v;
    for (size_t i = 0; i + 1 < nkv; i += 2)
        if (strcmp(kv[i], "version") == 0)
            return parse_u64(kv[i + 1], &v) == 0;
    return false;
}

int sy_flags_parse_bp(const char *s, int32_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 5)
        return SY_EINVAL;
    int32_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return SY_EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (v > SY_BUCKETS)
        return SY_EINVAL;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 19)
        return SY_EINVAL;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return SY_EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return 0;
}

json_t *sy_flags_to_json(const sy_route_flags_t *f)
{
    json_t *users = json_array();
    for (size_t k = 0; users != NULL && k < f->ntest_users; k++)
        json_array_append_new(users, json_string(f->test_users[k]));
    return json_pack("{s:s, s:i, s:i, s:s?, s:o*, s:I, s:s?, s:s?, s:s?}", "state", sy_state_name(f->state),
                     "percent_bp", (int)f->percent_bp, "prev_percent_bp", (int)f->prev_percent_bp, "salt", f->salt,
                     "test_users", users, "version", (json_int_t)f->version, "actor", f->actor, "reason", f->reason,
                     "updated_at", f->updated_at);
}

void sy_flags_now(char out[32])
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(tv.tv_usec / 1000) % 1000);
}

static int set_str(char **dst, const char *v)
{
    char *c = strdup(v);
    if (c == NULL)
        return SY_ENOMEM;
    free(*dst);
    *dst = c;
    return 0;
}

static bool printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* A new salt reshuffles every user: refused while users are being moved
 * unless the edit says force=1. */
static int apply_salt(const char *route, const sy_route_flags_t *cur, sy_route_flags_t *out, const char *salt,
                      const char *force, sy_flags_refuse_fn refuse, void *ud, int *refused)
{
    if (salt == NULL || (cur->salt != NULL && strcmp(salt, cur->salt) == 0))
        return 0;
    bool moving = out->state == SY_STATE_RAMPING && out->percent_bp > 0 && out->percent_bp < SY_BUCKETS;
    bool forced = force != NULL && (strcmp(force, "1") == 0 || strcmp(force, "true") == 0);
    const char *why = !printable(salt, 128) ? "salt must be 1..128 printable bytes"
                      : moving && !forced
                          ? "changing the salt while ramping reshuffles users; add force=1 to do it anyway"
                          : NULL;
    if (why == NULL)
        return set_str(&out->salt, salt);
    (*refused)++;
    if (refuse != NULL)
        refuse(ud, route, "salt", salt, why);
    return 0;
}

int sy_flags_apply_hash(const char *route, const sy_route_flags_t *cur, const char *const *kv, size_t nkv,
                        sy_route_flags_t *out, sy_flags_refuse_fn refuse, void *ud)
{
    if (sy_route_flags_copy(out, cur) != 0)
        return SY_ENOMEM;
    int refused = 0;
    const char *state = NULL, *percent = NULL, *salt = NULL, *force = NULL;
    for (size_t i = 0; i + 1 < nkv; i += 2) {
        const char *f = kv[i], *v = kv[i + 1];
        if (strcmp(f, "state") == 0)
            state = v;
        else if (strcmp(f, "percent_bp") == 0)
            percent = v;
        else if (strcmp(f, "salt") == 0)
            salt = v;
        else if (strcmp(f, "force") == 0)
            force = v;
    }
#define REFUSE(field, value, why)                                                                  \
    do {                                                                                           \
        refused++;                                                                                 \
        if (refuse != NULL)                                                                        \
            refuse(ud, route, (field), (value), (why));                                            \
    } while (0)
    if (state != NULL) {
        sy_route_state_t st;
        if (sy_state_parse(state, &st) != 0)
            REFUSE("state", state, "state must be off, ramping, tripped or promoted");
        else
            out->state = st;
    }
    if (percent != NULL) {
        int32_t bp;
        if (sy_flags_parse_bp(percent, &bp) != 0)
            REFUSE("percent_bp", percent, "percent_bp must be a whole number of basis points, 0..10000");
        else
            out->percent_bp = bp;
    }
    bool have_version = false;
    for (size_t i = 0; i + 1 < nkv; i += 2) {
        const char *f = kv[i], *v = kv[i + 1];
        if (strcmp(f, "prev_percent_bp") == 0) {
            int32_t bp;
            if (sy_flags_parse_bp(v, &bp) != 0)
                REFUSE(f, v, "prev_percent_bp must be a whole number of basis points, 0..10000");
            else
                out->prev_percent_bp = bp;
        } else if (strcmp(f, "version") == 0) {
            /* Not a value users set: a missing or invalid one is repaired, not
             * refused (treated as 0; the next write rewrites it). */
            if (parse_u64(v, &out->version) != 0)
                out->version = 0;
            have_version = true;
        } else if (strcmp(f, "actor") == 0 || strcmp(f, "reason") == 0 || strcmp(f, "updated_at") == 0) {
            char **dst = f[0] == 'a' ? &out->actor : f[0] == 'r' ? &out->reason : &out->updated_at;
            if (strlen(v) > 512)
                REFUSE(f, "(too long)", "at most 512 bytes");
            else if (set_str(dst, v) != 0)
                goto nomem;
        }
        /* state, percent_bp, salt, force: above and below; unknown fields are ignored */
    }
    if (!have_version)
        out->version = 0;
    if (apply_salt(route, cur, out, salt, force, refuse, ud, &refused) != 0)
        goto nomem;
    out->source = "redis";
    return refused;
nomem:
    sy_route_flags_clear(out);
    return SY_ENOMEM;
#undef REFUSE
}

int sy_flags_apply_members(const char *route, sy_route_flags_t *out, const char *const *members, size_t n,
                           sy_flags_refuse_fn refuse, void *ud)
{
    char **users = calloc(n + 1, sizeof(char *));
    if (users == NULL)
        return SY_ENOMEM;
    size_t k = 0;
    int refused = 0;
    for (size_t i = 0; i < n; i++) {
        if (!printable(members[i], SY_USER_KEY_MAX)) {
            refused++;
            if (refuse != NULL)
                refuse(ud, route, "test_users", members[i], "a test user key must be 1..256 printable bytes");
            continue;
        }
        if ((users[k] = strdup(members[i])) == NULL) {
            for (size_t j = 0; j < k; j++)
                free(users[j]);
            free(users);
            return SY_ENOMEM;
        }
        k++;
    }
    sy_sort_strings(users, k);
    for (size_t i = 0; i < out->ntest_users; i++)
        free(out->test_users[i]);
    free(out->test_users);
    out->test_users = users;
    out->ntest_users = k;
    return refused;
}

bool sy_flags_routing_differs(const sy_route_flags_t *a, const sy_route_flags_t *b)
{
    if (a->state != b->state || a->percent_bp != b->percent_bp || a->ntest_users != b->ntest_users)
        return true;
    if ((a->salt == NULL) != (b->salt == NULL) || (a->salt && strcmp(a->salt, b->salt) != 0))
        return true;
    for (size_t i = 0; i < a->ntest_users; i++)
        if (strcmp(a->test_users[i], b->test_users[i]) != 0)
            return true;
    return false;
}

static bool in_list(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

int sy_flags_op(const sy_route_flags_t *cur, const sy_flag_request_t *req, sy_route_flags_t *out, const char **err)
{
    *err = NULL;
    if (req->op == SY_OP_PERCENT && (req->percent_bp < 0 || req->percent_bp > SY_BUCKETS)) {
        *err = "percent_bp must be 0..10000 (basis points: 2500 is 25 %)";
        return SY_EINVAL;
    }
    if (req->op == SY_OP_PERCENT && cur->state == SY_STATE_TRIPPED) {
        *err = "the route is tripped: resume it first";
        return SY_EDECLINED;
    }
    if (req->op == SY_OP_RESUME && cur->state != SY_STATE_TRIPPED && cur->state != SY_STATE_OFF) {
        *err = "the route is not tripped or off: nothing to resume";
        return SY_EDECLINED;
    }
    for (size_t i = 0; req->op == SY_OP_TEST_USERS && i < req->nadd; i++)
        if (!printable(req->add[i], SY_USER_KEY_MAX)) {
            *err = "a test user key must be 1..256 printable bytes";
            return SY_EINVAL;
        }
    if (sy_route_flags_copy(out, cur) != 0)
        return SY_ENOMEM;
    switch (req->op) {
    case SY_OP_PERCENT:
        out->percent_bp = req->percent_bp;
        if (out->state == SY_STATE_OFF || out->state == SY_STATE_PROMOTED)
            out->state = SY_STATE_RAMPING;
        if (req->percent_bp == SY_BUCKETS)
            out->state = SY_STATE_PROMOTED;
        break;
    case SY_OP_ROLLBACK:
        if (cur->state != SY_STATE_TRIPPED)
            out->prev_percent_bp = cur->percent_bp;
        out->state = SY_STATE_TRIPPED;
        out->percent_bp = 0;
        break;
    case SY_OP_RESUME:
        out->state = SY_STATE_RAMPING;
        out->percent_bp = cur->state == SY_STATE_TRIPPED ? cur->prev_percent_bp : cur->percent_bp;
        break;
    case SY_OP_PROMOTE:
        if (cur->state != SY_STATE_PROMOTED)
            out->prev_percent_bp = cur->percent_bp;
        out->state = SY_STATE_PROMOTED;
        out->percent_bp = SY_BUCKETS;
        break;
    case SY_OP_TEST_USERS: {
        size_t cap = cur->ntest_users + req->nadd;
        const char **merged = calloc(cap + 1, sizeof(char *));
        if (merged == NULL)
            goto nomem;
        size_t n = 0;
        for (size_t i = 0; i < cur->ntest_users; i++)
            if (!in_list(req->remove, req->nremove, cur->test_users[i]))
                merged[n++] = cur->test_users[i];
        for (size_t i = 0; i < req->nadd; i++)
            if (!in_list(merged, n, req->add[i]) && !in_list(req->remove, req->nremove, req->add[i]))
                merged[n++] = req->add[i];
        int rc = sy_flags_apply_members(NULL, out, merged, n, NULL, NULL);
        free(merged);
        if (rc < 0)
            goto nomem;
        break;
    }
    }
    out->version = cur->version + 1;
    if (set_str(&out->actor, req->actor ? req->actor : "unknown") != 0 ||
        set_str(&out->reason, req->reason ? req->reason : "") != 0 ||
        set_str(&out->updated_at, req->now ? req->now : "") != 0)
        goto nomem;
    return 0;
nomem:
    sy_route_flags_clear(out);
    return SY_ENOMEM;
}
