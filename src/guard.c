/* guard: connection admission (see guard.h). */
#include "sluice/guard.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/map.h"
#include "sluice/mem.h"

struct guard {
    pthread_mutex_t lock;
    struct map *per_address; /* address -> count, as a pointer-sized integer */
    size_t total;
    size_t max_total, max_per_address;
};

struct guard *guard_new(size_t max_total, size_t max_per_address)
{
    struct guard *g = mem_calloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    g->per_address = map_new();
    g->max_total = max_total;
    g->max_per_address = max_per_address;
    return g;
}

void guard_free(struct guard *g)
{
    if (!g)
        return;
    map_free(g->per_address);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

bool guard_admit(struct guard *g, const char *address, const char **limit)
{
    size_t len = strlen(address);
    bool ok = false;
    pthread_mutex_lock(&g->lock);
    uintptr_t n = (uintptr_t)map_get(g->per_address, address, len);
    if (g->total >= g->max_total) {
        *limit = "connections";
    } else if (n >= g->max_per_address) {
        *limit = "connections_per_address";
    } else {
        map_put(g->per_address, address, len, (void *)(n + 1));
        g->total++;
        ok = true;
    }
    pthread_mutex_unlock(&g->lock);
    return ok;
}

void guard_release(struct guard *g, const char *address)
{
    size_t len = strlen(address);
    pthread_mutex_lock(&g->lock);
    uintptr_t n = (uintptr_t)map_get(g->per_address, address, len);
    if (n > 1)
        map_put(g->per_address, address, len, (void *)(n - 1));
    else
        map_del(g->per_address, address, len);
    if (n > 0)
        g->total--;
    pthread_mutex_unlock(&g->lock);
}
