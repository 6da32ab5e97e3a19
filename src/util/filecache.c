/*
 * filecache: shared static file copies (see filecache.h).
 *
 * Entries are in the map while current; a stale one (the file changed) or
 * an evicted one leaves the map at once and is freed by its last unref.
 * The LRU list holds only current entries nobody uses, oldest use first,
 * so making room never scans entries it may not drop.
 */
#include "sluice/filecache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/err.h"
#include "sluice/list.h"
#include "sluice/map.h"
#include "sluice/mem.h"

struct entry {
    struct filecache_entry pub;
    struct list lru; /* c->unused while refs == 0 and current */
    unsigned refs;
    bool current; /* in c->by_path */
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
};

struct filecache {
    struct map *by_path;
    struct list unused; /* entry.lru, least recently used first */
    size_t bytes;       /* data of every entry alive; <= max except transiently */
    size_t max;
};

static struct entry *entry_of(struct filecache_entry *e)
{
    return container_of(e, struct entry, pub);
}

struct filecache *filecache_new(size_t max_bytes)
{
    struct filecache *c = mem_calloc(1, sizeof(*c));
    c->by_path = map_new();
    list_init(&c->unused);
    c->max = max_bytes;
    return c;
}

static void destroy(struct filecache *c, struct entry *e)
{
    c->bytes -= e->pub.len;
    free((char *)e->pub.data);
    free(e->path);
    free(e);
}

/* Takes e out of the map; freed now if unused, else by its last unref. */
static void retire(struct filecache *c, struct entry *e)
{
    map_del(c->by_path, e->path, strlen(e->path));
    e->current = false;
    list_remove(&e->lru);
    if (e->refs == 0)
        destroy(c, e);
}

void filecache_free(struct filecache *c)
{
    if (!c)
        return;
    while (!list_empty(&c->unused))
        retire(c, container_of(c->unused.next, struct entry, lru));
    map_free(c->by_path);
    free(c);
}

static bool matches(const struct entry *e, const struct stat *st)
{
    return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

int filecache_get(struct filecache *c, const char *path, int fd, const struct stat *st,
                  struct filecache_entry **out)
{
    size_t plen = strlen(path);
    struct entry *e = map_get(c->by_path, path, plen);
    if (e && matches(e, st)) {
        if (e->refs++ == 0)
            list_remove(&e->lru);
        *out = &e->pub;
        return 0;
    }
    if (e)
        retire(c, e);
    size_t size = (size_t)st->st_size;
    while (c->bytes + size > c->max && !list_empty(&c->unused))
        retire(c, container_of(c->unused.next, struct entry, lru));
    if (c->bytes + size > c->max)
        return ERR_LIMIT;
    char *data = mem_alloc(size + 1);
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, data + got, size - got, (off_t)got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got != size) { /* truncated while we read: not cached, the next request retries */
        free(data);
        return ERR_IO;
    }
    e = mem_calloc(1, sizeof(*e));
    e->pub.data = data;
    e->pub.len = size;
    list_init(&e->lru);
    e->refs = 1;
    e->current = true;
    e->path = mem_strdup(path);
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->size = st->st_size;
    e->mtime = st->st_mtim;
    c->bytes += size;
    map_put(c->by_path, path, plen, e);
    *out = &e->pub;
    return 0;
}

void filecache_unref(struct filecache *c, struct filecache_entry *pub)
{
    if (!pub)
        return;
    struct entry *e = entry_of(pub);
    if (--e->refs > 0)
        return;
    if (e->current)
        list_insert_tail(&c->unused, &e->lru);
    else
        destroy(c, e);
}

size_t filecache_bytes(const struct filecache *c) { return c->bytes; }
