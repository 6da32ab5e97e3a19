/*
 * cors: which web origins may use the gateway from a browser, and the
 * response headers that say so (pure).
 *
 * An allowed origin is configured as scheme://host[:port] (no path, no
 * trailing slash), or as "*" for any origin (refused with credentials).
 * The host is
 *   app.example.com    exactly this host
 *   *.example.com      any subdomain, one or more labels deep
 *                      (a.example.com, a.b.example.com), never
 *                      example.com itself nor evil-example.com
 *   [::1], 127.0.0.1   an IP literal, exactly
 * so "https://app.example.com" and "http://localhost:3000" are patterns,
 * and a wildcard one is the scheme, "://", then "*.example.com".
 * Scheme and host compare case-insensitively; the port must be the same,
 * an absent port meaning 80 for http and 443 for https. A host with a
 * trailing dot ("example.com.") is a different origin to a browser, and
 * matches nothing. "null" (sandboxed frames, file: pages) is never
 * allowed, and refused as a pattern: any page can make itself "null".
 * A wildcard needs at least two labels after it ("*.com" is refused).
 *
 * For the front ends, per request:
 *   - cors_check() with the Origin header (NULL when there is none; more
 *     than one Origin field counts as disallowed).
 *   - CORS_DENIED: answer 403. Browsers send Origin on every cross-origin
 *     request, and POST /publish with a text/plain body is a "simple"
 *     request that a browser sends without a preflight, cookies included;
 *     refusing here, not only withholding the headers, is what stops a
 *     foreign page from publishing with a user's cookie.
 *   - OPTIONS with Origin and Access-Control-Request-Method is a
 *     preflight: answer 204 with cors_headers(CORS_PREFLIGHT, ...).
 *   - Any other answer (the SSE 200, errors, 401/403 of auth) carries
 *     cors_headers(CORS_ACTUAL, ...), so that the page can read it.
 * With no origins configured (or a NULL struct cors), every request that
 * carries an Origin header is denied; requests without one (curl,
 * servers, same-origin GETs) pass.
 *
 * The allow-origin value echoes the request's Origin (never "*", so that
 * credentials work and caches key on it: hence vary: origin).
 */
#ifndef SLUICE_CORS_H
#define SLUICE_CORS_H

#include <stdbool.h>
#include <stddef.h>

#define CORS_ORIGIN_MAX 512 /* longer Origin values are denied unparsed */
#define CORS_HEADERS_MAX 7  /* entries cors_headers() may fill */
#define CORS_MAX_AGE_S 600

struct cors;

enum cors_result {
    CORS_NO_ORIGIN, /* no Origin header: not a cross-origin browser request */
    CORS_ALLOWED,
    CORS_DENIED, /* answer 403 */
};

enum cors_kind {
    CORS_ACTUAL,    /* any response other than a preflight's */
    CORS_PREFLIGHT, /* the 204 answer to OPTIONS with Access-Control-Request-Method */
    /* The same for the Durable Streams route: its methods and protocol headers. */
    CORS_DS_ACTUAL,
    CORS_DS_PREFLIGHT,
};

/* One response header; name is lower case (as HTTP/2 requires) and static. */
struct cors_header {
    const char *name;
    size_t name_len;
    const char *value; /* static, or borrowed from the origin passed in */
    size_t value_len;
};

/*
 * Parses n allowed-origin patterns (nothing is kept of origins).
 * credentials: cookies and Authorization may be sent cross-origin
 * (access-control-allow-credentials: true). 0, or ERR_INVALID with a
 * one-line reason naming the bad pattern in err.
 */
int cors_new(struct cors **out, const char *const *origins, size_t n, bool credentials, char *err,
             size_t errlen);
/* cors_free(NULL) does nothing. */
void cors_free(struct cors *c);

/* True when origin (len bytes, no NUL needed) matches an allowed pattern. */
bool cors_allowed(const struct cors *c, const char *origin, size_t len);
/* origin NULL means the request had no Origin header. c may be NULL (nothing allowed). */
enum cors_result cors_check(const struct cors *c, const char *origin, size_t len);

/*
 * Fills out with the headers for a response to a request whose Origin is
 * origin (NULL when absent); returns how many (at most CORS_HEADERS_MAX).
 * Always `vary: origin`; when the origin is allowed also
 *   access-control-allow-origin: <origin, echoed>
 *   access-control-allow-credentials: true      (when configured)
 * and for CORS_PREFLIGHT
 *   access-control-allow-methods: GET, POST, OPTIONS
 *   access-control-allow-headers: authorization, cache-control, content-type, last-event-id
 *   access-control-max-age: 600
 * Values may point into origin: use them before origin goes away.
 */
size_t cors_headers(const struct cors *c, enum cors_kind kind, const char *origin, size_t len,
                    struct cors_header out[CORS_HEADERS_MAX]);

#endif
