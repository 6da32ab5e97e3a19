/*
 * libFuzzer target: the Durable Streams route's parsers (src/core/ds.c).
 * The same input goes to each: a stream path must become one subject
 * token of safe bytes only ([A-Za-z0-9_-] and "~XX"), never longer than
 * DS_TOKEN_MAX; an offset that parses formats back to itself; a strict
 * integer that parses prints back to itself; the protocol headers and the
 * producer parser never read past their values; the JSON splitter's spans
 * lie inside the input, in order, without overlap; media types are lower
 * case with one '/' at most DS_HEADER_MAX bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/ds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';

    char tok[DS_TOKEN_MAX + 1];
    if (ds_path_token(s, size, tok) == 0) {
        size_t n = strlen(tok);
        if (n == 0 || n > DS_TOKEN_MAX)
            __builtin_trap();
        for (size_t i = 0; i < n; i++) {
            char c = tok[i];
            int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '_' || c == '-' || c == '~';
            if (!ok)
                __builtin_trap();
        }
    }

    enum ds_offset_kind kind;
    uint64_t seq;
    if (ds_offset_parse(s, size, &kind, &seq) == 0 && kind == DS_OFFSET_SEQ) {
        char back[DS_OFFSET_LEN + 1];
        ds_offset_format(seq, back);
        if (size != DS_OFFSET_LEN || memcmp(back, s, size) != 0)
            __builtin_trap();
    }

    uint64_t v;
    if (ds_parse_uint(s, size, UINT64_MAX, &v) == 0) {
        char back[24];
        int n = snprintf(back, sizeof(back), "%llu", (unsigned long long)v);
        if ((size_t)n != size || memcmp(back, s, size) != 0)
            __builtin_trap();
    }

    struct ds_headers h;
    memset(&h, 0, sizeof(h));
    size_t half = size / 2;
    static const char *const names[] = {"producer-id", "producer-epoch", "producer-seq",
                                        "stream-closed", "stream-seq", "content-type"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        ds_header(&h, names[i], strlen(names[i]), s + (i % 2 ? half : 0), size - half);
    struct ds_producer p;
    bool has;
    if (ds_producer_parse(&h, &p, &has) == 0 && has &&
        (!p.id[0] || p.epoch > DS_JS_INT_MAX || p.seq > DS_JS_INT_MAX))
        __builtin_trap();

    char mt[DS_HEADER_MAX + 1];
    int mn = ds_media_type(s, mt, sizeof(mt));
    if (mn > 0) {
        if ((size_t)mn != strlen(mt) || !strchr(mt, '/'))
            __builtin_trap();
        for (int i = 0; i < mn; i++)
            if (mt[i] >= 'A' && mt[i] <= 'Z')
                __builtin_trap();
    }

    struct ds_span sp[16];
    long k = ds_json_split(s, size, sp, 16);
    size_t end = 0;
    for (long i = 0; i < k && i < 16; i++) {
        if (sp[i].off < end || sp[i].len == 0 || sp[i].off + sp[i].len > size)
            __builtin_trap();
        end = sp[i].off + sp[i].len;
    }

    const char *qv;
    size_t qn;
    if (ds_query(s, size, "offset", &qv, &qn) && (qv < s || qv + qn > s + size))
        __builtin_trap();
    free(s);
    return 0;
}
