/*
 * cl_opt: see cl_opt.h. The numbers are strtoull/strtod behind a stricter
 * front door: they accept leading blanks and signs, which an option value
 * should not. getopt_long's table is built from the program's: entry i
 * answers i + CL_OPT_FIRST, so the table needs no enum of its own.
 */
#include "cl_opt.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cl_log.h"
#include "cl_mem.h"

#define CL_OPT_FIRST 256     /* getopt_long's value for the table's first entry */
#define CL_OPT_USAGE_COL 28 /* where the usage's help texts start */

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

/* Stores value as o says; false when it is not one o takes. */
static bool take(const struct cl_opt *o, const char *value)
{
    unsigned long long v;
    switch (o->kind) {
    case CL_OPT_KIND_FLAG: *(bool *)o->dst = true; return true;
    case CL_OPT_KIND_STR: *(const char **)o->dst = value; return true;
    case CL_OPT_KIND_REAL: return cl_opt_real(value, o->real_max, (double *)o->dst);
    case CL_OPT_KIND_CALL: return o->call(o->dst, value);
    case CL_OPT_KIND_UINT:
    case CL_OPT_KIND_ULL:
    case CL_OPT_KIND_LL:
        if (!cl_opt_num(value, o->max, &v) || v < o->min)
            return false;
        if (o->kind == CL_OPT_KIND_UINT)
            *(unsigned *)o->dst = (unsigned)v;
        else if (o->kind == CL_OPT_KIND_ULL)
            *(unsigned long long *)o->dst = v;
        else
            *(long long *)o->dst = (long long)v;
        return true;
    case CL_OPT_KIND_GROUP: break;
    }
    return false;
}

void cl_opt_usage(const struct cl_opt_spec *s, FILE *f)
{
    fputs(s->synopsis, f);
    for (size_t i = 0; i < s->nopts; i++) {
        const struct cl_opt *o = &s->opts[i];
        if (o->kind == CL_OPT_KIND_GROUP) {
            fprintf(f, "%s\n", o->name);
            continue;
        }
        int n = fprintf(f, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        const char *h = o->help ? o->help : "";
        /* A long option name gets its help on the next line rather than none. */
        if (*h && n >= CL_OPT_USAGE_COL - 1) {
            fputc('\n', f);
            n = 0;
        }
        for (;;) {
            size_t len = strcspn(h, "\n");
            fprintf(f, "%*s%.*s\n", *h ? CL_OPT_USAGE_COL - n : 0, "", (int)len, h);
            if (h[len] != '\n')
                break;
            h += len + 1;
            n = 0;
        }
    }
    if (s->epilogue)
        fputs(s->epilogue, f);
}

int cl_opt_fail(const struct cl_opt_spec *s, const char *why)
{
    fprintf(stderr, "%s: %s\n", cl_log_prog(), why);
    cl_opt_usage(s, stderr);
    return -1;
}

int cl_opt_parse(const struct cl_opt_spec *s, int argc, char **argv)
{
    struct option *longopts = cl_mem_calloc(s->nopts + 2, sizeof *longopts);
    size_t n = 0;
    for (size_t i = 0; i < s->nopts; i++) {
        const struct cl_opt *o = &s->opts[i];
        if (o->kind == CL_OPT_KIND_GROUP)
            continue;
        bool has_arg = o->kind != CL_OPT_KIND_FLAG;
        longopts[n++] = (struct option){o->name, has_arg ? required_argument : no_argument, NULL,
                                        CL_OPT_FIRST + (int)i};
    }
    int help = CL_OPT_FIRST + (int)s->nopts;
    longopts[n] = (struct option){"help", no_argument, NULL, help};
    bool *seen = cl_mem_calloc(s->nopts + 1, sizeof *seen);
    int ch, rc = 0;
    while (rc == 0 && (ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (ch >= CL_OPT_FIRST && ch < help)
            seen[ch - CL_OPT_FIRST] = true;
        if (ch == help) {
            cl_opt_usage(s, stdout);
            rc = 1;
        } else if (ch < CL_OPT_FIRST || ch > help) {
            cl_opt_usage(s, stderr); /* getopt_long has said what was wrong */
            rc = -1;
        } else if (!take(&s->opts[ch - CL_OPT_FIRST], optarg)) {
            fprintf(stderr, "%s: bad value for --%s: %s\n", cl_log_prog(),
                    s->opts[ch - CL_OPT_FIRST].name, optarg ? optarg : "");
            cl_opt_usage(s, stderr);
            rc = -1;
        }
    }
    for (size_t i = 0; rc == 0 && i < s->nopts; i++) {
        if (s->opts[i].required && !seen[i]) {
            char why[96];
            snprintf(why, sizeof why, "--%s is required", s->opts[i].name);
            rc = cl_opt_fail(s, why);
        }
    }
    if (rc == 0 && !s->operand && optind < argc)
        rc = cl_opt_fail(s, "unexpected argument");
    if (rc == 0 && s->operand && optind + 1 != argc) {
        char why[96];
        snprintf(why, sizeof why, "exactly one %s is required", s->operand);
        rc = cl_opt_fail(s, why);
    }
    free(seen);
    free(longopts);
    return rc;
}
