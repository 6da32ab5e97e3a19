/*
 * auth: JWT verification and subject grants (see auth.h for the token
 * format and the permission rule).
 *
 * auth_verify() takes a token through these steps, refusing at the first
 * failure with a static reason:
 *   1. shape: at most AUTH_TOKEN_MAX bytes, only base64url characters and
 *      exactly two dots, header and claims non-empty;
 *   2. header, decoded and parsed here (strict base64url, duplicate JSON
 *      members refused so that libjwt and this file cannot read two
 *      different "alg"s): "none" is refused, the algorithm picks the key
 *      family, and an empty signature is refused;
 *   3. signature: libjwt's jwt_decode() with each candidate key of that
 *      family, never an empty key (libjwt then skips verification), and
 *      its decoded algorithm compared with ours;
 *   4. claims: exp/nbf with leeway, iss, aud, then the "sluice" grant.
 *
 * Keys are loaded once and never written again, and every libjwt and
 * jansson object lives inside one call, so verification needs no lock.
 * RSA and EC keys are re-serialized as SubjectPublicKeyInfo PEM at load,
 * the only form libjwt 1.10 reads. libjwt re-parses that PEM per call;
 * a few microseconds next to the RSA operation, and it keeps libjwt's
 * key handling out of our lifetime rules.
 *
 * OpenSSL keeps a per-thread error queue that SSL_get_error() consults;
 * libjwt leaves entries there when a signature fails. auth_verify()
 * clears it before returning, since it runs on the worker threads that
 * do TLS.
 */
#include "sluice/auth.h"

#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <jwt.h>
#include <math.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#include <openssl/ec.h>
#endif

#include "sluice/err.h"
#include "sluice/route.h"
#include "sluice/mem.h"
#include "sluice/subject.h"

#define KEY_FILE_MAX (64 * 1024) /* bytes read from a key or secret file */
#define KID_MAX 128
#define SUB_MAX 128
#define SUBJECT_TEMPLATE_MAX 512 /* bytes of an expanded default subject */
#define RSA_MIN_BITS 2048
/* NumericDate bound: keeps exp + leeway far from int64 overflow. */
#define DATE_MAX 9007199254740992.0 /* 2^53 */

enum family { FAM_HS, FAM_RSA, FAM_EC };

struct alg {
    const char *name;
    jwt_alg_t jwt;
    enum family fam;
};

static const struct alg algs[] = {
    {"HS256", JWT_ALG_HS256, FAM_HS}, {"HS384", JWT_ALG_HS384, FAM_HS},
    {"HS512", JWT_ALG_HS512, FAM_HS}, {"RS256", JWT_ALG_RS256, FAM_RSA},
    {"ES256", JWT_ALG_ES256, FAM_EC},
};

struct key {
    enum family fam;
    char *kid;           /* NULL when unnamed; always NULL for the HS secret */
    unsigned char *data; /* raw secret, or SPKI PEM for RSA/EC */
    size_t len;          /* bytes; > 0 always (libjwt skips verification on 0) */
};

struct auth {
    enum auth_mode mode;
    struct key *keys; /* nkeys entries, HS secret first when configured */
    size_t nkeys;
    int64_t leeway_s;
    char *audience; /* NULL = not checked */
    char *issuer;   /* NULL = not checked */
};

struct auth_grant {
    atomic_int refs;    /* owners: requests, streams, a callout cache entry */
    int64_t expires;    /* Unix seconds: exp + leeway; 0 = never */
    char *sub;          /* sanitized "sub" (the principal), or NULL */
    char **patterns[2]; /* per enum auth_action; each valid with wildcards */
    size_t npatterns[2];
    char **defaults;    /* server-chosen subjects, "{sub}" expanded; valid */
    size_t ndefaults;
    bool renewable;     /* a callout's: re-asked at expiry rather than ended */
};

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int code,
                                                      const char *fmt, ...)
{
    if (errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Reads a whole file of at most KEY_FILE_MAX bytes; NUL-terminated copy in *out. */
static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = mem_alloc(KEY_FILE_MAX + 1);
    size_t n = fread(buf, 1, KEY_FILE_MAX + 1, f);
    int rc = 0;
    if (ferror(f))
        rc = fail(err, errlen, ERR_IO, "%s: %s", path, "read error");
    else if (n > KEY_FILE_MAX)
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", path, "larger than 64 KiB");
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;
}

static size_t count_str(const char *hay, size_t n, const char *needle)
{
    size_t count = 0, nl = strlen(needle);
    for (const char *p = hay; (p = memmem(p, n - (size_t)(p - hay), needle, nl)); p += nl)
        count++;
    return count;
}

static int load_secret(struct key *k, const char *path, char *err, size_t errlen)
{
    char *buf;
    size_t n;
    int rc = read_file(path, &buf, &n, err, errlen);
    if (rc)
        return rc;
    /* `openssl rand -base64 48 > file` and editors add a line end; it is not part of the secret. */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (count_str(buf, n, "-----BEGIN"))
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", path,
                  "looks like a PEM key, not an HS secret (a public key must never be an HMAC "
                  "secret)");
    else if (n < AUTH_HS_SECRET_MIN)
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", path, "HS secret shorter than 32 bytes");
    if (rc) {
        OPENSSL_cleanse(buf, KEY_FILE_MAX + 1);
        free(buf);
        return rc;
    }
    k->fam = FAM_HS;
    k->kid = NULL;
    k->data = mem_alloc(n);
    memcpy(k->data, buf, n);
    k->len = n;
    OPENSSL_cleanse(buf, KEY_FILE_MAX + 1);
    free(buf);
    return 0;
}

static bool is_p256(EVP_PKEY *pkey)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    char name[64];
    size_t len = 0;
    return EVP_PKEY_get_group_name(pkey, name, sizeof(name), &len) == 1 &&
           (strcmp(name, "prime256v1") == 0 || strcmp(name, "P-256") == 0);
#else
    const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
    return ec && EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) == NID_X9_62_prime256v1;
#endif
}

static int load_public_key(struct key *k, const struct auth_key_file *kf, char *err, size_t errlen)
{
    char *buf;
    size_t n;
    int rc = read_file(kf->path, &buf, &n, err, errlen);
    if (rc)
        return rc;
    EVP_PKEY *pkey = NULL;
    BIO *in = NULL, *pem = NULL;
    /* One PEM block only: a private key or a second key in the file is an operator mistake. */
    if (count_str(buf, n, "PRIVATE KEY")) {
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path,
                  "holds a private key; give the public key only");
        goto out;
    }
    if (count_str(buf, n, "-----BEGIN ") != 1) {
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path,
                  "expected exactly one PEM public key");
        goto out;
    }
    in = BIO_new_mem_buf(buf, (int)n);
    pkey = in ? PEM_read_bio_PUBKEY(in, NULL, NULL, NULL) : NULL;
    if (!pkey) {
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path, "not a PEM public key");
        goto out;
    }
    int type = EVP_PKEY_base_id(pkey);
    if (type == EVP_PKEY_RSA) {
        if (EVP_PKEY_bits(pkey) < RSA_MIN_BITS) {
            rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path,
                      "RSA key shorter than 2048 bits");
            goto out;
        }
        k->fam = FAM_RSA;
    } else if (type == EVP_PKEY_EC) {
        if (!is_p256(pkey)) {
            rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path,
                      "EC key is not on P-256 (only ES256 is supported)");
            goto out;
        }
        k->fam = FAM_EC;
    } else {
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path,
                  "unsupported key type (RSA or EC P-256)");
        goto out;
    }
    pem = BIO_new(BIO_s_mem());
    char *p;
    long plen;
    if (!pem || !PEM_write_bio_PUBKEY(pem, pkey) || (plen = BIO_get_mem_data(pem, &p)) <= 0) {
        rc = fail(err, errlen, ERR_INVALID, "%s: %s", kf->path, "cannot re-encode the key");
        goto out;
    }
    k->data = mem_alloc((size_t)plen);
    memcpy(k->data, p, (size_t)plen);
    k->len = (size_t)plen;
    k->kid = kf->kid ? mem_strdup(kf->kid) : NULL;
out:
    BIO_free(pem);
    EVP_PKEY_free(pkey);
    BIO_free(in);
    free(buf);
    ERR_clear_error();
    return rc;
}

static bool kid_ok(const char *kid)
{
    size_t n = strlen(kid);
    if (n == 0 || n > KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)kid[i] <= 0x20 || (unsigned char)kid[i] >= 0x7f)
            return false;
    return true;
}

int auth_new(struct auth **out, const struct auth_params *p, char *err, size_t errlen)
{
    *out = NULL;
    bool any_key = p->hs_secret_file || p->nkeys > 0;
    if (p->mode != AUTH_NONE && p->mode != AUTH_JWT && p->mode != AUTH_CALLOUT)
        return fail(err, errlen, ERR_INVALID, "%s", "unknown auth mode");
    if (p->mode == AUTH_CALLOUT && any_key)
        return fail(err, errlen, ERR_INVALID, "%s",
                    "auth = callout, but a JWT secret or key is configured");
    if (p->mode == AUTH_NONE && any_key)
        return fail(err, errlen, ERR_INVALID, "%s",
                    "auth = none, but a JWT secret or key is configured");
    if (p->mode == AUTH_JWT && !any_key)
        return fail(err, errlen, ERR_INVALID, "%s",
                    "auth = jwt needs an HS secret file or a public key file");
    if (p->nkeys > AUTH_MAX_KEYS)
        return fail(err, errlen, ERR_INVALID, "%s", "more than 16 public key files");
    if (p->leeway_s < 0 || p->leeway_s > AUTH_LEEWAY_MAX_S)
        return fail(err, errlen, ERR_INVALID, "%s", "leeway must be 0..3600 seconds");
    if ((p->audience && !*p->audience) || (p->issuer && !*p->issuer))
        return fail(err, errlen, ERR_INVALID, "%s", "empty audience or issuer");
    for (size_t i = 0; i < p->nkeys; i++) {
        const char *kid = p->keys[i].kid;
        if (kid && !kid_ok(kid))
            return fail(err, errlen, ERR_INVALID, "%s: %s", p->keys[i].path,
                        "key id must be 1..128 printable characters");
        for (size_t j = 0; kid && j < i; j++)
            if (p->keys[j].kid && strcmp(p->keys[j].kid, kid) == 0)
                return fail(err, errlen, ERR_INVALID, "%s: duplicate key id %s", p->keys[i].path,
                            kid);
    }

    struct auth *a = mem_calloc(1, sizeof(*a));
    a->mode = p->mode;
    a->leeway_s = p->leeway_s;
    a->audience = p->audience ? mem_strdup(p->audience) : NULL;
    a->issuer = p->issuer ? mem_strdup(p->issuer) : NULL;
    a->keys = mem_calloc(p->nkeys + 1, sizeof(*a->keys));
    int rc = 0;
    if (p->hs_secret_file) {
        rc = load_secret(&a->keys[0], p->hs_secret_file, err, errlen);
        if (rc)
            goto fail;
        a->nkeys = 1;
    }
    for (size_t i = 0; i < p->nkeys; i++) {
        rc = load_public_key(&a->keys[a->nkeys], &p->keys[i], err, errlen);
        if (rc)
            goto fail;
        a->nkeys++;
    }
    *out = a;
    return 0;
fail:
    auth_free(a);
    return rc;
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->nkeys; i++) {
        OPENSSL_cleanse(a->keys[i].data, a->keys[i].len);
        free(a->keys[i].data);
        free(a->keys[i].kid);
    }
    free(a->keys);
    free(a->audience);
    free(a->issuer);
    free(a);
}

bool auth_required(const struct auth *a)
{
    return a && (a->mode == AUTH_JWT || a->mode == AUTH_CALLOUT);
}

/* ---- grants ---- */

static struct auth_grant *grant_new(void)
{
    struct auth_grant *g = mem_calloc(1, sizeof(struct auth_grant));
    atomic_init(&g->refs, 1);
    return g;
}

struct auth_grant *auth_grant_ref(struct auth_grant *g)
{
    if (g)
        atomic_fetch_add(&g->refs, 1);
    return g;
}

void auth_grant_free(struct auth_grant *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) > 1)
        return;
    for (size_t i = 0; i < g->ndefaults; i++)
        free(g->defaults[i]);
    free(g->defaults);
    for (int act = 0; act < 2; act++) {
        for (size_t i = 0; i < g->npatterns[act]; i++)
            free(g->patterns[act][i]);
        free(g->patterns[act]);
    }
    free(g->sub);
    free(g);
}

struct auth_grant *auth_grant_new_all(void)
{
    struct auth_grant *g = grant_new();
    for (int act = 0; act < 2; act++) {
        g->patterns[act] = mem_alloc(sizeof(char *));
        g->patterns[act][0] = mem_strdup(">");
        g->npatterns[act] = 1;
    }
    return g;
}

bool auth_can(const struct auth_grant *g, enum auth_action act, const char *subject)
{
    if (!g || !subject || (act != AUTH_SUBSCRIBE && act != AUTH_PUBLISH))
        return false;
    if (!subject_valid(subject, strlen(subject), true, NULL))
        return false;
    for (size_t i = 0; i < g->npatterns[act]; i++)
        if (subject_covers(g->patterns[act][i], subject))
            return true;
    /* The issuer chose the defaults: they are granted for subscribing as they are. */
    for (size_t i = 0; act == AUTH_SUBSCRIBE && i < g->ndefaults; i++)
        if (subject_covers(g->defaults[i], subject))
            return true;
    return false;
}

bool auth_can_subscribe(const struct auth_grant *g, const char *subject)
{
    return auth_can(g, AUTH_SUBSCRIBE, subject);
}

bool auth_can_publish(const struct auth_grant *g, const char *subject)
{
    return auth_can(g, AUTH_PUBLISH, subject);
}

int64_t auth_grant_expires(const struct auth_grant *g) { return g ? g->expires : 0; }

const char *auth_grant_subject(const struct auth_grant *g) { return g ? g->sub : NULL; }

size_t auth_grant_patterns(const struct auth_grant *g, enum auth_action act,
                           const char *const **patterns)
{
    if (!g || (act != AUTH_SUBSCRIBE && act != AUTH_PUBLISH)) {
        *patterns = NULL;
        return 0;
    }
    *patterns = (const char *const *)g->patterns[act];
    return g->npatterns[act];
}

/* ---- token parsing ---- */

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Unpadded base64url, canonical only (unused trailing bits zero): one
 * text, one meaning. out needs n * 3 / 4 + 1 bytes.
 */
static bool b64url_decode(const char *s, size_t n, unsigned char *out, size_t *outlen)
{
    if (n % 4 == 1)
        return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (acc & ((1u << bits) - 1))
        return false;
    *outlen = o;
    return true;
}

/* A base64url-encoded JSON object, or NULL. */
static json_t *decode_json(const char *s, size_t n)
{
    unsigned char *buf = mem_alloc(n * 3 / 4 + 1);
    size_t len;
    json_t *js = NULL;
    if (b64url_decode(s, n, buf, &len))
        js = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);
    free(buf);
    if (js && !json_is_object(js)) {
        json_decref(js);
        js = NULL;
    }
    return js;
}

/* Three base64url parts, the first two non-empty; sets the offsets of the two dots. */
static bool split_token(const char *t, size_t len, size_t *dot1, size_t *dot2)
{
    size_t dots[2], nd = 0;
    for (size_t i = 0; i < len; i++) {
        if (t[i] == '.') {
            if (nd == 2)
                return false;
            dots[nd++] = i;
        } else if (b64val((unsigned char)t[i]) < 0) {
            return false;
        }
    }
    /* An empty signature is left for the caller to name: it is the alg-none attack's shape. */
    if (nd != 2 || dots[0] == 0 || dots[1] == dots[0] + 1)
        return false;
    *dot1 = dots[0];
    *dot2 = dots[1];
    return true;
}

static const char *check_header(const struct auth *a, json_t *hdr, const struct alg **alg,
                                const char **kid)
{
    const char *name = json_string_value(json_object_get(hdr, "alg"));
    if (!name)
        return "malformed token header";
    /* libjwt reads "alg" case-insensitively: refuse every spelling of none. */
    if (strcasecmp(name, "none") == 0)
        return "alg none refused";
    *alg = NULL;
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
        if (strcmp(name, algs[i].name) == 0)
            *alg = &algs[i];
    if (!*alg)
        return "unsupported alg";
    bool have = false;
    for (size_t i = 0; i < a->nkeys; i++)
        have |= a->keys[i].fam == (*alg)->fam;
    if (!have)
        return "no key configured for this alg";
    json_t *typ = json_object_get(hdr, "typ");
    if (typ && !(json_is_string(typ) && strcasecmp(json_string_value(typ), "JWT") == 0))
        return "unsupported token type";
    /* RFC 7515 4.1.11: extensions listed in crit must be understood; we know none. */
    if (json_object_get(hdr, "crit"))
        return "unsupported critical header";
    json_t *k = json_object_get(hdr, "kid");
    if (k && !json_is_string(k))
        return "malformed token header";
    *kid = k ? json_string_value(k) : NULL;
    return NULL;
}

static const char *check_signature(const struct auth *a, const char *token, size_t len,
                                   const struct alg *alg, const char *kid)
{
    bool named = false;
    for (size_t i = 0; kid && i < a->nkeys; i++)
        named |= a->keys[i].fam == alg->fam && a->keys[i].kid;
    char *buf = mem_strndup(token, len);
    const char *why = "bad signature";
    size_t tried = 0;
    for (size_t i = 0; i < a->nkeys; i++) {
        const struct key *k = &a->keys[i];
        if (k->fam != alg->fam || (named && (!k->kid || strcmp(k->kid, kid) != 0)))
            continue;
        tried++;
        jwt_t *jwt = NULL;
        if (jwt_decode(&jwt, buf, k->data, (int)k->len) == 0) {
            bool same = jwt_get_alg(jwt) == alg->jwt;
            jwt_free(jwt);
            if (same) {
                why = NULL;
                break;
            }
        }
    }
    if (tried == 0)
        why = "unknown key id";
    free(buf);
    return why;
}

/* A NumericDate as whole seconds, rounded up (now < exp and now >= nbf stay exact). */
static bool numeric_date(json_t *v, int64_t *out)
{
    double d;
    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    else
        return false;
    if (!isfinite(d) || d > DATE_MAX || d < -DATE_MAX)
        return false;
    /* ceil() without libm: exact here, since |d| <= 2^53. */
    int64_t t = (int64_t)d;
    *out = (double)t < d ? t + 1 : t;
    return true;
}

static bool audience_ok(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return true;
    }
    return false;
}

static char *sanitize_sub(json_t *v)
{
    if (!json_is_string(v))
        return NULL;
    size_t n = json_string_length(v);
    if (n > SUB_MAX)
        n = SUB_MAX;
    char *s = mem_strndup(json_string_value(v), n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            s[i] = '?';
    return s;
}

/*
 * obj's member name: absent (NULL, nothing set), or an array of at most
 * AUTH_MAX_PATTERNS strings, each turned by take() into a valid subject
 * appended to *list (*n of them; the array is allocated here). NULL, or
 * the first reason: what is wrong with the list (malformed, too_many) or
 * with an entry (take's).
 */
static const char *parse_list(json_t *obj, const char *name, const char *malformed,
                              const char *too_many, const struct auth_grant *g,
                              const char *(*take)(const struct auth_grant *g, const char *s,
                                                  size_t len, char **out),
                              char ***list, size_t *n)
{
    json_t *arr = json_object_get(obj, name);
    if (!arr)
        return NULL;
    if (!json_is_array(arr))
        return malformed;
    size_t count = json_array_size(arr);
    if (count > AUTH_MAX_PATTERNS)
        return too_many;
    *list = mem_calloc(count ? count : 1, sizeof(char *));
    for (size_t i = 0; i < count; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v)))
            return malformed;
        const char *why = take(g, json_string_value(v), json_string_length(v), &(*list)[*n]);
        if (why)
            return why;
        (*n)++;
    }
    return NULL;
}

/* A granted pattern, as it is. */
static const char *take_pattern(const struct auth_grant *g, const char *s, size_t len, char **out)
{
    (void)g;
    if (!subject_valid(s, len, true, NULL))
        return "invalid subject pattern in sluice claim";
    *out = mem_strndup(s, len);
    return NULL;
}

static const char *parse_patterns(json_t *grant, const char *name, struct auth_grant *g,
                                  enum auth_action act)
{
    return parse_list(grant, name, "malformed sluice claim", "too many patterns in sluice claim",
                      g, take_pattern, &g->patterns[act], &g->npatterns[act]);
}

bool auth_principal_is_token(const char *p)
{
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > SUB_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("-_@+=:", c);
        if (!ok || c == '\0')
            return false;
    }
    return true;
}

int auth_expand_template(const struct auth_grant *g, const char *tmpl, char *out, size_t outsz)
{
    static const char SUB[] = "{sub}";
    size_t o = 0;
    for (const char *p = tmpl; *p;) {
        const char *hit = strstr(p, SUB);
        size_t lit = hit ? (size_t)(hit - p) : strlen(p);
        const char *add = p;
        size_t n = lit;
        for (int part = 0; part < 2; part++) {
            if (o + n >= outsz)
                return ERR_INVALID;
            memcpy(out + o, add, n);
            o += n;
            if (!hit)
                break;
            /* A principal that is not one plain token would add dots or wildcards: refused. */
            if (!g || !auth_principal_is_token(g->sub))
                return ERR_INVALID;
            add = g->sub;
            n = strlen(g->sub);
        }
        p += lit + (hit ? sizeof(SUB) - 1 : 0);
    }
    out[o] = '\0';
    return subject_valid(out, o, true, NULL) ? 0 : ERR_INVALID;
}

/* A default subject: the template with "{sub}" expanded from g's principal. */
static const char *take_default(const struct auth_grant *g, const char *s, size_t len, char **out)
{
    (void)len; /* NUL-free (parse_list): s ends where len does */
    char subject[SUBJECT_TEMPLATE_MAX];
    if (auth_expand_template(g, s, subject, sizeof(subject)) != 0)
        return "default subject invalid for this principal";
    *out = mem_strdup(subject);
    return NULL;
}

/* "default": templates expanded with g's principal (set before). */
static const char *parse_defaults(json_t *obj, struct auth_grant *g)
{
    const char *why = parse_list(obj, "default", "malformed default subjects",
                                 "too many default subjects", g, take_default, &g->defaults,
                                 &g->ndefaults);
    /* One stream on them all: the rule for requested subjects (a.* with a.b is refused). */
    for (size_t i = 0; !why && i < g->ndefaults; i++)
        for (size_t j = i + 1; !why && j < g->ndefaults; j++)
            if (subject_overlaps(g->defaults[i], g->defaults[j]))
                why = "default subjects overlap";
    return why;
}

size_t auth_grant_defaults(const struct auth_grant *g, const char *const **subjects)
{
    *subjects = g ? (const char *const *)g->defaults : NULL;
    return g ? g->ndefaults : 0;
}

bool auth_grant_renewable(const struct auth_grant *g) { return g && g->renewable; }

static const char *check_claims(const struct auth *a, json_t *claims, int64_t now_s,
                                struct auth_grant *g)
{
    json_t *v = json_object_get(claims, "exp");
    int64_t exp, nbf = 0;
    if (!v)
        return "missing exp claim";
    if (!numeric_date(v, &exp))
        return "malformed exp claim";
    if (now_s >= exp + a->leeway_s)
        return "token expired";
    v = json_object_get(claims, "nbf");
    if (v && !numeric_date(v, &nbf))
        return "malformed nbf claim";
    if (v && now_s < nbf - a->leeway_s)
        return "token not yet valid";
    if (a->issuer) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, a->issuer) != 0)
            return "wrong issuer";
    }
    if (a->audience && !audience_ok(json_object_get(claims, "aud"), a->audience))
        return "wrong audience";
    json_t *grant = json_object_get(claims, "sluice");
    if (!grant)
        return "missing sluice claim";
    if (!json_is_object(grant))
        return "malformed sluice claim";
    g->sub = sanitize_sub(json_object_get(claims, "sub"));
    const char *why = parse_patterns(grant, "subscribe", g, AUTH_SUBSCRIBE);
    if (!why)
        why = parse_patterns(grant, "publish", g, AUTH_PUBLISH);
    if (!why)
        why = parse_defaults(grant, g);
    if (why)
        return why;
    g->expires = exp + a->leeway_s;
    return NULL;
}

int auth_verify(const struct auth *a, const char *token, size_t len, int64_t now_s,
                struct auth_grant **out, const char **reason)
{
    *out = NULL;
    if (reason)
        *reason = NULL;
    if (a->mode == AUTH_NONE) {
        *out = auth_grant_new_all();
        return 0;
    }
    const char *why = NULL, *kid = NULL;
    const struct alg *alg = NULL;
    json_t *hdr = NULL, *claims = NULL;
    struct auth_grant *g = NULL;
    size_t dot1, dot2;
    if (!token || len == 0)
        why = "no token";
    else if (len > AUTH_TOKEN_MAX)
        why = "token too long";
    else if (!split_token(token, len, &dot1, &dot2))
        why = "malformed token";
    else if (!(hdr = decode_json(token, dot1)))
        why = "malformed token header";
    else if ((why = check_header(a, hdr, &alg, &kid)))
        ;
    else if (dot2 == len - 1)
        why = "missing signature";
    else if (!(claims = decode_json(token + dot1 + 1, dot2 - dot1 - 1)))
        why = "malformed claims";
    else if ((why = check_signature(a, token, len, alg, kid)))
        ;
    else
        why = check_claims(a, claims, now_s, g = grant_new());
    json_decref(claims);
    json_decref(hdr);
    ERR_clear_error();
    if (why) {
        auth_grant_free(g);
        if (reason)
            *reason = why;
        return ERR_INVALID;
    }
    *out = g;
    return 0;
}

/* ---- the callout's answer ---- */

static const char *callout_members(json_t *obj)
{
    static const char *const known[] = {"principal", "subscribe", "publish",
                                        "default",   "expires",   "ttl"};
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok)
            return "unknown member in callout answer";
    }
    return NULL;
}

static const char *callout_principal(json_t *v, struct auth_grant *g)
{
    if (!json_is_string(v))
        return "callout answer without a principal";
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n == 0 || n > SUB_MAX)
        return "callout principal must be 1..128 bytes";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] >= 0x7f)
            return "callout principal must be printable ASCII without spaces";
    g->sub = mem_strndup(s, n);
    return NULL;
}

/* A whole number of seconds in [lo, hi]. */
static bool whole_seconds(json_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t t = json_integer_value(v);
    if (t < lo || t > hi)
        return false;
    *out = (int64_t)t;
    return true;
}

int auth_grant_from_callout(const char *json, size_t len, int64_t now_s,
                            struct auth_grant **out, int64_t *ttl_s, const char **reason)
{
    *out = NULL;
    *ttl_s = -1;
    const char *why = NULL;
    struct auth_grant *g = NULL;
    json_t *obj = NULL;
    int64_t expires = 0;
    if (len > AUTH_CALLOUT_BODY_MAX)
        why = "callout answer too large";
    else if (!(obj = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL)) ||
             !json_is_object(obj))
        why = "callout answer is not a JSON object";
    else if ((why = callout_members(obj)))
        ;
    else if ((why = callout_principal(json_object_get(obj, "principal"), g = grant_new())))
        ;
    else if ((why = parse_patterns(obj, "subscribe", g, AUTH_SUBSCRIBE)))
        ;
    else if ((why = parse_patterns(obj, "publish", g, AUTH_PUBLISH)))
        ;
    else if ((why = parse_defaults(obj, g)))
        ;
    else if (json_object_get(obj, "expires") &&
             !whole_seconds(json_object_get(obj, "expires"), now_s + 1, (int64_t)DATE_MAX,
                            &expires))
        why = "callout expires must be a whole Unix second in the future";
    else if (json_object_get(obj, "ttl") &&
             !whole_seconds(json_object_get(obj, "ttl"), 0, 86400, ttl_s))
        why = "callout ttl must be 0..86400 seconds";
    json_decref(obj);
    if (why) {
        auth_grant_free(g);
        *ttl_s = -1;
        *reason = why;
        return ERR_INVALID;
    }
    g->expires = expires;
    g->renewable = true;
    *out = g;
    return 0;
}

/* ---- extraction ---- */

static bool ows(char c) { return c == ' ' || c == '\t'; }

bool auth_token_from_bearer(const char *value, size_t len, const char **tok, size_t *toklen)
{
    size_t i = 0;
    while (i < len && ows(value[i]))
        i++;
    if (len - i < 7 || strncasecmp(value + i, "bearer", 6) != 0 || !ows(value[i + 6]))
        return false;
    i += 6;
    while (i < len && ows(value[i]))
        i++;
    size_t end = len;
    while (end > i && ows(value[end - 1]))
        end--;
    if (end == i)
        return false;
    for (size_t j = i; j < end; j++)
        if ((unsigned char)value[j] <= 0x20 || (unsigned char)value[j] >= 0x7f)
            return false; /* token68 has no spaces or controls */
    *tok = value + i;
    *toklen = end - i;
    return true;
}

bool auth_token_from_cookie(const char *value, size_t len, const char *name, const char **tok,
                            size_t *toklen)
{
    size_t nlen = strlen(name);
    const char *p = value, *end = value + len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pe = semi ? semi : end;
        while (p < pe && ows(*p))
            p++;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        if (eq) {
            const char *ne = eq;
            while (ne > p && ows(ne[-1]))
                ne--;
            if ((size_t)(ne - p) == nlen && memcmp(p, name, nlen) == 0) {
                const char *v = eq + 1, *ve = pe;
                while (v < ve && ows(*v))
                    v++;
                while (ve > v && ows(ve[-1]))
                    ve--;
                if (ve - v >= 2 && *v == '"' && ve[-1] == '"') {
                    v++;
                    ve--;
                }
                if (ve == v)
                    return false;
                *tok = v;
                *toklen = (size_t)(ve - v);
                return true;
            }
        }
        p = semi ? semi + 1 : end;
    }
    return false;
}

int auth_token_from_query(const char *query, size_t len, char *out, size_t outsz, size_t *outlen)
{
    static const char KEY[] = "access_token";
    bool found = false;
    *outlen = 0;
    if (outsz)
        out[0] = '\0';
    while (len > 0) {
        const char *amp = memchr(query, '&', len);
        size_t plen = amp ? (size_t)(amp - query) : len;
        const char *eq = memchr(query, '=', plen);
        if (eq && (size_t)(eq - query) == sizeof(KEY) - 1 &&
            memcmp(query, KEY, sizeof(KEY) - 1) == 0) {
            /* Two tokens in one request: which one a proxy or a log saw is anyone's guess. */
            if (found)
                return ERR_INVALID;
            size_t vlen = plen - sizeof(KEY);
            if (vlen >= outsz)
                return ERR_LIMIT;
            memcpy(out, eq + 1, vlen);
            long n = http_percent_decode(out, vlen);
            if (n < 0 || memchr(out, '\0', (size_t)n)) {
                out[0] = '\0';
                return ERR_INVALID;
            }
            out[n] = '\0';
            *outlen = (size_t)n;
            found = true;
        }
        if (!amp)
            break;
        len -= plen + 1;
        query = amp + 1;
    }
    return found && *outlen > 0 ? 0 : ERR_NOTFOUND;
}

size_t auth_www_authenticate(char *out, size_t outsz, const char *reason)
{
    if (outsz == 0)
        return 0;
    int n;
    if (!reason || strcmp(reason, "no token") == 0)
        n = snprintf(out, outsz, "Bearer realm=\"sluice\"");
    else
        n = snprintf(out, outsz,
                     "Bearer realm=\"sluice\", error=\"invalid_token\", "
                     "error_description=\"%s\"",
                     reason);
    if (n < 0) {
        out[0] = '\0';
        return 0;
    }
    return (size_t)n < outsz ? (size_t)n : outsz - 1;
}
