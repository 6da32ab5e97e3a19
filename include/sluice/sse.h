/*
 * sse: Server-Sent Events encoding (pure: no I/O, no library headers).
 *
 * A NATS message becomes one sse_event: an immutable, reference-counted
 * buffer holding the event's body, `event:` and `data:` lines and the
 * blank line that ends it, encoded once and shared by every stream that
 * delivers it. The `id:` line is not part of the body: a stream on
 * several subjects carries a composite id that only it knows, so each
 * stream writes its own short id line in front of the shared body
 * (rejected alternative: one encoding per distinct id, which costs a copy
 * per stream on exactly the fan-out path that must not copy).
 *
 * Payloads are split into `data:` lines at CRLF, LF and lone CR, the three
 * line ends of the SSE grammar, so that no payload can add a field or end
 * an event early.
 */
#ifndef SLUICE_SSE_H
#define SLUICE_SSE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest `event:` name kept; a longer or unsafe name is dropped. */
#define SSE_EVENT_NAME_MAX 128

struct sse_event {
    atomic_uint refs;
    uint32_t len;    /* bytes in body */
    uint64_t sub_id; /* the bus subscription that produced it */
    uint64_t seq;    /* per-subscription sequence, from 1, increasing */
    int64_t time_ns; /* when it was stored (wall clock, ns since 1970); 0: unknown */
    bool end;        /* the publisher ended its subject with it (Sse-End); len 0: no event */
    bool refused;    /* NATS's "no responders" to a request with this reply subject (an end) */
    char body[];     /* "event: …\ndata: …\n\n", not NUL-terminated */
};

/*
 * A new event with one reference and time_ns 0 (set it before sharing the
 * event). name may be NULL; a name that is empty,
 * longer than SSE_EVENT_NAME_MAX or contains CR, LF or NUL is left out.
 */
struct sse_event *sse_event_new(uint64_t sub_id, uint64_t seq, const char *name,
                                const void *data, size_t len);
/*
 * An end marker with no event of its own (an empty Sse-End message): one
 * reference, end set, len 0. A stream writes only its id line for it, so
 * a client's Last-Event-ID still moves to the end.
 */
struct sse_event *sse_event_new_end(uint64_t sub_id, uint64_t seq);
/* True when name (len bytes) may be an `event:` value: 1 to SSE_EVENT_NAME_MAX bytes, no CR, LF or NUL. */
bool sse_event_name_valid(const char *name, size_t len);
/* Returns ev. Thread-safe. */
struct sse_event *sse_event_ref(struct sse_event *ev);
/* Drops one reference, freeing on the last. Thread-safe; NULL is a no-op. */
void sse_event_unref(struct sse_event *ev);

/*
 * One thread's batch of reference changes (single-threaded; a worker keeps
 * one). The streams of a worker take and drop references to the same few
 * events in runs: one event is queued on every stream of its subject, then
 * released by each as its frame goes out. Taken one by one, that is two
 * locked read-modify-writes per stream per event on one shared counter,
 * from every worker at once; here each run is summed per event and applied
 * with one atomic operation at sse_refs_flush() (or when the event leaves
 * its slot). An event's count is its atomic count plus the deltas pending
 * here, and it is freed when that sum reaches zero at a flush.
 *
 * Safe because a thread takes a reference only to an event it already
 * holds one of (the inbox mail's, or a queued item's): that reference
 * stays in the atomic count until this batch is flushed, so no other
 * thread can bring it to zero while a take is pending here.
 */
#define SSE_REFS_SLOTS 8
struct sse_refs {
    struct sse_event *ev[SSE_REFS_SLOTS]; /* NULL: free slot */
    int64_t delta[SSE_REFS_SLOTS];        /* pending change of ev[i]'s count */
    unsigned last;                        /* the slot used last: runs hit it first */
    unsigned victim;                      /* the next slot to flush when all are taken */
};
/* Adds d to ev's pending change when ev is not in the slot used last. */
void sse_refs_change(struct sse_refs *r, struct sse_event *ev, int64_t d);
/* Adds a reference to ev, which the calling thread must already hold one of. */
static inline void sse_refs_take(struct sse_refs *r, struct sse_event *ev)
{
    /* Inline for the common case, a run on one event: a compare and an add. */
    if (r->ev[r->last] == ev)
        r->delta[r->last]++;
    else
        sse_refs_change(r, ev, 1);
}
/* Drops a reference to ev (may free it at the next flush). NULL is a no-op. */
static inline void sse_refs_drop(struct sse_refs *r, struct sse_event *ev)
{
    if (ev && r->ev[r->last] == ev)
        r->delta[r->last]--;
    else if (ev)
        sse_refs_change(r, ev, -1);
}
/* Applies every pending change; frees the events that reach zero. */
void sse_refs_flush(struct sse_refs *r);

/* Bytes sse_event_new() would put in the body. */
size_t sse_encoded_len(const char *name, const void *data, size_t len);

/* Small fixed lines, written into out (room for SSE_LINE_MAX); return length. */
#define SSE_LINE_MAX 64
size_t sse_format_retry(char *out, unsigned retry_ms);  /* "retry: N\n\n" */
/* ": text\n\n"; text is truncated to fit and must hold no line end. */
size_t sse_format_comment(char *out, const char *text);
/*
 * v in decimal, no sign, no padding, no NUL, into out (room for
 * SSE_U64_DIGITS_MAX); returns the digits written (1 to 20). What
 * snprintf("%" PRIu64) writes, at a tenth of its cost: every delivered
 * event's id line is formatted per stream.
 */
#define SSE_U64_DIGITS_MAX 20
size_t sse_format_u64(char *out, uint64_t v);

/*
 * One event as a WHATWG-conformant EventSource would dispatch it: id is
 * the last event ID at that point, event the type (empty: "message"),
 * data with its final line feed removed. Pointers are into scratch space
 * valid only during the callback.
 */
struct sse_parsed {
    const char *id, *event, *data;
    size_t id_len, event_len, data_len;
};
typedef void sse_parsed_fn(void *ctx, const struct sse_parsed *ev);

/*
 * Parses a complete SSE byte stream (lines ended by CRLF, LF or CR;
 * comments and retry ignored; an event without data is not dispatched,
 * but its id is kept) and calls back per event. *last_id (may be NULL)
 * gets a copy of the final last event ID, NUL-terminated, freed by the
 * caller. Used by the long-poll endpoint and to check the encoder.
 */
void sse_parse(const char *buf, size_t len, sse_parsed_fn *cb, void *ctx, char **last_id);

#endif
