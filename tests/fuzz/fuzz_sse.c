/*
 * libFuzzer target: event encoding. Input: event name, NUL, payload.
 * Checks the property that matters: whatever the payload, the body is
 * exactly one event (one blank line, at its end) made only of event: and
 * data: fields.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    sse_event_unref(ev);
    free(name);
    return 0;
}
