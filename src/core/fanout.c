/*
 * fanout: a worker's topics and the stream links on them (see fanout.h).
 *
 * Two maps index the same topics: by pattern, for joining, and by the
 * bus's sub_id, for delivery. Delivery walks a topic's links through a
 * cursor kept in the fanout (the next link, and the last one to reach):
 * a stream that ends inside its callback unlinks all of its links, and
 * fanout_leave() moves the cursor past any of them. Saving only the next
 * node on the stack was not enough: a stream with two links on one topic
 * unlinked the saved node, which then pointed at itself, and delivery
 * looped forever.
 */
#include "sluice/fanout.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/map.h"
#include "sluice/mem.h"

struct fanout_topic {
    struct list links; /* fanout_link.node */
    uint64_t sub_id;
    bool confirmed;    /* nats-server has the subscription, or it failed */
    bool failed;       /* the subscription could not be made */
    char *pattern;
};

struct fanout {
    struct fanout_source src; /* src.ops NULL: no NATS */
    size_t worker;
    fanout_event_fn *on_event;
    fanout_ready_fn *on_ready;
    fanout_replayed_fn *on_replayed;
    struct map *by_pattern;
    struct map *by_id; /* key: the uint64_t sub_id's bytes */
    uint64_t local_ids; /* sub ids when there is no source */
    struct list *next;  /* during fanout_deliver: the link to visit next; else NULL */
    struct list *stop;  /* during fanout_deliver: the last link to visit */
};

struct fanout *fanout_new(const struct fanout_source *src, size_t worker, fanout_event_fn *on_event,
                          fanout_ready_fn *on_ready, fanout_replayed_fn *on_replayed)
{
    struct fanout *f = mem_calloc(1, sizeof(*f));
    if (src)
        f->src = *src;
    f->worker = worker;
    f->on_event = on_event;
    f->on_ready = on_ready;
    f->on_replayed = on_replayed;
    f->by_pattern = map_new();
    f->by_id = map_new();
    return f;
}

void fanout_free(struct fanout *f)
{
    if (!f)
        return;
    map_free(f->by_pattern);
    map_free(f->by_id);
    free(f);
}

int fanout_join(struct fanout *f, const char *pattern, struct fanout_link *link)
{
    assert(!link->topic && !f->next); /* one topic per link; never joined while delivering */
    size_t plen = strlen(pattern);
    struct fanout_topic *t = map_get(f->by_pattern, pattern, plen);
    if (!t) {
        uint64_t id = ++f->local_ids;
        bool confirmed = true;
        int rc = f->src.ops ? f->src.ops->subscribe(f->src.ctx, f->worker, pattern, &id, &confirmed) : 0;
        if (rc != 0)
            return rc;
        t = mem_calloc(1, sizeof(*t));
        list_init(&t->links);
        t->sub_id = id;
        t->confirmed = confirmed;
        t->pattern = mem_strdup(pattern);
        map_put(f->by_pattern, pattern, plen, t);
        map_put(f->by_id, &t->sub_id, sizeof(t->sub_id), t);
    }
    list_insert_tail(&t->links, &link->node);
    link->topic = t;
    return 0;
}

void fanout_resume(struct fanout *f, struct fanout_link *link, const struct bus_start *start,
                   struct bus_resume *out)
{
    struct bus_replay *r = NULL;
    if (!f->src.ops ||
        f->src.ops->resume(f->src.ctx, f->worker, link->topic->pattern, start, out, &r) != 0) {
        memset(out, 0, sizeof(*out));
        out->status = start->from == BUS_FROM_ID ? BUS_RESUME_UNKNOWN : BUS_RESUME_OK;
    }
    if (r) {
        r->owner = link;
        link->pending = r;
    }
}

void fanout_replayed(struct fanout *f, struct bus_replay *r)
{
    struct fanout_link *link = r->owner;
    if (link) {
        link->pending = NULL;
        f->on_replayed(link, &r->result);
    }
    bus_replay_free(r);
}

void fanout_leave(struct fanout *f, struct fanout_link *link)
{
    if (link->pending) {
        link->pending->owner = NULL; /* answered into the void */
        link->pending = NULL;
    }
    struct fanout_topic *t = link->topic;
    if (!t)
        return;
    /* Leaving while its topic delivers: keep the cursor on links still there. */
    if (f->stop == &link->node)
        f->stop = link->node.prev;
    if (f->next == &link->node)
        f->next = link->node.next;
    if (f->stop == &t->links) /* every link up to the last one has left */
        f->next = &t->links;
    list_remove(&link->node);
    link->topic = NULL;
    if (!list_empty(&t->links))
        return;
    map_del(f->by_pattern, t->pattern, strlen(t->pattern));
    map_del(f->by_id, &t->sub_id, sizeof(t->sub_id));
    if (f->src.ops)
        f->src.ops->unsubscribe(f->src.ctx, f->worker, t->pattern);
    free(t->pattern);
    free(t);
}

/* Calls on_event(ev) for each of t's links, or on_link when ev is NULL. */
static void visit(struct fanout *f, struct fanout_topic *t, struct sse_event *ev,
                  fanout_ready_fn *on_link)
{
    /* Links appended during delivery would see this event too: stop at the current tail. */
    assert(!f->next); /* delivery is never re-entered from a callback */
    f->stop = t->links.prev;
    for (struct list *n = t->links.next; n != &t->links; n = f->next) {
        f->next = n->next;
        bool final = n == f->stop;
        struct fanout_link *link = container_of(n, struct fanout_link, node);
        if (ev)
            f->on_event(link, ev);
        else
            on_link(link);
        if (final)
            break;
    }
    f->next = f->stop = NULL;
}

void fanout_deliver(struct fanout *f, struct sse_event *ev)
{
    struct fanout_topic *t = map_get(f->by_id, &ev->sub_id, sizeof(ev->sub_id));
    if (t)
        visit(f, t, ev, NULL);
}

void fanout_each(struct fanout *f, uint64_t sub_id, fanout_ready_fn *fn)
{
    struct fanout_topic *t = map_get(f->by_id, &sub_id, sizeof(sub_id));
    if (t)
        visit(f, t, NULL, fn);
}

void fanout_confirm(struct fanout *f, uint64_t sub_id, bool failed)
{
    struct fanout_topic *t = map_get(f->by_id, &sub_id, sizeof(sub_id));
    if (!t || t->confirmed)
        return;
    t->confirmed = true;
    t->failed = failed;
    visit(f, t, NULL, f->on_ready);
}

bool fanout_ready(const struct fanout_link *link) { return link->topic && link->topic->confirmed; }

bool fanout_failed(const struct fanout_link *link) { return link->topic && link->topic->failed; }

size_t fanout_topics(const struct fanout *f) { return map_count(f->by_pattern); }
