/*
 * cl_buf: see cl_buf.h.
 */
#include "cl_buf.h"

#include <stdlib.h>
#include <string.h>

#include "cl_log.h"
#include "cl_mem.h"

void cl_buf_append(struct cl_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (n > UINT32_MAX - b->len) {
        cl_log_error("buffer over 4 GiB");
        abort();
    }
    if (b->len + n > b->cap) {
        uint64_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        b->p = cl_mem_realloc(b->p, (size_t)cap);
        b->cap = (uint32_t)cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += (uint32_t)n;
}

void cl_buf_set(struct cl_buf *b, const void *data, size_t n)
{
    b->len = 0;
    cl_buf_append(b, data, n);
}

void cl_buf_consume(struct cl_buf *b, size_t n)
{
    if (n == 0)
        return;
    memmove(b->p, b->p + n, b->len - n);
    b->len -= (uint32_t)n;
}

void cl_buf_dispose(struct cl_buf *b)
{
    free(b->p);
    *b = (struct cl_buf){0};
}
