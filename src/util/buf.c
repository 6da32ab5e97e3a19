/* buf: a growable byte buffer (see buf.h). */
#include "sluice/buf.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

void buf_init(struct buf *b) { memset(b, 0, sizeof(*b)); }

void buf_dispose(struct buf *b)
{
    free(b->data);
    buf_init(b);
}

uint8_t *buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n)
            cap *= 2;
        b->data = mem_realloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

void buf_append(struct buf *b, const void *data, size_t n)
{
    if (!n)
        return;
    memcpy(buf_reserve(b, n), data, n);
    b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}
