/* HTTP/2 to clients (nghttp2, memory in / memory out), another codec of the
 * connection layer next to the HTTP/1.1 exchange and the tunnel.
 *
 * A connection enters the HTTP/2 phase with sy_h2_start(): on a plain
 * listener with `http2: true` when its first bytes are the client preface (h2c
 * with prior knowledge), or from a TLS connection whose ALPN chose "h2". The
 * codec only reads c->in (bytes from the client, the preface included when it
 * was already read) and writes c->out (then sy_conn_flush_client), so it is
 * the same above a socket or a TLS layer.
 *
 * Each stream is one request with its own route decision, variant, upstream
 * exchange, metrics and access-log line: it runs the HTTP/1.1 exchange
 * unchanged in a child connection that has no socket. The stream's head and
 * DATA go into the child's input as an HTTP/1.1 request (chunked when the
 * length is unknown); what the child writes as its response is read back by a
 * response parser into HEADERS and DATA. Every buffer is bounded: a stream
 * holds at most its window of request bytes (window updates follow what its
 * upstream took) and one block of response bytes (the child stops reading its
 * upstream while the client has not taken them). Worker thread only. */
#ifndef SY_H2_H
#define SY_H2_H

#define SY_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define SY_H2_PREFACE_LEN 24

struct sy_conn;

/* Switches c (idle, nothing of a response pending) to HTTP/2: sends the
 * server's SETTINGS and processes what c->in already holds. On failure c is
 * closed. */
void sy_h2_start(struct sy_conn *c);

#endif
