/*
 * cl_log: see cl_log.h. One fputs/vfprintf/fputc sequence per line; the
 * programs log from one thread, so lines do not interleave.
 */
#include "cl_log.h"

#include <stdarg.h>
#include <stdio.h>

#include "cl_time.h"

static const char *log_prog = "sluice-client-lib";
static bool log_verbose;
static double log_origin_ms;

void cl_log_init(const char *prog) { log_prog = prog; }

void cl_log_set_verbose(bool on) { log_verbose = on; }

void cl_log_set_origin(double origin_ms) { log_origin_ms = origin_ms; }

const char *cl_log_prog(void) { return log_prog; }

__attribute__((format(printf, 1, 0))) static void write_line(const char *fmt, va_list ap,
                                                             bool stamped)
{
    fprintf(stderr, "%s: ", log_prog);
    if (stamped)
        fprintf(stderr, "[%8.1f ms] ", cl_time_mono_ms() - log_origin_ms);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cl_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    write_line(fmt, ap, false);
    va_end(ap);
}

void cl_log_debug(const char *fmt, ...)
{
    va_list ap;
    if (!log_verbose)
        return;
    va_start(ap, fmt);
    write_line(fmt, ap, log_origin_ms > 0);
    va_end(ap);
}
