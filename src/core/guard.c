/* guard: connection admission (see guard.h). */
#include "sluice/guard.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
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
    unsigned ipv6_prefix_bits;
};

/* Room for an IPv6 text form, "/128" and the NUL. */
#define GUARD_BUCKET_MAX (INET6_ADDRSTRLEN + 8)

void guard_bucket(const char *address, unsigned bits, char *out, size_t outlen)
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, address, &a6) != 1) {
        snprintf(out, outlen, "%s", address);
        return;
    }
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        inet_ntop(AF_INET, &a6.s6_addr[12], out, (socklen_t)outlen);
        return;
    }
    if (bits > 128)
        bits = 128;
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits > i * 8 ? bits - i * 8 : 0;
        if (keep < 8)
            a6.s6_addr[i] &= (uint8_t)(0xff00u >> keep);
    }
    char text[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, text, sizeof(text));
    snprintf(out, outlen, "%s/%u", text, bits);
}

struct guard *guard_new(size_t max_total, size_t max_per_address, unsigned ipv6_prefix_bits)
{
    struct guard *g = mem_calloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    g->per_address = map_new();
    g->max_total = max_total;
    g->max_per_address = max_per_address;
    g->ipv6_prefix_bits = ipv6_prefix_bits;
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

/* address's count, under g->lock. */
static uintptr_t count_of(struct guard *g, const char *address, size_t len)
{
    return (uintptr_t)map_get(g->per_address, address, len);
}

/* Adds delta (+1 or -1) to address's count, under g->lock; a count of 0 leaves the map. */
static void add_count(struct guard *g, const char *address, size_t len, int delta)
{
    uintptr_t n = count_of(g, address, len);
    if (delta > 0)
        map_put(g->per_address, address, len, (void *)(n + 1));
    else if (n > 1)
        map_put(g->per_address, address, len, (void *)(n - 1));
    else
        map_del(g->per_address, address, len);
}

bool guard_admit(struct guard *g, const char *ip, const char **limit)
{
    char address[GUARD_BUCKET_MAX];
    size_t len = 0;
    if (ip) {
        guard_bucket(ip, g->ipv6_prefix_bits, address, sizeof(address));
        len = strlen(address);
    }
    bool ok = false;
    pthread_mutex_lock(&g->lock);
    if (g->total >= g->max_total) {
        *limit = "connections";
    } else if (ip && count_of(g, address, len) >= g->max_per_address) {
        *limit = "connections_per_address";
    } else {
        if (ip)
            add_count(g, address, len, 1);
        g->total++;
        ok = true;
    }
    pthread_mutex_unlock(&g->lock);
    return ok;
}

void guard_release(struct guard *g, const char *ip)
{
    if (ip)
        guard_drop(g, ip);
    pthread_mutex_lock(&g->lock);
    if (g->total > 0)
        g->total--;
    pthread_mutex_unlock(&g->lock);
}

bool guard_hold(struct guard *g, const char *ip)
{
    char address[GUARD_BUCKET_MAX];
    guard_bucket(ip, g->ipv6_prefix_bits, address, sizeof(address));
    size_t len = strlen(address);
    pthread_mutex_lock(&g->lock);
    bool ok = count_of(g, address, len) < g->max_per_address;
    if (ok)
        add_count(g, address, len, 1);
    pthread_mutex_unlock(&g->lock);
    return ok;
}

void guard_drop(struct guard *g, const char *ip)
{
    char address[GUARD_BUCKET_MAX];
    guard_bucket(ip, g->ipv6_prefix_bits, address, sizeof(address));
    size_t len = strlen(address);
    pthread_mutex_lock(&g->lock);
    if (count_of(g, address, len) > 0)
        add_count(g, address, len, -1);
    pthread_mutex_unlock(&g->lock);
}
