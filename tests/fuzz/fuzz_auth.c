/*
 * libFuzzer target: token and claim handling.
 *
 * First byte selects the mode:
 *   even: the rest is a raw token for auth_verify();
 *   odd:  the rest is a header, a NUL, then claims JSON; the target signs
 *         base64url(header).base64url(claims) with the configured HS256
 *         secret, so the fuzzer reaches the claim checks past the
 *         signature.
 * Properties checked: verification either refuses with a one-line reason
 * or hands out a grant whose patterns are all valid, of which there are at
 * most AUTH_MAX_PATTERNS, whose deadline is not before now, and whose
 * patterns allow themselves. The token extraction helpers get the same
 * bytes and must stay inside them.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/auth.h"
#include "sluice/err.h"
#include "sluice/subject.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SECRET[] = "fuzz-secret-fuzz-secret-fuzz-secret!";
static const int64_t NOW = 1800000000;

static struct auth *shared_auth(void)
{
    static struct auth *a;
    if (a)
        return a;
    char path[] = "/tmp/sluice-fuzz-auth-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || fputs(SECRET, f) < 0 || fclose(f) != 0)
        abort();
    struct auth_params p = {
        .mode = AUTH_JWT, .hs_secret_file = path, .leeway_s = 30, .audience = "sluice"};
    char err[256];
    if (auth_new(&a, &p, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_auth: %s\n", err);
        abort();
    }
    remove(path);
    return a;
}

static size_t b64url(char *out, const uint8_t *in, size_t n)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    size_t o = 0;
    for (int i = 0; i < len; i++) {
        if (out[i] == '=')
            continue;
        out[o++] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    }
    out[o] = '\0';
    return o;
}

/* header.claims.signature over the two parts of in (split at the first NUL). */
static char *sign(const uint8_t *in, size_t n, size_t *toklen)
{
    const uint8_t *nul = memchr(in, '\0', n);
    size_t hlen = nul ? (size_t)(nul - in) : n;
    const uint8_t *claims = nul ? nul + 1 : in + n;
    size_t clen = n - hlen - (nul ? 1 : 0);
    char *tok = malloc(4 * (n / 3 + 4) + 128);
    size_t o = b64url(tok, in, hlen);
    tok[o++] = '.';
    o += b64url(tok + o, claims, clen);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen;
    HMAC(EVP_sha256(), SECRET, sizeof(SECRET) - 1, (unsigned char *)tok, o, mac, &maclen);
    tok[o++] = '.';
    o += b64url(tok + o, mac, maclen);
    *toklen = o;
    return tok;
}

static void check_grant(const struct auth_grant *g)
{
    if (auth_grant_expires(g) <= NOW)
        __builtin_trap();
    for (int act = AUTH_SUBSCRIBE; act <= AUTH_PUBLISH; act++) {
        const char *const *pats;
        size_t n = auth_grant_patterns(g, (enum auth_action)act, &pats);
        if (n > AUTH_MAX_PATTERNS)
            __builtin_trap();
        for (size_t i = 0; i < n; i++) {
            if (!subject_valid(pats[i], strlen(pats[i]), true, NULL))
                __builtin_trap();
            if (!auth_can(g, (enum auth_action)act, pats[i]))
                __builtin_trap();
        }
    }
    const char *sub = auth_grant_subject(g);
    for (const char *p = sub; p && *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            __builtin_trap();
}

static void extract(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *tok;
    size_t n;
    if (auth_token_from_bearer(s, size, &tok, &n) && (tok < s || tok + n > s + size || n == 0))
        __builtin_trap();
    if (auth_token_from_cookie(s, size, "token", &tok, &n) &&
        (tok < s || tok + n > s + size || n == 0))
        __builtin_trap();
    char out[AUTH_TOKEN_MAX + 1];
    int rc = auth_token_from_query(s, size, out, sizeof(out), &n);
    if (rc == 0 && (n == 0 || n > AUTH_TOKEN_MAX || out[n] != '\0' || strlen(out) != n))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct auth *a = shared_auth();
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    /* An exact-length copy, so a read past the token's end is caught. */
    char *tok;
    size_t toklen;
    if (data[0] & 1) {
        tok = sign(body, n, &toklen);
    } else {
        tok = malloc(n ? n : 1);
        memcpy(tok, body, n);
        toklen = n;
    }
    struct auth_grant *g = NULL;
    const char *why = NULL;
    int rc = auth_verify(a, tok, toklen, NOW, &g, &why);
    if (rc == 0) {
        if (!g || why)
            __builtin_trap();
        check_grant(g);
    } else if (rc != ERR_INVALID || g || !why || strchr(why, '\n') || strchr(why, '"')) {
        __builtin_trap();
    }
    auth_grant_free(g);
    free(tok);
    extract(body, n);
    return 0;
}
