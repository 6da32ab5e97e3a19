/*
 * poll: the long-poll answer as JSON (see poll.h), from the SSE text the
 * poll's stream queued.
 *
 * The queue is this stream's SSE text; parsing it back (sse_parse) keeps
 * one encoder for both answers, so ids, event names and data lines mean
 * the same in a poll as in a stream. Only about as much as the answer can
 * hold is copied out of the queue (more while not one event is whole).
 *
 * Rejected: a second, JSON-shaped queue per poll stream, filled beside the
 * SSE one: two encodings of every event and two places to keep ids
 * consistent, for a legacy fallback.
 */
#include "sluice/poll.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/json.h"
#include "sluice/mem.h"
#include "sluice/sse.h"
#include "sluice/stream.h"

bool poll_ready(const struct stream *s)
{
    return stream_ready(s) && (stream_dispatchable(s) > 0 || stream_ended(s) != STREAM_END_NONE);
}

/* What closes the JSON after an event of id length n: `],"next":"<id>"}` and a newline. */
#define POLL_TAIL(n) (6 * (n) + 16)

struct poll_json {
    struct buf *out;
    size_t n;      /* events included */
    size_t max;    /* json bytes */
    bool cut;      /* an event did not fit: the rest are left out */
    char *last_id; /* of the last event included */
};

static void on_poll_event(void *ctx, const struct sse_parsed *ev)
{
    struct poll_json *pj = ctx;
    if (pj->cut)
        return;
    size_t mark = pj->out->len;
    if (pj->n)
        buf_append(pj->out, ",", 1);
    buf_append(pj->out, "{\"id\":", 6);
    json_put_string(pj->out, ev->id, ev->id_len);
    buf_append(pj->out, ",\"event\":", 9);
    json_put_string(pj->out, ev->event_len ? ev->event : "message", ev->event_len ? ev->event_len : 7);
    buf_append(pj->out, ",\"data\":", 8);
    json_put_string(pj->out, ev->data, ev->data_len);
    buf_append(pj->out, "}", 1);
    /* Whole events only, and never none: one event larger than the cap goes alone. */
    if (pj->n && pj->out->len + POLL_TAIL(ev->id_len) > pj->max) {
        pj->out->len = mark;
        pj->cut = true;
        return;
    }
    pj->n++;
    free(pj->last_id);
    pj->last_id = mem_strndup(ev->id, ev->id_len);
}

size_t poll_json(const char *sse, size_t len, bool whole, size_t max, struct buf *json,
                 bool *cut)
{
    size_t start = json->len;
    struct poll_json pj = {json, 0, start + max, false, NULL};
    char *next = NULL;
    buf_append(json, "{\"events\":[", 11);
    sse_parse(sse, len, on_poll_event, &pj, &next);
    /*
     * Cut, or from a partial copy of the queue, the position is the last
     * event included: an id line of an event left out (or not complete)
     * must not move it past that event.
     */
    const char *pos = (pj.cut || !whole) && pj.last_id ? pj.last_id : next;
    buf_append(json, "],\"next\":", 9);
    json_put_string(json, pos, strlen(pos));
    buf_append(json, "}\n", 2);
    free(next);
    free(pj.last_id);
    *cut = pj.cut;
    return pj.n;
}

static void on_count(void *ctx, const struct sse_parsed *ev)
{
    (void)ev;
    ++*(size_t *)ctx;
}

/* Whether sse holds one whole event (retry and comment blocks are not events). */
static bool has_event(const char *sse, size_t len)
{
    size_t n = 0;
    sse_parse(sse, len, on_count, &n, NULL);
    return n > 0;
}

size_t poll_drain(struct stream *s, size_t max, struct buf *json, bool *partial)
{
    struct buf sse;
    buf_init(&sse);
    size_t want = max > 4096 ? max : 4096;
    bool eof = false, whole = false;
    for (;;) {
        size_t n = stream_pending(s, want - sse.len, &eof);
        stream_copy(s, buf_reserve(&sse, n), n);
        sse.len += n;
        whole = eof || stream_pending(s, 1, &eof) == 0;
        if (whole || has_event((const char *)sse.data, sse.len))
            break;
        want *= 2;
    }
    bool cut = false;
    size_t events = poll_json((const char *)sse.data, sse.len, whole, max, json, &cut);
    buf_dispose(&sse);
    *partial = cut || !whole;
    return events;
}
