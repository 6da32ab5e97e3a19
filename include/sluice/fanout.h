/*
 * fanout: one worker's map from subject patterns to the streams that
 * asked for them (single-threaded, owned by the worker).
 *
 * A stream embeds one fanout_link per subject. The first link on a
 * pattern takes a subscription for this worker from the source, the
 * last one gives it back. The source is an interface (struct
 * fanout_source) the bus implements and the worker wires in: the fan-out
 * reaches NATS through it and never includes bus.h, so it and the
 * stream stay pure and are unit-tested without cnats. Events arrive by sub_id, so an event of a subscription that
 * was dropped and taken again meanwhile finds no topic and is ignored.
 */
#ifndef SLUICE_FANOUT_H
#define SLUICE_FANOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/list.h"
#include "sluice/resume.h"
#include "sluice/sse.h"

struct fanout;
struct fanout_topic;

struct fanout_link {
    struct list node;           /* in the topic's list */
    struct fanout_topic *topic; /* NULL when not joined */
    void *owner;                /* the stream */
    unsigned index;             /* the owner's subject index */
    struct bus_replay *pending; /* a start a replay job will answer */
};

/* Called for each link of the event's topic; ev is borrowed. */
typedef void fanout_event_fn(struct fanout_link *link, struct sse_event *ev);
/* Called for each link of a topic that nats-server has just confirmed (or failed). */
typedef void fanout_ready_fn(struct fanout_link *link);
/* Called when the replay a link waited for answers; r is borrowed. */
typedef void fanout_replayed_fn(struct fanout_link *link, struct bus_resume *r);

/*
 * Where subscriptions come from: the bus's side of the fan-out (see
 * bus_fanout_source() in bus.h). Each call gets ctx first and the
 * worker's index; the contracts are bus_subscribe(), bus_unsubscribe()
 * and bus_resume().
 */
struct fanout_source_ops {
    int (*subscribe)(void *ctx, size_t worker, const char *pattern, uint64_t *sub_id,
                     bool *confirmed);
    void (*unsubscribe)(void *ctx, size_t worker, const char *pattern);
    int (*resume)(void *ctx, size_t worker, const char *pattern, const struct bus_start *start,
                  struct bus_resume *out, struct bus_replay **pending);
};

struct fanout_source {
    const struct fanout_source_ops *ops;
    void *ctx;
};

/*
 * src (copied) may be NULL (no NATS: topics are local only and confirmed
 * at once, for tests).
 */
struct fanout *fanout_new(const struct fanout_source *src, size_t worker, fanout_event_fn *on_event,
                          fanout_ready_fn *on_ready, fanout_replayed_fn *on_replayed);
/* Every link must have left. fanout_free(NULL) is a no-op. */
void fanout_free(struct fanout *f);
/* Links to pattern; 0, or ERR_NATS or ERR_LIMIT (max-subscriptions) with the link left unjoined. */
int fanout_join(struct fanout *f, const char *pattern, struct fanout_link *link);
/*
 * Where a confirmed link starts: see bus_resume(). On BUS_RESUME_PENDING
 * the answer comes later through on_replayed. Without a source the topic has
 * no history (no source): last is 0 and a resume from an id reports BUS_RESUME_UNKNOWN.
 */
void fanout_resume(struct fanout *f, struct fanout_link *link, const struct bus_start *start,
                   struct bus_resume *out);
/* Hands a replay's answer to the link that waits for it, if still there; frees r. */
void fanout_replayed(struct fanout *f, struct bus_replay *r);
/* Unlinks, dropping any replay it waits for; a link that never joined is fine. */
void fanout_leave(struct fanout *f, struct fanout_link *link);
/* Hands ev (borrowed) to every link of its topic (by ev->sub_id). Links may leave meanwhile. */
void fanout_deliver(struct fanout *f, struct sse_event *ev);
/*
 * The subscription sub_id is confirmed (or failed): marks its topic and
 * calls on_ready for each link, once; later notices are ignored.
 */
void fanout_confirm(struct fanout *f, uint64_t sub_id, bool failed);
/* Calls fn for each link of sub_id's topic, if there is one. Links may leave meanwhile. */
void fanout_each(struct fanout *f, uint64_t sub_id, fanout_ready_fn *fn);
/* True once nats-server is known to have the link's subscription, or it failed. */
bool fanout_ready(const struct fanout_link *link);
/* True when the link's subscription could not be made. */
bool fanout_failed(const struct fanout_link *link);
size_t fanout_topics(const struct fanout *f);

#endif
