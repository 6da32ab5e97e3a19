/*
 * test_auth: JWT verification, grants and token extraction.
 *
 * Tokens are minted in the test, with libjwt where it can express the
 * case and by hand (base64url + HMAC) where libjwt refuses to (odd
 * headers, broken JSON, "alg": "none"). Keys are throw-away test keys in
 * tests/unit/data (auth-*), protecting nothing, made with
 *   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out auth-rsa1.key
 *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out auth-ec1.key
 *   openssl pkey -in auth-rsa1.key -pubout -out auth-rsa1.pub
 * (likewise auth-rsa2, a 1024-bit RSA and a P-384 key kept only as
 * refused public keys, and auth-rsa1-pkcs1.pub from `openssl rsa
 * -RSAPublicKey_out`). SLUICE_TEST_DATA points there under ctest. A fixed
 * clock (NOW) keeps exp/nbf cases exact.
 */
/* cmocka.h needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <jwt.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/auth.h"
#include "sluice/revoke.h"
#include "sluice/err.h"

#define PATHLEN 1024
#define NOW 1800000000LL

/*
 * The path of a file in the test data directory. One buffer per name, kept
 * for the whole run, so paths stay valid while tests hold them in params.
 */
static const char *data_path(const char *name)
{
    static struct {
        const char *name;
        char path[PATHLEN];
    } paths[32];
    size_t i = 0;
    while (i < 32 && paths[i].name && strcmp(paths[i].name, name) != 0)
        i++;
    assert_true(i < 32);
    if (paths[i].name)
        return paths[i].path;
    paths[i].name = name;
    char *out = paths[i].path;
    const char *dir = getenv("SLUICE_TEST_DATA");
    if (dir != NULL && *dir != '\0') {
        snprintf(out, PATHLEN, "%s/%s", dir, name);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        int dlen = slash ? (int)(slash - __FILE__) : 1;
        snprintf(out, PATHLEN, "%.*s/data/%s", dlen, slash ? __FILE__ : ".", name);
    }
    return out;
}

/* Whole file, NUL-terminated; *n its length. */
static char *slurp(const char *name, size_t *n)
{
    FILE *f = fopen(data_path(name), "rb");
    assert_non_null(f);
    char *buf = malloc(65536);
    assert_non_null(buf);
    *n = fread(buf, 1, 65535, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

/* The HS secret as auth.c reads it: the file without its line end. */
static char *secret(size_t *n)
{
    char *s = slurp("auth-hs.secret", n);
    while (*n && (s[*n - 1] == '\n' || s[*n - 1] == '\r'))
        s[--*n] = '\0';
    return s;
}

/* ---- minting ---- */

static char *b64url(const void *data, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    int o = 0;
    for (int i = 0; i < len; i++) {
        if (out[i] == '=')
            continue;
        out[o++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[o] = '\0';
    return out;
}

/* header.claims.HMAC-SHA256(key) from raw JSON texts; signature omitted when key is NULL. */
static char *craft(const char *header, const char *claims, const void *key, size_t keylen)
{
    char *h = b64url(header, strlen(header)), *c = b64url(claims, strlen(claims));
    size_t n = strlen(h) + strlen(c) + 200;
    char *tok = malloc(n);
    assert_non_null(tok);
    snprintf(tok, n, "%s.%s", h, c);
    strcat(tok, ".");
    if (key) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int maclen;
        HMAC(EVP_sha256(), key, (int)keylen, (unsigned char *)tok, strlen(tok) - 1, mac, &maclen);
        char *s = b64url(mac, maclen);
        strcat(tok, s);
        free(s);
    }
    free(h);
    free(c);
    return tok;
}

static char *craft_hs(const char *header, const char *claims)
{
    size_t n;
    char *key = secret(&n);
    char *tok = craft(header, claims, key, n);
    free(key);
    return tok;
}

/* libjwt-signed token; keyfile NULL means the HS secret. kid may be NULL. */
static char *mint(jwt_alg_t alg, const char *keyfile, const char *kid, const char *claims)
{
    size_t n;
    char *key = keyfile ? slurp(keyfile, &n) : secret(&n);
    jwt_t *jwt;
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims), 0);
    if (kid)
        assert_int_equal(jwt_add_header(jwt, "kid", kid), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, (unsigned char *)key, (int)n), 0);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    jwt_free(jwt);
    free(key);
    return tok;
}

/* Claims valid at NOW with the given sluice grant JSON. */
static char *claims_with(const char *sluice)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf), "{\"exp\":%lld,\"sub\":\"user-42\",\"sluice\":%s}", NOW + 600,
             sluice);
    return buf;
}

#define GRANT "{\"subscribe\":[\"orders.>\",\"prices.*\"],\"publish\":[\"orders.eu\"]}"

/* ---- auth construction ---- */

static struct auth *auth_with(const char *hs, const struct auth_key_file *keys, size_t nkeys,
                              int64_t leeway, const char *aud, const char *iss)
{
    struct auth_params p = {
        .mode = AUTH_JWT,
        .hs_secret_file = hs ? data_path(hs) : NULL,
        .keys = keys,
        .nkeys = nkeys,
        .leeway_s = leeway,
        .audience = aud,
        .issuer = iss,
    };
    struct auth *a;
    char err[256] = "";
    int rc = auth_new(&a, &p, err, sizeof(err));
    if (rc != 0)
        fail_msg("auth_new: %d %s", rc, err);
    return a;
}

static struct auth *auth_hs(void) { return auth_with("auth-hs.secret", NULL, 0, 0, NULL, NULL); }

/* Verifies at now; returns the reason (NULL when accepted) and frees any grant. */
static const char *verdict_at(const struct auth *a, const char *tok, int64_t now)
{
    struct auth_grant *g = (struct auth_grant *)1;
    const char *why = (const char *)1;
    int rc = auth_verify(a, tok, tok ? strlen(tok) : 0, now, &g, &why);
    if (rc == 0) {
        assert_non_null(g);
        assert_null(why);
        auth_grant_free(g);
        return NULL;
    }
    assert_int_equal(rc, ERR_INVALID);
    assert_null(g);
    assert_non_null(why);
    assert_null(strchr(why, '\n'));
    assert_null(strchr(why, '"'));
    return why;
}

static const char *verdict(const struct auth *a, const char *tok)
{
    return verdict_at(a, tok, NOW);
}

static void refused(const struct auth *a, const char *tok, const char *reason)
{
    const char *why = verdict(a, tok);
    if (!why || strcmp(why, reason) != 0)
        fail_msg("token %.60s...: got \"%s\", want \"%s\"", tok ? tok : "(none)",
                 why ? why : "(accepted)", reason);
}

#define assert_refused(a, tok, reason) refused((a), (tok), (reason))
#define assert_accepted(a, tok) assert_null(verdict((a), (tok)))

static struct auth_grant *grant_of(const struct auth *a, const char *tok)
{
    struct auth_grant *g;
    const char *why = NULL;
    int rc = auth_verify(a, tok, strlen(tok), NOW, &g, &why);
    if (rc != 0)
        fail_msg("refused: %s", why);
    return g;
}

/* ---- the matrix ---- */

static void test_no_token(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    assert_true(auth_required(a));
    assert_refused(a, NULL, "no token");
    assert_refused(a, "", "no token");
    auth_free(a);
}

static void test_hs256_valid_grant(void **state)
{
    (void)state;
    struct auth *a = auth_with("auth-hs.secret", NULL, 0, 30, NULL, NULL);
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims_with(GRANT));
    struct auth_grant *g = grant_of(a, tok);
    assert_int_equal(auth_grant_expires(g), NOW + 600 + 30);
    assert_string_equal(auth_grant_subject(g), "user-42");
    const char *const *pats;
    assert_int_equal(auth_grant_patterns(g, AUTH_SUBSCRIBE, &pats), 2);
    assert_string_equal(pats[0], "orders.>");
    assert_string_equal(pats[1], "prices.*");
    assert_int_equal(auth_grant_patterns(g, AUTH_PUBLISH, &pats), 1);
    assert_string_equal(pats[0], "orders.eu");
    auth_grant_free(g);
    free(tok);
    auth_free(a);
}

/* The "default" claim: "{sub}" expanded with the principal, granted for subscribing. */
static void test_default_subjects(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char *tok = mint(JWT_ALG_HS256, NULL, NULL,
                     claims_with("{\"subscribe\":[\"news.*\"],\"default\":[\"user.{sub}.>\","
                                 "\"news.{sub}\"]}"));
    struct auth_grant *g = grant_of(a, tok);
    const char *const *d;
    assert_int_equal(auth_grant_defaults(g, &d), 2);
    assert_string_equal(d[0], "user.user-42.>");
    assert_string_equal(d[1], "news.user-42");
    assert_true(auth_can_subscribe(g, "user.user-42.inbox"));
    assert_false(auth_can_subscribe(g, "user.user-43.inbox"));
    assert_false(auth_can_publish(g, "user.user-42.inbox"));
    assert_false(auth_grant_renewable(g));
    auth_grant_free(g);
    free(tok);
    /* A principal that is not one plain token cannot be templated: the token is refused. */
    static const char *const bad[] = {"a.b", "*", ">", "a b", "$SYS", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char claims[512];
        snprintf(claims, sizeof(claims),
                 "{\"exp\":%lld,\"sub\":\"%s\",\"sluice\":{\"default\":[\"user.{sub}.>\"]}}",
                 NOW + 600, bad[i]);
        tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
        assert_refused(a, tok, "default subject invalid for this principal");
        free(tok);
    }
    auth_free(a);
}

static struct auth_grant *callout_grant(const char *json, const char **why, int64_t *ttl)
{
    struct auth_grant *g = NULL;
    *why = NULL;
    int rc = auth_grant_from_callout(json, strlen(json), NOW, &g, ttl, why);
    assert_true((rc == 0) == (g != NULL));
    assert_true((rc == 0) == (*why == NULL));
    return g;
}

static void test_callout_answer(void **state)
{
    (void)state;
    const char *why;
    int64_t ttl;
    char json[512];
    snprintf(json, sizeof(json),
             "{\"principal\":\"u-7\",\"subscribe\":[\"chat.>\"],\"publish\":[\"chat.u-7\"],"
             "\"default\":[\"user.{sub}.>\"],\"expires\":%lld,\"ttl\":30}",
             NOW + 60);
    struct auth_grant *g = callout_grant(json, &why, &ttl);
    assert_non_null(g);
    assert_int_equal(ttl, 30);
    assert_string_equal(auth_grant_subject(g), "u-7");
    assert_int_equal(auth_grant_expires(g), NOW + 60);
    assert_true(auth_grant_renewable(g));
    assert_true(auth_can_subscribe(g, "chat.x"));
    assert_true(auth_can_subscribe(g, "user.u-7.inbox"));
    assert_true(auth_can_publish(g, "chat.u-7"));
    assert_false(auth_can_publish(g, "chat.x"));
    assert_ptr_equal(auth_grant_ref(g), g);
    auth_grant_free(g);
    assert_string_equal(auth_grant_subject(g), "u-7"); /* one reference left */
    auth_grant_free(g);

    g = callout_grant("{\"principal\":\"p\"}", &why, &ttl);
    assert_non_null(g);
    assert_int_equal(ttl, -1);
    assert_int_equal(auth_grant_expires(g), 0);
    assert_false(auth_can_subscribe(g, "a"));
    auth_grant_free(g);

    /* Strict: each of these is refused whole. */
    static const char *const bad[] = {
        "",
        "[]",
        "{not json",
        "{}",
        "{\"principal\":\"\"}",
        "{\"principal\":\"a b\"}",
        "{\"principal\":7}",
        "{\"principal\":\"p\",\"subscribes\":[\"a\"]}",
        "{\"principal\":\"p\",\"principal\":\"q\"}",
        "{\"principal\":\"p\",\"subscribe\":\"a\"}",
        "{\"principal\":\"p\",\"subscribe\":[\"a..b\"]}",
        "{\"principal\":\"p\",\"subscribe\":[7]}",
        "{\"principal\":\"p\",\"ttl\":-1}",
        "{\"principal\":\"p\",\"ttl\":1.5}",
        "{\"principal\":\"p\",\"expires\":1}",
        "{\"principal\":\"p.q\",\"default\":[\"u.{sub}\"]}",
        "{\"principal\":\"p\",\"default\":[\"u.{sub}..x\"]}",
        "{\"principal\":\"p\",\"default\":[\"u.{sub}\",\"u.p\"]}",
        "{\"principal\":\"p\",\"default\":[\"u.*\",\"u.{sub}\"]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        g = callout_grant(bad[i], &why, &ttl);
        if (g)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(ttl, -1);
        assert_null(strchr(why, '\n'));
    }
    /* Too large, even if well-formed. */
    size_t n = AUTH_CALLOUT_BODY_MAX + 64;
    char *big = malloc(n + 1);
    int k = snprintf(big, n + 1, "{\"principal\":\"p\",\"subscribe\":[\"");
    memset(big + k, 'a', n - (size_t)k);
    memcpy(big + n - 3, "\"]}", 4);
    assert_non_null(big);
    g = NULL;
    assert_int_equal(auth_grant_from_callout(big, n, NOW, &g, &ttl, &why), ERR_INVALID);
    assert_null(g);
    free(big);
}

static void test_expand_template(void **state)
{
    (void)state;
    const char *why;
    int64_t ttl;
    struct auth_grant *g = callout_grant("{\"principal\":\"alice@example=1\"}", &why, &ttl);
    char out[64];
    assert_int_equal(auth_expand_template(g, "user.{sub}.>", out, sizeof(out)), 0);
    assert_string_equal(out, "user.alice@example=1.>");
    assert_int_equal(auth_expand_template(g, "{sub}.{sub}", out, sizeof(out)), 0);
    assert_string_equal(out, "alice@example=1.alice@example=1");
    assert_int_equal(auth_expand_template(g, "plain.x", out, sizeof(out)), 0);
    assert_string_equal(out, "plain.x");
    assert_int_equal(auth_expand_template(g, "user.{sub}.>", out, 10), ERR_INVALID);
    assert_int_equal(auth_expand_template(NULL, "user.{sub}", out, sizeof(out)), ERR_INVALID);
    auth_grant_free(g);
    assert_true(auth_principal_is_token("a-b_c@d+e=f:g"));
    assert_false(auth_principal_is_token("a.b"));
    assert_false(auth_principal_is_token("a*"));
    assert_false(auth_principal_is_token("a>"));
    assert_false(auth_principal_is_token("$a"));
    assert_false(auth_principal_is_token(""));
    assert_false(auth_principal_is_token(NULL));
}

/* Revocations (revoke.h) are parsed as strictly as grants. */
static void test_revoke_parse(void **state)
{
    (void)state;
    struct revoke rv;
    const char *why;
    static const char j1[] = "{\"principal\":\"u-1\",\"reason\":\"logout now\"}";
    assert_int_equal(revoke_from_json(j1, sizeof(j1) - 1, &rv, &why), 0);
    assert_string_equal(rv.principal, "u-1");
    assert_null(rv.subject);
    assert_string_equal(rv.reason, "logout now");
    struct revoke *c = revoke_copy(&rv);
    revoke_dispose(&rv);
    assert_string_equal(c->reason, "logout now");
    revoke_free(c);
    static const char q1[] = "subject=orders.%3E&reason=perm%20change";
    assert_int_equal(revoke_from_query(q1, sizeof(q1) - 1, &rv, &why), 0);
    assert_string_equal(rv.subject, "orders.>");
    assert_string_equal(rv.reason, "perm change");
    revoke_dispose(&rv);
    assert_int_equal(revoke_from_query("principal=x", 11, &rv, &why), 0);
    assert_string_equal(rv.reason, "revoked");
    revoke_dispose(&rv);
    static const char *const bad_json[] = {
        "", "{}", "[]", "{\"principal\":7}", "{\"principal\":\"a b\"}",
        "{\"subject\":\"a..b\"}", "{\"reason\":\"x\"}", "{\"who\":\"x\"}",
        "{\"principal\":\"a\",\"reason\":\"line\\nbreak\"}",
        "{\"principal\":\"a\",\"principal\":\"b\"}",
    };
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        if (revoke_from_json(bad_json[i], strlen(bad_json[i]), &rv, &why) == 0)
            fail_msg("accepted: %s", bad_json[i]);
        assert_null(rv.principal);
    }
    static const char *const bad_query[] = {"", "principal", "principal=a%", "principal=a%0ab",
                                            "subject=a.>.b", "principal=a&principal=b",
                                            "x=1"};
    for (size_t i = 0; i < sizeof(bad_query) / sizeof(bad_query[0]); i++)
        if (revoke_from_query(bad_query[i], strlen(bad_query[i]), &rv, &why) == 0)
            fail_msg("accepted: %s", bad_query[i]);
}

static void test_hs384_hs512_valid(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char *t384 = mint(JWT_ALG_HS384, NULL, NULL, claims_with(GRANT));
    char *t512 = mint(JWT_ALG_HS512, NULL, NULL, claims_with(GRANT));
    assert_accepted(a, t384);
    assert_accepted(a, t512);
    free(t384);
    free(t512);
    auth_free(a);
}

static void test_bad_signature(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims_with(GRANT));
    /* Flip one signature character (not the last, whose low bits may be unused). */
    size_t n = strlen(tok);
    tok[n - 3] = tok[n - 3] == 'A' ? 'B' : 'A';
    assert_refused(a, tok, "bad signature");
    free(tok);

    /* Signed with another secret. */
    const char other[] = "another-secret-of-at-least-thirty-two-bytes";
    tok =
        craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims_with(GRANT), other, sizeof(other) - 1);
    assert_refused(a, tok, "bad signature");
    free(tok);

    /* Claims changed after signing. */
    char *good = mint(JWT_ALG_HS256, NULL, NULL, claims_with(GRANT));
    char *evil = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                       claims_with("{\"subscribe\":[\">\"]}"), NULL, 0);
    char *sig = strrchr(good, '.');
    char *forged = malloc(strlen(evil) + strlen(sig) + 1);
    strcpy(forged, evil);
    strcat(forged, sig + 1);
    assert_refused(a, forged, "bad signature");
    free(forged);
    free(evil);
    free(good);
    auth_free(a);
}

static void test_expired(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char claims[256];
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"sluice\":{}}", NOW - 1);
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
    assert_refused(a, tok, "token expired");
    free(tok);
    /* exp is exclusive: at exp the token is already expired. */
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"sluice\":{}}", NOW);
    tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
    assert_refused(a, tok, "token expired");
    assert_null(verdict_at(a, tok, NOW - 1));
    free(tok);
    auth_free(a);
}

static void test_expired_within_leeway(void **state)
{
    (void)state;
    struct auth *a = auth_with("auth-hs.secret", NULL, 0, 10, NULL, NULL);
    char claims[256];
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"sluice\":{}}", NOW - 5);
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
    struct auth_grant *g = grant_of(a, tok);
    /* The stream deadline is where the token stops being accepted, not exp itself. */
    assert_int_equal(auth_grant_expires(g), NOW + 5);
    auth_grant_free(g);
    assert_string_equal(verdict_at(a, tok, NOW + 5), "token expired");
    free(tok);
    auth_free(a);
}

static void test_not_yet_valid(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char claims[256];
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"nbf\":%lld,\"sluice\":{}}", NOW + 600,
             NOW + 100);
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
    assert_refused(a, tok, "token not yet valid");
    assert_null(verdict_at(a, tok, NOW + 100));
    free(tok);
    auth_free(a);

    a = auth_with("auth-hs.secret", NULL, 0, 10, NULL, NULL);
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"nbf\":%lld,\"sluice\":{}}", NOW + 600,
             NOW + 10);
    tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
    assert_accepted(a, tok);
    assert_string_equal(verdict_at(a, tok, NOW - 1), "token not yet valid");
    free(tok);
    auth_free(a);
}

static void test_fractional_dates(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char claims[256];
    /* now < 100.5 holds at 100, not at 101. */
    snprintf(claims, sizeof(claims), "{\"exp\":%lld.5,\"nbf\":%lld.5,\"sluice\":{}}", NOW,
             NOW - 10);
    char *tok = craft_hs("{\"alg\":\"HS256\"}", claims);
    assert_null(verdict_at(a, tok, NOW));
    assert_string_equal(verdict_at(a, tok, NOW + 1), "token expired");
    assert_string_equal(verdict_at(a, tok, NOW - 10), "token not yet valid");
    assert_null(verdict_at(a, tok, NOW - 9));
    free(tok);
    auth_free(a);
}

static void test_alg_none_refused(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    /* The classic: base64url({"alg":"none"}).base64url(claims). with no signature. */
    char *tok = craft("{\"alg\":\"none\"}", claims_with(GRANT), NULL, 0);
    assert_refused(a, tok, "alg none refused");
    free(tok);
    /* A real algorithm with the signature cut off. */
    tok = craft("{\"alg\":\"HS256\"}", claims_with(GRANT), NULL, 0);
    assert_refused(a, tok, "missing signature");
    free(tok);
    /* Same with a signature part, and other spellings libjwt would also read as none. */
    const char *hdrs[] = {"{\"alg\":\"none\"}", "{\"alg\":\"NONE\"}", "{\"alg\":\"None\"}",
                          "{\"alg\":\"none\",\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        tok = craft_hs(hdrs[i], claims_with(GRANT));
        assert_refused(a, tok, "alg none refused");
        free(tok);
    }
    auth_free(a);
}

static void test_algorithm_confusion(void **state)
{
    (void)state;
    /* Only an RSA key configured: HS256 "signed" with the public key's PEM bytes. */
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), NULL}};
    struct auth *a = auth_with(NULL, keys, 1, 0, NULL, NULL);
    size_t n;
    char *pem = slurp("auth-rsa1.pub", &n);
    char *tok = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims_with(GRANT), pem, n);
    assert_refused(a, tok, "no key configured for this alg");
    free(tok);
    auth_free(a);

    /* With an HS secret configured too, the PEM bytes are still never the HMAC key. */
    a = auth_with("auth-hs.secret", keys, 1, 0, NULL, NULL);
    tok = craft("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims_with(GRANT), pem, n);
    assert_refused(a, tok, "bad signature");
    free(tok);
    free(pem);

    /* The other way: an RS256 token where only a secret is configured. */
    auth_free(a);
    a = auth_hs();
    tok = mint(JWT_ALG_RS256, "auth-rsa1.key", NULL, claims_with(GRANT));
    assert_refused(a, tok, "no key configured for this alg");
    free(tok);
    /* And ES256 against RSA keys only. */
    auth_free(a);
    a = auth_with(NULL, keys, 1, 0, NULL, NULL);
    tok = mint(JWT_ALG_ES256, "auth-ec1.key", NULL, claims_with(GRANT));
    assert_refused(a, tok, "no key configured for this alg");
    free(tok);
    auth_free(a);
}

static void test_unsupported_algs(void **state)
{
    (void)state;
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), NULL}};
    struct auth *a = auth_with("auth-hs.secret", keys, 1, 0, NULL, NULL);
    char *tok = mint(JWT_ALG_RS384, "auth-rsa1.key", NULL, claims_with(GRANT));
    assert_refused(a, tok, "unsupported alg");
    free(tok);
    tok = mint(JWT_ALG_RS512, "auth-rsa1.key", NULL, claims_with(GRANT));
    assert_refused(a, tok, "unsupported alg");
    free(tok);
    const char *hdrs[] = {"{\"alg\":\"hs256\"}", "{\"alg\":\"PS256\"}", "{\"alg\":\"\"}",
                          "{\"alg\":\"HS256 \"}"};
    for (size_t i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++) {
        tok = craft_hs(hdrs[i], claims_with(GRANT));
        assert_refused(a, tok, "unsupported alg");
        free(tok);
    }
    auth_free(a);
}

static void test_odd_headers(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    struct {
        const char *header, *reason;
    } cases[] = {
        {"{\"typ\":\"JWT\"}", "malformed token header"},
        {"{\"alg\":256}", "malformed token header"},
        {"[\"alg\",\"HS256\"]", "malformed token header"},
        {"{\"alg\":\"HS256\"", "malformed token header"},
        /* Two algs: libjwt and we must never read different ones. */
        {"{\"alg\":\"none\",\"alg\":\"HS256\"}", "malformed token header"},
        {"{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", "unsupported token type"},
        {"{\"alg\":\"HS256\",\"typ\":7}", "unsupported token type"},
        {"{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "unsupported critical header"},
        {"{\"alg\":\"HS256\",\"kid\":5}", "malformed token header"},
        {"{\"alg\":\"HS256\",\"typ\":\"jwt\",\"kid\":\"ignored-for-hs\"}", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *tok = craft_hs(cases[i].header, claims_with(GRANT));
        const char *why = verdict(a, tok);
        if (cases[i].reason == NULL ? why != NULL
                                    : why == NULL || strcmp(why, cases[i].reason) != 0)
            fail_msg("header %s: got \"%s\", want \"%s\"", cases[i].header,
                     why ? why : "(accepted)", cases[i].reason ? cases[i].reason : "(accepted)");
        free(tok);
    }
    auth_free(a);
}

static void test_malformed_shapes(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char *good = mint(JWT_ALG_HS256, NULL, NULL, claims_with(GRANT));
    const char *bad[] = {
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "a..c",
        ".b.c",
        "..c",
        "...",
        "eyJ=.eyJ.sig",
        "eyJhbGciOiJIUzI1NiJ9 .e30.c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln+",
        "a\nb.c.d",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_refused(a, bad[i], "malformed token");
    /* An embedded NUL is a malformed byte, not the end of the token. */
    size_t n = strlen(good);
    char *nul = malloc(n + 3);
    memcpy(nul, good, n);
    memcpy(nul + n, "\0x", 3);
    struct auth_grant *g;
    const char *why;
    assert_int_equal(auth_verify(a, nul, n + 2, NOW, &g, &why), ERR_INVALID);
    assert_string_equal(why, "malformed token");
    /* The length is what counts, not a NUL: a prefix of a token is not the token. */
    assert_int_equal(auth_verify(a, good, n - 1, NOW, &g, &why), ERR_INVALID);
    free(nul);
    /*
     * Non-canonical base64url: a 16-byte header leaves 4 unused bits in its
     * last character; setting one changes the text but not the bytes.
     */
    char *t = craft_hs("{\"alg\":\"HS256\" }", claims_with(GRANT));
    assert_accepted(a, t);
    char *last = strchr(t, '.') - 1;
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t v = (size_t)(strchr(B64, *last) - B64);
    assert_int_equal(v & 15, 0);
    *last = B64[v | 1];
    assert_refused(a, t, "malformed token header");
    free(t);
    /* Header or claims not JSON / not an object. */
    t = craft_hs("{\"alg\":\"HS256\"}", "[1,2]");
    assert_refused(a, t, "malformed claims");
    free(t);
    t = craft_hs("{\"alg\":\"HS256\"}", "{\"exp\":1,");
    assert_refused(a, t, "malformed claims");
    free(t);
    t = craft_hs("{\"alg\":\"HS256\"}", "{\"exp\":1,\"exp\":99999999999,\"sluice\":{}}");
    assert_refused(a, t, "malformed claims");
    free(t);
    free(good);
    auth_free(a);
}

static void test_audience_and_issuer(void **state)
{
    (void)state;
    struct auth *a = auth_with("auth-hs.secret", NULL, 0, 0, "sluice", "https://idp.example");
    struct {
        const char *extra, *reason;
    } cases[] = {
        {"\"aud\":\"sluice\",\"iss\":\"https://idp.example\"", NULL},
        {"\"aud\":[\"other\",\"sluice\"],\"iss\":\"https://idp.example\"", NULL},
        {"\"aud\":\"other\",\"iss\":\"https://idp.example\"", "wrong audience"},
        {"\"aud\":[\"other\"],\"iss\":\"https://idp.example\"", "wrong audience"},
        {"\"aud\":[],\"iss\":\"https://idp.example\"", "wrong audience"},
        {"\"aud\":7,\"iss\":\"https://idp.example\"", "wrong audience"},
        {"\"iss\":\"https://idp.example\"", "wrong audience"},
        {"\"aud\":\"Sluice\",\"iss\":\"https://idp.example\"", "wrong audience"},
        {"\"aud\":\"sluice\",\"iss\":\"https://evil.example\"", "wrong issuer"},
        {"\"aud\":\"sluice\"", "wrong issuer"},
        {"\"aud\":\"sluice\",\"iss\":[\"https://idp.example\"]", "wrong issuer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char claims[512];
        snprintf(claims, sizeof(claims), "{\"exp\":%lld,%s,\"sluice\":{}}", NOW + 60,
                 cases[i].extra);
        char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
        const char *why = verdict(a, tok);
        if (cases[i].reason == NULL ? why != NULL
                                    : why == NULL || strcmp(why, cases[i].reason) != 0)
            fail_msg("claims %s: got \"%s\", want \"%s\"", cases[i].extra, why ? why : "(accepted)",
                     cases[i].reason ? cases[i].reason : "(accepted)");
        free(tok);
    }
    auth_free(a);

    /* Not configured: aud and iss are not looked at. */
    a = auth_hs();
    char claims[256];
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"aud\":\"x\",\"iss\":\"y\",\"sluice\":{}}",
             NOW + 60);
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims);
    assert_accepted(a, tok);
    free(tok);
    auth_free(a);
}

static void test_rs256_and_es256_valid(void **state)
{
    (void)state;
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), NULL},
                                   {data_path("auth-ec1.pub"), NULL}};
    struct auth *a = auth_with(NULL, keys, 2, 0, NULL, NULL);
    char *rs = mint(JWT_ALG_RS256, "auth-rsa1.key", NULL, claims_with(GRANT));
    char *es = mint(JWT_ALG_ES256, "auth-ec1.key", NULL, claims_with(GRANT));
    struct auth_grant *g = grant_of(a, rs);
    assert_true(auth_can_subscribe(g, "orders.eu"));
    auth_grant_free(g);
    g = grant_of(a, es);
    assert_true(auth_can_publish(g, "orders.eu"));
    auth_grant_free(g);
    /* Signed by a key that is not configured. */
    char *other = mint(JWT_ALG_RS256, "auth-rsa2.key", NULL, claims_with(GRANT));
    assert_refused(a, other, "bad signature");
    free(other);
    free(rs);
    free(es);
    auth_free(a);
}

static void test_key_rotation(void **state)
{
    (void)state;
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), NULL},
                                   {data_path("auth-rsa2.pub"), NULL}};
    struct auth *a = auth_with(NULL, keys, 2, 0, NULL, NULL);
    char *t1 = mint(JWT_ALG_RS256, "auth-rsa1.key", NULL, claims_with(GRANT));
    char *t2 = mint(JWT_ALG_RS256, "auth-rsa2.key", NULL, claims_with(GRANT));
    assert_accepted(a, t1);
    assert_accepted(a, t2);
    /* A kid with unnamed keys: every key is still tried. */
    char *tk = mint(JWT_ALG_RS256, "auth-rsa2.key", "2025-06", claims_with(GRANT));
    assert_accepted(a, tk);
    free(tk);
    auth_free(a);
    free(t1);
    free(t2);
}

static void test_kid_matching(void **state)
{
    (void)state;
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), "old"},
                                   {data_path("auth-rsa2.pub"), "new"}};
    struct auth *a = auth_with(NULL, keys, 2, 0, NULL, NULL);
    char *t = mint(JWT_ALG_RS256, "auth-rsa2.key", "new", claims_with(GRANT));
    assert_accepted(a, t);
    free(t);
    /* Named, but the signature is by the other key. */
    t = mint(JWT_ALG_RS256, "auth-rsa2.key", "old", claims_with(GRANT));
    assert_refused(a, t, "bad signature");
    free(t);
    t = mint(JWT_ALG_RS256, "auth-rsa2.key", "gone", claims_with(GRANT));
    assert_refused(a, t, "unknown key id");
    free(t);
    /* No kid in the token: try them all. */
    t = mint(JWT_ALG_RS256, "auth-rsa2.key", NULL, claims_with(GRANT));
    assert_accepted(a, t);
    free(t);
    auth_free(a);
}

static void test_wildcard_cover(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char *tok = mint(JWT_ALG_HS256, NULL, NULL, claims_with(GRANT));
    struct auth_grant *g = grant_of(a, tok);
    struct {
        const char *subject;
        bool sub, pub;
    } cases[] = {
        {"orders.eu", true, true},    {"orders.*", true, false},  {"orders.>", true, false},
        {"orders.eu.x", true, false}, {"orders", false, false},   {"prices.x", true, false},
        {"prices.*", true, false},    {"prices.>", false, false}, {"prices.x.y", false, false},
        {">", false, false},          {"*.eu", false, false},     {"orders.us", true, false},
        {"orders..eu", false, false}, {"", false, false},         {"orders. eu", false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (auth_can_subscribe(g, cases[i].subject) != cases[i].sub)
            fail_msg("subscribe %s: want %d", cases[i].subject, cases[i].sub);
        if (auth_can_publish(g, cases[i].subject) != cases[i].pub)
            fail_msg("publish %s: want %d", cases[i].subject, cases[i].pub);
    }
    assert_false(auth_can_subscribe(NULL, "orders.eu"));
    assert_false(auth_can_subscribe(g, NULL));
    auth_grant_free(g);
    free(tok);

    /* An empty grant allows nothing. */
    tok = mint(JWT_ALG_HS256, NULL, NULL, claims_with("{}"));
    g = grant_of(a, tok);
    assert_false(auth_can_subscribe(g, "orders.eu"));
    assert_false(auth_can_publish(g, "orders.eu"));
    auth_grant_free(g);
    free(tok);
    auth_free(a);
}

/* tmpl with its one "EXP" replaced by exp. */
static void with_exp(char *out, size_t n, const char *tmpl, long long exp)
{
    const char *at = strstr(tmpl, "EXP");
    assert_non_null(at);
    snprintf(out, n, "%.*s%lld%s", (int)(at - tmpl), tmpl, exp, at + 3);
}

static void test_malformed_claims(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char many[2048] = "{\"subscribe\":[";
    for (int i = 0; i <= AUTH_MAX_PATTERNS; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%s\"s%d\"", i ? "," : "", i);
    strcat(many, "]}");
    struct {
        const char *claims, *reason;
    } cases[] = {
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":\"orders.>\"}}", "malformed sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":{\"a\":1}}}", "malformed sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":[\"a\",7]}}", "malformed sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"publish\":[null]}}", "malformed sluice claim"},
        {"{\"exp\":EXP,\"sluice\":[\"orders.>\"]}", "malformed sluice claim"},
        {"{\"exp\":EXP,\"sluice\":\"all\"}", "malformed sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":[\"orders..x\"]}}",
         "invalid subject pattern in sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":[\"a.>.b\"]}}",
         "invalid subject pattern in sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":[\"\"]}}",
         "invalid subject pattern in sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"publish\":[\"ok\",\"a b\"]}}",
         "invalid subject pattern in sluice claim"},
        {"{\"exp\":EXP,\"sluice\":{\"subscribe\":[\"a*\"]}}",
         "invalid subject pattern in sluice claim"},
        {"{\"exp\":EXP}", "missing sluice claim"},
        {"{\"exp\":EXP,\"Sluice\":{}}", "missing sluice claim"},
        {"{\"sluice\":{},\"x\":EXP}", "missing exp claim"},
        {"{\"exp\":\"EXP\",\"sluice\":{}}", "malformed exp claim"},
        {"{\"exp\":EXP,\"nbf\":true,\"sluice\":{}}", "malformed nbf claim"},
        {"{\"exp\":EXP,\"sluice\":{},\"pad\":1}", NULL},
        {"{\"exp\":EXP,\"sluice\":{\"other\":[1],\"subscribe\":[]}}", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char claims[512];
        with_exp(claims, sizeof(claims), cases[i].claims, NOW + 60);
        char *tok = craft_hs("{\"alg\":\"HS256\"}", claims);
        const char *why = verdict(a, tok);
        if (cases[i].reason == NULL ? why != NULL
                                    : why == NULL || strcmp(why, cases[i].reason) != 0)
            fail_msg("claims %s: got \"%s\", want \"%s\"", claims, why ? why : "(accepted)",
                     cases[i].reason ? cases[i].reason : "(accepted)");
        free(tok);
    }
    char *tok = craft_hs("{\"alg\":\"HS256\"}", claims_with(many));
    assert_refused(a, tok, "too many patterns in sluice claim");
    free(tok);
    /* Huge and non-finite dates. */
    tok = craft_hs("{\"alg\":\"HS256\"}", "{\"exp\":1e300,\"sluice\":{}}");
    assert_refused(a, tok, "malformed exp claim");
    free(tok);
    tok = craft_hs("{\"alg\":\"HS256\"}", "{\"exp\":9223372036854775807,\"sluice\":{}}");
    assert_refused(a, tok, "malformed exp claim");
    free(tok);
    auth_free(a);
}

static void test_subject_claim_sanitized(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    char claims[512];
    snprintf(claims, sizeof(claims),
             "{\"exp\":%lld,\"sub\":\"eve\\n2026 info forged\\u00e9\",\"sluice\":{}}", NOW + 60);
    char *tok = craft_hs("{\"alg\":\"HS256\"}", claims);
    struct auth_grant *g = grant_of(a, tok);
    assert_string_equal(auth_grant_subject(g), "eve?2026 info forged??");
    auth_grant_free(g);
    free(tok);
    snprintf(claims, sizeof(claims), "{\"exp\":%lld,\"sub\":42,\"sluice\":{}}", NOW + 60);
    tok = craft_hs("{\"alg\":\"HS256\"}", claims);
    g = grant_of(a, tok);
    assert_null(auth_grant_subject(g));
    auth_grant_free(g);
    free(tok);
    auth_free(a);
}

static void test_oversized_token(void **state)
{
    (void)state;
    struct auth *a = auth_hs();
    /* Grow a padding claim until the signed token passes the limit. */
    char *claims = malloc(AUTH_TOKEN_MAX + 256);
    char *last_ok = NULL, *first_big = NULL;
    for (size_t pad = AUTH_TOKEN_MAX * 3 / 4 - 200; !first_big; pad++) {
        int n = snprintf(claims, AUTH_TOKEN_MAX + 256, "{\"exp\":%lld,\"sluice\":{},\"pad\":\"",
                         NOW + 60);
        memset(claims + n, 'p', pad);
        strcpy(claims + n + pad, "\"}");
        char *tok = craft_hs("{\"alg\":\"HS256\"}", claims);
        if (strlen(tok) <= AUTH_TOKEN_MAX) {
            free(last_ok);
            last_ok = tok;
        } else {
            first_big = tok;
        }
    }
    assert_non_null(last_ok);
    assert_true(strlen(last_ok) > AUTH_TOKEN_MAX - 4);
    assert_accepted(a, last_ok);
    assert_refused(a, first_big, "token too long");
    /* Garbage of any length past the limit is refused before it is looked at. */
    char *huge = malloc(1 << 20);
    memset(huge, 'A', (1 << 20) - 1);
    huge[(1 << 20) - 1] = '\0';
    assert_refused(a, huge, "token too long");
    free(huge);
    free(last_ok);
    free(first_big);
    free(claims);
    auth_free(a);
}

static void test_openssl_error_queue_left_clean(void **state)
{
    (void)state;
    /* Worker threads do TLS: a stale error would confuse SSL_get_error() there. */
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), NULL},
                                   {data_path("auth-ec1.pub"), NULL}};
    struct auth *a = auth_with("auth-hs.secret", keys, 2, 0, NULL, NULL);
    ERR_clear_error();
    char *t = mint(JWT_ALG_RS256, "auth-rsa2.key", NULL, claims_with(GRANT));
    ERR_clear_error();
    assert_refused(a, t, "bad signature");
    assert_int_equal(ERR_peek_error(), 0);
    free(t);
    t = mint(JWT_ALG_ES256, "auth-ec1.key", NULL, claims_with(GRANT));
    size_t n = strlen(t);
    t[n - 3] = t[n - 3] == 'A' ? 'B' : 'A';
    ERR_clear_error();
    assert_refused(a, t, "bad signature");
    assert_int_equal(ERR_peek_error(), 0);
    free(t);
    auth_free(a);
}

static void test_mode_none(void **state)
{
    (void)state;
    struct auth_params p = {.mode = AUTH_NONE};
    struct auth *a;
    char err[256];
    assert_int_equal(auth_new(&a, &p, err, sizeof(err)), 0);
    assert_false(auth_required(a));
    struct auth_grant *g;
    const char *why;
    assert_int_equal(auth_verify(a, NULL, 0, NOW, &g, &why), 0);
    assert_true(auth_can_subscribe(g, "anything.>"));
    assert_true(auth_can_subscribe(g, ">"));
    assert_true(auth_can_publish(g, "a.b"));
    assert_false(auth_can_publish(g, "a..b"));
    assert_int_equal(auth_grant_expires(g), 0);
    assert_null(auth_grant_subject(g));
    auth_grant_free(g);
    auth_free(a);
    auth_free(NULL);
    auth_grant_free(NULL);
}

static void expect_new_fails(const struct auth_params *p, int code, const char *in_err)
{
    struct auth *a = (struct auth *)1;
    char err[512] = "";
    int rc = auth_new(&a, p, err, sizeof(err));
    if (rc != code || !strstr(err, in_err))
        fail_msg("auth_new: %d \"%s\", want %d with \"%s\"", rc, err, code, in_err);
    assert_null(a);
    assert_null(strchr(err, '\n'));
}

static void test_new_errors(void **state)
{
    (void)state;
    struct auth_params p = {.mode = AUTH_JWT};
    expect_new_fails(&p, ERR_INVALID, "needs an HS secret file or a public key");

    p.hs_secret_file = "/nonexistent/secret";
    expect_new_fails(&p, ERR_IO, "/nonexistent/secret: No such file");
    p.hs_secret_file = data_path("auth-hs-short.secret");
    expect_new_fails(&p, ERR_INVALID, "auth-hs-short.secret: HS secret shorter than 32 bytes");
    p.hs_secret_file = data_path("auth-rsa1.pub");
    expect_new_fails(&p, ERR_INVALID, "auth-rsa1.pub: looks like a PEM key");
    p.hs_secret_file = data_path("auth-hs.secret");
    p.leeway_s = -1;
    expect_new_fails(&p, ERR_INVALID, "leeway");
    p.leeway_s = AUTH_LEEWAY_MAX_S + 1;
    expect_new_fails(&p, ERR_INVALID, "leeway");
    p.leeway_s = 0;
    p.audience = "";
    expect_new_fails(&p, ERR_INVALID, "empty audience");
    p.audience = NULL;

    struct {
        const char *file, *err;
    } bad_keys[] = {
        {"auth-rsa1024.pub", "auth-rsa1024.pub: RSA key shorter than 2048 bits"},
        {"auth-ec384.pub", "auth-ec384.pub: EC key is not on P-256"},
        {"auth-rsa1.key", "auth-rsa1.key: holds a private key"},
        {"auth-hs.secret", "auth-hs.secret: expected exactly one PEM public key"},
        {"good.ini", "good.ini: expected exactly one PEM public key"},
    };
    p.hs_secret_file = NULL;
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        struct auth_key_file k = {data_path(bad_keys[i].file), NULL};
        p.keys = &k;
        p.nkeys = 1;
        expect_new_fails(&p, ERR_INVALID, bad_keys[i].err);
    }
    struct auth_key_file missing = {"/nonexistent/key.pem", NULL};
    p.keys = &missing;
    expect_new_fails(&p, ERR_IO, "/nonexistent/key.pem");

    struct auth_key_file dup[] = {{data_path("auth-rsa1.pub"), "k"},
                                  {data_path("auth-rsa2.pub"), "k"}};
    p.keys = dup;
    p.nkeys = 2;
    expect_new_fails(&p, ERR_INVALID, "duplicate key id k");
    struct auth_key_file badkid = {data_path("auth-rsa1.pub"), "a b"};
    p.keys = &badkid;
    p.nkeys = 1;
    expect_new_fails(&p, ERR_INVALID, "key id");

    /* auth = none with a key configured is a mistake that would leave the gateway open. */
    struct auth_params none = {.mode = AUTH_NONE, .hs_secret_file = data_path("auth-hs.secret")};
    expect_new_fails(&none, ERR_INVALID, "auth = none");
}

static void test_pkcs1_public_key_accepted(void **state)
{
    (void)state;
    struct auth_key_file keys[] = {{data_path("auth-rsa1-pkcs1.pub"), NULL}};
    struct auth *a = auth_with(NULL, keys, 1, 0, NULL, NULL);
    char *t = mint(JWT_ALG_RS256, "auth-rsa1.key", NULL, claims_with(GRANT));
    assert_accepted(a, t);
    free(t);
    auth_free(a);
}

/* ---- threads ---- */

struct shared {
    const struct auth *a;
    const char *good[3];
    const char *bad;
    int failures;
};

static void *verify_loop(void *arg)
{
    struct shared *s = arg;
    int failures = 0;
    for (int i = 0; i < 150; i++) {
        struct auth_grant *g;
        const char *why;
        const char *t = s->good[i % 3];
        if (auth_verify(s->a, t, strlen(t), NOW, &g, &why) != 0 ||
            !auth_can_subscribe(g, "orders.eu"))
            failures++;
        auth_grant_free(g);
        if (auth_verify(s->a, s->bad, strlen(s->bad), NOW, &g, &why) != ERR_INVALID)
            failures++;
    }
    return (void *)(intptr_t)failures;
}

static void test_concurrent_verify(void **state)
{
    (void)state;
    struct auth_key_file keys[] = {{data_path("auth-rsa1.pub"), NULL},
                                   {data_path("auth-ec1.pub"), NULL}};
    struct auth *a = auth_with("auth-hs.secret", keys, 2, 0, NULL, NULL);
    char *hs = mint(JWT_ALG_HS256, NULL, NULL, claims_with(GRANT));
    char *rs = mint(JWT_ALG_RS256, "auth-rsa1.key", NULL, claims_with(GRANT));
    char *es = mint(JWT_ALG_ES256, "auth-ec1.key", NULL, claims_with(GRANT));
    char *bad = mint(JWT_ALG_RS256, "auth-rsa2.key", NULL, claims_with(GRANT));
    struct shared s = {a, {hs, rs, es}, bad, 0};
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verify_loop, &s), 0);
    int failures = 0;
    for (int i = 0; i < 8; i++) {
        void *r;
        pthread_join(th[i], &r);
        failures += (int)(intptr_t)r;
    }
    assert_int_equal(failures, 0);
    free(hs);
    free(rs);
    free(es);
    free(bad);
    auth_free(a);
}

/* ---- extraction ---- */

static void expect_bearer(const char *value, const char *want)
{
    const char *tok = NULL;
    size_t n = 0;
    bool ok = auth_token_from_bearer(value, strlen(value), &tok, &n);
    if (!want) {
        if (ok)
            fail_msg("bearer \"%s\": got \"%.*s\", want none", value, (int)n, tok);
        return;
    }
    if (!ok || n != strlen(want) || memcmp(tok, want, n) != 0)
        fail_msg("bearer \"%s\": got %s \"%.*s\", want \"%s\"", value, ok ? "" : "(none)", (int)n,
                 ok ? tok : "", want);
}

static void test_token_from_bearer(void **state)
{
    (void)state;
    expect_bearer("Bearer abc.def.ghi", "abc.def.ghi");
    expect_bearer("bearer abc", "abc");
    expect_bearer("BEARER   abc  ", "abc");
    expect_bearer("  Bearer\tabc", "abc");
    expect_bearer("Bearer a+/=", "a+/=");
    expect_bearer("Bearer", NULL);
    expect_bearer("Bearer ", NULL);
    expect_bearer("Bearerabc", NULL);
    expect_bearer("Basic dXNlcjpwYXNz", NULL);
    expect_bearer("Bearer abc def", NULL);
    expect_bearer("Bearer abc\r\n", NULL);
    expect_bearer("", NULL);
    /* Only len bytes are read. */
    const char *tok;
    size_t n;
    assert_true(auth_token_from_bearer("Bearer abcXYZ", 10, &tok, &n));
    assert_int_equal(n, 3);
    assert_memory_equal(tok, "abc", 3);
}

static void expect_cookie(const char *value, const char *name, const char *want)
{
    const char *tok = NULL;
    size_t n = 0;
    bool ok = auth_token_from_cookie(value, strlen(value), name, &tok, &n);
    if (!want) {
        if (ok)
            fail_msg("cookie \"%s\": got \"%.*s\", want none", value, (int)n, tok);
        return;
    }
    if (!ok || n != strlen(want) || memcmp(tok, want, n) != 0)
        fail_msg("cookie \"%s\": got %s \"%.*s\", want \"%s\"", value, ok ? "" : "(none)", (int)n,
                 ok ? tok : "", want);
}

static void test_token_from_cookie(void **state)
{
    (void)state;
    expect_cookie("token=abc", "token", "abc");
    expect_cookie("a=1; token=abc; b=2", "token", "abc");
    expect_cookie("a=1;token=abc;b=2", "token", "abc");
    expect_cookie("token = abc ; b=2", "token", "abc");
    expect_cookie("token=\"abc\"", "token", "abc");
    expect_cookie("xtoken=abc; tokenx=def", "token", NULL);
    expect_cookie("Token=abc", "token", NULL);
    expect_cookie("token=first; token=second", "token", "first");
    expect_cookie("token=; token=second", "token", NULL);
    expect_cookie("a=1; b", "token", NULL);
    expect_cookie("", "token", NULL);
    expect_cookie("token", "token", NULL);
    expect_cookie("a=x=y; token=t=t", "token", "t=t");
}

static int query_into(const char *q, char *out, size_t outsz, size_t *n)
{
    return auth_token_from_query(q, strlen(q), out, outsz, n);
}

static void test_token_from_query(void **state)
{
    (void)state;
    static char out[AUTH_TOKEN_MAX + 1];
    size_t n;
    assert_int_equal(query_into("access_token=abc.def", out, sizeof(out), &n), 0);
    assert_string_equal(out, "abc.def");
    assert_int_equal(n, 7);
    assert_int_equal(query_into("subject=a.b&access_token=a%2Eb&x=1", out, sizeof(out), &n), 0);
    assert_string_equal(out, "a.b");
    assert_int_equal(query_into("access_token=a+b", out, sizeof(out), &n), 0);
    assert_string_equal(out, "a+b");
    assert_int_equal(query_into("subject=a.b", out, sizeof(out), &n), ERR_NOTFOUND);
    assert_int_equal(query_into("", out, sizeof(out), &n), ERR_NOTFOUND);
    assert_int_equal(query_into("access_token=", out, sizeof(out), &n), ERR_NOTFOUND);
    assert_int_equal(query_into("access_token", out, sizeof(out), &n), ERR_NOTFOUND);
    assert_int_equal(query_into("xaccess_token=abc", out, sizeof(out), &n), ERR_NOTFOUND);
    assert_int_equal(query_into("access_token=a%zz", out, sizeof(out), &n), ERR_INVALID);
    assert_int_equal(query_into("access_token=a%00b", out, sizeof(out), &n), ERR_INVALID);
    assert_int_equal(query_into("access_token=a&access_token=b", out, sizeof(out), &n),
                     ERR_INVALID);
    char small[4];
    assert_int_equal(auth_token_from_query("access_token=abcd", 17, small, sizeof(small), &n),
                     ERR_LIMIT);
    assert_int_equal(auth_token_from_query("access_token=abc", 16, small, sizeof(small), &n), 0);
    assert_string_equal(small, "abc");
}

static void test_www_authenticate(void **state)
{
    (void)state;
    char out[AUTH_WWW_AUTHENTICATE_MAX];
    size_t n = auth_www_authenticate(out, sizeof(out), NULL);
    assert_string_equal(out, "Bearer realm=\"sluice\"");
    assert_int_equal(n, strlen(out));
    auth_www_authenticate(out, sizeof(out), "no token");
    assert_string_equal(out, "Bearer realm=\"sluice\"");
    n = auth_www_authenticate(out, sizeof(out), "token expired");
    assert_string_equal(out, "Bearer realm=\"sluice\", error=\"invalid_token\", "
                             "error_description=\"token expired\"");
    assert_int_equal(n, strlen(out));
    char tiny[8];
    n = auth_www_authenticate(tiny, sizeof(tiny), "token expired");
    assert_int_equal(n, 7);
    assert_string_equal(tiny, "Bearer ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_token),
        cmocka_unit_test(test_hs256_valid_grant),
        cmocka_unit_test(test_hs384_hs512_valid),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_expired_within_leeway),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_fractional_dates),
        cmocka_unit_test(test_alg_none_refused),
        cmocka_unit_test(test_algorithm_confusion),
        cmocka_unit_test(test_unsupported_algs),
        cmocka_unit_test(test_odd_headers),
        cmocka_unit_test(test_malformed_shapes),
        cmocka_unit_test(test_audience_and_issuer),
        cmocka_unit_test(test_rs256_and_es256_valid),
        cmocka_unit_test(test_key_rotation),
        cmocka_unit_test(test_kid_matching),
        cmocka_unit_test(test_wildcard_cover),
        cmocka_unit_test(test_malformed_claims),
        cmocka_unit_test(test_subject_claim_sanitized),
        cmocka_unit_test(test_oversized_token),
        cmocka_unit_test(test_openssl_error_queue_left_clean),
        cmocka_unit_test(test_mode_none),
        cmocka_unit_test(test_new_errors),
        cmocka_unit_test(test_pkcs1_public_key_accepted),
        cmocka_unit_test(test_concurrent_verify),
        cmocka_unit_test(test_token_from_bearer),
        cmocka_unit_test(test_token_from_cookie),
        cmocka_unit_test(test_token_from_query),
        cmocka_unit_test(test_www_authenticate),
        cmocka_unit_test(test_default_subjects),
        cmocka_unit_test(test_callout_answer),
        cmocka_unit_test(test_expand_template),
        cmocka_unit_test(test_revoke_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
