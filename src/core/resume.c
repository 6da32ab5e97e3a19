/*
 * resume: freeing the bus's hand-over structs (see resume.h). Events and
 * batches are reference counted: a batch is shared by every start one
 * replay answers, on whichever worker, so its count is atomic.
 */
#include "sluice/resume.h"

#include <stdlib.h>

void bus_batch_unref(struct bus_batch *b)
{
    if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    for (size_t i = 0; i < b->n; i++)
        sse_event_unref(b->events[i]);
    free(b->events);
    free(b);
}

void bus_resume_dispose(struct bus_resume *r)
{
    for (size_t i = 0; i < r->nevents; i++)
        sse_event_unref(r->events[i]);
    free(r->events);
    r->events = NULL;
    r->nevents = 0;
    bus_batch_unref(r->batch);
    r->batch = NULL;
}

void bus_replay_free(struct bus_replay *r)
{
    if (!r)
        return;
    bus_resume_dispose(&r->result);
    free(r);
}
