/*
 * subject: NATS subject rules (see subject.h).
 *
 * Stricter than nats-server on purpose: subjects come from URLs typed by
 * strangers, so anything that is not a printable, non-space byte is
 * refused here rather than reaching the broker.
 */
#include "sluice/subject.h"

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

bool subject_covers(const char *grant, const char *request)
{
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
