/*
 * resume: what the bus hands the core about where a stream starts — the
 * start a client asked for, the answer (status, events to replay, a
 * shared replay batch) and a start a replay job answers later.
 *
 * Pure: plain structs of sse_events, so the stream and the fan-out use
 * them without the bus (and without cnats). The bus (src/nats/) fills
 * them; the core reads and frees them. The names keep the bus_ prefix
 * they had when bus.h defined them: they are the bus's side of the
 * interface the fan-out reaches NATS through (fanout.h, struct
 * fanout_source), and renaming every use was not worth the churn.
 */
#ifndef SLUICE_RESUME_H
#define SLUICE_RESUME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/sse.h"

/* Where a stream joining a subscription starts. */
enum bus_from {
    BUS_FROM_NOW,      /* only what is published from now on */
    BUS_FROM_ID,       /* after `after`: one part of a Last-Event-ID */
    BUS_FROM_EARLIEST, /* everything still stored */
    BUS_FROM_TIME,     /* everything stored at or after since_ns */
};

struct bus_start {
    enum bus_from from;
    uint64_t after;   /* BUS_FROM_ID */
    int64_t since_ns; /* BUS_FROM_TIME: wall clock, ns since 1970 */
};

enum bus_status {
    BUS_RESUME_OK,      /* every event asked for follows */
    BUS_RESUME_GONE,    /* events after the id are no longer stored */
    BUS_RESUME_UNKNOWN, /* the id is newer than anything stored */
    BUS_RESUME_LIMIT,   /* more than replay_max events to replay */
    BUS_RESUME_FAILED,  /* JetStream did not answer: try again later */
    BUS_RESUME_PENDING, /* a replay job will answer (bus_resume only) */
};

/* The events one replay fetched from JetStream, shared by every start it answers. */
struct bus_batch {
    atomic_uint refs;
    size_t n;
    struct sse_event **events; /* oldest first */
};

/* What a stream joining a subscription starts from. */
struct bus_resume {
    uint64_t last;             /* newest sequence so far: where a fresh stream starts */
    uint64_t before;           /* BUS_RESUME_OK: the position the events follow */
    uint64_t end;              /* the subject ended at this sequence, nothing after; 0: live */
    enum bus_status status;    /* of the requested start */
    struct bus_batch *batch;   /* from a replay: batch->events[batch_from..] come first */
    size_t batch_from;
    struct sse_event **events; /* to replay (after the batch), oldest first */
    size_t nevents;
};

/*
 * A start answered later by a replay job. Made by bus_resume(), handed
 * back through bus_params.replayed on the worker's inbox, freed by the
 * worker with bus_replay_free().
 */
struct bus_replay {
    struct bus_replay *next; /* the bus's: the job's waiters */
    size_t worker;
    uint64_t sub_id;
    struct bus_start start;
    void *owner;             /* the worker's; the bus never reads it */
    struct bus_resume result;
};

/* Drops r's events and r. NULL is a no-op. */
void bus_replay_free(struct bus_replay *r);
/* Drops r's events and its reference to the batch. */
void bus_resume_dispose(struct bus_resume *r);
/* Drops one reference to b, freeing it and its events on the last. NULL is a no-op. */
void bus_batch_unref(struct bus_batch *b);

#endif
