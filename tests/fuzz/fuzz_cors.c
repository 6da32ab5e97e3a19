/*
 * libFuzzer target: CORS origin parsing and matching. The input is tried
 * as an Origin against fixed patterns, and as a pattern list (split at
 * NUL) of its own. Property: an origin is allowed only if it is one of the
 * exact patterns or a strict subdomain of a wildcard one, and the allowed
 * origin is echoed back byte for byte.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/cors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fixed[] = {"https://app.example.com", "https://*.example.org",
                                        "http://localhost:8080"};
    struct cors *c = NULL;
    if (cors_new(&c, fixed, 3, true, NULL, 0) == 0) {
        const char *origin = (const char *)data;
        if (cors_check(c, origin, size) == CORS_ALLOWED) {
            /* Schemes and hosts compare without case. */
            bool exact = (size == 23 && strncasecmp(origin, fixed[0], 23) == 0) ||
                         (size == 21 && strncasecmp(origin, fixed[2], 21) == 0);
            bool sub = size > 20 && strncasecmp(origin, "https://", 8) == 0 &&
                       strncasecmp(origin + size - 12, ".example.org", 12) == 0;
            if (!exact && !sub)
                __builtin_trap();
            struct cors_header h[CORS_HEADERS_MAX];
            size_t n = cors_headers(c, CORS_ACTUAL, origin, size, h);
            bool echoed = false;
            for (size_t i = 0; i < n; i++)
                echoed |= h[i].value_len == size && memcmp(h[i].value, origin, size) == 0;
            if (!echoed)
                __builtin_trap();
        }
        cors_free(c);
    }
    /* The input as patterns: must be refused or accepted, never crash. */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *patterns[8];
    size_t np = 0;
    for (char *p = copy; np < 8 && p <= copy + size; p += strlen(p) + 1)
        patterns[np++] = p;
    char err[256];
    if (cors_new(&c, patterns, np, false, err, sizeof(err)) == 0)
        cors_free(c);
    free(copy);
    return 0;
}
