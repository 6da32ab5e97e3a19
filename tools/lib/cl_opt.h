/*
 * cl_opt: the command lines of the client programs, so that --connect,
 * --header, --help, numbers and their errors mean the same in all of them.
 *
 * A program describes its options once, as a table of struct cl_opt (one
 * line per option: its name, where its value goes, its range, and its
 * line in the usage), and cl_opt_parse() runs getopt_long over it: it
 * stores flags, strings and numbers (range-checked), calls the program's
 * function for the rest, prints the usage for --help, and for a bad value
 * prints "PROG: bad value for --NAME: VALUE" and the usage, once.
 *
 * Rejected alternative: each program's own getopt_long loop, which is what
 * there was: an enum, a struct option table and a usage text kept in the
 * same order by hand, and a switch that repeated the "bad value" block
 * and the number parsing in three programs.
 *
 * The value parsers below return a failure instead of printing, so that
 * the one message above names the option.
 */
#ifndef SLUICE_CL_OPT_H
#define SLUICE_CL_OPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum cl_opt_kind {
    CL_OPT_KIND_GROUP, /* no option: a heading in the usage */
    CL_OPT_KIND_FLAG,  /* bool: set true */
    CL_OPT_KIND_STR,   /* const char *: the value, borrowed from argv */
    CL_OPT_KIND_UINT,  /* unsigned: a whole number in [min, max] */
    CL_OPT_KIND_ULL,   /* unsigned long long: a whole number in [min, max] */
    CL_OPT_KIND_LL,    /* long long: a whole number in [min, max] */
    CL_OPT_KIND_REAL,  /* double: a real number in [0, real_max] */
    CL_OPT_KIND_CALL,  /* call(dst, value): false when the value is bad */
};

struct cl_opt {
    const char *name; /* without "--"; a group's heading */
    enum cl_opt_kind kind;
    void *dst;                    /* where the value goes (CALL: call's first argument) */
    unsigned long long min, max;  /* whole numbers */
    double real_max;              /* real numbers */
    bool (*call)(void *dst, const char *value);
    const char *arg;  /* the value's name in the usage ("N", "FILE"); NULL: none taken */
    bool required;    /* cl_opt_parse() fails without it */
    const char *help; /* its usage line; a '\n' starts an indented continuation */
};

/* The table's lines. _Generic makes a dst of the wrong type a compile error. */
#define CL_OPT_GROUP(heading) {.name = (heading), .kind = CL_OPT_KIND_GROUP}
#define CL_OPT_FLAG(n, d, h)                                                                     \
    {.name = (n), .kind = CL_OPT_KIND_FLAG, .dst = _Generic((d), bool *: (d)), .help = (h)}
#define CL_OPT_STR(n, d, a, h)                                                                   \
    {.name = (n), .kind = CL_OPT_KIND_STR, .dst = _Generic((d), const char **: (d)), .arg = (a), \
     .help = (h)}
#define CL_OPT_UINT(n, d, lo, hi, a, h)                                                          \
    {.name = (n), .kind = CL_OPT_KIND_UINT, .dst = _Generic((d), unsigned *: (d)), .min = (lo),  \
     .max = (hi), .arg = (a), .help = (h)}
#define CL_OPT_ULL(n, d, lo, hi, a, h)                                                           \
    {.name = (n), .kind = CL_OPT_KIND_ULL, .dst = _Generic((d), unsigned long long *: (d)),      \
     .min = (lo), .max = (hi), .arg = (a), .help = (h)}
#define CL_OPT_LL(n, d, lo, hi, a, h)                                                            \
    {.name = (n), .kind = CL_OPT_KIND_LL, .dst = _Generic((d), long long *: (d)), .min = (lo),   \
     .max = (hi), .arg = (a), .help = (h)}
#define CL_OPT_REAL(n, d, hi, a, h)                                                              \
    {.name = (n), .kind = CL_OPT_KIND_REAL, .dst = _Generic((d), double *: (d)),                 \
     .real_max = (hi), .arg = (a), .help = (h)}
#define CL_OPT_CALL(n, fn, d, a, h)                                                              \
    {.name = (n), .kind = CL_OPT_KIND_CALL, .call = (fn), .dst = (d), .arg = (a), .help = (h)}

/* A program's command line: its options and the text around them in the usage. */
struct cl_opt_spec {
    const char *synopsis; /* the usage's first lines, "usage: PROG ...\n" */
    const struct cl_opt *opts;
    size_t nopts;
    const char *epilogue; /* after the options; may be NULL */
    const char *operand;  /* the one operand's name ("URL"); NULL: none taken */
};

/*
 * Parses argv's options (--help is implied) into s's destinations; on
 * success argv[optind] is the operand, if s takes one. 0: parsed; 1:
 * --help, the usage is on stdout; -1: a bad or unknown option, a required
 * one missing, or operands other than s says, told on stderr with the
 * usage. Stops at the first bad one: destinations before it are set.
 */
int cl_opt_parse(const struct cl_opt_spec *s, int argc, char **argv);
/* "PROG: why" and the usage on stderr; returns -1, for a parse_options() to return. */
int cl_opt_fail(const struct cl_opt_spec *s, const char *why);
/* The usage: synopsis, one line per option (headings for groups), epilogue. */
void cl_opt_usage(const struct cl_opt_spec *s, FILE *f);

/* A decimal whole number <= max, digits only (no sign, no space). */
bool cl_opt_num(const char *s, unsigned long long max, unsigned long long *out);
/* A non-negative decimal real <= max ("0.5", ".5", "2"). */
bool cl_opt_real(const char *s, double max, double *out);
/*
 * Splits HOST:PORT or [V6ADDR]:PORT. On success *host (without brackets)
 * and *port are new strings the caller frees; returns false when either
 * part is missing or empty.
 */
bool cl_opt_host_port(const char *arg, char **host, char **port);
/*
 * Splits "Name: value" at the first colon: *name is a lowercased copy
 * (HTTP/2 wants lowercase), *value a copy without leading blanks; the
 * caller frees both. Returns false when there is no name.
 */
bool cl_opt_header(const char *arg, char **name, char **value);

#endif
