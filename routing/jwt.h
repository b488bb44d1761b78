/* JWT user keys: the claim of a bearer token, with the signature, the algorithm
 * and exp/nbf checked when the route has a key. Pure (CPU only): the key is
 * loaded with the config, never on a worker's loop. Safe from any thread. */
#ifndef SY_JWT_H
#define SY_JWT_H

#include <stddef.h>
#include <time.h>

typedef struct sy_jwt_key sy_jwt_key_t;

typedef enum sy_jwt_result {
    SY_JWT_OK = 0,
    SY_JWT_MALFORMED,
    SY_JWT_BAD_ALG,        /* not the route's algorithm (alg "none" included) */
    SY_JWT_BAD_SIGNATURE,
    SY_JWT_EXPIRED,
    SY_JWT_NOT_YET_VALID,
    SY_JWT_NO_CLAIM,
} sy_jwt_result_t;

/* alg: "HS256" (key_file holds the secret), "RS256" or "ES256" (a PEM public
 * key). Returns the key, or NULL with a reason in err. */
sy_jwt_key_t *sy_jwt_key_load(const char *alg, const char *key_file, char *err, size_t errcap);
void sy_jwt_key_free(sy_jwt_key_t *key);

/* The claim of token (a string, or an integer written in decimal) into out.
 * key NULL: unverified (the route said jwt_verify: false); exp and nbf are
 * still checked. */
sy_jwt_result_t sy_jwt_claim(const sy_jwt_key_t *key, const char *token, size_t len, const char *claim, time_t now,
                             char *out, size_t cap);
const char *sy_jwt_result_name(sy_jwt_result_t r);

/* Base64url without padding, decoded into out (cap bytes); returns the length
 * or -1. */
long sy_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

#endif
