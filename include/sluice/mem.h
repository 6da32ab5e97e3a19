/*
 * mem: allocation that aborts on out-of-memory.
 *
 * The whole project follows one rule: allocation never returns NULL, so
 * callers never check. A process out of memory at the edge is better
 * restarted by its supervisor than limping on with half-built state.
 * Memory from these calls is released with free().
 */
#ifndef SLUICE_MEM_H
#define SLUICE_MEM_H

#include <stddef.h>

void *mem_alloc(size_t size);
void *mem_calloc(size_t n, size_t size);
void *mem_realloc(void *p, size_t size);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);

/* The struct that embeds member, given a pointer to member. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
