/*
 * auth: who may subscribe to and publish on which subjects (JWT).
 *
 * Owns the verification keys, loaded once by auth_new() and read-only
 * afterwards, so one struct auth is shared by every worker thread and
 * auth_verify() may run on several of them at once. A verified token
 * becomes a struct auth_grant: an immutable copy of what the token allows,
 * owned by the request or stream that asked, independent of the struct
 * auth (a reload may free the old one while grants live on).
 *
 * Token format (the README's security section is built from this note)
 * ----------------------------------------------------------------------
 * A compact JWS, at most AUTH_TOKEN_MAX bytes, signed with one of
 *   HS256 HS384 HS512   the shared secret (auth_params.hs_secret_file)
 *   RS256               an RSA public key, 2048 bits or more
 *   ES256               an EC P-256 public key
 * The header's "alg" chooses the key family and nothing else does: an HS
 * token is only ever checked against the secret, an RS256 token only
 * against RSA keys, an ES256 token only against P-256 keys. "alg": "none",
 * any other algorithm, an algorithm with no key of its family configured,
 * a "typ" other than "JWT" and any "crit" header are refused. When the
 * header has a "kid" and some keys of the family are named, only the keys
 * with that name are tried; otherwise each key of the family is tried in
 * configuration order (rotation: list the new key and the old one).
 *
 * Claims:
 *   {
 *     "exp": 1767225600,           required, NumericDate (seconds)
 *     "nbf": 1767222000,           optional
 *     "aud": "sluice" | ["a","b"], checked when an audience is configured
 *     "iss": "https://idp.example",checked when an issuer is configured
 *     "sub": "user-42",            optional, only for logs
 *     "sluice": {                  required
 *       "subscribe": ["orders.>", "prices.*"],
 *       "publish":   ["orders.eu"],
 *       "default":   ["user.{sub}.>"]
 *     }
 *   }
 * "default" (optional) lists the subjects `GET /events` with no subject
 * subscribes to (server-chosen subscriptions); "{sub}" in one is replaced
 * by the principal ("sub"), which must then be one subject token of
 * letters, digits and "-_@+=:" (never ".", "*", ">", "$" or a space, so a
 * principal cannot widen or move its subject). A default that cannot be
 * expanded, or defaults that overlap one another (one stream carries them
 * all), are refused with the token. Defaults are granted for
 * subscribing as they are, like "subscribe" entries.
 * "subscribe" and "publish" are each optional arrays of at most
 * AUTH_MAX_PATTERNS NATS subject patterns (wildcards allowed, the same
 * rules as requested subjects); an absent list grants nothing. A token
 * with any invalid pattern, a list that is not an array of strings, or a
 * "sluice" claim that is not an object is refused as a whole. Unknown
 * members are ignored. exp and nbf are checked with leeway_s of clock
 * skew either way: valid while nbf - leeway <= now < exp + leeway.
 *
 * Permission rule: a requested subject, itself possibly a wildcard, is
 * allowed when some granted pattern covers it (subject_covers):
 * "orders.>" allows "orders.eu" and "orders.*"; "orders.*" allows
 * "orders.eu" but not "orders.>" nor "orders.eu.x". A stream on several
 * subjects needs every one of them covered.
 *
 * For the front ends: look for the token in the Authorization header, then
 * the cookie, then ?access_token= (EventSource cannot set headers). No
 * token or an invalid one: 401 with a www-authenticate header
 * (auth_www_authenticate); a valid token that does not cover a subject:
 * 403. A stream's grant stops being valid at auth_grant_expires(); end the
 * stream cleanly then, so the client reconnects with a fresh token.
 *
 * Rejected: libjwt's jwt_decode() alone. In libjwt 1.10 it takes the
 * algorithm from the token, so an HS256 token "signed" with the RSA public
 * key's PEM bytes verifies when that PEM is passed as the key, and with a
 * NULL or empty key it accepts any token, "alg": "none" included, without
 * checking a signature. Here the header is parsed first, the key family
 * chosen from the configuration, and jwt_decode() is only called with a
 * non-empty key of that family; its answer's algorithm is checked again.
 */
#ifndef SLUICE_AUTH_H
#define SLUICE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_TOKEN_MAX 8192    /* bytes of a compact token */
#define AUTH_MAX_PATTERNS 64   /* per list in the "sluice" claim */
#define AUTH_MAX_KEYS 16       /* public key files */
#define AUTH_LEEWAY_MAX_S 3600 /* largest accepted leeway_s */
#define AUTH_HS_SECRET_MIN 32  /* bytes; RFC 7518 3.2 wants >= the hash size */
#define AUTH_WWW_AUTHENTICATE_MAX 160

struct auth;
struct auth_grant;

enum auth_mode {
    AUTH_NONE, /* no token needed; every request gets an allow-all grant */
    AUTH_JWT,
    AUTH_CALLOUT, /* an HTTP service decides (callout.h); auth_verify() refuses all */
};

enum auth_action { AUTH_SUBSCRIBE, AUTH_PUBLISH };

/* One public key file. */
struct auth_key_file {
    const char *path; /* PEM public key (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY) */
    const char *kid;  /* its name for "kid" matching, or NULL */
};

struct auth_params {
    enum auth_mode mode;
    /*
     * File holding the HS256/384/512 secret, or NULL for no HS algorithm.
     * Taken byte for byte except trailing CR/LF; at least
     * AUTH_HS_SECRET_MIN bytes; a file that looks like a PEM key is refused
     * (a public key must never become a shared secret).
     */
    const char *hs_secret_file;
    const struct auth_key_file *keys; /* nkeys entries, at most AUTH_MAX_KEYS */
    size_t nkeys;
    int64_t leeway_s;     /* clock skew allowed on exp and nbf; 0..AUTH_LEEWAY_MAX_S */
    const char *audience; /* required "aud" value, or NULL for no check */
    const char *issuer;   /* required "iss" value, or NULL for no check */
};

/*
 * Loads the keys. Mode AUTH_JWT needs a secret file or at least one key;
 * mode AUTH_NONE refuses any (a configured key with auth off is a mistake
 * that would leave the gateway open). Nothing in p is kept. 0, or
 * ERR_INVALID / ERR_IO with one line in err naming the file and the
 * reason. Never calls back.
 */
int auth_new(struct auth **out, const struct auth_params *p, char *err, size_t errlen);
/* auth_free(NULL) does nothing. Grants already handed out stay valid. */
void auth_free(struct auth *a);
/* True in modes AUTH_JWT and AUTH_CALLOUT: requests need a credential. */
bool auth_required(const struct auth *a);

/*
 * Verifies token (len bytes, no NUL needed; NULL or len 0 means the
 * request carried none) at time now_s (Unix seconds). In mode AUTH_NONE
 * the token is ignored and *out is an allow-all grant. Returns 0 with
 * *out set (the caller owns it), or ERR_INVALID with *out NULL and
 * *reason a static one-line reason without quotes ("no token", "token
 * expired", "bad signature", ...). Thread-safe on a shared struct auth;
 * never calls back.
 */
int auth_verify(const struct auth *a, const char *token, size_t len, int64_t now_s,
                struct auth_grant **out, const char **reason);

/*
 * A grant that allows every subject for both actions and never expires
 * (patterns ">"), as mode AUTH_NONE hands out. Caller owns it.
 */
struct auth_grant *auth_grant_new_all(void);
/*
 * Grants are reference-counted (atomically: a cached callout grant is
 * shared by the requests of one worker, and the count costs nothing
 * elsewhere). auth_grant_ref() adds one and returns g; auth_grant_free()
 * drops one and frees at zero. NULL is a no-op for both.
 */
struct auth_grant *auth_grant_ref(struct auth_grant *g);
void auth_grant_free(struct auth_grant *g);

/*
 * The callout's answer body (see README "Auth callout"): a JSON object of
 * at most AUTH_CALLOUT_BODY_MAX bytes,
 *   {"principal": "user-42",            required, 1..128 printable ASCII
 *    "subscribe": ["user.42.>"],        optional, as the JWT claim
 *    "publish":   ["chat.42"],          optional
 *    "default":   ["user.{sub}.>"],     optional, as the JWT claim
 *    "expires":   1767225600,           optional, Unix seconds: re-ask then
 *    "ttl":       60}                   optional, seconds the answer may be cached
 * with no other member and no duplicate (strict: a misspelt member is a
 * service bug that must not silently grant less or more). Returns 0 with
 * *out (caller owns it) and *ttl_s (-1 when absent), or ERR_INVALID with
 * *reason a static one-line reason. Pure; never calls back.
 */
#define AUTH_CALLOUT_BODY_MAX 16384
int auth_grant_from_callout(const char *json, size_t len, int64_t now_s,
                            struct auth_grant **out, int64_t *ttl_s, const char **reason);
/*
 * True when principal (NUL-terminated) may stand for "{sub}" in a
 * subject: 1..128 bytes of letters, digits and "-_@+=:".
 */
bool auth_principal_is_token(const char *principal);
/*
 * The grant's default subjects (expanded, valid, possibly wildcards):
 * sets *subjects (borrowed from g) and returns how many (0: none).
 */
size_t auth_grant_defaults(const struct auth_grant *g, const char *const **subjects);
/*
 * Expands one "{sub}" template with g's principal into out (outsz
 * bytes). 0, or ERR_INVALID when g has no principal fit for a subject
 * (auth_principal_is_token) or the result is not a valid subject.
 */
int auth_expand_template(const struct auth_grant *g, const char *tmpl, char *out, size_t outsz);
/* True for a callout's grant: at its expiry the stream asks again instead of ending. */
bool auth_grant_renewable(const struct auth_grant *g);

/*
 * True when g allows act on subject (NUL-terminated, wildcards allowed):
 * some granted pattern covers it. False for an invalid subject or NULL g.
 */
bool auth_can(const struct auth_grant *g, enum auth_action act, const char *subject);
bool auth_can_subscribe(const struct auth_grant *g, const char *subject);
bool auth_can_publish(const struct auth_grant *g, const char *subject);
/*
 * Unix second from which the token is no longer accepted (its exp plus
 * the leeway, so that a stream ended then is not admitted again by the
 * same token), or 0 for a grant that never expires.
 */
int64_t auth_grant_expires(const struct auth_grant *g);
/*
 * The token's "sub" for logs, or NULL. Printable ASCII only (other bytes
 * become '?'), at most 128 bytes. Borrowed from g.
 */
const char *auth_grant_subject(const struct auth_grant *g);
/* The granted patterns for act: sets *patterns (borrowed from g), returns how many. */
size_t auth_grant_patterns(const struct auth_grant *g, enum auth_action act,
                           const char *const **patterns);

/*
 * Token extraction (pure). Each returns the token without copying where
 * it can; the bytes are still to be verified. An empty token counts as
 * absent, so the caller moves on to the next source.
 *
 * From an Authorization header value: "Bearer <token>" (scheme in any
 * case, one or more spaces). Sets *tok inside value. False for another
 * scheme or an empty token.
 */
bool auth_token_from_bearer(const char *value, size_t len, const char **tok, size_t *toklen);
/*
 * From a Cookie header value ("a=1; b=2"): the first cookie called name
 * (case-sensitive), DQUOTEs around the value removed. Sets *tok inside
 * value. HTTP/2 may split cookies over several header fields: call once
 * per field. False when absent.
 */
bool auth_token_from_cookie(const char *value, size_t len, const char *name, const char **tok,
                            size_t *toklen);
/*
 * From a query string (the bytes after '?'): the access_token parameter,
 * percent-decoded ('+' stays '+', as in route.c) into out, NUL-terminated,
 * *outlen its length. 0; ERR_NOTFOUND when absent or empty; ERR_INVALID for bad
 * percent-encoding, a decoded NUL or a second access_token; ERR_LIMIT
 * when it does not fit in outsz - 1 bytes (use AUTH_TOKEN_MAX + 1).
 */
int auth_token_from_query(const char *query, size_t len, char *out, size_t outsz, size_t *outlen);

/*
 * The www-authenticate value for a 401 (RFC 6750): `Bearer realm="sluice"`,
 * plus error="invalid_token" and error_description when reason is not
 * NULL and not "no token". Writes at most outsz bytes, NUL included;
 * returns the length (truncated to fit, never past outsz - 1).
 */
size_t auth_www_authenticate(char *out, size_t outsz, const char *reason);

#endif
