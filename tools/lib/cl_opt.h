/*
 * cl_opt: the command-line value parsers the client programs share, so
 * that --connect, --header and numbers mean the same in all of them.
 * Each returns a failure instead of printing: the caller's getopt loop
 * names the option in its one "bad value for --NAME" message.
 */
#ifndef SLUICE_CL_OPT_H
#define SLUICE_CL_OPT_H

#include <stdbool.h>
#include <stddef.h>

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
