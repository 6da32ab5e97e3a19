/* libFuzzer target: request routing. Input: method, NUL, path. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sluice/route.h"
#include "sluice/subject.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    const char *nul = memchr(in, '\0', size);
    size_t mlen = nul ? (size_t)(nul - in) : 0;
    const char *path = nul ? nul + 1 : in;
    size_t plen = size - (nul ? mlen + 1 : 0);
    struct http_route r;
    http_route(&r, in, mlen, path, plen);
    if (r.kind == HTTP_EVENTS) {
        /*
         * Every routed subject must be one the validator accepts. None is
         * `GET /events` alone: the grant's default subjects (server-chosen).
         */
        if (r.nsubjects > HTTP_MAX_SUBJECTS)
            __builtin_trap();
        for (size_t i = 0; i < r.nsubjects; i++) {
            if (!subject_valid(r.subjects[i], strlen(r.subjects[i]), true, NULL))
                __builtin_trap();
        }
        /* A since= time is after 1970 (and before 2262: the parser must not overflow). */
        if (r.since_ns < 0)
            __builtin_trap();
    } else if (r.kind == HTTP_FILE) {
        /* A static path never climbs out: no "." or ".." segment, no empty one. */
        if (r.file[0] == '/' || r.file[0] == '.' || strstr(r.file, "/.") || strstr(r.file, "//") ||
            strchr(r.file, '\\'))
            __builtin_trap();
    } else if (r.kind != HTTP_ERROR) {
        /* publish and poll carry subjects like events. */
        if (r.nsubjects == 0)
            __builtin_trap();
    } else if (strchr(r.reason, '\n') || r.status < 400) {
        __builtin_trap();
    }
    http_route_dispose(&r);
    return 0;
}
