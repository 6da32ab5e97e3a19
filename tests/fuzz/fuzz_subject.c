/*
 * libFuzzer target: subject rules. Input: grant, NUL, request, NUL, subject.
 * Checks cover against match: if grant covers request and request matches
 * a subject, grant must match that subject too.
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
    if (gv && sv)
        (void)subject_match(grant, subject);
    free(buf);
    return 0;
}
