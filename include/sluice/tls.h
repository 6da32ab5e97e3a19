/*
 * tls: the server's OpenSSL context — certificate, protocol versions,
 * ciphers and ALPN.
 *
 * TLS 1.2 with the AEAD ECDHE suites HTTP/2 allows, and TLS 1.3. ALPN
 * selects "h2", else "http/1.1"; a client offering only other protocols is
 * refused with the no_application_protocol alert; no ALPN means HTTP/1.1.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* A new context, or NULL with a one-line reason in err. Free with SSL_CTX_free(). */
SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen);

/*
 * The context new connections use, swappable while workers accept (SIGHUP
 * reload): open connections keep the context they started with, since
 * every SSL holds a reference to its own.
 */
struct tls;
/* Takes ownership of ctx. */
struct tls *tls_new(SSL_CTX *ctx);
/* tls_free(NULL) is a no-op. */
void tls_free(struct tls *t);
/* A new SSL on the current context. Thread-safe. */
SSL *tls_ssl_new(struct tls *t);
/* Replaces the current context (takes ownership of ctx). Thread-safe. */
void tls_replace(struct tls *t, SSL_CTX *ctx);
/* True when ssl negotiated h2 by ALPN. */
bool tls_is_h2(const SSL *ssl);

#endif
