/* libFuzzer: the HTTP/1 reader. The first byte picks requests or responses and
 * where to split the input; everything else is fed as bytes from a peer. */
#include "proxy/h1.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t body_bytes;

static int on_head(void *ud, sy_h1_msg_t *m)
{
    (void)ud;
    /* Touch everything a caller may read. */
    for (size_t i = 0; i < m->nheaders; i++)
        body_bytes += m->headers[i].name_len + m->headers[i].value_len;
    if (m->target)
        body_bytes += m->target_len;
    /* origin and host point into the target or a header value: read every byte */
    for (size_t i = 0; m->origin != NULL && i < m->origin_len; i++)
        body_bytes += (unsigned char)m->origin[i];
    for (size_t i = 0; m->host != NULL && i < m->host_len; i++)
        body_bytes += (unsigned char)m->host[i];
    return m->upgrade ? SY_H1_HEAD_TUNNEL : 0;
}

static int on_body(void *ud, const char *d, size_t n)
{
    (void)ud;
    (void)d;
    body_bytes += n;
    return 0;
}

static int on_done(void *ud)
{
    (void)ud;
    return 0;
}

static const sy_h1_callbacks_t cbs = {on_head, on_body, on_done};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool request = (data[0] & 1) == 0;
    size_t split = size > 1 ? (data[0] >> 1) % size : 0;
    data++;
    size--;
    static _Alignas(16) char arena[64 * 1024];
    sy_h1_t h;
    sy_h1_init(&h, request, &cbs, NULL, 16384, 8192, 100);
    sy_h1_set_arena(&h, arena, sizeof(arena));
    size_t off = 0;
    while (off < size) {
        size_t n = split > 0 && off == 0 && split < size ? split : size - off;
        size_t used = 0;
        int rc = sy_h1_execute(&h, (const char *)data + off, n, &used);
        if (rc == SY_H1_ERROR || rc == SY_H1_UPGRADE)
            return 0;
        off += used;
        if (rc == SY_H1_PAUSED)
            sy_h1_next(&h);
        else if (used < n)
            return 0;
    }
    (void)sy_h1_finish(&h);
    return 0;
}
