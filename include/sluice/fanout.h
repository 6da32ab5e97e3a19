/*
 * fanout: one worker's map from subject patterns to the streams that
 * asked for them (single-threaded, owned by the worker).
 *
 * A stream embeds one fanout_link per subject. The first link on a
 * pattern takes a bus subscription for this worker, the last one gives
 * it back. Events arrive by sub_id, so an event of a subscription that
 * was dropped and taken again meanwhile finds no topic and is ignored.
 */
#ifndef SLUICE_FANOUT_H
#define SLUICE_FANOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/list.h"
#include "sluice/sse.h"

struct bus;
struct fanout;
struct fanout_topic;

struct fanout_link {
    struct list node;           /* in the topic's list */
    struct fanout_topic *topic; /* NULL when not joined */
    void *owner;                /* the stream */
    unsigned index;             /* the owner's subject index */
};

/* Called for each link of the event's topic; ev is borrowed. */
typedef void fanout_event_fn(struct fanout_link *link, struct sse_event *ev);
/* Called for each link of a topic that nats-server has just confirmed. */
typedef void fanout_ready_fn(struct fanout_link *link);

/*
 * bus may be NULL (no NATS: topics are local only and confirmed at once,
 * for tests).
 */
struct fanout *fanout_new(struct bus *bus, size_t worker, fanout_event_fn *on_event,
                          fanout_ready_fn *on_ready);
/* Every link must have left. fanout_free(NULL) is a no-op. */
void fanout_free(struct fanout *f);
/* Links to pattern; 0 or ERR_NATS (link left unjoined). */
int fanout_join(struct fanout *f, const char *pattern, struct fanout_link *link);
struct bus_resume;
/*
 * Where a joined link starts: see bus_resume(). Without a bus the topic
 * has no history: last is 0 and a resume reports HISTORY_RESUME_UNKNOWN.
 */
void fanout_resume(struct fanout *f, struct fanout_link *link, bool resume, uint64_t after,
                   struct bus_resume *out);
/* Unlinks; a link that never joined is fine. */
void fanout_leave(struct fanout *f, struct fanout_link *link);
/*
 * Hands ev (borrowed) to every link of its topic. Links may leave
 * meanwhile. An event with seq 0 is the bus's confirmation notice: it
 * marks the topic confirmed and calls on_ready instead.
 */
void fanout_deliver(struct fanout *f, struct sse_event *ev);
/* True once nats-server is known to have the link's subscription. */
bool fanout_ready(const struct fanout_link *link);
size_t fanout_topics(const struct fanout *f);

#endif
