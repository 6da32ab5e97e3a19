/*
 * cl_target: the server a client program streams from, as the programs
 * that take --connect share it: the options that name it (--connect,
 * --cacert, --insecure, --servername), its resolved address, and the TLS
 * context its connections use.
 *
 * main() parses the options into it (CL_TARGET_OPTS in the program's
 * cl_opt table), cl_target_open() resolves the name and makes the TLS
 * context once, every connection borrows both, and cl_target_dispose()
 * frees them after the connections are gone.
 *
 * Rejected alternative: the fields in each program's struct opts, with
 * the resolve, the context and their cleanup written out in each, as they
 * were in sluice-client and sluice-bench.
 */
#ifndef SLUICE_CL_TARGET_H
#define SLUICE_CL_TARGET_H

#include <netdb.h>
#include <stdbool.h>

#include <openssl/ssl.h>

#include "cl_opt.h"

struct cl_target {
    char *host;             /* without brackets; owned */
    char *port;             /* owned */
    const char *authority;  /* the --connect value as given: :authority / Host */
    const char *cacert;     /* NULL: the system's CAs */
    const char *servername; /* SNI and verified name; NULL: host */
    bool insecure;          /* do not verify the server */
    struct addrinfo *addr;  /* after cl_target_open(); owned */
    SSL_CTX *tls;           /* after cl_target_open() with ALPN; owned; NULL: cleartext */
};

/* A CL_OPT_CALL for --connect HOST:PORT (or [V6ADDR]:PORT): false when
 * given twice or not HOST:PORT. */
bool cl_target_connect_opt(void *target, const char *value);

/* The cl_opt table lines of a target t (a struct cl_target *); --connect is required. */
#define CL_TARGET_OPTS(t)                                                                        \
    {.name = "connect", .kind = CL_OPT_KIND_CALL, .call = cl_target_connect_opt,                 \
     .dst = _Generic((t), struct cl_target *: (t)), .arg = "HOST:PORT", .required = true,        \
     .help = "server; also the :authority / Host ([v6addr]:PORT works)"},                        \
        CL_OPT_STR("cacert", &(t)->cacert, "FILE", "verify the server against this CA file"),    \
        CL_OPT_FLAG("insecure", &(t)->insecure, "do not verify the server certificate"),         \
        CL_OPT_STR("servername", &(t)->servername, "NAME", "SNI and verified name (default HOST)")

/*
 * Resolves t's host and port and, unless alpn is NULL (cleartext), makes
 * the TLS context offering alpn (wire format, e.g. "\x02h2"). 0, or -1
 * with the reason on stderr.
 */
int cl_target_open(struct cl_target *t, const char *alpn);
/* The name a TLS connection sends as SNI and verifies. */
const char *cl_target_tls_name(const struct cl_target *t);
/* Frees what t holds; its connections must be gone. */
void cl_target_dispose(struct cl_target *t);

#endif
