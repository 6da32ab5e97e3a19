/*
 * proxy: PROXY protocol v1/v2 header parser (see proxy.h). Written from
 * HAProxy's proxy-protocol.txt: v1 is one text line
 * "PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n" with single spaces and
 * decimal ports; v2 is a 12-byte signature, version/command, family/
 * transport, a 16-bit length and that many bytes of addresses and TLVs.
 */
#include "sluice/proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "sluice/err.h"

static const uint8_t V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char V1_SIG[] = "PROXY ";

/* Whether the n bytes at p could begin sig (siglen bytes). */
static bool starts(const uint8_t *p, size_t n, const void *sig, size_t siglen)
{
    return memcmp(p, sig, n < siglen ? n : siglen) == 0;
}

/* A decimal port: 1 to 5 digits, at most 65535. */
static bool parse_port(const char *s, size_t n, unsigned *port)
{
    if (n == 0 || n > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = v;
    return true;
}

/* An IP of family af in text (n bytes, no NUL); its canonical text in out. */
static bool parse_ip(int af, const char *s, size_t n, char *out)
{
    char text[PROXY_ADDRESS_MAX];
    uint8_t bin[16];
    if (n == 0 || n >= sizeof(text))
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    if (inet_pton(af, text, bin) != 1)
        return false;
    return inet_ntop(af, bin, out, PROXY_ADDRESS_MAX) != NULL;
}

static int parse_v1(const uint8_t *p, size_t n, struct proxy_header *out)
{
    size_t limit = n < PROXY_V1_MAX ? n : PROXY_V1_MAX;
    const uint8_t *lf = memchr(p, '\n', limit);
    if (!lf)
        return n >= PROXY_V1_MAX ? ERR_LIMIT : ERR_AGAIN;
    size_t len = (size_t)(lf - p) + 1;
    if (len < 2 || p[len - 2] != '\r')
        return ERR_PROTO;
    out->version = 1;
    out->len = len;
    const char *line = (const char *)p + sizeof(V1_SIG) - 1;
    size_t rest = len - 2 - (sizeof(V1_SIG) - 1);
    /* Up to six single-space separated fields; a CR or NUL inside is malformed. */
    const char *f[6];
    size_t fl[6], nf = 0, start = 0;
    for (size_t i = 0; i <= rest; i++) {
        if (i < rest && (line[i] == '\r' || line[i] == '\0'))
            return ERR_PROTO;
        if (i == rest || line[i] == ' ') {
            if (nf == 6)
                return ERR_PROTO;
            f[nf] = line + start;
            fl[nf++] = i - start;
            start = i + 1;
        }
    }
    if (fl[0] == 7 && memcmp(f[0], "UNKNOWN", 7) == 0) {
        /* The rest is the sender's business and ignored. */
        out->local = true;
        return 0;
    }
    int af;
    if (fl[0] == 4 && memcmp(f[0], "TCP4", 4) == 0)
        af = AF_INET;
    else if (fl[0] == 4 && memcmp(f[0], "TCP6", 4) == 0)
        af = AF_INET6;
    else
        return ERR_PROTO;
    char dst[PROXY_ADDRESS_MAX];
    unsigned dport;
    /* Exactly the five fields: a doubled or trailing space makes an empty one, refused. */
    if (nf != 5 || !parse_ip(af, f[1], fl[1], out->address) || !parse_ip(af, f[2], fl[2], dst) ||
        !parse_port(f[3], fl[3], &out->port) || !parse_port(f[4], fl[4], &dport)) {
        out->address[0] = '\0';
        out->port = 0;
        return ERR_PROTO;
    }
    return 0;
}

/* Checks that the TLVs in the n bytes at p fill them exactly; their values are skipped. */
static bool tlvs_valid(const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (n < 3)
            return false;
        size_t vlen = (size_t)p[1] << 8 | p[2];
        if (vlen > n - 3)
            return false;
        p += 3 + vlen;
        n -= 3 + vlen;
    }
    return true;
}

static int parse_v2(const uint8_t *p, size_t n, struct proxy_header *out)
{
    if (n < 16)
        return ERR_AGAIN;
    unsigned version = p[12] >> 4, command = p[12] & 0x0F;
    unsigned family = p[13] >> 4, transport = p[13] & 0x0F;
    size_t body = (size_t)p[14] << 8 | p[15];
    if (version != 2 || command > 1 || family > 3 || transport > 2)
        return ERR_PROTO;
    if (16 + body > PROXY_HEADER_MAX)
        return ERR_LIMIT;
    if (n < 16 + body)
        return ERR_AGAIN;
    out->version = 2;
    out->len = 16 + body;
    const uint8_t *b = p + 16;
    size_t addr_len = family == 1 ? 12 : family == 2 ? 36 : family == 3 ? 216 : 0;
    if (body < addr_len || !tlvs_valid(b + addr_len, body - addr_len))
        return ERR_PROTO;
    /* LOCAL: the proxy speaks for itself (health checks); the address block is ignored. */
    if (command == 0 || family == 0 || family == 3) {
        out->local = true;
        return 0;
    }
    if (transport != 1)
        return ERR_PROTO; /* a datagram source on a TCP listener */
    int af = family == 1 ? AF_INET : AF_INET6;
    size_t alen = family == 1 ? 4 : 16;
    if (!inet_ntop(af, b, out->address, sizeof(out->address)))
        return ERR_PROTO;
    out->port = (unsigned)b[2 * alen] << 8 | b[2 * alen + 1];
    return 0;
}

int proxy_parse(const uint8_t *p, size_t n, struct proxy_header *out)
{
    memset(out, 0, sizeof(*out));
    if (n == 0)
        return ERR_AGAIN;
    if (starts(p, n, V2_SIG, sizeof(V2_SIG)))
        return n < sizeof(V2_SIG) ? ERR_AGAIN : parse_v2(p, n, out);
    if (starts(p, n, V1_SIG, sizeof(V1_SIG) - 1))
        return n < sizeof(V1_SIG) - 1 ? ERR_AGAIN : parse_v1(p, n, out);
    return ERR_NOTFOUND;
}
