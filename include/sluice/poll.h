/*
 * poll: the long-poll answer (GET /poll) — a stream's queued SSE text
 * turned into one JSON body {"events":[{id,event,data}…],"next":"<id>"}.
 *
 * The request pipeline opens the poll's stream like any SSE stream
 * (request.c: admission, quota, NATS confirmation); once the stream has
 * its answer (poll_ready()), poll_drain() copies about as much of the
 * queue as the answer may hold and encodes it; the pipeline charges the
 * result to the connection and sends it through the front end. Nothing
 * here knows the request, the connection or the protocol.
 *
 * Whole events only: past the byte cap the answer ends with the last event
 * that fits (the first always goes) and next is its id, so that polling
 * again from next continues without loss or duplicate.
 */
#ifndef SLUICE_POLL_H
#define SLUICE_POLL_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/buf.h"

struct stream;

/* True when the poll's stream has its answer: an event, a reset, or its end. */
bool poll_ready(const struct stream *s);

/*
 * Appends to json the answer of s's queue, ending before the first event
 * that would take it past max bytes (the first event always goes).
 * *partial: the answer holds less than the whole queue (cut at max, or
 * only part of the queue copied out); what is left stays in s for the next
 * poll, and is dropped with the stream. Returns the events included.
 */
size_t poll_drain(struct stream *s, size_t max, struct buf *json, bool *partial);

/*
 * The poll JSON of SSE text sse (len bytes), ending before the first
 * event that would take json past max bytes (the first event always
 * goes). whole: sse is everything the stream had, so its last id is the
 * position to continue from; else (or when cut) next is the id of the
 * last event included. Appends to json; returns the events included and
 * sets *cut when events were left out. Pure; exposed for tests.
 */
size_t poll_json(const char *sse, size_t len, bool whole, size_t max, struct buf *json,
                 bool *cut);

#endif
