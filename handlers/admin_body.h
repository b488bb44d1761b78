/* The admin API's JSON bodies, pure of the connection: parsed and validated
 * here, answered by the endpoints (a failure is a 400 with *why). Fuzzed by
 * tests/fuzz/fuzz_admin_body.c. */
#ifndef SY_ADMIN_BODY_H
#define SY_ADMIN_BODY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A request body: none (len 0: *out NULL) or a JSON object (*out, a new
 * reference). -1 with the reason in why (cap bytes) otherwise. */
int sy_admin_body_parse(const char *buf, size_t len, json_t **out, char *why, size_t cap);
/* {"percent_bp": 0..10000}. */
int sy_admin_body_percent(const json_t *body, int32_t *bp, const char **why);
/* {"add": [strings], "remove": [strings]}, at least one key in all, at most
 * 1000 each. The lists (malloc'd arrays of strings borrowed from body, each
 * NULL-terminated) are the caller's to free, also on failure (then NULL). */
int sy_admin_body_test_users(const json_t *body, const char ***add, size_t *nadd, const char ***rem, size_t *nrem,
                             const char **why);
/* An optional "reason": a string of at most 255 bytes (borrowed; "" when absent). */
int sy_admin_body_reason(const json_t *body, const char **out, const char **why);

#endif
