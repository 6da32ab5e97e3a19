/*
 * revoke: parsing and checking a revocation (see revoke.h). Strict like
 * every input: unknown JSON members, duplicates, an invalid subject or a
 * principal with spaces or control bytes are refused, so a typo in an
 * operator's command does not silently revoke nothing (or everything).
 */
#include "sluice/revoke.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"
#include "sluice/mem.h"
#include "sluice/route.h"
#include "sluice/subject.h"

#define PRINCIPAL_MAX 128

static bool printable(const char *s, size_t n, bool spaces)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || (!spaces && c == ' '))
            return false;
    }
    return true;
}

/* Checks and keeps one field's value; NULL or a static reason. */
static const char *take(struct revoke *r, const char *name, const char *v, size_t n)
{
    if (strcmp(name, "principal") == 0) {
        if (r->principal || n == 0 || n > PRINCIPAL_MAX || !printable(v, n, false))
            return "principal must be 1..128 printable bytes without spaces, once";
        r->principal = mem_strndup(v, n);
    } else if (strcmp(name, "subject") == 0) {
        if (r->subject || memchr(v, '\0', n) || !subject_valid(v, n, true, NULL))
            return "subject must be a valid NATS subject, once";
        r->subject = mem_strndup(v, n);
    } else if (strcmp(name, "reason") == 0) {
        if (r->reason || n == 0 || n > REVOKE_REASON_MAX || !printable(v, n, true))
            return "reason must be 1..200 printable bytes, once";
        r->reason = mem_strndup(v, n);
    } else {
        return "unknown field (principal, subject, reason)";
    }
    return NULL;
}

static int finish(struct revoke *r, const char *why, const char **out_why)
{
    if (!why && !r->principal && !r->subject)
        why = "name a principal or a subject";
    if (why) {
        revoke_dispose(r);
        *out_why = why;
        return ERR_INVALID;
    }
    if (!r->reason)
        r->reason = mem_strdup("revoked");
    return 0;
}

int revoke_from_json(const char *data, size_t len, struct revoke *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    json_t *obj = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    const char *bad = NULL;
    if (!obj || !json_is_object(obj)) {
        bad = "not a JSON object";
    } else {
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
            if (!json_is_string(v)) {
                bad = "every field is a string";
                break;
            }
            if ((bad = take(out, key, json_string_value(v), json_string_length(v))))
                break;
        }
    }
    json_decref(obj);
    return finish(out, bad, why);
}

int revoke_from_query(const char *query, size_t len, struct revoke *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    const char *bad = NULL;
    while (len > 0 && !bad) {
        const char *amp = memchr(query, '&', len);
        size_t plen = amp ? (size_t)(amp - query) : len;
        const char *eq = memchr(query, '=', plen);
        if (!eq) {
            bad = "a query field without a value";
            break;
        }
        char name[16];
        size_t nlen = (size_t)(eq - query);
        char *value = mem_strndup(eq + 1, plen - nlen - 1);
        long vn = http_percent_decode(value, strlen(value));
        if (nlen >= sizeof(name) || vn < 0) {
            bad = vn < 0 ? "bad percent-encoding" : "unknown field (principal, subject, reason)";
        } else {
            memcpy(name, query, nlen);
            name[nlen] = '\0';
            bad = take(out, name, value, (size_t)vn);
        }
        free(value);
        if (!amp)
            break;
        len -= plen + 1;
        query = amp + 1;
    }
    return finish(out, bad, why);
}

struct revoke *revoke_copy(const struct revoke *r)
{
    struct revoke *c = mem_calloc(1, sizeof(*c));
    c->principal = r->principal ? mem_strdup(r->principal) : NULL;
    c->subject = r->subject ? mem_strdup(r->subject) : NULL;
    c->reason = r->reason ? mem_strdup(r->reason) : NULL;
    return c;
}

void revoke_dispose(struct revoke *r)
{
    free(r->principal);
    free(r->subject);
    free(r->reason);
    memset(r, 0, sizeof(*r));
}

void revoke_free(struct revoke *r)
{
    if (!r)
        return;
    revoke_dispose(r);
    free(r);
}
