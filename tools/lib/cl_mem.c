/*
 * cl_mem: see cl_mem.h.
 */
#include "cl_mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_log.h"

static void out_of_memory(void)
{
    cl_log_error("out of memory");
    abort();
}

void *cl_mem_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        out_of_memory();
    return p;
}

void *cl_mem_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        out_of_memory();
    return p;
}

char *cl_mem_strndup(const char *s, size_t n)
{
    char *p = cl_mem_realloc(NULL, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
