/*
 * libFuzzer target: the Host rule. Input: allow-list, NUL, host (the rest,
 * NULs included, passed with its length). Checks that the answer does not
 * depend on case or on a port: a name is allowed in upper case exactly
 * when in lower case, and "host:8443" exactly when "host" (for input with
 * no colon and no bracket, where a port can be appended).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t llen = nul ? (size_t)(nul - data) : 0;
    char *list = malloc(llen + 1);
    memcpy(list, data, llen);
    list[llen] = '\0';
    const char *in = (const char *)data + (nul ? llen + 1 : 0);
    size_t n = size - (size_t)(in - (const char *)data);
    char *host = malloc(n + 6);
    memcpy(host, in, n);
    bool got = host_allowed(host, n, list);
    for (size_t i = 0; i < n; i++)
        if (host[i] >= 'a' && host[i] <= 'z')
            host[i] = (char)(host[i] - 32);
    if (host_allowed(host, n, list) != got)
        __builtin_trap();
    if (!memchr(host, ':', n) && !memchr(host, '[', n) && !memchr(host, '\0', n)) {
        memcpy(host + n, ":8443", 5);
        if (host_allowed(host, n + 5, list) != got)
            __builtin_trap();
    }
    free(host);
    free(list);
    return 0;
}
