/*
 * h1: HTTP/1.1 request heads and chunked bodies (see h1_parse.h for the
 * contract and the strictness rules). The file is named for what it is,
 * the parser; its calls keep the short h1_ prefix.
 *
 * The head is cut into lines first, then each complete line is judged. The
 * line scanner is the only place that looks at CR and LF and the only
 * place that enforces the byte limits, byte by byte and in order, which is
 * what makes the verdict independent of how the bytes were split across
 * calls. Header semantics (Host, framing, Connection, ...) are derived once,
 * when the empty line ends the head, from the stored lines.
 *
 * The chunked decoder is a byte-level state machine for the framing and a
 * bulk copy for chunk data, so that splitting the body anywhere cannot
 * change what it decodes.
 */
#include "sluice/h1_parse.h"

#include <assert.h>
#include <string.h>

#include "sluice/err.h"

enum { ST_REQUEST_LINE, ST_HEADERS, ST_DONE, ST_ERROR };

static int err_for(int status)
{
    return (status == 413 || status == 414 || status == 431) ? ERR_LIMIT : ERR_PROTO;
}

/* RFC 9110 5.6.2: tchar. */
static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_tchar((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* field-vchar, SP or HTAB (RFC 9110 5.5); obs-text is kept. */
static bool is_field_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* s (n bytes) equals the NUL-terminated lit, ignoring ASCII case. */
static bool ieq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n; i++) {
        if (lit[i] == '\0' || lower(s[i]) != lower(lit[i]))
            return false;
    }
    return lit[i] == '\0';
}

/* reg-name, IP-literal and port characters: Host and absolute-form authority. */
static bool is_authority(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c && strchr("-._~!$&'()*+,;=%:[]", c));
        if (!ok)
            return false;
    }
    return true;
}

/* Path and query bytes: visible ASCII; '#' cannot be sent (a fragment stays with the client). */
static bool is_target(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return false;
    }
    return true;
}

static int fail(struct h1_parser *p, int status, const char *reason)
{
    p->state = ST_ERROR;
    p->status = status;
    p->reason = reason;
    return err_for(status);
}

void h1_parser_init(struct h1_parser *p, const struct h1_limits *lim)
{
    memset(p, 0, sizeof(*p));
    if (lim)
        p->lim = *lim;
    if (p->lim.head_max == 0)
        p->lim.head_max = H1_HEAD_MAX;
    if (p->lim.head_max > H1_HEAD_MAX_LIMIT)
        p->lim.head_max = H1_HEAD_MAX_LIMIT;
    if (p->lim.request_line_max == 0)
        p->lim.request_line_max = H1_REQUEST_LINE_MAX;
    if (p->lim.headers_max == 0 || p->lim.headers_max > H1_HEADERS_MAX)
        p->lim.headers_max = H1_HEADERS_MAX;
    p->state = ST_REQUEST_LINE;
}

/*
 * Finds the end of the line starting at p->pos. Returns 1 with *cr at its
 * CR, ERR_AGAIN when the line is not complete yet, or an error. Limits are
 * checked per byte in order, so a prefix never gets a verdict that the
 * whole input would not.
 */
static int next_line(struct h1_parser *p, const char *buf, size_t len, size_t *cr)
{
    size_t i = p->pos + p->scan;
    for (; i < len; i++) {
        if (i >= p->lim.head_max)
            return fail(p, 431, "request head too large");
        if (buf[i] == '\r') {
            if (i + 1 >= p->lim.head_max)
                return fail(p, 431, "request head too large");
            if (i + 1 == len)
                break; /* the LF may still come: look at this CR again next time */
            if (buf[i + 1] != '\n')
                return fail(p, 400, "bare CR in request head");
            *cr = i;
            return 1;
        }
        if (buf[i] == '\n')
            return fail(p, 400, "bare LF in request head");
        if (p->state == ST_REQUEST_LINE && i - p->pos >= p->lim.request_line_max)
            return fail(p, 414, "request line too long");
    }
    /* Nothing after head_max can complete the head: a full buffer must not wait forever. */
    if (len >= p->lim.head_max)
        return fail(p, 431, "request head too large");
    p->scan = i - p->pos;
    return ERR_AGAIN;
}

static int target_absolute(struct h1_parser *p, const char *buf, size_t off, size_t n)
{
    const char *t = buf + off;
    size_t skip;
    if (n >= 7 && ieq(t, 7, "http://"))
        skip = 7;
    else if (n >= 8 && ieq(t, 8, "https://"))
        skip = 8;
    else
        return fail(p, 400, "unsupported request-target form");
    size_t a = skip;
    while (a < n && t[a] != '/' && t[a] != '?')
        a++;
    if (a == skip)
        return fail(p, 400, "empty authority in request-target");
    /* RFC 9110 4.2.4: user info in an http(s) URI is to be treated as an error. */
    if (!is_authority(t + skip, a - skip))
        return fail(p, 400, "invalid authority in request-target");
    if (a < n && t[a] == '?')
        return fail(p, 400, "absolute-form request-target with a query but no path");
    if (!is_target(t + a, n - a))
        return fail(p, 400, "invalid character in request-target");
    p->has_authority = true;
    p->authority.off = (uint32_t)(off + skip);
    p->authority.len = (uint32_t)(a - skip);
    p->target.off = (uint32_t)(off + a);
    p->target.len = (uint32_t)(n - a);
    p->target_root = (a == n);
    return 0;
}

static int request_line(struct h1_parser *p, const char *buf, size_t s, size_t e)
{
    const char *l = buf + s;
    size_t n = e - s;
    const char *sp1 = memchr(l, ' ', n);
    if (!sp1)
        return fail(p, 400, "malformed request line");
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', (size_t)(l + n - t));
    if (!sp2)
        return fail(p, 400, "malformed request line");
    const char *v = sp2 + 1;
    size_t vn = (size_t)(l + n - v);
    /* Checked first so that an h2 preface or a future version gets 505, not a method error. */
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return fail(p, 400, "malformed HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(p, 505, "HTTP version not supported");
    size_t mn = (size_t)(sp1 - l);
    if (!is_token(l, mn))
        return fail(p, 400, "invalid method");
    if (mn == 7 && memcmp(l, "CONNECT", 7) == 0)
        return fail(p, 501, "CONNECT is not supported");
    size_t tn = (size_t)(sp2 - t);
    if (tn == 0)
        return fail(p, 400, "malformed request line");
    p->method.off = (uint32_t)s;
    p->method.len = (uint32_t)mn;
    p->minor = v[7] - '0';
    size_t toff = (size_t)(t - buf);
    if (tn == 1 && t[0] == '*') {
        if (!(mn == 7 && memcmp(l, "OPTIONS", 7) == 0))
            return fail(p, 400, "request-target '*' is only for OPTIONS");
    } else if (t[0] == '/') {
        if (!is_target(t, tn))
            return fail(p, 400, "invalid character in request-target");
    } else {
        return target_absolute(p, buf, toff, tn);
    }
    p->target.off = (uint32_t)toff;
    p->target.len = (uint32_t)tn;
    return 0;
}

static int header_line(struct h1_parser *p, const char *buf, size_t s, size_t e)
{
    const char *l = buf + s;
    size_t n = e - s;
    /* Covers obs-fold and whitespace between the request line and the first header. */
    if (is_ows(l[0]))
        return fail(p, 400, "obsolete line folding in header");
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)l[i]))
        i++;
    if (i == n)
        return fail(p, 400, "header line without a colon");
    if (l[i] != ':') {
        if (is_ows(l[i]))
            return fail(p, 400, "whitespace in header name or before its colon");
        return fail(p, 400, "invalid character in header name");
    }
    if (i == 0)
        return fail(p, 400, "empty header name");
    size_t vs = i + 1, ve = n;
    while (vs < ve && is_ows(l[vs]))
        vs++;
    while (ve > vs && is_ows(l[ve - 1]))
        ve--;
    for (size_t k = vs; k < ve; k++) {
        if (!is_field_char((unsigned char)l[k]))
            return fail(p, 400, "control character in header value");
    }
    if (p->nheaders >= p->lim.headers_max)
        return fail(p, 431, "too many header fields");
    p->names[p->nheaders].off = (uint32_t)s;
    p->names[p->nheaders].len = (uint32_t)i;
    p->values[p->nheaders].off = (uint32_t)(s + vs);
    p->values[p->nheaders].len = (uint32_t)(ve - vs);
    p->nheaders++;
    return 0;
}

/* Next element of a comma-separated list (RFC 9110 5.6.1), OWS trimmed; false at the end. */
static bool list_next(struct h1_str v, size_t *i, struct h1_str *el)
{
    if (*i > v.len)
        return false;
    size_t s = *i, e = s;
    while (e < v.len && v.p[e] != ',')
        e++;
    *i = e + 1;
    size_t te = e;
    while (s < te && is_ows(v.p[s]))
        s++;
    while (te > s && is_ows(v.p[te - 1]))
        te--;
    el->p = v.p + s;
    el->len = te - s;
    return true;
}

/* Content-Length: 1*DIGIT that fits in 64 bits. */
static bool parse_length(struct h1_str v, uint64_t *out)
{
    if (v.len == 0)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        unsigned d = (unsigned)(v.p[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

struct te_state {
    unsigned codings; /* elements over all Transfer-Encoding lines */
    unsigned chunked; /* how many of them were chunked */
    bool last_chunked;
};

static int transfer_encoding(struct h1_parser *p, struct h1_str v, struct te_state *te)
{
    struct h1_str el;
    size_t i = 0;
    while (list_next(v, &i, &el)) {
        /* Empty elements are legal list syntax, but a framing header is no place for leniency. */
        if (!is_token(el.p, el.len))
            return fail(p, 400, "malformed Transfer-Encoding");
        te->codings++;
        te->last_chunked = ieq(el.p, el.len, "chunked");
        if (te->last_chunked)
            te->chunked++;
    }
    return 0;
}

struct conn_opts {
    bool close, keep_alive, upgrade, http2_settings;
};

static int connection(struct h1_parser *p, struct h1_str v, struct conn_opts *c)
{
    struct h1_str el;
    size_t i = 0;
    while (list_next(v, &i, &el)) {
        if (el.len == 0)
            continue;
        if (!is_token(el.p, el.len))
            return fail(p, 400, "malformed Connection");
        if (ieq(el.p, el.len, "close"))
            c->close = true;
        else if (ieq(el.p, el.len, "keep-alive"))
            c->keep_alive = true;
        else if (ieq(el.p, el.len, "upgrade"))
            c->upgrade = true;
        else if (ieq(el.p, el.len, "http2-settings"))
            c->http2_settings = true;
    }
    return 0;
}

static bool list_has(struct h1_str v, const char *lit)
{
    struct h1_str el;
    size_t i = 0;
    while (list_next(v, &i, &el)) {
        if (ieq(el.p, el.len, lit))
            return true;
    }
    return false;
}

/* Header semantics, once the head is complete; req already holds the lines. */
static int derive(struct h1_parser *p, struct h1_request *req)
{
    struct h1_str host = {0}, upgrade = {0}, settings = {0};
    unsigned hosts = 0, nsettings = 0;
    bool have_cl = false, have_te = false, expect = false;
    uint64_t cl = 0;
    struct te_state te = {0};
    struct conn_opts conn = {0};
    int rc;

    for (size_t k = 0; k < req->nheaders; k++) {
        const char *name = req->headers[k].name.p;
        size_t nn = req->headers[k].name.len;
        struct h1_str v = req->headers[k].value;
        if (ieq(name, nn, "host")) {
            /* RFC 9112 3.2: more than one Host, or an invalid one, is a 400. */
            if (++hosts > 1)
                return fail(p, 400, "more than one Host header");
            if (!is_authority(v.p, v.len))
                return fail(p, 400, "invalid Host header");
            host = v;
        } else if (ieq(name, nn, "content-length")) {
            uint64_t n;
            if (!parse_length(v, &n))
                return fail(p, 400, "invalid Content-Length");
            if (have_cl && n != cl)
                return fail(p, 400, "conflicting Content-Length headers");
            have_cl = true;
            cl = n;
        } else if (ieq(name, nn, "transfer-encoding")) {
            have_te = true;
            if ((rc = transfer_encoding(p, v, &te)) < 0)
                return rc;
        } else if (ieq(name, nn, "connection")) {
            if ((rc = connection(p, v, &conn)) < 0)
                return rc;
        } else if (ieq(name, nn, "expect")) {
            expect = expect || ieq(v.p, v.len, "100-continue");
        } else if (ieq(name, nn, "upgrade")) {
            if (!upgrade.p)
                upgrade = v;
        } else if (ieq(name, nn, "http2-settings")) {
            nsettings++;
            settings = v;
        }
    }

    if (req->minor == 1 && hosts == 0)
        return fail(p, 400, "missing Host header");
    req->host = req->authority.p ? req->authority : host;

    /* Both framings at once is the classic smuggling vector: refuse rather than pick one. */
    if (have_te && have_cl)
        return fail(p, 400, "both Content-Length and Transfer-Encoding");
    if (have_te) {
        /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing. */
        if (req->minor == 0)
            return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (te.chunked > 1)
            return fail(p, 400, "chunked applied more than once");
        if (!te.last_chunked)
            return fail(p, 400, "chunked is not the final transfer coding");
        if (te.codings > 1)
            return fail(p, 501, "unsupported transfer coding");
        req->body = H1_BODY_CHUNKED;
    } else if (have_cl) {
        req->body = H1_BODY_LENGTH;
        req->content_length = cl;
    }

    req->keep_alive = !conn.close && (req->minor == 1 || conn.keep_alive);
    /* RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 must be ignored. */
    req->expect_continue = expect && req->minor == 1;
    if (conn.upgrade && upgrade.p)
        req->upgrade = upgrade;
    if (req->minor == 1 && conn.upgrade && conn.http2_settings && nsettings == 1 && upgrade.p &&
        list_has(upgrade, "h2c")) {
        req->upgrade_h2c = true;
        req->http2_settings = settings;
    }
    return 0;
}

static struct h1_str slice(const char *buf, uint32_t off, uint32_t len)
{
    return (struct h1_str){buf + off, len};
}

static int finish(struct h1_parser *p, const char *buf, struct h1_request *req)
{
    memset(req, 0, sizeof(*req));
    req->method = slice(buf, p->method.off, p->method.len);
    if (p->target_root)
        req->target = (struct h1_str){"/", 1};
    else
        req->target = slice(buf, p->target.off, p->target.len);
    if (p->has_authority)
        req->authority = slice(buf, p->authority.off, p->authority.len);
    req->minor = p->minor;
    req->head_len = p->head_len;
    req->nheaders = p->nheaders;
    for (size_t k = 0; k < p->nheaders; k++) {
        req->headers[k].name = slice(buf, p->names[k].off, p->names[k].len);
        req->headers[k].value = slice(buf, p->values[k].off, p->values[k].len);
    }
    return derive(p, req);
}

int h1_parse(struct h1_parser *p, const char *buf, size_t len, struct h1_request *req)
{
    if (p->state == ST_ERROR)
        return err_for(p->status);
    if (p->state == ST_DONE) {
        assert(len >= p->head_len);
        return finish(p, buf, req);
    }
    assert(len >= p->pos + p->scan);
    for (;;) {
        size_t cr;
        int rc = next_line(p, buf, len, &cr);
        if (rc != 1)
            return rc;
        size_t start = p->pos;
        p->pos = cr + 2;
        p->scan = 0;
        if (p->state == ST_REQUEST_LINE) {
            /* RFC 9112 2.2: empty lines before the request line are skipped. */
            if (cr == start)
                continue;
            if ((rc = request_line(p, buf, start, cr)) < 0)
                return rc;
            p->state = ST_HEADERS;
        } else if (cr == start) {
            p->head_len = p->pos;
            if ((rc = finish(p, buf, req)) < 0)
                return rc;
            p->state = ST_DONE;
            return 0;
        } else if ((rc = header_line(p, buf, start, cr)) < 0) {
            return rc;
        }
    }
}

const struct h1_header *h1_header_next(const struct h1_request *req, const char *name,
                                       const struct h1_header *prev)
{
    size_t k = prev ? (size_t)(prev - req->headers) + 1 : 0;
    for (; k < req->nheaders; k++) {
        const struct h1_header *h = &req->headers[k];
        if (ieq(h->name.p, h->name.len, name))
            return h;
    }
    return NULL;
}

const struct h1_str *h1_header(const struct h1_request *req, const char *name)
{
    const struct h1_header *h = h1_header_next(req, name, NULL);
    return h ? &h->value : NULL;
}

/* Chunked bodies. */

enum {
    CK_SIZE_FIRST, /* first hex digit of a chunk-size */
    CK_SIZE,       /* more digits, BWS, ';' or CR */
    CK_SIZE_WS,    /* BWS after the size: only more BWS or ';' may follow */
    CK_EXT,        /* skipping extensions up to CR */
    CK_SIZE_LF,    /* LF ending the size line */
    CK_DATA,       /* remaining bytes of chunk data */
    CK_DATA_CR,    /* CRLF after the data */
    CK_DATA_LF,
    CK_TRAILER,       /* start of a trailer line, or the CR of the final empty line */
    CK_TRAILER_NAME,  /* token up to ':' */
    CK_TRAILER_VALUE, /* field characters up to CR */
    CK_TRAILER_LF,
    CK_END_LF, /* LF of the final empty line */
    CK_DONE,
    CK_ERROR,
};

void h1_chunked_init(struct h1_chunked *c, uint64_t body_max)
{
    memset(c, 0, sizeof(*c));
    c->body_max = body_max;
    c->state = CK_SIZE_FIRST;
}

static int ck_fail(struct h1_chunked *c, int status, const char *reason)
{
    c->state = CK_ERROR;
    c->status = status;
    c->reason = reason;
    return err_for(status);
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One more digit of the size; refused on overflow or as soon as it passes the body limit. */
static int size_digit(struct h1_chunked *c, int d)
{
    if (++c->size_chars > H1_CHUNK_SIZE_CHARS_MAX)
        return ck_fail(c, 400, "chunk size line too long");
    if (c->remaining > (UINT64_MAX - (unsigned)d) >> 4)
        return ck_fail(c, 400, "chunk size overflows");
    c->remaining = c->remaining << 4 | (unsigned)d;
    if (c->remaining > c->body_max - c->total)
        return ck_fail(c, 413, "request body too large");
    return 0;
}

/* One framing byte (anything but chunk data). */
static int chunk_byte(struct h1_chunked *c, unsigned char ch)
{
    int d;
    switch (c->state) {
    case CK_SIZE_FIRST:
        if ((d = hex_value(ch)) < 0)
            return ck_fail(c, 400, "invalid chunk size");
        c->remaining = 0;
        c->size_chars = 0;
        c->state = CK_SIZE;
        return size_digit(c, d);
    case CK_SIZE:
        if ((d = hex_value(ch)) >= 0)
            return size_digit(c, d);
        if (ch == '\r') {
            c->state = CK_SIZE_LF;
        } else if (ch == ';') {
            c->state = CK_EXT;
            if (++c->ext_bytes > H1_CHUNK_EXT_MAX)
                return ck_fail(c, 413, "chunk extensions too large");
        } else if (is_ows((char)ch)) {
            c->state = CK_SIZE_WS;
            if (++c->size_chars > H1_CHUNK_SIZE_CHARS_MAX)
                return ck_fail(c, 400, "chunk size line too long");
        } else {
            return ck_fail(c, 400, "invalid chunk size");
        }
        return 0;
    case CK_SIZE_WS:
        /* RFC 9112 7.1.1: BWS is only allowed before a chunk extension. */
        if (ch == ';') {
            c->state = CK_EXT;
            if (++c->ext_bytes > H1_CHUNK_EXT_MAX)
                return ck_fail(c, 413, "chunk extensions too large");
        } else if (is_ows((char)ch)) {
            if (++c->size_chars > H1_CHUNK_SIZE_CHARS_MAX)
                return ck_fail(c, 400, "chunk size line too long");
        } else {
            return ck_fail(c, 400, "invalid chunk size");
        }
        return 0;
    case CK_EXT:
        if (ch == '\r') {
            c->state = CK_SIZE_LF;
            return 0;
        }
        if (!is_field_char(ch))
            return ck_fail(c, 400, "invalid character in chunk extension");
        /* Counted over the whole body: tiny chunks with large extensions cost CPU, not memory. */
        if (++c->ext_bytes > H1_CHUNK_EXT_MAX)
            return ck_fail(c, 413, "chunk extensions too large");
        return 0;
    case CK_SIZE_LF:
        if (ch != '\n')
            return ck_fail(c, 400, "chunk size line not ended by CRLF");
        c->state = c->remaining ? CK_DATA : CK_TRAILER;
        return 0;
    case CK_DATA_CR:
        if (ch != '\r')
            return ck_fail(c, 400, "chunk data not followed by CRLF");
        c->state = CK_DATA_LF;
        return 0;
    case CK_DATA_LF:
        if (ch != '\n')
            return ck_fail(c, 400, "chunk data not followed by CRLF");
        c->state = CK_SIZE_FIRST;
        return 0;
    default: break;
    }

    /* Trailer section: shape-checked, bounded, and dropped. */
    if (++c->trailer_bytes > H1_TRAILERS_MAX)
        return ck_fail(c, 431, "trailer section too large");
    switch (c->state) {
    case CK_TRAILER:
        if (ch == '\r')
            c->state = CK_END_LF;
        else if (is_tchar(ch))
            c->state = CK_TRAILER_NAME;
        else
            return ck_fail(c, 400, "invalid trailer field");
        return 0;
    case CK_TRAILER_NAME:
        if (ch == ':')
            c->state = CK_TRAILER_VALUE;
        else if (!is_tchar(ch))
            return ck_fail(c, 400, "invalid trailer field");
        return 0;
    case CK_TRAILER_VALUE:
        if (ch == '\r')
            c->state = CK_TRAILER_LF;
        else if (!is_field_char(ch))
            return ck_fail(c, 400, "invalid trailer field");
        return 0;
    case CK_TRAILER_LF:
        if (ch != '\n')
            return ck_fail(c, 400, "trailer line not ended by CRLF");
        c->state = CK_TRAILER;
        return 0;
    case CK_END_LF:
        if (ch != '\n')
            return ck_fail(c, 400, "chunked body not ended by CRLF");
        c->state = CK_DONE;
        return 0;
    default: assert(!"unreachable chunked state"); return ck_fail(c, 400, "internal error");
    }
}

int h1_chunked_decode(struct h1_chunked *c, const char *in, size_t len, size_t *consumed, char *out,
                      size_t *produced)
{
    size_t i = 0, o = 0;
    int rc = 0;
    while (i < len && c->state != CK_DONE && c->state != CK_ERROR) {
        if (c->state == CK_DATA) {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            /* memmove: out may be in itself, a little behind the read position. */
            memmove(out + o, in + i, n);
            o += n;
            i += n;
            c->remaining -= n;
            c->total += n;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            continue;
        }
        rc = chunk_byte(c, (unsigned char)in[i]);
        if (rc < 0)
            break;
        i++;
    }
    *consumed = i;
    *produced = o;
    if (c->state == CK_ERROR)
        return err_for(c->status);
    return c->state == CK_DONE ? 0 : ERR_AGAIN;
}

/* Bodies, whatever their framing. */

int h1_body_reader_init(struct h1_body_reader *b, const struct h1_request *req, uint64_t body_max)
{
    memset(b, 0, sizeof(*b));
    b->kind = req->body;
    if (req->body == H1_BODY_CHUNKED) {
        h1_chunked_init(&b->chunked, body_max);
    } else if (req->body == H1_BODY_LENGTH) {
        if (req->content_length > body_max) {
            b->status = 413;
            b->reason = "request body too large";
            return ERR_LIMIT;
        }
        b->left = req->content_length;
    }
    return 0;
}

int h1_body_read(struct h1_body_reader *b, const char *in, size_t len, size_t *consumed, char *out,
                 size_t *produced)
{
    if (b->kind == H1_BODY_CHUNKED) {
        int rc = h1_chunked_decode(&b->chunked, in, len, consumed, out, produced);
        b->total = b->chunked.total;
        b->status = b->chunked.status;
        b->reason = b->chunked.reason;
        return rc;
    }
    if (b->status) { /* Content-Length over the limit: nothing is read */
        *consumed = *produced = 0;
        return ERR_LIMIT;
    }
    size_t n = len < b->left ? len : (size_t)b->left;
    if (n)
        memmove(out, in, n);
    b->left -= n;
    b->total += n;
    *consumed = n;
    *produced = n;
    return b->left == 0 ? 0 : ERR_AGAIN;
}

/* Responses. */

const char *h1_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Appends n bytes of s at *o; false when out has no room. */
static bool put(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    if (cap - *o < n)
        return false;
    memcpy(out + *o, s, n);
    *o += n;
    return true;
}

int h1_format_head(char *out, size_t cap, int status, const char *const *fields)
{
    if (status < 100 || status > 999)
        return ERR_INVALID;
    if (cap > (size_t)0x7fffffff)
        cap = 0x7fffffff; /* the length must fit the int return */
    for (size_t k = 0; fields && fields[k]; k += 2) {
        const char *v = fields[k + 1];
        if (!v || !is_token(fields[k], strlen(fields[k])))
            return ERR_INVALID;
        for (; *v; v++) {
            if (!is_field_char((unsigned char)*v))
                return ERR_INVALID;
        }
    }
    char code[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), ' '};
    const char *phrase = h1_status_text(status);
    size_t o = 0;
    if (!put(out, cap, &o, "HTTP/1.1 ", 9) || !put(out, cap, &o, code, 4) ||
        !put(out, cap, &o, phrase, strlen(phrase)) || !put(out, cap, &o, "\r\n", 2))
        return ERR_LIMIT;
    for (size_t k = 0; fields && fields[k]; k += 2) {
        if (!put(out, cap, &o, fields[k], strlen(fields[k])) || !put(out, cap, &o, ": ", 2) ||
            !put(out, cap, &o, fields[k + 1], strlen(fields[k + 1])) ||
            !put(out, cap, &o, "\r\n", 2))
            return ERR_LIMIT;
    }
    if (!put(out, cap, &o, "\r\n", 2))
        return ERR_LIMIT;
    return (int)o;
}
