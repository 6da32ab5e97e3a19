/*
 * ds: Durable Streams paths, offsets and headers (see ds.h).
 *
 * A stream path becomes ONE subject token, escaped byte by byte, rather
 * than one token per path segment: per-segment tokens would let the
 * segments of one path and the producer id after it run together, and a
 * client's wildcard over a segment prefix would span other people's
 * streams. Escaping with '~' keeps the token readable and URL-safe, so
 * the same stream is reachable as /events/<prefix>.d.<token> without a
 * second layer of percent-encoding.
 *
 * Parsers are strict: the protocol asks for integers without sign, leading
 * zeros or exponents, and a header a server cannot read is a 400, never a
 * guess.
 */
#include "sluice/ds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/route.h"

static bool plain(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

int ds_path_token(const char *p, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = 0, o = 0, seg = 0; /* decoded bytes; out bytes; decoded bytes of this segment */
    bool dots = true;               /* the segment so far is dots only */
    if (n == 0)
        return ERR_INVALID;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || p[i] == '/') {
            /* An empty, "." or ".." segment: a path a proxy may rewrite to another stream. */
            if (seg == 0 || (dots && seg <= 2))
                return ERR_INVALID;
            if (i == n)
                break;
            seg = 0;
            dots = true;
        }
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            int hi = i + 2 < n ? http_hex_value(p[i + 1]) : -1;
            int lo = i + 2 < n ? http_hex_value(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return ERR_INVALID;
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        }
        if (c == 0)
            return ERR_INVALID;
        if (++len > DS_PATH_MAX)
            return ERR_LIMIT;
        if (c != '/') {
            seg++;
            dots &= c == '.';
        }
        if (plain(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '~';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

void ds_offset_format(uint64_t seq, char *out)
{
    snprintf(out, DS_OFFSET_LEN + 1, "%016llu", (unsigned long long)seq);
}

int ds_offset_parse(const char *s, size_t n, enum ds_offset_kind *kind, uint64_t *seq)
{
    *seq = 0;
    if (n == 2 && memcmp(s, "-1", 2) == 0) {
        *kind = DS_OFFSET_START;
        return 0;
    }
    if (n == 3 && memcmp(s, "now", 3) == 0) {
        *kind = DS_OFFSET_NOW;
        return 0;
    }
    /*
     * The reference server's first offset, which its conformance suite
     * writes by hand as "the start" (clients should never construct one):
     * taken as an alias of -1, never produced.
     */
    static const char ref_start[] = "0000000000000000_0000000000000000";
    if (n == sizeof(ref_start) - 1 && memcmp(s, ref_start, n) == 0) {
        *kind = DS_OFFSET_START;
        return 0;
    }
    if (n != DS_OFFSET_LEN)
        return ERR_INVALID;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return ERR_INVALID;
        v = v * 10 + (uint64_t)(s[i] - '0'); /* 16 digits fit: < 10^16 */
    }
    *kind = DS_OFFSET_SEQ;
    *seq = v;
    return 0;
}

int ds_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        return ERR_INVALID;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return ERR_INVALID;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (max - d) / 10)
            return ERR_INVALID;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

bool ds_is_true(const char *s, size_t n)
{
    static const char t[] = "true";
    if (n != 4)
        return false;
    for (size_t i = 0; i < 4; i++) {
        char c = s[i] >= 'A' && s[i] <= 'Z' ? (char)(s[i] + 32) : s[i];
        if (c != t[i])
            return false;
    }
    return true;
}

static bool is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && memcmp(name, want, nlen) == 0;
}

static void keep(struct ds_headers *h, char *slot, bool *has, const char *v, size_t vlen)
{
    if (vlen > DS_HEADER_MAX) {
        h->too_long = true;
        return;
    }
    memcpy(slot, v, vlen);
    slot[vlen] = '\0';
    *has = true;
}

bool ds_header(struct ds_headers *h, const char *name, size_t nlen, const char *value,
               size_t vlen)
{
    if (is(name, nlen, "content-type"))
        keep(h, h->content_type, &h->has_content_type, value, vlen);
    else if (is(name, nlen, "stream-ttl"))
        keep(h, h->ttl, &h->has_ttl, value, vlen);
    else if (is(name, nlen, "stream-expires-at"))
        keep(h, h->expires_at, &h->has_expires_at, value, vlen);
    else if (is(name, nlen, "stream-seq"))
        keep(h, h->stream_seq, &h->has_stream_seq, value, vlen);
    else if (is(name, nlen, "producer-id"))
        keep(h, h->producer_id, &h->has_producer_id, value, vlen);
    else if (is(name, nlen, "producer-epoch"))
        keep(h, h->producer_epoch, &h->has_producer_epoch, value, vlen);
    else if (is(name, nlen, "producer-seq"))
        keep(h, h->producer_seq, &h->has_producer_seq, value, vlen);
    else if (is(name, nlen, "if-none-match"))
        keep(h, h->if_none_match, &h->has_if_none_match, value, vlen);
    else if (is(name, nlen, "stream-forked-from"))
        keep(h, h->forked_from, &h->has_fork, value, vlen);
    else if (is(name, nlen, "stream-fork-offset"))
        keep(h, h->fork_offset, &h->has_fork_offset, value, vlen);
    else if (is(name, nlen, "stream-fork-sub-offset"))
        keep(h, h->fork_sub_offset, &h->has_fork_sub_offset, value, vlen);
    else if (is(name, nlen, "stream-closed"))
        h->closed = ds_is_true(value, vlen);
    else
        return false;
    return true;
}

int ds_producer_parse(const struct ds_headers *h, struct ds_producer *p, bool *has)
{
    int n = h->has_producer_id + h->has_producer_epoch + h->has_producer_seq;
    *has = false;
    if (n == 0)
        return 0;
    if (n != 3 || !h->producer_id[0])
        return ERR_INVALID;
    if (ds_parse_uint(h->producer_epoch, strlen(h->producer_epoch), DS_JS_INT_MAX, &p->epoch) ||
        ds_parse_uint(h->producer_seq, strlen(h->producer_seq), DS_JS_INT_MAX, &p->seq))
        return ERR_INVALID;
    p->id = h->producer_id;
    *has = true;
    return 0;
}

int ds_media_type(const char *ct, char *out, size_t outsz)
{
    size_t o = 0;
    bool slash = false;
    const char *p = ct;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p) {
        snprintf(out, outsz, "application/octet-stream");
        return (int)strlen(out);
    }
    for (; *p && *p != ';'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f)
            return ERR_INVALID;
        if (c == ' ' || c == '\t')
            continue;
        if (o + 1 >= outsz)
            return ERR_INVALID;
        slash |= c == '/';
        out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[o] = '\0';
    if (!slash || out[0] == '/' || out[o - 1] == '/')
        return ERR_INVALID;
    return (int)o;
}

bool ds_is_json(const char *mt) { return strcmp(mt, "application/json") == 0; }

bool ds_sse_text(const char *mt) { return strncmp(mt, "text/", 5) == 0 || ds_is_json(mt); }

uint64_t ds_cursor(int64_t now_s, const char *client, size_t clen, uint32_t rnd)
{
    const int64_t epoch = 1728432000; /* 2024-10-09T00:00:00Z */
    uint64_t cur = now_s > epoch ? (uint64_t)((now_s - epoch) / 20) : 0;
    uint64_t theirs;
    if (client && ds_parse_uint(client, clen, UINT64_MAX / 2, &theirs) == 0 && theirs >= cur)
        return theirs + 1 + rnd % 180;
    return cur;
}

bool ds_query(const char *q, size_t n, const char *key, const char **v, size_t *vlen)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && q[end] != '&')
            end++;
        if (end - i >= klen && memcmp(q + i, key, klen) == 0 &&
            (end - i == klen || q[i + klen] == '=')) {
            size_t s = end - i == klen ? end : i + klen + 1;
            *v = q + s;
            *vlen = end - s;
            return true;
        }
        i = end + 1;
    }
    return false;
}

static bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The end of the JSON value at s[i] (n bytes): past its last byte, or n + 1 when unbalanced. */
static size_t value_end(const char *s, size_t n, size_t i)
{
    size_t depth = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            if (i >= n)
                return n + 1;
            if (depth == 0)
                return i + 1;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (depth == 0)
                return i; /* the end of the enclosing container */
            if (--depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ',' || space(c))) {
            return i;
        }
    }
    return depth ? n + 1 : n;
}

long ds_json_split(const char *s, size_t n, struct ds_span *out, size_t max)
{
    size_t a = 0, b = n;
    while (a < b && space(s[a]))
        a++;
    while (b > a && space(s[b - 1]))
        b--;
    if (a == b)
        return ERR_INVALID;
    if (s[a] != '[') {
        if (max)
            out[0] = (struct ds_span){a, b - a};
        return 1;
    }
    if (s[b - 1] != ']')
        return ERR_INVALID;
    long count = 0;
    size_t i = a + 1, end = b - 1;
    for (;;) {
        while (i < end && space(s[i]))
            i++;
        if (i == end)
            return count == 0 ? 0 : ERR_INVALID; /* "[]", or a trailing comma */
        size_t e = value_end(s, end, i);
        if (e > end || e == i)
            return ERR_INVALID;
        if ((size_t)count < max)
            out[count] = (struct ds_span){i, e - i};
        count++;
        i = e;
        while (i < end && space(s[i]))
            i++;
        if (i == end)
            return count;
        if (s[i] != ',')
            return ERR_INVALID;
        i++;
    }
}

char *ds_jetstream_list(const char *list, const char *stream)
{
    size_t n = strlen(list), sl = strlen(stream);
    char *out = malloc(n + sl + 2);
    if (!out)
        abort();
    memcpy(out, list, n + 1);
    if (strcmp(list, "*") == 0)
        return out;
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        if (k == sl && memcmp(p, stream, sl) == 0)
            return out;
        p += k + (p[k] == ',');
    }
    snprintf(out + n, sl + 2, "%s%s", n ? "," : "", stream);
    return out;
}
