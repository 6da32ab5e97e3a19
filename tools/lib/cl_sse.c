/*
 * cl_sse: see cl_sse.h for the data flow. The hot path (a DATA frame of
 * whole lines) touches no buffer but `data`: complete lines are processed
 * where they lie, and only a line cut by a piece boundary is copied.
 */
#include "cl_sse.h"

#include <string.h>

void cl_sse_init(struct cl_sse *p, const struct cl_sse_callbacks *cb, void *ctx)
{
    *p = (struct cl_sse){.cb = cb, .ctx = ctx};
}

static bool field_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

static void dispatch(struct cl_sse *p)
{
    /* The last event id is taken even when no event follows (WHATWG). */
    if (p->has_id) {
        cl_buf_set(&p->last_id, p->id_buf.p, p->id_buf.len);
        p->has_last_id = true;
    }
    if (p->data.len > 0 && p->cb->on_event) {
        struct cl_sse_event ev = {
            .data = p->data.p,
            .data_len = p->data.len - 1, /* the LF after the last data line */
            .type = p->type.len ? p->type.p : "",
            .type_len = p->type.len,
            .id = p->has_last_id ? p->last_id.p : "",
            .id_len = p->has_last_id ? p->last_id.len : 0,
            .has_id = p->has_last_id,
        };
        if (!ev.id)
            ev.id = ""; /* an empty id was set: no bytes were ever allocated */
        p->cb->on_event(p->ctx, &ev);
    }
    p->data.len = 0;
    p->type.len = 0;
}

static void process_line(struct cl_sse *p, const char *line, size_t len)
{
    if (len == 0) {
        dispatch(p);
        return;
    }
    if (line[0] == ':') {
        if (p->cb->on_comment)
            p->cb->on_comment(p->ctx, line + 1, len - 1);
        return;
    }
    const char *colon = memchr(line, ':', len);
    size_t name_len = colon ? (size_t)(colon - line) : len;
    const char *v = colon ? colon + 1 : line + len;
    size_t vlen = (size_t)(line + len - v);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (field_is(line, name_len, "data")) {
        cl_buf_append(&p->data, v, vlen);
        cl_buf_append(&p->data, "\n", 1);
    } else if (field_is(line, name_len, "event")) {
        cl_buf_set(&p->type, v, vlen);
    } else if (field_is(line, name_len, "id")) {
        if (!memchr(v, '\0', vlen)) {
            cl_buf_set(&p->id_buf, v, vlen);
            p->has_id = true;
        }
    } else if (field_is(line, name_len, "retry")) {
        if (p->cb->on_retry)
            p->cb->on_retry(p->ctx, v, vlen);
    }
}

static void end_line(struct cl_sse *p, const char *s, size_t n)
{
    if (p->line.len == 0) {
        process_line(p, s, n);
        return;
    }
    cl_buf_append(&p->line, s, n);
    process_line(p, p->line.p, p->line.len);
    p->line.len = 0;
}

static void parse_lines(struct cl_sse *p, const char *s, size_t n)
{
    size_t i = 0;
    if (p->cr_pending && n > 0) {
        p->cr_pending = false;
        if (s[0] == '\n')
            i = 1;
    }
    size_t start = i;
    for (; i < n; i++) {
        if (s[i] != '\r' && s[i] != '\n')
            continue;
        end_line(p, s + start, i - start);
        if (s[i] == '\r') {
            if (i + 1 == n)
                p->cr_pending = true;
            else if (s[i + 1] == '\n')
                i++;
        }
        start = i + 1;
    }
    if (start < n)
        cl_buf_append(&p->line, s + start, n - start);
}

void cl_sse_feed(struct cl_sse *p, const char *s, size_t n)
{
    /* One leading U+FEFF is not part of the stream (WHATWG); its bytes may
     * be split across pieces, so a partial match is held and replayed. */
    static const char bom[3] = {'\xEF', '\xBB', '\xBF'};
    while (p->bom < 3 && n > 0) {
        if (s[0] == bom[p->bom]) {
            p->bom++;
            s++;
            n--;
            continue;
        }
        uint8_t held = p->bom;
        p->bom = 3;
        parse_lines(p, bom, held);
    }
    parse_lines(p, s, n);
}

void cl_sse_restart(struct cl_sse *p)
{
    p->line.len = p->data.len = p->type.len = p->id_buf.len = 0;
    p->has_id = p->cr_pending = false;
    p->bom = 0;
}

void cl_sse_release(struct cl_sse *p)
{
    cl_buf_dispose(&p->line);
    cl_buf_dispose(&p->data);
    cl_buf_dispose(&p->type);
    cl_buf_dispose(&p->id_buf);
}

void cl_sse_dispose(struct cl_sse *p)
{
    cl_sse_release(p);
    cl_buf_dispose(&p->last_id);
    p->has_last_id = false;
}

const char *cl_sse_last_id(const struct cl_sse *p, size_t *len)
{
    if (!p->has_last_id)
        return NULL;
    *len = p->last_id.len;
    return p->last_id.p ? p->last_id.p : "";
}

bool cl_sse_retry_ms(const char *value, size_t len, uint32_t *ms)
{
    uint64_t r = 0;
    size_t i = 0;
    while (i < len && value[i] >= '0' && value[i] <= '9') {
        r = r * 10 + (uint64_t)(value[i] - '0');
        if (r > UINT32_MAX)
            r = UINT32_MAX;
        i++;
    }
    if (len == 0 || i != len)
        return false;
    *ms = (uint32_t)r;
    return true;
}
