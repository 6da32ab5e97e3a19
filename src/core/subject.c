/*
 * subject: NATS subject rules (see subject.h).
 *
 * Stricter than nats-server on purpose: subjects come from URLs typed by
 * strangers, so anything that is not a printable, non-space byte is
 * refused here rather than reaching the broker.
 */
#include "sluice/subject.h"

#include <stdint.h>
#include <string.h>

bool subject_valid(const char *s, size_t len, bool wildcards, const char **reason)
{
    const char *why = NULL;
    if (len == 0)
        why = "empty subject";
    else if (len > SUBJECT_MAX_LEN)
        why = "subject longer than 255 bytes";
    size_t tok = 0; /* start of the current token */
    for (size_t i = 0; !why && i <= len; i++) {
        if (i < len && s[i] != '.') {
            unsigned char c = (unsigned char)s[i];
            if (c <= 0x20 || c == 0x7f)
                why = "whitespace or control character in subject";
            continue;
        }
        size_t n = i - tok;
        const char *t = s + tok;
        if (n == 0)
            why = "empty token in subject";
        else if (memchr(t, '*', n) || memchr(t, '>', n)) {
            if (!wildcards)
                why = "wildcard not allowed here";
            else if (n != 1)
                why = "wildcard must be a whole token";
            else if (*t == '>' && i != len)
                why = "'>' must be the last token";
        }
        tok = i + 1;
    }
    if (why && reason)
        *reason = why;
    return why == NULL;
}

/* Length of the token starting at s (up to '.' or NUL). */
static size_t token_len(const char *s)
{
    return strcspn(s, ".");
}

static bool token_eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && memcmp(a, b, an) == 0;
}

bool subject_match(const char *pattern, const char *subject)
{
    const char *p = pattern, *s = subject;
    for (;;) {
        size_t pn = token_len(p), sn = token_len(s);
        if (pn == 1 && *p == '>')
            return sn > 0;
        if (!(pn == 1 && *p == '*') && !token_eq(p, pn, s, sn))
            return false;
        p += pn;
        s += sn;
        if (!*p || !*s)
            return !*p && !*s;
        p++;
        s++;
    }
}

bool subject_reserved(const char *s)
{
    size_t n = token_len(s);
    return (n > 0 && s[0] == '$') || token_eq(s, n, "_INBOX", 6);
}

bool subject_covers(const char *grant, const char *request)
{
    /* NATS's own subjects are never granted by a wildcard: only by naming them. */
    if (subject_reserved(request) && !subject_reserved(grant))
        return false;
    const char *g = grant, *r = request;
    for (;;) {
        size_t gn = token_len(g), rn = token_len(r);
        if (gn == 1 && *g == '>')
            return rn > 0;
        if (rn == 1 && *r == '>')
            return false; /* only '>' covers '>' */
        if (gn == 1 && *g == '*') {
            /* '*' covers any one token, '*' included. */
        } else if (rn == 1 && *r == '*') {
            return false;
        } else if (!token_eq(g, gn, r, rn)) {
            return false;
        }
        g += gn;
        r += rn;
        if (!*g || !*r)
            return !*g && !*r;
        g++;
        r++;
    }
}

bool subject_overlaps(const char *a, const char *b)
{
    for (;;) {
        size_t an = token_len(a), bn = token_len(b);
        if ((an == 1 && *a == '>') || (bn == 1 && *b == '>'))
            return true; /* both still have a token here, and '>' takes the rest */
        bool any = (an == 1 && *a == '*') || (bn == 1 && *b == '*');
        if (!any && !token_eq(a, an, b, bn))
            return false;
        a += an;
        b += bn;
        if (!*a || !*b)
            return !*a && !*b;
        a++;
        b++;
    }
}

/*
 * Calls fn on each entry of a comma-separated list, copied NUL-terminated;
 * stops at the first true answer and returns it. An entry too long to be a
 * subject is passed as "" (which no rule accepts).
 */
static bool any_entry(const char *list, bool (*fn)(const char *entry, const void *arg),
                      const void *arg)
{
    for (const char *p = list ? list : ""; *p;) {
        size_t n = strcspn(p, ",");
        char entry[SUBJECT_MAX_LEN + 1] = "";
        if (n <= SUBJECT_MAX_LEN) {
            memcpy(entry, p, n);
            entry[n] = '\0';
        }
        if (fn(entry, arg))
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

static bool entry_covers(const char *entry, const void *request)
{
    return *entry && subject_valid(entry, strlen(entry), true, NULL) &&
           subject_reserved(entry) && subject_covers(entry, request);
}

bool subject_allowed(const char *list, const char *request)
{
    return !subject_reserved(request) || any_entry(list, entry_covers, request);
}

static bool entry_bad(const char *entry, const void *reason)
{
    const char **why = (const char **)(uintptr_t)reason;
    if (!*entry)
        *why = "empty or over-long entry";
    else if (!subject_valid(entry, strlen(entry), true, why))
        return true;
    else if (!subject_reserved(entry))
        *why = "entry does not start with a reserved token ($... or _INBOX)";
    else
        return false;
    return true;
}

bool subject_allow_list_valid(const char *list, const char **reason)
{
    const char *why = NULL;
    bool bad = any_entry(list, entry_bad, (const void *)(uintptr_t)&why);
    if (bad && reason)
        *reason = why;
    return !bad;
}
