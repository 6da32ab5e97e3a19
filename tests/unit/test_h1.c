/*
 * test_h1: the HTTP/1.1 request-head parser and the chunked decoder.
 *
 * Every head goes through parse_all(), which parses it three ways: all at
 * once, one byte more per call (each prefix copied into a heap buffer of
 * exactly its length, so a sanitizer build catches any read past len), and
 * in two pieces at every split point; all must agree on the code, the
 * status, the reason and the parsed request. Chunked bodies are likewise
 * decoded at once, byte by byte and in place, and must agree.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/h1_parse.h"

#define ESC_MAX 512

/* Printable form of bytes for failure messages, cut at ESC_MAX. */
static const char *escape(char out[ESC_MAX], const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < ESC_MAX; i++) {
        if (s[i] == '\n') {
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\n");
        } else if (s[i] == '\r') {
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\r");
        } else if (s[i] < 0x20 || s[i] >= 0x7f) {
            o += (size_t)snprintf(out + o, ESC_MAX - o, "\\x%02x", s[i]);
        } else {
            out[o++] = (char)s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* A heap copy of exactly n bytes (at least one byte allocated). */
static char *exact_copy(const void *p, size_t n)
{
    char *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* A result made independent of the buffer it came from. */
struct outcome {
    int rc, status;
    const char *reason;
    struct h1_request req; /* when rc == 0 */
    uintptr_t base;        /* the buffer req points into, and its length */
    size_t len;
};

static void outcome_set(struct outcome *o, int rc, const struct h1_parser *p,
                        const struct h1_request *req, const char *buf, size_t len)
{
    memset(o, 0, sizeof(*o));
    o->rc = rc;
    if (rc == ERR_PROTO || rc == ERR_LIMIT) {
        o->status = p->status;
        o->reason = p->reason;
    }
    if (rc == 0)
        o->req = *req;
    o->base = (uintptr_t)buf;
    o->len = len;
}

/* A slice as an offset into its outcome's buffer; anything else (NULL, the static "/") as is. */
static uintptr_t where(struct h1_str s, const struct outcome *o)
{
    uintptr_t a = (uintptr_t)s.p;
    return (s.p && a >= o->base && a <= o->base + o->len) ? a - o->base : a | 1u << 31;
}

static bool slice_equal(struct h1_str a, const struct outcome *oa, struct h1_str b,
                        const struct outcome *ob)
{
    return a.len == b.len && where(a, oa) == where(b, ob);
}

static bool req_equal(const struct outcome *a, const struct outcome *b)
{
    const struct h1_request *x = &a->req, *y = &b->req;
    if (x->minor != y->minor || x->body != y->body || x->content_length != y->content_length ||
        x->keep_alive != y->keep_alive || x->expect_continue != y->expect_continue ||
        x->upgrade_h2c != y->upgrade_h2c || x->head_len != y->head_len ||
        x->nheaders != y->nheaders)
        return false;
    if (!slice_equal(x->method, a, y->method, b) || !slice_equal(x->target, a, y->target, b) ||
        !slice_equal(x->authority, a, y->authority, b) || !slice_equal(x->host, a, y->host, b) ||
        !slice_equal(x->upgrade, a, y->upgrade, b) ||
        !slice_equal(x->http2_settings, a, y->http2_settings, b))
        return false;
    for (size_t k = 0; k < x->nheaders; k++) {
        if (!slice_equal(x->headers[k].name, a, y->headers[k].name, b) ||
            !slice_equal(x->headers[k].value, a, y->headers[k].value, b))
            return false;
    }
    return true;
}

static void outcome_equal(const struct outcome *a, const struct outcome *b, const char *how,
                          const char *in, size_t n)
{
    char e[ESC_MAX];
    if (a->rc != b->rc || a->status != b->status || a->reason != b->reason ||
        (a->rc == 0 && !req_equal(a, b)))
        fail_msg("\"%s\": %s gives rc %d status %d (%s), at once rc %d status %d (%s)",
                 escape(e, in, n), how, b->rc, b->status, b->reason ? b->reason : "-", a->rc,
                 a->status, a->reason ? a->reason : "-");
}

static const struct h1_limits *test_limits;

/* Parses in[0..n) at once, byte by byte and in two pieces; all must agree. */
static struct outcome parse_all(const char *in, size_t n)
{
    struct h1_parser p;
    struct h1_request req;
    struct outcome once, other;

    char *buf = exact_copy(in, n);
    h1_parser_init(&p, test_limits);
    int rc = h1_parse(&p, buf, n, &req);
    outcome_set(&once, rc, &p, &req, buf, n);
    /* Asking again gives the same answer. */
    if (rc != ERR_AGAIN) {
        int again = h1_parse(&p, buf, n, &req);
        outcome_set(&other, again, &p, &req, buf, n);
        outcome_equal(&once, &other, "a second call", in, n);
    }
    free(buf);

    /* Byte by byte, each prefix in its own exact-size buffer. */
    h1_parser_init(&p, test_limits);
    rc = ERR_AGAIN;
    for (size_t k = 0; k <= n && rc == ERR_AGAIN; k++) {
        buf = exact_copy(in, k);
        rc = h1_parse(&p, buf, k, &req);
        if (rc != ERR_AGAIN || k == n) {
            outcome_set(&other, rc, &p, &req, buf, k);
            outcome_equal(&once, &other, "byte by byte", in, n);
        }
        free(buf);
    }

    /* Two pieces, at every split. */
    for (size_t k = 0; k <= n; k++) {
        h1_parser_init(&p, test_limits);
        rc = h1_parse(&p, in, k, &req);
        if (rc == ERR_AGAIN)
            rc = h1_parse(&p, in, n, &req);
        outcome_set(&other, rc, &p, &req, in, n);
        outcome_equal(&once, &other, "two pieces", in, n);
    }
    return once;
}

/* Parses a head that must succeed; slices in *req point into the static in. */
static struct h1_request parse_ok_n(const char *in, size_t n)
{
    struct outcome o = parse_all(in, n);
    char e[ESC_MAX];
    if (o.rc != 0)
        fail_msg("\"%s\": rc %d status %d (%s), want success", escape(e, in, n), o.rc, o.status,
                 o.reason ? o.reason : "-");
    struct h1_parser p;
    struct h1_request req;
    h1_parser_init(&p, test_limits);
    assert_int_equal(h1_parse(&p, in, n, &req), 0);
    assert_true(req.head_len <= n);
    return req;
}

#define PARSE_OK(lit) parse_ok_n((lit), sizeof(lit) - 1)

/* Parses a head that must be refused with status. */
static void check_reject_n(const char *in, size_t n, int status)
{
    struct outcome o = parse_all(in, n);
    char e[ESC_MAX];
    int want_rc = (status == 413 || status == 414 || status == 431) ? ERR_LIMIT : ERR_PROTO;
    if (o.rc != want_rc || o.status != status)
        fail_msg("\"%s\": rc %d status %d (%s), want rc %d status %d", escape(e, in, n), o.rc,
                 o.status, o.reason ? o.reason : "-", want_rc, status);
    assert_non_null(o.reason);
    assert_true(strlen(o.reason) > 0);
    assert_null(strpbrk(o.reason, "\r\n"));
}

#define REJECT(lit, status) check_reject_n((lit), sizeof(lit) - 1, (status))

static void check_incomplete_n(const char *in, size_t n)
{
    struct outcome o = parse_all(in, n);
    char e[ESC_MAX];
    if (o.rc != ERR_AGAIN)
        fail_msg("\"%s\": rc %d status %d, want ERR_AGAIN", escape(e, in, n), o.rc, o.status);
}

#define INCOMPLETE(lit) check_incomplete_n((lit), sizeof(lit) - 1)

static void assert_str(struct h1_str s, const char *want)
{
    assert_non_null(s.p);
    if (s.len != strlen(want) || memcmp(s.p, want, s.len) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.p, want);
}

static void assert_header(const struct h1_request *r, const char *name, const char *want)
{
    const struct h1_str *v = h1_header(r, name);
    if (!v)
        fail_msg("no header %s", name);
    assert_str(*v, want);
}

/* Heads. */

static void test_get_minimal(void **state)
{
    (void)state;
    struct h1_request r = PARSE_OK("GET /events/a.b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_str(r.method, "GET");
    assert_str(r.target, "/events/a.b?x=1");
    assert_null(r.authority.p);
    assert_str(r.host, "example.com");
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.body, H1_BODY_NONE);
    assert_int_equal(r.content_length, 0);
    assert_true(r.keep_alive);
    assert_false(r.expect_continue);
    assert_false(r.upgrade_h2c);
    assert_null(r.upgrade.p);
    assert_int_equal(r.nheaders, 1);
    assert_str(r.headers[0].name, "Host");
    assert_int_equal(r.head_len,
                     sizeof("GET /events/a.b?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n") - 1);
}

static void test_post_content_length(void **state)
{
    (void)state;
    static const char in[] = "POST /publish/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
                             "Expect: 100-continue\r\n\r\nhello";
    struct h1_request r = PARSE_OK(in);
    assert_str(r.method, "POST");
    assert_int_equal(r.body, H1_BODY_LENGTH);
    assert_int_equal(r.content_length, 5);
    assert_true(r.expect_continue);
    assert_int_equal(r.head_len, sizeof(in) - 1 - 5);
    assert_memory_equal(in + r.head_len, "hello", 5);

    r = PARSE_OK("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(r.body, H1_BODY_LENGTH);
    assert_int_equal(r.content_length, 0);
    r = PARSE_OK("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n");
    assert_true(r.content_length == UINT64_MAX);
    /* Repeated lines that agree are one length. */
    r = PARSE_OK("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\ncontent-length: 007\r\n\r\n");
    assert_int_equal(r.content_length, 7);
}

static void test_post_chunked(void **state)
{
    (void)state;
    struct h1_request r =
        PARSE_OK("POST /publish/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(r.body, H1_BODY_CHUNKED);
    r = PARSE_OK("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n");
    assert_int_equal(r.body, H1_BODY_CHUNKED);
}

static void test_options_star(void **state)
{
    (void)state;
    struct h1_request r = PARSE_OK("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_str(r.method, "OPTIONS");
    assert_str(r.target, "*");
    REJECT("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("options * HTTP/1.1\r\nHost: h\r\n\r\n", 400); /* methods are case-sensitive */
}

static void test_absolute_form(void **state)
{
    (void)state;
    struct h1_request r =
        PARSE_OK("GET http://Example.com:8080/events/a?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_str(r.target, "/events/a?x=1");
    assert_str(r.authority, "Example.com:8080");
    assert_str(r.host, "Example.com:8080"); /* RFC 9112 3.2.2: the target's authority wins */
    r = PARSE_OK("GET HTTPS://h/ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_str(r.target, "/");
    assert_str(r.authority, "h");
    r = PARSE_OK("OPTIONS http://[::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
    assert_str(r.target, "/");
    assert_str(r.authority, "[::1]:80");
    /* HTTP/1.0 needs no Host; the authority still gives one. */
    r = PARSE_OK("GET http://h/x HTTP/1.0\r\n\r\n");
    assert_str(r.host, "h");

    REJECT("GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET http://user@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET http:/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET http://h/a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET events HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void test_connect_not_implemented(void **state)
{
    (void)state;
    REJECT("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501);
}

static void test_keep_alive_defaults(void **state)
{
    (void)state;
    assert_true(PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
    assert_false(PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
    assert_false(PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive);
    assert_true(PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert_false(PARSE_OK("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert_true(PARSE_OK("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    /* close wins, in one line or across several. */
    assert_false(PARSE_OK("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    assert_false(PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n"
                          "Connection: close\r\n\r\n")
                     .keep_alive);
    /* Empty list elements are ignored (RFC 9110 5.6.1); other tokens too. */
    assert_false(
        PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: , TE,,close ,\r\n\r\n").keep_alive);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep alive\r\n\r\n", 400);
}

static void test_http10_host_optional(void **state)
{
    (void)state;
    struct h1_request r = PARSE_OK("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(r.minor, 0);
    assert_null(r.host.p);
    r = PARSE_OK("GET / HTTP/1.0\r\nHost: a.b\r\n\r\n");
    assert_str(r.host, "a.b");
    /* An empty Host is allowed (RFC 9112 3.2, a target without authority). */
    r = PARSE_OK("GET / HTTP/1.1\r\nHost:\r\n\r\n");
    assert_non_null(r.host.p);
    assert_int_equal(r.host.len, 0);
}

static void test_expect(void **state)
{
    (void)state;
    assert_true(PARSE_OK("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                         "Content-Length: 1\r\n\r\n")
                    .expect_continue);
    /* RFC 9110 10.1.1: ignored on HTTP/1.0; other expectations are ignored too. */
    assert_false(PARSE_OK("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                     .expect_continue);
    assert_false(PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nExpect: x\r\n\r\n").expect_continue);
}

static void test_header_lookup(void **state)
{
    (void)state;
    static const char in[] =
        "GET /events/a HTTP/1.1\r\n"
        "Host: h\r\n"
        "Last-Event-ID: 17-42\r\n"
        "authorization: Bearer abc.def\r\n"
        "Cookie: a=1\r\n"
        "Origin: https://app.example\r\n"
        "X-Request-Id:   r-1 \t\r\n"
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        "cookie: b=2\r\n"
        "X-Empty:\r\n"
        "X-Tab: a\tb\r\n"
        "X-Obs: caf\xc3\xa9\r\n"
        "\r\n";
    struct h1_request r = PARSE_OK(in);
    assert_int_equal(r.nheaders, 11);
    assert_header(&r, "last-event-id", "17-42");
    assert_header(&r, "Authorization", "Bearer abc.def");
    assert_header(&r, "ORIGIN", "https://app.example");
    assert_header(&r, "x-request-id", "r-1");
    assert_header(&r, "Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_header(&r, "x-empty", "");
    assert_header(&r, "x-tab", "a\tb");
    assert_header(&r, "x-obs", "caf\xc3\xa9");
    assert_null(h1_header(&r, "x-missing"));
    assert_null(h1_header(&r, "x-request")); /* a prefix is not a match */
    assert_null(h1_header(&r, "x-request-id2"));

    const struct h1_header *c = h1_header_next(&r, "cookie", NULL);
    assert_non_null(c);
    assert_str(c->value, "a=1");
    c = h1_header_next(&r, "cookie", c);
    assert_non_null(c);
    assert_str(c->name, "cookie");
    assert_str(c->value, "b=2");
    assert_null(h1_header_next(&r, "cookie", c));
}

static void test_h2c_upgrade(void **state)
{
    (void)state;
    struct h1_request r =
        PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
    assert_true(r.upgrade_h2c);
    assert_str(r.upgrade, "h2c");
    assert_str(r.http2_settings, "AAMAAABkAARAAAAAAAIAAAAA");

    /* Connection must name HTTP2-Settings too. */
    r = PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                 "HTTP2-Settings: AAMA\r\n\r\n");
    assert_false(r.upgrade_h2c);
    assert_str(r.upgrade, "h2c");
    /* Exactly one HTTP2-Settings. */
    r = PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 "Upgrade: h2c\r\nHTTP2-Settings: AAMA\r\nHTTP2-Settings: AAMA\r\n\r\n");
    assert_false(r.upgrade_h2c);
    r = PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 "Upgrade: h2c\r\n\r\n");
    assert_false(r.upgrade_h2c);
    /* Not on HTTP/1.0. */
    r = PARSE_OK("GET / HTTP/1.0\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 "Upgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n");
    assert_false(r.upgrade_h2c);
    /* Another protocol is exposed, not taken for h2c. */
    r = PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    assert_false(r.upgrade_h2c);
    assert_str(r.upgrade, "websocket");
    r = PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 "Upgrade: foo/2, H2C\r\nHTTP2-Settings: \r\n\r\n");
    assert_true(r.upgrade_h2c);
    assert_int_equal(r.http2_settings.len, 0);
    /* Without Connection: upgrade, Upgrade means nothing. */
    r = PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n\r\n");
    assert_null(r.upgrade.p);
}

static void test_pipelined(void **state)
{
    (void)state;
    static const char in[] = "POST /publish/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                             "GET /events/b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                             "GET /x";
    size_t n = sizeof(in) - 1;
    struct h1_parser p;
    struct h1_request r;

    h1_parser_init(&p, NULL);
    assert_int_equal(h1_parse(&p, in, n, &r), 0);
    assert_str(r.target, "/publish/a");
    size_t off = r.head_len + (size_t)r.content_length;

    h1_parser_init(&p, NULL);
    assert_int_equal(h1_parse(&p, in + off, n - off, &r), 0);
    assert_str(r.target, "/events/b");
    assert_false(r.keep_alive);
    off += r.head_len;

    h1_parser_init(&p, NULL);
    assert_int_equal(h1_parse(&p, in + off, n - off, &r), ERR_AGAIN);
    assert_string_equal(in + off, "GET /x");
}

static void test_leading_empty_lines(void **state)
{
    (void)state;
    static const char in[] = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    struct h1_request r = PARSE_OK(in);
    assert_str(r.method, "GET");
    assert_int_equal(r.head_len, sizeof(in) - 1);
    INCOMPLETE("\r\n\r\n");
    REJECT("\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void test_incomplete(void **state)
{
    (void)state;
    INCOMPLETE("");
    INCOMPLETE("G");
    INCOMPLETE("GET / HTTP/1.1");
    INCOMPLETE("GET / HTTP/1.1\r");
    INCOMPLETE("GET / HTTP/1.1\r\n");
    INCOMPLETE("GET / HTTP/1.1\r\nHost: h\r\n");
    INCOMPLETE("GET / HTTP/1.1\r\nHost: h\r\n\r");
}

static void test_reject_request_line(void **state)
{
    (void)state;
    REJECT("GET /\r\n\r\n", 400);
    REJECT("GET\r\n\r\n", 400);
    REJECT("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400);
    REJECT("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET /\tHTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET\x00 / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    /* A method we do not route is still a valid token: the router answers it. */
    assert_str(PARSE_OK("BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n").method, "BREW");
}

static void test_reject_version(void **state)
{
    (void)state;
    REJECT("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505);
    REJECT("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
    REJECT("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
    REJECT("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    REJECT("GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400);
    REJECT("GET / HTTP/1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET / http/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400);
    REJECT("GET / HTTP/11\r\nHost: h\r\n\r\n", 400);
}

static void test_reject_line_ends(void **state)
{
    (void)state;
    REJECT("GET / HTTP/1.1\nHost: h\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
    REJECT("GET / HTTP/1.1\rHost: h\r\n\r\n", 400);
    REJECT("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400);
}

static void test_reject_header_syntax(void **state)
{
    (void)state;
    /* obs-fold, and whitespace before the first header line */
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);
    /* whitespace between name and colon */
    REJECT("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 1\r\n\r\n", 400);
    /* empty and invalid names, no colon */
    REJECT("GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX@Y: x\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX\"Y: x\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX(Y): x\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX\x01Y: x\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nno-colon\r\n\r\n", 400);
    /* control characters in values; HTAB is fine (see test_header_lookup) */
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: a\x00z\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nX: \x1b[31m\r\n\r\n", 400);
}

static void test_reject_host(void **state)
{
    (void)state;
    REJECT("GET / HTTP/1.1\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nX-Host: h\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    REJECT("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    REJECT("GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400);
    /* Absolute-form still needs a Host line on HTTP/1.1 (RFC 9112 3.2). */
    REJECT("GET http://h/ HTTP/1.1\r\n\r\n", 400);
}

static void test_reject_content_length(void **state)
{
    (void)state;
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,1\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
}

static void test_reject_transfer_encoding(void **state)
{
    (void)state;
    /* Both framings: the smuggling classic, in either order. */
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
           400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
           400);
    /* chunked must be final and once. */
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
           "Transfer-Encoding: chunked\r\n\r\n",
           400);
    /* Other codings before chunked are not implemented. */
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
           "Transfer-Encoding: chunked\r\n\r\n",
           501);
    /* Malformed lists. */
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400);
    REJECT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked x\r\n\r\n", 400);
    /* RFC 9112 6.1: faulty framing on HTTP/1.0. */
    REJECT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

static void test_request_line_limit(void **state)
{
    (void)state;
    static const struct h1_limits lim = {.request_line_max = 32};
    test_limits = &lim;
    /* "GET /" + 'a' * k + " HTTP/1.1" is 14 + k bytes. */
    char in[256];
    int n = snprintf(in, sizeof in, "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", "aaaaaaaaaaaaaaaaaa");
    parse_ok_n(in, (size_t)n); /* exactly 32 */
    n = snprintf(in, sizeof in, "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n", "aaaaaaaaaaaaaaaaaaa");
    check_reject_n(in, (size_t)n, 414);
    /* Refused before the line ends. */
    check_reject_n("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40, 414);
    /* Leading empty lines do not count towards it. */
    n = snprintf(in, sizeof in, "\r\n\r\nGET /%s HTTP/1.1\r\nHost: h\r\n\r\n",
                 "aaaaaaaaaaaaaaaaaa");
    parse_ok_n(in, (size_t)n);
    test_limits = NULL;
}

static void test_default_request_line_limit(void **state)
{
    (void)state;
    size_t n = H1_REQUEST_LINE_MAX + 64;
    char *in = malloc(n);
    assert_non_null(in);
    memcpy(in, "GET /", 5);
    memset(in + 5, 'a', n - 5);
    struct h1_parser p;
    struct h1_request r;
    h1_parser_init(&p, NULL);
    assert_int_equal(h1_parse(&p, in, n, &r), ERR_LIMIT);
    assert_int_equal(p.status, 414);
    free(in);
}

static void test_head_limit(void **state)
{
    (void)state;
    static const struct h1_limits lim = {.head_max = 64};
    test_limits = &lim;
    /* Request line and Host 25 bytes, the final CRLF 2, an X line 3 + k + 2. */
    char in[256];
    char pad[64];
    size_t base = sizeof("GET / HTTP/1.1\r\nHost: h\r\n\r\n") - 1;
    size_t k = 64 - base - 5; /* one X line filling the head exactly */
    memset(pad, 'v', k);
    pad[k] = '\0';
    int n = snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: h\r\nX: %s\r\n\r\n", pad);
    assert_int_equal(n, 64);
    assert_int_equal(parse_ok_n(in, (size_t)n).head_len, 64);
    pad[k] = 'v';
    pad[k + 1] = '\0';
    n = snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: h\r\nX: %s\r\n\r\n", pad);
    check_reject_n(in, (size_t)n, 431);
    /* A full buffer without the end of the head is refused, never left waiting. */
    check_reject_n(in, 64, 431); /* ends in CR: its LF would be byte 65 */
    check_incomplete_n(in, 63);
    memset(in, 'a', sizeof in);
    memcpy(in, "GET /", 5);
    check_reject_n(in, 64, 431); /* a request line that fills the buffer */
    check_incomplete_n(in, 63);
    /* Empty lines before the request line count. */
    memset(in, 0, sizeof in);
    for (int i = 0; i < 40; i++)
        memcpy(in + 2 * i, "\r\n", 2);
    check_reject_n(in, 80, 431);
    test_limits = NULL;
}

static void test_default_head_limit(void **state)
{
    (void)state;
    /* Many lines of valid headers, each short, past 16 KiB in total: 431, not 400. */
    size_t cap = H1_HEAD_MAX + 4096, n = 0;
    char *in = malloc(cap);
    assert_non_null(in);
    n += (size_t)snprintf(in, cap, "GET / HTTP/1.1\r\nHost: h\r\n");
    memset(in + n, 'v', cap - n);
    struct h1_parser p;
    struct h1_request r;
    h1_parser_init(&p, NULL);
    memcpy(in + n, "X: ", 3);
    assert_int_equal(h1_parse(&p, in, cap, &r), ERR_LIMIT);
    assert_int_equal(p.status, 431);
    free(in);
}

static void test_header_count_limit(void **state)
{
    (void)state;
    char in[4096];
    size_t n = (size_t)snprintf(in, sizeof in, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < H1_HEADERS_MAX; i++)
        n += (size_t)snprintf(in + n, sizeof in - n, "X-%d: %d\r\n", i, i);
    memcpy(in + n, "\r\n", 2);
    struct h1_request r = parse_ok_n(in, n + 2);
    assert_int_equal(r.nheaders, H1_HEADERS_MAX);
    assert_header(&r, "x-63", "63");
    n += (size_t)snprintf(in + n, sizeof in - n, "X-64: 64\r\n\r\n");
    check_reject_n(in, n, 431);

    static const struct h1_limits lim = {.headers_max = 2};
    test_limits = &lim;
    REJECT("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n", 431);
    PARSE_OK("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n");
    test_limits = NULL;
}

static void test_errors_are_sticky(void **state)
{
    (void)state;
    static const char bad[] = "GET / HTTP/1.1\r\nHost : h\r\n\r\n";
    struct h1_parser p;
    struct h1_request r;
    h1_parser_init(&p, NULL);
    assert_int_equal(h1_parse(&p, bad, sizeof(bad) - 1, &r), ERR_PROTO);
    assert_int_equal(p.status, 400);
    const char *reason = p.reason;
    assert_int_equal(h1_parse(&p, bad, sizeof(bad) - 1, &r), ERR_PROTO);
    assert_int_equal(p.status, 400);
    assert_ptr_equal(p.reason, reason);
}

static void test_buffer_may_move(void **state)
{
    (void)state;
    static const char in[] = "GET /a HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n";
    size_t n = sizeof(in) - 1;
    struct h1_parser p;
    struct h1_request r;
    h1_parser_init(&p, NULL);
    char *a = exact_copy(in, 20);
    assert_int_equal(h1_parse(&p, a, 20, &r), ERR_AGAIN);
    free(a);
    char *b = exact_copy(in, n);
    assert_int_equal(h1_parse(&p, b, n, &r), 0);
    assert_true(r.method.p == b);
    assert_str(r.target, "/a");
    assert_header(&r, "x", "y");
    free(b);
}

/* The incremental guarantee over many generated heads, valid and not. */
static uint32_t rng_state = 2463534242u;

static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_random_heads_split_anywhere(void **state)
{
    (void)state;
    static const char *const parts[] = {
        "GET ",
        "POST ",
        "/",
        "a",
        "?",
        "*",
        " ",
        "HTTP/1.1",
        "HTTP/1.0",
        "\r\n",
        "\r",
        "\n",
        "Host: h",
        "Host",
        ":",
        " x ",
        "\t",
        "Content-Length: 3",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "\x01",
        "\xff",
        "http://h",
    };
    static const struct h1_limits lim = {.head_max = 96, .request_line_max = 40, .headers_max = 3};
    char in[512];
    for (int iter = 0; iter < 1500; iter++) {
        size_t n = 0;
        if (iter % 2)
            n += (size_t)snprintf(in, sizeof in, "GET / HTTP/1.1\r\n");
        int k = (int)(rng() % 14);
        for (int i = 0; i < k; i++) {
            const char *s = parts[rng() % (sizeof parts / sizeof parts[0])];
            size_t l = strlen(s);
            if (n + l + 4 > sizeof in)
                break;
            memcpy(in + n, s, l);
            n += l;
        }
        if (rng() % 2) {
            memcpy(in + n, "\r\n\r\n", 4);
            n += 4;
        }
        test_limits = (iter % 3 == 0) ? &lim : NULL;
        parse_all(in, n); /* fails on any disagreement between the ways of feeding */
    }
    test_limits = NULL;
}

/* Chunked bodies. */

struct dec {
    int rc, status;
    size_t consumed;
    size_t produced;
    char out[4096];
};

/* Decodes in[0..n) in pieces of step bytes (0: all at once); out is contiguous. */
static void decode_steps(const char *in, size_t n, uint64_t body_max, size_t step, struct dec *d)
{
    struct h1_chunked c;
    h1_chunked_init(&c, body_max);
    memset(d, 0, sizeof(*d));
    d->rc = ERR_AGAIN;
    size_t at = 0;
    do {
        size_t piece = step ? (n - at < step ? n - at : step) : n - at;
        char *buf = exact_copy(in + at, piece);
        size_t used, made;
        d->rc = h1_chunked_decode(&c, buf, piece, &used, d->out + d->produced, &made);
        assert_true(used <= piece);
        assert_true(made <= used);
        d->produced += made;
        d->consumed += used;
        at += used;
        free(buf);
        if (d->rc == ERR_AGAIN)
            assert_int_equal(used, piece);
    } while (d->rc == ERR_AGAIN && at < n);
    assert_true(c.total == d->produced);
    assert_true(c.total <= body_max);
    d->status = d->rc < 0 && d->rc != ERR_AGAIN ? c.status : 0;
    if (d->status) {
        assert_non_null(c.reason);
        assert_null(strpbrk(c.reason, "\r\n"));
    }
}

/* Decodes all at once, byte by byte, in 3-byte pieces and in place; all must agree. */
static struct dec decode_all(const char *in, size_t n, uint64_t body_max)
{
    struct dec once, other;
    char e[ESC_MAX];
    decode_steps(in, n, body_max, 0, &once);
    static const size_t steps[] = {1, 2, 3, 7};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
        decode_steps(in, n, body_max, steps[s], &other);
        if (other.rc != once.rc || other.status != once.status || other.produced != once.produced ||
            memcmp(other.out, once.out, once.produced) != 0 ||
            (once.rc == 0 && other.consumed != once.consumed))
            fail_msg("\"%s\": in steps of %zu: rc %d status %d produced %zu; at once rc %d "
                     "status %d produced %zu",
                     escape(e, in, n), steps[s], other.rc, other.status, other.produced, once.rc,
                     once.status, once.produced);
    }
    /* In place. */
    char *buf = exact_copy(in, n);
    struct h1_chunked c;
    size_t used, made;
    h1_chunked_init(&c, body_max);
    int rc = h1_chunked_decode(&c, buf, n, &used, buf, &made);
    assert_int_equal(rc, once.rc);
    assert_int_equal(made, once.produced);
    assert_memory_equal(buf, once.out, made);
    if (rc == 0)
        assert_int_equal(used, once.consumed);
    /* Done or failed stays so. */
    if (rc != ERR_AGAIN) {
        assert_int_equal(h1_chunked_decode(&c, buf, n, &used, buf, &made), rc);
        assert_int_equal(used, 0);
        assert_int_equal(made, 0);
    }
    free(buf);
    return once;
}

static void check_decode_n(const char *in, size_t n, uint64_t body_max, const char *want,
                           size_t wantlen, size_t consumed)
{
    struct dec d = decode_all(in, n, body_max);
    char e[ESC_MAX], e2[ESC_MAX];
    if (d.rc != 0)
        fail_msg("\"%s\": rc %d status %d, want success", escape(e, in, n), d.rc, d.status);
    if (d.produced != wantlen || memcmp(d.out, want, wantlen) != 0)
        fail_msg("\"%s\": decoded \"%s\", want \"%s\"", escape(e, in, n),
                 escape(e2, d.out, d.produced), want);
    assert_int_equal(d.consumed, consumed);
}

#define DECODE(lit, want)                                                                          \
    check_decode_n((lit), sizeof(lit) - 1, 1 << 20, (want), sizeof(want) - 1, sizeof(lit) - 1)

static void check_decode_fail_n(const char *in, size_t n, uint64_t body_max, int status)
{
    struct dec d = decode_all(in, n, body_max);
    char e[ESC_MAX];
    int want_rc = status == 400 ? ERR_PROTO : ERR_LIMIT;
    if (d.rc != want_rc || d.status != status)
        fail_msg("\"%s\": rc %d status %d, want rc %d status %d", escape(e, in, n), d.rc, d.status,
                 want_rc, status);
}

#define DECODE_FAIL(lit, status) check_decode_fail_n((lit), sizeof(lit) - 1, 1 << 20, (status))

static void check_decode_again_n(const char *in, size_t n)
{
    struct dec d = decode_all(in, n, 1 << 20);
    assert_int_equal(d.rc, ERR_AGAIN);
}

#define DECODE_AGAIN(lit) check_decode_again_n((lit), sizeof(lit) - 1)

static void test_chunked_basic(void **state)
{
    (void)state;
    DECODE("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
    DECODE("0\r\n\r\n", "");
    DECODE("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", "0123456789abcdefghij");
    DECODE("000005\r\nhello\r\n000\r\n\r\n", "hello");
    /* Data may hold CR, LF and NUL: only the size counts. */
    check_decode_n("4\r\n\r\n\0\n\r\n0\r\n\r\n", 14, 100, "\r\n\0\n", 4, 14);
}

static void test_chunked_incomplete(void **state)
{
    (void)state;
    DECODE_AGAIN("");
    DECODE_AGAIN("5");
    DECODE_AGAIN("5\r");
    DECODE_AGAIN("5\r\nhel");
    DECODE_AGAIN("5\r\nhello\r");
    DECODE_AGAIN("5\r\nhello\r\n");
    DECODE_AGAIN("5\r\nhello\r\n0\r\n");
    DECODE_AGAIN("5\r\nhello\r\n0\r\n\r");
    DECODE_AGAIN("0\r\nX: y\r\n");
}

static void test_chunked_split_everywhere(void **state)
{
    (void)state;
    static const char in[] = "3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n1 ; x=\"y\"\r\nZ\r\n"
                             "0\r\nExpires: never\r\nX: 1\r\n\r\n";
    static const char want[] = "abc0123456789abcdefZ";
    size_t n = sizeof(in) - 1;
    /* Every pair of cut points: three pieces. */
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            size_t cuts[4] = {0, a, b, n};
            struct h1_chunked c;
            h1_chunked_init(&c, 1000);
            char out[64];
            size_t o = 0;
            int rc = ERR_AGAIN;
            for (int k = 0; k < 3; k++) {
                size_t used, made;
                rc = h1_chunked_decode(&c, in + cuts[k], cuts[k + 1] - cuts[k], &used, out + o,
                                       &made);
                o += made;
                if (k < 2) {
                    assert_int_equal(rc, cuts[k + 1] == n ? 0 : ERR_AGAIN);
                    assert_int_equal(used, cuts[k + 1] - cuts[k]);
                }
            }
            assert_int_equal(rc, 0);
            assert_int_equal(o, sizeof(want) - 1);
            assert_memory_equal(out, want, o);
        }
    }
    check_decode_n(in, n, 1000, want, sizeof(want) - 1, n);
}

static void test_chunked_extensions(void **state)
{
    (void)state;
    DECODE("5;name\r\nhello\r\n0\r\n\r\n", "hello");
    DECODE("5;name=value;other=\"quoted;\\\" string\"\r\nhello\r\n0;last\r\n\r\n", "hello");
    DECODE("5 ;x\r\nhello\r\n0\t;y\r\n\r\n", "hello");
    DECODE("5;\r\nhello\r\n0\r\n\r\n", "hello");
    DECODE_FAIL("5;a\x01\r\nhello\r\n0\r\n\r\n", 400);
    DECODE_FAIL("5;a\nhello\r\n0\r\n\r\n", 400);
    DECODE_FAIL("5;a\rhello\r\n0\r\n\r\n", 400);
    /* Extensions are bounded over the whole body, not just per line. */
    char in[16384];
    size_t n = 0;
    char ext[H1_CHUNK_EXT_MAX / 4];
    memset(ext, 'e', sizeof ext - 1);
    ext[sizeof ext - 1] = '\0';
    for (int i = 0; i < 3; i++)
        n += (size_t)snprintf(in + n, sizeof in - n, "1;%s\r\nx\r\n", ext);
    n += (size_t)snprintf(in + n, sizeof in - n, "0\r\n\r\n");
    check_decode_n(in, n, 1000, "xxx", 3, n);
    n = 0;
    for (int i = 0; i < 5; i++)
        n += (size_t)snprintf(in + n, sizeof in - n, "1;%s\r\nx\r\n", ext);
    n += (size_t)snprintf(in + n, sizeof in - n, "0\r\n\r\n");
    check_decode_fail_n(in, n, 1000, 413);
}

static void test_chunked_trailers(void **state)
{
    (void)state;
    DECODE("5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum: abc \t d\r\n\r\n", "hello");
    DECODE("0\r\nX:\r\n\r\n", "");
    DECODE_FAIL("0\r\nno colon\r\n\r\n", 400);
    DECODE_FAIL("0\r\n: x\r\n\r\n", 400);
    DECODE_FAIL("0\r\nX : x\r\n\r\n", 400);
    DECODE_FAIL("0\r\nX: a\r\n b\r\n\r\n", 400); /* obs-fold */
    DECODE_FAIL("0\r\nX: a\x01\r\n\r\n", 400);
    DECODE_FAIL("0\r\nX: a\n\r\n", 400);
    DECODE_FAIL("0\r\nX: a\r\n\n", 400);
    DECODE_FAIL("0\r\n\rX", 400);
    /* Bounded. */
    char in[H1_TRAILERS_MAX + 64];
    size_t n = (size_t)snprintf(in, sizeof in, "0\r\nX: ");
    size_t fill = H1_TRAILERS_MAX - 3 - 2 - 2; /* "X: " value CRLF CRLF */
    memset(in + n, 'v', fill);
    n += fill;
    memcpy(in + n, "\r\n\r\n", 4);
    check_decode_n(in, n + 4, 100, "", 0, n + 4);
    memset(in + n, 'v', 1);
    memcpy(in + n + 1, "\r\n\r\n", 4);
    check_decode_fail_n(in, n + 5, 100, 431);
}

static void test_chunked_last_chunk_then_next_request(void **state)
{
    (void)state;
    static const char in[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    check_decode_n(in, sizeof(in) - 1, 100, "abc", 3, sizeof("3\r\nabc\r\n0\r\n\r\n") - 1);
}

/* A body read and dropped in place, whatever its framing, ends where the next request starts. */
static void check_body_then_next(const char *in, size_t body_bytes, uint64_t want_total)
{
    size_t n = strlen(in);
    struct h1_request req = parse_ok_n(in, n);
    char *buf = strdup(in);
    assert_non_null(buf);
    struct h1_body_reader b;
    assert_int_equal(h1_body_reader_init(&b, &req, 65536), 0);
    size_t used = 0, made = 0;
    /* In two calls: one byte, then the rest; dropped in place. */
    size_t at = req.head_len;
    int rc = h1_body_read(&b, buf + at, n - at > 0 ? 1 : 0, &used, buf + at, &made);
    at += used;
    if (rc == ERR_AGAIN) {
        rc = h1_body_read(&b, buf + at, n - at, &used, buf + at, &made);
        at += used;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(at, req.head_len + body_bytes);
    assert_int_equal(b.total, want_total);
    assert_memory_equal(in + at, "GET /next", 9);
    free(buf);
}

static void test_body_reader_drops_to_the_next_request(void **state)
{
    (void)state;
    check_body_then_next("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 39\r\n\r\n"
                         "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n"
                         "GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
                         39, 39);
    check_body_then_next("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n"
                         "GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
                         sizeof("23\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n") - 1,
                         35);
    /* No body: nothing is read, even with nothing to read. */
    check_body_then_next("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
                         0, 0);
}

static void test_body_reader_refuses_a_length_over_the_limit(void **state)
{
    (void)state;
    static const char in[] = "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\nabc";
    struct h1_request req = parse_ok_n(in, sizeof(in) - 1);
    struct h1_body_reader b;
    assert_int_equal(h1_body_reader_init(&b, &req, 65536), ERR_LIMIT);
    assert_int_equal(b.status, 413);
    char out[4];
    size_t used = 9, made = 9;
    assert_int_equal(h1_body_read(&b, "abc", 3, &used, out, &made), ERR_LIMIT);
    assert_int_equal(used, 0);
    assert_int_equal(made, 0);
}

static void test_chunked_invalid_size(void **state)
{
    (void)state;
    DECODE_FAIL("\r\n", 400);
    DECODE_FAIL(";x\r\n", 400);
    DECODE_FAIL("g\r\n", 400);
    DECODE_FAIL("5g\r\nhello\r\n", 400);
    DECODE_FAIL("-1\r\n", 400);
    DECODE_FAIL("+1\r\nx\r\n", 400);
    DECODE_FAIL("0x5\r\nhello\r\n", 400);
    DECODE_FAIL(" 5\r\nhello\r\n", 400);
    DECODE_FAIL("5 \r\nhello\r\n", 400); /* BWS only before an extension */
    DECODE_FAIL("5 5\r\nhello\r\n", 400);
    DECODE_FAIL("5\nhello\r\n", 400);
    DECODE_FAIL("5\r\rhello\r\n", 400);
    DECODE_FAIL("5\rhello\r\n", 400);
    /* Leading zeros are fine, but the line is bounded. */
    char in[128];
    memset(in, '0', H1_CHUNK_SIZE_CHARS_MAX - 1);
    memcpy(in + H1_CHUNK_SIZE_CHARS_MAX - 1, "1\r\nx\r\n0\r\n\r\n", 12);
    check_decode_n(in, H1_CHUNK_SIZE_CHARS_MAX + 10, 100, "x", 1, H1_CHUNK_SIZE_CHARS_MAX + 10);
    memset(in, '0', H1_CHUNK_SIZE_CHARS_MAX);
    memcpy(in + H1_CHUNK_SIZE_CHARS_MAX, "1\r\nx\r\n0\r\n\r\n", 12);
    check_decode_fail_n(in, H1_CHUNK_SIZE_CHARS_MAX + 11, 100, 400);
}

static void test_chunked_overflow(void **state)
{
    (void)state;
    /* With no body limit to stop it first, 17 hex digits overflow 64 bits. */
    static const char big[] = "10000000000000000\r\n";
    check_decode_fail_n(big, sizeof(big) - 1, UINT64_MAX, 400);
    static const char max[] = "ffffffffffffffff\r\nabc";
    struct dec d = decode_all(max, sizeof(max) - 1, UINT64_MAX);
    assert_int_equal(d.rc, ERR_AGAIN);
    assert_int_equal(d.produced, 3);
    static const char over[] = "fffffffffffffffff\r\n";
    check_decode_fail_n(over, sizeof(over) - 1, UINT64_MAX, 400);
    /* With the default-like limit, the body limit speaks first. */
    check_decode_fail_n(big, sizeof(big) - 1, 1 << 20, 413);
}

static void test_chunked_missing_crlf_after_data(void **state)
{
    (void)state;
    DECODE_FAIL("5\r\nhelloX\r\n0\r\n\r\n", 400);
    DECODE_FAIL("5\r\nhelloX\n0\r\n\r\n", 400);
    DECODE_FAIL("5\r\nhello\rX0\r\n\r\n", 400);
    DECODE_FAIL("5\r\nhello\n0\r\n\r\n", 400);
    DECODE_FAIL("5\r\nhello0\r\n\r\n", 400);
    DECODE_FAIL("3\r\nhello\r\n0\r\n\r\n", 400); /* size smaller than the data */
    DECODE_FAIL("0\r\n\r\r\n", 400);
}

static void test_chunked_body_limit(void **state)
{
    (void)state;
    static const char ten[] = "4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n";
    check_decode_n(ten, sizeof(ten) - 1, 10, "abcdefghij", 10, sizeof(ten) - 1);
    check_decode_fail_n(ten, sizeof(ten) - 1, 9, 413);
    /* Refused at the size line, before the data arrives. */
    static const char early[] = "4\r\nabcd\r\n7\r\n";
    struct dec d = decode_all(early, sizeof(early) - 1, 10);
    assert_int_equal(d.rc, ERR_LIMIT);
    assert_int_equal(d.status, 413);
    assert_int_equal(d.produced, 4);
    check_decode_n("0\r\n\r\n", 5, 0, "", 0, 5);
    check_decode_fail_n("1\r\nx\r\n0\r\n\r\n", 11, 0, 413);
}

static void test_chunked_into_body_buffer(void **state)
{
    (void)state;
    /* out = body + c.total with a buffer of exactly body_max bytes. */
    static const char in[] = "3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n";
    char *body = malloc(8);
    assert_non_null(body);
    struct h1_chunked c;
    h1_chunked_init(&c, 8);
    size_t at = 0, n = sizeof(in) - 1;
    int rc = ERR_AGAIN;
    while (rc == ERR_AGAIN && at < n) {
        size_t used, made, piece = n - at < 4 ? n - at : 4;
        rc = h1_chunked_decode(&c, in + at, piece, &used, body + c.total, &made);
        at += used;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(c.total, 8);
    assert_memory_equal(body, "abcdefgh", 8);
    free(body);
}

static void test_random_chunked_split_anywhere(void **state)
{
    (void)state;
    static const char *const parts[] = {"0",   "1", "a",  "F", "\r\n", "\r",  "\n",   ";",
                                        "x=y", " ", "\t", ":", "X",    "abc", "\x01", "\r\n\r\n"};
    char in[256];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = 0;
        int k = (int)(rng() % 16);
        for (int i = 0; i < k; i++) {
            const char *s = parts[rng() % (sizeof parts / sizeof parts[0])];
            size_t l = strlen(s);
            if (n + l > sizeof in)
                break;
            memcpy(in + n, s, l);
            n += l;
        }
        decode_all(in, n, (iter % 2) ? 20 : UINT64_MAX);
    }
}

/* Responses. */

static void test_format_head(void **state)
{
    (void)state;
    char out[256];
    int n = h1_format_head(out, sizeof out, 200,
                           (const char *const[]){"content-type", "text/event-stream",
                                                 "cache-control", "no-cache", NULL});
    static const char want[] = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                               "cache-control: no-cache\r\n\r\n";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(out, want, (size_t)n);

    n = h1_format_head(out, sizeof out, 431, NULL);
    static const char want2[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n";
    assert_int_equal(n, sizeof(want2) - 1);
    assert_memory_equal(out, want2, (size_t)n);

    /* Exactly enough room, and one byte less. */
    assert_int_equal(h1_format_head(out, sizeof(want) - 1, 200,
                                    (const char *const[]){"content-type", "text/event-stream",
                                                          "cache-control", "no-cache", NULL}),
                     sizeof(want) - 1);
    assert_int_equal(h1_format_head(out, sizeof(want) - 2, 200,
                                    (const char *const[]){"content-type", "text/event-stream",
                                                          "cache-control", "no-cache", NULL}),
                     ERR_LIMIT);
    assert_int_equal(h1_format_head(out, 0, 200, NULL), ERR_LIMIT);
}

static void test_format_head_refuses_splitting(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(h1_format_head(out, sizeof out, 200,
                                    (const char *const[]){"x", "a\r\nSet-Cookie: evil", NULL}),
                     ERR_INVALID);
    assert_int_equal(h1_format_head(out, sizeof out, 200, (const char *const[]){"x", "a\n", NULL}),
                     ERR_INVALID);
    assert_int_equal(h1_format_head(out, sizeof out, 200, (const char *const[]){"x y", "a", NULL}),
                     ERR_INVALID);
    assert_int_equal(h1_format_head(out, sizeof out, 200, (const char *const[]){"", "a", NULL}),
                     ERR_INVALID);
    assert_int_equal(h1_format_head(out, sizeof out, 200, (const char *const[]){"x", NULL}),
                     ERR_INVALID);
    assert_int_equal(h1_format_head(out, sizeof out, 99, NULL), ERR_INVALID);
    assert_int_equal(h1_format_head(out, sizeof out, 1000, NULL), ERR_INVALID);
    assert_true(h1_format_head(out, sizeof out, 200, (const char *const[]){"x", "a\tb", NULL}) > 0);
}

static void test_status_text(void **state)
{
    (void)state;
    assert_string_equal(h1_status_text(400), "Bad Request");
    assert_string_equal(h1_status_text(413), "Content Too Large");
    assert_string_equal(h1_status_text(414), "URI Too Long");
    assert_string_equal(h1_status_text(501), "Not Implemented");
    assert_string_equal(h1_status_text(505), "HTTP Version Not Supported");
    assert_string_equal(h1_status_text(299), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_minimal),
        cmocka_unit_test(test_post_content_length),
        cmocka_unit_test(test_post_chunked),
        cmocka_unit_test(test_options_star),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_connect_not_implemented),
        cmocka_unit_test(test_keep_alive_defaults),
        cmocka_unit_test(test_http10_host_optional),
        cmocka_unit_test(test_expect),
        cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_h2c_upgrade),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_reject_request_line),
        cmocka_unit_test(test_reject_version),
        cmocka_unit_test(test_reject_line_ends),
        cmocka_unit_test(test_reject_header_syntax),
        cmocka_unit_test(test_reject_host),
        cmocka_unit_test(test_reject_content_length),
        cmocka_unit_test(test_reject_transfer_encoding),
        cmocka_unit_test(test_request_line_limit),
        cmocka_unit_test(test_default_request_line_limit),
        cmocka_unit_test(test_head_limit),
        cmocka_unit_test(test_default_head_limit),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_errors_are_sticky),
        cmocka_unit_test(test_buffer_may_move),
        cmocka_unit_test(test_random_heads_split_anywhere),
        cmocka_unit_test(test_chunked_basic),
        cmocka_unit_test(test_chunked_incomplete),
        cmocka_unit_test(test_chunked_split_everywhere),
        cmocka_unit_test(test_chunked_extensions),
        cmocka_unit_test(test_chunked_trailers),
        cmocka_unit_test(test_chunked_last_chunk_then_next_request),
        cmocka_unit_test(test_chunked_invalid_size),
        cmocka_unit_test(test_body_reader_drops_to_the_next_request),
        cmocka_unit_test(test_body_reader_refuses_a_length_over_the_limit),
        cmocka_unit_test(test_chunked_overflow),
        cmocka_unit_test(test_chunked_missing_crlf_after_data),
        cmocka_unit_test(test_chunked_body_limit),
        cmocka_unit_test(test_chunked_into_body_buffer),
        cmocka_unit_test(test_random_chunked_split_anywhere),
        cmocka_unit_test(test_format_head),
        cmocka_unit_test(test_format_head_refuses_splitting),
        cmocka_unit_test(test_status_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
