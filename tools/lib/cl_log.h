/*
 * cl_log: stderr messages of the client programs (sluice-client,
 * sluice-bench, sluice-probe), each line prefixed with the program's name.
 *
 * Process-wide state (the name, whether --verbose is on, an optional clock
 * origin) is set once by main() before anything logs; the programs are
 * single-threaded where they log. Rejected alternative: a logger object
 * passed everywhere, which every helper of the library would then need.
 */
#ifndef SLUICE_CL_LOG_H
#define SLUICE_CL_LOG_H

#include <stdbool.h>

/* prog is borrowed (a string literal). */
void cl_log_init(const char *prog);
/* Turns cl_log_debug() on or off (--verbose). */
void cl_log_set_verbose(bool on);
/* With origin_ms > 0, debug lines carry "[ms since origin]" (monotonic). */
void cl_log_set_origin(double origin_ms);
/* The name given to cl_log_init(), or "sluice-client-lib". */
const char *cl_log_prog(void);
/* "prog: message\n" on stderr, always. */
__attribute__((format(printf, 1, 2))) void cl_log_error(const char *fmt, ...);
/* The same, only when verbose. */
__attribute__((format(printf, 1, 2))) void cl_log_debug(const char *fmt, ...);

#endif
