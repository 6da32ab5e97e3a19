/*
 * cors: allowed-origin matching and CORS response headers (see cors.h).
 *
 * Patterns and Origin values go through one parser, so that "what a
 * pattern means" and "what a request says" cannot drift: scheme, host
 * (DNS labels or a bracketed IPv6 literal) and an optional port, nothing
 * else. A request's Origin that does not parse is denied; browsers only
 * send serialized origins, so anything unusual comes from a script or a
 * proxy and gets no benefit of the doubt.
 *
 * Matching is a linear scan over the patterns: a deployment lists a
 * handful, and a hash would not help the wildcard entries anyway.
 * String matching on the raw header ("ends with example.com") was
 * rejected: it lets evil-example.com and example.com.evil.net through.
 */
#include "sluice/cors.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/mem.h"

#define SCHEME_MAX 32
#define HOST_MAX 253
#define LABEL_MAX 63
#define XSTR(x) #x
#define STR(x) XSTR(x)

struct origin {
    const char *scheme; /* not NUL-terminated */
    size_t scheme_len;
    const char *host; /* for a wildcard pattern: the part after "*." */
    size_t host_len;
    long port;     /* explicit or the scheme's default; 0 when neither */
    bool wildcard; /* pattern whose host starts with the label "*" */
};

struct pattern {
    bool any;     /* "*" */
    char *scheme; /* lower case */
    char *host;   /* lower case; the suffix after "*." when wildcard */
    size_t scheme_len, host_len;
    long port;
    bool wildcard;
};

struct cors {
    struct pattern *patterns; /* n entries */
    size_t n;
    bool credentials;
};

/* ASCII only, whatever the process locale: origins are ASCII (IDNs arrive as punycode). */
static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_xdigit(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static char to_lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }
static bool ieq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++)
        if (to_lower(a[i]) != to_lower(b[i]))
            return false;
    return true;
}
static bool label_char(char c) { return is_alpha(c) || is_digit(c) || c == '-' || c == '_'; }

/* Labels of 1..63 host characters separated by single dots; no leading or trailing dot. */
static const char *check_labels(const char *h, size_t n, size_t *nlabels, bool *numeric_tld)
{
    if (n == 0)
        return "empty host";
    if (n > HOST_MAX)
        return "host longer than 253 bytes";
    size_t start = 0;
    *nlabels = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && h[i] != '.') {
            if (!label_char(h[i]))
                return "invalid character in host";
            continue;
        }
        if (i == start)
            return i == n ? "trailing dot or empty label in host" : "empty label in host";
        if (i - start > LABEL_MAX)
            return "host label longer than 63 bytes";
        *numeric_tld = true;
        for (size_t j = start; j < i; j++)
            *numeric_tld &= is_digit(h[j]);
        (*nlabels)++;
        start = i + 1;
    }
    return NULL;
}

static const char *check_ipv6(const char *h, size_t n)
{
    /* h includes the brackets. */
    if (n < 4 || h[n - 1] != ']')
        return "malformed IPv6 literal";
    for (size_t i = 1; i + 1 < n; i++)
        if (!is_xdigit(h[i]) && h[i] != ':' && h[i] != '.')
            return "malformed IPv6 literal";
    return NULL;
}

static long default_port(const char *scheme, size_t n)
{
    if (ieq(scheme, n, "http", 4))
        return 80;
    if (ieq(scheme, n, "https", 5))
        return 443;
    return 0;
}

/*
 * Parses scheme "://" host [":" port] from s (n bytes). pattern allows a
 * leading "*." label. Returns NULL, or a static reason.
 */
static const char *parse_origin(const char *s, size_t n, bool pattern, struct origin *o)
{
    memset(o, 0, sizeof(*o));
    size_t i = 0;
    while (i < n && i <= SCHEME_MAX &&
           (is_alpha(s[i]) ||
            (i > 0 && (is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))))
        i++;
    if (i == 0 || i > SCHEME_MAX || n - i < 3 || memcmp(s + i, "://", 3) != 0)
        return "expected scheme://host";
    o->scheme = s;
    o->scheme_len = i;
    i += 3;
    size_t hstart = i;
    if (pattern && n - i >= 2 && s[i] == '*' && s[i + 1] == '.') {
        o->wildcard = true;
        hstart = i += 2;
    }
    if (i < n && s[i] == '[') {
        const char *close = memchr(s + i, ']', n - i);
        if (!close || o->wildcard)
            return "malformed IPv6 literal";
        i = (size_t)(close - s) + 1;
        const char *why = check_ipv6(s + hstart, i - hstart);
        if (why)
            return why;
    } else {
        while (i < n && s[i] != ':' && s[i] != '/')
            i++;
        size_t nlabels;
        bool numeric = false;
        const char *why = check_labels(s + hstart, i - hstart, &nlabels, &numeric);
        if (why)
            return why;
        if (o->wildcard && (nlabels < 2 || numeric))
            return "a wildcard needs a domain of at least two labels after it";
    }
    o->host = s + hstart;
    o->host_len = i - hstart;
    o->port = default_port(o->scheme, o->scheme_len);
    if (i < n && s[i] == ':') {
        size_t d = ++i;
        long port = 0;
        while (i < n && is_digit(s[i]) && i - d < 5)
            port = port * 10 + (s[i++] - '0');
        if (i == d || s[d] == '0' || port > 65535)
            return "malformed port";
        o->port = port;
    }
    if (i < n)
        return s[i] == '/' ? "an origin has no path (drop the trailing '/')"
                           : "unexpected characters after host";
    return NULL;
}

static bool matches(const struct pattern *p, const struct origin *o)
{
    if (p->any)
        return true;
    if (!ieq(p->scheme, p->scheme_len, o->scheme, o->scheme_len) || p->port != o->port)
        return false;
    if (!p->wildcard)
        return ieq(p->host, p->host_len, o->host, o->host_len);
    /* At least one whole label before ".suffix". */
    if (o->host_len < p->host_len + 2)
        return false;
    size_t cut = o->host_len - p->host_len;
    return o->host[cut - 1] == '.' && ieq(p->host, p->host_len, o->host + cut, p->host_len);
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    if (errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return ERR_INVALID;
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = mem_strndup(s, n);
    for (size_t i = 0; i < n; i++)
        d[i] = to_lower(d[i]);
    return d;
}

int cors_new(struct cors **out, const char *const *origins, size_t n, bool credentials, char *err,
             size_t errlen)
{
    *out = NULL;
    struct cors *c = mem_calloc(1, sizeof(*c));
    c->credentials = credentials;
    c->patterns = mem_calloc(n ? n : 1, sizeof(*c->patterns));
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = origins[i];
        size_t len = strlen(s);
        struct pattern *p = &c->patterns[c->n];
        struct origin o;
        const char *why;
        if (strcmp(s, "*") == 0) {
            if (credentials) {
                rc = fail(err, errlen, "cors origin '*' cannot be combined with credentials");
                goto out;
            }
            p->any = true;
        } else if (ieq(s, len, "null", 4)) {
            rc = fail(err, errlen, "cors origin 'null' is refused: any page can make itself null");
            goto out;
        } else if (len > CORS_ORIGIN_MAX) {
            rc = fail(err, errlen, "cors origin '%.40s...': longer than %d bytes", s,
                      CORS_ORIGIN_MAX);
            goto out;
        } else if ((why = parse_origin(s, len, true, &o))) {
            rc = fail(err, errlen, "cors origin '%.300s': %s", s, why);
            goto out;
        } else {
            p->scheme = lower_dup(o.scheme, o.scheme_len);
            p->scheme_len = o.scheme_len;
            p->host = lower_dup(o.host, o.host_len);
            p->host_len = o.host_len;
            p->port = o.port;
            p->wildcard = o.wildcard;
        }
        c->n++;
    }
out:
    if (rc) {
        cors_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void cors_free(struct cors *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->patterns[i].scheme);
        free(c->patterns[i].host);
    }
    free(c->patterns);
    free(c);
}

bool cors_allowed(const struct cors *c, const char *origin, size_t len)
{
    struct origin o;
    if (!c || !origin || len > CORS_ORIGIN_MAX || parse_origin(origin, len, false, &o))
        return false;
    for (size_t i = 0; i < c->n; i++)
        if (matches(&c->patterns[i], &o))
            return true;
    return false;
}

enum cors_result cors_check(const struct cors *c, const char *origin, size_t len)
{
    if (!origin)
        return CORS_NO_ORIGIN;
    return cors_allowed(c, origin, len) ? CORS_ALLOWED : CORS_DENIED;
}

static void add(struct cors_header *out, size_t *k, const char *name, const char *value,
                size_t vlen)
{
    out[*k] = (struct cors_header){name, strlen(name), value, vlen};
    (*k)++;
}

#define ADD_LIT(out, k, name, value) add(out, k, name, value, sizeof(value) - 1)

size_t cors_headers(const struct cors *c, enum cors_kind kind, const char *origin, size_t len,
                    struct cors_header out[CORS_HEADERS_MAX])
{
    size_t k = 0;
    if (cors_check(c, origin, len) == CORS_ALLOWED) {
        add(out, &k, "access-control-allow-origin", origin, len);
        if (c->credentials)
            ADD_LIT(out, &k, "access-control-allow-credentials", "true");
        /* A request stream's resumable URL, which a page on another origin must read. */
        if (kind == CORS_ACTUAL)
            ADD_LIT(out, &k, "access-control-expose-headers", "content-location");
        /* A Durable Streams client reads offsets, cursors and producer state from headers. */
        if (kind == CORS_DS_ACTUAL)
            ADD_LIT(out, &k, "access-control-expose-headers",
                    "etag, location, producer-epoch, producer-expected-seq, "
                    "producer-received-seq, producer-seq, stream-closed, stream-cursor, "
                    "stream-expires-at, stream-next-offset, stream-sse-data-encoding, "
                    "stream-ttl, stream-up-to-date");
        if (kind == CORS_DS_PREFLIGHT) {
            ADD_LIT(out, &k, "access-control-allow-methods",
                    "GET, HEAD, POST, PUT, DELETE, OPTIONS");
            ADD_LIT(out, &k, "access-control-allow-headers",
                    "authorization, cache-control, content-type, if-none-match, producer-epoch, "
                    "producer-id, producer-seq, stream-closed, stream-expires-at, stream-seq, "
                    "stream-ttl");
            ADD_LIT(out, &k, "access-control-max-age", STR(CORS_MAX_AGE_S));
        }
        if (kind == CORS_PREFLIGHT) {
            /* DELETE cancels a request stream (/streams/r/…). */
            ADD_LIT(out, &k, "access-control-allow-methods", "GET, POST, DELETE, OPTIONS");
            /* last-event-id: EventSource polyfills send it as a header on reconnect. */
            ADD_LIT(out, &k, "access-control-allow-headers",
                    "authorization, cache-control, content-type, last-event-id");
            ADD_LIT(out, &k, "access-control-max-age", STR(CORS_MAX_AGE_S));
        }
    }
    /* Even a denied or origin-less answer depends on Origin, so caches must key on it. */
    ADD_LIT(out, &k, "vary", "origin");
    return k;
}
