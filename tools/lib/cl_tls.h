/*
 * cl_tls: TLS for the client programs: one client context per run, one
 * SSL per connection, a non-blocking handshake step, and the reads and
 * writes that go through TLS or, with no SSL, straight to the socket.
 *
 * The write rule (OpenSSL's): after SSL_ERROR_WANT_WRITE or WANT_READ,
 * SSL_write must be called again with the same buffer and length, so
 * callers keep one pending buffer, write all of it per call, and append
 * nothing to it until it has gone (cl_tls_write returns CL_TLS_AGAIN and
 * the caller waits for the socket). A context made with partial writes
 * lets a write take part of the buffer; the caller then drops that part.
 *
 * Rejected alternative: BIO pairs and our own socket I/O. The programs
 * hold one socket per SSL, and SSL_set_fd keeps the kernel's view of
 * readiness and OpenSSL's in step with no copy.
 */
#ifndef SLUICE_CL_TLS_H
#define SLUICE_CL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <openssl/ssl.h>

/* Results of the calls below besides byte counts. */
#define CL_TLS_AGAIN (-1)       /* would block; wait for the socket (see want_write) */
#define CL_TLS_ERROR (-2)       /* the connection failed: cl_tls_error() says why */
#define CL_TLS_EOF_UNCLEAN (-3) /* TCP closed without close_notify */

/*
 * A client context: TLS 1.2 at least, ALPN list alpn (wire format, e.g.
 * "\x02h2"; NULL: none), peer verification against cacert (NULL: the
 * system paths) unless insecure. partial_write enables partial writes
 * and moving write buffers. NULL on failure, after logging why.
 */
SSL_CTX *cl_tls_ctx_new(const char *alpn, bool insecure, const char *cacert, bool partial_write);
/*
 * A client SSL on the connected socket fd, in connect state: SNI for
 * name unless it is an IP literal (RFC 6066), and with verify, the name
 * (or IP) the certificate must match. NULL on failure.
 */
SSL *cl_tls_new(SSL_CTX *ctx, int fd, const char *name, bool verify);
/*
 * One handshake step: 1 when done, CL_TLS_AGAIN with *want_write telling
 * which readiness to wait for, or CL_TLS_ERROR with *why (static storage:
 * the verification failure or the OpenSSL error).
 */
int cl_tls_handshake(SSL *ssl, bool *want_write, const char **why);
/* The protocol ALPN selected, as a NUL-terminated copy in out (cap
 * bytes); "" when none or when it does not fit. */
void cl_tls_alpn(SSL *ssl, char *out, size_t cap);
/*
 * Reads into buf: bytes read (> 0), 0 at a clean end (close_notify, or
 * the socket's end without TLS), CL_TLS_AGAIN (*want_write set when TLS
 * needs the socket writable first), CL_TLS_EOF_UNCLEAN or CL_TLS_ERROR.
 * ssl NULL: a plain read() on fd.
 */
ssize_t cl_tls_read(SSL *ssl, int fd, char *buf, size_t n, bool *want_write);
/* Writes buf (see the write rule above): bytes written (> 0),
 * CL_TLS_AGAIN or CL_TLS_ERROR. ssl NULL: a plain send() on fd. */
ssize_t cl_tls_write(SSL *ssl, int fd, const char *buf, size_t n);
/* Why the last call failed: OpenSSL's error queue, else errno, else
 * "connection closed". Static storage. */
const char *cl_tls_error(void);

#endif
