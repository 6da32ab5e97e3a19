/*
 * tls: server context (see tls.h).
 *
 * ALPN picks h2 when the client offers it, else http/1.1; a client that
 * offers neither gets the no_application_protocol alert; one that sends no
 * ALPN at all speaks HTTP/1.1 (older clients and many load balancers).
 */
#include "sluice/tls.h"

#include <openssl/err.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "sluice/mem.h"

/* Ours, in order of preference. */
static const unsigned char PROTOS[] = "\x02h2\x08http/1.1";

static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel;
    /* Server preference: h2 whenever the client offers it, wherever it lists it. */
    if (SSL_select_next_proto(&sel, outlen, PROTOS, sizeof(PROTOS) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void set_ssl_err(char *err, size_t errlen, const char *what, const char *file)
{
    char detail[256];
    ERR_error_string_n(ERR_peek_last_error(), detail, sizeof(detail));
    snprintf(err, errlen, "%s %s: %s", what, file, detail);
    ERR_clear_error();
}

SSL_CTX *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        set_ssl_err(err, errlen, "cannot load certificate", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        set_ssl_err(err, errlen, "cannot load private key", key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        set_ssl_err(err, errlen, "private key does not match certificate", key_file);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

bool tls_is_h2(const SSL *ssl)
{
    const unsigned char *p;
    unsigned int len;
    SSL_get0_alpn_selected(ssl, &p, &len);
    return len == 2 && memcmp(p, "h2", 2) == 0;
}

struct tls {
    pthread_mutex_t lock;
    SSL_CTX *ctx; /* under lock */
};

struct tls *tls_new(SSL_CTX *ctx)
{
    struct tls *t = mem_calloc(1, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    t->ctx = ctx;
    return t;
}

void tls_free(struct tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

SSL *tls_ssl_new(struct tls *t)
{
    /* SSL_new takes its own reference to the context, so a swap right after is safe. */
    pthread_mutex_lock(&t->lock);
    SSL *ssl = SSL_new(t->ctx);
    pthread_mutex_unlock(&t->lock);
    return ssl;
}

void tls_replace(struct tls *t, SSL_CTX *ctx)
{
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old);
}
