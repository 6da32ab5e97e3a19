/*
 * libFuzzer target: subject rules. Input: grant, NUL, request, NUL, subject.
 * Checks cover against match: if grant covers request and request matches
 * a subject, grant must match that subject too. Overlap is symmetric, and
 * a subject matched by both patterns proves they overlap. Reserved
 * subjects ($..., _INBOX): no grant without a reserved first token covers
 * one, a reserved pattern matches only reserved subjects, and an empty
 * allow-list allows exactly the unreserved.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/subject.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 3);
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';
    char *grant = buf;
    char *request = grant + strlen(grant) + 1;
    char *subject = request + strlen(request) + 1;
    if (subject > buf + size)
        subject = buf + size;
    bool gv = subject_valid(grant, strlen(grant), true, NULL);
    bool rv = subject_valid(request, strlen(request), true, NULL);
    bool sv = subject_valid(subject, strlen(subject), false, NULL);
    if (gv && rv && subject_covers(grant, request)) {
        if (sv && subject_match(request, subject) && !subject_match(grant, subject))
            __builtin_trap();
    }
    if (gv && rv) {
        bool o = subject_overlaps(grant, request);
        if (o != subject_overlaps(request, grant))
            __builtin_trap();
        if (sv && !o && subject_match(grant, subject) && subject_match(request, subject))
            __builtin_trap();
    }
    if (gv && rv && subject_reserved(request) && !subject_reserved(grant) &&
        subject_covers(grant, request))
        __builtin_trap();
    if (rv && sv && subject_reserved(request) && subject_match(request, subject) &&
        !subject_reserved(subject))
        __builtin_trap();
    if (rv && subject_allowed("", request) == subject_reserved(request))
        __builtin_trap();
    if (rv && subject_allowed(grant, request) && subject_reserved(request) &&
        !(gv && subject_covers(grant, request)) && !strchr(grant, ','))
        __builtin_trap();
    free(buf);
    return 0;
}
