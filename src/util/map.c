/*
 * map: chained hash map with byte-string keys (FNV-1a), doubling at load 1.
 * Small and predictable; the maps here hold subjects, at most a few
 * hundred thousand keys.
 */
#include "sluice/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    size_t klen;
    char key[];
};

struct map {
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

static uint64_t hash_key(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

struct map *map_new(void)
{
    struct map *m = mem_calloc(1, sizeof(*m));
    m->nbuckets = 16;
    m->buckets = mem_calloc(m->nbuckets, sizeof(*m->buckets));
    return m;
}

void map_free(struct map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->buckets);
    free(m);
}

static struct entry **find(const struct map *m, const void *key, size_t klen, uint64_t h)
{
    struct entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)
            break;
    }
    return pp;
}

void *map_get(const struct map *m, const void *key, size_t klen)
{
    struct entry *e = *find(m, key, klen, hash_key(key, klen));
    return e ? e->value : NULL;
}

static void grow(struct map *m)
{
    size_t n = m->nbuckets * 2;
    struct entry **b = mem_calloc(n, sizeof(*b));
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (struct entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

void *map_put(struct map *m, const void *key, size_t klen, void *value)
{
    uint64_t h = hash_key(key, klen);
    struct entry **pp = find(m, key, klen, h);
    if (*pp) {
        void *old = (*pp)->value;
        (*pp)->value = value;
        return old;
    }
    struct entry *e = mem_alloc(sizeof(*e) + klen);
    e->next = NULL;
    e->hash = h;
    e->value = value;
    e->klen = klen;
    memcpy(e->key, key, klen);
    *pp = e;
    if (++m->count > m->nbuckets)
        grow(m);
    return NULL;
}

void *map_del(struct map *m, const void *key, size_t klen)
{
    struct entry **pp = find(m, key, klen, hash_key(key, klen));
    struct entry *e = *pp;
    if (!e)
        return NULL;
    void *value = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return value;
}

size_t map_count(const struct map *m) { return m->count; }
