/* Flag values: validation of what Redis holds, and the operations users ask
 * for (set a percentage, edit test users, roll back, resume, promote). Pure: no
 * I/O, unit-tested; the store (store.h) does the Redis part.
 *
 * Validation is per field: an invalid value of one field is refused (reported
 * through the callback) and that field keeps its last good value; the other
 * fields of the same edit still apply. */
#ifndef SY_FLAGS_H
#define SY_FLAGS_H

#include "proxy/err.h"
#include "routing/router.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef void (*sy_flags_refuse_fn)(void *ud, const char *route, const char *field, const char *value,
                                   const char *why);

/* Applies a Redis hash (kv: field, value, field, value, ...) on top of cur into
 * out (a fresh deep copy). Returns the number of refused fields, or SY_ENOMEM. */
int sy_flags_apply_hash(const char *route, const sy_route_flags_t *cur, const char *const *kv, size_t nkv,
                        sy_route_flags_t *out, sy_flags_refuse_fn refuse, void *ud);
/* True if the hash has a valid `version` (digits). A missing or invalid one is
 * no refusal: sy_flags_apply_hash treats it as 0 and the next write rewrites it. */
bool sy_flags_version_ok(const char *const *kv, size_t nkv);
/* Replaces out's test users by members (invalid members are refused and
 * skipped). Returns the number refused, or SY_ENOMEM. */
int sy_flags_apply_members(const char *route, sy_route_flags_t *out, const char *const *members, size_t n,
                           sy_flags_refuse_fn refuse, void *ud);

/* True if the flags that decide routing differ (state, percent, salt, test users). */
bool sy_flags_routing_differs(const sy_route_flags_t *a, const sy_route_flags_t *b);

typedef enum sy_flag_op {
    SY_OP_PERCENT,    /* arg: percent_bp */
    SY_OP_TEST_USERS, /* add / remove lists */
    SY_OP_ROLLBACK,
    SY_OP_RESUME,
    SY_OP_PROMOTE,
} sy_flag_op_t;

typedef struct sy_flag_request {
    sy_flag_op_t op;
    int32_t percent_bp;
    const char *const *add;
    size_t nadd;
    const char *const *remove;
    size_t nremove;
    const char *actor;
    const char *reason;
    const char *now;   /* ISO 8601 time stamp for updated_at */
} sy_flag_request_t;

/* Computes the flags after a request. Returns 0, SY_EINVAL with *err (a static
 * reason: a 400), or SY_EDECLINED with *err (a conflict with the route's state:
 * a 409), or SY_ENOMEM. version is bumped. */
int sy_flags_op(const sy_route_flags_t *cur, const sy_flag_request_t *req, sy_route_flags_t *out,
                const char **err) SY_MUST_USE;

/* The flags as a JSON object for the record (state, percent_bp,
 * prev_percent_bp, salt, test_users, version, actor, reason, updated_at).
 * A new reference, or NULL without memory. */
json_t *sy_flags_to_json(const sy_route_flags_t *f);

/* Parses a percent_bp value as Redis holds it: digits only, 0..10000. */
int sy_flags_parse_bp(const char *s, int32_t *out) SY_MUST_USE;
/* Writes the current UTC time as 2026-11-21T18:00:00.000Z. */
void sy_flags_now(char out[32]);

#endif
