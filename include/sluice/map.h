/*
 * map: a hash map from byte-string keys to borrowed pointers.
 *
 * Keys are copied in; values are the caller's. Chained buckets that grow
 * at load 1, so lookups stay O(1) whatever the count of subjects.
 */
#ifndef SLUICE_MAP_H
#define SLUICE_MAP_H

#include <stddef.h>

struct map;

struct map *map_new(void);
/* Frees the map and its key copies, not the values. map_free(NULL) is a no-op. */
void map_free(struct map *m);
void *map_get(const struct map *m, const void *key, size_t klen);
/* Inserts or replaces; returns the previous value or NULL. */
void *map_put(struct map *m, const void *key, size_t klen, void *value);
/* Removes; returns the value that was there or NULL. */
void *map_del(struct map *m, const void *key, size_t klen);
size_t map_count(const struct map *m);

#endif
