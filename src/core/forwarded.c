/*
 * forwarded: trusted networks and the Forwarded / X-Forwarded-For walk
 * (see forwarded.h).
 *
 * Both headers are read from the right without parsing what lies left of
 * the answer. X-Forwarded-For splits at commas. Forwarded splits at commas
 * outside quoted strings, found from the right: a quote not escaped by a
 * backslash toggles "inside"; an element so cut is then parsed from its
 * start with the full grammar (pairs `token=value` split at ';', the value
 * a token or a quoted string, for= at most once). Empty list entries are
 * skipped, as RFC 9110's list rule allows.
 */
#include "sluice/forwarded.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/err.h"
#include "sluice/mem.h"

#define NODE_MAX 128 /* bytes of one unquoted for= value */

struct ip {
    int af;          /* AF_INET (IPv4-mapped IPv6 included) or AF_INET6 */
    uint8_t b[16];   /* network order; 4 bytes used for AF_INET */
};

struct net {
    struct ip ip;
    unsigned bits;   /* prefix length; <= 32 or 128 */
};

struct forwarded_nets {
    size_t n;
    struct net net[FORWARDED_NETS_MAX];
};

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *n)
{
    while (*n && is_ows(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_ows((*s)[*n - 1]))
        (*n)--;
}

/* A bare IP (n bytes, no brackets, no port) into *ip; IPv4-mapped becomes IPv4. */
static bool parse_ip(const char *s, size_t n, struct ip *ip)
{
    char text[FORWARDED_ADDRESS_MAX];
    if (n == 0 || n >= sizeof(text))
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    memset(ip, 0, sizeof(*ip));
    if (inet_pton(AF_INET, text, ip->b) == 1) {
        ip->af = AF_INET;
        return true;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, text, &a6) != 1)
        return false;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
        ip->af = AF_INET;
        memcpy(ip->b, &a6.s6_addr[12], 4);
    } else {
        ip->af = AF_INET6;
        memcpy(ip->b, a6.s6_addr, 16);
    }
    return true;
}

/* A port after ':': digits (at most 65535) or an obfuscated "_..." (RFC 7239 6.3). */
static bool valid_port(const char *s, size_t n)
{
    if (n == 0 || n > 32)
        return false;
    if (s[0] == '_') {
        for (size_t i = 1; i < n; i++) {
            char c = s[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '.' || c == '_' || c == '-'))
                return false;
        }
        return true;
    }
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 5)
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535;
}

/*
 * A node: "1.2.3.4", "1.2.3.4:80", "[2001:db8::1]", "[2001:db8::1]:80",
 * or a bare IPv6 address (X-Forwarded-For writes them so). 1 with *ip set,
 * 0 for "unknown" or an obfuscated name ("_..."), -1 when malformed.
 */
static int parse_node(const char *s, size_t n, struct ip *ip)
{
    const char *host = s, *port = NULL;
    size_t hlen = n, plen = 0;
    if (n && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return -1;
        host = s + 1;
        hlen = (size_t)(close - s) - 1;
        size_t after = n - (size_t)(close - s) - 1;
        if (after) {
            if (close[1] != ':')
                return -1;
            port = close + 2;
            plen = after - 1;
        }
        struct ip tmp;
        if (!parse_ip(host, hlen, &tmp) || tmp.af != AF_INET6)
            return -1;
    } else {
        const char *colon = memchr(s, ':', n);
        /* One colon: IPv4 or a name with a port. More: a bare IPv6 address. */
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1)) {
            hlen = (size_t)(colon - s);
            port = colon + 1;
            plen = n - hlen - 1;
        }
    }
    if (port && !valid_port(port, plen))
        return -1;
    if (hlen == 7 && memcmp(host, "unknown", 7) == 0)
        return 0;
    if (hlen > 1 && host[0] == '_') {
        for (size_t i = 1; i < hlen; i++) {
            char c = host[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '.' || c == '_' || c == '-'))
                return -1;
        }
        return 0;
    }
    return parse_ip(host, hlen, ip) ? 1 : -1;
}

static bool in_net(const struct net *net, const struct ip *ip)
{
    if (net->ip.af != ip->af)
        return false;
    unsigned bits = net->bits;
    for (unsigned i = 0; bits > 0; i++) {
        unsigned take = bits < 8 ? bits : 8;
        uint8_t mask = (uint8_t)(0xFF00u >> take);
        if ((net->ip.b[i] & mask) != (ip->b[i] & mask))
            return false;
        bits -= take;
    }
    return true;
}

static bool contains(const struct forwarded_nets *nets, const struct ip *ip)
{
    for (size_t i = 0; nets && i < nets->n; i++)
        if (in_net(&nets->net[i], ip))
            return true;
    return false;
}

bool forwarded_nets_contains(const struct forwarded_nets *n, const char *text)
{
    struct ip ip;
    return n && text && parse_ip(text, strlen(text), &ip) && contains(n, &ip);
}

size_t forwarded_nets_count(const struct forwarded_nets *n) { return n ? n->n : 0; }

void forwarded_nets_free(struct forwarded_nets *n) { free(n); }

int forwarded_nets_parse(const char *list, struct forwarded_nets **out, char *err, size_t errlen)
{
    struct forwarded_nets *nets = mem_calloc(1, sizeof(*nets));
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *e = p;
        size_t elen = n;
        trim(&e, &elen);
        p += n + (p[n] == ',');
        if (!elen)
            continue;
        const char *slash = memchr(e, '/', elen);
        size_t iplen = slash ? (size_t)(slash - e) : elen;
        struct net net;
        bool ok = parse_ip(e, iplen, &net.ip);
        unsigned max = ok && net.ip.af == AF_INET ? 32 : 128;
        net.bits = max;
        if (ok && slash) {
            size_t blen = elen - iplen - 1;
            unsigned v = 0;
            ok = blen >= 1 && blen <= 3;
            for (size_t i = 0; ok && i < blen; i++) {
                ok = slash[1 + i] >= '0' && slash[1 + i] <= '9';
                v = v * 10 + (unsigned)(slash[1 + i] - '0');
            }
            /* An IPv4-mapped network ("::ffff:10.0.0.0/104") is its IPv4 network. */
            if (ok && net.ip.af == AF_INET && memchr(e, ':', iplen)) {
                ok = v >= 96;
                v -= ok ? 96 : 0;
            }
            ok = ok && v <= max;
            net.bits = v;
        }
        if (ok && nets->n == FORWARDED_NETS_MAX) {
            snprintf(err, errlen, "more than %d networks", FORWARDED_NETS_MAX);
            free(nets);
            return ERR_INVALID;
        }
        if (!ok) {
            snprintf(err, errlen, "'%.*s' is not an IP address or CIDR network", (int)elen, e);
            free(nets);
            return ERR_INVALID;
        }
        nets->net[nets->n++] = net;
    }
    *out = nets;
    return 0;
}

static void ip_text(const struct ip *ip, char *out, size_t outlen)
{
    char text[FORWARDED_ADDRESS_MAX];
    inet_ntop(ip->af, ip->b, text, sizeof(text));
    snprintf(out, outlen, "%s", text);
}

/*
 * One hop's verdict in the walk: 1 done (the client is in out), 0 go on
 * left (a trusted proxy: remembered as the answer should every hop be one),
 * or the walk's error.
 */
static int hop(const struct forwarded_nets *trusted, int node, const struct ip *ip,
               struct ip *leftmost, bool *have_leftmost)
{
    if (node < 0)
        return ERR_INVALID;
    if (node == 0)
        return ERR_NOTFOUND;
    if (!contains(trusted, ip))
        return 1;
    *leftmost = *ip;
    *have_leftmost = true;
    return 0;
}

static bool tchar(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/*
 * One Forwarded element (n bytes): its for= node. 1 with *ip, 0 no usable
 * address (none given, "unknown", obfuscated), -1 malformed.
 */
static int element_for(const char *s, size_t n, struct ip *ip)
{
    int found = 0; /* 0: no for= yet */
    int node = 0;
    size_t i = 0;
    while (i <= n) {
        /* One pair, up to the next ';' outside quotes. */
        while (i < n && is_ows(s[i]))
            i++;
        if (i == n)
            break;
        if (s[i] == ';') {
            i++;
            continue;
        }
        size_t name = i;
        while (i < n && tchar(s[i]))
            i++;
        size_t nlen = i - name;
        if (!nlen || i == n || s[i] != '=')
            return -1;
        i++;
        char value[NODE_MAX];
        size_t vlen = 0;
        if (i < n && s[i] == '"') {
            for (i++;; i++) {
                if (i == n)
                    return -1;
                char c = s[i];
                if (c == '"')
                    break;
                if (c == '\\') {
                    if (++i == n)
                        return -1;
                    c = s[i];
                }
                if ((unsigned char)c < 0x20 && c != '\t')
                    return -1;
                if (vlen == sizeof(value))
                    return -1;
                value[vlen++] = c;
            }
            i++;
        } else {
            while (i < n && tchar(s[i])) {
                if (vlen == sizeof(value))
                    return -1;
                value[vlen++] = s[i++];
            }
            if (!vlen)
                return -1;
        }
        while (i < n && is_ows(s[i]))
            i++;
        if (i < n && s[i] != ';')
            return -1;
        i++;
        if (nlen == 3 && strncasecmp(s + name, "for", 3) == 0) {
            if (found)
                return -1; /* RFC 7239 4: each parameter at most once per element */
            found = 1;
            node = parse_node(value, vlen, ip);
            if (node < 0)
                return -1;
        }
    }
    return found ? node : 0;
}

/*
 * Walks v's comma-separated elements right to left (the hop nearest us
 * first), each parsed by node_of: for X-Forwarded-For a bare node, for
 * Forwarded an element whose commas inside quoted strings do not split it.
 */
static int walk(const struct forwarded_nets *trusted, const char *v, bool quotes,
                int (*node_of)(const char *s, size_t n, struct ip *ip), struct ip *client)
{
    size_t end = strlen(v), hops = 0;
    bool have = false;
    for (;;) {
        if (end == 0 || hops == FORWARDED_HOPS_MAX)
            return have && end == 0 ? 0 : ERR_NOTFOUND;
        /* The element's start: the last comma (outside a quoted string). */
        size_t start = end;
        bool quoted = false;
        while (start > 0) {
            char c = v[start - 1];
            if (quotes && c == '"' && !(start >= 2 && v[start - 2] == '\\'))
                quoted = !quoted;
            else if (c == ',' && !quoted)
                break;
            start--;
        }
        if (quoted)
            return ERR_INVALID;
        const char *e = v + start;
        size_t n = end - start;
        end = start ? start - 1 : 0;
        trim(&e, &n);
        if (!n)
            continue;
        hops++;
        struct ip ip;
        int rc = hop(trusted, node_of(e, n, &ip), &ip, client, &have);
        if (rc == 1) {
            *client = ip;
            return 0;
        }
        if (rc < 0)
            return rc;
    }
}

int forwarded_client(const struct forwarded_nets *trusted, const char *forwarded,
                     const char *xff, char *out, size_t outlen)
{
    struct ip client;
    int rc;
    if (forwarded)
        rc = walk(trusted, forwarded, true, element_for, &client);
    else if (xff)
        rc = walk(trusted, xff, false, parse_node, &client);
    else
        return ERR_NOTFOUND;
    if (rc == 0)
        ip_text(&client, out, outlen);
    return rc;
}
