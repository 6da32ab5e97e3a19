/*
 * host: the Host / :authority rule against DNS rebinding (see host.h).
 *
 * Parsed by hand and strictly: the port must be digits, a bracket must
 * hold an IPv6 literal, and a name must be letters, digits, '-' and '.'.
 * Rejected: a suffix match ("*.example.com") — an operator lists the
 * names they serve; a wildcard is one more thing to get wrong.
 */
#include "sluice/host.h"

#include <arpa/inet.h>
#include <string.h>

#define HOST_NAME_MAX_LEN 253

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* Case-insensitive equality, each side with one trailing dot ignored. */
static bool name_eq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an && a[an - 1] == '.')
        an--;
    if (bn && b[bn - 1] == '.')
        bn--;
    if (an != bn || an == 0)
        return false;
    for (size_t i = 0; i < an; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

static bool in_list(const char *name, size_t n, const char *list)
{
    for (const char *p = list ? list : ""; *p;) {
        size_t k = strcspn(p, ",");
        if (name_eq(name, n, p, k))
            return true;
        p += k + (p[k] == ',');
    }
    return false;
}

static bool is_name_char(char c)
{
    c = lower(c);
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

bool host_allowed(const char *host, size_t len, const char *list)
{
    if (!host || len == 0 || len > HOST_NAME_MAX_LEN + 8)
        return false;
    char buf[HOST_NAME_MAX_LEN + 9];
    const char *end = host + len, *port = NULL;
    if (host[0] == '[') {
        const char *close = memchr(host, ']', len);
        if (!close || close - host - 1 >= INET6_ADDRSTRLEN)
            return false;
        if (close + 1 < end && close[1] != ':')
            return false;
        port = close + 1 < end ? close + 2 : NULL;
        memcpy(buf, host + 1, (size_t)(close - host - 1));
        buf[close - host - 1] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, buf, &a6) != 1)
            return false;
    } else {
        const char *colon = memchr(host, ':', len);
        size_t n = colon ? (size_t)(colon - host) : len;
        if (colon)
            port = colon + 1;
        for (size_t i = 0; i < n; i++)
            if (!is_name_char(host[i]))
                return false;
        memcpy(buf, host, n);
        buf[n] = '\0';
        if (n && buf[n - 1] == '.')
            buf[n - 1] = '\0';
        struct in_addr a4;
        bool ok = inet_pton(AF_INET, buf, &a4) == 1 || name_eq(host, n, "localhost", 9) ||
                  in_list(host, n, list);
        if (!ok)
            return false;
    }
    if (port) {
        /* "host:" (empty port) is allowed by RFC 3986; more than five digits is not a port. */
        if (end - port > 5)
            return false;
        for (const char *p = port; p < end; p++)
            if (*p < '0' || *p > '9')
                return false;
    }
    return true;
}
