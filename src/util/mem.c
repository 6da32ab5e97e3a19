/* mem: allocation that aborts on out-of-memory (see mem.h for the rule). */
#include "sluice/mem.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *check(void *p, size_t size)
{
    if (!p && size) {
        fprintf(stderr, "sluice: out of memory allocating %zu bytes\n", size);
        abort();
    }
    return p;
}

void *mem_alloc(size_t size) { return check(malloc(size ? size : 1), size); }
void *mem_calloc(size_t n, size_t size) { return check(calloc(n ? n : 1, size ? size : 1), n * size); }
void *mem_realloc(void *p, size_t size) { return check(realloc(p, size ? size : 1), size); }
char *mem_strdup(const char *s) { return mem_strndup(s, strlen(s)); }

char *mem_strndup(const char *s, size_t n)
{
    char *d = mem_alloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static atomic_size_t released;     /* bytes noted since the last trim */
static atomic_size_t seen;         /* released as the last mem_trim() call saw it */
static _Atomic double quiet_since; /* when mem_trim() last saw released change */

void mem_note_released(size_t bytes)
{
    atomic_fetch_add_explicit(&released, bytes, memory_order_relaxed);
}

bool mem_trim(double now)
{
    size_t r = atomic_load_explicit(&released, memory_order_relaxed);
    if (r < MEM_TRIM_BYTES)
        return false;
    /* Still releasing: a burst is draining. Wait until it has been quiet a while. */
    if (atomic_exchange(&seen, r) != r) {
        atomic_store(&quiet_since, now);
        return false;
    }
    if (now - atomic_load(&quiet_since) < MEM_TRIM_QUIET_S)
        return false;
    /* One thread trims for all: the others see the counter back at zero. */
    if (atomic_exchange(&released, 0) < MEM_TRIM_BYTES)
        return false;
    atomic_store(&seen, 0);
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    return true;
}
