/*
 * cl_target: see cl_target.h.
 */
#include "cl_target.h"

#include <stdlib.h>

#include "cl_log.h"
#include "cl_net.h"
#include "cl_tls.h"

bool cl_target_connect_opt(void *target, const char *value)
{
    struct cl_target *t = target;
    if (t->host)
        return false;
    t->authority = value;
    return cl_opt_host_port(value, &t->host, &t->port);
}

int cl_target_open(struct cl_target *t, const char *alpn)
{
    const char *why = cl_net_resolve(t->host, t->port, &t->addr);
    if (why) {
        cl_log_error("%s:%s: %s", t->host, t->port, why);
        return -1;
    }
    if (!alpn)
        return 0;
    t->tls = cl_tls_ctx_new(alpn, t->insecure, t->cacert, false);
    return t->tls ? 0 : -1;
}

const char *cl_target_tls_name(const struct cl_target *t)
{
    return t->servername ? t->servername : t->host;
}

void cl_target_dispose(struct cl_target *t)
{
    SSL_CTX_free(t->tls);
    if (t->addr)
        freeaddrinfo(t->addr);
    free(t->host);
    free(t->port);
    t->tls = NULL;
    t->addr = NULL;
    t->host = t->port = NULL;
}
