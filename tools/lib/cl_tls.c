/*
 * cl_tls: see cl_tls.h. Every OpenSSL call that can fail is preceded by
 * ERR_clear_error() and errno = 0, so that cl_tls_error() reports this
 * call's cause, not a stale one.
 */
#include "cl_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cl_log.h"

const char *cl_tls_error(void)
{
    static char msg[256];
    unsigned long e = ERR_get_error();
    if (e == 0)
        return errno ? strerror(errno) : "connection closed";
    ERR_error_string_n(e, msg, sizeof msg);
    return msg;
}

SSL_CTX *cl_tls_ctx_new(const char *alpn, bool insecure, const char *cacert, bool partial_write)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (partial_write)
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (alpn &&
        SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)alpn, (unsigned)strlen(alpn)) != 0)
        goto fail;
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cacert ? SSL_CTX_load_verify_locations(ctx, cacert, NULL) != 1
               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        cl_log_error("%s: %s", cacert ? cacert : "CA paths", cl_tls_error());
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
fail:
    cl_log_error("TLS setup: %s", cl_tls_error());
    SSL_CTX_free(ctx);
    return NULL;
}

static bool is_ip_literal(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

SSL *cl_tls_new(SSL_CTX *ctx, int fd, const char *name, bool verify)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd)) {
        SSL_free(ssl);
        return NULL;
    }
    /* An IP address is not a valid SNI name (RFC 6066 section 3). */
    if (!is_ip_literal(name))
        SSL_set_tlsext_host_name(ssl, name);
    if (verify) {
        if (is_ip_literal(name))
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
        else
            SSL_set1_host(ssl, name);
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

int cl_tls_handshake(SSL *ssl, bool *want_write, const char **why)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int err = SSL_get_error(ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        *want_write = err == SSL_ERROR_WANT_WRITE;
        return CL_TLS_AGAIN;
    }
    long vr = SSL_get_verify_result(ssl);
    *why = vr != X509_V_OK ? X509_verify_cert_error_string(vr) : cl_tls_error();
    return CL_TLS_ERROR;
}

void cl_tls_alpn(SSL *ssl, char *out, size_t cap)
{
    const unsigned char *alpn = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &len);
    if (len == 0 || len >= cap)
        len = 0;
    else
        memcpy(out, alpn, len);
    out[len] = '\0';
}

ssize_t cl_tls_read(SSL *ssl, int fd, char *buf, size_t n, bool *want_write)
{
    if (!ssl) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? CL_TLS_AGAIN
                                                                         : CL_TLS_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(ssl, buf, (int)n);
    if (r > 0)
        return r;
    int err = SSL_get_error(ssl, r);
    if (err == SSL_ERROR_WANT_READ)
        return CL_TLS_AGAIN;
    if (err == SSL_ERROR_WANT_WRITE) {
        *want_write = true;
        return CL_TLS_AGAIN;
    }
    if (err == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)
        return CL_TLS_EOF_UNCLEAN;
    return CL_TLS_ERROR;
}

ssize_t cl_tls_write(SSL *ssl, int fd, const char *buf, size_t n)
{
    if (!ssl) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w >= 0)
            return w;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? CL_TLS_AGAIN
                                                                         : CL_TLS_ERROR;
    }
    ERR_clear_error();
    errno = 0;
    int w = SSL_write(ssl, buf, (int)n);
    if (w > 0)
        return w;
    int err = SSL_get_error(ssl, w);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
        return CL_TLS_AGAIN;
    return CL_TLS_ERROR;
}
