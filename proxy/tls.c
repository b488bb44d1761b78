/* TLS contexts and the TLS I/O layer. See tls.h. */
#include "proxy/tls.h"

#include <ev.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* TLS 1.2 suites (Mozilla's "intermediate" list: forward secrecy and AEAD
 * only); TLS 1.3 keeps OpenSSL's default suites. */
#define SY_TLS12_CIPHERS                                                                                   \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"            \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define SY_TLS_SNI_MAX 64       /* certificates per listener */
#define SY_TLS_NAMES_MAX 32     /* names taken from one certificate */

/* --- what a server context owns (its ex_data) ------------------------------ */

typedef struct sni_entry {
    char *name;                 /* lower case; "*.example.com" matches one label */
    SSL_CTX *ctx;               /* a reference */
} sni_entry_t;

typedef struct srv_data {
    uint64_t rotate_s;          /* ticket keys change every rotate_s seconds */
    unsigned char alpn[32];     /* wire format, in our order of preference */
    size_t alpn_len;
    sni_entry_t *sni;
    size_t nsni;
} srv_data_t;

static int srv_index = -1;
static unsigned char ticket_master[32];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void srv_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    srv_data_t *d = ptr;
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->nsni; i++) {
        free(d->sni[i].name);
        SSL_CTX_free(d->sni[i].ctx);
    }
    free(d->sni);
    free(d);
}

/* The ticket master secret is random per process and never leaves it; the
 * keys of each rotation period are derived from it (below), so every worker
 * and every context of one process agree on them without sharing any state
 * that changes. */
static void tls_init_once(void)
{
    srv_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, srv_data_free);
    if (RAND_bytes(ticket_master, sizeof(ticket_master)) != 1)
        srv_index = -1;
}

static bool tls_init(void)
{
    pthread_once(&once, tls_init_once);
    return srv_index >= 0;
}

/* OpenSSL's reason for the last failure (its queue is emptied). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error(); /* the first: the cause, not the layers above it */
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r != NULL ? r : "unknown OpenSSL error";
}

SSL_CTX *sy_tls_ctx_ref(SSL_CTX *ctx)
{
    if (ctx != NULL)
        SSL_CTX_up_ref(ctx);
    return ctx;
}

void sy_tls_ctx_release(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

/* --- session tickets with rotated keys -------------------------------------- */

/* The key name carries a tag and the period it was made in. */
#define TICKET_TAG "sy-tk-01"

static int derive(const char *label, uint64_t period, unsigned char out[32])
{
    unsigned char msg[24];
    size_t llen = strlen(label);
    memcpy(msg, label, llen);
    for (int i = 0; i < 8; i++)
        msg[llen + (size_t)i] = (unsigned char)(period >> (56 - 8 * i));
    size_t outlen = 0;
    return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, ticket_master, sizeof(ticket_master), msg, llen + 8, out,
                     32, &outlen) != NULL && outlen == 32 ? 0 : -1;
}

/* Encrypting: the current period's keys. Decrypting: the current period's or
 * the previous one's (then the client gets a fresh ticket); older tickets
 * fall back to a full handshake. */
static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    srv_data_t *d = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), srv_index);
    uint64_t rotate = d != NULL && d->rotate_s > 0 ? d->rotate_s : 3600;
    uint64_t now = (uint64_t)time(NULL) / rotate, period = now;
    int ret = 1;
    if (enc) {
        memcpy(key_name, TICKET_TAG, 8);
        for (int i = 0; i < 8; i++)
            key_name[8 + i] = (unsigned char)(now >> (56 - 8 * i));
        if (RAND_bytes(iv, 16) != 1)
            return -1;
    } else {
        if (memcmp(key_name, TICKET_TAG, 8) != 0)
            return 0;
        period = 0;
        for (int i = 0; i < 8; i++)
            period = period << 8 | key_name[8 + i];
        if (period == now)
            ret = 1;
        else if (period + 1 == now)
            ret = 2;
        else
            return 0;
    }
    unsigned char aes[32], mac[32];
    if (derive("ticket-aes", period, aes) != 0 || derive("ticket-mac", period, mac) != 0)
        return -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, mac, sizeof(mac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_MAC_CTX_set_params(hctx, params) == 1 &&
             (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes, iv)
                  : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes, iv)) == 1;
    OPENSSL_cleanse(aes, sizeof(aes));
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok ? ret : -1;
}

/* --- SNI and ALPN ------------------------------------------------------------- */

static bool name_matches(const char *pattern, const char *name)
{
    if (strcasecmp(pattern, name) == 0)
        return true;
    if (pattern[0] != '*' || pattern[1] != '.')
        return false;
    const char *dot = strchr(name, '.');
    return dot != NULL && dot != name && strcasecmp(pattern + 1, dot) == 0;
}

static int servername_cb(SSL *s, int *alert, void *arg)
{
    (void)alert, (void)arg;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    srv_data_t *d = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), srv_index);
    if (name == NULL || d == NULL)
        return SSL_TLSEXT_ERR_OK;
    /* Exact names first, then wildcards. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < d->nsni; i++) {
            bool wild = d->sni[i].name[0] == '*';
            if (wild == (pass == 1) && name_matches(d->sni[i].name, name)) {
                SSL_set_SSL_CTX(s, d->sni[i].ctx);
                return SSL_TLSEXT_ERR_OK;
            }
        }
    return SSL_TLSEXT_ERR_OK; /* the default certificate */
}

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    (void)arg;
    srv_data_t *d = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), srv_index);
    if (d == NULL || d->alpn_len == 0)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *sel = NULL;
    unsigned char sel_len = 0;
    /* Our preference order decides. */
    if (SSL_select_next_proto(&sel, &sel_len, d->alpn, (unsigned int)d->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: HTTP/1.1 without ALPN */
    *out = sel;
    *outlen = sel_len;
    return SSL_TLSEXT_ERR_OK;
}

/* --- building server contexts --------------------------------------------------- */

static SSL_CTX *server_ctx_new(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* A TCP end without close_notify ends the stream like a read of 0 does
     * (HTTP's own framing tells a cut body). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Stateless resumption only: tickets, no server-side cache to share between workers. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    if (SSL_CTX_set_cipher_list(ctx, SY_TLS12_CIPHERS) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The file can be opened: OpenSSL's own message for a missing file says less. */
static int check_file(sy_conf_t *c, yaml_node_t *node, const char *what, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return sy_conf_error(c, node, "tls %s '%s': %s", what, path, strerror(errno));
    fclose(f);
    return 0;
}

static int check_validity(sy_conf_t *c, yaml_node_t *node, const char *path, X509 *x)
{
    const ASN1_TIME *nb = X509_get0_notBefore(x), *na = X509_get0_notAfter(x);
    char when[64] = "?";
    BIO *b = BIO_new(BIO_s_mem());
    if (b != NULL) {
        ASN1_TIME_print(b, X509_cmp_current_time(na) < 0 ? na : nb);
        int n = BIO_read(b, when, sizeof(when) - 1);
        when[n > 0 ? n : 0] = '\0';
        BIO_free(b);
    }
    if (X509_cmp_current_time(na) < 0)
        return sy_conf_error(c, node, "tls cert '%s': certificate has expired (not after %s)", path, when);
    if (X509_cmp_current_time(nb) > 0)
        return sy_conf_error(c, node, "tls cert '%s': certificate is not yet valid (not before %s)", path, when);
    return 0;
}

/* Loads cert and key into ctx and checks them. */
static int load_pair(sy_conf_t *c, yaml_node_t *node, SSL_CTX *ctx, const char *cert, const char *key)
{
    if (check_file(c, node, "cert", cert) != 0 || check_file(c, node, "key", key) != 0)
        return SY_EINVAL;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return sy_conf_error(c, node, "tls cert '%s': %s", cert, ssl_reason());
    if (check_validity(c, node, cert, SSL_CTX_get0_certificate(ctx)) != 0)
        return SY_EINVAL;
    BIO *kb = BIO_new_file(key, "r");
    EVP_PKEY *pkey = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    if (pkey == NULL)
        return sy_conf_error(c, node, "tls key '%s': %s", key, ssl_reason());
    int rc = 0;
    if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), pkey) != 1)
        rc = sy_conf_error(c, node, "tls key '%s' does not match cert '%s': %s", key, cert, ssl_reason());
    else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        rc = sy_conf_error(c, node, "tls key '%s': %s", key, ssl_reason());
    EVP_PKEY_free(pkey);
    return rc;
}

/* The DNS names of a certificate (its subjectAltNames, else its CN). */
static size_t cert_names(X509 *x, char **names, size_t cap)
{
    size_t n = 0;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans) && n < cap; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *s = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        if (len > 0 && (size_t)len == strnlen((const char *)s, (size_t)len))
            names[n++] = strndup((const char *)s, (size_t)len);
    }
    GENERAL_NAMES_free(sans);
    if (n == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0)
            names[n++] = strdup(cn);
    }
    for (size_t i = 0; i < n; i++)
        if (names[i] != NULL)
            for (char *p = names[i]; *p; p++)
                *p = (char)tolower((unsigned char)*p);
    return n;
}

/* {cert, key} of one certificate; the two strings are the caller's to free. */
static int parse_pair(sy_conf_t *c, yaml_node_t *node, char **cert, char **key)
{
    if (sy_conf_expect(c, node, YAML_MAPPING_NODE, "a certificate ({cert: file, key: file})") != 0)
        return SY_EINVAL;
    yaml_node_t *cn = sy_conf_map_get(c, node, "cert"), *kn = sy_conf_map_get(c, node, "key");
    if (cn == NULL || kn == NULL)
        return sy_conf_error(c, node, "a certificate needs 'cert' and 'key' (PEM files)");
    if (sy_conf_string(c, cn, cert) != 0 || sy_conf_string(c, kn, key) != 0)
        return SY_EINVAL;
    return 0;
}

static int parse_alpn(sy_conf_t *c, yaml_node_t *node, srv_data_t *d)
{
    if (sy_conf_expect(c, node, YAML_SEQUENCE_NODE, "a list of protocols (h2, http/1.1)") != 0)
        return SY_EINVAL;
    d->alpn_len = 0;
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        yaml_node_t *v = sy_conf_node(c, *it);
        const char *p = sy_conf_scalar(v);
        if (p == NULL || (strcmp(p, "h2") != 0 && strcmp(p, "http/1.1") != 0))
            return sy_conf_error(c, v, "alpn protocols are h2 and http/1.1");
        size_t len = strlen(p);
        if (d->alpn_len + 1 + len > sizeof(d->alpn))
            return sy_conf_error(c, v, "alpn: too many protocols");
        d->alpn[d->alpn_len++] = (unsigned char)len;
        memcpy(d->alpn + d->alpn_len, p, len);
        d->alpn_len += len;
    }
    return 0;
}

static SSL_CTX *ctx_with_data(srv_data_t **out)
{
    SSL_CTX *ctx = server_ctx_new();
    srv_data_t *d = calloc(1, sizeof(*d));
    if (ctx == NULL || d == NULL || SSL_CTX_set_ex_data(ctx, srv_index, d) != 1) {
        free(d);
        SSL_CTX_free(ctx);
        return NULL;
    }
    *out = d;
    return ctx;
}

/* The keys of a listener's tls mapping: the default pair (its file names in
 * *cert and *key, the caller's to free), ALPN and ticket rotation into d, and the
 * SNI list's node in *certs. */
static int parse_server_keys(sy_conf_t *c, yaml_node_t *node, srv_data_t *d, char **cert, char **key,
                             yaml_node_t **certs)
{
    int rc = 0;
    yaml_node_t *k, *v;
    for (size_t it = 0; sy_conf_map_next(c, node, &it, &k, &v);) {
        if (sy_conf_key_is(k, "cert")) {
            rc |= sy_conf_string(c, v, cert);
        } else if (sy_conf_key_is(k, "key")) {
            rc |= sy_conf_string(c, v, key);
        } else if (sy_conf_key_is(k, "certificates")) {
            *certs = v;
        } else if (sy_conf_key_is(k, "alpn")) {
            rc |= parse_alpn(c, v, d);
        } else if (sy_conf_key_is(k, "ticket_rotate")) {
            uint64_t ms = 0;
            if (sy_conf_duration_ms(c, v, 1000, 7 * 86400000ULL, &ms) != 0)
                rc = SY_EINVAL;
            d->rotate_s = ms / 1000;
        } else {
            rc = sy_conf_error(c, k, "unknown key '%s' in tls (known: cert, key, certificates, alpn, ticket_rotate)",
                               sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
        }
    }
    return rc;
}

/* Adds the host names of ictx's certificate to d's SNI table (each entry holds a
 * reference to ictx); *cap is the table's allocated size. */
static int add_sni_names(sy_conf_t *c, yaml_node_t *item, srv_data_t *d, SSL_CTX *ictx, const char *file,
                         size_t *cap)
{
    int rc = 0;
    char *names[SY_TLS_NAMES_MAX];
    size_t n = cert_names(SSL_CTX_get0_certificate(ictx), names, SY_TLS_NAMES_MAX);
    if (n == 0)
        rc = sy_conf_error(c, item, "tls cert '%s': it names no host (no DNS subjectAltName, no CN)", file);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && names[i] != NULL && d->nsni == *cap) {
            *cap = *cap ? *cap * 2 : 8;
            sni_entry_t *ns = realloc(d->sni, *cap * sizeof(*ns));
            if (ns == NULL)
                rc = sy_conf_error(c, item, "out of memory");
            else
                d->sni = ns;
        }
        if (rc == 0 && names[i] != NULL) {
            d->sni[d->nsni].name = names[i];
            d->sni[d->nsni++].ctx = sy_tls_ctx_ref(ictx);
        } else {
            free(names[i]);
        }
    }
    return rc;
}

/* One entry of `certificates`: its own context (the listener's ALPN and ticket
 * rotation) entered in d's SNI table under every name its certificate carries. */
static int parse_sni_cert(sy_conf_t *c, yaml_node_t *item, srv_data_t *d, size_t *cap)
{
    int rc = 0;
    char *ic = NULL, *ik = NULL;
    srv_data_t *id = NULL;
    SSL_CTX *ictx = NULL;
    if (parse_pair(c, item, &ic, &ik) != 0) {
        rc = SY_EINVAL;
    } else if ((ictx = ctx_with_data(&id)) == NULL) {
        rc = sy_conf_error(c, item, "tls: cannot create a context: %s", ssl_reason());
    } else if (load_pair(c, item, ictx, ic, ik) != 0) {
        rc = SY_EINVAL;
    } else {
        id->rotate_s = d->rotate_s;
        memcpy(id->alpn, d->alpn, sizeof(d->alpn));
        id->alpn_len = d->alpn_len;
        rc = add_sni_names(c, item, d, ictx, ic, cap);
    }
    SSL_CTX_free(ictx); /* the SNI entries hold their own references */
    free(ic);
    free(ik);
    return rc;
}

static int parse_sni_certs(sy_conf_t *c, yaml_node_t *certs, srv_data_t *d)
{
    if (sy_conf_expect(c, certs, YAML_SEQUENCE_NODE, "a list of certificates ({cert, key}) chosen by SNI") != 0)
        return SY_EINVAL;
    if (certs->data.sequence.items.top - certs->data.sequence.items.start > SY_TLS_SNI_MAX)
        return sy_conf_error(c, certs, "at most %d certificates per listener", SY_TLS_SNI_MAX);
    size_t cap = 0;
    for (yaml_node_item_t *it = certs->data.sequence.items.start; it < certs->data.sequence.items.top; it++)
        if (parse_sni_cert(c, sy_conf_node(c, *it), d, &cap) != 0)
            return SY_EINVAL;
    return 0;
}

int sy_tls_server_parse(sy_conf_t *c, yaml_node_t *node, SSL_CTX **out)
{
    *out = NULL;
    if (sy_conf_expect(c, node, YAML_MAPPING_NODE, "tls settings ({cert: file, key: file})") != 0)
        return SY_EINVAL;
    if (!tls_init())
        return sy_conf_error(c, node, "tls: OpenSSL could not be initialised: %s", ssl_reason());
    srv_data_t *d = NULL;
    SSL_CTX *ctx = ctx_with_data(&d);
    if (ctx == NULL)
        return sy_conf_error(c, node, "tls: cannot create a context: %s", ssl_reason());
    /* Default: h2 first, then http/1.1 (a listener's tls.alpn overrides it). */
    memcpy(d->alpn, "\x02h2\x08http/1.1", 12);
    d->alpn_len = 12;
    d->rotate_s = 3600;
    char *cert = NULL, *key = NULL;
    yaml_node_t *certs = NULL;
    int rc = parse_server_keys(c, node, d, &cert, &key, &certs);
    if (rc == 0 && (cert == NULL || key == NULL))
        rc = sy_conf_error(c, node, "tls needs 'cert' and 'key' (PEM files)");
    if (rc == 0 && load_pair(c, node, ctx, cert, key) != 0)
        rc = SY_EINVAL;
    free(cert);
    free(key);
    if (rc == 0 && certs != NULL)
        rc = parse_sni_certs(c, certs, d);
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return SY_EINVAL;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    *out = ctx;
    return 0;
}

/* --- client contexts (backends) ------------------------------------------------- */

static int new_session_cb(SSL *s, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(s);
    if (slot == NULL)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* the slot holds the reference now */
}

void sy_tls_session_free(SSL_SESSION *sess)
{
    SSL_SESSION_free(sess);
}

int sy_tls_client_parse(sy_conf_t *c, yaml_node_t *node, SSL_CTX **out, char **sni, char **id)
{
    *out = NULL;
    *sni = NULL;
    *id = NULL;
    bool verify = true;
    char *ca = NULL;
    int rc = 0;
    if (node != NULL) {
        if (sy_conf_expect(c, node, YAML_MAPPING_NODE, "tls settings ({sni, ca, verify})") != 0)
            return SY_EINVAL;
        yaml_node_t *k, *v;
        for (size_t it = 0; sy_conf_map_next(c, node, &it, &k, &v);) {
            if (sy_conf_key_is(k, "sni"))
                rc |= sy_conf_string(c, v, sni);
            else if (sy_conf_key_is(k, "ca"))
                rc |= sy_conf_string(c, v, &ca);
            else if (sy_conf_key_is(k, "verify"))
                rc |= sy_conf_bool(c, v, &verify);
            else
                rc = sy_conf_error(c, k, "unknown key '%s' in a pool's tls (known: sni, ca, verify)",
                                   sy_conf_scalar(k) ? sy_conf_scalar(k) : "?");
        }
    }
    SSL_CTX *ctx = rc == 0 ? SSL_CTX_new(TLS_client_method()) : NULL;
    if (rc == 0 && ctx == NULL)
        rc = sy_conf_error(c, node, "tls: cannot create a context: %s", ssl_reason());
    if (rc == 0) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
        static const unsigned char alpn[] = "\x08http/1.1";
        SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
        /* Sessions are kept per endpoint and worker by the upstream pools. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        ERR_clear_error();
        if (ca != NULL) {
            if (check_file(c, node, "ca", ca) != 0)
                rc = SY_EINVAL;
            else if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
                rc = sy_conf_error(c, node, "tls ca '%s': %s", ca, ssl_reason());
        } else if (verify) {
            /* The bundle file, loaded now: OpenSSL's default paths also add the
             * hashed directory, which it reads lazily, during a verification,
             * on a worker loop. */
            const char *bundle = getenv(X509_get_default_cert_file_env());
            if (bundle == NULL || *bundle == '\0')
                bundle = X509_get_default_cert_file();
            if (SSL_CTX_load_verify_file(ctx, bundle) != 1)
                rc = sy_conf_error(c, node, "tls: the system trust store '%s' cannot be loaded: %s", bundle,
                                   ssl_reason());
        }
    }
    if (rc == 0 && asprintf(id, "tls verify=%d ca=%s sni=%s", verify, ca ? ca : "-", *sni ? *sni : "-") < 0) {
        *id = NULL;
        rc = sy_conf_error(c, node, "out of memory");
    }
    free(ca);
    if (rc != 0) {
        SSL_CTX_free(ctx);
        free(*sni);
        *sni = NULL;
        return SY_EINVAL;
    }
    *out = ctx;
    return 0;
}

/* --- connections ---------------------------------------------------------------- */

SSL *sy_tls_accept(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

SSL *sy_tls_connect(SSL_CTX *ctx, int fd, const char *sni, const char *check_host, SSL_SESSION *session,
                    SSL_SESSION **slot)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1)
        goto fail;
    if (sni != NULL && SSL_set_tlsext_host_name(ssl, sni) != 1)
        goto fail;
    if (check_host != NULL && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) {
        unsigned char ip[16];
        bool is_ip = inet_pton(AF_INET, check_host, ip) == 1 || inet_pton(AF_INET6, check_host, ip) == 1;
        if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), check_host) != 1
                  : SSL_set1_host(ssl, check_host) != 1)
            goto fail;
    }
    if (session != NULL)
        SSL_set_session(ssl, session);
    SSL_set_app_data(ssl, slot);
    SSL_set_connect_state(ssl);
    return ssl;
fail:
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

/* Folds SSL_get_error into the vocabulary of tls.h. */
static int io_result(SSL *ssl, int ret, sy_tls_io_t *io)
{
    int e = SSL_get_error(ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        io->wants = EV_READ;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        io->wants = EV_WRITE;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        SSL_set_quiet_shutdown(ssl, 1); /* after a fatal error no close_notify may be sent */
        io->why = "connection reset";
        ERR_clear_error();
        if (errno == 0 || errno == EAGAIN)
            errno = ECONNRESET;
        return -1;
    default:
        SSL_set_quiet_shutdown(ssl, 1);
        io->why = ssl_reason();
        errno = EPROTO;
        return -1;
    }
}

int sy_tls_handshake(SSL *ssl, sy_tls_io_t *io)
{
    io->wants = 0;
    io->why = NULL;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(ssl);
    if (ret == 1)
        return 1;
    int r = io_result(ssl, ret, io);
    if (r < 0 && errno == EAGAIN)
        return 0;
    if (io->why == NULL)
        io->why = "the peer closed during the handshake";
    if (SSL_get_verify_result(ssl) != X509_V_OK)
        io->why = X509_verify_cert_error_string(SSL_get_verify_result(ssl));
    return -1;
}

ssize_t sy_tls_read(SSL *ssl, void *buf, size_t len, sy_tls_io_t *io)
{
    size_t n = 0;
    io->wants = 0;
    errno = 0;
    ERR_clear_error(); /* SSL_get_error reads the thread's queue: start it empty */
    int ret = SSL_read_ex(ssl, buf, len, &n);
    if (ret == 1)
        return (ssize_t)n;
    return io_result(ssl, ret, io);
}

ssize_t sy_tls_write(SSL *ssl, const void *buf, size_t len, sy_tls_io_t *io)
{
    size_t n = 0;
    io->wants = 0;
    errno = 0;
    ERR_clear_error();
    int ret = SSL_write_ex(ssl, buf, len, &n);
    if (ret == 1)
        return (ssize_t)n;
    int r = io_result(ssl, ret, io);
    if (r == 0)
        errno = EPIPE;
    return -1;
}

bool sy_tls_pending(const SSL *ssl)
{
    return SSL_pending(ssl) > 0;
}

bool sy_tls_alpn_h2(const SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

void sy_tls_free(SSL *ssl)
{
    if (ssl == NULL)
        return;
    if (SSL_is_init_finished(ssl) && !SSL_get_quiet_shutdown(ssl))
        (void)SSL_shutdown(ssl); /* one try: the socket closes right after */
    SSL_free(ssl);
    ERR_clear_error();
}
