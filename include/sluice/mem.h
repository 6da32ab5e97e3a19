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

#include <stdbool.h>
#include <stddef.h>

void *mem_alloc(size_t size);
void *mem_calloc(size_t n, size_t size);
void *mem_realloc(void *p, size_t size);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);

/*
 * glibc keeps freed memory in its arenas (one per worker thread), so a
 * burst that grew output buffers would stay in RSS long after it drained.
 * Code that frees large transient blocks notes the bytes here; a worker's
 * tick calls mem_trim(now), which hands free pages back to the kernel
 * (malloc_trim) once at least MEM_TRIM_BYTES were noted since the last
 * time and nothing for MEM_TRIM_QUIET_S: trimming walks every arena, and
 * in the middle of a burst the pages would only be faulted back in.
 * Thread-safe; mem_trim() returns whether it trimmed. now: any monotonic
 * clock in seconds, the same for every caller.
 */
#define MEM_TRIM_BYTES (4u * 1024 * 1024)
#define MEM_TRIM_QUIET_S 1.0
void mem_note_released(size_t bytes);
bool mem_trim(double now);

/* The struct that embeds member, given a pointer to member. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
