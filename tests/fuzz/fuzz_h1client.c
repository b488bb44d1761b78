/* libFuzzer: the HTTP/1 response parser glue of the gateway's own client
 * (health probes, notifications, ctl): sy_h1client_parse_response fed in
 * pieces, then the peer's close. The first byte picks the limits (body kept
 * or counted, small or large head) and the size of the pieces. */
#include "proxy/h1client.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* assert() is gone in release builds: a broken invariant must crash the fuzzer. */
#define CHECK(x)                                                                      \
    do {                                                                              \
        if (!(x)) {                                                                   \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);     \
            abort();                                                                  \
        }                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    sy_h1client_limits_t lim = {.max_head = ctl & 1 ? 256 : 16384, .max_headers = ctl & 2 ? 4 : 100,
                                .max_body = ctl & 4 ? 64 : 1 << 20, .keep_body = (ctl & 8) != 0};
    size_t piece = (size_t)(ctl >> 4) + 1;
    sy_h1client_resp_t r;
    if (sy_h1client_resp_init(&r, &lim) != 0)
        return 0;
    for (int round = 0; round < 2; round++) {
        int rc = SY_EAGAIN;
        size_t off = 0;
        while (off < size && rc == SY_EAGAIN) {
            size_t n = size - off < piece ? size - off : piece;
            rc = sy_h1client_parse_response(&r, (const char *)data + off, n);
            off += n;
        }
        if (rc == SY_EAGAIN)
            rc = sy_h1client_parse_eof(&r);
        if (rc == 0) {
            CHECK(r.complete && r.err == NULL);
            CHECK(r.status >= 200 && r.status <= 999);
            CHECK(r.msg != NULL);
            (void)sy_h1client_find(&r, "content-type");
            if (lim.keep_body)
                CHECK(r.body_len <= lim.max_body && (r.body_len == 0 || r.body != NULL));
            for (size_t i = 0; r.body != NULL && i < r.body_len; i++)
                (void)r.body[i];
        } else {
            CHECK(r.err != NULL);
            /* stopped: the same answer again */
            CHECK(sy_h1client_parse_response(&r, "x", 1) == rc);
        }
        sy_h1client_resp_reset(&r); /* the same parser for the next response */
    }
    sy_h1client_resp_free(&r);
    return 0;
}
