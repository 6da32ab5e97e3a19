/*
 * history: one subscription's most recent events, for resume (pure).
 *
 * A ring of references to the same shared event buffers the live fan-out
 * sends, bounded by count and bytes per subscription and by one budget
 * shared by every subscription of the process. Sequence numbers come from
 * one process-wide counter, so they increase within a subscription but
 * skip values; `lost` remembers the highest sequence that can no longer
 * be replayed (evicted, or from before the subscription existed), which
 * is what tells "nothing happened since X" from "X is too old".
 *
 * Not thread-safe: the bus holds its subscription's lock around every call.
 */
#ifndef SLUICE_HISTORY_H
#define SLUICE_HISTORY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/sse.h"

/* Bytes held by all histories of the process; shared across threads. */
struct history_budget {
    atomic_size_t used;
    size_t max;
};

enum history_resume {
    HISTORY_RESUME_OK,      /* every event after the id is still here */
    HISTORY_RESUME_GONE,    /* events after the id were evicted or predate us */
    HISTORY_RESUME_UNKNOWN, /* the id is newer than anything we have seen */
};

struct history;

/*
 * An empty history. floor: the process sequence when the subscription
 * began; nothing at or below it can be replayed. budget is borrowed.
 */
struct history *history_new(size_t max_events, size_t max_bytes, struct history_budget *budget,
                            uint64_t floor);
/* Drops every reference. history_free(NULL) is a no-op. */
void history_free(struct history *h);
/* Appends ev (takes the caller's reference), evicting the oldest past the bounds. */
void history_push(struct history *h, struct sse_event *ev);
/* The newest sequence pushed, or the floor when none was. */
uint64_t history_last(const struct history *h);
/*
 * Whether a client that has seen everything up to `after` can be resumed.
 * On HISTORY_RESUME_OK, appends a new reference to each event with a
 * sequence above `after`, oldest first, to *out (grown with realloc; *n
 * counts entries); the caller unrefs them and frees the array.
 */
enum history_resume history_since(const struct history *h, uint64_t after,
                                  struct sse_event ***out, size_t *n);
/*
 * Appends a reference to each held event stored at or after since_ns
 * (sse_event.time_ns), oldest first, as history_since() does.
 */
void history_since_time(const struct history *h, int64_t since_ns, struct sse_event ***out,
                        size_t *n);
/*
 * Every event above this sequence is held: the floor, or the newest
 * evicted event if any was. A JetStream replay takes what is above it
 * from here (history_since()) and only what is at or below it from its
 * own consumer.
 */
uint64_t history_lost(const struct history *h);
/*
 * Sets the floor of a history that holds nothing yet: for a JetStream
 * subscription, the stream sequence its live consumer starts after.
 */
void history_set_floor(struct history *h, uint64_t floor);
/*
 * The sequence at which the subject ended (an end marker, sse_event.end)
 * with nothing pushed after it, or 0: the subject is live. A later event
 * (a publisher reusing the subject) makes it live again.
 */
uint64_t history_end(const struct history *h);
/*
 * For a history that holds nothing yet: the subject ended at seq (at or
 * below the floor) before this subscription began, as JetStream says.
 * Ignored once an event was pushed: what came live is newer.
 */
void history_set_end(struct history *h, uint64_t seq);
/* The floor: nothing at or below it was ever pushed. */
uint64_t history_floor(const struct history *h);
size_t history_count(const struct history *h);
size_t history_bytes(const struct history *h);

#endif
