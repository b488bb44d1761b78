/* TLS (OpenSSL 3) for the connection layer: server contexts for `listen`
 * entries with `tls:`, client contexts for pools whose endpoints speak TLS,
 * and the small I/O layer conn.c calls instead of read/send when a
 * connection carries an SSL object.
 *
 * Contexts are built while the config loads (at boot, or on the reload's
 * loader thread: the certificate files are read there, never on a loop) and
 * are reference-counted by OpenSSL: the config holds one reference, every SSL
 * object holds one more. A SIGHUP reload builds new contexts for new
 * connections; connections made earlier keep theirs until they close.
 * Everything the contexts' callbacks need (the SNI table, the ticket-key
 * rotation) is owned by the context itself (ex_data), so a context outlives
 * the config it came from.
 *
 * The I/O calls are worker-thread only; each SSL object has one owner (the
 * client connection, or the upstream connection). */
#ifndef SY_TLS_H
#define SY_TLS_H

#include "proxy/conf.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct ssl_ctx_st;
struct ssl_st;
struct ssl_session_st;

/* --- configuration (config loader, control thread) ------------------------ */

/* Parses a listener's `tls:` mapping ({cert, key, certificates: [{cert, key}],
 * alpn: [...], ticket_rotate}) and builds its server context. A missing or bad
 * file, a key that does not match its certificate, an expired or not yet valid
 * certificate are errors naming the path and OpenSSL's reason. Returns 0 and
 * *out (one reference, the caller's), or SY_EINVAL with errors recorded in c. */
int sy_tls_server_parse(sy_conf_t *c, yaml_node_t *node, struct ssl_ctx_st **out) SY_MUST_USE;

/* A backend's TLS settings: parses a pool's `tls:` mapping ({sni, ca, verify});
 * node NULL: the defaults an `https://` endpoint gets (verify against the
 * system trust store). Returns 0 and *ctx (one reference), *sni (strdup'ed
 * or NULL: then the endpoint's host, when it is a name) and *id (strdup'ed:
 * the settings as text, so that connections and sessions made under other
 * settings are never reused), or SY_EINVAL. */
int sy_tls_client_parse(sy_conf_t *c, yaml_node_t *node, struct ssl_ctx_st **ctx, char **sni,
                        char **id) SY_MUST_USE;

/* Takes one more reference / drops one (NULL is ignored). Any thread. */
struct ssl_ctx_st *sy_tls_ctx_ref(struct ssl_ctx_st *ctx);
void sy_tls_ctx_release(struct ssl_ctx_st *ctx);

/* --- connections (worker thread) ------------------------------------------- */

/* The events a TLS call waits for (EV_READ or EV_WRITE), after SY_EAGAIN. */
typedef struct sy_tls_io {
    int wants;
    const char *why;  /* after a failure: OpenSSL's reason (static string) */
} sy_tls_io_t;

/* A server-side SSL object on fd (accepted socket), or NULL (out of memory). */
struct ssl_st *sy_tls_accept(struct ssl_ctx_st *ctx, int fd);
/* A client-side SSL object on fd for a backend: SNI (may be NULL), host name or
 * IP checked when the context verifies, a cached session offered for
 * resumption (may be NULL), and the slot (may be NULL) where sessions the
 * server hands out are stored (the old one in it is freed; the slot must
 * outlive the SSL object). */
struct ssl_st *sy_tls_connect(struct ssl_ctx_st *ctx, int fd, const char *sni, const char *check_host,
                              struct ssl_session_st *session, struct ssl_session_st **slot);
void sy_tls_session_free(struct ssl_session_st *sess);

/* Advances the handshake: 1 done, 0 again (io->wants says on what), -1 failed
 * (io->why). */
int sy_tls_handshake(struct ssl_st *ssl, sy_tls_io_t *io);
/* Like read(2)/send(2): bytes moved (> 0), 0 at the peer's end of stream, or -1
 * with errno EAGAIN (io->wants says on what) or another errno (io->why). */
ssize_t sy_tls_read(struct ssl_st *ssl, void *buf, size_t len, sy_tls_io_t *io);
ssize_t sy_tls_write(struct ssl_st *ssl, const void *buf, size_t len, sy_tls_io_t *io);
/* Decrypted bytes are waiting inside the SSL object (the socket may not be
 * readable any more: the caller reads them before it waits). */
bool sy_tls_pending(const struct ssl_st *ssl);
/* The protocol ALPN selected is h2. */
bool sy_tls_alpn_h2(const struct ssl_st *ssl);
/* Sends close_notify when the handshake was done (one try, no wait) and frees
 * ssl. The caller closes the fd afterwards. NULL is ignored. */
void sy_tls_free(struct ssl_st *ssl);

#endif
