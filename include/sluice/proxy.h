/*
 * proxy: the PROXY protocol header (HAProxy's, versions 1 and 2) that a
 * load balancer sends before anything else on a connection, naming the
 * client it accepted (pure: bytes in, a result out, no I/O).
 *
 * The connection layer peeks at the first bytes of a connection on a
 * listener marked for it (`proxy-protocol`), asks proxy_parse() whether a
 * whole header is there, and then reads exactly the header's bytes off the
 * socket, so that what follows (a TLS ClientHello, an HTTP request) is
 * left untouched for the next layer. Every header is bounded by
 * PROXY_HEADER_MAX bytes: version 1 is at most 107 by its specification,
 * version 2 declares its length and one beyond the bound is refused
 * rather than read.
 *
 * Version 2 TLVs (ALPN, authority, SSL details, ...) are walked to check
 * that they fill the declared length exactly, and skipped: nothing in them
 * is trusted or used. A LOCAL command (v2; the proxy's own health check)
 * and UNKNOWN (v1), or an address family with no IP (UNSPEC, UNIX), keep
 * the connection's own peer address.
 *
 * Rejected: reading the header with ordinary reads into a buffer and
 * handing the rest on: the rest belongs to TLS on a TLS listener, and
 * OpenSSL would then need a custom BIO to be fed it. A peek followed by
 * an exact read keeps the socket the single source of bytes.
 */
#ifndef SLUICE_PROXY_H
#define SLUICE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROXY_V1_MAX 107       /* bytes of a v1 line, CRLF included (the spec's bound) */
#define PROXY_HEADER_MAX 1024  /* bytes of any header we accept (v2: 16 + declared length) */
#define PROXY_ADDRESS_MAX 46   /* INET6_ADDRSTRLEN: an IP's text form and its NUL */

struct proxy_header {
    size_t len;    /* bytes the header takes at the start of the input */
    int version;   /* 1 or 2 */
    bool local;    /* LOCAL, UNKNOWN, UNSPEC or UNIX: keep the connection's peer address */
    char address[PROXY_ADDRESS_MAX]; /* the client's IP (text form) when !local, else "" */
    unsigned port; /* the client's port when !local, else 0 */
};

/*
 * Parses the n bytes at p, the first bytes of a connection. Returns 0 with
 * *out set when a whole valid header is there (out->len of them);
 * ERR_AGAIN when the bytes so far are a valid beginning of one;
 * ERR_NOTFOUND when they cannot be the start of any PROXY header (the
 * peer sent none); ERR_LIMIT when the header is longer than allowed (a v1
 * line with no CRLF within PROXY_V1_MAX bytes, a v2 length past
 * PROXY_HEADER_MAX); ERR_PROTO for a malformed one. Never reads past p + n.
 */
int proxy_parse(const uint8_t *p, size_t n, struct proxy_header *out);

#endif
