/*
 * cl_opt: see cl_opt.h. strtoull/strtod behind a stricter front door:
 * they accept leading blanks and signs, which an option value should not.
 */
#include "cl_opt.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cl_mem.h"

bool cl_opt_num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)s[0]))
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

bool cl_opt_real(const char *s, double max, double *out)
{
    char *end;
    if (!s || !(isdigit((unsigned char)s[0]) || s[0] == '.'))
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || v < 0 || v > max)
        return false;
    *out = v;
    return true;
}

bool cl_opt_host_port(const char *arg, char **host, char **port)
{
    const char *h = arg, *p;
    size_t hlen;
    if (arg[0] == '[') {
        const char *close_br = strchr(arg, ']');
        if (!close_br || close_br[1] != ':')
            return false;
        h = arg + 1;
        hlen = (size_t)(close_br - h);
        p = close_br + 2;
    } else {
        const char *colon = strrchr(arg, ':');
        if (!colon)
            return false;
        hlen = (size_t)(colon - arg);
        p = colon + 1;
    }
    if (hlen == 0 || p[0] == '\0')
        return false;
    *host = cl_mem_strndup(h, hlen);
    *port = cl_mem_strndup(p, strlen(p));
    return true;
}

bool cl_opt_header(const char *arg, char **name, char **value)
{
    const char *colon = strchr(arg, ':');
    if (!colon || colon == arg)
        return false;
    size_t nlen = (size_t)(colon - arg);
    *name = cl_mem_strndup(arg, nlen);
    for (size_t i = 0; i < nlen; i++)
        (*name)[i] = (char)tolower((unsigned char)(*name)[i]);
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    *value = cl_mem_strndup(v, strlen(v));
    return true;
}
