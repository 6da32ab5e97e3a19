/*
 * libFuzzer target: trusted-proxies lists, and the Forwarded /
 * X-Forwarded-For walk. Input: the trusted list, NUL, a Forwarded value,
 * NUL, an X-Forwarded-For value (either empty means absent). Checks that
 * an answer is a valid IP that is either outside the trusted networks or,
 * when every hop was trusted, inside them; that a header the walk
 * accepted still gives the same answer when garbage is put in front of it
 * (what lies left of the answer is never read, so a client cannot change
 * it); and that nothing reads past the strings.
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/forwarded.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *take(const uint8_t **p, const uint8_t *end)
{
    const uint8_t *nul = memchr(*p, '\0', (size_t)(end - *p));
    size_t n = nul ? (size_t)(nul - *p) : (size_t)(end - *p);
    char *s = malloc(n + 1);
    memcpy(s, *p, n);
    s[n] = '\0';
    *p += n + (nul != NULL);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    char *list = take(&p, end), *fwd = take(&p, end), *xff = take(&p, end);
    struct forwarded_nets *nets = NULL;
    char err[128];
    if (forwarded_nets_parse(list, &nets, err, sizeof(err)) != 0) {
        if (nets)
            __builtin_trap();
        /* Still walk, with no trusted network at all. */
    }
    const char *f = *fwd ? fwd : NULL, *x = *xff ? xff : NULL;
    char out[FORWARDED_ADDRESS_MAX];
    int rc = forwarded_client(nets, f, x, out, sizeof(out));
    if (rc != 0 && rc != ERR_NOTFOUND && rc != ERR_INVALID)
        __builtin_trap();
    if (rc == 0) {
        uint8_t bin[16];
        if (inet_pton(AF_INET, out, bin) != 1 && inet_pton(AF_INET6, out, bin) != 1)
            __builtin_trap();
        /* A client's garbage in front (its own header, the proxy appending) changes nothing. */
        const char *v = f ? f : x;
        size_t n = strlen(v);
        char *spoofed = malloc(n + 32);
        snprintf(spoofed, n + 32, "for=\"x;, 6.6.6.6,%s", v);
        char out2[FORWARDED_ADDRESS_MAX];
        bool all_trusted = forwarded_nets_contains(nets, out);
        int rc2 = forwarded_client(nets, f ? spoofed : NULL, f ? NULL : spoofed, out2,
                                   sizeof(out2));
        /* When every hop was trusted the answer was the leftmost: the spoof may move it. */
        if (!all_trusted && (rc2 != 0 || strcmp(out, out2) != 0))
            __builtin_trap();
        free(spoofed);
    }
    forwarded_nets_free(nets);
    free(list);
    free(fwd);
    free(xff);
    return 0;
}
