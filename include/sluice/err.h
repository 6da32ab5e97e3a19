/*
 * err: the error codes every sluice function returns.
 *
 * Functions return 0 on success or one of these negative codes; each
 * header lists the codes its functions can return. Predicates return bool.
 */
#ifndef SLUICE_ERR_H
#define SLUICE_ERR_H

enum {
    ERR_OK = 0,
    ERR_INVALID = -1,  /* bad argument or malformed input */
    ERR_IO = -2,       /* a system call failed; errno tells more */
    ERR_TLS = -3,      /* OpenSSL refused */
    ERR_NATS = -4,     /* the NATS client refused */
    ERR_PROTO = -5,    /* the peer broke the protocol */
    ERR_LIMIT = -6,    /* a configured limit was reached */
    ERR_NOTFOUND = -7, /* no such thing */
    ERR_AGAIN = -8,    /* try again later (would block) */
};

/* A static, human-readable name for code; never NULL. */
const char *err_str(int code);

#endif
