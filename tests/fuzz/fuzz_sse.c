/*
 * libFuzzer target: event encoding. Input: event name, NUL, payload.
 * Checks the properties that matter: whatever the payload, the body is
 * exactly one event (one blank line, at its end) made only of event: and
 * data: fields, and a WHATWG parser reads back the payload (line ends
 * normalised to LF) and the event name.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct rt {
    int count;
    char *data, *event;
    size_t data_len, event_len;
};

static void on_event(void *ctx, const struct sse_parsed *ev)
{
    struct rt *rt = ctx;
    rt->count++;
    free(rt->data);
    free(rt->event);
    rt->data = malloc(ev->data_len + 1);
    memcpy(rt->data, ev->data, ev->data_len);
    rt->data_len = ev->data_len;
    rt->event = malloc(ev->event_len + 1);
    memcpy(rt->event, ev->event, ev->event_len);
    rt->event_len = ev->event_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nul = memchr(data, '\0', size < 200 ? size : 200);
    char *name = NULL;
    const uint8_t *payload = data;
    size_t plen = size;
    if (nul) {
        name = strndup((const char *)data, (size_t)(nul - (const char *)data));
        payload = (const uint8_t *)nul + 1;
        plen = size - (size_t)(payload - data);
    }
    struct sse_event *ev = sse_event_new(1, 1, name, payload, plen);
    if (ev->len != sse_encoded_len(name, payload, plen) || ev->len < 2)
        __builtin_trap();
    const char *b = ev->body;
    size_t n = ev->len;
    if (b[n - 1] != '\n' || b[n - 2] != '\n')
        __builtin_trap();
    for (size_t i = 0; i < n - 1;) {
        const char *end = memchr(b + i, '\n', n - 1 - i);
        if (!end)
            __builtin_trap();
        size_t len = (size_t)(end - (b + i));
        if (memchr(b + i, '\r', len))
            __builtin_trap();
        if (!(len >= 6 && memcmp(b + i, "data: ", 6) == 0) &&
            !(i == 0 && len >= 7 && memcmp(b, "event: ", 7) == 0))
            __builtin_trap();
        i += len + 1;
    }
    /* Round trip: a WHATWG parser reads back exactly one event with the payload's lines. */
    struct rt rt = {0};
    char *expect = malloc(plen + 1);
    size_t elen = 0;
    for (size_t i = 0; i < plen; i++) {
        if (payload[i] == '\r' && i + 1 < plen && payload[i + 1] == '\n')
            continue;
        expect[elen++] = payload[i] == '\r' ? '\n' : (char)payload[i];
    }
    sse_parse(ev->body, ev->len, on_event, &rt, NULL);
    if (rt.count != 1 || rt.data_len != elen || memcmp(rt.data, expect, elen) != 0)
        __builtin_trap();
    size_t kept = sse_encoded_len(name, "", 0) > sse_encoded_len(NULL, "", 0);
    if (kept ? (rt.event_len != strlen(name) || memcmp(rt.event, name, rt.event_len) != 0)
             : rt.event_len != 0)
        __builtin_trap();
    free(rt.data);
    free(rt.event);
    free(expect);
    sse_event_unref(ev);
    free(name);
    return 0;
}
