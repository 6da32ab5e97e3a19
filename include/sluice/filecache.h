/*
 * filecache: one worker's shared copies of static files
 * (single-threaded, owned by the worker).
 *
 * A static file is read once into a reference-counted entry that every
 * response serving it shares, instead of one private copy per request
 * held until the client's window opens. An entry is keyed by the file's
 * resolved path and revalidated on each use by device, inode, size and
 * modification time: a changed file gets a new entry, and responses still
 * sending the old one keep it alive until they are done.
 *
 * The cache is bounded in bytes (entries in use included). To make room
 * it drops unused entries, least recently used first; when entries in use
 * fill it, the request is refused (the caller answers 503) rather than
 * given a private copy. A per-worker cache was chosen over a process-wide
 * one: no lock on the request path, at the price of one copy per worker.
 */
#ifndef SLUICE_FILECACHE_H
#define SLUICE_FILECACHE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct filecache;

/* A file's bytes, shared; read-only to everyone. */
struct filecache_entry {
    const char *data;
    size_t len;
};

/* A cache of at most max_bytes of file contents. */
struct filecache *filecache_new(size_t max_bytes);
/* Every entry must have been unreffed. filecache_free(NULL) is a no-op. */
void filecache_free(struct filecache *c);
/*
 * The entry for path (resolved, inside the served directory) whose open
 * descriptor is fd with status st: the cached one if it still matches st,
 * else the file read now. One reference for the caller. 0, ERR_LIMIT (the
 * cache cannot make room: entries in use fill it) or ERR_IO (a short read).
 */
int filecache_get(struct filecache *c, const char *path, int fd, const struct stat *st,
                  struct filecache_entry **out);
/* Drops a reference from filecache_get(). NULL is a no-op. */
void filecache_unref(struct filecache *c, struct filecache_entry *e);
/* Bytes held, entries in use included. */
size_t filecache_bytes(const struct filecache *c);

#endif
