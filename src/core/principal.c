/*
 * principal: per-principal stream limits (see principal.h).
 *
 * One map from the principal id to its entry (open count and token
 * bucket) under one mutex. Entries whose principal holds no stream wait
 * on an idle list in the order they went idle; every take sweeps the head
 * of that list, dropping those idle for a second or more (their bucket is
 * full again, so a fresh entry is the same thing). A count of streams
 * per entry, not a map per worker: a principal's streams land on every
 * worker, as one address's connections do (guard.h).
 */
#include "sluice/principal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/list.h"
#include "sluice/map.h"
#include "sluice/mem.h"
#include "sluice/rate.h"

#define IDLE_KEEP_S 1.0 /* an idle entry's bucket (burst = rate) is full again after this */

struct entry {
    size_t open;            /* streams held */
    struct rate_bucket bucket;
    double idle_since;      /* monotonic s when open fell to 0 */
    struct list idle;       /* in principals.idle while open == 0 */
    size_t klen;
    char key[];             /* the principal id, cut to PRINCIPAL_MAX */
};

struct principals {
    struct principal_params p;
    pthread_mutex_t lock;   /* guards entries and idle */
    struct map *entries;    /* key -> struct entry */
    struct list idle;       /* entries with open == 0, oldest first */
    _Atomic double logged_at;
    struct principal_stats stats;
};

struct principals *principal_new(const struct principal_params *p)
{
    struct principals *t = mem_calloc(1, sizeof(*t));
    t->p = *p;
    t->entries = map_new();
    list_init(&t->idle);
    atomic_init(&t->logged_at, -1e9);
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

static void drop(struct principals *t, struct entry *e)
{
    list_remove(&e->idle);
    map_del(t->entries, e->key, e->klen);
    free(e);
}

void principal_free(struct principals *t)
{
    if (!t)
        return;
    while (!list_empty(&t->idle))
        drop(t, container_of(t->idle.next, struct entry, idle));
    /* Entries still open belong to streams that outlived the table: none at shutdown. */
    map_free(t->entries);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

bool principal_enabled(const struct principals *t) { return t && (t->p.max_open || t->p.rate); }

static void sweep(struct principals *t, double now_s)
{
    while (!list_empty(&t->idle)) {
        struct entry *e = container_of(t->idle.next, struct entry, idle);
        if (now_s - e->idle_since < IDLE_KEEP_S)
            break;
        drop(t, e);
    }
}

static size_t key_len(const char *principal)
{
    size_t n = strlen(principal);
    return n < PRINCIPAL_MAX ? n : PRINCIPAL_MAX;
}

enum principal_verdict principal_take(struct principals *t, const char *principal, double now_s)
{
    size_t klen = key_len(principal);
    enum principal_verdict v = PRINCIPAL_OK;
    pthread_mutex_lock(&t->lock);
    sweep(t, now_s);
    struct entry *e = map_get(t->entries, principal, klen);
    if (!e) {
        e = mem_calloc(1, sizeof(*e) + klen + 1);
        memcpy(e->key, principal, klen);
        e->klen = klen;
        rate_init(&e->bucket, t->p.rate, now_s);
        list_init(&e->idle);
        map_put(t->entries, e->key, klen, e);
        e->idle_since = now_s;
        list_insert_tail(&t->idle, &e->idle);
    }
    if (t->p.max_open && e->open >= t->p.max_open)
        v = PRINCIPAL_FULL;
    else if (t->p.rate && !rate_take(&e->bucket, t->p.rate, t->p.rate, now_s, 1))
        v = PRINCIPAL_RATE;
    if (v == PRINCIPAL_OK && e->open++ == 0)
        list_remove(&e->idle);
    pthread_mutex_unlock(&t->lock);
    if (v == PRINCIPAL_FULL)
        atomic_fetch_add_explicit(&t->stats.full, 1, memory_order_relaxed);
    else if (v == PRINCIPAL_RATE)
        atomic_fetch_add_explicit(&t->stats.rate, 1, memory_order_relaxed);
    return v;
}

void principal_put(struct principals *t, const char *principal, double now_s)
{
    size_t klen = key_len(principal);
    pthread_mutex_lock(&t->lock);
    struct entry *e = map_get(t->entries, principal, klen);
    if (e && e->open > 0 && --e->open == 0) {
        e->idle_since = now_s;
        list_insert_tail(&t->idle, &e->idle);
    }
    pthread_mutex_unlock(&t->lock);
}

size_t principal_count(struct principals *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = map_count(t->entries);
    pthread_mutex_unlock(&t->lock);
    return n;
}

const struct principal_stats *principal_stats(const struct principals *t) { return &t->stats; }

bool principal_log_due(struct principals *t, double now_s)
{
    double last = atomic_load(&t->logged_at);
    return now_s - last >= 1.0 && atomic_compare_exchange_strong(&t->logged_at, &last, now_s);
}
