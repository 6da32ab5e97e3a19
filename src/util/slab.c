/*
 * slab: page-aligned slots backed by pages only where written (see slab.h).
 *
 * The rejected alternatives: one mmap per slot is a VMA per connection,
 * and vm.max_map_count (65,530 by default) would cap connections below
 * what the gateway is sized for; madvise on a malloc'd block cannot work,
 * since its pages are shared with neighbours. So the whole range is
 * reserved at the first call, slots are cut from it in order (the high
 * water mark), and freed slots are reused from a stack. The stack itself
 * lives at the start of the reservation, so it too costs only the pages
 * that hold entries.
 */
#include "sluice/slab.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *base;        /* the reservation; NULL before the first call or when refused */
static uint8_t *slots;       /* base + the free stack's pages */
static uint32_t *free_stack; /* indexes of freed slots; nfree entries */
static size_t nfree;
static size_t high; /* slots ever handed out; slots[high..] never touched */
static size_t in_use;
static bool refused; /* the reservation failed once: never try again */

#define STACK_BYTES (((SLAB_SLOTS_MAX * sizeof(uint32_t)) + 4095) & ~(size_t)4095)
#define RESERVED ((size_t)STACK_BYTES + (size_t)SLAB_SLOTS_MAX * SLAB_SLOT_BYTES)

static bool reserve(void)
{
    if (base || refused)
        return base != NULL;
    void *p = mmap(NULL, RESERVED, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        refused = true; /* overcommit disabled, or no address space: malloc serves instead */
        return false;
    }
    base = p;
    free_stack = p;
    slots = base + STACK_BYTES;
    return true;
}

void *slab_alloc(void)
{
    void *p = NULL;
    pthread_mutex_lock(&lock);
    if (reserve()) {
        if (nfree)
            p = slots + (size_t)free_stack[--nfree] * SLAB_SLOT_BYTES;
        else if (high < SLAB_SLOTS_MAX)
            p = slots + high++ * SLAB_SLOT_BYTES;
        in_use += p != NULL;
    }
    pthread_mutex_unlock(&lock);
    return p;
}

bool slab_owns(const void *p)
{
    /* base is set once, before any slot exists: a pointer from a slot implies it is seen. */
    const uint8_t *b = p;
    return slots && b >= slots && b < slots + (size_t)SLAB_SLOTS_MAX * SLAB_SLOT_BYTES;
}

void slab_free(void *p)
{
    if (!p)
        return;
    /* Zero pages again on the next touch: the slot costs nothing while free, and is zeroed. */
    madvise(p, SLAB_SLOT_BYTES, MADV_DONTNEED);
    pthread_mutex_lock(&lock);
    free_stack[nfree++] = (uint32_t)(((uint8_t *)p - slots) / SLAB_SLOT_BYTES);
    in_use--;
    pthread_mutex_unlock(&lock);
}

size_t slab_in_use(void)
{
    pthread_mutex_lock(&lock);
    size_t n = in_use;
    pthread_mutex_unlock(&lock);
    return n;
}
