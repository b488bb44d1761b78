#include "routing/jwt.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { ALG_HS256, ALG_RS256, ALG_ES256 } alg_t;

struct sy_jwt_key {
    alg_t alg;
    unsigned char *secret;
    size_t secret_len;
    EVP_PKEY *pkey;
};

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

long sy_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    static const signed char map[256] = {
        ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
        ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
        ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
        ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
        ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
        ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
        ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
        ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64,
    };
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = map[(unsigned char)in[i]] - 1;
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)o;
}

sy_jwt_key_t *sy_jwt_key_load(const char *alg, const char *key_file, char *err, size_t errcap)
{
    sy_jwt_key_t *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    int a = -1;
    for (int i = 0; i < 3; i++)
        if (strcmp(alg, alg_names[i]) == 0)
            a = i;
    if (a < 0) {
        snprintf(err, errcap, "jwt alg must be HS256, RS256 or ES256");
        goto fail;
    }
    k->alg = (alg_t)a;
    FILE *f = fopen(key_file, "rb");
    if (f == NULL) {
        snprintf(err, errcap, "cannot read %s", key_file);
        goto fail;
    }
    if (k->alg == ALG_HS256) {
        unsigned char buf[4096];
        size_t n = fread(buf, 1, sizeof(buf), f);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        fclose(f);
        if (n < 16) {
            snprintf(err, errcap, "an HS256 secret must be at least 16 bytes");
            goto fail;
        }
        k->secret = malloc(n);
        if (k->secret == NULL)
            goto fail;
        memcpy(k->secret, buf, n);
        k->secret_len = n;
        OPENSSL_cleanse(buf, sizeof(buf));
        return k;
    }
    k->pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (k->pkey == NULL) {
        snprintf(err, errcap, "%s holds no PEM public key", key_file);
        goto fail;
    }
    int id = EVP_PKEY_get_base_id(k->pkey);
    if ((k->alg == ALG_RS256 && id != EVP_PKEY_RSA) || (k->alg == ALG_ES256 && id != EVP_PKEY_EC)) {
        snprintf(err, errcap, "the key in %s does not match alg %s", key_file, alg);
        goto fail;
    }
    return k;
fail:
    sy_jwt_key_free(k);
    return NULL;
}

void sy_jwt_key_free(sy_jwt_key_t *k)
{
    if (k == NULL)
        return;
    if (k->secret != NULL) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    EVP_PKEY_free(k->pkey);
    free(k);
}

static bool verify(const sy_jwt_key_t *k, const char *data, size_t len, const unsigned char *sig, size_t siglen)
{
    if (k->alg == ALG_HS256) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen = 0;
        if (HMAC(EVP_sha256(), k->secret, (int)k->secret_len, (const unsigned char *)data, len, mac, &maclen) == NULL)
            return false;
        return siglen == maclen && CRYPTO_memcmp(mac, sig, maclen) == 0;
    }
    unsigned char der[80];
    const unsigned char *s = sig;
    size_t slen = siglen;
    if (k->alg == ALG_ES256) {
        /* JWS carries r || s; OpenSSL verifies DER. */
        if (siglen != 64)
            return false;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
        if (es == NULL || r == NULL || ss == NULL || ECDSA_SIG_set0(es, r, ss) != 1) {
            BN_free(r);
            BN_free(ss);
            ECDSA_SIG_free(es);
            return false;
        }
        unsigned char *p = der;
        int n = i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);
        if (n <= 0 || (size_t)n > sizeof(der))
            return false;
        s = der;
        slen = (size_t)n;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
              EVP_DigestVerify(ctx, s, slen, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

static json_t *decode_json(const char *seg, size_t len)
{
    unsigned char buf[4096];
    long n = sy_base64url_decode(seg, len, buf, sizeof(buf));
    if (n <= 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)n, 0, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

sy_jwt_result_t sy_jwt_claim(const sy_jwt_key_t *key, const char *tok, size_t len, const char *claim, time_t now,
                             char *out, size_t cap)
{
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)) != NULL || len > 8192)
        return SY_JWT_MALFORMED;
    json_t *hdr = decode_json(tok, (size_t)(d1 - tok));
    if (hdr == NULL)
        return SY_JWT_MALFORMED;
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    sy_jwt_result_t res = SY_JWT_OK;
    if (alg == NULL)
        res = SY_JWT_MALFORMED;
    else if (key != NULL && strcmp(alg, alg_names[key->alg]) != 0)
        res = SY_JWT_BAD_ALG;
    json_decref(hdr);
    if (res != SY_JWT_OK)
        return res;
    if (key != NULL) {
        unsigned char sig[512];
        long slen = sy_base64url_decode(d2 + 1, len - (size_t)(d2 + 1 - tok), sig, sizeof(sig));
        if (slen <= 0 || !verify(key, tok, (size_t)(d2 - tok), sig, (size_t)slen))
            return SY_JWT_BAD_SIGNATURE;
    }
    json_t *payload = decode_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (payload == NULL)
        return SY_JWT_MALFORMED;
    json_t *exp = json_object_get(payload, "exp"), *nbf = json_object_get(payload, "nbf");
    json_t *v = json_object_get(payload, claim);
    if (exp != NULL && (!json_is_number(exp) || json_number_value(exp) <= (double)now))
        res = SY_JWT_EXPIRED;
    else if (nbf != NULL && (!json_is_number(nbf) || json_number_value(nbf) > (double)now))
        res = SY_JWT_NOT_YET_VALID;
    else if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < cap)
        snprintf(out, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, cap, "%lld", (long long)json_integer_value(v));
    else
        res = SY_JWT_NO_CLAIM;
    json_decref(payload);
    return res;
}

const char *sy_jwt_result_name(sy_jwt_result_t r)
{
    static const char *const names[] = {"ok", "malformed", "bad_alg", "bad_signature", "expired", "not_yet_valid",
                                        "no_claim"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}
