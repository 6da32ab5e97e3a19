/*
 * reply: request stream names, routes and forwarded headers (see reply.h).
 *
 * The route table and the header list are the config strings themselves,
 * scanned per request: a handful of entries, read far less often than an
 * event is sent, and nothing to free or reload.
 */
#include "sluice/reply.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/mem.h"
#include "sluice/subject.h"

#define KEY_MAX 4096

static unsigned char key[KEY_MAX]; /* written once by reply_init(), before any worker */
static size_t key_len;

static const char HEX[] = "0123456789abcdef";

static void hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Calls fn on each comma-separated entry of list (spaces trimmed); stops when it returns true. */
static bool each_entry(const char *list, bool (*fn)(const char *e, size_t n, void *ctx), void *ctx)
{
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        const char *e = p;
        size_t en = n;
        while (en && (*e == ' ' || *e == '\t'))
            e++, en--;
        while (en && (e[en - 1] == ' ' || e[en - 1] == '\t'))
            en--;
        if (en && fn(e, en, ctx))
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

struct find {
    const char *path;
    size_t plen;
    char *subject;
    size_t cap;
    int at; /* entries seen */
};

/* "PATH SUBJECT": PATH up to the first space, SUBJECT after the spaces. */
static bool split_route(const char *e, size_t n, size_t *plen, const char **subj, size_t *slen)
{
    const char *sp = memchr(e, ' ', n);
    if (!sp)
        return false;
    *plen = (size_t)(sp - e);
    while (sp < e + n && *sp == ' ')
        sp++;
    *subj = sp;
    *slen = (size_t)(e + n - sp);
    return *plen > 0 && *slen > 0;
}

static bool on_route(const char *e, size_t n, void *ctx)
{
    struct find *f = ctx;
    size_t plen, slen;
    const char *subj;
    f->at++;
    if (!split_route(e, n, &plen, &subj, &slen) || plen != f->plen ||
        memcmp(e, f->path, plen) != 0 || slen >= f->cap)
        return false;
    memcpy(f->subject, subj, slen);
    f->subject[slen] = '\0';
    return true;
}

struct nth {
    int want, at;
    char *out;
    size_t cap;
};

static bool on_nth(const char *e, size_t n, void *ctx)
{
    struct nth *w = ctx;
    if (w->at++ != w->want)
        return false;
    size_t plen = strcspn(e, " ");
    plen = plen < n ? plen : n;
    snprintf(w->out, w->cap, "%.*s", (int)plen, e);
    return true;
}

bool reply_route_path(const char *routes, int index, char *out, size_t cap)
{
    struct nth w = {index, 0, out, cap};
    return each_entry(routes, on_nth, &w);
}

int reply_route_find(const char *routes, const char *path, size_t plen, char *subject,
                     size_t cap)
{
    struct find f = {path, plen, subject, cap, 0};
    return each_entry(routes, on_route, &f) ? f.at - 1 : -1;
}

/* What a request-route PATH may hold: it is also a metric label, written unescaped. */
static const char PATH_CHARS[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._~-";

struct check {
    char *err;
    size_t errlen;
    bool bad;
};

static bool on_check_route(const char *e, size_t n, void *ctx)
{
    struct check *c = ctx;
    size_t plen, slen;
    const char *subj, *why = "expected 'PATH SUBJECT'";
    bool ok = split_route(e, n, &plen, &subj, &slen);
    if (ok && (e[0] != '/' || strspn(e, PATH_CHARS) < plen || plen > 200)) {
        ok = false;
        why = "PATH must start with / and hold only letters, digits and / . _ ~ -";
    }
    if (ok && (slen >= 256 || !subject_valid(subj, slen, false, &why)))
        ok = false;
    if (ok && plen >= 8 && memcmp(e, "/streams", 8) == 0) {
        ok = false;
        why = "PATH under /streams is sluice's own";
    }
    if (!ok) {
        snprintf(c->err, c->errlen, "request-route '%.*s': %s", (int)n, e, why);
        c->bad = true;
    }
    return !ok;
}

static bool on_check_header(const char *e, size_t n, void *ctx)
{
    struct check *c = ctx;
    bool ok = n < 64;
    for (size_t i = 0; ok && i < n; i++) {
        char ch = e[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '-' || ch == '_';
    }
    /* The headers sluice sets itself cannot be forwarded over. */
    if (ok && ((n >= 4 && strncasecmp(e, "sse-", 4) == 0) ||
               (n == 11 && strncasecmp(e, "traceparent", 11) == 0) ||
               (n == 10 && strncasecmp(e, "tracestate", 10) == 0) || e[0] == ':'))
        ok = false;
    if (!ok) {
        snprintf(c->err, c->errlen,
                 "request-forward-headers: '%.*s' is not a header name sluice may forward",
                 (int)n, e);
        c->bad = true;
    }
    return !ok;
}

static int check_prefix(const char *name, const char *p, char *err, size_t errlen)
{
    const char *why = NULL;
    if (strlen(p) >= REPLY_PREFIX_MAX || !subject_valid(p, strlen(p), false, &why)) {
        snprintf(err, errlen, "%s '%s': %s", name, p, why ? why : "too long");
        return ERR_INVALID;
    }
    return 0;
}

int reply_init(const struct config *c, char *err, size_t errlen)
{
    struct check ck = {err, errlen, false};
    each_entry(c->request_routes, on_check_route, &ck);
    if (!ck.bad)
        each_entry(c->request_forward_headers, on_check_header, &ck);
    if (ck.bad)
        return ERR_INVALID;
    if (check_prefix("request-reply-prefix", c->request_reply_prefix, err, errlen) != 0 ||
        check_prefix("request-cancel-prefix", c->request_cancel_prefix, err, errlen) != 0)
        return ERR_INVALID;
    if (subject_overlaps(c->request_reply_prefix, c->request_cancel_prefix)) {
        snprintf(err, errlen, "request-reply-prefix and request-cancel-prefix must differ");
        return ERR_INVALID;
    }
    key_len = 0;
    if (!*c->request_secret_file)
        return 0;
    FILE *f = fopen(c->request_secret_file, "rb");
    if (!f) {
        snprintf(err, errlen, "request-secret-file %s: %s", c->request_secret_file,
                 strerror(errno));
        return ERR_IO;
    }
    key_len = fread(key, 1, sizeof(key), f);
    fclose(f);
    if (key_len < 16) {
        snprintf(err, errlen, "request-secret-file %s: at least 16 bytes, please",
                 c->request_secret_file);
        return ERR_INVALID;
    }
    return 0;
}

void reply_shutdown(void)
{
    OPENSSL_cleanse(key, sizeof(key));
    key_len = 0;
}

int reply_new_id(char out[REPLY_ID_LEN + 1])
{
    unsigned char raw[REPLY_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ERR_IO;
        got += (size_t)n;
    }
    hex(raw, sizeof(raw), out);
    return 0;
}

void reply_owner_tag(const char *principal, char out[REPLY_TAG_LEN + 1])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const unsigned char none = 0;
    HMAC(EVP_sha256(), key_len ? key : &none, (int)key_len, (const unsigned char *)principal,
         strlen(principal), mac, &n);
    hex(mac, REPLY_TAG_LEN / 2, out);
}

bool reply_owner_is(const char *tag, const char *principal)
{
    char want[REPLY_TAG_LEN + 1];
    reply_owner_tag(principal, want);
    return CRYPTO_memcmp(tag, want, REPLY_TAG_LEN) == 0;
}

struct name {
    const char *name;
    size_t n;
};

static bool on_name(const char *e, size_t n, void *ctx)
{
    const struct name *w = ctx;
    return n == w->n && strncasecmp(e, w->name, n) == 0;
}

bool reply_header_listed(const char *list, const char *name, size_t nlen)
{
    struct name w = {name, nlen};
    return *list && each_entry(list, on_name, &w);
}

bool reply_header_value_ok(const char *value, size_t n)
{
    return !memchr(value, '\r', n) && !memchr(value, '\n', n) && !memchr(value, '\0', n);
}
