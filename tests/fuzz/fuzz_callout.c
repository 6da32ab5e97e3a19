/*
 * libFuzzer target: the auth callout's answer and revocations.
 *
 * First byte selects the parser, the rest is its input:
 *   0 mod 3: auth_grant_from_callout() (the service's JSON body);
 *   1 mod 3: revoke_from_json() (a control-subject message);
 *   2 mod 3: revoke_from_query() (the admin listener's query).
 * Properties checked: an answer is refused with a one-line reason or
 * becomes a grant whose principal is 1..128 printable bytes, whose
 * patterns and default subjects are all valid subjects that allow
 * themselves (defaults never overlapping one another), of which there are at most AUTH_MAX_PATTERNS, whose expiry
 * is 0 or after now and whose ttl is -1 or 0..86400; a "{sub}" template
 * never yields a subject with more tokens than the template has. A
 * revocation names a principal or a valid subject and has a one-line
 * reason.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/auth.h"
#include "sluice/err.h"
#include "sluice/revoke.h"
#include "sluice/subject.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int64_t NOW = 1800000000;

static void check_list(const struct auth_grant *g, const char *const *list, size_t n)
{
    if (n > AUTH_MAX_PATTERNS)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (!subject_valid(list[i], strlen(list[i]), true, NULL))
            abort();
        if (!auth_can_subscribe(g, list[i]) && !auth_can_publish(g, list[i]))
            abort();
    }
}

static void check_grant(const struct auth_grant *g, int64_t ttl)
{
    const char *p = auth_grant_subject(g);
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > 128)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            abort();
    if (auth_grant_expires(g) != 0 && auth_grant_expires(g) <= NOW)
        abort();
    if (ttl < -1 || ttl > 86400 || !auth_grant_renewable(g))
        abort();
    const char *const *list;
    size_t k = auth_grant_patterns(g, AUTH_SUBSCRIBE, &list);
    check_list(g, list, k);
    k = auth_grant_patterns(g, AUTH_PUBLISH, &list);
    check_list(g, list, k);
    k = auth_grant_defaults(g, &list);
    check_list(g, list, k);
    for (size_t i = 0; i < k; i++)
        for (size_t j = i + 1; j < k; j++)
            if (subject_overlaps(list[i], list[j]))
                abort(); /* one stream carries them all: never two links on one topic */
    /* The principal, once expanded, is one token: never a dot or wildcard more. */
    char out[512];
    if (auth_expand_template(g, "u.{sub}", out, sizeof(out)) == 0 &&
        (strchr(out + 2, '.') || strpbrk(out, "*>")))
        abort();
}

static void check_revoke(const struct revoke *r)
{
    if (!r->principal && !r->subject)
        abort();
    if (r->subject && !subject_valid(r->subject, strlen(r->subject), true, NULL))
        abort();
    if (!r->reason || strpbrk(r->reason, "\r\n") || strlen(r->reason) > REVOKE_REASON_MAX)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    const char *why = NULL;
    if (data[0] % 3 == 0) {
        struct auth_grant *g = NULL;
        int64_t ttl = 7;
        int rc = auth_grant_from_callout(in, n, NOW, &g, &ttl, &why);
        if (rc == 0) {
            if (!g || why)
                abort();
            check_grant(g, ttl);
            auth_grant_free(g);
        } else if (rc != ERR_INVALID || g || !why || strchr(why, '\n') || ttl != -1) {
            abort();
        }
        return 0;
    }
    struct revoke r;
    int rc = data[0] % 3 == 1 ? revoke_from_json(in, n, &r, &why)
                              : revoke_from_query(in, n, &r, &why);
    if (rc == 0) {
        check_revoke(&r);
        revoke_dispose(&r);
    } else if (!why || r.principal || r.subject || r.reason) {
        abort();
    }
    return 0;
}
