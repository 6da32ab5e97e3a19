/*
 * libFuzzer target: the PROXY protocol header parser. Input: the first
 * bytes of a connection. Checks the parser's promises: a complete header
 * lies within the input and its length never exceeds PROXY_HEADER_MAX;
 * every proper prefix of an accepted header asks for more (ERR_AGAIN),
 * so a header cut by the network is never judged early; extra bytes after
 * it (TLS, HTTP) change nothing; an address comes with !local only.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxy_header ph, again;
    int rc = proxy_parse(data, size, &ph);
    if (rc != 0 && rc != ERR_AGAIN && rc != ERR_NOTFOUND && rc != ERR_LIMIT && rc != ERR_PROTO)
        __builtin_trap();
    if (rc != 0)
        return 0;
    if (ph.len == 0 || ph.len > size || ph.len > PROXY_HEADER_MAX)
        __builtin_trap();
    if (ph.local != (ph.address[0] == '\0'))
        __builtin_trap();
    /* The header alone, in a buffer of exactly its size, says the same. */
    uint8_t *copy = malloc(ph.len);
    memcpy(copy, data, ph.len);
    if (proxy_parse(copy, ph.len, &again) != 0 || memcmp(&ph, &again, sizeof(ph)) != 0)
        __builtin_trap();
    for (size_t i = 0; i < ph.len; i++)
        if (proxy_parse(copy, i, &again) != ERR_AGAIN)
            __builtin_trap();
    free(copy);
    return 0;
}
