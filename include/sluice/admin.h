/*
 * admin: the operator's listener — /metrics, /healthz, /readyz, and
 * POST /revoke — on its own thread and loop, plain HTTP/1.1, one request
 * per connection.
 *
 * Kept off the workers so that a scrape never adds latency to a stream and
 * a stuck worker still answers health checks. Bind it to loopback (the
 * default) or a private interface: it has no authentication. For the same
 * reason a request whose Host is not one of its names (host.h) gets 421,
 * so that a web page cannot reach it by rebinding a DNS name to loopback,
 * and a POST that carries an Origin (a browser's cross-site form or
 * fetch) gets 403, so that a page cannot revoke streams through it.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/buf.h"

struct admin;

/* Appends the Prometheus text exposition to out. Called on the admin thread. */
typedef void admin_metrics_fn(void *ctx, struct buf *out);
/* True when ready to take traffic; otherwise *why is a static one-line reason. */
typedef bool admin_ready_fn(void *ctx, const char **why);
/*
 * POST /revoke?principal=…&subject=…&reason=… (revoke.h): query is the
 * bytes after '?'. 0 when handed to the workers, or ERR_INVALID with *why.
 */
typedef int admin_revoke_fn(void *ctx, const char *query, size_t len, const char **why);

struct admin_params {
    const char *listen; /* host:port */
    admin_metrics_fn *metrics;
    admin_ready_fn *ready;
    void *ctx;
    const char *allowed_hosts; /* Host names besides localhost and IP literals (host.h); borrowed */
    admin_revoke_fn *revoke;   /* NULL: /revoke is 404 */
};

/*
 * Binds synchronously (so start-up fails loudly) and starts the thread.
 * bound gets the address bound. 0, or ERR_* with a reason in err.
 */
int admin_new(struct admin **out, const struct admin_params *p, char *bound, size_t blen,
              char *err, size_t errlen);
/* Stops the thread and closes everything. admin_free(NULL) is a no-op. */
void admin_free(struct admin *a);

#endif
