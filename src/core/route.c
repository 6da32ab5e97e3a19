/*
 * http: request routing shared by every front end (see route.h). The
 * file is named for what it does; its calls keep the http_ prefix
 * (http_route(), HTTP_EVENTS …), which every caller and test uses.
 *
 * Works on the raw :path so that h2 and HTTP/1.1 agree byte for byte.
 * Percent-decoding happens after splitting the query at '&' and '=', so
 * an encoded '&' or '=' stays part of a value. '+' is kept literally:
 * subjects cannot hold spaces, so form-style '+' decoding could only turn
 * a valid subject into an invalid one.
 */
#include "sluice/route.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/mem.h"
#include "sluice/sse.h"
#include "sluice/subject.h"

static const char EVENTS[] = "/events";
static const char PUBLISH[] = "/publish/";
static const char POLL[] = "/poll";
static const char STREAMS[] = "/streams/";
static const char REPLY[] = "/streams/r/";

int http_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long http_percent_decode(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            s[o++] = s[i];
            continue;
        }
        if (n - i < 3)
            return -1;
        int hi = http_hex_value(s[i + 1]), lo = http_hex_value(s[i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        s[o++] = (char)(hi << 4 | lo);
        i += 2;
    }
    return (long)o;
}

static void fail(struct http_route *r, int status, const char *reason)
{
    r->kind = HTTP_ERROR;
    r->status = status;
    snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

/* Decodes and validates one subject and adds it unless already present. */
static bool add_subject(struct http_route *r, const char *raw, size_t n, bool wildcards)
{
    char *s = mem_strndup(raw, n);
    long len = http_percent_decode(s, n);
    const char *why = "malformed percent-encoding in subject";
    if (len < 0 || memchr(s, '\0', (size_t)len) || !subject_valid(s, (size_t)len, wildcards, &why)) {
        char reason[sizeof(r->reason)];
        snprintf(reason, sizeof(reason), "invalid subject: %s", why);
        fail(r, 400, reason);
        free(s);
        return false;
    }
    s[len] = '\0';
    for (size_t i = 0; i < r->nsubjects; i++) {
        if (strcmp(r->subjects[i], s) == 0) {
            free(s);
            return true;
        }
        /* One message would arrive twice, once per subject: refuse rather than duplicate. */
        if (subject_overlaps(r->subjects[i], s)) {
            char reason[sizeof(r->reason)];
            snprintf(reason, sizeof(reason), "subjects overlap: %.60s and %.60s",
                     r->subjects[i], s);
            fail(r, 400, reason);
            free(s);
            return false;
        }
    }
    if (r->nsubjects == HTTP_MAX_SUBJECTS) {
        fail(r, 400, "too many subjects (at most 64 per stream)");
        free(s);
        return false;
    }
    r->subjects[r->nsubjects++] = s;
    return true;
}

/* n digits at s as a number, or -1. */
static long digits(const char *s, size_t n)
{
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = y / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int64_t)era * 146097 + doe - 719468;
}

bool http_parse_time(const char *s, size_t n, int64_t *ns)
{
    static const char mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return false;
    long y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    long h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && (y % 4 || (y % 100 == 0 && y % 400))) || h < 0 || h > 23 ||
        mi < 0 || mi > 59 || sec < 0 || sec > 60)
        return false;
    size_t i = 19;
    int64_t frac = 0, scale = 1000000000;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (scale > 1) {
                scale /= 10;
                frac += (s[i] - '0') * scale;
            }
            i++;
        }
        if (i == start)
            return false;
    }
    long offset = 0;
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        long oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return false;
        offset = (s[i] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
        i += 6;
    }
    if (i != n)
        return false;
    if (sec == 60) /* a leap second reads as the last second before it */
        sec = 59;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    /* Nanoseconds in an int64_t end in April 2262. */
    if (t <= 0 || t >= INT64_MAX / 1000000000)
        return false;
    *ns = t * 1000000000 + frac;
    return true;
}

static bool parse_query(struct http_route *r, const char *q, size_t n)
{
    while (n > 0) {
        const char *amp = memchr(q, '&', n);
        size_t plen = amp ? (size_t)(amp - q) : n;
        const char *eq = memchr(q, '=', plen);
        size_t klen = eq ? (size_t)(eq - q) : plen;
        const char *v = eq ? eq + 1 : q + plen;
        size_t vlen = plen - klen - (eq ? 1 : 0);
        bool many = r->kind == HTTP_EVENTS || r->kind == HTTP_POLL;
        bool resumes = many || r->kind == HTTP_REPLY;
        const char *key = q;
        if (klen == 5 && memcmp(key, "after", 5) == 0 && r->kind == HTTP_POLL) {
            /* after= is the poll's Last-Event-ID */
            key = "last_event_id";
            klen = 13;
        }
        if (klen == 7 && memcmp(key, "timeout", 7) == 0 && r->kind == HTTP_POLL) {
            char num[16];
            size_t digits = vlen < sizeof(num) - 1 ? vlen : sizeof(num) - 1;
            memcpy(num, v, digits);
            num[digits] = '\0';
            char *end;
            long sec = strtol(num, &end, 10);
            if (digits == 0 || *end || sec < 1 || sec * 1000 > HTTP_POLL_TIMEOUT_MAX_MS) {
                fail(r, 400, "timeout must be 1 to 60 seconds");
                return false;
            }
            r->timeout_ms = (int)sec * 1000;
        } else if (klen == 7 && memcmp(key, "subject", 7) == 0 && many) {
            if (!add_subject(r, v, vlen, true))
                return false;
        } else if (klen == 5 && memcmp(key, "event", 5) == 0 && r->kind == HTTP_PUBLISH) {
            char *name = mem_strndup(v, vlen);
            long len = http_percent_decode(name, vlen);
            if (len <= 0 || !sse_event_name_valid(name, (size_t)len)) {
                free(name);
                fail(r, 400, "invalid event name: 1 to 128 bytes, no line breaks");
                return false;
            }
            name[len] = '\0';
            free(r->event);
            r->event = name;
        } else if (klen == 3 && memcmp(key, "end", 3) == 0 && r->kind == HTTP_PUBLISH) {
            r->end = true;
        } else if (klen == 13 && memcmp(key, "last_event_id", 13) == 0 && resumes) {
            char *id = mem_strndup(v, vlen);
            long len = http_percent_decode(id, vlen);
            if (len < 0) {
                free(id);
                fail(r, 400, "malformed percent-encoding in last_event_id");
                return false;
            }
            id[len] = '\0';
            free(r->last_event_id);
            r->last_event_id = id;
        } else if (klen == 5 && memcmp(key, "since", 5) == 0 && r->kind == HTTP_EVENTS) {
            char t[64];
            long len = -1;
            if (vlen < sizeof(t)) { /* longer is no time: never parse a truncated prefix */
                memcpy(t, v, vlen);
                len = http_percent_decode(t, vlen);
            }
            if (len < 0 || !http_parse_time(t, (size_t)len, &r->since_ns)) {
                fail(r, 400, "since must be an RFC 3339 time, e.g. 2026-11-24T08:00:00Z");
                return false;
            }
        }
        if (!amp)
            break;
        n -= plen + 1;
        q = amp + 1;
    }
    return true;
}

static bool is_method(const char *method, size_t mlen, const char *want)
{
    return mlen == strlen(want) && memcmp(method, want, mlen) == 0;
}

/*
 * A static file: the decoded path must be plain relative segments of safe
 * bytes — no "." or ".." segment, no empty one, no backslash, no control
 * byte, no leading dot (hidden files stay hidden). Anything else is 404, as
 * is a path naming a directory (no listings).
 */
static void route_file(struct http_route *r, const char *method, size_t mlen, const char *path,
                       size_t base)
{
    if (!is_method(method, mlen, "GET")) {
        fail(r, 404, "not found");
        return;
    }
    char *p = mem_strndup(path, base);
    long len = http_percent_decode(p, base);
    bool ok = len > 0 && p[0] == '/';
    if (ok && len == 1) {
        free(p);
        r->file = mem_strdup("index.html");
        r->kind = HTTP_FILE;
        r->status = 200;
        return;
    }
    for (long i = 1; ok && i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        bool seg_start = p[i - 1] == '/';
        if (c < 0x21 || c == 0x7f || c == '\\' || (c == '/' && seg_start) ||
            (c == '.' && seg_start))
            ok = false;
    }
    if (!ok || p[len - 1] == '/') {
        free(p);
        fail(r, 404, "not found");
        return;
    }
    r->file = mem_strndup(p + 1, (size_t)len - 1);
    free(p);
    r->kind = HTTP_FILE;
    r->status = 200;
}

/*
 * A request stream's URL: /streams/r/<owner tag>.<id>, 16 and 32 lower-case
 * hex digits (see reply.h). Anything else names no stream: 404, whoever
 * asks, so a malformed id tells nothing.
 */
static void route_reply(struct http_route *r, const char *method, size_t mlen, const char *tok,
                        size_t n)
{
    bool get = is_method(method, mlen, "GET"), del = is_method(method, mlen, "DELETE");
    if (!get && !del) {
        fail(r, 405, "method not allowed (use GET or DELETE)");
        return;
    }
    bool ok = n == HTTP_STREAM_TOKEN_LEN && tok[16] == '.';
    for (size_t i = 0; ok && i < n; i++)
        ok = i == 16 || (tok[i] >= '0' && tok[i] <= '9') || (tok[i] >= 'a' && tok[i] <= 'f');
    if (!ok) {
        fail(r, 404, "no such stream");
        return;
    }
    r->kind = get ? HTTP_REPLY : HTTP_CANCEL;
    r->status = get ? 200 : 202;
    memcpy(r->stream, tok, n);
    r->stream[n] = '\0';
}

void http_route_request(struct http_route *r, const char *service)
{
    http_route_dispose(r);
    memset(r, 0, sizeof(*r));
    r->kind = HTTP_REQUEST;
    r->status = 200;
    r->subjects[0] = mem_strdup(service);
    r->nsubjects = 1;
}

const char *http_content_type(const char *file)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
        {".svg", "image/svg+xml"},             {".png", "image/png"},
        {".ico", "image/x-icon"},              {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(file, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(dot, types[i][0]) == 0)
            return types[i][1];
    }
    return "application/octet-stream";
}

void http_route(struct http_route *r, const char *method, size_t mlen, const char *path,
                size_t plen)
{
    memset(r, 0, sizeof(*r));
    if (plen > HTTP_PATH_MAX) {
        fail(r, 414, "path too long");
        return;
    }
    const char *qmark = memchr(path, '?', plen);
    size_t base = qmark ? (size_t)(qmark - path) : plen;
    bool events = base >= sizeof(EVENTS) - 1 && memcmp(path, EVENTS, sizeof(EVENTS) - 1) == 0 &&
                  (base == sizeof(EVENTS) - 1 || path[sizeof(EVENTS) - 1] == '/');
    bool publish = base >= sizeof(PUBLISH) - 1 && memcmp(path, PUBLISH, sizeof(PUBLISH) - 1) == 0;
    bool poll = base == sizeof(POLL) - 1 && memcmp(path, POLL, base) == 0;
    bool reply = base >= sizeof(REPLY) - 1 && memcmp(path, REPLY, sizeof(REPLY) - 1) == 0;
    bool request = !reply && base > sizeof(STREAMS) - 1 &&
                   memcmp(path, STREAMS, sizeof(STREAMS) - 1) == 0;
    if (reply) {
        route_reply(r, method, mlen, path + sizeof(REPLY) - 1, base - (sizeof(REPLY) - 1));
        if (r->kind == HTTP_REPLY && qmark)
            parse_query(r, qmark + 1, plen - base - 1);
        return;
    } else if (request || publish) {
        if (!is_method(method, mlen, "POST")) {
            fail(r, 405, "method not allowed (use POST)");
            return;
        }
        r->kind = request ? HTTP_REQUEST : HTTP_PUBLISH;
        size_t skip = request ? sizeof(STREAMS) - 1 : sizeof(PUBLISH) - 1;
        /* One literal subject to publish on or send a request to: a wildcard names none. */
        if (!add_subject(r, path + skip, base - skip, false))
            return;
    } else if (poll) {
        if (!is_method(method, mlen, "GET")) {
            fail(r, 405, "method not allowed (use GET)");
            return;
        }
        r->kind = HTTP_POLL;
        r->timeout_ms = HTTP_POLL_TIMEOUT_MS;
    } else if (events) {
        if (!is_method(method, mlen, "GET")) {
            fail(r, 405, "method not allowed (use GET)");
            return;
        }
        r->kind = HTTP_EVENTS;
        if (base > sizeof(EVENTS) &&
            !add_subject(r, path + sizeof(EVENTS), base - sizeof(EVENTS), true))
            return;
    } else {
        route_file(r, method, mlen, path, base);
        return;
    }
    if (qmark && !parse_query(r, qmark + 1, plen - base - 1))
        return;
    /* `GET /events` alone: the grant's default subjects (server-chosen; request.c decides). */
    if (r->nsubjects == 0 && r->kind != HTTP_EVENTS) {
        fail(r, 400, "no subject: use /poll?subject=<subject>");
        return;
    }
    r->status = r->kind == HTTP_PUBLISH ? 202 : 200;
}

void http_route_dispose(struct http_route *r)
{
    for (size_t i = 0; i < r->nsubjects; i++)
        free(r->subjects[i]);
    free(r->last_event_id);
    free(r->event);
    free(r->file);
    r->file = NULL;
    r->nsubjects = 0;
    r->last_event_id = NULL;
    r->since_ns = 0;
    r->event = NULL;
    r->end = false;
}
