/*
 * cl_mem: allocation for the client programs. Out of memory aborts with
 * a message naming the program (cl_log), so callers never check for NULL:
 * a load generator or probe that cannot allocate has nothing useful left
 * to measure.
 */
#ifndef SLUICE_CL_MEM_H
#define SLUICE_CL_MEM_H

#include <stddef.h>

/* realloc() that never returns NULL; n == 0 allocates one byte. */
void *cl_mem_realloc(void *p, size_t n);
/* Zeroed n * size bytes (at least one); never NULL. */
void *cl_mem_calloc(size_t n, size_t size);
/* A NUL-terminated copy of the n bytes at s; the caller frees it. */
char *cl_mem_strndup(const char *s, size_t n);

#endif
