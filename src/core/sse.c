/*
 * sse: event encoding (see sse.h for the design).
 *
 * sse_encoded_len() and the encoder walk the payload with the same line
 * splitting, so the body is allocated once at its exact size.
 */
#include "sluice/sse.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"

static const char DATA[] = "data: ";
static const char EVENT[] = "event: ";

bool sse_event_name_valid(const char *name, size_t len)
{
    return len > 0 && len <= SSE_EVENT_NAME_MAX && !memchr(name, '\r', len) &&
           !memchr(name, '\n', len) && !memchr(name, '\0', len);
}

/* The length of a name worth an event: line, or 0 to leave it out. */
static size_t name_len(const char *name)
{
    size_t n = name ? strnlen(name, SSE_EVENT_NAME_MAX + 1) : 0;
    return sse_event_name_valid(name, n) ? n : 0;
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

/* An event with one reference and room for len body bytes, not yet written. */
static struct sse_event *event_alloc(uint64_t sub_id, uint64_t seq, size_t len)
{
    struct sse_event *ev = mem_alloc(sizeof(*ev) + len);
    atomic_init(&ev->refs, 1);
    ev->sub_id = sub_id;
    ev->seq = seq;
    ev->time_ns = 0;
    ev->end = false;
    ev->refused = false;
    ev->len = (uint32_t)len;
    return ev;
}

struct sse_event *sse_event_new(uint64_t sub_id, uint64_t seq, const char *name,
                                const void *data, size_t len)
{
    size_t total = sse_encoded_len(name, data, len);
    struct sse_event *ev = event_alloc(sub_id, seq, total);
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

struct sse_event *sse_event_new_end(uint64_t sub_id, uint64_t seq)
{
    struct sse_event *ev = event_alloc(sub_id, seq, 0);
    ev->end = true;
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

/* Applies slot i's pending change and frees the slot. */
static void refs_apply(struct sse_refs *r, unsigned i)
{
    struct sse_event *ev = r->ev[i];
    int64_t d = r->delta[i];
    r->ev[i] = NULL;
    r->delta[i] = 0;
    if (d > 0)
        atomic_fetch_add_explicit(&ev->refs, (unsigned)d, memory_order_relaxed);
    else if (d < 0 &&
             atomic_fetch_sub_explicit(&ev->refs, (unsigned)-d, memory_order_acq_rel) ==
                 (unsigned)-d)
        free(ev);
}

void sse_refs_change(struct sse_refs *r, struct sse_event *ev, int64_t d)
{
    unsigned i = r->last;
    if (r->ev[i] != ev) {
        unsigned free_slot = SSE_REFS_SLOTS;
        for (i = 0; i < SSE_REFS_SLOTS && r->ev[i] != ev; i++) {
            if (!r->ev[i] && free_slot == SSE_REFS_SLOTS)
                free_slot = i;
        }
        if (i == SSE_REFS_SLOTS) {
            if (free_slot == SSE_REFS_SLOTS) {
                free_slot = r->victim;
                r->victim = (r->victim + 1) % SSE_REFS_SLOTS;
                refs_apply(r, free_slot);
            }
            i = free_slot;
            r->ev[i] = ev;
        }
        r->last = i;
    }
    r->delta[i] += d;
}

void sse_refs_flush(struct sse_refs *r)
{
    for (unsigned i = 0; i < SSE_REFS_SLOTS; i++) {
        if (r->ev[i])
            refs_apply(r, i);
    }
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

size_t sse_format_u64(char *out, uint64_t v)
{
    /* Two digits per division, from a table of the hundred pairs, written backwards. */
    static const char pairs[] =
        "0001020304050607080910111213141516171819"
        "2021222324252627282930313233343536373839"
        "4041424344454647484950515253545556575859"
        "6061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    char tmp[SSE_U64_DIGITS_MAX];
    char *p = tmp + sizeof(tmp);
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        *--p = pairs[d + 1];
        *--p = pairs[d];
    }
    if (v >= 10) {
        *--p = pairs[v * 2 + 1];
        *--p = pairs[v * 2];
    } else {
        *--p = (char)('0' + v);
    }
    size_t n = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(out, p, n);
    return n;
}

struct field_buf {
    char *p;
    size_t len, cap;
};

static void fb_set(struct field_buf *f, const char *v, size_t n, bool append)
{
    size_t base = append ? f->len : 0;
    if (base + n + 1 > f->cap) {
        f->cap = (base + n + 1) * 2;
        f->p = mem_realloc(f->p, f->cap);
    }
    if (n)
        memcpy(f->p + base, v, n);
    f->len = base + n;
    f->p[f->len] = '\0';
}

void sse_parse(const char *buf, size_t len, sse_parsed_fn *cb, void *ctx, char **last_id)
{
    struct field_buf id = {0}, type = {0}, data = {0};
    fb_set(&id, "", 0, false);
    fb_set(&type, "", 0, false);
    fb_set(&data, "", 0, false);
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && buf[end] != '\n' && buf[end] != '\r')
            end++;
        if (end == len)
            break; /* an unterminated last line is not a line yet */
        const char *line = buf + i;
        size_t n = end - i;
        i = end + (buf[end] == '\r' && end + 1 < len && buf[end + 1] == '\n' ? 2 : 1);
        if (n == 0) {
            if (data.len) {
                struct sse_parsed ev = {id.p, type.p, data.p, id.len, type.len, data.len - 1};
                cb(ctx, &ev);
            }
            fb_set(&type, "", 0, false);
            fb_set(&data, "", 0, false);
            continue;
        }
        if (line[0] == ':')
            continue;
        const char *colon = memchr(line, ':', n);
        size_t nl = colon ? (size_t)(colon - line) : n;
        const char *v = colon ? colon + 1 : line + n;
        size_t vl = colon ? n - nl - 1 : 0;
        if (vl && *v == ' ') {
            v++;
            vl--;
        }
        if (nl == 4 && memcmp(line, "data", 4) == 0) {
            fb_set(&data, v, vl, true);
            fb_set(&data, "\n", 1, true);
        } else if (nl == 5 && memcmp(line, "event", 5) == 0) {
            fb_set(&type, v, vl, false);
        } else if (nl == 2 && memcmp(line, "id", 2) == 0 && !memchr(v, '\0', vl)) {
            fb_set(&id, v, vl, false);
        }
    }
    if (last_id)
        *last_id = mem_strdup(id.p);
    free(id.p);
    free(type.p);
    free(data.p);
}
