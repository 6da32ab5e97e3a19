/*
 * sse: event encoding (see sse.h for the design).
 *
 * sse_encoded_len() and the encoder walk the payload with the same line
 * splitting, so the body is allocated once at its exact size.
 */
#include "sluice/sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

static const char DATA[] = "data: ";
static const char EVENT[] = "event: ";

static size_t name_len(const char *name)
{
    if (!name)
        return 0;
    size_t n = strnlen(name, SSE_EVENT_NAME_MAX + 1);
    if (n == 0 || n > SSE_EVENT_NAME_MAX || strpbrk(name, "\r\n"))
        return 0;
    return n;
}

/* Bytes of the data: lines for p, split at CRLF, LF and lone CR; writes them to out unless NULL. */
static size_t walk_lines(const char *p, size_t len, char *out)
{
    size_t total = 0;
    size_t start = 0;
    for (size_t i = 0;; i++) {
        if (i < len && p[i] != '\n' && p[i] != '\r')
            continue;
        size_t n = i - start;
        if (out) {
            memcpy(out + total, DATA, sizeof(DATA) - 1);
            if (n) /* p may be NULL for an empty payload */
                memcpy(out + total + sizeof(DATA) - 1, p + start, n);
            out[total + sizeof(DATA) - 1 + n] = '\n';
        }
        total += sizeof(DATA) - 1 + n + 1;
        if (i >= len)
            break;
        if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')
            i++;
        start = i + 1;
    }
    return total;
}

size_t sse_encoded_len(const char *name, const void *data, size_t len)
{
    size_t nl = name_len(name);
    size_t ev = nl ? sizeof(EVENT) - 1 + nl + 1 : 0;
    return ev + walk_lines(data, len, NULL) + 1;
}

struct sse_event *sse_event_new(uint64_t sub_id, uint64_t seq, const char *name,
                                const void *data, size_t len)
{
    size_t total = sse_encoded_len(name, data, len);
    struct sse_event *ev = mem_alloc(sizeof(*ev) + total);
    atomic_init(&ev->refs, 1);
    ev->sub_id = sub_id;
    ev->seq = seq;
    ev->len = (uint32_t)total;
    char *o = ev->body;
    size_t nl = name_len(name);
    if (nl) {
        memcpy(o, EVENT, sizeof(EVENT) - 1);
        o += sizeof(EVENT) - 1;
        memcpy(o, name, nl);
        o += nl;
        *o++ = '\n';
    }
    o += walk_lines(data, len, o);
    *o = '\n';
    return ev;
}

struct sse_event *sse_event_ref(struct sse_event *ev)
{
    atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
    return ev;
}

void sse_event_unref(struct sse_event *ev)
{
    if (ev && atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) == 1)
        free(ev);
}

size_t sse_format_retry(char *out, unsigned retry_ms)
{
    return (size_t)snprintf(out, SSE_LINE_MAX, "retry: %u\n\n", retry_ms);
}

size_t sse_format_comment(char *out, const char *text)
{
    /* ": " + text + "\n\n" + NUL must fit. */
    size_t n = strnlen(text, SSE_LINE_MAX - 5);
    out[0] = ':';
    out[1] = ' ';
    memcpy(out + 2, text, n);
    out[2 + n] = '\n';
    out[3 + n] = '\n';
    out[4 + n] = '\0';
    return n + 4;
}
